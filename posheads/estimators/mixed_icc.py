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

Effects of a zero part (its logits ``gate``; :attr:`RandomEffect.part`) change the
expected count too: then ``W`` is a pair, ``(W_eta, W_gate)``, independent, and every
expectation above runs over both; ``ICC_k`` of a zero-part factor is the correlation of
two counts that share its level, through the zero part.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MAX_ROWS", "N_NODES", "N_NODES_2D", "count_scale_variances"]

#: Rows of the fit the variances are averaged over (evenly spaced when more).
MAX_ROWS = 300
#: Gauss-Hermite nodes per dimension.
N_NODES = 20
#: Nodes per dimension with a zero part's effects (a three-dimensional grid for ``V_k``).
N_NODES_2D = 8


def _family_moments(model, eta, params, exposure, parts=None, X_zero=None):
    """The family's mean and variance at ``eta`` (any shape ending in the rows; ``parts``
    the per-row logits of a zero part, broadcasting with ``eta``; a part it leaves out
    takes its fixed logits on ``X_zero``)."""
    from posheads.models.mixed import MixedData

    data = MixedData(eta.new_zeros(eta.shape[-1], 0), (), exposure=exposure, X_zero=X_zero)
    law = model.distribution(eta, params, data, parts)
    try:
        var = law.variance
    except NotImplementedError:  # a law without a closed-form variance
        var = torch.full_like(law.mean, float("nan"))
    return law.mean, var


def count_scale_variances(model, eta, s2, params, exposure=None, n_nodes=N_NODES,
                          parts=None, X_zero=None):
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
    parts : list of (str or None), optional
        Per factor, the family's part whose logits its effect enters (``None``: ``eta``,
        the default for all). With a zero part's factors the expectations run over both
        predictors (independent effects; a tensor product of nodes, at most
        :data:`N_NODES_2D` per axis), the part's logits centred at its fixed logits.
    X_zero : Tensor, shape ``(n, p_zero)``, optional
        The zero part's covariates of the rows (``params`` then holds ``{part}_coef``,
        shaped ``(S, p_zero)``).

    Returns
    -------
    (Tensor, Tensor, Tensor)
        ``V`` of shape ``(K, S)`` (one row per factor), ``V_u`` and ``E_res`` of shape
        ``(S,)``, each averaged over the rows.
    """
    parts = list(parts) if parts is not None else [None] * len(s2)
    zero = next((p for p in parts if p is not None), None)
    if zero is None:
        return _one_predictor(model, eta, s2, params, exposure, n_nodes, X_zero)
    from posheads.models.mixed import part_logits

    x, w = _nodes(min(n_nodes, N_NODES_2D), eta.dtype)
    gate = part_logits(params[f"{zero}_intercept"], params.get(f"{zero}_coef"),
                       X_zero).expand_as(eta)
    total = [sum((v for v, p in zip(s2, parts, strict=True) if (p is None) == (c == 0)),
                 torch.zeros_like(eta)) for c in (0, 1)]

    def axis(var, dim):
        """Nodes scaled by ``sqrt(var)`` along ``dim`` of a 5-d grid and their weights;
        one node where ``var`` is 0 throughout (a degenerate axis)."""
        if not bool((var > 0).any()):
            return var.new_zeros(()), w.new_ones(1)
        shape = [1] * 5
        shape[dim] = -1
        return x.view(shape) * var.sqrt(), w

    out, v_u, e_res = [], [], []
    step = max(1, 2_000_000 // (len(x) ** 3 * eta.shape[1]))
    for S in torch.arange(eta.shape[0]).split(step):
        p_s = {k: v[S] for k, v in params.items()}

        def moments(e, g, p_s=p_s):
            return _family_moments(model, e, p_s, exposure, {zero: g})

        (e0, g0), t = (eta[S], gate[S]), [total[0][S], total[1][S]]
        (da, wa), (db, wb) = axis(t[0], 1), axis(t[1], 2)  # (1, a, b, S, n)
        mu, var = moments(e0 + da, g0 + db)
        grid = (len(wa), len(wb), *e0.shape)
        mu, var = torch.broadcast_to(mu, (1, *grid))[0], torch.broadcast_to(var, (1, *grid))[0]
        ww = torch.outer(wa, wb)
        mean = torch.einsum("ab,absn->sn", ww, mu)
        v_u.append((torch.einsum("ab,absn->sn", ww, mu**2) - mean**2).clamp_min(0).mean(-1))
        e_res.append(torch.einsum("ab,absn->sn", ww, var).mean(-1))
        rows = []
        for s2_k, p in zip(s2, parts, strict=True):
            c = int(p is not None)
            own = axis(s2_k[S], 0)  # outer: w_k on its own predictor
            rest = axis((t[c] - s2_k[S]).clamp_min(0), 1)  # the rest of that predictor
            other = axis(t[1 - c], 2)  # all of the other predictor
            shift = own[0] + rest[0]
            mu_k, _ = (moments(e0 + shift, g0 + other[0]) if c == 0
                       else moments(e0 + other[0], g0 + shift))
            mu_k = mu_k.expand(len(own[1]), len(rest[1]), len(other[1]), *mu_k.shape[-2:])
            cond = torch.einsum("bc,abcsn->asn", torch.outer(rest[1], other[1]), mu_k)
            v_k = (torch.einsum("a,asn->sn", own[1], cond**2)
                   - torch.einsum("a,asn->sn", own[1], cond)**2)
            rows.append(v_k.clamp_min(0).mean(-1))
        out.append(torch.stack(rows))
    return torch.cat(out, dim=1), torch.cat(v_u), torch.cat(e_res)


def _nodes(n_nodes, dtype):
    """Gauss-Hermite nodes for ``N(0, 1)`` and their weights (summing to 1)."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    return (torch.as_tensor(x, dtype=dtype) * math.sqrt(2.0),
            torch.as_tensor(w / math.sqrt(math.pi), dtype=dtype))


def _one_predictor(model, eta, s2, params, exposure, n_nodes, X_zero):
    """:func:`count_scale_variances` when every factor enters ``eta``."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    x = torch.as_tensor(x, dtype=eta.dtype) * math.sqrt(2.0)
    w = torch.as_tensor(w / math.sqrt(math.pi), dtype=eta.dtype)
    total = torch.stack(s2).sum(0)  # (S, n)
    nodes = eta + x.view(-1, 1, 1) * total.sqrt()  # (J, S, n)
    mu, var = _family_moments(model, nodes, params, exposure, X_zero=X_zero)
    mean = torch.einsum("j,jsn->sn", w, mu)
    v_u = torch.einsum("j,jsn->sn", w, mu**2) - mean**2
    e_res = torch.einsum("j,jsn->sn", w, var)
    out = []
    for s2_k in s2:
        rest = (total - s2_k).clamp_min(0)
        grid = (eta + x.view(-1, 1, 1, 1) * s2_k.sqrt()  # outer: w_k
                + x.view(1, -1, 1, 1) * rest.sqrt())  # inner: the other factors
        mu_k, _ = _family_moments(model, grid, params, exposure, X_zero=X_zero)
        cond = torch.einsum("b,absn->asn", w, mu_k)  # E[mu | w_k] at the outer nodes
        v_k = torch.einsum("a,asn->sn", w, cond**2) - torch.einsum("a,asn->sn", w, cond)**2
        out.append(v_k.clamp_min(0).mean(-1))
    return torch.stack(out), v_u.clamp_min(0).mean(-1), e_res.mean(-1)
