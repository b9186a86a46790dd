"""Simulation-based calibration of fit_nuts and fit_laplace on the Poisson and NB GLMs.

The full-size run behind ``tests/test_sbc.py`` (which runs a smaller version in CI): for
each likelihood and engine, ``--reps`` replications of prior draw -> simulated counts ->
posterior -> rank of the truth among ``--draws`` posterior draws (NUTS thinned by 2), and
a chi-square test of uniform ranks over ``--bins`` bins for every scalar parameter. The
model and priors are ``tests/_sbc.py``'s :func:`sbc_model`.

Laplace is an approximation, so its ranks are uniform only where the posterior is close
to Gaussian in the unconstrained space: the Poisson GLM at ``--n`` rows, the NB GLM at
``--n-laplace-nb`` rows (with fewer rows the concentration's posterior is skewed and its
ranks pile up at the top).

Usage::

    python benchmarks/sbc.py [--reps 200] [--draws 99] [--bins 10] [--n 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._sbc import chi_square, run_sbc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--draws", type=int, default=99, help="L; L + 1 divisible by bins")
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--n", type=int, default=100, help="rows per simulated data set")
    parser.add_argument("--n-laplace-nb", type=int, default=1000)
    parser.add_argument("--p", type=int, default=5, help="features")
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=None,
                        help="run one case, e.g. nuts:negative_binomial")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = [("laplace", "poisson", args.n), ("laplace", "negative_binomial", args.n_laplace_nb),
             ("nuts", "poisson", args.n), ("nuts", "negative_binomial", args.n)]
    if args.only:
        cases = [c for c in cases if f"{c[0]}:{c[1]}" == args.only]
    print(f"SBC: {args.reps} replications, L = {args.draws} draws, {args.bins} bins, "
          f"p = {args.p} features, seed {args.seed}")
    worst = 1.0
    for engine, likelihood, n in cases:
        start = time.perf_counter()
        ranks = run_sbc(likelihood, engine, num_reps=args.reps, n=n, p=args.p,
                        num_draws=args.draws, seed=args.seed, num_warmup=args.warmup)
        wall = time.perf_counter() - start
        print(f"\n{engine} / {likelihood} / n = {n}: {wall:.0f} s")
        for name, r in ranks.items():
            p_value, counts = chi_square(r, args.draws, args.bins)
            worst = min(worst, p_value)
            print(f"  {name:14s} p = {p_value:.4f}   bins {counts.tolist()}")
    print(f"\nsmallest p-value: {worst:.4f} ({'pass' if worst > 1e-3 else 'FAIL'} at 0.001)")


if __name__ == "__main__":
    main()
