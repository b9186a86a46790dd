"""Intraclass variation of a mixed model on the count scale, by Gauss-Hermite quadrature.

Under the softplus link the group effects do not act additively on the counts, so the
variance components on the ``eta`` scale do not say how much of the counts' variation
the groups explain. For a row with fixed part ``eta`` and, per factor ``k``, the effect
``w_k = z_k' u_k ~ N(0, s_k^2)`` (``s_k^2 = z_k' Sigma_k z_k``, independent over factors),
with ``mu(.)`` and ``v(.)`` the family's mean and variance at a linear predictor:

* ``V_k = Var_{w_k}( E[mu(eta + W) | w_k] )``, the variance of the expected count
  explained by factor ``k`` (``W = sum_k w_k``): a two-dimensional quadrature, over
  ``w_k`` outside and the other factors' sum inside;
* ``V_u = Var_W( mu(eta + W) )``, all factors together, and
  ``E_res = E_W( v(eta + W) )``, the family's own variance;

each averaged over the rows of the fit (at most :data:`MAX_ROWS`, evenly spaced). The
**intraclass correlation on the count scale** of factor ``k`` is
``ICC_k = V_k / (V_u + E_res)``: the correlation of two counts that share factor ``k``'s
level and nothing else, at the same covariates. With several factors the **share** of
the expected count's variance, ``V_k / V_u``, is reported too (the first-order Sobol
index of the factor; shares sum to below 1 when the factors interact through the
nonlinear link).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MAX_ROWS", "N_NODES", "count_scale_variances"]

#: Rows of the fit the variances are averaged over (evenly spaced when more).
MAX_ROWS = 300
#: Gauss-Hermite nodes per dimension.
N_NODES = 20


def _family_moments(model, eta, params, exposure):
    """The family's mean and variance at ``eta`` (any shape ending in the rows)."""
    from posheads.models.mixed import MixedData

    data = MixedData(eta.new_zeros(eta.shape[-1], 0), (), exposure=exposure)
    law = model.distribution(eta, params, data)
    try:
        var = law.variance
    except NotImplementedError:  # a law without a closed-form variance
        var = torch.full_like(law.mean, float("nan"))
    return law.mean, var


def count_scale_variances(model, eta, s2, params, exposure=None, n_nodes=N_NODES):
    """``V_k``, ``V_u`` and ``E_res`` of the module docstring, for each draw.

    Parameters
    ----------
    model : SoftplusGLMM
    eta : Tensor, shape ``(S, n)``
        The fixed part of each row under each of ``S`` parameter draws.
    s2 : list of Tensor, shapes ``(S, n)``
        Per factor, the variance ``z' Sigma z`` of its effect on each row.
    params : dict
        The family's parameters per draw, shaped ``(S, 1)`` (see
        :func:`posheads.inference.mixed_bayes.draw_params`).
    exposure : Tensor, shape ``(n,)``, optional
    n_nodes : int

    Returns
    -------
    (Tensor, Tensor, Tensor)
        ``V`` of shape ``(K, S)`` (one row per factor), ``V_u`` and ``E_res`` of shape
        ``(S,)``, each averaged over the rows.
    """
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    x = torch.as_tensor(x, dtype=eta.dtype) * math.sqrt(2.0)
    w = torch.as_tensor(w / math.sqrt(math.pi), dtype=eta.dtype)
    total = torch.stack(s2).sum(0)  # (S, n)
    nodes = eta + x.view(-1, 1, 1) * total.sqrt()  # (J, S, n)
    mu, var = _family_moments(model, nodes, params, exposure)
    mean = torch.einsum("j,jsn->sn", w, mu)
    v_u = torch.einsum("j,jsn->sn", w, mu**2) - mean**2
    e_res = torch.einsum("j,jsn->sn", w, var)
    out = []
    for s2_k in s2:
        rest = (total - s2_k).clamp_min(0)
        grid = (eta + x.view(-1, 1, 1, 1) * s2_k.sqrt()  # outer: w_k
                + x.view(1, -1, 1, 1) * rest.sqrt())  # inner: the other factors
        mu_k, _ = _family_moments(model, grid, params, exposure)
        cond = torch.einsum("b,absn->asn", w, mu_k)  # E[mu | w_k] at the outer nodes
        v_k = torch.einsum("a,asn->sn", w, cond**2) - torch.einsum("a,asn->sn", w, cond)**2
        out.append(v_k.clamp_min(0).mean(-1))
    return torch.stack(out), v_u.clamp_min(0).mean(-1), e_res.mean(-1)
