"""Rolling-origin backtests of posheads' count forecaster against what a user would pick.

Series and windows (every forecaster sees the same windows, refits on each prefix, and is
scored on the following ``horizon`` steps from the same number of sample paths):

- NYC departures, daily, 2013, one series per airport (EWR, JFK, LGA): horizon 28 days,
  6 windows 28 days apart; the tests cover 17 July - 31 December (168 days per airport).
  Covariates, known in advance: the federal-holiday flag, precipitation, wind speed and
  visibility (the day's observed weather stands in for a forecast of it).
- Seatbelts ``VanKilled``, monthly, 1969-1984: horizon 12 months, 6 windows 12 months
  apart; the tests cover 1979-1984 (72 months). No covariates (the 1983 law cannot be
  learned by a forecaster trained before it; the law is the subject of notebook 2).

Forecasters:

- ``count``: :class:`posheads.CountForecaster` with its defaults (``likelihood="auto"``:
  the discretized-logistic count law for the under-dispersed NYC series, the negative
  binomial for Seatbelts; the choice is made on each training prefix, and the table
  names it); notebook 1 compares the two laws on the NYC series;
- ``log-gaussian``: the same structure in Pyro's forecasting framework on ``log1p(y)``
  with Gaussian noise (Pyro's tutorial recipe), back-transformed with ``expm1``;
- ``seasonal-naive``: the last season repeated, Gaussian errors (R's ``snaive``).

Scores per window: CRPS of the sample paths, MAE of their median, and the share of test
counts inside the central 90% interval; the table averages them over windows (and the
CRPS ratio divides by the seasonal naive's on the same windows).

Run ``python benchmarks/bench_forecast.py`` (20 to 30 minutes on one core; SVI dominates)
or with ``--fast`` for a smoke test. ``--series JFK`` (or EWR, LGA, Seatbelts) runs one
series, so that series can run in parallel processes; ``--out FILE.csv`` keeps the
per-window scores and ``--table-from A.csv B.csv ...`` prints the table from them.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from sklearn.base import clone

from posheads.datasets import load_nyc_departures, load_seatbelts
from posheads.estimators.forecasting import CountForecaster, SeasonalNaiveForecaster
from posheads.estimators.forecasting.likelihood import likelihood_name
from posheads.estimators.forecasting.series import check_series

NYC_COVARIATES = ["holiday", "precip", "wind_speed", "visib"]


SERIES = ("EWR", "JFK", "LGA", "Seatbelts")


def series(fast: bool, only=None):
    """``(name, y, X, horizon, n_windows)`` for each benchmark series (or those in ``only``)."""
    only = set(only or (("JFK", "Seatbelts") if fast else SERIES))
    for origin in [a for a in SERIES[:3] if a in only]:
        b = load_nyc_departures("D", origin=origin, as_frame=True, fill_missing=True)
        yield f"NYC {origin} daily", b.target, b.data[NYC_COVARIATES], 28, 2 if fast else 6
    if "Seatbelts" in only:
        b = load_seatbelts(target="VanKilled", as_frame=True)
        yield "Seatbelts VanKilled monthly", b.target, None, 12, 2 if fast else 6


def forecasters(num_steps: int, num_samples: int):
    common = {"num_steps": num_steps, "num_samples": num_samples, "random_state": 0}
    return {
        "count": CountForecaster(**common),
        "log-gaussian": CountForecaster(likelihood="log_gaussian", **common),
        "seasonal-naive": SeasonalNaiveForecaster(num_samples=num_samples, random_state=0),
    }


def run(fast: bool, only=None) -> pd.DataFrame:
    num_steps, num_samples = (200, 200) if fast else (1000, 500)
    rows = []
    for name, y, X, horizon, n_windows in series(fast, only):
        for label, est in forecasters(num_steps, num_samples).items():
            start = time.perf_counter()
            table = est.backtest(y, X, horizon=horizon, n_windows=n_windows, coverage=0.9)
            seconds = time.perf_counter() - start
            table.insert(0, "forecaster", label)
            if hasattr(est, "likelihood"):  # the law each window's fit used
                table["likelihood"] = [_fitted_likelihood(est, y, t) for t in table.n_train]
            table.insert(0, "series", name)
            table["seconds"] = seconds / n_windows
            rows.append(table)
            print(
                f"{name:30s} {label:15s} CRPS {table.crps.mean():7.3f}  "
                f"coverage {table.coverage.mean():.3f}  ({seconds:.0f} s)",
                flush=True,
            )
    return pd.concat(rows, ignore_index=True)


def _fitted_likelihood(est, y, n_train):
    """The ``likelihood_`` ``est`` has on the first ``n_train`` steps (no fitting)."""
    probe = clone(est)
    probe._set_seasons(check_series(y.iloc[:n_train])[1], n_train)
    return likelihood_name(probe._choose_family(y.iloc[:n_train].to_numpy(dtype=float)))


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per series and forecaster, with CRPS ratios to the two comparators."""
    table = scores.groupby(["series", "forecaster"], sort=False).agg(
        windows=("crps", "size"),
        crps=("crps", "mean"),
        mae=("mae", "mean"),
        coverage_90=("coverage", "mean"),
        seconds_per_fit=("seconds", "mean"),
    )
    series = table.index.get_level_values("series")
    for comparator, column in (
        ("seasonal-naive", "crps_vs_naive"),
        ("log-gaussian", "crps_vs_log_gaussian"),
    ):
        base = table.xs(comparator, level="forecaster")["crps"]
        table[column] = table["crps"] / base.reindex(series).to_numpy()
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast", action="store_true", help="2 windows, JFK and Seatbelts only, few steps"
    )
    parser.add_argument(
        "--series",
        nargs="+",
        choices=SERIES,
        default=None,
        help="run these series only (default: all)",
    )
    parser.add_argument("--out", default=None, help="CSV file for the per-window scores")
    parser.add_argument(
        "--table-from",
        nargs="+",
        default=None,
        help="print the table from CSVs written by --out, without running",
    )
    args = parser.parse_args(argv)
    if args.table_from:
        scores = pd.concat([pd.read_csv(f) for f in args.table_from], ignore_index=True)
    else:
        torch.set_num_threads(1)  # one core per benchmark: timings comparable across machines
        scores = run(args.fast, args.series)
    if args.out:
        scores.to_csv(args.out, index=False)
    table = summarise(scores)
    print()
    print(markdown(table.reset_index()))
    return 0


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub table (without the optional ``tabulate`` dependency of ``to_markdown``)."""
    digits = {
        "crps": 2,
        "mae": 2,
        "coverage_90": 3,
        "seconds_per_fit": 1,
        "crps_vs_naive": 3,
        "crps_vs_log_gaussian": 3,
    }
    cells = [
        [f"{v:.{digits[c]}f}" if c in digits else str(v) for c, v in row.items()]
        for _, row in frame.iterrows()
    ]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.shape[1]]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


if __name__ == "__main__":
    raise SystemExit(main())
