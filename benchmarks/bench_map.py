"""Benchmark: maximum-likelihood Poisson GLM fits, posheads vs the tools a user would pick.

posheads' :func:`~posheads.inference.fit_map` (softplus link, Newton with the exact
Hessian) against statsmodels' IRLS with a softplus link class, scikit-learn's
``PoissonRegressor(alpha=0)`` (``lbfgs`` and ``newton-cholesky``, log link) and glum's
``GeneralizedLinearRegressor(family="poisson", alpha=0)`` (log link), on

* NMES1988 (4,406 x 16, the standardised design of ``posheads.datasets``), and
* a simulated 1,000,000 x 50 set: ``default_rng(0)``, ``X = N(0, 1) / sqrt(50)``,
  ``w ~ N(0, 0.5)``, ``b0 = 1``, ``y ~ Poisson(softplus(b0 + X w))``.

Each fit call alone is timed (data conversion excluded), median of ``--repeats`` (3)
after one warm-up fit, the tools interleaved round by round; every tool runs in this
process, so the ratios compare like with like on a shared machine. Wall and CPU time
are both reported; ratios are ours / peer (below 1: posheads is faster). The rows marked
"estimator .fit vs .fit" time ``PoissonSoftplusRegressor(alpha=0).fit(X, y)`` from numpy
arrays (validation and conversion included, default ``tol=1e-6``) against scikit-learn's
``PoissonRegressor.fit``. posheads runs
at its default ``tol=1e-8``; the rows marked ``both tol=1e-4`` rerun it at
scikit-learn's default tolerance, which bounds the same quantity (the largest gradient
entry of the mean loss). statsmodels on the
large set takes tens of seconds: ``--with-statsmodels``.

Usage::

    python benchmarks/bench_map.py [--with-statsmodels] [--repeats 3] [--skip-large]
                                   [--threads N] [--nmes-repeats R]

On a shared machine whose other jobs keep the cores busy, multi-threaded kernels wait for
descheduled threads; ``--threads 1`` compares the algorithms free of that noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from posheads import PoissonSoftplusRegressor
from posheads.datasets import load_nmes1988, nmes1988_design
from posheads.inference import fit_map
from posheads.models.glm import GLMData, SoftplusGLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/
from tools.peers import statsmodels_softplus_link


def simulated(n=1_000_000, p=50):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p)) / np.sqrt(p)
    w = rng.normal(0.0, 0.5, p)
    y = rng.poisson(np.logaddexp(0.0, 1.0 + X @ w)).astype(np.float64)
    return X, y


def nmes():
    bunch = load_nmes1988(as_frame=True)
    X = nmes1988_design(bunch.frame, standardize=True).to_numpy(dtype=np.float64)
    return np.ascontiguousarray(X), bunch.target.to_numpy().astype(np.float64)


def fitters(X, y, with_statsmodels=True):
    """name -> (link, zero-argument fit call); the data is converted before timing."""
    from glum import GeneralizedLinearRegressor
    from sklearn.linear_model import PoissonRegressor

    data = GLMData(torch.from_numpy(X), torch.from_numpy(y))
    model = SoftplusGLM("poisson", coef_scale=None, intercept_scale=None)
    out = {"posheads fit_map (Newton)": ("softplus", lambda: fit_map(model, data)),
           # scikit-learn's default tolerance, on the same quantity: max |gradient| of the
           # mean loss (its objective, half the mean deviance, has our gradient)
           "posheads fit_map tol=1e-4": ("softplus", lambda: fit_map(model, data, tol=1e-4)),
           # the estimator from numpy arrays, validation and conversion included, at its
           # default tol=1e-6, against scikit-learn's estimators at theirs (1e-4)
           "posheads PoissonSoftplusRegressor": (
               "softplus", lambda: PoissonSoftplusRegressor(alpha=0).fit(X, y))}
    if with_statsmodels:
        import statsmodels.api as sm

        family = sm.families.Poisson(link=statsmodels_softplus_link(), check_link=False)
        Xc = sm.add_constant(X)
        out["statsmodels GLM IRLS"] = (
            "softplus", lambda: sm.GLM(y, Xc, family=family).fit(tol=1e-12, maxiter=200))
    for solver in ("lbfgs", "newton-cholesky"):
        out[f"sklearn PoissonRegressor {solver}"] = (
            "log", lambda s=solver: PoissonRegressor(alpha=0, solver=s, max_iter=1000).fit(X, y))
    out["glum GeneralizedLinearRegressor"] = (
        "log", lambda: GeneralizedLinearRegressor(family="poisson", alpha=0).fit(X, y))
    return out


def time_calls(fns, repeats):
    """Median wall and CPU time of each call: a warm-up each, then interleaved rounds.

    Interleaving (every tool once per round) spreads a change in the machine's load over
    all tools alike. CPU time (``time.process_time``, all threads of this process) does
    not count the time the process waits for a core, so with ``--threads 1`` it measures
    the work itself even on a busy machine.
    """
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in fns}


def run(name, X, y, with_statsmodels, repeats):
    tools = fitters(X, y, with_statsmodels)
    timings = time_calls({k: fn for k, (_, fn) in tools.items()}, repeats)
    ours, ours_cpu = timings.pop("posheads fit_map (Newton)")
    loose, loose_cpu = timings.pop("posheads fit_map tol=1e-4")
    est, est_cpu = timings.pop("posheads PoissonSoftplusRegressor")
    rows = []
    for peer, (t, c) in timings.items():
        rows.append(f"| {name} | {peer} ({tools[peer][0]}) | {ours * 1e3:.1f} | {t * 1e3:.1f} "
                    f"| {ours / t:.2f} | {ours_cpu * 1e3:.1f} | {c * 1e3:.1f} "
                    f"| {ours_cpu / c:.2f} |")
    for peer in [k for k in timings if k.startswith("sklearn")]:
        t, c = timings[peer]
        rows.append(f"| {name} | {peer} ({tools[peer][0]}), both tol=1e-4 | {loose * 1e3:.1f} "
                    f"| {t * 1e3:.1f} | {loose / t:.2f} | {loose_cpu * 1e3:.1f} "
                    f"| {c * 1e3:.1f} | {loose_cpu / c:.2f} |")
        rows.append(f"| {name} | {peer} ({tools[peer][0]}), estimator .fit vs .fit "
                    f"| {est * 1e3:.1f} | {t * 1e3:.1f} | {est / t:.2f} | {est_cpu * 1e3:.1f} "
                    f"| {c * 1e3:.1f} | {est_cpu / c:.2f} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-statsmodels", action="store_true",
                        help="also time statsmodels on the 1,000,000 x 50 set (slow)")
    parser.add_argument("--skip-large", action="store_true", help="NMES1988 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nmes-repeats", type=int, default=None,
                        help="repeats on NMES1988 (default: --repeats); its fits take ms, "
                             "so more repeats steady the median on a busy machine")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin every tool to this many threads (torch, BLAS and OpenMP "
                             "pools); 0 keeps each library's default")
    args = parser.parse_args(argv)
    if args.threads > 0:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        with threadpool_limits(limits=args.threads):
            return report(args)
    return report(args)


def report(args):
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| data | peer (link) | posheads wall ms | peer wall ms | wall ratio "
          "| posheads CPU ms | peer CPU ms | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in run("NMES1988 4406x16", *nmes(), True, args.nmes_repeats or args.repeats):
        print(row, flush=True)
    if not args.skip_large:
        for row in run("simulated 1e6x50", *simulated(), args.with_statsmodels, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
