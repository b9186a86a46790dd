"""References shared by the tests of a GLMM's zero part: the zero-inflated Poisson's log
mass in NumPy, and the check of a flat target's closed-form potential against autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special


def softplus(x):
    """``log(1 + exp(x))`` in NumPy."""
    return np.logaddexp(0.0, x)


def zip_logpmf(y, mu, gate):
    """Zero-inflated Poisson with inflation probability ``sigmoid(gate)``, in NumPy."""
    log_pi, log_1m = -np.logaddexp(0.0, -gate), -np.logaddexp(0.0, gate)
    pois = y * np.log(mu) - mu - special.gammaln(y + 1)
    return np.where(y == 0, np.logaddexp(log_pi, log_1m - mu), log_1m + pois)


def potential_matches_autograd(target, scales=(0.1, 0.6, 1.5), seed=1):
    """Assert the target's closed-form potential and gradient equal minus its log joint
    and autograd's gradient (1e-10) at random points of each scale; yields each point
    and its gradient for further checks."""
    gen = torch.Generator().manual_seed(seed)
    for scale in scales:
        theta = scale * torch.randn(target.dim, generator=gen, dtype=torch.float64)
        U, g = target.potential_and_grad(theta)
        th = theta.clone().requires_grad_(True)
        ref = -target.log_joint(th)
        (g_ref,) = torch.autograd.grad(ref, th)
        assert float(U) == pytest.approx(float(ref.detach()), rel=1e-10)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10 * float(g_ref.abs().max()))
        yield theta, g
