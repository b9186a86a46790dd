"""The total of NYC's three airports: coherent bottom-up draws against forecasting it alone.

``CountForecaster(hierarchy={"total": ["EWR", "JFK", "LGA"]})`` fits the three airports'
daily departures as one panel and forecasts the total as the sum of the airports' draws
(coherent by construction). This script compares, on rolling-origin windows, the CRPS and
90% coverage of the total's forecast from

- ``coherent``: that panel fit (each airport with the holiday and weather covariates);
- ``total alone``: ``CountForecaster()`` fitted on the total series with the same
  covariates (the total's weather: the mean over the airports);
- statsforecast's AutoETS, AutoARIMA and SeasonalNaive (season 7) on the total, scored as
  in :mod:`forecast_scoring`;

and, for the parts, the panel fit's airports against each airport fitted alone.

Windows: 28 days, ``--windows`` of them (default 6) 28 days apart, the last ending on
31 December 2013. Run ``python benchmarks/bench_hierarchy.py`` (one torch thread).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from forecast_scoring import markdown, score_paths, statsforecast_scores
from machine import cpu_model

from posheads.datasets import load_nyc_departures
from posheads.estimators.forecasting import CountForecaster

AIRPORTS = ("EWR", "JFK", "LGA")
COVARIATES = ["holiday", "precip", "wind_speed", "visib"]
HORIZON = 28
NUM_SAMPLES = 500


def long_frame() -> pd.DataFrame:
    """``unique_id, ds, y`` and the covariates of the three airports."""
    parts = []
    for origin in AIRPORTS:
        b = load_nyc_departures("D", origin=origin, as_frame=True, fill_missing=True)
        frame = b.data[COVARIATES].copy()
        frame.insert(0, "y", b.target.to_numpy(dtype=np.float64))
        frame.insert(0, "ds", b.target.index)
        frame.insert(0, "unique_id", origin)
        parts.append(frame.reset_index(drop=True))
    return pd.concat(parts, ignore_index=True)


def total_series(frame: pd.DataFrame):
    """The total's counts (Series on ``ds``) and its covariates (airport means; holiday max)."""
    g = frame.groupby("ds")
    y = g["y"].sum()
    X = g[COVARIATES].mean()
    X["holiday"] = g["holiday"].max()
    index = pd.DatetimeIndex(y.index, freq="D")
    return pd.Series(y.to_numpy(), index=index, name="total"), X.set_index(index)


def run(n_windows: int, level_steps: str = "normal") -> pd.DataFrame:
    frame = long_frame()
    y_total, X_total = total_series(frame)
    n = len(y_total)
    rows = []
    for w in range(n_windows):
        t1 = n - HORIZON * (n_windows - w)
        stamps = y_total.index[:t1]
        train = frame[frame.ds.isin(stamps)]
        future = frame[frame.ds.isin(y_total.index[t1:t1 + HORIZON])]
        truth_total = y_total.to_numpy()[t1:t1 + HORIZON]

        start = time.perf_counter()
        panel = CountForecaster(hierarchy={"total": list(AIRPORTS)}, num_samples=NUM_SAMPLES,
                                random_state=0, level_steps=level_steps).fit(train)
        paths = panel.sample_paths(HORIZON, NUM_SAMPLES, X_future=future.drop(columns="y"))
        seconds = time.perf_counter() - start
        ids = list(panel.series_ids_)
        rows.append({"window": w, "series": "total", "forecaster": "coherent (panel)",
                     **score_paths(paths[:, ids.index("total")], truth_total, 0.9, seed=w),
                     "seconds": seconds})
        for origin in AIRPORTS:
            truth = future.loc[future.unique_id == origin, "y"].to_numpy()
            rows.append({"window": w, "series": origin, "forecaster": "panel",
                         **score_paths(paths[:, ids.index(origin)], truth, 0.9, seed=w),
                         "seconds": seconds})

        start = time.perf_counter()
        alone = CountForecaster(num_samples=NUM_SAMPLES, random_state=0,
                                level_steps=level_steps).fit(
            y_total.iloc[:t1], X_total.iloc[:t1])
        draws = alone.sample_paths(HORIZON, NUM_SAMPLES, X_future=X_total.iloc[t1:t1 + HORIZON])
        rows.append({"window": w, "series": "total", "forecaster": "total alone",
                     **score_paths(np.asarray(draws), truth_total, 0.9, seed=w),
                     "seconds": time.perf_counter() - start})
        for origin in AIRPORTS:
            part = train[train.unique_id == origin]
            index = pd.DatetimeIndex(part.ds, freq="D")
            one = CountForecaster(num_samples=NUM_SAMPLES, random_state=0,
                                  level_steps=level_steps).fit(
                pd.Series(part.y.to_numpy(), index=index), part[COVARIATES].set_index(index))
            fut = future[future.unique_id == origin]
            draws = one.sample_paths(HORIZON, NUM_SAMPLES, X_future=fut[COVARIATES].set_index(
                pd.DatetimeIndex(fut.ds, freq="D")))
            rows.append({"window": w, "series": origin, "forecaster": "alone",
                         **score_paths(np.asarray(draws), fut.y.to_numpy(), 0.9, seed=w),
                         "seconds": np.nan})

        sf_train = pd.DataFrame({"unique_id": "total", "ds": stamps,
                                 "y": y_total.to_numpy()[:t1]})
        sf_test = pd.DataFrame({"unique_id": "total", "ds": y_total.index[t1:t1 + HORIZON],
                                "y": truth_total})
        sf = statsforecast_scores(sf_train, sf_test, freq="D", season_length=7,
                                  intermittent=False, num_samples=NUM_SAMPLES, seed=w)
        for r in sf.to_dict("records"):
            rows.append({"window": w, "series": "total", "forecaster": r["forecaster"],
                         **{k: r[k] for k in ("crps", "mae", "coverage", "seconds")}})
        shown = [r for r in rows if r["window"] == w and r["series"] == "total"]
        print(f"window {w}: " + ", ".join(f"{r['forecaster']} {r['crps']:.2f}" for r in shown),
              flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--out", default=None, help="CSV file for the per-window scores")
    parser.add_argument("--level-steps", default="normal", choices=("normal", "jumps"),
                        help="CountForecaster's level_steps, for every count forecaster")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"CPU: {cpu_model()}")
    scores = run(args.windows, args.level_steps)
    if args.out:
        scores.to_csv(args.out, index=False)
    table = scores.groupby(["series", "forecaster"], sort=False)[
        ["crps", "mae", "coverage", "seconds"]].mean().reset_index()
    print(markdown(table, {"crps": 2, "mae": 2, "coverage": 3, "seconds": 1}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
