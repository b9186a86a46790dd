"""Per-row value and derivatives of the softplus-link negative binomial, in closed form.

With ``s = softplus_beta(eta)``, ``mu = t s``, ``r = softplus(u)`` and ``p = mu / (r + mu)``
(MATH.md, NB2), the row log-likelihood without its constant ``-lgamma(y + 1)`` is::

    l = lgamma(y + r) - lgamma(r) + r log(1 - p) + y log p

and, with ``sigma = sigmoid(beta eta)``, ``rho = sigma / s = d log mu / d eta`` and
``sigma_u = sigmoid(u) = dr/du``::

    dl/deta    = rho (y - (y + r) p)
    dl/dr      = psi(y + r) - psi(r) + log(1 - p) + p - y (1 - p) / r
    -d2l/deta2 = rho^2 (y - (y + r) p^2) - beta (1 - sigma) dl/deta
    d2l/deta dr = rho p (y (1 - p) / r - p)
    d2l/dr2    = psi'(y + r) - psi'(r) + p / r - (p - y (1 - p) / r) (1 - p) / r

(``(y - mu) / (r + mu) = y (1 - p) / r - p`` and ``1 / (r + mu) = (1 - p) / r`` keep
``mu`` itself out of every expression, so nothing overflows where ``mu`` is large.)
The ``u`` derivatives follow by the chain rule with ``dr/du = sigma_u`` and
``d2r/du2 = sigma_u (1 - sigma_u)``. One pass gives the value and the gradient, where
autograd through the fused log-probability took a forward and a backward pass per call.

The gamma-function terms depend on a row only through its count ``y``, and count data
have few distinct counts: with :func:`count_levels` they are evaluated once per distinct
count and gathered (``lgamma`` and ``digamma`` cost ten times a multiplication each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posheads import ops

__all__ = ["count_levels", "nb_pieces", "nb_rows", "nb_value"]


def count_levels(y, w):
    """The distinct counts of ``y`` when they are few, else None.

    Returns
    -------
    (levels, index, weight) : (Tensor (k,), Tensor (n,), Tensor (k,)) or None
        ``y == levels[index]`` and ``weight[j] = sum(w[index == j])``.
    """
    levels, index = torch.unique(y, return_inverse=True)
    if 8 * levels.numel() > y.numel():
        return None
    ones = torch.ones_like(y) if w is None else w
    weight = torch.zeros_like(levels).index_add_(0, index, ones)
    return levels, index, weight


def _by_count(fn, y, r, levels):
    """``fn(y + r) - fn(r)`` per row, through the distinct counts where there are few."""
    if levels is None:
        return fn(y + r) - fn(r)
    return (fn(levels[0] + r) - fn(r))[levels[1]]


def nb_pieces(eta, u, y, t, beta, switch) -> dict:
    """Shared per-row quantities at ``(eta, u)``.

    Parameters
    ----------
    eta : Tensor, shape (n,)
    u : Tensor, shape ()
        Unconstrained concentration, ``r = softplus(u)``.
    y : Tensor, shape (n,)
    t : Tensor, shape (n,) or None
        Exposure.
    beta, switch : float
        Softness of the link and its linear switch (:func:`posheads.ops.linear_switch`).

    Returns
    -------
    dict
        ``log_s, rho, sig`` (n,), ``r, sig_u`` (scalars), ``logit, p`` (n,).
    """
    with torch.no_grad():
        _, log_s, sig, rho = ops._backward_pieces(eta, beta, switch)
        r = ops.softplus(u)
        logit = log_s - torch.log(r)
        if t is not None:
            logit = logit + torch.log(t)
        return {"log_s": log_s, "sig": sig, "rho": rho, "r": r, "sig_u": torch.sigmoid(u),
                "logit": logit, "p": torch.sigmoid(logit)}


def nb_value(k: dict, y, w, levels=None) -> torch.Tensor:
    """``-sum w l`` (a 0-d tensor) from :func:`nb_pieces`; ``w`` may be None."""
    r, d = k["r"], k["logit"]
    # r log(1 - p) + y log p, with log p = -softplus(-d) and log(1 - p) = -softplus(d)
    ll = r * F.softplus(d) + y * F.softplus(-d)
    total = ll.sum() if w is None else torch.dot(w, ll)
    if levels is None:
        g = torch.lgamma(y + r) - torch.lgamma(r)
        return total - (g.sum() if w is None else torch.dot(w, g))
    return total - torch.dot(levels[2], torch.lgamma(levels[0] + r) - torch.lgamma(r))


def nb_rows(k: dict, y, w, beta, need_h, levels=None):
    """Weighted per-row ``dl/d(eta, u)`` and, with ``need_h``, the negated second derivatives.

    Returns
    -------
    a : dict
        ``{"eta": (n,), "u": (n,)}``.
    h : dict or None
        ``{("eta", "eta"), ("eta", "u"), ("u", "u")}`` -> (n,), the layout of
        :meth:`GLMLoss._generic_rows`.
    """
    r, p, rho, sig, su = k["r"], k["p"], k["rho"], k["sig"], k["sig_u"]
    q = 1.0 - p
    yq_r = y * q / r
    yr = y + r
    a_eta = rho * (y - yr * p)
    d_r = _by_count(torch.digamma, y, r, levels) - F.softplus(k["logit"]) + p - yq_r
    a = {"eta": a_eta, "u": su * d_r}
    h = None
    if need_h:
        h_ee = rho * rho * (y - yr * p * p) - (beta * (1.0 - sig)) * a_eta
        h_eu = -(su * rho * p * (yq_r - p))
        d_rr = (_by_count(_trigamma, y, r, levels) + p / r
                - (p - yq_r) * q / r)
        h_uu = -(d_rr * su * su + d_r * (su * (1.0 - su)))
        h = {("eta", "eta"): h_ee, ("eta", "u"): h_eu, ("u", "u"): h_uu}
    if w is not None:
        a = {key: v * w for key, v in a.items()}
        if h is not None:
            h = {key: v * w for key, v in h.items()}
    return a, h


def _trigamma(x):
    return torch.polygamma(1, x)
