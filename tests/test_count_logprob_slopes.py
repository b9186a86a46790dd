"""The fused count log-likelihoods keep their derivatives from the forward pass.

When only ``eta`` (and, for the NB2, the concentration ``r``) requires grad, the eager
forward of :func:`posheads.ops.poisson_softplus_log_prob` and
:func:`posheads.ops.negative_binomial_softplus_log_prob` computes the derivative from its
own softplus and the backward multiplies it by the incoming gradient. Checked here:

* values against SciPy's ``poisson.logpmf`` / ``nbinom.logpmf`` and ``gammaln`` (the mean
  from NumPy's ``logaddexp``, an independent softplus);
* gradients against the closed forms of ``docs/count-likelihoods.md`` written in NumPy,
  and against the guarded backward that runs when the counts require grad too;
* :class:`posheads.heads.Softplus` against ``torch.nn.functional.softplus``, bit for bit
  in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import special, stats

from posheads import heads, ops


def _data(n=400, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    eta = rng.normal(0.0, 4.0, n)
    eta[:4] = [-30.0, 25.0, 0.0, -8.0]
    y = rng.poisson(3.0, n).astype(float)
    return torch.tensor(eta, dtype=dtype), torch.tensor(y, dtype=dtype), eta, y


def _softplus(x, beta):
    return np.logaddexp(0.0, beta * x) / beta


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("with_exposure", [False, True])
def test_poisson_forward_slope(beta, with_exposure):
    eta_t, y_t, eta, y = _data()
    t = np.linspace(0.5, 2.0, eta.size) if with_exposure else np.ones_like(eta)
    t_t = torch.tensor(t) if with_exposure else None
    e = eta_t.clone().requires_grad_()
    out = ops.poisson_softplus_log_prob(e, y_t, beta=beta, exposure=t_t)
    out.backward(torch.ones_like(out))
    s = _softplus(eta, beta)
    np.testing.assert_allclose(out.detach().numpy(), stats.poisson.logpmf(y, t * s),
                               rtol=1e-12, atol=1e-12)
    sig = special.expit(beta * eta)
    np.testing.assert_allclose(e.grad.numpy(), sig * (y / s - t), rtol=1e-11, atol=1e-14)
    # the guarded backward (the counts require grad too) gives the same gradient
    e2, y2 = eta_t.clone().requires_grad_(), y_t.clone().requires_grad_()
    ops.poisson_softplus_log_prob(e2, y2, beta=beta, exposure=t_t).sum().backward()
    torch.testing.assert_close(e.grad, e2.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("learn_r", [False, True])
def test_negative_binomial_forward_slopes(beta, learn_r):
    eta_t, y_t, eta, y = _data(seed=1)
    r = np.linspace(0.2, 6.0, eta.size)
    e = eta_t.clone().requires_grad_()
    r_t = torch.tensor(r).requires_grad_(learn_r)
    out = ops.negative_binomial_softplus_log_prob(e, y_t, r_t, beta=beta)
    out.backward(torch.ones_like(out))
    mu = _softplus(eta, beta)
    # SciPy's logpmf underflows to -inf for tinier means and loses digits to cancellation
    # at large ones (3e-10 seen); the gammaln form below is the tight reference
    ok = mu > 1e-8
    np.testing.assert_allclose(out.detach().numpy()[ok],
                               stats.nbinom.logpmf(y, r, r / (r + mu))[ok], rtol=1e-8)
    ref = (special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
           - r * np.log1p(mu / r) + y * (np.log(mu) - np.log(r + mu)))
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    rho = special.expit(beta * eta) / mu  # d log mu / d eta
    np.testing.assert_allclose(e.grad.numpy(), rho * r * (y - mu) / (r + mu),
                               rtol=1e-10, atol=1e-14)
    if learn_r:
        dr = (special.digamma(y + r) - special.digamma(r) + np.log(r / (r + mu))
              + (mu - y) / (r + mu))
        np.testing.assert_allclose(r_t.grad.numpy(), dr, rtol=1e-9, atol=1e-12)
    e2, y2 = eta_t.clone().requires_grad_(), y_t.clone().requires_grad_()
    r2 = torch.tensor(r).requires_grad_(learn_r)
    ops.negative_binomial_softplus_log_prob(e2, y2, r2, beta=beta).sum().backward()
    torch.testing.assert_close(e.grad, e2.grad, rtol=1e-12, atol=1e-15)
    if learn_r:
        torch.testing.assert_close(r_t.grad, r2.grad, rtol=1e-12, atol=1e-15)


def test_float32_slopes_match_guarded_backward():
    # float32: a row whose softplus underflows takes the guarded path in both passes
    for first in (-30.0, -200.0):
        eta_t, y_t, _, _ = _data(seed=2, dtype=torch.float32)
        eta_t[0] = first
        grads = []
        for y_grad in (False, True):
            e, y = eta_t.clone().requires_grad_(), y_t.clone().requires_grad_(y_grad)
            u = torch.full_like(eta_t, 0.3).requires_grad_()
            (ops.poisson_softplus_log_prob(e, y).sum()
             + ops.negative_binomial_softplus_log_prob(e, y, F.softplus(u)).sum()).backward()
            assert torch.isfinite(e.grad).all() and torch.isfinite(u.grad).all()
            grads.append((e.grad, u.grad))
        torch.testing.assert_close(grads[0], grads[1], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_module_matches_torch(dtype):
    x = torch.linspace(-40.0, 40.0, 2001, dtype=dtype)
    torch.testing.assert_close(heads.Softplus()(x), ops.softplus(x), rtol=0, atol=0)
    torch.testing.assert_close(heads.Softplus(beta=2.0, low=0.5)(x),
                               ops.softplus(x, 2.0) + 0.5, rtol=0, atol=0)
    if dtype == torch.float32:
        assert torch.equal(heads.Softplus()(x), F.softplus(x))
