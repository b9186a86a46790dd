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

``--variants`` runs the study of structural variants instead (one series at a time, the
same windows): ``CountForecaster`` with 1..all Fourier harmonics, each with and without a
damped drift (a standardised time column whose future values grow by ``0.98**j``), each
scored and given its Laplace evidence (:func:`variant_evidence`), so that choosing or
averaging the variants by evidence can be compared with the default.

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


def variant_evidence(est, tau: float = 3.0) -> np.ndarray:
    """Log evidence of a one-series Laplace fit, up to a constant shared by all variants.

    The fit's own evidence of each grid value of the level step profiles the weights; the
    weights are integrated here under ``Normal(0, tau**2)`` (``eta`` scale) by the Laplace
    approximation of their block (the Schur complement of the level path in the Hessian,
    read off ``laplace_.state_cov``). The constant is the log prior of the grid value,
    which cancels between variants at a common grid value. Returns ``(G,)``.
    """
    from posheads.estimators.forecasting.laplace import tridiagonal_elimination
    from posheads.models.forecast_panel import PanelData, PanelParams

    fit, model = est.laplace_, est.model_
    feats = torch.as_tensor(est._features(0, est.panel_.covariates[0]))[None]
    y = torch.as_tensor(est.panel_.values[0], dtype=torch.float64)[None]
    data = PanelData(y, torch.ones_like(y), feats.double(), torch.as_tensor(est.scales_))
    sigma, level = fit.sigma.double(), fit.level.double()
    params = PanelParams(z=level.diff(dim=-1) / sigma[:, None, None], level0=level[..., 0],
                         weight=fit.weight, log_shapes=fit.log_shapes, gates=fit.gates,
                         weight_mean=fit.weight.mean(1), shape_mean=fit.log_shapes.mean(1),
                         gate_mean=fit.gates.mean(1))
    eta = model.eta(level, fit.weight, data.features).detach().requires_grad_(True)
    lik = model.log_likelihood(eta, params, data)
    (grad,) = torch.autograd.grad(lik.sum(), eta, create_graph=True)
    (hess,) = torch.autograd.grad(grad.sum(), eta)
    walk = model.innovation_curvature(params.z)
    logdet, _ = tridiagonal_elimination((-hess).clamp_min(0.0).detach(), sigma, walk)
    joint = lik.detach().sum(-1) + model.log_prior(params)
    out = joint - 0.5 * logdet - (y.shape[-1] - 1) * sigma.log()[:, None] - fit.log_post
    k = fit.weight.shape[-1]
    if k:
        _, code_precision = model.prior_precisions(1)
        schur = torch.linalg.inv(fit.state_cov[..., 1:, 1:].double())
        schur = schur + (1.0 / tau**2 - code_precision) * torch.eye(k, dtype=schur.dtype)
        out = out + ((-0.5 * (fit.weight / tau) ** 2).sum(-1) - k * np.log(tau)
                     - 0.5 * torch.linalg.slogdet(schur)[1])
    return out[:, 0].numpy()


def run_variants(only) -> pd.DataFrame:
    """Scores and evidence of every structural variant on every window of ``only``."""
    rows = []
    for case in cases(False, only):
        if case.kinds is not None:
            continue
        for uid, g in case.frame.groupby("unique_id", sort=False):
            n = len(g)
            for w, t1 in enumerate(window_ends(n, case.horizon, case.n_windows)):
                y = pd.Series(g.y.to_numpy()[:t1], index=pd.DatetimeIndex(
                    g.ds.iloc[:t1], freq=case.freq), name=uid)
                X = None if case.covariates is None else case.covariates[uid].to_numpy()
                clock = (np.arange(t1) - (t1 - 1.0)) / t1
                ahead = np.cumsum(0.98 ** np.arange(1, case.horizon + 1)) / t1
                for terms in range(1, case.season_length // 2 + 1):
                    for drift in (False, True):
                        x_fit = None if X is None else X[:t1]
                        x_future = None if X is None else X[t1:t1 + case.horizon]
                        if drift:
                            x_fit = np.column_stack([c for c in (x_fit, clock) if c is not None])
                            x_future = np.column_stack(
                                [c for c in (x_future, ahead) if c is not None])
                        est = CountForecaster(fourier_terms=terms, num_samples=NUM_SAMPLES,
                                              random_state=0).fit(y, x_fit)
                        paths = est.sample_paths(case.horizon, NUM_SAMPLES, X_future=x_future)
                        truth = g.y.to_numpy()[t1:t1 + case.horizon]
                        rows.append({"unique_id": uid, "window": w, "terms": terms,
                                     "drift": drift, "evidence": variant_evidence(est),
                                     **score_paths(np.asarray(paths), truth, 0.9, seed=w)})
                print(f"  {uid} w{w}: {len(rows)} variant fits", flush=True)
    return pd.DataFrame(rows)


def variant_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean CRPS per series of the default (all harmonics, no drift), of each drift
    choice, and of choosing or averaging by evidence (over harmonics and drift, or over
    drift only); the averaged CRPS is the evidence-weighted mean of the variants' CRPS
    (an upper bound of the mixture's)."""
    out = []
    for (uid, w), g in rows.groupby(["unique_id", "window"], sort=False):
        full = g[g.terms == g.terms.max()]
        rec = {"unique_id": uid, "window": w, "default": full[~full.drift].crps.iloc[0],
               "drift": full[full.drift].crps.iloc[0]}
        for label, sub in (("all", g), ("drift_only", full)):
            ev = np.stack(sub.evidence.to_numpy())  # (variants, G)
            common = np.argmax(ev.min(0))  # the grid value where all variants have mass
            weight = np.exp(ev[:, common] - ev[:, common].max())
            weight /= weight.sum()
            rec[f"choose_{label}"] = sub.crps.to_numpy()[weight.argmax()]
            rec[f"average_{label}"] = float(weight @ sub.crps.to_numpy())
        out.append(rec)
    return pd.DataFrame(out).groupby("unique_id", sort=False).mean().drop(columns="window")


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
    parser.add_argument("--variants", action="store_true",
                        help="the study of structural variants chosen by evidence")
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the tables from CSVs written by --out, without running")
    args = parser.parse_args(argv)
    if args.variants:
        torch.set_num_threads(1)
        rows = run_variants(args.series)
        if args.out:
            rows.to_pickle(args.out)
        table = variant_table(rows).reset_index()
        print(markdown(table, {c: 3 for c in table.columns[1:]}))
        return 0
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
