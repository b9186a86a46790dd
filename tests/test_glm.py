"""Tests of posheads.models.glm: the Pyro model, its flat-vector functions and priors."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Predictive
from pyro.infer.mcmc.util import initialize_model

from posheads import ops
from posheads.datasets import make_count_regression
from posheads.distributions import half_normal_inverse_sqrt
from posheads.families import get_family
from posheads.models import GLMData, SoftplusGLM
from posheads.models.glm_loss import GLMLoss

from ._families import BUILT_IN_NAMES

F64 = torch.float64
# posheads' own families: the models' LIKELIHOODS also lists those other test modules
# register, so the test ids would depend on which modules were collected
LIKELIHOODS = BUILT_IN_NAMES


def small_data(likelihood="poisson", n=60, p=3, q=None, seed=0, weights=False, exposure=False):
    """Targets in the family's support: counts of mean 2 with extra zeros, or the family's
    own amounts of mean 2 (with the extra zeros where the support has them)."""
    family = get_family(likelihood)
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=gen, dtype=F64)
    y = torch.poisson(torch.full((n,), 2.0, dtype=F64), generator=gen)
    if family.support != "counts":
        amounts, _ = family.simulate(np.full(n, 2.0), np.random.default_rng(seed))
        y = torch.from_numpy(amounts).to(F64)
    if family.support != "positive":
        y[:: 5] = 0.0
    t = torch.rand(n, generator=gen, dtype=F64) + 0.5 if exposure else None
    w = torch.rand(n, generator=gen, dtype=F64) * 2 if weights else None
    Z = torch.randn(n, q, generator=gen, dtype=F64) if q else None
    return GLMData(X, y, exposure=t, weights=w, X_zero=Z)


def random_theta(model, data, seed=1):
    d = sum(s.numel() for _, s in model.layout(data.X, data.X_zero))
    return 0.3 * torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ construction
def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="unknown likelihood"):
        SoftplusGLM("no_such_law")
    with pytest.raises(ValueError, match="coef_scale"):
        SoftplusGLM(coef_scale=0.0)
    with pytest.raises(ValueError, match="beta"):
        SoftplusGLM(beta=-1.0)
    with pytest.raises(ValueError, match="concentration_prior"):
        SoftplusGLM("negative_binomial", concentration_prior="wide")


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_layout_pack_unpack_round_trip(likelihood):
    model = SoftplusGLM(likelihood)
    data = small_data(likelihood, q=2)
    layout = model.layout(data.X, data.X_zero)
    names = [n for n, _ in layout]
    assert names[:2] == ["intercept", "coef"]
    assert ("concentration" in names) == model.has_concentration
    assert ("gate_coef" in names) == model.has_gate
    theta = torch.randn(4, sum(s.numel() for _, s in layout), dtype=F64)
    values = model.unpack(theta, layout)
    assert values["coef"].shape == (4, 3)
    if model.has_gate:
        assert values["gate_coef"].shape == (4, 2)
    if model.has_concentration:
        assert (values["concentration"] > 0).all()
    torch.testing.assert_close(model.pack(values, layout), theta)
    single = model.unpack(theta[0], layout)
    torch.testing.assert_close(model.pack(single, layout), theta[0])


def test_no_intercept_layout():
    model = SoftplusGLM("zero_inflated_poisson", fit_intercept=False)
    names = [n for n, _ in model.layout(torch.zeros(2, 3))]
    assert names == ["coef", "gate_coef"]


# ------------------------------------------------------------------ densities
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_log_joint_equals_pyro_potential(likelihood):
    """The flat log joint is the Pyro model's: same priors, weights and Jacobian."""
    model = SoftplusGLM(likelihood, coef_scale=0.7, gate_coef_scale=2.0)
    data = small_data(likelihood, weights=True, exposure=True)
    kwargs = {"X": data.X, "y": data.y, "exposure": data.exposure, "weights": data.weights}
    _, potential_fn, transforms, _ = initialize_model(model, model_kwargs=kwargs)
    theta = random_theta(model, data)
    layout = model.layout(data.X)
    values = model.unpack(theta, layout)
    unconstrained = {k: transforms[k](v) for k, v in values.items()}
    expected = -potential_fn(unconstrained)
    torch.testing.assert_close(model.log_joint(theta, data), expected)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_potential_and_grad_matches_autograd(likelihood):
    model = SoftplusGLM(likelihood, coef_scale=0.5)
    data = small_data(likelihood, q=2, weights=True, exposure=True)
    theta = random_theta(model, data).requires_grad_()
    lp = model.log_joint(theta, data)
    (grad,) = torch.autograd.grad(lp, theta)
    U, dU = model.potential_and_grad(theta.detach(), data)
    torch.testing.assert_close(U, -lp.detach())
    torch.testing.assert_close(dU, -grad)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("jacobian", [False, True])
def test_loss_hessian_matches_autograd(likelihood, jacobian):
    """The assembled Hessian (closed form or per-row autograd) is the exact one."""
    model = SoftplusGLM(likelihood, coef_scale=0.5, beta=1.5)
    data = small_data(likelihood, q=2, weights=True, exposure=True)
    loss = GLMLoss(model, data, jacobian=jacobian, normalize=False)
    theta = random_theta(model, data)
    H = loss.hessian(theta, loss.predictors(theta), exact=True)
    ref = torch.autograd.functional.hessian(
        lambda t: -model.log_joint(t, data, jacobian=jacobian), theta)
    torch.testing.assert_close(H, ref, rtol=1e-9, atol=1e-9)
    # the Newton steps' approximation: float32 Gram products, float64 result
    approx = loss.hessian(theta, loss.predictors(theta))
    assert approx.dtype == F64
    torch.testing.assert_close(approx, ref, rtol=2e-5, atol=2e-5 * float(ref.abs().max()))
    assert not torch.equal(approx, H)
    g = loss.gradient(theta, loss.predictors(theta))
    theta = theta.clone().requires_grad_()
    (ref_g,) = torch.autograd.grad(-model.log_joint(theta, data, jacobian=jacobian), theta)
    torch.testing.assert_close(g, ref_g)


@pytest.mark.parametrize("distinct", [False, True], ids=["few-counts", "many-counts"])
def test_negative_binomial_closed_form_rows_match_autograd(distinct):
    """The closed-form NB derivatives, with the gamma terms by distinct count or per row,
    and at linear predictors in both tails of the softplus."""
    model = SoftplusGLM("negative_binomial", coef_scale=0.5, beta=1.5)
    data = small_data("negative_binomial", n=80, weights=True, exposure=True)
    if distinct:
        data = GLMData(data.X, torch.arange(80, dtype=F64) * 7.0, exposure=data.exposure,
                       weights=data.weights)
    loss = GLMLoss(model, data, jacobian=True, normalize=False)
    assert (loss.rows.levels is None) == distinct
    theta = random_theta(model, data)
    theta[loss.slices["intercept"]] = -5.0
    theta[loss.slices["coef"]] = torch.tensor([40.0, 0.5, -0.5], dtype=F64)  # eta in -200..200
    P = loss.predictors(theta)
    H = loss.hessian(theta, P, exact=True)
    g = loss.gradient(theta, P)
    ref = torch.autograd.functional.hessian(
        lambda t: -model.log_joint(t, data, jacobian=True), theta)
    theta = theta.clone().requires_grad_()
    (ref_g,) = torch.autograd.grad(-model.log_joint(theta, data, jacobian=True), theta)
    torch.testing.assert_close(g, ref_g, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(H, ref, rtol=1e-8, atol=1e-8)
    # the value agrees with the log joint up to a constant (the lgamma(y + 1) terms)
    theta2 = theta.detach() + 0.1
    diffs = [loss.value(t, loss.predictors(t)) + float(model.log_joint(t, data, jacobian=True))
             for t in (theta.detach(), theta2)]
    assert diffs[0] == pytest.approx(diffs[1], rel=1e-12, abs=1e-9)


def test_pointwise_log_likelihood_sums_to_unweighted_log_joint():
    model = SoftplusGLM("negative_binomial", coef_scale=None, intercept_scale=None,
                        concentration_prior="flat")
    data = small_data(exposure=True)
    theta = random_theta(model, data)
    values = model.unpack(theta[None].expand(3, -1), model.layout(data.X))
    ll = model.pointwise_log_likelihood(values, data)
    assert ll.shape == (3, data.n)
    torch.testing.assert_close(ll[0].sum(), model.log_joint(theta, data, jacobian=False))


def test_zero_weight_rows_are_masked_in_the_pyro_model():
    model = SoftplusGLM()
    data = small_data()
    w = torch.ones(data.n, dtype=F64)
    w[:10] = 0.0
    tr = pyro.poutine.trace(pyro.poutine.condition(
        model, {"intercept": torch.tensor(0.3, dtype=F64),
                "coef": torch.zeros(3, dtype=F64)})).get_trace(data.X, data.y, weights=w)
    dropped = pyro.poutine.trace(pyro.poutine.condition(
        model, {"intercept": torch.tensor(0.3, dtype=F64),
                "coef": torch.zeros(3, dtype=F64)})).get_trace(data.X[10:], data.y[10:])
    obs = tr.nodes["obs"]
    full = (obs["fn"].log_prob(obs["value"]) * obs["scale"] * obs["mask"]).sum()
    torch.testing.assert_close(full, dropped.nodes["obs"]["fn"].log_prob(data.y[10:]).sum())


# ------------------------------------------------------------------ priors
def test_default_intercept_prior_is_centred_at_the_mean_rate():
    model = SoftplusGLM(beta=2.0)
    data = small_data(exposure=True)
    loc = model.priors(data)["intercept"].loc
    rate = data.y.sum() / data.exposure.sum()
    torch.testing.assert_close(loc, ops.softplus_inverse(rate, beta=2.0))
    assert float(model.priors(GLMData(data.X))["intercept"].loc) == 0.0


def test_concentration_prior_is_half_normal_on_inverse_sqrt():
    """p(r) is the density of r = phi**-2 with phi ~ HalfNormal(s): change of variables."""
    s = 0.7
    prior = half_normal_inverse_sqrt(s)
    r = torch.tensor([0.05, 0.5, 3.0, 40.0], dtype=F64)
    phi = r.rsqrt()
    half_normal = torch.distributions.HalfNormal(torch.tensor(s, dtype=F64))
    expected = half_normal.log_prob(phi) + torch.log(0.5 * r ** -1.5)
    torch.testing.assert_close(prior.log_prob(r), expected)
    assert prior.support.__class__.__name__ == "SoftplusPositive"


def test_flat_priors_give_zero_log_prior():
    model = SoftplusGLM("negative_binomial", coef_scale=None, intercept_scale=None,
                        concentration_prior="flat")
    data = small_data()
    values = model.unpack(random_theta(model, data), model.layout(data.X))
    assert float(model.log_prior(values, data)) == 0.0


# ------------------------------------------------------------------ prediction
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_predictive_draws_and_means(likelihood):
    model = SoftplusGLM(likelihood)
    data = small_data(likelihood, q=2)
    theta = random_theta(model, data)
    layout = model.layout(data.X, data.X_zero)
    values = model.unpack(theta[None].expand(200, -1), layout)
    pred = Predictive(model, posterior_samples=values, return_sites=["obs"])
    draws = pred(data.X, X_zero=data.X_zero)["obs"]
    assert draws.shape == (200, data.n)
    support = model.family.support
    assert (draws > 0).all() if support == "positive" else (draws >= 0).all()
    if support == "counts":
        assert (draws == draws.round()).all()
    else:  # amounts: real draws, exact zeros only where the support has them
        assert (draws != draws.round()).double().mean() > 0.5
        assert bool((draws == 0).any()) == (support == "nonnegative")
    gen = torch.Generator().manual_seed(0)
    obs = model.sample_obs(values, data.X, X_zero=data.X_zero, generator=gen)
    again = model.sample_obs(values, data.X, X_zero=data.X_zero,
                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(obs, again)
    mean = model.predict_mean(values, data.X, X_zero=data.X_zero)
    assert mean.shape == (200, data.n)
    # the mean of 200 draws per row, pooled over rows, is close to the model mean
    z = (obs.mean(0) - mean[0]).sum() / (obs.var(0).sum() / 200).sqrt()
    assert abs(float(z)) < 4


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_subsampled_plate_and_sparse_design():
    model = SoftplusGLM()
    data = small_data()
    sparse = data.X.to_sparse_csr()
    tr = pyro.poutine.trace(model).get_trace(sparse, data.y, subsample_size=10)
    assert tr.nodes["obs"]["value"].shape == (10,)
    theta = random_theta(model, data)
    torch.testing.assert_close(model.log_joint(theta, GLMData(sparse, data.y)),
                               model.log_joint(theta, data))


# ------------------------------------------------------------------ data checks
@pytest.mark.parametrize(("field", "value", "match"), [
    ("y", -1.0, "non-negative"),
    ("y", math.nan, "NaN"),
    ("exposure", 0.0, "exposure must be positive"),
    ("weights", -1.0, "weights"),
])
def test_bad_data_raises(field, value, match):
    from posheads.inference import fit_map

    data = small_data(exposure=True, weights=True)
    vec = getattr(data, field).clone()
    vec[3] = value
    setattr(data, field, vec)
    with pytest.raises(ValueError, match=match):
        fit_map(SoftplusGLM(), data)


def test_bad_shapes_raise():
    from posheads.inference import fit_map

    data = small_data()
    with pytest.raises(ValueError, match=r"y must have shape"):
        fit_map(SoftplusGLM(), GLMData(data.X, data.y[:-1]))
    X = data.X.clone()
    X[0, 0] = math.inf
    with pytest.raises(ValueError, match="X contains NaN or infinite"):
        fit_map(SoftplusGLM(), GLMData(X, data.y))


def test_simulated_data_has_the_model_mean():
    """The datasets' simulator and the model agree on the mean of y."""
    X, _, info = make_count_regression(500, 3, random_state=0)
    model = SoftplusGLM()
    values = {"intercept": torch.tensor([info.intercept], dtype=F64),
              "coef": torch.as_tensor(info.coef)[None]}
    mean = model.predict_mean(values, torch.as_tensor(X))
    torch.testing.assert_close(mean[0], torch.as_tensor(info.mean))
