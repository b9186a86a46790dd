"""The ``posheads`` command: ``demo``, ``fit``, ``predict`` and ``datasets``.

Every user mistake (a missing file or column, a bad target, NaN in a used column, an
unreadable model directory) ends with one line on stderr and exit status 2; ``--debug``
shows the traceback instead. Outputs are written to a temporary name and moved into
place only when complete, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__
from ._cli_commands import cmd_datasets, cmd_demo, cmd_fit, cmd_predict
from ._cli_forecast import add_forecast_parser
from ._cli_io import CLIError

__all__ = ["main"]

_MODELS = ["poisson", "negative-binomial", "zero-inflated-poisson",
           "zero-inflated-negative-binomial", "hurdle-poisson", "hurdle-negative-binomial"]
_INFERENCE = ["map", "laplace", "svi", "nuts"]


def _common(p: argparse.ArgumentParser, *, seed=True, device=True) -> None:
    p.add_argument("--quiet", action="store_true", help="print only results, no progress")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if device:
        p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="posheads", formatter_class=fmt,
        description="Softplus-link count models: fit, predict and compare on real data.",
        epilog="example:\n  posheads demo\n  posheads datasets export nmes1988 nmes.csv\n"
               "  posheads fit nmes.csv --target visits --out model/",
    )
    parser.add_argument("--version", action="version", version=f"posheads {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", formatter_class=fmt, help="compare count models on NMES1988 (no data needed)",
        description="Fit scikit-learn's log-link PoissonRegressor and posheads' softplus "
                    "models on a held-out split of NMES1988 (4,406 US elderly, physician "
                    "visits); print test deviance, D2, 90%% interval coverage and fit time, "
                    "and write a figure.",
        epilog="example:\n  posheads demo --out demo/",
    )
    demo.add_argument("--out", default="posheads-demo", help="folder for the figure")
    demo.add_argument("--fast", action="store_true",
                      help="small sampler budgets (for tests; figures are less exact)")
    _common(demo)
    demo.set_defaults(func=cmd_demo)

    fit = sub.add_parser(
        "fit", formatter_class=fmt, help="fit a count model to a CSV or Parquet file",
        description="Fit a softplus-link count regression; print the coefficient table and "
                    "save the model (safe format: JSON + tensors) to --out.",
        epilog="example:\n  posheads fit nmes.csv --target visits --model negative-binomial "
               "--out model/",
    )
    fit.add_argument("data", help="CSV or Parquet file, one row per observation")
    fit.add_argument("--target", required=True, help="column of counts to model")
    fit.add_argument("--features", nargs="+", default=None,
                     help="feature columns (default: every other column)")
    fit.add_argument("--model", choices=_MODELS, default="poisson")
    fit.add_argument("--inference", choices=_INFERENCE, default="map")
    fit.add_argument("--exposure", default=None, help="column of positive exposures")
    fit.add_argument("--alpha", type=float, default=0.0,
                     help="L2 penalty on scikit-learn's scale (default 0: maximum likelihood)")
    fit.add_argument("--out", default=None, help="folder to save the fitted model in")
    _common(fit)
    fit.set_defaults(func=cmd_fit)

    pred = sub.add_parser(
        "predict", formatter_class=fmt, help="predict counts with a saved model",
        description="Predict expected counts and predictive intervals for the rows of a file.",
        epilog="example:\n  posheads predict model/ new.csv --out preds.csv --coverage 0.9",
    )
    pred.add_argument("model_dir", help="folder written by `posheads fit --out`")
    pred.add_argument("data", help="CSV or Parquet file with the model's feature columns")
    pred.add_argument("--out", default=None, help="CSV to write (default: standard output)")
    pred.add_argument("--coverage", type=float, default=0.9, help="interval coverage")
    _common(pred, device=False)
    pred.set_defaults(func=cmd_predict)

    ds = sub.add_parser(
        "datasets", formatter_class=fmt, help="list or export the shipped data sets",
        description="List the shipped count data sets, or export one to CSV.",
        epilog="example:\n  posheads datasets\n  posheads datasets export biochemists bio.csv",
    )
    ds.add_argument("action", nargs="?", choices=["list", "export"], default="list")
    ds.add_argument("name", nargs="?", help="data set to export")
    ds.add_argument("file", nargs="?", help="CSV file to write")
    _common(ds, seed=False, device=False)
    ds.set_defaults(func=cmd_datasets)

    add_forecast_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"posheads {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as exc:
        if args.debug:
            raise
        print(f"posheads {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
