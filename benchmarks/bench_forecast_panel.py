"""Scale: CountForecaster's panel fit against statsforecast's AutoETS on 1,000 daily series.

The panel is :func:`posheads.datasets.make_intermittent_panel` (seed 0): ``--n-series``
(default 1,000) daily series of ``--n-timesteps`` (default 1,095: three years), half
smooth (negative binomial, typical means 5-100), half intermittent (hurdle negative
binomial, 50-95% zeros), each with a weekly season and a random-walk level. Every method
trains on all but the last 28 days of every series and forecasts those 28 days.

Each method runs in a fresh subprocess (``--worker``) that reads the panel from a parquet
file, warms up on two series (numba compiles statsforecast's models on first use), then
times **fit + 28-day forecast** of the whole panel with ``time.perf_counter`` (imports,
reading and warm-up excluded), and reports the process's peak resident memory
(``resource.getrusage``'s ``ru_maxrss``, Linux KiB) beside its resident memory just before
the fit, so that the difference is what the fit and forecast added, and the CPU time of
the fit and forecast (the process and its finished children: statsforecast's worker
pool), the fairer figure on a busy host (for ``count`` also split into fit and forecast),
and the one-minute load average when it finished. Scores on the held-out
days: mean CRPS over all series and steps (and per kind), and the coverage of the 90%
interval (randomised PIT for count paths), by :mod:`forecast_scoring` (AutoETS: Gaussian law
from its 80% and 95% intervals, sampled and rounded).

Methods: ``count`` (``CountForecaster()`` fitted on the long frame, 500 sample paths),
``AutoETS`` (``StatsForecast(models=[AutoETS(season_length=7)], n_jobs=THREADS)``) and
``SeasonalNaive`` (for reference). ``--threads`` (default 2) is given to torch and to
statsforecast's ``n_jobs`` alike.

Run ``python benchmarks/bench_forecast_panel.py`` (``--n-series 50`` for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HORIZON = 28
NUM_SAMPLES = 500
METHODS = ("count", "AutoETS", "SeasonalNaive")


def _rss_kib() -> int:
    """Current resident memory of this process, KiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (statsforecast's worker pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _split(frame: pd.DataFrame):
    last = frame.groupby("unique_id").cumcount(ascending=False) < HORIZON
    return frame[~last].reset_index(drop=True), frame[last].reset_index(drop=True)


def count_forecast(train: pd.DataFrame, threads: int, phases: dict | None = None) -> dict:
    """Fit ``CountForecaster()`` on the long frame; sample paths ``(n, h)`` per series.

    ``phases``, when given, receives the CPU seconds of the fit and of the forecast.
    """
    import torch

    from posheads.estimators.forecasting import CountForecaster

    torch.set_num_threads(threads)
    start = _cpu_seconds()
    est = CountForecaster(num_samples=NUM_SAMPLES, random_state=0).fit(train)
    fitted = _cpu_seconds()
    paths = est.sample_paths(HORIZON, NUM_SAMPLES)  # (n, series, h)
    if phases is not None:
        phases.update(fit_cpu_seconds=fitted - start, forecast_cpu_seconds=_cpu_seconds() - fitted)
    return {uid: paths[:, s].astype(np.float64) for s, uid in enumerate(est.series_ids_)}


def statsforecast_forecast(train: pd.DataFrame, name: str, threads: int) -> pd.DataFrame:
    from statsforecast import StatsForecast
    from statsforecast import models as sfm

    model = getattr(sfm, name)(season_length=7)
    sf = StatsForecast(models=[model], freq="D", n_jobs=threads)
    return sf.forecast(df=train, h=HORIZON, level=[80, 90, 95])


def worker(method: str, data: str, threads: int) -> dict:
    from forecast_scoring import crps_paths, gaussian_paths, pit_coverage

    frame = pd.read_parquet(data)
    kinds = pd.read_parquet(data.replace(".parquet", "_kinds.parquet")).kind
    train, test = _split(frame)
    # Warm up on two series, untimed: numba compiles statsforecast's models on first use,
    # torch sets up its kernels; neither belongs to the cost of a forecast.
    warm = train[train.unique_id.isin(pd.unique(train.unique_id)[:2])]
    _ = count_forecast(warm, threads) if method == "count" else \
        statsforecast_forecast(warm, method, threads)
    rss_before = _rss_kib()
    phases = {}
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    if method == "count":
        paths = count_forecast(train, threads, phases)
    else:
        out = statsforecast_forecast(train, method, threads)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    if method != "count":
        paths = {uid: gaussian_paths(part, method, NUM_SAMPLES, rng)
                 for uid, part in out.groupby("unique_id", sort=False)}
    crps, cover, kind = [], [], []
    for uid, g in test.groupby("unique_id", sort=False):
        y = g.y.to_numpy(dtype=np.float64)
        crps.append(crps_paths(paths[uid], y).mean())
        cover.append(pit_coverage(paths[uid], y, 0.9, rng).mean())
        kind.append(kinds[uid])
    crps, cover, kind = np.array(crps), np.array(cover), np.array(kind)
    return {
        "method": method, "threads": threads, "seconds": seconds, "cpu_seconds": cpu,
        "rss_before_mib": rss_before / 1024, "peak_rss_mib": peak / 1024,
        # the largest finished child (one of statsforecast's pool workers), Linux KiB
        "peak_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        **phases, "load_average": os.getloadavg()[0],
        "crps": float(crps.mean()), "coverage_90": float(cover.mean()),
        "crps_smooth": float(crps[kind == "smooth"].mean()),
        "crps_intermittent": float(crps[kind == "intermittent"].mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--n-timesteps", type=int, default=1095)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", default=None, help="CSV file for the results")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.threads)))
        return 0

    from posheads.datasets import make_intermittent_panel

    frame, info = make_intermittent_panel(args.n_series, args.n_timesteps, random_state=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "panel.parquet")
        frame.to_parquet(data)
        info.params[["kind"]].to_parquet(data.replace(".parquet", "_kinds.parquet"))
        for method in args.methods:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
                   "--data", data, "--threads", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{method} failed:\n{proc.stderr[-3000:]}", flush=True)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"{args.n_series} series x {args.n_timesteps} days, horizon {HORIZON}, "
          f"load {os.getloadavg()}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
