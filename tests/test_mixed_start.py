"""The ML engine's moment start and the rows' jets of the Laplace gradient: the jets
against autograd of hand-written log-pmfs, the gradient of a zero-inflated model (the
autograd jets) against finite differences, the moment SDs at a known truth, and a fit
from the moment start against one from the plain start."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from posheads import families
from posheads.inference.mixed_laplace import RowJets
from posheads.inference.mixed_ml import MOMENT_SD_RANGE, fit_mixed_ml, moment_start, start_theta
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from ._laplace_check import assert_gradient_matches_differences

F64 = torch.float64


def _data(rng, family, n, G, coef, sd, shapes=None):
    codes = rng.integers(0, G, n)
    x = rng.normal(size=n)
    eta = coef[0] + coef[1] * x + rng.normal(0.0, sd, G)[codes]
    y, _ = families.get_family(family).simulate(np.logaddexp(0.0, eta), rng, shapes=shapes)
    X = torch.tensor(np.c_[np.ones(n), x])
    e = RandomEffect("g", ("1",), torch.ones(n, 1, dtype=F64), torch.tensor(codes), G)
    return MixedData(X, (e,), torch.tensor(y, dtype=F64))


def _reference_rows(family, y, eta, u):
    """Per-row ``l`` of a hand-written log-pmf (softplus mean), autograd-differentiable
    in ``eta`` and the per-row raw concentration ``u``."""
    mu = torch.nn.functional.softplus(eta)
    if family == "poisson":
        return y * torch.log(mu) - mu - torch.lgamma(y + 1)
    r = torch.nn.functional.softplus(u)
    return (torch.lgamma(y + r) - torch.lgamma(r) - torch.lgamma(y + 1)
            + r * torch.log(r / (r + mu)) + y * torch.log(mu / (r + mu)))


@pytest.mark.parametrize("family", ["poisson", "negative_binomial"])
def test_closed_form_jets_match_autograd_of_a_hand_written_law(family):
    rng = np.random.default_rng(0)
    n = 200
    eta = torch.tensor(rng.uniform(-4.0, 30.0, n), dtype=F64)  # across the linear switch
    y = torch.tensor(rng.poisson(np.logaddexp(0.0, eta.numpy())), dtype=F64)
    X = torch.ones(n, 1, dtype=F64)
    e = RandomEffect("g", ("1",), X, torch.zeros(n, dtype=torch.long), 1)
    data, model = MixedData(X, (e,), y), SoftplusGLMM(family)
    params = {"coef": torch.zeros(1, dtype=F64), "g_log_sd": torch.zeros(1, dtype=F64)}
    if family == "negative_binomial":
        params["concentration"] = torch.tensor(0.7, dtype=F64)
    jet = RowJets(model, params, data, eta)

    e_ = eta.clone().requires_grad_(True)
    u_ = torch.full((n,), 0.7, dtype=F64, requires_grad=True)
    ell = _reference_rows(family, y, e_, u_)
    d1, = torch.autograd.grad(ell.sum(), e_, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), e_, create_graph=True)
    d3, = torch.autograd.grad(d2.sum(), e_, retain_graph=True)
    np.testing.assert_allclose(jet.ell.numpy(), ell.detach().numpy(), rtol=1e-8)
    np.testing.assert_allclose(jet.d1.numpy(), d1.detach().numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(jet.d2.numpy(), d2.detach().numpy(), rtol=1e-8, atol=1e-10)
    # central differences of the closed-form d2: about 1e-9 relative
    np.testing.assert_allclose(jet.d3.numpy(), d3.numpy(), rtol=1e-7, atol=1e-9)
    if family == "poisson":
        assert jet.l_rows == [] and jet.d2_rows == []
        return
    lu, = torch.autograd.grad(ell.sum(), u_, retain_graph=True)
    d1u, = torch.autograd.grad(d1.sum(), u_, retain_graph=True)
    d2u, = torch.autograd.grad(d2.sum(), u_)
    np.testing.assert_allclose(jet.l_rows[0].numpy(), lu.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(jet.d1_rows[0].numpy(), d1u.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(jet.d2_rows[0].numpy(), d2u.numpy(), rtol=1e-7, atol=1e-9)
    # the value is scipy's
    r, mu = math.log1p(math.exp(0.7)), np.logaddexp(0.0, eta.numpy())
    np.testing.assert_allclose(jet.ell.numpy(), stats.nbinom.logpmf(y.numpy(), r, r / (r + mu)),
                               rtol=1e-10)


def test_zero_inflated_gradient_through_the_mode_matches_finite_differences():
    # a zero-inflated law has no closed-form rows: the jets come from autograd, with the
    # gate's intercept as a row parameter
    rng = np.random.default_rng(3)
    data = _data(rng, "zero_inflated_poisson", 150, 12, (1.5, 0.5), 0.7,
                 shapes=None)
    model = SoftplusGLMM("zero_inflated_poisson")
    assert list(model.layout(data)) == ["coef", "gate_intercept", "g_log_sd"]
    theta = torch.tensor([1.4, 0.6, -1.2, math.log(0.6)], dtype=F64)
    assert_gradient_matches_differences(model, data, theta)


def test_moment_sds_land_near_a_known_truth_and_the_fit_is_the_same():
    rng = np.random.default_rng(4)
    sd = 0.8
    data = _data(rng, "negative_binomial", 1200, 60, (2.0, 0.5), sd,
                 shapes={"concentration": 4.0})
    model = SoftplusGLMM("negative_binomial")
    plain = start_theta(model, data).numpy()
    start = moment_start(model, data, plain)
    params = model.unpack(torch.tensor(start), data)
    moment_sd = float(params["g_log_sd"].exp())
    assert MOMENT_SD_RANGE[0] <= moment_sd <= MOMENT_SD_RANGE[1]
    assert abs(math.log(moment_sd / sd)) < math.log(1.5)
    assert abs(float(params["coef"][1]) - 0.5) < 0.2
    # the default (moment) start and a given plain start reach the same estimate
    a = fit_mixed_ml(model, data, compute_cov=False)
    b = fit_mixed_ml(model, data, theta0=torch.tensor(plain), compute_cov=False)
    assert a.converged and b.converged
    assert abs(a.log_lik - b.log_lik) < 1e-6
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-3)
    assert a.n_iter <= b.n_iter
