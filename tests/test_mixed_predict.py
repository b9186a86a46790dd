"""Predictive draws and intervals of MixedCountRegressor with group-level uncertainty,
checked by simulation at known truth, and the count-scale intraclass correlation against
an independent Monte Carlo reference."""

import numpy as np
import pytest
from scipy import stats

from posheads.estimators.mixed import MixedCountRegressor


def _softplus(x):
    return np.logaddexp(0.0, x)


TRUTH = {"b0": 1.2, "b1": 0.5, "sd": 0.8}


def _simulate(rng, n, u, codes):
    x = rng.normal(size=(n, 1))
    eta = TRUTH["b0"] + TRUTH["b1"] * x[:, 0] + u[codes]
    return x, rng.poisson(_softplus(eta)).astype(float)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(7)
    G, n = 40, 800
    u = rng.normal(0, TRUTH["sd"], G)
    codes = rng.integers(0, G, n)
    x, y = _simulate(rng, n, u, codes)
    m = MixedCountRegressor(random_state=0).fit(x, y, groups=codes)
    return m, u, rng


def test_new_groups_cover_at_nominal_rate(fitted):
    """Rows of levels never seen: y drawn with a fresh effect from the true N(0, sd^2).
    The 90% interval covers at least 90% (counts are discrete) and not much more."""
    m, _, rng = fitted
    n = 3000
    u_new = rng.normal(0, TRUTH["sd"], n)
    x, y = _simulate(rng, n, u_new, np.arange(n))
    lo, hi = m.predict_interval(x, coverage=0.9, n_samples=4000).T
    cover = np.mean((y >= lo) & (y <= hi))
    assert 0.89 <= cover <= 0.96, cover


def test_new_group_interval_matches_true_predictive(fitted):
    """For a new level the bounds are (within one count: the fit's estimation error)
    those of the true predictive law, the Poisson mixed over the true N(0, sd^2) by
    80-node quadrature."""
    m, _, _ = fitted
    x = np.array([[-1.5], [0.0], [1.0], [2.5]])
    lo, hi = m.predict_interval(x, coverage=0.9, n_samples=20000).T
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    k = np.arange(200)
    for i, xi in enumerate(x[:, 0]):
        mu = _softplus(TRUTH["b0"] + TRUTH["b1"] * xi + np.sqrt(2) * TRUTH["sd"] * nodes)
        pmf = (weights[:, None] / np.sqrt(np.pi) * stats.poisson.pmf(k, mu[:, None])).sum(0)
        cdf = np.cumsum(pmf)
        # count_interval's rule: the 5% quantile, then the (90% + P(y < lower)) quantile
        lo_ref = np.searchsorted(cdf, 0.05)
        hi_ref = np.searchsorted(cdf, 0.9 + (cdf[lo_ref - 1] if lo_ref else 0.0))
        assert abs(lo[i] - lo_ref) <= 1
        assert abs(hi[i] - hi_ref) <= 1


def test_seen_groups_cover_at_nominal_rate(fitted):
    """New rows of the fitted levels, y drawn with each level's true effect."""
    m, u, rng = fitted
    n = 3000
    codes = rng.integers(0, len(u), n)
    x, y = _simulate(rng, n, u, codes)
    lo, hi = m.predict_interval(x, groups=codes, coverage=0.9, n_samples=4000).T
    cover = np.mean((y >= lo) & (y <= hi))
    assert 0.88 <= cover <= 0.97, cover


def test_draws_share_a_new_levels_effect(fitted):
    """Two rows of the same new level are correlated across draws (one shared effect:
    about 0.12 here, where the Poisson noise dominates); two rows of different new
    levels are not (standard error of a correlation of 4000 draws: 0.016)."""
    m, _, _ = fitted
    x = np.zeros((4, 1))
    d = m.sample_posterior_predictive(x, groups=np.array(["a", "a", "b", "c"]),
                                      n_samples=4000, random_state=1)
    assert d.shape == (4000, 4)
    same = np.corrcoef(d[:, 0], d[:, 1])[0, 1]
    other = np.corrcoef(d[:, 2], d[:, 3])[0, 1]
    assert same > 0.07 and abs(other) < 0.05, (same, other)
    again = m.sample_posterior_predictive(x, groups=np.array(["a", "a", "b", "c"]),
                                          n_samples=4000, random_state=1)
    np.testing.assert_array_equal(d, again)


def test_predictive_mean_matches_predict(fitted):
    """The mean of the draws (parameter uncertainty included) is the quadrature mean of
    predict() within Monte Carlo error, for seen and new levels."""
    m, _, _ = fitted
    x = np.array([[0.0], [1.0], [-1.0]])
    groups = np.array([3, 5, 999])
    d = m.sample_posterior_predictive(x, groups=groups, n_samples=20000, random_state=2)
    mean = m.predict(x, groups=groups)
    se = d.std(0) / np.sqrt(len(d))
    assert np.all(np.abs(d.mean(0) - mean) < 4 * se + 0.02 * mean)


def test_bad_coverage(fitted):
    m, _, _ = fitted
    with pytest.raises(ValueError, match="coverage"):
        m.predict_interval(np.zeros((1, 1)), coverage=1.5)


def test_icc_matches_monte_carlo(fitted):
    """ICC = Var_u(mu) / (Var_u(mu) + E_u[mu]) for a Poisson random intercept, averaged
    over the rows of the fit: a plain Monte Carlo reference at the ML estimate."""
    m, _, _ = fitted
    table = m.summary()
    icc = table.loc[("icc", "group")]
    Xf = m._icc_data[0]  # the rows the estimator averages over
    eta = Xf @ np.r_[m.intercept_, m.coef_]
    u = np.random.default_rng(0).normal(0, m.sd_["group"][0], 400_000)
    mu = _softplus(eta[:, None] + u[None, :50_000])
    v_u, e_res = mu.var(1).mean(), mu.mean(1).mean()
    assert icc["estimate"] == pytest.approx(v_u / (v_u + e_res), rel=5e-3)
    assert icc["lower"] < icc["estimate"] < icc["upper"]


def test_icc_shares_two_factors():
    """With two crossed intercepts the shares lie in (0, 1) and sum to at most 1 (the
    nonlinear link adds an interaction); the larger SD has the larger share."""
    rng = np.random.default_rng(11)
    n = 900
    a, b = rng.integers(0, 15, n), rng.integers(0, 12, n)
    ua, ub = rng.normal(0, 1.0, 15), rng.normal(0, 0.3, 12)
    x = rng.normal(size=(n, 1))
    y = rng.poisson(_softplus(1 + 0.3 * x[:, 0] + ua[a] + ub[b])).astype(float)
    m = MixedCountRegressor().fit(x, y, groups={"a": a, "b": b})
    share = m.summary().loc["icc share", "estimate"]
    assert 0 < share["b"] < share["a"] < 1
    assert share["a"] + share["b"] <= 1 + 1e-9
