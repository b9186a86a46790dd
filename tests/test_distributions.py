"""Tests of posheads.distributions: references, moments, extremes, shapes, Pyro use, checks."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Predictive

from posheads import distributions as D

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}

ETA = [-3.0, -0.5, 0.0, 0.7, 2.5, 6.0]
R = [0.5, 1.0, 2.0, 5.0, 10.0, 50.0]
G = [-2.0, -0.5, 0.0, 0.3, 1.0, 3.0]
T = [0.5, 1.0, 2.0, 1.5, 3.0, 0.25]
COUNTS = [0.0, 1.0, 2.0, 0.0, 7.0, 30.0]
POSITIVE = [0.05, 0.5, 1.0, 2.0, 7.0, 30.0]
REALS = [-3.0, -0.1, 0.0, 0.4, 2.0, 9.0]


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def _hurdle_reference(count, g, y):
    """A zero part with logits ``g`` in front of torch's ``count`` distribution truncated."""
    log_p0 = count.log_prob(torch.zeros_like(y))
    log_pos = count.log_prob(y) - torch.log(-torch.expm1(log_p0)) - F.softplus(g)
    return torch.where(y == 0, -F.softplus(-g), log_pos)


def _reference_cases(low):
    """(name, ours(dtype), reference in float64, values): the reference sees the same mean."""
    eta, r, g, t = _t(ETA), _t(R), _t(G), _t(T)
    mu = t * (low + F.softplus(eta))
    mean = low + F.softplus(eta)
    nb_logits = torch.log(mu) - torch.log(r)
    return [
        ("poisson", lambda dt: D.SoftplusPoisson(eta.to(dt), low=low, exposure=t.to(dt)),
         dist.Poisson(mu), COUNTS),
        ("nb", lambda dt: D.SoftplusNegativeBinomial(eta.to(dt), r.to(dt), low=low,
                                                     exposure=t.to(dt)),
         dist.NegativeBinomial(total_count=r, logits=nb_logits), COUNTS),
        ("zip", lambda dt: D.SoftplusZeroInflatedPoisson(eta.to(dt), g.to(dt), low=low,
                                                         exposure=t.to(dt)),
         dist.ZeroInflatedPoisson(mu, gate_logits=g), COUNTS),
        ("zinb", lambda dt: D.SoftplusZeroInflatedNegativeBinomial(
            eta.to(dt), r.to(dt), g.to(dt), low=low, exposure=t.to(dt)),
         dist.ZeroInflatedNegativeBinomial(total_count=r, logits=nb_logits, gate_logits=g),
         COUNTS),
        ("hurdle", lambda dt: D.SoftplusHurdlePoisson(eta.to(dt), g.to(dt), low=low,
                                                      exposure=t.to(dt)),
         None, COUNTS),
        ("hurdle_nb", lambda dt: D.SoftplusHurdleNegativeBinomial(
            eta.to(dt), r.to(dt), g.to(dt), low=low, exposure=t.to(dt)),
         None, COUNTS),
        ("gamma", lambda dt: D.SoftplusGamma(eta.to(dt), r.to(dt), low=low),
         dist.Gamma(r, r / mean), POSITIVE),
        ("normal", lambda dt: D.SoftplusNormal(_t(REALS[::-1], dt), eta.to(dt), low=low),
         dist.Normal(_t(REALS[::-1]), mean), REALS),
        ("lognormal", lambda dt: D.SoftplusLogNormal(_t(REALS[::-1], dt), eta.to(dt), low=low),
         dist.LogNormal(_t(REALS[::-1]), mean), POSITIVE),
    ]


@pytest.mark.parametrize("low", [0.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_matches_torch_and_pyro(dtype, low):
    for name, ours, ref, values in _reference_cases(low):
        y = _t(values)
        d = ours(dtype)
        if ref is None:  # hurdle: no reference distribution in torch or Pyro
            mu = d.rate.double()
            count = (dist.Poisson(mu) if name == "hurdle" else dist.NegativeBinomial(
                total_count=_t(R), logits=torch.log(mu) - torch.log(_t(R))))
            expected = _hurdle_reference(count, d.gate_logits.double(), y)
        else:
            expected = ref.log_prob(y)
        got = d.log_prob(y.to(dtype))
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.double(), expected, **TOL[dtype], msg=name)


@pytest.mark.parametrize("name", ["poisson", "nb", "zip", "zinb", "hurdle", "hurdle_nb"])
def test_count_probabilities_sum_to_one(name):
    d = dict((n, ours) for n, ours, _, _ in _reference_cases(0.2))[name](torch.float64)
    y = torch.arange(2000, dtype=torch.float64).unsqueeze(-1)
    total = d.log_prob(y).exp().sum(0)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-9)


def test_integer_dtype_counts_are_accepted():
    d = D.SoftplusPoisson(torch.tensor([0.5, 1.0]), low=0.1)
    y = torch.tensor([1, 3])
    torch.testing.assert_close(d.log_prob(y), d.log_prob(y.float()))


# ---------------------------------------------------------------- moments of samples
def _moment_cases():
    eta = _t([-1.0, 1.0, 4.0])
    g, r, t = _t([-1.0, 0.0, 1.0]), _t([0.7, 3.0, 20.0]), _t([2.0, 1.0, 0.5])
    return {
        "poisson": D.SoftplusPoisson(eta, low=0.2, exposure=t),
        "nb": D.SoftplusNegativeBinomial(eta, r, exposure=t),
        "zip": D.SoftplusZeroInflatedPoisson(eta, g),
        "zinb": D.SoftplusZeroInflatedNegativeBinomial(eta, r, g, low=0.1),
        "hurdle": D.SoftplusHurdlePoisson(eta, g),
        "hurdle_tiny_rate": D.SoftplusHurdlePoisson(_t([-30.0, -8.0, -3.0]), g),
        "hurdle_nb": D.SoftplusHurdleNegativeBinomial(eta, r, g, exposure=t),
        # P(0) near 1: most positive draws come from inverting the truncated CDF
        "hurdle_nb_tiny_rate": D.SoftplusHurdleNegativeBinomial(
            _t([-30.0, -8.0, -3.0]), _t([0.05, 0.5, 0.02]), g),
        "gamma": D.SoftplusGamma(eta, r),
        "normal": D.SoftplusNormal(eta, _t([-2.0, 0.0, 1.0]), low=0.1),
        "lognormal": D.SoftplusLogNormal(eta, _t([-2.0, -1.0, -0.5])),
    }


@pytest.mark.parametrize("name", list(_moment_cases()))
def test_sample_moments_match_mean_and_variance(name):
    d = _moment_cases()[name]
    n = 40_000
    x = d.sample((n,))
    assert x.shape == (n, 3) and x.dtype == torch.float64
    m, v = x.mean(0), x.var(0)
    # standard errors of the sample mean and variance, the latter from the sample's own
    # fourth central moment; 5 of them is a generous bound at a fixed seed
    se_mean = (d.variance / n).sqrt()
    m4 = ((x - m) ** 4).mean(0)
    se_var = ((m4 - v**2).clamp(min=0) / n).sqrt()
    assert ((m - d.mean).abs() <= 5 * se_mean + 1e-12).all(), (m, d.mean)
    assert ((v - d.variance).abs() <= 5 * se_var + 1e-12).all(), (v, d.variance)


@pytest.mark.parametrize("name", ["poisson", "nb", "zip", "zinb", "hurdle", "hurdle_nb",
                                  "hurdle_nb_tiny_rate"])
def test_count_samples_are_integer_valued_floats(name):
    x = _moment_cases()[name].sample((100,))
    assert x.is_floating_point()
    assert torch.equal(x, x.round()) and (x >= 0).all()


def test_hurdle_samples_are_positive_when_gate_is_closed():
    d = D.SoftplusHurdlePoisson(torch.tensor([-50.0, 0.0]), gate_logits=torch.tensor(-40.0))
    x = d.sample((500,))
    assert (x[:, 0] == 1).all() and (x[:, 1] >= 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [D.SoftplusPoisson, D.SoftplusNegativeBinomial,
                                 D.SoftplusZeroInflatedPoisson, D.SoftplusHurdlePoisson,
                                 D.SoftplusHurdleNegativeBinomial])
def test_sampling_huge_rates_is_finite(cls, dtype):
    eta = torch.tensor([0.0, 1e13, 1e20, 1e30, 3e38], dtype=dtype)
    extra = {"gate_logits": -50.0} if "Zero" in cls.__name__ or "Hurdle" in cls.__name__ else {}
    if "NegativeBinomial" in cls.__name__:
        extra["concentration"] = 1e6
    x = cls(eta, **extra).sample((200,))
    assert torch.isfinite(x).all() and (x >= 0).all()
    rel = x[:, 1:].double().mean(0) / eta[1:].double()
    torch.testing.assert_close(rel, torch.ones_like(rel), rtol=1e-2, atol=0)


@pytest.mark.parametrize(("eta", "r"), [(1.5, 1.3), (-5.0, 0.05), (2.0, 0.02)])
def test_truncated_nb_draws_follow_the_truncated_pmf(eta, r):
    """Chi-square goodness of fit against SciPy's pmf; the last two cases have P(0) of
    0.995 and 0.95, so their draws come mostly from inverting the CDF."""
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(3)
    d = D.SoftplusHurdleNegativeBinomial(_t([eta]), _t([r]), gate_logits=_t([-60.0]))
    n = 20_000
    x = d.sample((n,))[:, 0].long().numpy()
    assert x.min() >= 1
    mu = float(d.rate)
    count = stats.nbinom(r, r / (r + mu))
    # cells 1..K-1 and a tail cell >= K, with K where every expected count exceeds 5
    k = 1
    while count.sf(k) / count.sf(0) * n > 5 and k < 200:
        k += 1
    expected = [count.pmf(j) / count.sf(0) * n for j in range(1, k)] + [
        count.sf(k - 1) / count.sf(0) * n]
    observed = [(x == j).sum() for j in range(1, k)] + [(x >= k).sum()]
    p_value = stats.chisquare(observed, expected).pvalue
    assert p_value > 1e-3, (p_value, observed[:5], expected[:5])


def test_rate_zero_samples_zero():
    x = D.SoftplusPoisson(torch.tensor(-1e4)).sample((50,))
    assert (x == 0).all()


# ---------------------------------------------------------------- extremes
EXTREME_ETA = [-1e4, -200.0, -30.0, 0.0, 30.0, 200.0, 1e4]


def _extreme_cases(eta, low, dtype):
    g = torch.tensor(0.5, dtype=dtype, requires_grad=True)
    r = torch.tensor(2.0, dtype=dtype, requires_grad=True)
    counts = torch.tensor([0.0, 1.0, 5.0, 1e4], dtype=dtype)
    pos = torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
    reals = torch.tensor([-1e3, 0.0, 1.0, 1e3], dtype=dtype)
    t = torch.tensor(2.0, dtype=dtype)
    e = eta.unsqueeze(-1)
    return [
        (D.SoftplusPoisson(e, low=low, exposure=t), counts, ()),
        (D.SoftplusNegativeBinomial(e, r, low=low), counts, (r,)),
        (D.SoftplusZeroInflatedPoisson(e, g, low=low), counts, (g,)),
        (D.SoftplusZeroInflatedNegativeBinomial(e, r, g, low=low), counts, (r, g)),
        (D.SoftplusHurdlePoisson(e, g, low=low, exposure=t), counts, (g,)),
        (D.SoftplusHurdleNegativeBinomial(e, r, g, low=low, exposure=t), counts, (r, g)),
        (D.SoftplusGamma(e, r, low=low), pos, (r,)),
        (D.SoftplusNormal(0.5, e, low=low), reals, ()),
        (D.SoftplusLogNormal(0.5, e, low=low), pos, ()),
    ]


@pytest.mark.parametrize("low", [0.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_and_gradients_finite_at_extreme_eta(dtype, low):
    eta = torch.tensor(EXTREME_ETA, dtype=dtype, requires_grad=True)
    for d, values, others in _extreme_cases(eta, low, dtype):
        lp = d.log_prob(values)
        name = type(d).__name__
        assert lp.shape == (len(EXTREME_ETA), len(values)), name
        assert torch.isfinite(lp).all(), (name, lp)
        grads = torch.autograd.grad(lp.sum(), (eta, *others))
        assert all(torch.isfinite(gr).all() for gr in grads), (name, grads)
        assert torch.isfinite(d.mean[3]).all(), name  # at eta = 0


@pytest.mark.parametrize("count", ["poisson", "nb"])
def test_hurdle_at_vanishing_rate_puts_positive_mass_on_one(count):
    eta, g = torch.tensor([-1e4, -200.0]), torch.tensor(0.3)
    d = (D.SoftplusHurdlePoisson(eta, g) if count == "poisson"
         else D.SoftplusHurdleNegativeBinomial(eta, 0.7, g))
    assert (d.sample((200,)) <= 1).all()
    lp1 = d.log_prob(torch.tensor(1.0))
    torch.testing.assert_close(lp1, -F.softplus(torch.tensor(0.3)).expand(2))
    assert (d.log_prob(torch.tensor(2.0)) < -100).all()
    torch.testing.assert_close(d.mean, torch.sigmoid(torch.tensor(-0.3)).expand(2))


def test_normal_with_underflowed_scale_is_peaked_not_nan():
    d = D.SoftplusNormal(torch.tensor(1.0), torch.tensor(-1e4, dtype=torch.float64))
    lp = d.log_prob(torch.tensor([1.0, 1.5], dtype=torch.float64))
    assert lp[0] > 9000 and torch.isfinite(lp).all() and lp[1] < -1e100


# ---------------------------------------------------------------- shapes
def _shape_factories(shift=0.0):
    eta = torch.linspace(-1, 2, 3).unsqueeze(-1) + shift  # (3, 1)
    return {
        "poisson": lambda: D.SoftplusPoisson(eta, exposure=torch.tensor([1.0, 2.0])),
        "nb": lambda: D.SoftplusNegativeBinomial(eta, torch.tensor([1.0, 3.0])),
        "zip": lambda: D.SoftplusZeroInflatedPoisson(eta, torch.zeros(2)),
        "zinb": lambda: D.SoftplusZeroInflatedNegativeBinomial(eta, 2.0, torch.zeros(2)),
        "hurdle": lambda: D.SoftplusHurdlePoisson(eta, torch.zeros(2), low=0.1),
        "hurdle_nb": lambda: D.SoftplusHurdleNegativeBinomial(eta, torch.tensor([0.5, 4.0]),
                                                              torch.zeros(2)),
        "gamma": lambda: D.SoftplusGamma(eta, torch.ones(2)),
        "normal": lambda: D.SoftplusNormal(torch.zeros(2), eta),
        "lognormal": lambda: D.SoftplusLogNormal(torch.zeros(2), eta),
    }


@pytest.mark.parametrize("name", list(_shape_factories()))
def test_shapes_expand_and_to_event(name):
    d = _shape_factories()[name]()
    assert d.batch_shape == (3, 2) and d.event_shape == ()
    assert not d.has_enumerate_support
    x = d.sample((4,))
    assert x.shape == (4, 3, 2)
    assert d.mean.shape == d.variance.shape == (3, 2)
    big = d.expand((5, 3, 2))
    assert type(big) is type(d) and big.batch_shape == (5, 3, 2)
    assert big.sample().shape == (5, 3, 2)
    torch.testing.assert_close(big.log_prob(x[0]), d.log_prob(x[0]).expand(5, 3, 2))
    torch.testing.assert_close(big.mean, d.mean.expand(5, 3, 2))
    ev = d.to_event(1)
    assert ev.batch_shape == (3,) and ev.event_shape == (2,)
    torch.testing.assert_close(ev.log_prob(x), d.log_prob(x).sum(-1))


def test_exposure_is_kept_through_expand_and_means_include_it():
    eta = torch.tensor([0.0, 1.0])
    d = D.SoftplusPoisson(eta, low=0.5, exposure=torch.tensor([2.0, 3.0]))
    expected = torch.tensor([2.0, 3.0]) * (0.5 + F.softplus(eta))
    torch.testing.assert_close(d.mean, expected)
    torch.testing.assert_close(d.expand((4, 2)).mean, expected.expand(4, 2))
    assert "exposure" not in D.SoftplusPoisson(eta).expand((3, 2)).__dict__


# ---------------------------------------------------------------- Pyro
@pytest.mark.parametrize("name", list(_shape_factories()))
def test_pyro_sample_and_predictive(name):
    y = _shape_factories()[name]().sample()

    def model(y=None):
        shift = pyro.sample("shift", dist.Normal(0.0, 0.1))
        d = _shape_factories(shift)[name]()
        with pyro.plate("rows", 3, dim=-2), pyro.plate("cols", 2, dim=-1):
            return pyro.sample("obs", d, obs=y)

    trace = pyro.poutine.trace(model).get_trace(y)
    assert torch.isfinite(trace.log_prob_sum())
    draws = Predictive(model, num_samples=6)()
    assert draws["obs"].shape == (6, 3, 2)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("value", "match"),
    [(-1.0, "non-negative"), (1.5, "whole numbers"), (math.nan, "finite"), (-math.inf, "finite")],
)
@pytest.mark.parametrize("cls", [D.SoftplusPoisson, D.SoftplusZeroInflatedPoisson,
                                 D.SoftplusHurdlePoisson, D.SoftplusHurdleNegativeBinomial])
def test_invalid_counts_raise_clear_errors(cls, value, match):
    extra = {} if cls is D.SoftplusPoisson else {"gate_logits": 0.0}
    if cls is D.SoftplusHurdleNegativeBinomial:
        extra["concentration"] = 2.0
    d = cls(torch.zeros(3), **extra, validate_args=True)
    y = torch.tensor([0.0, 2.0, value])
    with pytest.raises(ValueError, match=f"{cls.__name__}: counts must be {match}"):
        d.log_prob(y)


def test_validation_off_scores_anything():
    d = D.SoftplusNegativeBinomial(torch.zeros(2), 1.0, validate_args=False)
    assert d.log_prob(torch.tensor([1.5, 2.0])).shape == (2,)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: D.SoftplusNegativeBinomial(0.0, -1.0, validate_args=True), "concentration"),
        (lambda: D.SoftplusPoisson(0.0, exposure=torch.tensor(0.0), validate_args=True),
         "exposure"),
        (lambda: D.SoftplusPoisson(torch.tensor(math.nan), validate_args=True), "eta"),
        (lambda: D.SoftplusPoisson(0.0, beta=0.0), "beta"),
        (lambda: D.SoftplusPoisson(0.0, threshold=-1.0), "threshold"),
        (lambda: D.SoftplusGamma(0.0, 1.0, low=-0.1), "low"),
    ],
)
def test_invalid_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [D.SoftplusGamma, D.SoftplusLogNormal])
def test_positive_support_errors(cls):
    d = cls(torch.zeros(2), torch.ones(2), validate_args=True)
    with pytest.raises(ValueError, match="positive"):
        d.log_prob(torch.tensor([1.0, 0.0]))


# ---------------------------------------------------------------- reparameterisation
@pytest.mark.parametrize("cls", [D.SoftplusGamma, D.SoftplusNormal, D.SoftplusLogNormal])
def test_rsample_carries_gradients(cls):
    eta = torch.tensor([0.2, 1.0], requires_grad=True)
    d = cls(eta, torch.ones(2)) if cls is D.SoftplusGamma else cls(torch.zeros(2), eta)
    (grad,) = torch.autograd.grad(d.rsample((50,)).sum(), eta)
    assert d.has_rsample and torch.isfinite(grad).all() and (grad != 0).all()
