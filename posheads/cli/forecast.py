"""The ``posheads forecast`` subcommand: forecast a count series in a CSV file.

``posheads forecast SERIES.csv --date COL --target COL --horizon N`` fits
:class:`posheads.CountForecaster` and writes one row per forecast step (``date``,
``mean``, ``lower``, ``upper``) and a PNG figure of the history and the forecast.

Covariates must be known for the forecast steps too: with ``--covariates C1 C2 ...``,
``--future FILE.csv`` gives the ``--date`` column and those covariates for exactly the
next ``N`` steps (the dates must continue the series at its frequency).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .choices import HelpFormatter, forecast_families
from .io import (
    STDOUT,
    CLIError,
    atomic_file,
    check_output,
    check_target_values,
    read_table,
    require_columns,
    write_table,
)
from .options import add_common_options

if TYPE_CHECKING:  # pandas is imported by the command, not by its --help
    import pandas as pd

__all__ = ["add_forecast_parser", "cmd_forecast"]

# The --likelihood names and the CountForecaster likelihood each one means: the one table.


def add_forecast_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``forecast`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_forecast` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "forecast",
        formatter_class=HelpFormatter,
        help="forecast a count time series",
        description="Fit a Bayesian count forecaster (random-walk level, seasons, "
        "covariates, softplus link, count likelihood) and "
        "write the mean forecast, a predictive interval and a figure.",
        epilog="examples:\n"
        "  posheads forecast series.csv --date date --target count --horizon 28\n"
        "  posheads forecast series.csv --date date --target count --horizon 28 \\\n"
        "      --covariates holiday precip --future next28.csv --out fc.csv\n\n"
        "--future holds the --date column and the covariates for exactly the next\n"
        "N steps; the dates must continue the series at its frequency.",
    )
    p.add_argument("data", help="CSV or Parquet file, one row per time step, in time order")
    p.add_argument("--date", required=True, help="column of dates (a regular frequency)")
    p.add_argument("--target", required=True, help="column of counts to forecast")
    p.add_argument("--horizon", required=True, type=int, help="steps to forecast")
    p.add_argument(
        "--covariates",
        nargs="+",
        default=None,
        help="covariate columns known in advance (need --future)",
    )
    p.add_argument("--future", default=None, help="file with the covariates of the horizon")
    p.add_argument(
        "--likelihood",
        choices=forecast_families(),
        metavar="LIKELIHOOD",
        default="auto",
        help="count law: the name of a family without a zero part, with hyphens (a name "
        "that is not one lists those that are); default auto: discretized-logistic for "
        "counts that vary clearly less than a Poisson, e.g. scheduled events, else "
        "negative-binomial",
    )
    p.add_argument("--inference", choices=["svi", "nuts"], default="svi")
    p.add_argument("--steps", type=int, default=1000, help="SVI steps (default 1000)")
    p.add_argument(
        "--season-lengths",
        nargs="+",
        type=float,
        default=None,
        help="seasonal periods in steps (default: from the frequency)",
    )
    p.add_argument("--coverage", type=float, default=0.9, help="interval coverage")
    p.add_argument(
        "--out",
        default="forecast.csv",
        help="CSV to write (default forecast.csv; '-' for standard output)",
    )
    p.add_argument(
        "--plot", default=None, help="PNG figure to write (default: --out with .png; none for '-')"
    )
    add_common_options(p, device=False)
    p.set_defaults(func=cmd_forecast)
    return p


def _dates(frame: pd.DataFrame, column: str, what: str) -> pd.DatetimeIndex:
    """The dates in ``column`` of ``frame`` (read from the file ``what``)."""
    import pandas as pd

    require_columns(frame, [column])
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame[column]), name=column)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"column {column!r} of {what} is not a date column: {exc}") from exc
    if dates.hasnans:
        raise CLIError(f"column {column!r} of {what} has missing dates")
    return dates


def _series(frame: pd.DataFrame, args) -> pd.Series:
    """The target counts as a float64 series indexed by increasing, unique dates."""
    import numpy as np
    import pandas as pd

    dates = _dates(frame, args.date, args.data)
    require_columns(frame, [args.target])
    col = frame[args.target]
    if not pd.api.types.is_numeric_dtype(col):
        raise CLIError(
            f"target column {args.target!r} is not numeric (e.g. "
            f"{col.iloc[0]!r}): it must hold counts 0, 1, 2, ..."
        )
    if col.isna().any():
        raise CLIError(
            f"target column {args.target!r} has {int(col.isna().sum())} missing "
            "value(s): fill them (e.g. 0 for no events) or drop those rows"
        )
    values = col.to_numpy(np.float64)
    check_target_values(values, args.target)
    y = pd.Series(values, index=dates, name=args.target)
    if not y.index.is_monotonic_increasing or y.index.has_duplicates:
        raise CLIError(f"dates in {args.date!r} must be in increasing order without repeats")
    return y


def _covariate_frames(frame: pd.DataFrame, args, y: pd.Series):
    """The covariates of the history and of the horizon, or ``(None, None)`` without any."""
    if not args.covariates:
        if args.future:
            raise CLIError("--future was given without --covariates: name the columns to use")
        return None, None
    if not args.future:
        raise CLIError(
            "--covariates need their future values: pass --future FILE with the "
            f"{args.horizon} next dates and columns {', '.join(args.covariates)}"
        )
    require_columns(frame, args.covariates)
    future = read_table(args.future)
    require_columns(future, args.covariates)
    dates = _dates(future, args.date, args.future)
    if len(future) != args.horizon:
        raise CLIError(
            f"{args.future} has {len(future)} rows; --horizon {args.horizon} "
            "needs exactly one row per forecast step"
        )
    X = _numeric(frame[args.covariates].set_axis(y.index), args.data)
    X_future = _numeric(future[args.covariates].set_axis(dates), args.future)
    return X, X_future


def _numeric(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` as float64, after checking every column is numeric and complete."""
    import numpy as np
    import pandas as pd

    for c in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise CLIError(
                f"covariate {c!r} of {what} is not numeric (encode it as 0/1 columns first)"
            )
        if frame[c].isna().any():
            raise CLIError(
                f"covariate {c!r} of {what} has {int(frame[c].isna().sum())} "
                "missing value(s): fill them first"
            )
    return frame.astype(np.float64)


def cmd_forecast(args: argparse.Namespace) -> int:
    """Run ``posheads forecast``; return the exit status.

    Raises
    ------
    CLIError
        For a bad option value, a missing file or column, dates that are not a regular
        increasing series, covariates without their future values, or data the
        forecaster rejects.
    """
    import pandas as pd

    from ..estimators.forecasting import CountForecaster

    if args.horizon < 1:
        raise CLIError(f"--horizon must be at least 1, got {args.horizon}")
    if not 0 < args.coverage < 1:
        raise CLIError(f"--coverage must be between 0 and 1, got {args.coverage}")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    plot = _plot_path(args)
    check_output(args.out)
    if plot:
        check_output(plot, what="--plot")
    frame = read_table(args.data)
    y = _series(frame, args)
    X, X_future = _covariate_frames(frame, args, y)
    est = CountForecaster(
        args.season_lengths,
        likelihood=args.likelihood.replace("-", "_"),
        inference=args.inference,
        num_steps=args.steps,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    try:
        est.fit(y, X)
        mean = est.predict(args.horizon, X_future)
        bounds = est.predict_interval(args.horizon, args.coverage, X_future)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out = pd.DataFrame(
        {
            args.date: mean.index,
            "mean": mean.to_numpy(),
            "lower": bounds["lower"].to_numpy(),
            "upper": bounds["upper"].to_numpy(),
        }
    )
    _write(out, est, args, X_future, plot)
    return 0


def _plot_path(args) -> str | None:
    """The figure's file: ``--plot``, else ``--out`` with ``.png`` (none for ``-``)."""
    if args.plot is not None:
        return args.plot
    if args.out == STDOUT:
        return None
    return str(Path(args.out).with_suffix(".png"))


def _write(out: pd.DataFrame, est, args, X_future, plot) -> None:
    """Write the forecast table (or print it, for ``--out -``) and the figure, each
    atomically."""
    write_table(out, args.out, index=False)
    if plot:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: the figure goes to a file
        import matplotlib.pyplot as plt

        fig = est.plot(args.horizon, X_future, coverage=args.coverage)
        with atomic_file(plot) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    if not args.quiet and args.out != STDOUT:
        where = f" and the figure to {plot}" if plot else ""
        print(f"wrote {len(out)} forecast steps to {args.out}{where}")
