"""Tests of posheads.heads: Softplus, PositiveLinear and the distribution heads, used three ways.

The three uses: (1) plain torch, an MLP with a NegativeBinomialHead trained with Adam;
(2) a Pyro model that scores data with ``pyro.sample("obs", head(h), obs=y)``, fitted by
SVI; (3) a ``PyroModule`` head with ``PyroSample`` priors, AutoNormal and ``Predictive``.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

from posheads import distributions as D
from posheads import heads as H
from posheads import ops

ALL_HEADS = [H.PoissonHead, H.NegativeBinomialHead, H.ZeroInflatedPoissonHead,
             H.ZeroInflatedNegativeBinomialHead, H.HurdlePoissonHead,
             H.HurdleNegativeBinomialHead, H.GammaHead, H.NormalHead, H.LogNormalHead]
COUNT_HEADS = ALL_HEADS[:6]


@pytest.fixture
def one_thread():
    # The fits below use tensors of a few thousand numbers, where intra-op threads only add
    # synchronisation; on a busy 2-core machine two threads make them many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _targets(head_cls, n=500):
    if head_cls in COUNT_HEADS:
        return torch.poisson(torch.full((n,), 3.0)) * (torch.rand(n) > 0.3)
    if head_cls is H.NormalHead:
        return torch.randn(n) * 2.0 + 1.0
    return torch.distributions.Gamma(2.0, 1.0).sample((n,))


# ---------------------------------------------------------------- Softplus, PositiveLinear
def test_softplus_matches_torch_float32_and_repr():
    x = torch.cat([torch.randn(1000) * 30, torch.tensor([-1e4, -20.0, 0.0, 19.9, 20.0, 1e4])])
    for kwargs in ({}, {"beta": 2.0}, {"beta": 0.5, "threshold": 20.0}):
        ours, ref = H.Softplus(**kwargs), nn.Softplus(**kwargs)
        assert torch.equal(ours(x), ref(x)), kwargs
        assert repr(ours) == repr(ref)
    assert repr(H.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"
    assert "low=0.1, learn_beta=True" in repr(H.Softplus(low=0.1, learn_beta=True))


def test_softplus_floor_and_checks():
    x = torch.linspace(-50, 5, 20)
    torch.testing.assert_close(H.Softplus(low=0.25)(x), nn.Softplus()(x) + 0.25)
    for kwargs, match in [({"beta": 0.0}, "beta"), ({"threshold": 0.0}, "threshold"),
                          ({"low": -1.0}, "low")]:
        with pytest.raises(ValueError, match=match):
            H.Softplus(**kwargs)


def test_learnable_beta_same_function_gets_gradients_and_stays_positive():
    x = torch.linspace(-30, 30, 101, dtype=torch.float64)
    layer = H.Softplus(beta=2.0, learn_beta=True).double()
    torch.testing.assert_close(layer(x), H.Softplus(beta=2.0)(x))
    (grad,) = torch.autograd.grad(layer(x).sum(), layer.beta_unconstrained)
    assert torch.isfinite(grad) and grad != 0
    # an objective that keeps pushing beta down: beta approaches 0 but never crosses it
    opt = torch.optim.SGD(layer.parameters(), lr=5.0)
    for _ in range(200):
        opt.zero_grad()
        layer.beta.backward()
        opt.step()
    assert 0 < float(layer.beta.detach()) < 1e-3


def test_learnable_beta_is_recovered(one_thread):
    x = torch.linspace(-3, 3, 200)
    target = H.Softplus(beta=3.0)(x)
    layer = H.Softplus(beta=1.0, learn_beta=True)
    opt = torch.optim.Adam(layer.parameters(), lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        ((layer(x) - target) ** 2).mean().backward()
        opt.step()
    assert abs(float(layer.beta.detach()) - 3.0) < 0.01


def test_positive_linear():
    layer = H.PositiveLinear(3, 2, low=0.1)
    x = torch.randn(7, 3)
    expected = nn.functional.softplus(nn.functional.linear(x, layer.weight, layer.bias)) + 0.1
    torch.testing.assert_close(layer(x), expected)
    assert (layer(x * 100) >= 0.1).all()
    assert repr(layer).endswith("bias=True, beta=1.0, threshold=20.0, low=0.1)")
    assert isinstance(layer, nn.Linear)


# ---------------------------------------------------------------- heads: structure
@pytest.mark.parametrize("head_cls", ALL_HEADS)
def test_head_shapes_and_raw_parameters(head_cls):
    head = head_cls(4)
    h = torch.randn(2, 5, 4)
    raw = head.parameters_from(h)
    assert tuple(raw) == head.raw_names and head.proj.out_features == len(head.raw_names)
    assert all(v.shape == (2, 5) for v in raw.values())
    d = head(h)
    assert isinstance(d, head.distribution_class) and d.batch_shape == (2, 5)
    y = _targets(head_cls, 10).reshape(2, 5)
    lp = d.log_prob(y)
    assert lp.shape == (2, 5) and torch.isfinite(lp).all()


def test_concentration_starts_at_one_and_is_softplus():
    head = H.NegativeBinomialHead(3)
    assert math.isclose(float(ops.softplus(head.proj.bias.detach()[1])), 1.0, rel_tol=1e-6)
    raw = {"eta": torch.zeros(2), "concentration": torch.tensor([-1e4, 50.0])}
    conc = head.domain_map(raw)["concentration"]
    assert (conc > 0).all() and conc[1] == 50.0


@pytest.mark.parametrize("head_cls", COUNT_HEADS)
def test_count_heads_take_exposure(head_cls):
    head = head_cls(3)
    h = torch.randn(4, 3)
    exposure = torch.tensor([1.0, 2.0, 0.5, 3.0])
    torch.testing.assert_close(head(h, exposure=exposure).rate, head(h).rate * exposure)
    with pytest.raises(ValueError, match="exposure"):
        head(h, exposure=-exposure)


@pytest.mark.parametrize("head_cls", ALL_HEADS[len(COUNT_HEADS):])
def test_continuous_heads_refuse_exposure(head_cls):
    with pytest.raises(ValueError, match="takes no exposure"):
        head_cls(3)(torch.randn(2, 3), exposure=torch.ones(2))


def test_low_floor_reaches_the_distribution():
    head = H.PoissonHead(2, low=0.5)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-1e4)
    torch.testing.assert_close(head(torch.randn(3, 2)).mean, torch.full((3,), 0.5))


# ---------------------------------------------------------------- heads: initialisation
@pytest.mark.parametrize("head_cls", [h for h in ALL_HEADS if h is not H.LogNormalHead])
def test_init_from_targets_matches_training_mean(head_cls):
    y = _targets(head_cls)
    head = head_cls(3).init_from_targets(y)
    mean = head(torch.randn(6, 3)).mean.detach()
    # zero-inflated NB: the gate starts at 0.1 and the count mean absorbs it exactly;
    # hurdle: exact too, through the zero-truncated mean
    torch.testing.assert_close(mean, torch.full((6,), float(y.mean())), rtol=1e-4, atol=1e-5)


def test_init_from_targets_shape_parameters():
    y = torch.distributions.NegativeBinomial(total_count=2.0, logits=1.0).sample((20_000,))
    head = H.NegativeBinomialHead(2).init_from_targets(y)
    assert abs(float(head(torch.zeros(2)).concentration.detach()) - 2.0) < 0.2
    head = H.LogNormalHead(2).init_from_targets(torch.exp(torch.randn(20_000) * 0.5 + 1.0))
    with torch.no_grad():
        d = head(torch.zeros(2))
    assert abs(float(d.loc) - 1.0) < 0.02 and abs(float(d.scale) - 0.5) < 0.02


def test_init_with_exposure_and_target_mean():
    exposure = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 2.0, 5.0, 8.0])
    head = H.PoissonHead(2).init_from_targets(y, exposure=exposure)
    fitted = head(torch.randn(4, 2), exposure=exposure).mean
    torch.testing.assert_close(fitted.sum(), y.sum())
    head = H.GammaHead(2, target_mean=7.5)
    torch.testing.assert_close(head(torch.randn(3, 2)).mean.detach(), torch.full((3,), 7.5))
    with pytest.raises(ValueError, match="finite"):
        H.PoissonHead(2).init_from_targets(torch.tensor([1.0, math.nan]))


# ---------------------------------------------------------------- heads: bad input
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_features_raise(bad):
    head = H.PoissonHead(3)
    h = torch.randn(5, 3)
    h[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        head(h)
    raw = H.PoissonHead(3, validate=False).parameters_from(h)  # the check can be turned off
    assert not torch.isfinite(raw["eta"]).all()


def test_wrong_feature_size_names_in_features():
    with pytest.raises(ValueError, match="in_features=4"):
        H.GammaHead(4)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="in_features=4"):
        H.GammaHead(4)(torch.tensor(1.0))
    with pytest.raises(ValueError, match="in_features"):
        H.PoissonHead(0)


# ---------------------------------------------------------------- (1) plain torch
def test_mlp_with_negative_binomial_head_recovers_mean_function(one_thread):
    torch.manual_seed(0)
    n, r = 4000, 3.0
    x = torch.rand(n, 1) * 4 - 2

    def true_mean(x):
        return ops.softplus(1.0 + 1.5 * torch.sin(2.0 * x)).squeeze(-1)

    mu = true_mean(x)
    y = torch.poisson(mu * torch.distributions.Gamma(r, 1.0).sample((n,)) / r)
    body = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
    head = H.NegativeBinomialHead(32).init_from_targets(y)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=0.01)
    for _ in range(600):
        opt.zero_grad()
        loss = -head(body(x)).log_prob(y).mean()
        loss.backward()
        opt.step()
    grid = torch.linspace(-1.8, 1.8, 50).unsqueeze(-1)
    with torch.no_grad():
        fitted = head(body(grid))
    rel = (fitted.mean / true_mean(grid) - 1).abs()
    assert rel.mean() < 0.1 and rel.max() < 0.3, rel
    assert abs(float(fitted.concentration.mean()) - r) < 0.6


# ---------------------------------------------------------------- (2) Pyro model + SVI
def test_pyro_model_with_zero_inflated_head_recovers_parameters(one_thread):
    n = 3000
    x = torch.randn(n, 1)
    rate = ops.softplus(0.5 + 1.0 * x[:, 0])
    y = torch.poisson(rate) * (torch.rand(n) > torch.sigmoid(torch.tensor(-1.0)))
    head = H.ZeroInflatedPoissonHead(1).init_from_targets(y)

    def model(x, y=None):
        pyro.module("head", head)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", head(x), obs=y)

    def guide(x, y=None):  # maximum likelihood: every unknown is a pyro.param of the head
        pass

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(400):
        svi.step(x, y)
    fitted = torch.cat([head.proj.weight.detach()[:, 0], head.proj.bias.detach()])
    truth = torch.tensor([1.0, 0.0, 0.5, -1.0])  # eta slope, gate slope, eta and gate biases

    def nll(theta):
        eta, gate = theta[0] * x[:, 0] + theta[2], theta[1] * x[:, 0] + theta[3]
        return -D.SoftplusZeroInflatedPoisson(eta, gate).log_prob(y).sum()

    # standard errors from the observed information at the fit
    se = torch.linalg.inv(torch.autograd.functional.hessian(nll, fitted)).diagonal().sqrt()
    assert ((fitted - truth).abs() < 4 * se).all(), (fitted, se)
    assert (se < 0.15).all()  # n is large enough for the check to mean something
    assert set(pyro.get_param_store().keys()) == {"head$$$proj.weight", "head$$$proj.bias"}


# ---------------------------------------------------------------- (3) PyroModule + PyroSample
def test_bayesian_head_with_pyro_sample_priors(one_thread):
    n = 1000
    x = torch.randn(n, 2)
    true_w, true_b = torch.tensor([0.8, -0.5]), 1.0
    y = torch.poisson(ops.softplus(x @ true_w + true_b))
    head = PyroModule[H.PoissonHead](2)
    assert isinstance(head.proj, PyroModule)
    head.proj.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 2]).to_event(2))
    head.proj.bias = PyroSample(dist.Normal(0.0, 5.0).expand([1]).to_event(1))

    def model(x, y=None):
        d = head(x)  # the weights are drawn here, outside the data plate
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", d, obs=y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(600):
        svi.step(x, y)
    median = guide.median()
    torch.testing.assert_close(median["proj.weight"][0], true_w, atol=0.1, rtol=0)
    torch.testing.assert_close(median["proj.bias"], torch.tensor([true_b]), atol=0.1, rtol=0)
    draws = Predictive(model, guide=guide, num_samples=50)(x)
    obs = draws["obs"]
    assert obs.shape == (50, n) and torch.equal(obs, obs.round())
    assert abs(float(obs.mean()) / float(y.mean()) - 1) < 0.05
    assert isinstance(head(x), D.SoftplusPoisson)
