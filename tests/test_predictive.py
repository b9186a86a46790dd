"""The predictive distribution of the GLM estimators: ``predict_pmf``, ``predict_cdf``,
``predict_quantile``, ``log_score`` and ``pit_interval``.

References: scipy's pmfs at the fitted parameters (plug-in for MAP), scipy's pmfs averaged
over the posterior draws (Bayesian), and Monte Carlo frequencies from
``sample_posterior_predictive``.
"""

import numpy as np
import pytest
import scipy.stats as st
from scipy.special import expit, logsumexp

from posheads import (
    HurdleNegativeBinomialSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0, 1.0 + X @ [0.6, -0.4])
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    return X, y.astype(np.float64)


def _softplus(est, X, prefix=""):
    return np.logaddexp(0, getattr(est, f"{prefix}intercept_") + X @ getattr(est, f"{prefix}coef_"))


def _scipy_pmf(est, X, k):
    """The family's pmf at the fitted (MAP) parameters, written with scipy."""
    k = np.asarray(k)[None, :]
    mu = _softplus(est, X)[:, None]
    if isinstance(est, PoissonSoftplusRegressor):
        return st.poisson.pmf(k, mu)
    if isinstance(est, NegativeBinomialSoftplusRegressor):
        r = est.concentration_
        return st.nbinom.pmf(k, r, r / (r + mu))
    pi = expit(est.gate_intercept_ + X @ est.gate_coef_)[:, None]
    if isinstance(est, ZeroInflatedPoissonSoftplusRegressor):
        return (1 - pi) * st.poisson.pmf(k, mu) + pi * (k == 0)
    r = est.concentration_
    base = st.nbinom.pmf(k, r, r / (r + mu))
    return np.where(k == 0, pi, (1 - pi) * base / (1 - st.nbinom.pmf(0, r, r / (r + mu))))


ESTIMATORS = [PoissonSoftplusRegressor, NegativeBinomialSoftplusRegressor,
              ZeroInflatedPoissonSoftplusRegressor, HurdleNegativeBinomialSoftplusRegressor]


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def fits(data):
    X, y = data
    return {cls: cls(alpha=0.01).fit(X, y) for cls in ESTIMATORS}


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_pmf_cdf_quantile_match_scipy(cls, fits, data):
    X, _ = data
    est = fits[cls]
    pmf = est.predict_pmf(X)
    ref = _scipy_pmf(est, X, np.arange(pmf.shape[1]))
    np.testing.assert_allclose(pmf, ref, rtol=1e-9, atol=1e-13)
    # without max_count the grid holds all but 1e-10 of every row's mass
    assert np.all(pmf.sum(axis=1) > 1 - 1e-10)
    cdf = est.predict_cdf(X[:20], max_count=7)
    np.testing.assert_allclose(cdf, np.cumsum(ref[:20, :8], axis=1), rtol=1e-9, atol=1e-13)
    q = np.array([0.05, 0.5, 0.9, 0.999])
    quant = est.predict_quantile(X, q)
    full = np.cumsum(_scipy_pmf(est, X, np.arange(400)), axis=1)
    expected = np.stack([np.argmax(full >= qi - 1e-12, axis=1) for qi in q], axis=1)
    np.testing.assert_array_equal(quant, expected)
    assert est.predict_quantile(X[:5], 0.5).shape == (5,)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_log_score_and_pit_match_scipy(cls, fits, data):
    X, y = data
    est = fits[cls]
    ref = _scipy_pmf(est, X, np.arange(int(y.max()) + 1))
    rows = np.arange(len(y))
    lp = np.log(ref[rows, y.astype(int)])
    np.testing.assert_allclose(est.log_predictive(X, y), lp, rtol=1e-9)
    assert est.log_score(X, y) == pytest.approx(lp.mean(), rel=1e-10)
    w = np.linspace(0.5, 2.0, len(y))
    assert est.log_score(X, y, sample_weight=w) == pytest.approx(np.average(lp, weights=w),
                                                                 rel=1e-10)
    bounds = est.pit_interval(X, y)
    cum = np.cumsum(ref, axis=1)
    np.testing.assert_allclose(bounds[:, 1], cum[rows, y.astype(int)], rtol=1e-9)
    np.testing.assert_allclose(bounds[:, 1] - bounds[:, 0], ref[rows, y.astype(int)],
                               rtol=1e-7, atol=1e-13)


def test_bayesian_pmf_averages_the_draws_and_matches_monte_carlo(data):
    X, y = data
    est = NegativeBinomialSoftplusRegressor(alpha=0.01, inference="laplace", num_samples=300,
                                            random_state=0).fit(X, y)
    draws = {k: v.cpu().numpy() for k, v in est.posterior_.draws().items()}
    Xs = X[:4]
    mu = np.logaddexp(0, draws["intercept"][:, None] + draws["coef"] @ Xs.T)  # (S, 4)
    r = draws["concentration"][:, None]
    k = np.arange(30)
    per_draw = st.nbinom.pmf(k[:, None, None], r, r / (r + mu))  # (K, S, 4)
    pmf = est.predict_pmf(Xs, max_count=29)
    np.testing.assert_allclose(pmf, per_draw.mean(axis=1).T, rtol=1e-9, atol=1e-14)
    # log score: the likelihood averaged over the draws before the log
    yy = y[:4].astype(int)
    per_draw_y = st.nbinom.logpmf(yy, r, r / (r + mu))  # (S, 4)
    expected = (logsumexp(per_draw_y, axis=0) - np.log(per_draw_y.shape[0])).mean()
    assert est.log_score(Xs, y[:4]) == pytest.approx(expected, rel=1e-10)
    # Monte Carlo from the posterior predictive (fixed seed; 5 binomial standard errors)
    n_mc = 40_000
    sims = est.sample_posterior_predictive(Xs, n_samples=n_mc, random_state=1)
    freq = np.stack([np.bincount(sims[:, i].astype(int), minlength=30)[:30] / n_mc
                     for i in range(4)])
    se = np.sqrt(pmf * (1 - pmf) / n_mc)
    assert np.all(np.abs(freq - pmf) <= 5 * se + 1e-4)


def test_map_pmf_matches_monte_carlo(fits, data):
    X, _ = data
    est = fits[HurdleNegativeBinomialSoftplusRegressor]
    n_mc = 40_000
    pmf = est.predict_pmf(X[:3], max_count=20)
    sims = est.sample_posterior_predictive(X[:3], n_samples=n_mc, random_state=2)
    freq = np.stack([np.bincount(sims[:, i].astype(int), minlength=60)[:21] / n_mc
                     for i in range(3)])
    se = np.sqrt(pmf * (1 - pmf) / n_mc)
    assert np.all(np.abs(freq - pmf) <= 5 * se + 1e-4)


def test_exposure_scales_the_mean(fits, data):
    X, _ = data
    est = fits[PoissonSoftplusRegressor]
    t = np.full(5, 2.5)
    pmf = est.predict_pmf(X[:5], max_count=10, exposure=t)
    mu = 2.5 * _softplus(est, X[:5])
    np.testing.assert_allclose(pmf, st.poisson.pmf(np.arange(11)[None], mu[:, None]),
                               rtol=1e-9, atol=1e-14)


def test_bad_input(fits, data):
    X, y = data
    est = fits[NegativeBinomialSoftplusRegressor]
    X0, y0 = X.copy(), y.copy()
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="max_count"):
            est.predict_pmf(X, max_count=bad)
    for bad in (0.0, 1.0, -0.2, [0.5, 1.2], [[0.5]], "a"):
        with pytest.raises(ValueError, match="q must"):
            est.predict_quantile(X, bad)
    with pytest.raises(ValueError, match="X has 300 row"):
        est.log_score(X, y[:-1])
    with pytest.raises(ValueError, match="whole numbers"):
        est.log_score(X, y + 0.5)
    with pytest.raises(ValueError, match="negative"):
        est.pit_interval(X, -y)
    with pytest.raises(ValueError, match="NaN"):
        est.log_score(X, np.where(y > 3, np.nan, y))
    with pytest.raises(ValueError, match="numbers"):
        est.log_score(X, np.array(["a"] * len(y)))
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_float32_and_unfitted(data):
    X, y = data
    est = PoissonSoftplusRegressor(alpha=0.01, dtype="float32").fit(X, y)
    pmf = est.predict_pmf(X[:10], max_count=40)
    assert pmf.dtype == np.float64 and np.allclose(pmf.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="too close to 1"):
        est.predict_quantile(X[:10], 1 - 1e-9)
    # without max_count the grid stops where float32 can resolve the missing mass
    full = est.predict_pmf(X[:10])
    assert np.allclose(full.sum(axis=1), 1.0, atol=1e-5) and full.shape[1] < 200
    np.testing.assert_array_equal(est.predict_quantile(X[:10], 0.5),
                                  np.argmax(np.cumsum(full, axis=1) >= 0.5, axis=1))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PoissonSoftplusRegressor().predict_pmf(X)


def test_continuous_family_log_score_and_refusals():
    from posheads import GammaSoftplusRegressor

    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 2))
    mu = np.logaddexp(0, 1 + X @ [0.5, -0.3])
    y = rng.gamma(2.0, mu / 2.0)
    est = GammaSoftplusRegressor(alpha=0).fit(X, y)
    assert not est.predicts_counts()
    a, m = est.concentration_, est.predict(X)
    assert est.log_score(X, y) == pytest.approx(st.gamma.logpdf(y, a, scale=m / a).mean(),
                                                rel=1e-10)
    for call in (lambda: est.predict_pmf(X), lambda: est.predict_cdf(X),
                 lambda: est.predict_quantile(X, 0.5)):
        with pytest.raises(ValueError, match="needs a count family; the gamma family"):
            call()
    with pytest.raises(ValueError, match="outside the support"):
        est.log_score(X, np.where(y > 1, y, 0.0))
    assert PoissonSoftplusRegressor().predicts_counts()


def test_default_grid_doubles_until_the_tail_is_negligible(fits, data, monkeypatch):
    from posheads.estimators._predictive import PredictiveMixin

    X, _ = data
    est = fits[NegativeBinomialSoftplusRegressor]
    monkeypatch.setattr(PredictiveMixin, "_grid_start", staticmethod(lambda dist: 2))
    pmf = est.predict_pmf(X[:50])
    assert pmf.shape[1] in (64, 128, 256, 512)  # 2, 4, 8, ... doubled
    assert np.all(pmf.sum(axis=1) > 1 - 1e-10)
    np.testing.assert_allclose(pmf, _scipy_pmf(est, X[:50], np.arange(pmf.shape[1])),
                               rtol=1e-9, atol=1e-13)
