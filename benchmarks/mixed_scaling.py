"""Laplace ML fit time and peak memory of MixedCountRegressor as the data grow.

Two runs, each size in a fresh subprocess (so peak resident memory is its own):

* ``--case slope``: the issue's simulated NB model with a correlated random intercept and
  slope, 100,000 rows in 2,000 groups;
* ``--case scaling``: an NB random intercept with 10 rows per group, 1e2 .. 1e5 groups;
* ``--case crossed``: the same rows with a second, crossed random intercept (``G / 20``
  levels, at most 1000, each row's level drawn at random): the block elimination of the
  larger factor, with a dense Schur complement over the smaller one.

Usage::

    python benchmarks/mixed_scaling.py --case slope
    python benchmarks/mixed_scaling.py --case scaling --groups 100 1000 10000 100000
    python benchmarks/mixed_scaling.py --case crossed --groups 100 1000 10000 100000

On a shared host set ``OMP_NUM_THREADS=1`` (glmmTMB runs on one thread; torch's OpenMP
threads spin on a busy host and burn CPU time).

Prints one line per fit: groups, rows, fit seconds (one fit, standard errors included)
and the CPU seconds of the process (steadier than wall time on a shared host),
peak resident memory (MiB), outer iterations and the estimates. Note the host load
(``uptime``) beside the figures; results go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def crossed_levels(G):
    """Levels of the second, crossed factor for ``G`` levels of the first."""
    return max(5, min(G // 20, 1000))


def simulate(G, rows_per_group, slope, crossed=False, seed=0):
    """NB rows; with ``crossed``, a second intercept (SD 0.3) on ``crossed_levels(G)``
    levels drawn at random for each row."""
    from posheads import families

    rng = np.random.default_rng(seed)
    n = G * rows_per_group
    codes = rng.integers(0, G, n)
    x = rng.normal(size=n)
    sd = np.array([0.6, 0.4 if slope else 0.0])
    cov = np.array([[1.0, 0.3], [0.3, 1.0]]) * np.outer(sd, sd)
    u = rng.multivariate_normal([0.0, 0.0], cov, G)
    eta = 2.0 + 0.7 * x + u[codes, 0] + u[codes, 1] * x
    other = None
    if crossed:
        G2 = crossed_levels(G)
        other = rng.integers(0, G2, n)
        other[:G2] = np.arange(G2)  # every level occurs
        eta = eta + rng.normal(0.0, 0.3, G2)[other]
    y, _ = families.get_family("negative_binomial").simulate(
        np.logaddexp(0.0, eta), rng, shapes={"concentration": 5.0})
    return x[:, None], codes, other, y


def one(G, rows_per_group, slope, crossed=False):
    import pandas as pd

    from posheads.estimators.mixed import MixedCountRegressor

    X, g, other, y = simulate(G, rows_per_group, slope, crossed)
    spec = {"group": ["1", "x0"] if slope else ["1"]}
    groups = g
    if crossed:
        spec["other"] = ["1"]
        groups = pd.DataFrame({"group": g, "other": other})
    start, cpu = time.perf_counter(), time.process_time()
    m = MixedCountRegressor("negative_binomial", random_effects=spec).fit(X, y, groups=groups)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"groups": G, "rows": len(y), "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "peak_MiB": round(peak), "iterations": m.fit_.n_iter,
            "converged": m.fit_.converged, "coef": [round(m.intercept_, 3),
                                                     round(float(m.coef_[0]), 3)],
            "sd": [round(float(s), 3) for k in spec for s in m.sd_[k]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["slope", "scaling", "crossed"], default="slope")
    parser.add_argument("--groups", type=int, nargs="*", default=[100, 1000, 10000, 100000])
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(*args.child[:2], bool(args.child[2]), bool(args.child[3]))))
        return
    crossed = int(args.case == "crossed")
    runs = [(2000, 50, 1)] if args.case == "slope" else [(G, 10, 0) for G in args.groups]
    for G, per, slope in runs:
        out = subprocess.run([sys.executable, __file__, "--child", str(G), str(per),
                              str(slope), str(crossed)], capture_output=True, text=True,
                             check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
