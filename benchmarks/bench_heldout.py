"""Benchmark: held-out NMES1988 -- deviance, D² and 90% interval coverage of every model.

``train_test_split(test_size=0.2, random_state=0)`` of the 4,406 people; the target is
``visits`` (physician office visits) and the features are the 16 columns of
:func:`posheads.datasets.nmes1988_design`: every remaining column of the data set except
the other utilisation counts (ovisits, nvisits, novisits, emergency, hospital), factors
one-hot encoded, standardised inside each pipeline. Each model is fitted on the training
rows; the table gives the test rows' mean Poisson deviance, D² (fraction of Poisson
deviance explained, as scikit-learn's ``score``), the share of test counts inside the 90%
predictive interval, and the fit time.

Intervals: scikit-learn's ``PoissonRegressor`` gets the plug-in Poisson interval at its
predicted mean (central, scipy quantiles); posheads' MAP fits the plug-in predictive of
their own likelihood; the Bayesian fits (NUTS, one chain of 500 warm-up and 1000 draws)
the posterior predictive. posheads' intervals hold at least 90% of the predictive
probability, equal-tailed where the support allows
(:func:`posheads.posterior.count_interval`).

Usage::

    python benchmarks/bench_heldout.py [--skip-nuts] [--num-samples 1000]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from scipy import stats
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import d2_tweedie_score, mean_poisson_deviance
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from posheads import (
    HurdleNegativeBinomialSoftplusRegressor,
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)
from posheads.datasets import load_nmes1988, nmes1988_design

FAMILIES = {
    "Poisson": PoissonSoftplusRegressor,
    "negative binomial": NegativeBinomialSoftplusRegressor,
    "zero-inflated Poisson": ZeroInflatedPoissonSoftplusRegressor,
    "zero-inflated NB": ZeroInflatedNegativeBinomialSoftplusRegressor,
    "hurdle Poisson": HurdlePoissonSoftplusRegressor,
    "hurdle NB": HurdleNegativeBinomialSoftplusRegressor,
}


def split():
    bunch = load_nmes1988(as_frame=True)
    X = nmes1988_design(bunch.frame).to_numpy(np.float64)
    y = bunch.target.to_numpy(np.float64)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def models(nuts: bool, num_warmup: int, num_samples: int):
    out = {"scikit-learn PoissonRegressor, log link, MLE":
           make_pipeline(StandardScaler(), PoissonRegressor(alpha=0.0, max_iter=1000))}
    for name, cls in FAMILIES.items():
        out[f"posheads {name}, softplus, MAP"] = make_pipeline(
            StandardScaler(), cls(alpha=0.0, random_state=0))
    if nuts:
        for name, cls in FAMILIES.items():
            out[f"posheads {name}, softplus, NUTS"] = make_pipeline(
                StandardScaler(), cls(alpha=0.0, inference="nuts", num_warmup=num_warmup,
                                      num_samples=num_samples, random_state=0, verbose=0))
    return out


def interval(pipe, X, mu, coverage=0.9):
    est = pipe[-1]
    if hasattr(est, "predict_interval"):
        b = est.predict_interval(pipe[:-1].transform(X), coverage=coverage)
        return b[:, 0], b[:, 1]
    a = (1 - coverage) / 2
    return stats.poisson.ppf(a, mu), stats.poisson.ppf(1 - a, mu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-nuts", action="store_true")
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args(argv)
    X_tr, X_te, y_tr, y_te = split()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"NMES1988 held out: train {len(y_tr)}, test {len(y_te)}, {X_tr.shape[1]} features; "
          f"torch {torch.__version__}, load average {load:.1f}\n")
    print("| model | test deviance | D² | 90% coverage | mean width | fit s |")
    print("|---|---|---|---|---|---|")
    PoissonSoftplusRegressor(alpha=0.0).fit(X_tr[:100], y_tr[:100])  # imports, not timed
    for name, pipe in models(not args.skip_nuts, args.num_warmup, args.num_samples).items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(X_tr, y_tr)
        elapsed = time.perf_counter() - t0
        mu = np.maximum(pipe.predict(X_te), 1e-12)
        lo, hi = interval(pipe, X_te, mu)
        cover = np.mean((y_te >= lo) & (y_te <= hi))
        print(f"| {name} | {mean_poisson_deviance(y_te, mu):.3f} "
              f"| {d2_tweedie_score(y_te, mu, power=1):.3f} | {cover:.1%} "
              f"| {np.mean(hi - lo):.1f} | {elapsed:.2f} |", flush=True)


if __name__ == "__main__":
    main()
