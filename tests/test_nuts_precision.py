"""NUTS with the passes over the data in float32 (``data_precision``) and the objective
copy it runs on (:meth:`GLMLoss.in_dtype`, a column-major ``[1, X]`` design)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posheads.inference.nuts import (
    NUTS,
    fit_nuts,
    laplace_metric,
    single_precision_potential,
    whitened_evaluate,
)
from posheads.inference.whitening import Whitening
from posheads.models.glm import GLMData, SoftplusGLM
from posheads.models.glm_loss import GLMLoss

F64 = torch.float64


def _data(n, p, likelihood="poisson", seed=0, dtype=F64, offset=False, weights=False):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=gen, dtype=F64)
    coef = torch.linspace(-0.4, 0.4, p, dtype=F64)
    mu = torch.nn.functional.softplus(0.8 + X @ coef)
    if likelihood == "poisson":
        y = torch.poisson(mu, generator=gen)
    else:  # NB2 with concentration 3, as a gamma mixture
        rate = torch._standard_gamma(torch.full((n,), 3.0, dtype=F64), generator=gen) / 3.0
        y = torch.poisson(mu * rate, generator=gen)
    o = 0.1 * torch.randn(n, generator=gen, dtype=F64) if offset else None
    w = torch.rand(n, generator=gen, dtype=F64) + 0.5 if weights else None
    return GLMData(X=X.to(dtype), y=y.to(dtype), offset=None if o is None else o.to(dtype),
                   weights=None if w is None else w.to(dtype)), coef


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial"])
def test_in_dtype_float64_copy_matches_autograd(likelihood):
    """A float32 data set's float64 copy (the forced column-major [1, X] design): the
    potential and gradient are the float64 model's log joint and its autograd gradient."""
    data32, _ = _data(300, 4, likelihood, dtype=torch.float32, offset=True, weights=True)
    model = SoftplusGLM(likelihood, coef_scale=0.7)
    loss = GLMLoss(model, data32, jacobian=True, normalize=False).in_dtype(F64)
    assert loss.dtype == F64 and "eta" in loss.augmented  # the forced [1, X]
    data64 = GLMData(X=data32.X.to(F64), y=data32.y.to(F64), offset=data32.offset.to(F64),
                     weights=data32.weights.to(F64))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        theta = (0.3 * torch.randn(loss.dim, generator=gen, dtype=F64)).requires_grad_()
        lp = model.log_joint(theta, data64, jacobian=True)
        (grad,) = torch.autograd.grad(lp, theta)
        U, dU = loss.potential_and_grad(theta.detach())
        torch.testing.assert_close(U, -lp.detach(), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(dU, -grad, rtol=1e-10, atol=1e-10)


def test_in_dtype_same_dtype_is_self():
    data, _ = _data(50, 2)
    loss = GLMLoss(SoftplusGLM("poisson"), data)
    assert loss.in_dtype(F64) is loss


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial"])
def test_single_precision_potential_close_to_double(likelihood):
    """float32 rows: U within float32 rounding of the float64 potential (exact at the
    reference point), the gradient to about 1e-5 relative."""
    data, _ = _data(20_000, 5, likelihood)
    target = SoftplusGLM(likelihood).target(data)
    theta_hat, cov = laplace_metric(target)
    potential = single_precision_potential(target, theta_hat)
    u_ref, _ = target.potential_and_grad(theta_hat)
    u0, _ = potential(theta_hat)
    assert isinstance(u0, float) and abs(u0 - float(u_ref)) < 1e-9
    L = torch.linalg.cholesky(cov)
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        theta = theta_hat + L @ torch.randn(theta_hat.shape, generator=gen, dtype=F64)
        u64, g64 = target.potential_and_grad(theta)
        u32, g32 = potential(theta)
        assert g32.dtype == F64
        assert abs(u32 - float(u64)) < 0.05  # |U| is about 3e4 here
        assert float((g32 - g64).norm() / g64.norm()) < 1e-4


def test_single_precision_needs_float64_dense_closed_form():
    data, _ = _data(100, 2, dtype=torch.float32)
    target = SoftplusGLM("poisson").target(data)
    assert single_precision_potential(target, torch.zeros(3)) is None  # already float32
    data64, _ = _data(100, 2)
    sparse = GLMData(X=data64.X.to_sparse(), y=data64.y)
    target = SoftplusGLM("poisson").target(sparse)
    assert single_precision_potential(target, torch.zeros(3, dtype=F64)) is None


def test_whitened_evaluate_uses_the_given_potential():
    data, _ = _data(200, 3)
    target = SoftplusGLM("poisson").target(data)
    theta_hat, cov = laplace_metric(target)
    w = Whitening(theta_hat, cov, dense=True)
    z = torch.full((4,), 0.3, dtype=F64)
    u, g = whitened_evaluate(target, w)(z)
    u1, g1 = whitened_evaluate(target, w, target.potential_and_grad)(z)
    assert u == u1 and torch.equal(g, g1)
    # the chain rule through the whitening: dU/dz = L.T dU/dtheta
    u2, g2 = target.potential_and_grad(w.to_theta(z))
    assert abs(u - float(u2)) < 1e-9
    torch.testing.assert_close(g, w.scale.T @ g2)


def test_single_precision_chain_recovers_the_posterior():
    """The float32-row chain and the float64 chain sample the same posterior: their
    means agree within a few Monte Carlo standard errors (and both near the truth)."""
    data, coef = _data(5_000, 3)
    model = SoftplusGLM("poisson", intercept_loc=0.0, intercept_scale=5.0, coef_scale=1.0)
    kw = {"num_samples": 600, "num_warmup": 150, "seed": 11, "verbose": 0}
    single = fit_nuts(model, data, data_precision="single", **kw)
    double = fit_nuts(model, data, data_precision="double", **kw)
    a = single.samples["coef"].reshape(-1, 3).numpy()
    b = double.samples["coef"].reshape(-1, 3).numpy()
    sd = b.std(0)
    # each chain's ESS is at least ~500 here: a mean's error is < sd / 20
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 5 * sd * np.sqrt(2.0 / 500))
    assert np.all(np.abs(b.mean(0) - coef.numpy()) < 4 * sd)
    assert np.allclose(a.std(0), sd, rtol=0.15)
    assert not bool(single.sample_stats["diverging"].any())


def test_data_precision_is_validated():
    with pytest.raises(ValueError, match="data_precision"):
        NUTS(data_precision="half")
