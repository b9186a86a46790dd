"""Benchmark: time to first result, in fresh processes, against scikit-learn.

Every figure is one fresh Python process, timed from the parent (wall time around
``subprocess.run``; CPU time, user + system, from ``resource.getrusage`` of the
children), the median of ``--repeat`` runs in interleaved rounds (every command once
per round, so a change in the machine's load falls on all alike):

====  =========================================  ===============================================
case  posheads                                   peer
====  =========================================  ===============================================
a     ``python -m posheads --help``              ``python -c "import sklearn.linear_model"``
b     import + first NMES1988 MAP fit            import + ``PoissonRegressor`` (lbfgs) fit
c     import + first 1,000,000 x 50 MAP fit      the same with ``PoissonRegressor`` (lbfgs)
d     ``python -m posheads fit nmes.csv ...``    a script: ``pandas.read_csv``, one-hot
                                                 encoding, ``PoissonRegressor`` fit, the
                                                 coefficients printed, ``joblib.dump``
floor ``python -c "import torch"``               ``python -c "pass"``
deps  ``import torch, pyro, sklearn.base``       ``python -c "import sklearn.linear_model"``
====  =========================================  ===============================================

``floor`` and ``deps`` bound (b) from below: posheads' estimators are scikit-learn
estimators on torch and Pyro, so their cold path imports at least torch, Pyro and
``sklearn.base`` (which imports scipy.stats and pandas). (b) minus ``deps`` is what
posheads itself adds (its own modules and the first fit).

Fits are ``PoissonSoftplusRegressor(alpha=0)`` and ``PoissonRegressor(alpha=0,
max_iter=1000)`` (lbfgs), as in ``bench_map.py``, on the same standardised arrays
(NMES1988's 4,406 x 16 design; the 1,000,000 x 50 simulated set), which the parent
writes once to ``.npy`` files: every child reads them with ``numpy.load``, so the
data's source costs both sides the same. In (b) and (c) each child also times, inside
the process, its imports, its first fit and a second fit on the same data: first minus
second is the *first-fit penalty* (one-off work of the first call: lazy imports,
compiled kernels, caches, and memory the process touches for the first time), and
counts the minor page faults of each fit (the C library's heap, once grown by a first
fit, serves the temporaries of later ones without new faults).

The children run as after ``pip install``: with byte-compiled modules (the first,
untimed round writes them, under a private ``PYTHONPYCACHEPREFIX`` so the source tree
is left alone, even where ``PYTHONDONTWRITEBYTECODE`` is set) and with the operating
system's file cache and inductor's on-disk kernel cache filled. The machine's CPU model
and load average are printed with the table; on a shared machine, CPU times and the
ratios are steadier than wall times.

Usage::

    python benchmarks/bench_cold_start.py [--repeat 7] [--cases a b c d floor deps]
                                          [--rows 1000000] [--threads N]

``--cases c`` runs the 1,000,000-row case alone. ``--threads N`` caps the children's
thread pools (``OMP_NUM_THREADS`` and the BLAS libraries' variables): with one thread
the in-process CPU times of the first and second fit, and their difference, are read
without other threads' spinning, which on a loaded machine is steadier than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from machine import cpu_model  # benchmarks/machine.py (the script's folder is on sys.path)

CASES = ("a", "b", "c", "d", "floor", "deps")
TITLES = {
    "a": "(a) `posheads --help` vs `import sklearn.linear_model`",
    "b": "(b) import + first NMES1988 fit",
    "c": "(c) import + first {rows:,} x 50 fit",
    "d": "(d) `posheads fit` NMES1988 CSV vs a pandas + scikit-learn script",
    "floor": "floor: `import torch` vs `pass`",
    "deps": "deps: `import numpy, torch, pyro, sklearn.base` vs `import sklearn.linear_model`",
}
# The 13 covariates of NMES1988: every column of `posheads datasets export nmes1988` but
# the six utilisation counts.
NMES_FEATURES = ("health", "chronic", "adl", "region", "age", "afam", "gender", "married",
                 "school", "income", "employed", "insurance", "medicaid")

# A child of (b) and (c): imports, a first and a second fit, each timed in the process
# (wall time, and CPU time of the process: all its threads).
FIT_CHILD = """
import time, json, resource, warnings
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cpu = time.process_time
t0 = time.perf_counter()
import numpy as np
X, y = np.load({x!r}), np.load({y!r})
t1 = time.perf_counter()
{imports}
t2 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    f2, c2 = faults(), cpu()
    {fit}
    t3, f3, c3 = time.perf_counter(), faults(), cpu()
    {fit}
    t4, f4, c4 = time.perf_counter(), faults(), cpu()
print(json.dumps({{"load": t1 - t0, "import": t2 - t1, "first": t3 - t2, "second": t4 - t3,
                  "cpu_first": c3 - c2, "cpu_second": c4 - c3,
                  "faults_first": f3 - f2, "faults_second": f4 - f3}}))
"""
FITS = {
    "posheads": ("from posheads import PoissonSoftplusRegressor",
                 "PoissonSoftplusRegressor(alpha=0).fit(X, y)"),
    "sklearn": ("from sklearn.linear_model import PoissonRegressor",
                "PoissonRegressor(alpha=0, max_iter=1000).fit(X, y)"),
}
# The peer of (d): what a scikit-learn user writes for `posheads fit`.
SKLEARN_FIT_SCRIPT = """
import sys, joblib, pandas as pd
from sklearn.linear_model import PoissonRegressor
frame = pd.read_csv(sys.argv[1])
X = pd.get_dummies(frame[list({features!r})], drop_first=True, dtype=float)
model = PoissonRegressor(alpha=0, max_iter=1000).fit(X.to_numpy(), frame["visits"].to_numpy())
print(pd.Series(model.coef_, index=X.columns).to_string())
joblib.dump(model, sys.argv[2])
"""


def prepare(workdir: str, rows: int, cases) -> dict:
    """Write the children's data (``.npy`` arrays, the NMES1988 CSV); their paths."""
    import numpy as np

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from bench_map import nmes

    paths = {}
    arrays = {"nmes": nmes()}
    if "c" in cases:
        rng = np.random.default_rng(0)  # bench_map.simulated, at --rows rows
        X = rng.standard_normal((rows, 50)) / np.sqrt(50)
        w = rng.normal(0.0, 0.5, 50)
        y = rng.poisson(np.logaddexp(0.0, 1.0 + X @ w)).astype(np.float64)
        arrays["large"] = (X, y)
    for name, (X, y) in arrays.items():
        paths[name] = tuple(os.path.join(workdir, f"{name}_{v}.npy") for v in "Xy")
        np.save(paths[name][0], np.ascontiguousarray(X))
        np.save(paths[name][1], np.asarray(y, dtype=np.float64))
    paths["csv"] = os.path.join(workdir, "nmes1988.csv")
    subprocess.run([sys.executable, "-m", "posheads", "datasets", "export", "nmes1988",
                    paths["csv"]], check=True, capture_output=True, env=child_env(workdir))
    return paths


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env(workdir: str, threads: int | None = None) -> dict:
    """The children's environment: byte-compiled modules cached under ``workdir``, and
    thread pools of ``threads`` threads (if given)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    return env


def commands(paths: dict, workdir: str, cases) -> dict:
    """``(case, tool) -> argv`` of every child."""
    py = sys.executable
    out = {}
    if "a" in cases:
        out["a", "posheads"] = [py, "-m", "posheads", "--help"]
        out["a", "sklearn"] = [py, "-c", "import sklearn.linear_model"]
    for case, data in (("b", "nmes"), ("c", "large")):
        if case not in cases:
            continue
        x, y = paths[data]
        for tool, (imports, fit) in FITS.items():
            out[case, tool] = [py, "-c", FIT_CHILD.format(x=x, y=y, imports=imports, fit=fit)]
    if "d" in cases:
        out["d", "posheads"] = [
            py, "-m", "posheads", "fit", paths["csv"], "--target", "visits",
            "--features", *NMES_FEATURES, "--quiet", "--out", os.path.join(workdir, "model_ph")]
        script = SKLEARN_FIT_SCRIPT.format(features=NMES_FEATURES)
        out["d", "sklearn"] = [py, "-c", script, paths["csv"],
                               os.path.join(workdir, "model_sk.joblib")]
    if "floor" in cases:
        out["floor", "posheads"] = [py, "-c", "import torch"]
        out["floor", "sklearn"] = [py, "-c", "pass"]
    if "deps" in cases:
        out["deps", "posheads"] = [py, "-c", "import numpy, torch, pyro, sklearn.base"]
        out["deps", "sklearn"] = [py, "-c", "import sklearn.linear_model"]
    return out


def run_once(argv, env) -> dict:
    """One fresh process: its wall and CPU seconds, and what it printed as JSON (if any)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed:\n{proc.stderr[-2000:]}")
    result = {"wall": wall, "cpu": (after.ru_utime - before.ru_utime)
              + (after.ru_stime - before.ru_stime)}
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if last and last[0].startswith("{"):
        result.update(json.loads(last[0]))
    return result


def run_rounds(cmds: dict, env: dict, repeat: int, rows: int) -> dict:
    """One untimed round (bytecode, file and kernel caches), then ``repeat`` timed ones;
    the table so far goes to stderr after each round (a long run stopped early keeps it)."""
    for argv in cmds.values():
        run_once(argv, env)
    runs = {key: [] for key in cmds}
    for i in range(repeat):
        for key, argv in cmds.items():
            runs[key].append(run_once(argv, env))
        print(f"after round {i + 1} of {repeat}, load average {os.getloadavg()[0]:.1f}:\n"
              f"{table(runs, rows)}\n", file=sys.stderr, flush=True)
    return runs


def median(runs, field):
    values = [r[field] for r in runs if field in r]
    return statistics.median(values) if values else None


def table(runs: dict, rows: int) -> str:
    lines = [
        "| case | posheads wall s | peer wall s | ratio | posheads CPU s | peer CPU s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        if (case, "posheads") not in runs:
            continue
        ours, peer = runs[case, "posheads"], runs[case, "sklearn"]
        w0, w1, c0, c1 = (median(ours, "wall"), median(peer, "wall"),
                          median(ours, "cpu"), median(peer, "cpu"))
        lines.append(f"| {TITLES[case].format(rows=rows)} | {w0:.2f} | {w1:.2f} | {w0 / w1:.2f} "
                     f"| {c0:.2f} | {c1:.2f} | {c0 / c1:.2f} |")
    lines += ["", "Inside the processes of (b) and (c), medians in s: imports; first fit; second "
              "fit; first-fit penalty (first minus second, run by run), in wall and in CPU "
              "time; minor page faults of the first and the second fit (4 KiB pages first "
              "touched).", "",
              "| case | tool | imports | first fit | second fit | penalty | CPU first "
              "| CPU second | CPU penalty | faults first | faults second |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in ("b", "c"):
        for tool in FITS:
            if (case, tool) not in runs:
                continue
            r = runs[case, tool]
            penalty = statistics.median(x["first"] - x["second"] for x in r)
            cpu = statistics.median(x["cpu_first"] - x["cpu_second"] for x in r)
            lines.append(f"| {case} | {tool} | {median(r, 'import'):.3f} "
                         f"| {median(r, 'first'):.3f} | {median(r, 'second'):.3f} "
                         f"| {penalty:.3f} | {median(r, 'cpu_first'):.3f} "
                         f"| {median(r, 'cpu_second'):.3f} | {cpu:.3f} "
                         f"| {median(r, 'faults_first'):.0f} "
                         f"| {median(r, 'faults_second'):.0f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of case (c)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the children's thread pools (default: theirs)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="posheads-cold-") as workdir:
        env = child_env(workdir, args.threads)
        paths = prepare(workdir, args.rows, args.cases)
        load_before = os.getloadavg()[0]
        runs = run_rounds(commands(paths, workdir, args.cases), env, args.repeat, args.rows)
        load_after = os.getloadavg()[0]
    import torch

    threads = "default threads" if args.threads is None else f"{args.threads} thread(s)"
    print(f"Fresh processes ({threads}), median of {args.repeat} interleaved rounds after one "
          "untimed round.")
    print()
    print(table(runs, args.rows))
    print()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load_before:.1f} "
          f"before / {load_after:.1f} after; Python {platform.python_version()}, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
