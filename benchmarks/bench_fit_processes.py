"""Benchmark: estimator ``.fit`` against scikit-learn's, one fresh process per tool.

``bench_map.py`` times every tool in one process, which is the fairest comparison of
the algorithms at one thread. At the default thread counts the tools' thread pools
(torch's, OpenMP's, BLAS's) would wait on each other there, so this script starts a
fresh Python process for each tool and data set, in rounds that alternate the tools,
and leaves every library at its default number of threads.

Each child fits the estimator once to warm up and then times ``--repeats`` fits (wall
time, ``time.perf_counter``) of

* ``posheads``: ``PoissonSoftplusRegressor(alpha=0).fit(X, y)`` (softplus link),
* ``lbfgs`` / ``newton-cholesky``: ``PoissonRegressor(alpha=0, solver=...).fit(X, y)``
  (log link, ``max_iter=1000`` as in ``bench_map.py``, defaults otherwise),

from the same numpy arrays as ``bench_map.py``: NMES1988 (4,406 x 16) and the simulated
1,000,000 x 50 set. It prints the median of each process and, per round, the ratio of
posheads to the faster scikit-learn solver. Each child also reports the median CPU time
of its fits (``time.process_time``, all its threads): with ``--threads 1`` that is the
figure to compare on a loaded machine. ``--tools`` runs a subset (``posheads`` alone,
to compare two versions of posheads, each run with its own ``PYTHONPATH``).

Usage::

    python benchmarks/bench_fit_processes.py [--rounds 2] [--nmes-repeats 41] [--repeats 5]
                                              [--skip-large] [--tools posheads ...]
                                              [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

TOOLS = ("posheads", "lbfgs", "newton-cholesky")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child(tool: str, data: str, repeats: int) -> None:
    """Time one tool on one data set in this process and print the result as JSON."""
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_map import nmes, simulated

    X, y = nmes() if data == "nmes" else simulated()
    X, y = np.asarray(X), np.asarray(y)
    if tool == "posheads":
        from posheads import PoissonSoftplusRegressor

        def make():
            return PoissonSoftplusRegressor(alpha=0)
    else:
        from sklearn.linear_model import PoissonRegressor

        def make():
            return PoissonRegressor(alpha=0, solver=tool, max_iter=1000)
    times, cpu = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' convergence warning at its max_iter
        make().fit(X, y)
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            make().fit(X, y)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(json.dumps({"median_ms": statistics.median(times) * 1e3,
                      "cpu_ms": statistics.median(cpu) * 1e3}))


def run_child(tool: str, data: str, repeats: int, threads: int | None = None) -> dict:
    """One child's medians: ``{"median_ms": wall, "cpu_ms": CPU}`` per fit."""
    env = dict(os.environ)
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", tool, "--data", data,
         "--repeats", str(repeats)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="fits per process, 1M rows")
    parser.add_argument("--nmes-repeats", type=int, default=41, help="fits per process, NMES")
    parser.add_argument("--skip-large", action="store_true", help="NMES1988 only")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the children's pools (default: the libraries')")
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--data", choices=("nmes", "large"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.repeats)
        return
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = "default threads" if args.threads is None else f"{args.threads} thread(s)"
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the start; {threads}\n")
    tools = [tool for tool in TOOLS if tool in args.tools]
    peers = [tool for tool in ("lbfgs", "newton-cholesky") if tool in tools]
    ratio = "posheads" in tools and peers
    head = " | ".join(f"{tool} ms (CPU ms)" for tool in tools)
    print(f"| data | round | {head} |" + (" ratio to the faster |" if ratio else ""))
    print("|---|---|" + "---|" * (len(tools) + bool(ratio)))
    sets = [("nmes", "NMES1988", args.nmes_repeats)]
    if not args.skip_large:
        sets.append(("large", "1M x 50 simulated", args.repeats))
    for data, label, repeats in sets:
        for r in range(args.rounds):
            t = {tool: run_child(tool, data, repeats, args.threads) for tool in tools}
            cells = " | ".join(f"{t[tool]['median_ms']:.2f} ({t[tool]['cpu_ms']:.2f})"
                               for tool in tools)
            line = f"| {label} | {r + 1} | {cells} |"
            if ratio:
                best = min(t[tool]["median_ms"] for tool in peers)
                line += f" {t['posheads']['median_ms'] / best:.2f} |"
            print(line, flush=True)


if __name__ == "__main__":
    main()
