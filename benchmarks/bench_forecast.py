"""Rolling-origin backtests of posheads' count forecaster against statsforecast's models.

Series and windows (every forecaster sees the same windows, is refitted on each prefix and
scored on the following ``horizon`` steps):

- NYC departures, daily, 2013, one series per airport (EWR, JFK, LGA): horizon 28 days,
  6 windows 28 days apart (tests 17 July - 31 December). The count forecaster gets the
  known-in-advance covariates ``holiday, precip, wind_speed, visib`` (the observed weather
  stands in for a forecast of it); statsforecast's models get none.
- Seatbelts, monthly, 1969-1984, ``DriversKilled``, ``front``, ``rear`` and ``VanKilled``:
  horizon 12 months, 6 windows 12 months apart (tests 1979-1984), no covariates.
- A simulated panel (:func:`posheads.datasets.make_intermittent_panel`, seed 0): 12 daily
  series of 365 days, half smooth (negative binomial), half intermittent (hurdle negative
  binomial, 50-95% zeros); horizon 28, 3 windows.

Forecasters:

- ``count``: :class:`posheads.CountForecaster` with its defaults;
- ``count-svi``: the same with ``inference="svi"`` (the previous default), where selectable
  (1,000 SVI steps a fit: minutes per fit on a busy host, so run it on its own with
  ``--forecasters count-svi``);
- statsforecast's AutoETS, AutoARIMA and SeasonalNaive (season 7 for days, 12 for months),
  and on the simulated panel Croston (classic), CrostonSBA, TSB (``alpha_d = alpha_p =
  0.1``), ADIDA and IMAPA. How they are scored: :mod:`forecast_scoring` (Gaussian law from
  their 80% and 95% intervals, sampled and rounded; point forecasts scored by their absolute
  error, which is their CRPS).

Scores per window: mean CRPS over the steps, MAE of the median, and the coverage of the
central 90% interval (randomised PIT for count paths). The table averages them over
windows; ``vs_naive`` and ``vs_best_sf`` divide a forecaster's mean CRPS by the seasonal
naive's and by the lowest of statsforecast's models on the same series and windows. The
goal line gives the geometric means of ``count``'s ratios over the series.

Run ``python benchmarks/bench_forecast.py`` (one torch thread) or with ``--fast`` for a
smoke test; ``--series JFK VanKilled`` runs some series (so that groups can run in
parallel processes), ``--forecasters count AutoETS`` some forecasters; ``--out FILE.csv``
keeps the per-window scores and ``--table-from A.csv B.csv ...`` prints the tables from them.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from forecast_scoring import PROBABILISTIC_MODELS, markdown, score_paths, statsforecast_scores
from sklearn.base import clone

from posheads.datasets import load_nyc_departures, load_seatbelts, make_intermittent_panel
from posheads.estimators.forecasting import CountForecaster

NYC_COVARIATES = ["holiday", "precip", "wind_speed", "visib"]
AIRPORTS = ("EWR", "JFK", "LGA")
SEATBELTS = ("DriversKilled", "front", "rear", "VanKilled")
SERIES = (*AIRPORTS, *SEATBELTS, "simulated")
NUM_SAMPLES = 500


@dataclass
class Case:
    """One benchmark series group: a long frame, optional covariates, the window plan."""

    name: str
    frame: pd.DataFrame  # unique_id, ds, y
    covariates: dict | None  # unique_id -> DataFrame on ds
    freq: str
    horizon: int
    n_windows: int
    season_length: int
    intermittent: bool = False
    kinds: dict | None = None  # unique_id -> "smooth" / "intermittent" (simulated)


def _long(y: pd.Series, uid: str) -> pd.DataFrame:
    return pd.DataFrame({"unique_id": uid, "ds": y.index, "y": y.to_numpy(dtype=np.float64)})


def cases(fast: bool, only=None):
    """The benchmark's series groups (or those named in ``only``)."""
    only = set(only or (("JFK", "VanKilled", "simulated") if fast else SERIES))
    n_windows = 2 if fast else 6
    for origin in [a for a in AIRPORTS if a in only]:
        b = load_nyc_departures("D", origin=origin, as_frame=True, fill_missing=True)
        yield Case(f"NYC {origin}", _long(b.target, origin), {origin: b.data[NYC_COVARIATES]},
                   "D", 28, n_windows, 7)
    for target in [t for t in SEATBELTS if t in only]:
        b = load_seatbelts(target=target, as_frame=True)
        yield Case(f"Seatbelts {target}", _long(b.target, target), None, "MS", 12, n_windows, 12)
    if "simulated" in only:
        frame, info = make_intermittent_panel(4 if fast else 12, 365, random_state=0)
        frame["y"] = frame.y.astype(np.float64)
        yield Case("simulated panel", frame, None, "D", 28, 2 if fast else 3, 7,
                   intermittent=True, kinds=info.params.kind.to_dict())


def count_forecasters(fast: bool, names=None) -> dict:
    """The count forecasters to run: the defaults, and the previous default (SVI)."""
    common = {"num_samples": NUM_SAMPLES, "random_state": 0}
    found = {"count": CountForecaster(**common)}
    options = CountForecaster._parameter_constraints["inference"][0]
    if "svi" in getattr(options, "options", ()):
        found["count-svi"] = CountForecaster(inference="svi", **common)
    if fast:
        for est in found.values():
            if est.get_params().get("inference") == "svi":
                est.set_params(num_steps=200)
    return {k: v for k, v in found.items() if names is None or k in names}


def window_ends(n: int, horizon: int, n_windows: int) -> list[int]:
    """Training ends of ``n_windows`` origins ``horizon`` apart; the last test ends the data."""
    return [n - horizon * (n_windows - i) for i in range(n_windows)]


def panel_scores(case: Case, base, train, series, t1: int, w: int, label: str) -> list:
    """Scores of one panel fit (``fit`` on the long frame) on every series of the window."""
    start = time.perf_counter()
    est = clone(base).fit(train)
    paths = est.sample_paths(case.horizon, NUM_SAMPLES)  # (n, series, h)
    seconds = (time.perf_counter() - start) / len(series)
    rows = []
    for s, uid in enumerate(est.series_ids_):
        truth = series[uid].y.to_numpy()[t1 : t1 + case.horizon]
        rows.append({"unique_id": uid, "forecaster": label, "window": w,
                     **score_paths(paths[:, s], truth, 0.9, seed=w), "seconds": seconds})
    print(f"  {case.name} w{w} {label} (panel fit): mean CRPS "
          f"{np.mean([r['crps'] for r in rows]):.3f} ({seconds * len(series):.1f} s)",
          flush=True)
    return rows


def run_case(case: Case, forecasters: dict, sf_names) -> pd.DataFrame:
    """Per-window, per-series scores of every forecaster on one group."""
    rows = []
    series = dict(tuple(case.frame.groupby("unique_id", sort=False)))
    n = min(len(g) for g in series.values())
    for w, t1 in enumerate(window_ends(n, case.horizon, case.n_windows)):
        train = pd.concat([g.iloc[:t1] for g in series.values()], ignore_index=True)
        test = pd.concat([g.iloc[t1 : t1 + case.horizon] for g in series.values()],
                         ignore_index=True)
        for label, base in forecasters.items():
            if case.kinds is not None and base.get_params()["inference"] == "laplace":
                rows.extend(panel_scores(case, base, train, series, t1, w, label))
                continue
            for uid, g in series.items():
                y = pd.Series(g.y.to_numpy()[:t1], index=pd.DatetimeIndex(g.ds.iloc[:t1],
                              freq=case.freq), name=uid)
                X = None if case.covariates is None else case.covariates[uid]
                start = time.perf_counter()
                est = clone(base).fit(y, None if X is None else X.iloc[:t1])
                X_future = None if X is None else X.iloc[t1 : t1 + case.horizon]
                paths = est.sample_paths(case.horizon, NUM_SAMPLES, X_future=X_future)
                seconds = time.perf_counter() - start
                truth = g.y.to_numpy()[t1 : t1 + case.horizon]
                rows.append({"unique_id": uid, "forecaster": label, "window": w,
                             **score_paths(np.asarray(paths), truth, 0.9, seed=w),
                             "seconds": seconds})
                print(f"  {case.name} {uid} w{w} {label}: CRPS {rows[-1]['crps']:.3f} "
                      f"({seconds:.1f} s)", flush=True)
        if sf_names:
            sf = statsforecast_scores(train, test, freq=case.freq,
                                      season_length=case.season_length,
                                      intermittent=case.intermittent, num_samples=NUM_SAMPLES,
                                      seed=w)
            sf = sf[sf.forecaster.isin(sf_names)].assign(window=w)
            rows.extend(sf.to_dict("records"))
    out = pd.DataFrame(rows)
    out.insert(0, "series", case.name)
    if case.kinds is not None:
        out["kind"] = out.unique_id.map(case.kinds)
    return out


def run(fast: bool, only=None, names=None) -> pd.DataFrame:
    forecasters = count_forecasters(fast, names)
    sf_names = None if names is None else [n for n in names if n not in forecasters]
    frames = []
    for case in cases(fast, only):
        start = time.perf_counter()
        frames.append(run_case(case, forecasters, sf_names if names else ALL_SF))
        print(f"{case.name}: {time.perf_counter() - start:.0f} s", flush=True)
    return pd.concat(frames, ignore_index=True)


ALL_SF = (*PROBABILISTIC_MODELS, "CrostonClassic", "CrostonSBA", "TSB", "ADIDA", "IMAPA")


def _group(scores: pd.DataFrame) -> pd.Series:
    """The table's series label: a real series, or the simulated panel's kind."""
    if "kind" not in scores:
        return scores.series
    kind = scores["kind"]
    return scores.series.where(kind.isna(), "simulated " + kind.fillna("") + " (mean)")


def summarise(scores: pd.DataFrame):
    """The per-series table and the goal lines (ratios of ``count`` and geometric means)."""
    scores = scores.assign(group=_group(scores))
    per_series = scores.groupby(["group", "unique_id", "forecaster"], sort=False)[
        ["crps", "mae", "coverage", "seconds"]].mean().reset_index()
    crps = per_series.pivot_table(index=["group", "unique_id"], columns="forecaster",
                                  values="crps")
    sf = [c for c in crps.columns if c in ALL_SF]
    ratios = pd.DataFrame(index=crps.index)
    for label in [c for c in crps.columns if c.startswith("count")]:
        if "SeasonalNaive" in crps:
            ratios[f"{label}_vs_naive"] = crps[label] / crps["SeasonalNaive"]
        if sf:
            ratios[f"{label}_vs_best_sf"] = crps[label] / crps[sf].min(axis=1)
    ratios["best_sf"] = crps[sf].idxmin(axis=1) if sf else ""
    table = per_series.groupby(["group", "forecaster"], sort=False)[
        ["crps", "mae", "coverage", "seconds"]].mean().reset_index()
    numeric = ratios.select_dtypes("number")
    geo = numeric.groupby(level="group", sort=False).agg(
        lambda r: float(np.exp(np.log(r).mean()))) if numeric.shape[1] else numeric
    # (no ratio columns when only count forecasters ran: nothing to divide by)
    return table, ratios.reset_index(), geo.reset_index()


def print_tables(scores: pd.DataFrame) -> None:
    table, ratios, geo = summarise(scores)
    digits = {"crps": 3, "mae": 3, "coverage": 3, "seconds": 1}
    print(markdown(table.rename(columns={"coverage": "coverage"}), digits))
    ratio_digits = {c: 3 for c in ratios.columns if "_vs_" in c}
    print()
    print(markdown(geo, ratio_digits))
    numeric = ratios.select_dtypes("number")
    print()
    print("geometric mean over all series:",
          {c: round(float(np.exp(np.log(numeric[c]).mean())), 3) for c in numeric})
    if "count_vs_naive" in ratios:
        print("series where count loses to the seasonal naive:",
              ratios.loc[ratios["count_vs_naive"] > 1, "unique_id"].tolist())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="2 windows, JFK, VanKilled and 4 simulated series")
    parser.add_argument("--series", nargs="+", choices=SERIES, default=None)
    parser.add_argument("--forecasters", nargs="+", default=None,
                        help="run these forecasters only (count, count-svi, AutoETS, ...)")
    parser.add_argument("--out", default=None, help="CSV file for the per-window scores")
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the tables from CSVs written by --out, without running")
    args = parser.parse_args(argv)
    if args.table_from:
        scores = pd.concat([pd.read_csv(f) for f in args.table_from], ignore_index=True)
    else:
        torch.set_num_threads(1)  # one core per benchmark process
        scores = run(args.fast, args.series, args.forecasters)
    if args.out:
        scores.to_csv(args.out, index=False)
    print()
    print_tables(scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
