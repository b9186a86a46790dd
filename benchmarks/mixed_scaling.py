"""Laplace ML fit time and peak memory of MixedCountRegressor as the data grow.

Two runs, each size in a fresh subprocess (so peak resident memory is its own):

* ``--case slope``: the issue's simulated NB model with a correlated random intercept and
  slope, 100,000 rows in 2,000 groups;
* ``--case scaling``: an NB random intercept with 10 rows per group, 1e2 .. 1e5 groups.

Usage::

    python benchmarks/mixed_scaling.py --case slope
    python benchmarks/mixed_scaling.py --case scaling --groups 100 1000 10000 100000

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


def simulate(G, rows_per_group, slope, seed=0):
    from posheads import families

    rng = np.random.default_rng(seed)
    n = G * rows_per_group
    codes = rng.integers(0, G, n)
    x = rng.normal(size=n)
    sd = np.array([0.6, 0.4 if slope else 0.0])
    cov = np.array([[1.0, 0.3], [0.3, 1.0]]) * np.outer(sd, sd)
    u = rng.multivariate_normal([0.0, 0.0], cov, G)
    eta = 2.0 + 0.7 * x + u[codes, 0] + u[codes, 1] * x
    y, _ = families.get_family("negative_binomial").simulate(
        np.logaddexp(0.0, eta), rng, shapes={"concentration": 5.0})
    return x[:, None], codes, y


def one(G, rows_per_group, slope):
    from posheads.estimators.mixed import MixedCountRegressor

    X, g, y = simulate(G, rows_per_group, slope)
    spec = {"group": ["1", "x0"] if slope else ["1"]}
    start, cpu = time.perf_counter(), time.process_time()
    m = MixedCountRegressor("negative_binomial", random_effects=spec).fit(X, y, groups=g)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"groups": G, "rows": len(y), "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "peak_MiB": round(peak), "iterations": m.fit_.n_iter,
            "converged": m.fit_.converged, "coef": [round(m.intercept_, 3),
                                                     round(float(m.coef_[0]), 3)],
            "sd": [round(float(s), 3) for s in m.sd_["group"]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["slope", "scaling"], default="slope")
    parser.add_argument("--groups", type=int, nargs="*", default=[100, 1000, 10000, 100000])
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(*args.child[:2], bool(args.child[2]))))
        return
    runs = [(2000, 50, 1)] if args.case == "slope" else [(G, 10, 0) for G in args.groups]
    for G, per, slope in runs:
        out = subprocess.run([sys.executable, __file__, "--child", str(G), str(per),
                              str(slope)], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
