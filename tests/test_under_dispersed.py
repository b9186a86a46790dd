"""The generalized Poisson: distribution, family, regressor, head and forecaster law.

References: statsmodels' ``genpoisson_p`` (Consul's terms, ``p = 1``), mpmath sums of
the terms for the renormalising constant, ``scipy.optimize`` on an independent numpy
log-likelihood for the MLE, and simulation with known parameters.
"""

import math
import warnings

import mpmath
import numpy as np
import pyro
import pytest
import torch
from scipy import optimize, stats
from scipy.special import gammaln, logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from posheads import GeneralizedPoissonSoftplusRegressor, ops
from posheads.distributions import SoftplusGeneralizedPoisson
from posheads.families import GENERALIZED_POISSON, get_family
from posheads.heads import GeneralizedPoissonHead

from ._families import INTEGER_ONLY_CHECKS

F64 = torch.float64


def gp(mu, dispersion, dtype=F64):
    eta = ops.softplus_inverse(torch.as_tensor(mu, dtype=dtype))
    return SoftplusGeneralizedPoisson(eta, torch.as_tensor(dispersion, dtype=dtype))


def mp_terms(mu, dispersion):
    """Consul's terms over the (cut) support in mpmath, 40 digits."""
    mpmath.mp.dps = 40
    mu, s = mpmath.mpf(mu), mpmath.sqrt(mpmath.mpf(dispersion))
    theta, lam = mu / s, 1 - 1 / s
    out, y = [], 0
    while theta + lam * y > 0 and (y < 60 * mu + 200):
        out.append(theta * (theta + lam * y) ** (y - 1) * mpmath.e ** (-theta - lam * y)
                   / mpmath.factorial(y))
        y += 1
    return out


CASES = [(0.3, 0.3), (2.0, 0.04), (2.0, 0.5), (7.0, 0.2), (30.0, 0.01), (50.0, 0.3),
         (400.0, 0.1), (3.0, 1.0), (10.0, 2.5), (1.5, 9.0)]


@pytest.mark.parametrize(("mu", "dispersion"), CASES)
def test_pmf_sums_to_one_and_matches_renormalised_terms(mu, dispersion):
    terms = mp_terms(mu, dispersion)
    z = mpmath.fsum(terms)
    d = gp(mu, dispersion)
    y = torch.arange(len(terms), dtype=F64)
    ref = torch.tensor([float(mpmath.log(t / z)) if t > 0 else -math.inf for t in terms],
                       dtype=F64)
    got = d.log_prob(y)
    keep = ref > -700
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-9, atol=1e-9)
    assert abs(float(got.exp().sum()) - 1.0) < 1e-10
    if dispersion < 1:  # past the cut: probability 0
        assert d.log_prob(torch.tensor(float(len(terms)), dtype=F64)) == -math.inf


@pytest.mark.parametrize(("mu", "dispersion"), [(5.0, 1.0), (40.0, 3.0), (900.0, 0.25),
                                                (1e4, 0.05), (200.0, 0.5)])
def test_terms_match_statsmodels_where_no_renormalisation(mu, dispersion):
    from statsmodels.distributions.discrete import genpoisson_p

    d = gp(mu, dispersion)
    sd = math.sqrt(dispersion * mu)
    y = np.arange(max(0, int(mu - 8 * sd)), int(mu + 8 * sd) + 1)
    ref = genpoisson_p.logpmf(y, mu, math.sqrt(dispersion) - 1.0, 1)
    torch.testing.assert_close(d.log_prob(torch.as_tensor(y, dtype=F64)),
                               torch.as_tensor(ref), rtol=1e-10, atol=1e-10)
    assert float(d.log_normalizer()) == 0.0


@pytest.mark.parametrize(("mu", "dispersion"), [(400.0 * 1.0001, 0.01), (1e4 * 1.0001, 4e-4),
                                                (100.0 * 1.0001, 0.25),
                                                ((2.0 / 0.9) ** 2 * 1.0001, 0.81)])
def test_skipped_renormalisation_is_below_1e12(mu, dispersion):
    # rows just past the thresholds where the constant is taken as 1
    d = gp(mu, dispersion)
    assert float(d.log_normalizer()) == 0.0
    z = mpmath.fsum(mp_terms(mu, dispersion))
    assert abs(float(z) - 1.0) < 1e-12


@pytest.mark.parametrize(("mu", "dispersion"), CASES)
def test_mean_and_variance(mu, dispersion):
    terms = np.array([float(t) for t in mp_terms(mu, dispersion)])
    p = terms / terms.sum()
    y = np.arange(len(p))
    mean = (p * y).sum()
    var = (p * (y - mean) ** 2).sum()
    d = gp(mu, dispersion)
    assert float(d.mean) == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert float(d.variance) == pytest.approx(var, rel=1e-8, abs=1e-12)
    if float(d.log_normalizer()) == 0.0:  # the formulas hold where nothing is cut
        assert float(d.mean) == pytest.approx(mu, rel=1e-12)
        assert float(d.variance) == pytest.approx(dispersion * mu, rel=1e-12)


@pytest.mark.parametrize(("mu", "dispersion"), [(3.0, 0.2), (60.0, 0.3), (2e3, 0.1),
                                                (8.0, 1.0), (20.0, 4.0), (1e6, 0.2)])
def test_samples_follow_the_law(mu, dispersion):
    torch.manual_seed(1)
    d = gp(torch.full((4,), mu, dtype=F64), dispersion)
    x = d.sample((5000,))
    assert x.shape == (5000, 4)
    assert bool((x == x.round()).all() and (x >= 0).all())
    n = x.numel()
    assert abs(float(x.mean()) - float(d.mean[0])) < 5 * math.sqrt(float(d.variance[0]) / n)
    # the variance of a sample variance is ~ 2 var^2 / n for these near-normal laws
    assert float(x.var()) == pytest.approx(float(d.variance[0]), rel=6 * math.sqrt(2 / n) + 0.01)


def test_truncated_samples_match_pmf_by_chi_square():
    torch.manual_seed(2)
    d = gp(2.0, 0.3)
    x = d.sample((20000,)).long()
    k = torch.arange(int(x.max()) + 1, dtype=F64)
    p = d.log_prob(k).exp().numpy()
    counts = np.bincount(x.numpy(), minlength=len(p))
    assert stats.chisquare(counts, p * counts.sum() / p.sum()).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("dispersion", [0.05, 1.0, 3.0])
def test_finite_values_and_gradients_at_extreme_eta(dtype, dispersion):
    eta = torch.tensor([-1e4, -100.0, -20.0, 0.0, 20.0, 1e4, 1e30], dtype=dtype,
                       requires_grad=True)
    disp = torch.tensor(dispersion, dtype=dtype, requires_grad=True)
    d = SoftplusGeneralizedPoisson(eta, disp)
    value = d.mean.detach().round()  # the mean is always in the support
    lp = d.log_prob(value)
    assert bool(torch.isfinite(lp).all())
    g_eta, g_disp = torch.autograd.grad(lp.sum(), [eta, disp])
    assert bool(torch.isfinite(g_eta).all() and torch.isfinite(g_disp))
    assert bool(torch.isfinite(d.sample()).all())


def test_expand_support_and_pyro():
    d = gp(torch.tensor([3.0, 50.0], dtype=F64), 0.4)
    e = d.expand((5, 2))
    assert e.batch_shape == (5, 2) and e.sample().shape == (5, 2)
    torch.testing.assert_close(e.log_prob(torch.ones(5, 2, dtype=F64))[0], d.log_prob(
        torch.ones(2, dtype=F64)))
    assert d.support.check(torch.tensor(3.0)) and not d.support.check(torch.tensor(0.5))
    with pytest.raises(ValueError, match="whole numbers"):
        SoftplusGeneralizedPoisson(torch.zeros(2), 0.5, validate_args=True).log_prob(
            torch.tensor([0.5, 1.0]))

    def model():
        pyro.sample("y", gp(torch.tensor([5.0, 9.0], dtype=F64), 0.5).to_event(1),
                    obs=torch.tensor([5.0, 8.0], dtype=F64))

    tr = pyro.poutine.trace(model).get_trace()
    assert torch.isfinite(tr.log_prob_sum())


def test_family_declaration():
    fam = get_family("genpois")
    assert fam is GENERALIZED_POISSON and get_family("generalized-poisson") is fam
    assert fam.argument_names == ("eta", "dispersion") and fam.integer
    start = fam.start(torch.tensor([9.0, 10.0, 11.0, 10.0], dtype=F64))
    assert start.rate == 10.0 and start.shapes["dispersion"] == pytest.approx(0.05)
    # log P(0) against the renormalised law
    expect = float(gp(0.5, 0.3).log_prob(torch.tensor(0.0, dtype=F64)))
    assert fam.log_zero_probability(0.5, {"dispersion": 0.3}) == pytest.approx(expect)


def _numpy_loglik(params, X, y):
    """Generalized-Poisson log-likelihood written from Consul's formula with a softplus
    link, renormalised by summing the terms over the cut support of every row whose mean
    is below 200 (beyond, the cut is over 30 standard deviations away and the constant is
    1 to 1e-12); independent of the package."""
    b0, w, log_d = params[0], params[1:-1], params[-1]
    mu = np.logaddexp(0.0, b0 + X @ w)
    s = math.exp(0.5 * log_d)
    if not math.isfinite(s):
        return -math.inf

    def terms(k, m):
        u = m + (s - 1.0) * k
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(m) - k * math.log(s) + (k - 1) * np.log(u) - u / s - gammaln(k + 1)
        return np.where(k == 0, -m / s, np.where(u > 0, out, -np.inf))

    ll = terms(y, mu)
    if s < 1:
        small = mu < 200
        k = np.arange(0, 200 / (1 - s) + 2)
        ll[small] -= logsumexp(terms(k[None, :], mu[small, None]), axis=1)
    return float(np.sum(ll))


def _simulate(dispersion, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0.0, 3.0 + X @ np.array([0.6, -0.4]))
    y, _ = GENERALIZED_POISSON.simulate(mu, rng, {"dispersion": dispersion})
    return X, y.astype(np.float64)


def test_map_matches_direct_scipy_optimisation():
    X, y = _simulate(0.4, 600, 0)
    est = GeneralizedPoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y)
    prior = stats.lognorm(s=2.0)  # the family's default prior of the dispersion

    def objective(p):
        value = -(_numpy_loglik(p, X, y) + prior.logpdf(math.exp(p[-1])))
        return value if math.isfinite(value) else 1e300

    res = optimize.minimize(objective, np.r_[3.0, 0.6, -0.4, math.log(0.4)],
                            method="BFGS", options={"gtol": 1e-7})
    got = np.r_[est.intercept_, est.coef_, math.log(est.dispersion_)]
    np.testing.assert_allclose(got, res.x, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(("dispersion", "seed"), [(0.25, 1), (2.5, 2)])
def test_parameter_recovery(dispersion, seed):
    X, y = _simulate(dispersion, 3000, seed)
    est = GeneralizedPoissonSoftplusRegressor(alpha=0).fit(X, y)
    # four standard errors: Var[y] = dispersion * mu with mu ~ 5, d mu / d eta ~ 0.9
    tol = 4 * math.sqrt(dispersion * 5.0 / len(y)) / 0.9
    assert abs(est.intercept_ - 3.0) < tol
    np.testing.assert_allclose(est.coef_, [0.6, -0.4], atol=tol)
    assert est.dispersion_ == pytest.approx(dispersion, rel=0.1)


def test_head_and_forecaster_use_the_family():
    head = GeneralizedPoissonHead(2).init_from_targets(torch.tensor([9.0, 10.0, 11.0]))
    d = head(torch.zeros(2))
    assert isinstance(d, SoftplusGeneralizedPoisson) and float(d.variance) < float(d.mean)
    from posheads import CountForecaster

    rng = np.random.default_rng(0)
    y = np.round(100 + 10 * np.sin(np.arange(60) * 2 * np.pi / 7)
                 + rng.normal(0, 3, 60)).clip(0)
    fc = CountForecaster(likelihood="gp", season_lengths=(7,), num_steps=10,
                         num_samples=20, random_state=0).fit(y)
    assert fc.likelihood_ == "generalized_poisson"
    assert fc.predict(7).shape == (7,)


@parametrize_with_checks([GeneralizedPoissonSoftplusRegressor()],
                         expected_failed_checks=lambda est: INTEGER_ONLY_CHECKS)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
