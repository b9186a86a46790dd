"""The Laplace marginal log-likelihood of a GLMM and the check of its gradient through the
inner solve against central differences, shared by the mixed-model tests."""

from __future__ import annotations

import numpy as np
import torch

from posheads.inference.mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik


def laplace_value(model, data, theta):
    """The Laplace marginal log-likelihood at ``theta`` (a 0-d tensor, differentiable in
    ``theta``), after the inner Newton solve of the group effects."""
    structure = EffectsStructure(data.effects)
    z, ok = inner_mode(model, theta, data, structure)
    assert ok
    return marginal_log_lik(model, theta, data, structure, z)


def assert_gradient_matches_differences(model, data, theta, h=1e-5, rtol=1e-5, atol=1e-6):
    """The autograd gradient of :func:`laplace_value` equals its central differences."""
    th = theta.clone().requires_grad_(True)
    grad, = torch.autograd.grad(laplace_value(model, data, th), th)
    fd = [(float(laplace_value(model, data, theta + h * e))
           - float(laplace_value(model, data, theta - h * e))) / (2 * h)
          for e in torch.eye(len(theta), dtype=theta.dtype)]
    np.testing.assert_allclose(grad.numpy(), fd, rtol=rtol, atol=atol)
