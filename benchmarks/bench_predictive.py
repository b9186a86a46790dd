"""Benchmark: the predictive probabilities of each count on NMES1988 (4,406 x 16).

``predict_pmf(X, max_count=K)`` of posheads' MAP NB2 fit against statsmodels' discrete
``NegativeBinomial`` results ``predict(which="prob", y_values=0..K)`` (log link: each
tool predicts from its own fit; only the time of the probabilities is compared), and the
posterior predictive of a Laplace fit (``num_samples`` draws, averaged in log space)
against the same average written with scipy's ``nbinom.pmf`` over the draws in numpy,
which is what a user would otherwise write. ``K`` is the largest observed count (89).
Medians of ``--repeats`` CPU times (``time.process_time``) after one warm-up, one thread.

Usage::

    python benchmarks/bench_predictive.py [--repeats 21] [--num-samples 1000]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from scipy import stats

from posheads import NegativeBinomialSoftplusRegressor
from posheads.datasets import load_nmes1988, nmes1988_design


def _median_cpu(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import statsmodels.api as sm

    nmes = load_nmes1988(as_frame=True)
    X = nmes1988_design(nmes.frame, standardize=True).to_numpy(np.float64)
    y = np.asarray(nmes.target, dtype=np.float64)
    K = int(y.max())
    grid = np.arange(K + 1)

    est = NegativeBinomialSoftplusRegressor(alpha=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.NegativeBinomial(y, sm.add_constant(X)).fit(disp=0, maxiter=200)
    ours = _median_cpu(lambda: est.predict_pmf(X, max_count=K), args.repeats)
    peer = _median_cpu(lambda: res.predict(which="prob", y_values=grid), args.repeats)
    rows = [("MAP NB2, plug-in", "statsmodels NegativeBinomial predict(which='prob')",
             ours, peer)]

    lap = NegativeBinomialSoftplusRegressor(alpha=0, inference="laplace",
                                            num_samples=args.num_samples,
                                            random_state=0).fit(X, y)
    draws = {k: v.cpu().numpy() for k, v in lap.posterior_.draws().items()}

    def by_hand():
        mu = np.logaddexp(0, draws["intercept"][:, None] + draws["coef"] @ X.T)  # (S, n)
        r = draws["concentration"][:, None]
        p = r / (r + mu)
        return np.stack([stats.nbinom.pmf(k, r, p).mean(axis=0) for k in grid], axis=1)

    reps = max(3, args.repeats // 7)
    np.testing.assert_allclose(lap.predict_pmf(X, max_count=K), by_hand(), rtol=1e-8,
                               atol=1e-14)
    ours = _median_cpu(lambda: lap.predict_pmf(X, max_count=K), reps)
    peer = _median_cpu(by_hand, reps)
    rows.append((f"Laplace NB2, {args.num_samples} draws", "scipy nbinom.pmf averaged in numpy",
                 ours, peer))

    print(f"host: {os.cpu_count()} CPUs; n = {len(y)}, K = {K}, repeats {args.repeats}"
          f" (Bayesian: {reps})")
    print("| fit | peer | posheads CPU ms | peer CPU ms | CPU ratio |")
    print("|---|---|---|---|---|")
    for what, who, a, b in rows:
        print(f"| {what} | {who} | {a:,.1f} | {b:,.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
