"""The cost of ``formula=``: a formula fit against a numeric-array fit of the same design.

The model is the negative-binomial regressor of the issue's example formula.

Both fits solve the same problem (the numeric design is the formula's own design, built
once beforehand as a C-contiguous float64 array, as a user holding arrays would pass it),
so the difference is what the formula costs: checking the frame's columns, formulaic's
materialisation (factors, a B-spline basis) and the estimator's checks of the matrix.
Two floors put the figure in context: formulaic's own ``model_matrix`` of the same
right-hand side (no posheads code), and a hand-written numpy encoding of the same design
(treatment dummies from the factor's codes, the numbers, the B-spline basis as two cubics
on the knots R's ``bs`` places), checked to equal the formula's design. A last run, the
array fit of a design built just before it (untimed), shows what the solver pays for the
fresh memory any large design leaves behind, whoever builds it. Run on NMES1988 (4,406
rows) and on NMES1988 resampled to a million rows; all timings are interleaved in one
process (so a change in the host's load touches each alike; the order turns each
repeat), as medians of wall and CPU time (torch on one thread), split into user and
system time, with the process's minor page faults per fit and the load average.

    python benchmarks/bench_formula.py [--rows 1000000] [--repeats 5]

Results go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
import torch
from machine import cpu_model  # benchmarks/machine.py (the script's folder is on sys.path)

from posheads import NegativeBinomialSoftplusRegressor
from posheads.datasets import load_nmes1988
from posheads.estimators.design import DataDesign

__all__ = ["hand_design", "main", "measure"]

# the example: a factor, two numbers and a B-spline basis
FORMULA = "visits ~ C(health) + chronic + age + bs(income, 4)"
RHS = FORMULA.split("~")[1]


def hand_design(frame) -> np.ndarray:
    """The design of ``RHS`` written out in numpy, no intercept: the floor of any encoding.

    ``C(health)``: treatment dummies, reference ``average`` (the loader's first level);
    ``bs(income, 4)``: the cubic B-spline basis on the knots R's ``bs`` places for four
    degrees of freedom (the boundary at the range, one interior knot at the median), its
    first function dropped. Each basis function is a cubic on either side of the median:
    scipy gives the polynomials' coefficients (``PPoly.from_spline``, on 9 knots), numpy
    evaluates them by Horner's rule, a few passes over the column.

    Returns
    -------
    ndarray of shape (n, 8), C-contiguous float64
    """
    from scipy.interpolate import BSpline, PPoly

    n = len(frame)
    out = np.empty((n, 8))
    health = frame["health"].cat  # compare the integer codes, not the strings
    levels = list(health.categories)
    codes = health.codes.to_numpy()
    out[:, 0] = codes == levels.index("poor")
    out[:, 1] = codes == levels.index("excellent")
    out[:, 2] = frame["chronic"].to_numpy()
    out[:, 3] = frame["age"].to_numpy()
    x = frame["income"].to_numpy(dtype=np.float64)
    lo, mid, hi = x.min(), np.quantile(x, 0.5), x.max()
    knots = np.r_[[lo] * 4, mid, [hi] * 4]
    right = x >= mid
    u = np.where(right, x - mid, x - lo)  # the distance from each piece's left end
    for j in range(1, 5):
        # coefficients of function j on [lo, mid) and [mid, hi] (intervals 3 and 4)
        c = PPoly.from_spline(BSpline(knots, np.eye(5)[j], 3)).c[:, 3:5]
        acc = np.where(right, c[0, 1], c[0, 0])
        for k in range(1, 4):
            acc *= u
            acc += np.where(right, c[k, 1], c[k, 0])
        out[:, 3 + j] = acc
    return out


def _formulaic_alone(frame):
    import formulaic

    return formulaic.model_matrix(RHS, frame, output="numpy")


def _time(fn):
    """Wall, CPU, user and system seconds and minor page faults of one call.

    System time is mostly the kernel handing out fresh pages: how much of it a fit pays
    depends on what the allocator kept from earlier work, so user time is the figure
    that tracks the work itself.
    """
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    w1, c1 = time.perf_counter(), time.process_time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (w1 - w0, c1 - c0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
            r1.ru_minflt - r0.ru_minflt)


def measure(frame, repeats):
    """Medians of (wall s, CPU s, user s, system s, minor faults) per run: the formula
    fit, the array fit, the array fit of a design built just before it (untimed), the
    design alone, formulaic alone and the hand-written encoding."""
    _, X, _, y = DataDesign.fit(frame, formula=FORMULA)
    X = np.array(X, dtype=np.float64, order="C")  # the user's own array
    np.testing.assert_allclose(hand_design(frame), X, rtol=1e-12, atol=1e-12)
    fresh = {}

    def build():  # untimed: a new design, as the formula fit builds before its solve
        fresh["X"], fresh["y"] = DataDesign.fit(frame, formula=FORMULA)[1::2]

    runs = {
        "formula": lambda: NegativeBinomialSoftplusRegressor(alpha=0, formula=FORMULA).fit(frame),
        "array": lambda: NegativeBinomialSoftplusRegressor(alpha=0).fit(X, y),
        # the array fit of a design just built (not timed): what the solver pays for
        # the memory state that building a design leaves, whoever builds it
        "fresh": lambda: NegativeBinomialSoftplusRegressor(alpha=0).fit(fresh["X"],
                                                                        fresh["y"]),
        "design": lambda: DataDesign.fit(frame, formula=FORMULA),
        "formulaic": lambda: _formulaic_alone(frame),
        "numpy": lambda: hand_design(frame),
    }
    build()
    for fn in runs.values():  # warm up: imports, kernels
        fn()
    times = {k: [] for k in runs}
    keys = list(runs)
    for i in range(repeats):
        # the order turns each repeat: a fit right after another fit finds the memory
        # the first one freed, and pays fewer page faults than one after the encodings
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            if k == "fresh":
                build()
            times[k].append(_time(runs[k]))
            fresh.clear()
    return {k: tuple(statistics.median(t[i] for t in v) for i in range(5))
            for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    nmes = load_nmes1988(as_frame=True).frame
    rng = np.random.default_rng(0)
    big = nmes.iloc[rng.integers(0, len(nmes), args.rows)].reset_index(drop=True)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; load average before "
          f"{os.getloadavg()[0]:.2f}")
    print("medians: wall s / CPU s (user s + system s, minor page faults) per run; "
          "overhead = formula fit / array fit - 1")
    for name, frame, repeats in [("NMES1988", nmes, 3 * args.repeats),
                                 ("NMES1988 resampled", big, args.repeats)]:
        r = measure(frame, repeats)
        print(f"{name} ({len(frame)} rows, {repeats} repeats):")
        for k, v in r.items():
            print(f"  {k:>9} {v[0]:.3f} / {v[1]:.3f} ({v[2]:.3f} + {v[3]:.3f}, {v[4]:.0f})")
        f, a = r["formula"], r["array"]
        print("  overhead: wall {:+.1%}, CPU {:+.1%}, user {:+.1%};  per array fit (CPU): "
              "design {:.1%}, formulaic alone {:.1%}, hand-written numpy {:.1%}".format(
                  f[0] / a[0] - 1, f[1] / a[1] - 1, f[2] / a[2] - 1, r["design"][1] / a[1],
                  r["formulaic"][1] / a[1], r["numpy"][1] / a[1]))
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
