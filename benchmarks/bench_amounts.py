"""Benchmark: the Gamma and Tweedie regressors against scikit-learn and glum.

Two parts, each a ratio measured in the same run:

1. Held-out quality on real amounts: Fair's (1978) survey of extramarital affairs as
   statsmodels ships it (``statsmodels.datasets.fair``, 6,366 women; "included with
   permission of the author"). ``affairs`` -- a time measure, zero for 68% of the
   respondents and a positive amount for the rest -- is the pure-premium-like target of
   the Tweedie models; its positive part (2,053 rows) is the severity-like target of the
   Gamma models. Eight survey answers, standardised, are the features. Five-fold
   cross-validation (shuffled, seed 0); per model the mean over the folds of: mean
   deviance (Tweedie at p = 1.5, Gamma), D², mean log score (log density of the held-out
   amounts; for the peers, which estimate no dispersion, the law at their means with the
   Pearson dispersion of their training fit) and the coverage of 90% predictive
   intervals (for the peers, the same plug-in law's quantiles).
2. Fit time on simulated data (10 features, 1,000,000 rows by default): posheads' MAP
   against scikit-learn's ``GammaRegressor`` / ``TweedieRegressor`` (lbfgs and
   newton-cholesky) and glum; median of ``--repeats`` fits.

Run: ``python benchmarks/bench_amounts.py [--rows 1000000] [--repeats 3] [--threads 1]
[--skip-time] [--skip-quality]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import stats
from sklearn.model_selection import KFold

from posheads import GammaSoftplusRegressor, TweedieSoftplusRegressor
from posheads.distributions import SoftplusTweedie
from posheads.families import GAMMA, TWEEDIE, tweedie_family

POWER = 1.5
COVERAGE = 0.9


def load_fair():
    """Features (standardised) and the ``affairs`` amounts of statsmodels' Fair data."""
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data
    y = frame["affairs"].to_numpy(np.float64)
    X = frame.drop(columns="affairs").to_numpy(np.float64)
    return (X - X.mean(0)) / X.std(0), y


# ------------------------------------------------------------------ peers' laws
def _pearson(y, mu, power, n_coef):
    return float(np.sum((y - mu) ** 2 / mu**power) / (len(y) - n_coef))


def _tweedie_law(mu, phi, power):
    eta = torch.from_numpy(mu + np.log(-np.expm1(-mu)))  # softplus^{-1}: the same law
    return SoftplusTweedie(eta, torch.tensor(phi, dtype=torch.float64), power=power)


def _tweedie_interval(law, seed):
    torch.manual_seed(seed)
    draws = law.sample((2000,)).numpy()
    lo = np.quantile(draws, (1 - COVERAGE) / 2, axis=0, method="inverted_cdf")
    below = (draws < lo).mean(0)  # as posheads does: the mass an atom at 0 leaves over
    hi = np.array([np.quantile(draws[:, i], min(COVERAGE + below[i], 1.0),
                               method="inverted_cdf") for i in range(draws.shape[1])])
    return lo, hi


def _scores(family, y, mu, log_score, lo, hi):
    dev = family.unit_deviance(y, mu)
    null = family.unit_deviance(y, np.full_like(y, y.mean()))
    return {"deviance": dev.mean(), "D2": 1 - dev.sum() / null.sum(),
            "log score": float(np.mean(log_score)),
            "coverage": float(np.mean((y >= lo) & (y <= hi)))}


# ------------------------------------------------------------------ part 1
def tweedie_models():
    from glum import GeneralizedLinearRegressor, TweedieDistribution
    from sklearn.linear_model import TweedieRegressor

    return {
        "posheads Tweedie p=1.5": lambda: TweedieSoftplusRegressor(alpha=0, power=POWER),
        "posheads Tweedie p=auto": lambda: TweedieSoftplusRegressor(alpha=0, power="auto"),
        "sklearn TweedieRegressor": lambda: TweedieRegressor(alpha=0, power=POWER,
                                                             solver="newton-cholesky"),
        "glum Tweedie": lambda: GeneralizedLinearRegressor(
            family=TweedieDistribution(POWER), alpha=0),
    }


def gamma_models():
    from glum import GeneralizedLinearRegressor
    from sklearn.linear_model import GammaRegressor

    return {
        "posheads Gamma": lambda: GammaSoftplusRegressor(alpha=0),
        "sklearn GammaRegressor": lambda: GammaRegressor(alpha=0, solver="newton-cholesky"),
        "glum Gamma": lambda: GeneralizedLinearRegressor(family="gamma", alpha=0),
    }


def evaluate_fold(kind, name, make, X, y, train, test, seed):
    est = make().fit(X[train], y[train])
    mu = est.predict(X[test])
    yt = y[test]
    ours = name.startswith("posheads")
    if kind == "tweedie":
        power = est.power_ if ours else POWER
        if ours:
            law = est.posterior_.model.draw_distribution(
                est.posterior_.point_estimate(), est._prediction_data(X[test]))
            log_score = law.log_prob(torch.from_numpy(yt))[0].numpy()
            lo, hi = est.predict_interval(X[test], coverage=COVERAGE).T
        else:
            phi = _pearson(y[train], est.predict(X[train]), power, X.shape[1] + 1)
            law = _tweedie_law(mu, phi, power)
            log_score = law.log_prob(torch.from_numpy(yt)).numpy()
            lo, hi = _tweedie_interval(law, seed)
        return {**_scores(TWEEDIE, yt, mu, log_score, lo, hi), "power": power}
    if ours:
        a = est.concentration_
        lo, hi = est.predict_interval(X[test], coverage=COVERAGE).T
    else:
        a = 1 / _pearson(y[train], est.predict(X[train]), 2.0, X.shape[1] + 1)
        lo, hi = (stats.gamma.ppf(q, a, scale=mu / a) for q in
                  ((1 - COVERAGE) / 2, (1 + COVERAGE) / 2))
    return {**_scores(GAMMA, yt, mu, stats.gamma.logpdf(yt, a, scale=mu / a), lo, hi),
            "power": 2.0}


def quality():
    X, y = load_fair()
    positive = y > 0
    print(f"\nFair (1978) affairs: {len(y)} rows, {np.mean(~positive):.1%} zeros; "
          f"{positive.sum()} positive amounts; {X.shape[1]} features; 5-fold CV")
    for kind, models, Xk, yk in (("tweedie", tweedie_models(), X, y),
                                 ("gamma", gamma_models(), X[positive], y[positive])):
        folds = list(KFold(5, shuffle=True, random_state=0).split(Xk))
        print(f"\n{kind}: mean over folds (deviance at p = "
              f"{POWER if kind == 'tweedie' else 2})")
        print(f"{'model':28s} {'deviance':>9s} {'D2':>7s} {'log score':>10s} "
              f"{'cover90':>8s} {'power':>6s}")
        for name, make in models.items():
            rows = [evaluate_fold(kind, name, make, Xk, yk, tr, te, seed)
                    for seed, (tr, te) in enumerate(folds)]
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(f"{name:28s} {mean['deviance']:9.4f} {mean['D2']:7.4f} "
                  f"{mean['log score']:10.4f} {mean['coverage']:8.3f} {mean['power']:6.3f}")


# ------------------------------------------------------------------ part 2
def simulate(n, family, shapes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    coef = rng.normal(size=10) * 0.2
    mu = np.logaddexp(0.0, 1.0 + X @ coef)
    return X, family.simulate(mu, rng, shapes=shapes)[0]


def timing(rows, repeats):
    from glum import GeneralizedLinearRegressor, TweedieDistribution
    from sklearn.linear_model import GammaRegressor, TweedieRegressor

    cases = {
        "gamma": (simulate(rows, GAMMA, {"concentration": 2.0}), {
            "posheads GammaSoftplusRegressor": lambda: GammaSoftplusRegressor(alpha=1e-4),
            "sklearn GammaRegressor lbfgs": lambda: GammaRegressor(alpha=1e-4),
            "sklearn GammaRegressor newton-cholesky": lambda: GammaRegressor(
                alpha=1e-4, solver="newton-cholesky"),
            "glum gamma": lambda: GeneralizedLinearRegressor(family="gamma", alpha=1e-4),
        }),
        "tweedie": (simulate(rows, tweedie_family(POWER), {"dispersion": 1.0}), {
            "posheads TweedieSoftplusRegressor": lambda: TweedieSoftplusRegressor(
                alpha=1e-4, power=POWER),
            "sklearn TweedieRegressor lbfgs": lambda: TweedieRegressor(alpha=1e-4,
                                                                       power=POWER),
            "sklearn TweedieRegressor newton-cholesky": lambda: TweedieRegressor(
                alpha=1e-4, power=POWER, solver="newton-cholesky"),
            "glum tweedie": lambda: GeneralizedLinearRegressor(
                family=TweedieDistribution(POWER), alpha=1e-4),
        }),
    }
    print(f"\nfit time, {rows} rows x 10 features, median of {repeats} (seconds)")
    for kind, ((X, y), models) in cases.items():
        print(f"{kind}: {np.mean(y == 0):.1%} zeros")
        for name, make in models.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                make().fit(X, y)
                times.append(time.perf_counter() - start)
            print(f"  {name:42s} {statistics.median(times):8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not args.skip_quality:
            quality()
        if not args.skip_time:
            timing(args.rows, args.repeats)


if __name__ == "__main__":
    main()
