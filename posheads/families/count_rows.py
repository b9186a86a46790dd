"""Closed-form per-row terms of the Poisson and NB2 families (``docs/count-likelihoods.md``).

With ``s = softplus_beta(eta)``, ``sigma = sigmoid(beta eta)`` and
``rho = sigma / s = d log s / d eta``, the Poisson row has

    dl/deta    = y rho - t sigma
    -d2l/deta2 = y rho^2 - beta (1 - sigma) dl/deta          (>= 0: -l is convex in eta)

and the NB2 row, with ``r = softplus(u)``, ``p = mu / (r + mu)`` and ``sigma_u = dr/du``,

    l          = lgamma(y + r) - lgamma(r) - lgamma(y + 1) + r log(1 - p) + y log p
    dl/deta    = rho (y - (y + r) p)
    dl/dr      = psi(y + r) - psi(r) + log(1 - p) + p - y (1 - p) / r
    -d2l/deta2 = rho^2 (y - (y + r) p^2) - beta (1 - sigma) dl/deta
    d2l/deta dr = rho p (y (1 - p) / r - p)
    d2l/dr2    = psi'(y + r) - psi'(r) + p / r - (p - y (1 - p) / r) (1 - p) / r

(``(y - mu) / (r + mu) = y (1 - p) / r - p`` and ``1 / (r + mu) = (1 - p) / r`` keep
``mu`` out of every expression, so nothing overflows where ``mu`` is large.) One pass gives
the value and the gradient, where autograd through the fused log-probability took a
forward and a backward pass per call.

The NB's gamma-function terms depend on a row only through its count, and count data have
few distinct counts: with :func:`count_levels` they are evaluated once per distinct count
and gathered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from .rows import RowTerms

__all__ = ["NegativeBinomialRows", "PoissonRows", "count_levels", "log_factorial",
           "negative_binomial_derivatives", "negative_binomial_pieces"]


def log_factorial(y: torch.Tensor) -> torch.Tensor:
    """``lgamma(y + 1)`` per row: from a table of ``0..max(y)`` when ``y`` holds whole
    counts no larger than its length (count data repeat a few values, and ``lgamma``
    costs many multiplications), else directly."""
    low, top = (float(v) for v in torch.aminmax(y)) if y.numel() else (0.0, 0.0)
    if low >= 0 and top < y.numel() and torch.equal(y, torch.floor(y)):
        table = torch.lgamma(torch.arange(1.0, top + 2.0, dtype=y.dtype, device=y.device))
        return table.index_select(0, y.long())
    return torch.lgamma(y + 1.0)


class PoissonRows(RowTerms):
    """Poisson rows in closed form; ``value`` leaves out ``sum w (lgamma(y + 1) - y log t)``."""

    closed_form = True
    convex = True

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        w, t = weights, exposure
        self.wy = y if w is None else w * y
        self.wt = t if w is None else (w if t is None else w * t)
        self._const = None

    def value(self, P, u=None):
        """``sum w (t s - y log s)`` at the predictors ``P`` (a tensor; no sync).

        Plain ``softplus`` and ``log`` first; where that is not finite (softplus
        underflowed to 0, at ``beta * eta < -745`` in float64) :meth:`fallback` asks for
        the guarded branches of :mod:`posheads.ops`, which keep ``log s`` finite.
        """
        if "_nll" in P:
            return P["_nll"]
        eta, beta = P["eta"], self.beta
        if "_s" in P:  # a retry: the guarded branches
            s, log_s, sig, rho = ops.softplus_branches(eta, beta, self.switch)
            P["_sig"], P["_rho"] = sig, rho
        else:
            s = F.softplus(eta, beta=beta, threshold=self.switch)
            log_s = torch.log(s)
        nll = (s.sum() if self.wt is None else torch.dot(self.wt, s)) - torch.dot(self.wy, log_s)
        P["_s"], P["_nll"] = s, nll
        return nll

    def fallback(self, P) -> bool:
        if "_rho" in P:  # already guarded
            return False
        P.pop("_nll", None)
        return True

    def constant(self) -> torch.Tensor:
        """``sum w (lgamma(y + 1) - y log t)``: what :meth:`value` leaves out of ``-sum w l``."""
        if self._const is None:
            c = log_factorial(self.y)
            if self.t is not None:
                c = c - torch.xlogy(self.y, self.t)
            self._const = c.sum() if self.w is None else torch.dot(self.w, c)
        return self._const

    def log_likelihood(self, P, u=None):
        with torch.no_grad():
            return -self.value(P) - self.constant()

    def _first(self, P):
        """Weighted ``dl/deta`` per row; keeps ``sigma`` and ``rho`` in ``P``."""
        if "_a" not in P:
            self.value(P)  # s (and the guarded pieces where needed)
            eta, s, beta = P["eta"], P["_s"], self.beta
            if "_sig" not in P:
                P["_sig"] = torch.sigmoid(eta * beta if beta != 1.0 else eta)
                P["_rho"] = P["_sig"] / s
            sig = P["_sig"]
            P["_q"] = self.wy * P["_rho"]
            P["_a"] = P["_q"] - (sig if self.wt is None else self.wt * sig)
        return P["_a"]

    def gradient(self, P, u=None):
        return {"eta": self._first(P)}

    def curvature(self, P, u=None, index=None):
        self._first(P)
        q, rho, sig, a = P["_q"], P["_rho"], P["_sig"], P["_a"]
        if index is not None:
            q, rho, sig, a = q[index], rho[index], sig[index], a[index]
        beta = self.beta
        return {("eta", "eta"): q * rho - (1.0 - sig) * (a * beta if beta != 1.0 else a)}


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


def _trigamma(x):
    return torch.polygamma(1, x)


def negative_binomial_pieces(eta, u, exposure, beta, switch) -> dict:
    """Per-row quantities the NB2 terms share, with the graph of ``eta`` and ``u`` when
    grad mode is on.

    Parameters
    ----------
    eta : Tensor, shape ``(n,)``
    u : Tensor, 0-d
        The unconstrained concentration, ``r = softplus(u)``.
    exposure : Tensor, shape ``(n,)``, or None
    beta, switch : float
        The link (``switch`` from :func:`posheads.ops.linear_switch`).

    Returns
    -------
    dict
        ``log_s, sig, rho`` (``(n,)``: ``log softplus_beta(eta)``, ``sigmoid(beta eta)``,
        ``sig / s``), ``r, sig_u`` (0-d: ``r`` and ``dr/du``), ``logit`` (``(n,)``:
        ``d = log mu - log r``), ``p = sigmoid(d) = mu / (r + mu)`` and
        ``sp_d = softplus(d) = -log(1 - p)`` (exact past torch's linear threshold).
    """
    _, log_s, sig, rho = ops.softplus_derivatives(eta, beta, switch)
    r = ops.softplus(u)
    logit = log_s - torch.log(r)
    if exposure is not None:
        logit = logit + torch.log(exposure)
    return {"log_s": log_s, "sig": sig, "rho": rho, "r": r, "sig_u": torch.sigmoid(u),
            "logit": logit, "p": torch.sigmoid(logit), "sp_d": ops.softplus(logit)}


def negative_binomial_derivatives(y, k, levels, beta, need_h):
    """Unweighted NB2 row derivatives in ``eta`` and ``u`` (the module docstring's).

    Parameters
    ----------
    y : Tensor, shape ``(n,)``
    k : dict
        :func:`negative_binomial_pieces` at the point.
    levels : tuple or None
        :func:`count_levels` of ``y``.
    beta : float
    need_h : bool

    Returns
    -------
    a : dict of str to Tensor, shape ``(n,)``
        ``dl/deta`` and ``dl/du`` keyed ``"eta"`` and ``"concentration"``.
    h : dict of (str, str) to Tensor, shape ``(n,)``, or None
        The negated second derivatives (None unless ``need_h``).
    """
    r, p, rho, sig, su = k["r"], k["p"], k["rho"], k["sig"], k["sig_u"]
    q = 1.0 - p
    yq_r = y * q / r
    yr = y + r
    a_eta = rho * (y - yr * p)
    d_r = _by_count(torch.digamma, y, r, levels) - k["sp_d"] + p - yq_r
    a = {"eta": a_eta, "concentration": su * d_r}
    if not need_h:
        return a, None
    h_ee = rho * rho * (y - yr * p * p) - (beta * (1.0 - sig)) * a_eta
    h_eu = -(su * rho * p * (yq_r - p))
    d_rr = _by_count(_trigamma, y, r, levels) + p / r - (p - yq_r) * q / r
    h_uu = -(d_rr * su * su + d_r * (su * (1.0 - su)))
    return a, {("eta", "eta"): h_ee, ("eta", "concentration"): h_eu,
               ("concentration", "concentration"): h_uu}


class NegativeBinomialRows(RowTerms):
    """NB2 rows in closed form; ``value`` leaves out ``sum w lgamma(y + 1)``."""

    closed_form = True

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        self.levels = count_levels(y, weights)

    def _pieces(self, P, u):
        """:func:`negative_binomial_pieces` at ``(eta, u)``, without a graph, kept in ``P``
        for this ``u``."""
        u = u["concentration"]
        cached = P.get("_nb")
        if cached is None or not bool(cached[0] == u):
            with torch.no_grad():
                pieces = negative_binomial_pieces(P["eta"], u, self.t, self.beta, self.switch)
            cached = (u.clone(), pieces)
            P["_nb"] = cached
        return cached[1]

    def value(self, P, u):
        k = self._pieces(P, u)
        r, d, y, w = k["r"], k["logit"], self.y, self.w
        # r log(1 - p) + y log p, with log p = -softplus(-d) and log(1 - p) = -softplus(d)
        ll = r * ops.softplus(d) + y * ops.softplus(-d)  # exact past torch's threshold
        total = ll.sum() if w is None else torch.dot(w, ll)
        levels = self.levels
        if levels is None:
            g = torch.lgamma(y + r) - torch.lgamma(r)
            return total - (g.sum() if w is None else torch.dot(w, g))
        return total - torch.dot(levels[2], torch.lgamma(levels[0] + r) - torch.lgamma(r))

    def _rows(self, P, u, need_h):
        a, h = negative_binomial_derivatives(self.y, self._pieces(P, u), self.levels,
                                             self.beta, need_h)
        w = self.w
        if w is not None:
            a = {key: v * w for key, v in a.items()}
            if h is not None:
                h = {key: v * w for key, v in h.items()}
        return a, h

    def gradient(self, P, u):
        return self._rows(P, u, need_h=False)[0]

    def curvature(self, P, u, index=None):
        h = self._rows(P, u, need_h=True)[1]
        return h if index is None else {key: v[index] for key, v in h.items()}
