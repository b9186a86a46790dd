"""The ``posheads diagnose`` subcommand: does a saved model reproduce the distribution of
the counts in a table?

It reads a model folder written by ``posheads fit --out`` and a table with the model's
feature columns and the observed target, and writes to ``--out``: a hanging rootogram, a
Q-Q plot of randomized quantile residuals, a PIT histogram (PNG), the per-row residuals
and the rootogram's frequencies (CSV), and ``summary.txt`` (log score, Kolmogorov-Smirnov
test of the residuals, dispersion test, the largest gaps of the rootogram). matplotlib and
torch are imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .io import (
    CLIError,
    atomic_dir,
    check_output,
    loaded_model,
    one_line,
    read_table,
    require_columns,
)
from .options import add_common_options
from .spec import FeatureSpec

if TYPE_CHECKING:  # numpy is imported by the command, not by its --help
    import numpy as np

__all__ = ["add_diagnose_parser", "cmd_diagnose"]

_DPI = 110


def add_diagnose_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``diagnose`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_diagnose` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "diagnose", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="rootogram, residual plots and a summary for a saved model",
        description="Check a saved count model against observed counts: rootogram, "
                    "randomized quantile residuals, PIT histogram and a text summary.",
        epilog="example:\n  posheads diagnose model/ nmes.csv --target visits --out diag/\n"
               "  posheads diagnose formula-model/ nmes.csv --out diag/",
    )
    p.add_argument("model_dir", help="folder written by `posheads fit --out`")
    p.add_argument("data", help="CSV or Parquet file with the feature and target columns")
    p.add_argument("--target", default=None,
                   help="column of observed counts (default: the response of a model "
                        "fitted with --formula)")
    p.add_argument("--out", required=True, help="folder to write the plots and summary to")
    p.add_argument("--bins", type=int, default=10, help="bins of the PIT histogram")
    add_common_options(p, device=False)
    p.set_defaults(func=cmd_diagnose)
    return p


def _observed(frame, column: str) -> np.ndarray:
    """The target column as float64; a :class:`CLIError` for a missing or non-numeric one."""
    import numpy as np
    import pandas as pd

    require_columns(frame, [column])
    col = frame[column]
    if not pd.api.types.is_numeric_dtype(col):
        raise CLIError(f"target column {column!r} is not numeric (e.g. {col.iloc[0]!r})")
    if col.isna().any():
        raise CLIError(f"target column {column!r} has {int(col.isna().sum())} missing "
                       "value(s): drop those rows first")
    return col.to_numpy(np.float64)


def _estimator(folder: str):
    from ..estimators import load

    try:
        return load(Path(folder))
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read the model in {folder}: {one_line(exc)}") from exc


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Run ``posheads diagnose``; return the exit status.

    Raises
    ------
    CLIError
        For a folder that is not a readable model, a table without the model's columns
        or the target, a target that the model's family does not accept, or bad
        ``--bins``.
    """
    if args.bins < 1:
        raise CLIError(f"--bins must be a positive integer, got {args.bins}")
    # the output and the table are checked before the model (and torch) is loaded
    spec = FeatureSpec.load(Path(args.model_dir))
    if args.target is None and spec.formula is None:
        raise CLIError("give --target, the column of observed counts (only a model fitted "
                       "with --formula knows its response)")
    check_output(args.out, folder=True, replace_marker="summary.txt")
    frame = read_table(args.data)
    y = None if args.target is None else _observed(frame, args.target)
    X = spec.design(frame)
    exposure = spec.exposure_of(frame)
    est = _estimator(args.model_dir)
    if y is None:
        import numpy as np

        try:
            with loaded_model(args.model_dir):
                y = np.asarray(est.design_.response_of(frame), dtype=np.float64)
        except ValueError as exc:
            raise CLIError(f"cannot read the response of {spec.formula!r}: "
                           f"{one_line(exc)}") from exc
        args.target = spec.formula.split("~")[0].strip()
    try:
        with loaded_model(args.model_dir):
            report = _diagnose(est, X, y, exposure, args)
    except ValueError as exc:
        raise CLIError(one_line(exc)) from exc
    with atomic_dir(args.out) as tmp:
        for name, fig in report["figures"].items():
            fig.savefig(tmp / name, dpi=_DPI, bbox_inches="tight")
            fig.clear()
        report["residuals"].to_csv(tmp / "residuals.csv", index=False)
        if report["frequencies"] is not None:
            report["frequencies"].to_csv(tmp / "frequencies.csv")
        (tmp / "summary.txt").write_text(report["summary"])
    if not args.quiet:
        print(report["summary"], end="")
        print(f"wrote {', '.join(sorted(report['files']))} to {args.out}")
    return 0


def _diagnose(est, X, y, exposure, args) -> dict:
    """Every figure, table and the summary text, computed before anything is written.

    The predictive law is evaluated once for the PIT bounds and once for the rootogram
    (each a grid over the draws: the costly part for a Bayesian fit).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import pandas as pd

    log_pred = est.log_predictive(X, y, exposure=exposure)
    mean = est.predict(X, exposure=exposure)
    lines = [
        f"model: {type(est).__name__} ({est.posterior_.model.likelihood}), inference "
        f"{est.posterior_.method}",
        f"rows: {len(y)} of {args.data}, target {args.target!r}",
        f"mean log score (log predictive probability, or density, per row): {log_pred.mean():.4f}",
        f"log-likelihood of these rows: {log_pred.sum():.2f}",
        f"mean observed {y.mean():.4f}, mean predicted {mean.mean():.4f}",
    ]
    residuals = pd.DataFrame({"observed": y, "mean": mean, "log_predictive": log_pred})
    figures, frequencies = {}, None
    try:
        bounds = est.pit_interval(X, y, exposure=exposure)
    except ValueError as exc:  # a continuous law without a distribution function
        lines += ["", f"no PIT or quantile residuals: {exc}"]
    else:
        lines += _residual_report(bounds, residuals, figures, args)
    if est.predicts_counts():
        frequencies, more = _count_report(est, X, y, exposure, figures)
        lines += more
    files = [*figures, "residuals.csv", "summary.txt"]
    if frequencies is not None:
        files.append("frequencies.csv")
    return {"figures": figures, "residuals": residuals, "frequencies": frequencies,
            "summary": "\n".join(lines) + "\n", "files": files}


def _residual_report(bounds, residuals, figures, args) -> list[str]:
    """Q-Q plot and PIT histogram into ``figures``, residual columns into ``residuals``."""
    import matplotlib.pyplot as plt
    from scipy import stats

    from .. import diagnostics as dg

    resid = dg.normal_scores(dg.randomized_pit(bounds, args.seed))
    residuals["pit_lower"], residuals["pit_upper"] = bounds[:, 0], bounds[:, 1]
    residuals["quantile_residual"] = resid
    fig, ax = plt.subplots(figsize=(5, 5))
    dg.draw_qq(resid, ax=ax)
    figures["qq_plot.png"] = fig
    fig, ax = plt.subplots(figsize=(6, 4))
    dg.draw_pit_histogram(bounds, bins=args.bins, ax=ax)
    figures["pit_histogram.png"] = fig
    ks = stats.kstest(resid, "norm")
    return [
        "",
        f"randomized quantile residuals (N(0, 1) if the model is right, seed {args.seed}):",
        f"  mean {resid.mean():.3f}, sd {resid.std(ddof=1):.3f}; Kolmogorov-Smirnov "
        f"D = {ks.statistic:.4f}, p = {ks.pvalue:.3g}",
        f"PIT histogram ({args.bins} bins, 1 = calibrated): "
        + " ".join(f"{h:.2f}" for h in dg.pit_bin_heights(bounds, args.bins)),
    ]


def _count_report(est, X, y, exposure, figures):
    """The rootogram (into ``figures``), its table and the dispersion test's lines."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .. import diagnostics as dg

    table = dg.rootogram_table(est, X, y, exposure=exposure)
    fig, ax = plt.subplots(figsize=(7, 4))
    dg.draw_rootogram(table, style="hanging", ax=ax)
    figures["rootogram.png"] = fig
    disp = dg.dispersion_test(est, X, y, exposure=exposure)
    lines = [
        "dispersion test of Var(y) = mean at the model's means (Cameron-Trivedi, NB2 "
        f"alternative): t = {disp.statistic:.3f}, p = {disp.pvalue:.3g}, "
        f"a = {disp.dispersion:.4f}",
        "",
        "rootogram, largest gaps sqrt(expected) - sqrt(observed):",
    ]
    gap = np.sqrt(table["expected"]) - np.sqrt(table["observed"])
    for k in gap.abs().sort_values(ascending=False).index[:5]:
        lines.append(f"  count {k:>4}: observed {table.loc[k, 'observed']:8.0f}, "
                     f"expected {table.loc[k, 'expected']:10.2f}, gap {gap[k]:+.2f}")
    return table, lines
