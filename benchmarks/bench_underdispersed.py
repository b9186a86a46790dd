"""Under-dispersed counts: the generalized Poisson against the discretized logistic, the
negative binomial and a Conway-Maxwell-Poisson, on the NYC daily departures.

Two parts, both on the three airports' daily departures of 2013 (``datasets/``):

1. **Regression.** One softplus-link GLM for the three airports stacked: the schedule
   as origin-by-weekday and origin-by-month indicators, the holiday flag and the day's
   weather (precipitation, wind speed, visibility), standardised. Every fourth row of the
   stacked airports is held out (822 training and 273 test days). Laws: the generalized Poisson
   (:class:`posheads.GeneralizedPoissonSoftplusRegressor`), the discretized logistic (the
   same regressor machinery with ``family = DISCRETIZED_LOGISTIC``), the negative
   binomial (:class:`posheads.NegativeBinomialSoftplusRegressor`), the Poisson, and a
   Conway-Maxwell-Poisson written here in torch (``P(y) ~ lambda**y / (y!)**nu``
   parameterised by its exact mean -- ``lambda`` solved per row by Newton's method, as
   glmmTMB's ``compois`` does -- its series summed over 0 to 1.5 times the largest count,
   fitted by L-BFGS on the same design, 100 iterations at most on the hourly counts) --
   the candidate the generalized Poisson was chosen over.
   Scores: mean test log score (log pmf per day, higher is better), the share of test
   days inside the central 90% interval of the fitted law, and the median fit time.
2. **Forecasting.** :class:`posheads.CountForecaster` (its default Laplace inference)
   with each law (discretized logistic, generalized Poisson, negative binomial, Poisson),
   one airport at a time, on the rolling windows of ``bench_forecast.py`` (horizon 28
   days, 28 days apart, the last ending on 31 December), refitted on each prefix: CRPS of
   500 sample paths, MAE of their median and the randomised-PIT coverage of the central
   90% (``forecast_scoring.py``).

``--hourly`` adds the regression on the hourly counts (26,280 hours; origin-by-hour,
weekday-by-hour and origin-by-month indicators), where many means are small.

Run ``python benchmarks/bench_underdispersed.py`` (some twenty minutes on a busy 2-core
host) or with ``--fast`` (one airport, two forecast windows).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import pandas as pd
import torch

from posheads import (
    GeneralizedPoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
)
from posheads.datasets import load_nyc_departures
from posheads.estimators import SoftplusGLMRegressor
from posheads.estimators.forecasting import CountForecaster
from posheads.families import DISCRETIZED_LOGISTIC

WEATHER = ["precip", "wind_speed", "visib"]
COVARIATES = ["holiday", *WEATHER]


class DiscretizedLogisticRegressor(SoftplusGLMRegressor):
    """The discretized logistic law in the GLM regressor machinery (benchmark only)."""

    family = DISCRETIZED_LOGISTIC


def design(freq="D"):
    """``X_train, y_train, X_test, y_test`` of the stacked airports (numpy, float64).

    Daily: origin-by-weekday and origin-by-month indicators. Hourly: origin-by-hour,
    weekday-by-hour and origin-by-month indicators. Both add the holiday flag and the
    standardised weather, and hold out every fourth row of the stacked airports.
    """
    frames = []
    for origin in ("EWR", "JFK", "LGA"):
        b = load_nyc_departures(freq, origin=origin, as_frame=True, fill_missing=True)
        f = b.data[COVARIATES].copy()
        f["y"], f["origin"] = b.target.to_numpy(), origin
        f["dow"], f["month"], f["hour"] = (f.index.day_of_week, f.index.month,
                                           f.index.hour)
        frames.append(f)
    f = pd.concat(frames)
    if freq == "D":
        cells = {"origin_dow": f["origin"] + f["dow"].astype(str)}
    else:
        cells = {"origin_hour": f["origin"] + f["hour"].astype(str),
                 "dow_hour": f["dow"].astype(str) + "_" + f["hour"].astype(str)}
    cells["origin_month"] = f["origin"] + f["month"].astype(str)
    X = pd.get_dummies(pd.DataFrame(cells), drop_first=True, dtype=float)
    for c in COVARIATES:
        X[c] = (f[c] - f[c].mean()) / f[c].std()
    train = np.arange(len(f)) % 4 != 3  # every fourth row held out
    Xv, y = X.to_numpy(np.float64), f["y"].to_numpy(np.float64)
    return Xv[train], y[train], Xv[~train], y[~train]


def law_scores(log_pmf, y, coverage=0.9):
    """Mean log score and central-interval coverage from ``log_pmf`` of shape
    ``(n, K)`` over the counts ``0..K-1``."""
    pmf = log_pmf.exp()
    cdf = pmf.cumsum(-1)
    lo_q, hi_q = (1 - coverage) / 2, 1 - (1 - coverage) / 2
    lo = (cdf < lo_q).sum(-1)
    hi = (cdf < hi_q).sum(-1)
    yt = torch.as_tensor(y).long()
    score = log_pmf.gather(-1, yt.unsqueeze(-1)).squeeze(-1)
    inside = (yt >= lo) & (yt <= hi)
    return float(score.mean()), float(inside.double().mean())


def family_log_pmf(est, X, top):
    """``log P(y = k)`` for ``k < top`` under a fitted regressor's law."""
    eta = torch.as_tensor(est.intercept_ + X @ est.coef_)
    shapes = {s: torch.tensor(getattr(est, f"{s}_"), dtype=torch.float64)
              for s in est.family.shape_names}
    d = est.family.build(eta.unsqueeze(-1), shapes=shapes)
    k = torch.arange(top, dtype=torch.float64)
    return d.log_prob(k)


# ------------------------------------------------------------ Conway-Maxwell-Poisson
def cmp_log_lambda(mu, nu, k):
    """``log lambda`` of the CMP whose mean is exactly ``mu`` (rows), on the counts ``k``.

    Newton's method in ``log lambda`` without gradients (``d mean / d log lambda`` is the
    variance), then one differentiable Newton step from the root: at the root it has the
    derivatives of the implicit function (``1 / var`` in ``mu``, ``-d mean / d nu / var``
    in ``nu``), which is all that L-BFGS needs.
    """
    def moments(log_lam, nu_):
        p = torch.softmax(k * log_lam.unsqueeze(-1) - nu_ * torch.lgamma(k + 1), -1)
        mean = (p * k).sum(-1)
        return mean, (p * (k - mean.unsqueeze(-1)) ** 2).sum(-1)

    with torch.no_grad():
        m_, n_ = mu.detach(), nu.detach()
        log_lam = torch.where(m_ > 1, n_ * torch.log(m_), torch.log(m_))
        for _ in range(200):
            mean, var = moments(log_lam, n_)
            step = ((mean - m_) / var.clamp(min=1e-300)).clamp(-2.0, 2.0)
            log_lam = log_lam - step
            if float(step.abs().max()) < 1e-12:
                break
        var = moments(log_lam, n_)[1]
    mean = moments(log_lam, nu)[0]
    return log_lam - (mean - mu) / var


def cmp_log_pmf(eta, log_nu, y, k):
    """CMP log pmf with mean exactly ``softplus(eta)`` and ``nu = exp(log_nu)``, its
    series summed over the counts ``k`` (0 to well past every mean); ``y`` broadcasts
    with ``eta``."""
    nu = log_nu.exp()
    log_lam = cmp_log_lambda(torch.nn.functional.softplus(eta), nu, k)
    log_z = torch.logsumexp(k * log_lam.unsqueeze(-1) - nu * torch.lgamma(k + 1), -1)
    return y * log_lam - nu * torch.lgamma(y + 1) - log_z


def fit_cmp(X, y, k, max_iter=500):
    """CMP GLM by L-BFGS from the Poisson start: ``(intercept, coef, log_nu)``."""
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    start = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    b0 = torch.tensor(start.intercept_, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(start.coef_, dtype=torch.float64, requires_grad=True)
    log_nu = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([b0, w, log_nu], max_iter=max_iter, tolerance_grad=1e-7,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -cmp_log_pmf(b0 + Xt @ w, log_nu, yt, k).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return b0.detach(), w.detach(), log_nu.detach()


def regression(repeats=3, freq="D") -> pd.DataFrame:
    Xtr, ytr, Xte, yte = design(freq)
    top = int(max(ytr.max(), yte.max()) * 1.5)
    rows = []
    estimators = {
        "generalized Poisson": GeneralizedPoissonSoftplusRegressor(alpha=0),
        "discretized logistic": DiscretizedLogisticRegressor(alpha=0),
        "negative binomial": NegativeBinomialSoftplusRegressor(alpha=0),
        "Poisson": PoissonSoftplusRegressor(alpha=0),
    }
    for name, est in estimators.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            est.fit(Xtr, ytr)
            times.append(time.perf_counter() - t)
        score, cover = law_scores(family_log_pmf(est, Xte, top), yte)
        train, _ = law_scores(family_log_pmf(est, Xtr, top), ytr)
        shape = {s: round(getattr(est, f"{s}_"), 4) for s in est.family.shape_names}
        rows.append({"law": name, "train_log_score": train, "test_log_score": score,
                     "coverage_90": cover, "fit_seconds": statistics.median(times),
                     "shape": shape})
    times = []
    k = torch.arange(top, dtype=torch.float64)
    for _ in range(repeats):
        t = time.perf_counter()
        b0, w, log_nu = fit_cmp(Xtr, ytr, k, max_iter=500 if freq == "D" else 100)
        times.append(time.perf_counter() - t)

    def cmp_pmf(X):
        log_lam = cmp_log_lambda(torch.nn.functional.softplus(b0 + torch.as_tensor(X) @ w),
                                 log_nu.exp(), k)
        terms = k * log_lam.unsqueeze(-1) - log_nu.exp() * torch.lgamma(k + 1)
        return terms - torch.logsumexp(terms, -1, keepdim=True)

    score, cover = law_scores(cmp_pmf(Xte), yte)
    train, _ = law_scores(cmp_pmf(Xtr), ytr)
    rows.append({"law": "Conway-Maxwell-Poisson", "train_log_score": train,
                 "test_log_score": score, "coverage_90": cover,
                 "fit_seconds": statistics.median(times),
                 "shape": {"nu": round(math.exp(float(log_nu)), 4)}})
    return pd.DataFrame(rows)


FORECAST_LAWS = ("discretized_logistic", "generalized_poisson", "negative_binomial", "poisson")


def forecasting(fast: bool) -> pd.DataFrame:
    """The windows of ``bench_forecast.py`` (28 days, 28 days apart, the last ending with
    the year; 6 of them, 2 with ``--fast``), one fit of the default (Laplace) forecaster
    per law and window, scored like ``bench_forecast.py`` (CRPS of 500 paths, MAE of the
    median, randomised-PIT coverage of the central 90%)."""
    from forecast_scoring import score_paths

    horizon, windows, rows = 28, 2 if fast else 6, []
    for origin in ("JFK",) if fast else ("EWR", "JFK", "LGA"):
        b = load_nyc_departures("D", origin=origin, as_frame=True, fill_missing=True)
        y, X = b.target, b.data[COVARIATES]
        for law in FORECAST_LAWS:
            scores, times = [], []
            for w, t1 in enumerate(len(y) - horizon * (windows - i) for i in range(windows)):
                est = CountForecaster(likelihood=law, num_samples=500, random_state=0)
                t = time.perf_counter()
                est.fit(y.iloc[:t1], X.iloc[:t1])
                times.append(time.perf_counter() - t)
                paths = est.sample_paths(horizon, 500, X_future=X.iloc[t1:t1 + horizon])
                truth = y.to_numpy(dtype=np.float64)[t1:t1 + horizon]
                scores.append(score_paths(np.asarray(paths), truth, 0.9, seed=w))
            s = pd.DataFrame(scores).mean()
            rows.append({"series": origin, "law": law, "crps": s["crps"], "mae": s["mae"],
                         "coverage_90": s["coverage"], "fit_seconds": statistics.median(times)})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="one airport, two windows")
    parser.add_argument("--skip-forecast", action="store_true")
    parser.add_argument("--hourly", action="store_true",
                        help="also the regression on hourly counts (small means; minutes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = regression(repeats=1 if args.fast else 3)
    print(table.to_string(index=False), flush=True)
    if args.hourly:
        print(regression(repeats=1, freq="h").to_string(index=False), flush=True)
    if not args.skip_forecast:
        print(forecasting(args.fast).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
