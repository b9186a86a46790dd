"""The Gamma and Tweedie laws of positive amounts: distributions, families, rows, peers.

References: the Tweedie series against mpmath (40 digits, every term summed) and against
quadrature of the density (it integrates to ``1 - P(0)`` with mean ``mu`` and variance
``phi mu**p``); its zero mass against the Poisson probability of no event; draws against
an independent numpy compound Poisson-gamma sampler; the per-row terms against autograd;
the fits against statsmodels' IRLS with a softplus link class and SciPy's Gamma density.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, optimize, stats

from posheads import families
from posheads.distributions import SoftplusTweedie
from posheads.families import GAMMA, TWEEDIE, get_family, tweedie_family
from posheads.inference import fit_map
from posheads.models.glm import GLMData, SoftplusGLM
from tools.peers import statsmodels_softplus_link

F64 = torch.float64


def _eta(mu):
    """softplus^{-1}(mu) in float64."""
    mu = torch.as_tensor(mu, dtype=F64)
    return mu + torch.log(-torch.expm1(-mu))


# ------------------------------------------------------------------ the series
def _mp_log_density(y, mu, phi, p):
    """log f(y) of the Tweedie law in 30-digit arithmetic, every term of the series summed
    over a window wider than the one posheads uses (40 sd and 100 terms, against 24 sd
    and 35)."""
    mp.mp.dps = 30
    y, mu, phi, p = (mp.mpf(v) for v in (y, mu, phi, p))
    lam = mu ** (2 - p) / (phi * (2 - p))
    if y == 0:
        return -lam
    k = (2 - p) / (p - 1)
    z = k * mp.log(y / (p - 1)) - mp.log(phi) / (p - 1) - mp.log(2 - p)
    j0 = y ** (2 - p) / (phi * (2 - p))
    sd = mp.sqrt(j0 * (p - 1)) + 1
    terms = [j * z - mp.loggamma(j + 1) - mp.loggamma(k * j)
             for j in range(max(1, int(j0 - 20 * sd)), int(j0 + 20 * sd + 100))]
    top = max(terms)
    log_w = top + mp.log(mp.fsum(mp.e ** (t - top) for t in terms))
    return -y * mu ** (1 - p) / (phi * (p - 1)) - lam - mp.log(y) + log_w


_GRID = [(p, mu, phi, y)
         for p in (1.01, 1.3, 1.6, 1.99)
         for mu, phi in ((1e-3, 1.0), (1.0, 1e-2), (2.0, 0.5), (300.0, 30.0))
         for y in (0.0, 1e-12, 1e-3, 1.0, 50.0, 5e3)]


def test_series_density_matches_mpmath_over_the_whole_range():
    """Zeros, tiny and huge amounts (far tails, log f below -1e4), small and large
    dispersions, powers near both ends. The error allowed is float64 rounding of the
    series' largest terms, ``j0 log j0`` (up to 1e7 here), not of ``log f`` itself."""
    p_, mu_, phi_, y_ = (np.array(v) for v in zip(*_GRID, strict=True))
    worst, lowest = 0.0, 0.0
    for p in np.unique(p_):
        at = p_ == p
        d = SoftplusTweedie(_eta(mu_[at]), torch.tensor(phi_[at]), power=float(p))
        ours = d.log_prob(torch.tensor(y_[at])).numpy()
        ref = np.array([float(_mp_log_density(y, m, f, p))
                        for m, f, y in zip(mu_[at], phi_[at], y_[at], strict=True)])
        assert np.isfinite(ours).all()
        j0 = y_[at] ** (2 - p) / (phi_[at] * (2 - p))
        scale = np.maximum.reduce([np.ones_like(ref), np.abs(ref), j0 * np.log1p(j0)])
        worst = max(worst, float(np.max(np.abs(ours - ref) / scale)))
        lowest = min(lowest, float(ref.min()))
    assert worst < 1e-13
    assert lowest < -1e4  # the far tails are in the grid


def test_series_switches_to_quadrature_without_a_seam():
    """For p = 1.5 and phi = 0.01 the integer terms give way to the trapezoid rule where
    j0 - 12 sd reaches 1, near y = 0.13 (j0 = 73): a dense grid across it agrees with
    mpmath on both sides."""
    p, phi, mu = 1.5, 1e-2, 1.0
    y = np.geomspace(0.03, 0.6, 25)
    d = SoftplusTweedie(_eta(np.full(25, mu)), torch.tensor(phi, dtype=F64), power=p)
    ours = d.log_prob(torch.from_numpy(y)).numpy()
    ref = np.array([float(_mp_log_density(v, mu, phi, p)) for v in y])
    j0 = y ** (2 - p) / (phi * (2 - p))
    assert j0.min() < 40 and j0.max() > 120  # both sides of the switch
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13 * j0.max() * np.log(j0.max()))



def _mp_series_moments(y, phi, p):
    """``log W``, ``E[N]`` and ``Var[N]`` under the weights ``W_j / W``, in 30 digits."""
    mp.mp.dps = 30
    y, phi, p = mp.mpf(y), mp.mpf(phi), mp.mpf(p)
    k = (2 - p) / (p - 1)
    z = k * mp.log(y / (p - 1)) - mp.log(phi) / (p - 1) - mp.log(2 - p)
    j0 = y ** (2 - p) / (phi * (2 - p))
    sd = mp.sqrt(j0 * (p - 1)) + 1
    js = range(max(1, int(j0 - 20 * sd)), int(j0 + 20 * sd + 100))
    terms = [j * z - mp.loggamma(j + 1) - mp.loggamma(k * j) for j in js]
    top = max(terms)
    weights = [mp.e ** (t - top) for t in terms]
    total = mp.fsum(weights)
    mean = mp.fsum(w * j for w, j in zip(weights, js, strict=True)) / total
    var = mp.fsum(w * (j - mean) ** 2 for w, j in zip(weights, js, strict=True)) / total
    return float(top + mp.log(total)), float(mean), float(var)


@pytest.mark.parametrize("p", [1.05, 1.5, 1.95])
def test_series_moments_match_mpmath_and_the_differentiable_path(p):
    """The fast sum (no autograd, one width per block, moments from one matrix product)
    against mpmath, and against the plain log-sum-exp taken when ``phi`` needs a
    gradient; across integer windows of every length and the trapezoid rule."""
    from posheads.distributions import tweedie_log_series

    y = torch.tensor(np.geomspace(1e-9, 5e3, 40), dtype=F64)
    phi = torch.tensor(0.05, dtype=F64)
    log_w, mean, var = tweedie_log_series(y, phi, p, moments=True)
    ref = np.array([_mp_series_moments(v, 0.05, p) for v in y.tolist()])
    j0 = y.numpy() ** (2 - p) / (0.05 * (2 - p))
    scale = np.maximum(1.0, j0 * np.log1p(j0))
    # trapezoid windows at every power, integer windows of every length below 1.9
    assert j0.max() > 100 and (p > 1.9 or j0.min() < 1e-2)
    assert np.max(np.abs(log_w.numpy() - ref[:, 0]) / scale) < 1e-13
    np.testing.assert_allclose(mean.numpy(), ref[:, 1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), ref[:, 2], rtol=1e-7, atol=1e-12)
    slow = tweedie_log_series(y, phi.clone().requires_grad_(), p, moments=True)
    slow = [part.detach().numpy() for part in slow]
    assert np.max(np.abs(log_w.numpy() - slow[0]) / scale) < 1e-13
    np.testing.assert_allclose(mean.numpy(), slow[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), slow[2], rtol=1e-8, atol=1e-12)

@pytest.mark.parametrize("p", [1.2, 1.5, 1.8])
def test_density_integrates_to_one_with_the_stated_moments(p):
    mu, phi = 2.0, 0.7
    d = SoftplusTweedie(_eta(mu), torch.tensor(phi, dtype=F64), power=p)

    def f(s):  # the density in s = log y, which removes the y**(k - 1) peak at 0
        y = math.exp(s)
        return y * math.exp(float(d.log_prob(torch.tensor(y, dtype=F64))))

    mass = integrate.quad(f, -60.0, 6.0, limit=500, epsabs=1e-13)[0]
    mean = integrate.quad(lambda s: math.exp(s) * f(s), -60.0, 6.0, limit=500)[0]
    second = integrate.quad(lambda s: math.exp(2 * s) * f(s), -60.0, 6.0, limit=500)[0]
    p0 = math.exp(float(d.log_prob(torch.tensor(0.0, dtype=F64))))
    assert p0 + mass == pytest.approx(1.0, abs=1e-9)
    assert mean == pytest.approx(mu, rel=1e-8)
    assert second - mu**2 == pytest.approx(phi * mu**p, rel=1e-7)
    assert float(d.variance) == pytest.approx(phi * mu**p, rel=1e-12)


def test_zero_mass_is_the_poisson_probability_of_no_event():
    p = 1.4
    mu = torch.tensor([1e-6, 0.3, 2.0, 50.0], dtype=F64)
    phi = torch.tensor([0.5, 2.0, 1.0, 10.0], dtype=F64)
    d = SoftplusTweedie(_eta(mu), phi, power=p)
    lam = (mu ** (2 - p) / (phi * (2 - p))).numpy()
    np.testing.assert_allclose(d.log_prob(torch.zeros(4, dtype=F64)).numpy(),
                               stats.poisson.logpmf(0, lam), rtol=1e-14)
    np.testing.assert_allclose(d.log_zero_probability.numpy(), -lam, rtol=1e-14)


def test_draws_match_an_independent_compound_poisson_sampler():
    p, mu, phi, n = 1.3, 1.5, 0.8, 200_000
    torch.manual_seed(0)
    ours = SoftplusTweedie(_eta(torch.full((n,), mu)), torch.tensor(phi, dtype=F64),
                           power=p).sample().numpy()
    rng = np.random.default_rng(0)
    events = rng.poisson(mu ** (2 - p) / (phi * (2 - p)), n)
    theirs = np.where(events > 0, rng.gamma(np.maximum(events, 1) * (2 - p) / (p - 1),
                                            phi * (p - 1) * mu ** (p - 1)), 0.0)
    assert (ours >= 0).all()
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < 0.006
    assert stats.ks_2samp(ours[ours > 0], theirs[theirs > 0]).pvalue > 0.01
    assert ours.mean() == pytest.approx(mu, rel=0.01)
    assert ours.var() == pytest.approx(phi * mu**p, rel=0.03)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", [GAMMA, TWEEDIE], ids=lambda f: f.name)
def test_values_and_gradients_are_finite_at_extreme_eta(family, dtype):
    eta = torch.tensor([-1e4, -80.0, -5.0, 0.0, 5.0, 80.0, 1e4], dtype=dtype,
                       requires_grad=True)
    shape = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    d = family.build(eta, shapes={family.shape_names[0]: shape})
    y = torch.tensor([0.5, 1e-3, 2.0, 1.0, 3.0, 1e4, 7.0], dtype=dtype)
    lp = d.log_prob(y)
    assert lp.dtype == dtype and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(eta.grad).all() and torch.isfinite(shape.grad)
    assert torch.isfinite(d.mean).all() and torch.isfinite(d.variance).all()


@pytest.mark.parametrize("family", [GAMMA, tweedie_family(1.7)], ids=lambda f: f.name)
def test_distributions_behave_as_pyro_distributions(family):
    eta = torch.linspace(-2.0, 2.0, 3, dtype=F64)
    t = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    d = family.build(eta, shapes={family.shape_names[0]: torch.tensor(1.3, dtype=F64)},
                     exposure=t, validate_args=True)
    np.testing.assert_allclose(d.mean.numpy(), (t * F.softplus(eta)).numpy(), rtol=1e-14)
    e = d.expand((4, 3))
    assert e.batch_shape == (4, 3) and e.sample().shape == (4, 3)
    torch.testing.assert_close(e.log_prob(torch.ones(4, 3, dtype=F64))[2], d.log_prob(
        torch.ones(3, dtype=F64)))
    assert d.sample((5,)).shape == (5, 3)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))
    trace = pyro.poutine.trace(lambda: pyro.sample("obs", d.to_event(1))).get_trace()
    assert torch.isfinite(trace.log_prob_sum())
    assert d.support.check(torch.tensor(0.0)) == (family is not GAMMA)


def test_power_is_checked():
    for bad in (1.0, 2.0, 0.5, "1.5", True):
        with pytest.raises(ValueError, match="power must be a number in"):
            SoftplusTweedie(torch.zeros(2), 1.0, power=bad)
        with pytest.raises(ValueError, match="power must be a number in"):
            tweedie_family(bad)


# ------------------------------------------------------------------ families
def test_families_are_registered_and_declare_their_support():
    assert get_family("gamma") is GAMMA and get_family("Tweedie") is TWEEDIE
    assert TWEEDIE.power == 1.5 and tweedie_family(1.5) is TWEEDIE
    member = tweedie_family(1.35)
    assert member.name == "tweedie_1_35" and get_family("tweedie_1_35") is member
    assert member.canonical is TWEEDIE and GAMMA.canonical is GAMMA
    assert (GAMMA.support, TWEEDIE.support, families.POISSON.support) == (
        "positive", "nonnegative", "counts")
    with pytest.raises(ValueError, match=r"gamma amounts must be > 0"):
        GAMMA.check_target(np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"tweedie_1_5 amounts must be >= 0"):
        TWEEDIE.check_target(np.array([1.0, -2.0]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        TWEEDIE.check_target(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="whole numbers"):
        families.POISSON.check_target(np.array([1.5]), proper=True)
    y = np.array([0.0, 0.5, 3.0])
    assert TWEEDIE.check_target(y) is y and families.POISSON.check_target(y) is y


def test_unit_deviances_are_scikit_learns():
    from sklearn.metrics import mean_tweedie_deviance

    rng = np.random.default_rng(0)
    mu = rng.gamma(2.0, 1.0, 50)
    y = rng.gamma(2.0, 1.0, 50)
    y0 = np.where(rng.random(50) < 0.3, 0.0, y)
    for family, power, target in ((GAMMA, 2, y), (TWEEDIE, 1.5, y0),
                                  (tweedie_family(1.2), 1.2, y0),
                                  (families.POISSON, 1, np.round(y0))):
        ours = family.unit_deviance(target, mu).mean()
        assert ours == pytest.approx(mean_tweedie_deviance(target, mu, power=power),
                                     rel=1e-12)


def test_simulated_amounts_have_the_stated_mean():
    mu = np.full(40_000, 3.0)
    for family, shapes in ((GAMMA, {"concentration": 2.0}), (TWEEDIE, {"dispersion": 1.5})):
        y, expected = family.simulate(mu, np.random.default_rng(0), shapes=shapes)
        again, _ = family.simulate(mu, np.random.default_rng(0), shapes=shapes)
        np.testing.assert_array_equal(y, again)
        assert y.dtype == np.float64 and (y >= 0).all()
        assert abs(y.mean() - expected.mean()) < 5 * y.std() / math.sqrt(len(y))


@pytest.mark.parametrize("family", [GAMMA, TWEEDIE, tweedie_family(1.15)],
                         ids=lambda f: f.name)
def test_rows_match_autograd_of_the_distribution(family):
    n = 60
    gen = torch.Generator().manual_seed(1)
    y = torch.distributions.Gamma(2.0, 0.5).sample((n,)).to(F64)
    if family is not GAMMA:
        y[::3] = 0.0
    t = torch.rand(n, generator=gen, dtype=F64) + 0.5
    w = torch.rand(n, generator=gen, dtype=F64) * 2
    rows = family.rows(y, t, w, beta=1.5)
    assert rows.closed_form
    shape = family.shape_names[0]
    P = {"eta": torch.linspace(-30.0, 30.0, n, dtype=F64)}
    u = {shape: torch.tensor(0.7, dtype=F64)}
    leaves = [P["eta"].clone().requires_grad_(), u[shape].expand(n).clone().requires_grad_()]

    d = family.build(leaves[0], beta=1.5, exposure=t, validate_args=False,
                     shapes={shape: F.softplus(leaves[1])})
    ll = d.log_prob(y) * w
    torch.testing.assert_close(rows.log_likelihood(dict(P), u), ll.sum().detach())
    firsts = torch.autograd.grad(ll.sum(), leaves, create_graph=True)
    grad = rows.gradient(dict(P), u)
    for key, g in zip(rows.keys, firsts, strict=True):
        torch.testing.assert_close(grad[key], g.detach(), rtol=1e-8, atol=1e-10)
    curv = rows.curvature(dict(P), u)
    for i, ki in enumerate(rows.keys):
        second = torch.autograd.grad(firsts[i].sum(), leaves[i:], retain_graph=True)
        for kj, g in zip(rows.keys[i:], second, strict=True):
            torch.testing.assert_close(curv[ki, kj], -g, rtol=1e-7, atol=1e-9)
    # a Hessian from a row subset: curvatures computed on those rows only
    index = torch.tensor([0, 7, 8, 31, 59])
    for key, h in rows.curvature(dict(P), u, index).items():
        torch.testing.assert_close(h, curv[key][index], rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("family", [GAMMA, TWEEDIE, TWEEDIE.deviance_family],
                         ids=lambda f: f.name)
def test_rows_agree_where_the_mean_underflows(family):
    """A predictor where ``softplus`` underflows sends every row down the log-space path;
    the other rows' terms equal those of the plain path (``y / mu``, ``y mu**-p mu``)."""
    y = torch.tensor([0.5, 2.0, 0.0, 3.0, 1.5], dtype=F64)
    if family is GAMMA:
        y[2] = 0.7
    eta = torch.tensor([-800.0, -3.0, 0.2, 1.0, 25.0], dtype=F64)
    t = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0], dtype=F64)
    u = {name: torch.tensor(0.3, dtype=F64) for name in family.shape_names}
    both = family.rows(y, t)
    plain = family.rows(y[1:], t[1:])
    torch.testing.assert_close(both.gradient({"eta": eta}, u)["eta"][1:],
                               plain.gradient({"eta": eta[1:]}, u)["eta"], rtol=1e-13, atol=0)
    for key, h in plain.curvature({"eta": eta[1:]}, u).items():
        torch.testing.assert_close(both.curvature({"eta": eta}, u)[key][1:], h, rtol=1e-13,
                                   atol=0)


# ------------------------------------------------------------------ against peers
def _amounts(n, seed, family, shapes):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    mu = np.logaddexp(0.0, 1.0 + X @ np.array([0.8, -0.5, 0.3]))
    return X, family.simulate(mu, rng, shapes=shapes)[0]


def _glm_fit(family, X, y, **kw):
    model = SoftplusGLM(family, coef_scale=None, intercept_scale=None, **kw)
    post = fit_map(model, GLMData(torch.from_numpy(X), torch.from_numpy(y)), tol=1e-11)
    assert post.extra["converged"]
    point = post.point_estimate()
    return np.r_[float(point["intercept"]), point["coef"].numpy()], point


# statsmodels warns that a softplus link is not one of the family's usual links
_SM_LINK = pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.DomainWarning")


@_SM_LINK
def test_gamma_mle_and_dispersion_match_statsmodels_and_scipy():
    import statsmodels.api as sm

    X, y = _amounts(3000, 0, GAMMA, {"concentration": 2.5})
    fam = sm.families.Gamma(link=statsmodels_softplus_link(), check_link=False)
    ref = sm.GLM(y, sm.add_constant(X), family=fam).fit(method="IRLS", tol=1e-13)
    coef, point = _glm_fit(GAMMA, X, y, shape_priors={"concentration": "flat"})
    np.testing.assert_allclose(coef, ref.params, rtol=1e-6)
    # the shape's maximum-likelihood estimate at the fitted means, by SciPy's gamma
    mu = ref.fittedvalues

    def nll(log_a):
        a = math.exp(log_a)
        return -stats.gamma.logpdf(y, a, scale=mu / a).sum()

    a_ml = math.exp(optimize.minimize_scalar(nll, bounds=(-3, 5), method="bounded",
                                             options={"xatol": 1e-12}).x)
    assert float(point["concentration"]) == pytest.approx(a_ml, rel=1e-6)
    # the Pearson estimate (statsmodels' scale) estimates the same dispersion 1 / 2.5
    assert ref.scale == pytest.approx(1 / a_ml, rel=0.05)
    assert 1 / a_ml == pytest.approx(0.4, rel=0.05)


@_SM_LINK
@pytest.mark.parametrize("power", [1.2, 1.5, 1.8])
def test_tweedie_map_matches_statsmodels_at_fixed_power(power):
    import statsmodels.api as sm

    family = tweedie_family(power)
    X, y = _amounts(2000, 1, family, {"dispersion": 1.2})
    fam = sm.families.Tweedie(link=statsmodels_softplus_link(), var_power=power,
                              check_link=False)
    ref = sm.GLM(y, sm.add_constant(X), family=fam).fit(method="IRLS", tol=1e-13)
    coef, point = _glm_fit(family, X, y, shape_priors={"dispersion": "flat"})
    np.testing.assert_allclose(coef, ref.params, rtol=1e-6)
    # the dispersion maximises the exact likelihood at those coefficients
    eta = torch.from_numpy(X) @ point["coef"] + point["intercept"]
    y_t = torch.from_numpy(y)

    def ll(phi):
        return float(family.build(eta, shapes={"dispersion": torch.tensor(phi, dtype=F64)})
                     .log_prob(y_t).sum())

    phi = float(point["dispersion"])
    assert ll(phi) > max(ll(phi * 1.001), ll(phi / 1.001))
    assert phi == pytest.approx(1.2, rel=0.1)
