"""The ``posheads predict`` subcommand: expected counts and predictive intervals from a
model folder written by ``posheads fit --out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .io import (
    STDOUT,
    CLIError,
    check_output,
    loaded_model,
    one_line,
    read_table,
    write_table,
)
from .options import add_common_options
from .spec import FeatureSpec

__all__ = ["add_predict_parser", "cmd_predict"]


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_predict` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="predict counts with a saved model",
        description="Predict expected counts and predictive intervals for the rows of a file.",
        epilog="example:\n  posheads predict model/ new.csv --out preds.csv --coverage 0.9",
    )
    p.add_argument("model_dir", help="folder written by `posheads fit --out`")
    p.add_argument("data", help="CSV or Parquet file with the model's feature columns")
    p.add_argument("--out", default=STDOUT,
                   help="CSV to write (default '-': standard output)")
    p.add_argument("--coverage", type=float, default=0.9, help="interval coverage")
    add_common_options(p, device=False)
    p.set_defaults(func=cmd_predict)
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``posheads predict``; return the exit status.

    Writes one row per input row (``mean``, ``lower``, ``upper``) to ``--out``, or to
    standard output without it (or with ``-``).

    Raises
    ------
    CLIError
        For a folder that is not a readable model, a coverage outside (0, 1), or a table
        without the model's feature columns.
    """
    import pandas as pd

    from ..estimators import load

    folder = Path(args.model_dir)
    if not 0 < args.coverage < 1:
        raise CLIError(f"--coverage must be between 0 and 1, got {args.coverage}")
    check_output(args.out)
    spec = FeatureSpec.load(folder)
    try:
        est = load(folder)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read the model in {args.model_dir}: {one_line(exc)}") from exc
    frame = read_table(args.data)
    X = spec.design(frame)
    exposure = spec.exposure_of(frame)
    with loaded_model(args.model_dir):
        mean = est.predict(X, exposure=exposure)
        bounds = est.predict_interval(X, coverage=args.coverage, exposure=exposure)
    out = pd.DataFrame({"mean": mean, "lower": bounds[:, 0], "upper": bounds[:, 1]})
    write_table(out, args.out, index=False)
    if not args.quiet and args.out != STDOUT:
        print(f"wrote {len(out)} predictions to {args.out}")
    return 0
