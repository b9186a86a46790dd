"""Closed-form per-row terms of the zero-inflated and hurdle families.

:class:`ZeroInflatedPoissonRows` writes the zero-inflated Poisson out in full (below);
:class:`ZeroInflatedRows` and :class:`HurdleRows` wrap any count law's
:class:`~.count_jets.CountJet` (the NB2's, and the Poisson's for the hurdle), as Pyro's
``ZeroInflatedDistribution`` wraps a base law. With ``c = log p(y)``, its derivatives
``a_k`` and negated second derivatives ``h_kj`` in the law's keys (``eta``, then ``u``),
``x = -log p(0)``, gate logits ``g`` and ``pi = sigmoid(g)``:

zero-inflated, with ``q = sigmoid(g + x)`` at ``y = 0`` and ``q = 0`` at ``y > 0``::

    dl/dk = (1 - q) a_k                 -d2l/dk dj = (1 - q) h_kj - q (1 - q) a_k a_j
    dl/dg = q - pi                      -d2l/dk dg = q (1 - q) a_k
                                        -d2l/dg2   = pi (1 - pi) - q (1 - q)

hurdle, at ``y > 0`` (``y = 0`` rows depend on ``g`` alone), with ``e = x / expm1(x)`` and
the truncation jet ``b_k = a0_k / x``, ``m_kj = h0_kj / x`` of ``c0 = log p(0)``::

    dl/dk      = a_k + e b_k
    -d2l/dk dj = h_kj + e m_kj - e^2 b_k b_j - e x b_k b_j
    dl/dg      = [y = 0] - pi           -d2l/dg2 = pi (1 - pi)

(``-log(1 - exp(-x))`` has slope ``-x'/expm1(x)``; ``b`` and ``m`` stay finite as ``x``
underflows, and ``e -> 1`` there.)

The zero-inflated Poisson alone: with ``s = softplus_beta(eta)``, ``sigma = sigmoid(beta eta)``,
``rho = sigma / s``, the rate ``mu = t s``, a row has

    y > 0:  l = -softplus(g) + y log mu - mu - lgamma(y + 1)
    y = 0:  l = -softplus(g) + logaddexp(g, -mu)

and with ``q = sigmoid(g + mu)`` at ``y = 0`` (``q = 0`` at ``y > 0``)

    dl/deta        = y rho - (1 - q) t sigma
    dl/dg          = q - pi
    -d2l/deta2     = y rho^2 - beta (1 - sigma) dl/deta - q (1 - q) t^2 sigma^2
    -d2l/deta dg   = -q (1 - q) t sigma
    -d2l/dg2       = pi (1 - pi) - q (1 - q)

(``1 - q = sigmoid(-(g + mu))`` is computed as such, so neither it nor ``q (1 - q)``
loses precision where ``q`` is near 1.) ``-l`` is not convex in ``eta``: at ``y = 0`` the
last term of ``-d2l/deta2`` is negative. The derivations are in
``docs/count-likelihoods.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from ..distributions import log1mexp
from .count_rows import PoissonRows
from .rows import RowTerms

__all__ = ["GatedRows", "HurdleRows", "ZeroInflatedPoissonRows", "ZeroInflatedRows"]


class ZeroInflatedPoissonRows(PoissonRows):
    """Zero-inflated Poisson rows in closed form (predictors ``"eta"`` and ``"gate"``);
    ``value`` leaves out the Poisson rows' :meth:`~PoissonRows.constant`,
    ``sum w (lgamma(y + 1) - y log t)`` (0 where ``y = 0``)."""

    closed_form = True
    convex = False

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        w, t = weights, exposure
        self.zero = y == 0
        zero = self.zero.to(y.dtype)
        self.w1 = torch.ones_like(y) if w is None else w
        self.w0 = zero * self.w1
        self.wt_pos = (1.0 - zero) * self.w1 if t is None else (1.0 - zero) * self.w1 * t

    def _pieces(self, P):
        """``s, log s, sigma, rho, mu`` (in ``P``); guarded branches throughout."""
        if "_s" not in P:
            s, log_s, sig, rho = ops.softplus_branches(P["eta"], self.beta, self.switch)
            mu = s if self.t is None else self.t * s
            P["_s"], P["_log_s"], P["_sig"], P["_rho"], P["_mu"] = s, log_s, sig, rho, mu
        return P

    def value(self, P, u=None):
        """``-sum w l`` less :meth:`constant` (a tensor; no sync)."""
        self._pieces(P)
        g = P["gate"].expand_as(P["eta"])
        return (torch.dot(self.w1, F.softplus(g)) + torch.dot(self.wt_pos, P["_s"])
                - torch.dot(self.wy, P["_log_s"])
                - torch.dot(self.w0, torch.logaddexp(g, -P["_mu"])))

    def _first(self, P):
        """Weighted first derivatives; keeps ``q``, ``q (1 - q)``, ``t sigma``, ``pi``."""
        if "_a" not in P:
            self._pieces(P)
            g = P["gate"].expand_as(P["eta"])
            x = g + P["_mu"]
            zero = self.zero
            q = torch.where(zero, torch.sigmoid(x), torch.zeros_like(x))
            keep = torch.where(zero, torch.sigmoid(-x), torch.ones_like(x))  # 1 - q
            tsig = P["_sig"] if self.t is None else self.t * P["_sig"]
            pi = torch.sigmoid(g)
            # pi (1 - pi) as sigmoid(g) sigmoid(-g): no cancellation in 1 - pi for g >> 0
            P["_q"], P["_qq"], P["_tsig"], P["_pv"] = q, q * keep, tsig, pi * torch.sigmoid(-g)
            P["_a"] = self.wy * P["_rho"] - self.w1 * keep * tsig
            P["_ag"] = self.w1 * (q - pi)
        return P["_a"], P["_ag"]

    def gradient(self, P, u=None):
        a, ag = self._first(P)
        return {"eta": a, "gate": ag}

    def curvature(self, P, u=None, index=None):
        a, _ = self._first(P)
        rho, sig, qq, tsig, pv = P["_rho"], P["_sig"], P["_qq"], P["_tsig"], P["_pv"]
        wy, w1 = self.wy, self.w1
        if index is not None:
            a, rho, sig, qq, tsig, pv = (v[index] for v in (a, rho, sig, qq, tsig, pv))
            wy, w1 = wy[index], w1[index]
        beta = self.beta
        w_qq = w1 * qq
        return {("eta", "eta"): wy * rho * rho - beta * (1.0 - sig) * a - w_qq * tsig * tsig,
                ("eta", "gate"): -w_qq * tsig,
                ("gate", "gate"): w1 * pv - w_qq}


class GatedRows(RowTerms):
    """Rows of a zero part in front of a count law's :class:`~.count_jets.CountJet`
    (subclasses give the law); ``value`` is ``-sum w l`` in full.

    Parameters
    ----------
    family : GatedFamily
    jet : CountJet
        The count law on the same ``y`` and exposure.
    y, exposure, weights : Tensor, shape ``(n,)``
        As in :class:`RowTerms`.
    beta, threshold : float
    """

    closed_form = True
    convex = False

    def __init__(self, family, jet, y, exposure=None, weights=None, *, beta=1.0,
                 threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        self.jet, self.zero, self.part = jet, y == 0, family.part_names[0]

    def _gate(self, P):
        return P[self.part].expand_as(P["eta"])

    def _total(self, ll):
        return ll.sum() if self.w is None else torch.dot(self.w, ll)

    def log_likelihood(self, P, u=None):
        with torch.no_grad():
            return -self.value(P, u)

    def _weighted(self, rows: dict, index=None) -> dict:
        w = self.w
        if index is not None:
            rows = {k: v[index] for k, v in rows.items()}
            w = None if w is None else w[index]
        return rows if w is None else {k: v * w for k, v in rows.items()}

    def _pair(self, ki, kj):
        """The pair in the order of :attr:`keys`."""
        order = self.keys.index
        return (ki, kj) if order(ki) <= order(kj) else (kj, ki)

    def _derivatives(self, P, u, need_h):
        """:meth:`_rows`, kept in ``P`` for this ``u``: a gradient after a curvature
        costs nothing."""
        key = next(iter(u.values())) if u else None
        hit = P.get("_gated")
        if hit is None or hit[0] is not key or (need_h and hit[2] is None):
            hit = (key, *self._rows(P, u, need_h))
            P["_gated"] = hit
        return hit[1], hit[2]

    def gradient(self, P, u=None):
        return self._weighted(self._derivatives(P, u, need_h=False)[0])

    def curvature(self, P, u=None, index=None):
        return self._weighted(self._derivatives(P, u, need_h=True)[1], index)


class ZeroInflatedRows(GatedRows):
    """Structural zeros of probability ``sigmoid(g)``, else the jet's law (the module
    docstring's first block)."""

    def value(self, P, u=None):
        g, c = self._gate(P), self.jet.log_prob(P, u)  # c = log p(0) at y = 0
        return -self._total(torch.where(self.zero, torch.logaddexp(g, c), c) - F.softplus(g))

    def _rows(self, P, u, need_h):
        g, jet, zero = self._gate(P), self.jet, self.zero
        z = g + jet.zero(P, u)[0]
        q = torch.where(zero, torch.sigmoid(z), torch.zeros_like(z))
        keep = torch.where(zero, torch.sigmoid(-z), torch.ones_like(z))  # 1 - q
        pi, not_pi = torch.sigmoid(g), torch.sigmoid(-g)
        a, h = jet.derivatives(P, u, need_h)
        grad = {k: keep * v for k, v in a.items()}
        # q - pi = (1 - pi) - (1 - q): the difference of the small pair, not of two near 1
        grad[self.part] = torch.where(g > 0, not_pi - keep, q - pi)
        if not need_h:
            return grad, None
        qq = q * keep
        curv = {(ki, kj): keep * v - qq * a[ki] * a[kj] for (ki, kj), v in h.items()}
        for k, v in a.items():
            curv[self._pair(k, self.part)] = qq * v
        curv[self.part, self.part] = pi * not_pi - qq
        return grad, curv


class HurdleRows(GatedRows):
    """A zero of probability ``sigmoid(g)``, else the jet's law truncated to ``y > 0``
    (the module docstring's second block)."""

    def value(self, P, u=None):
        g, jet = self._gate(P), self.jet
        x, log_x = jet.zero(P, u)
        positive = jet.log_prob(P, u) - log1mexp(x, log_x) - F.softplus(g)
        return -self._total(torch.where(self.zero, -F.softplus(-g), positive))

    def _rows(self, P, u, need_h):
        g, jet, zero = self._gate(P), self.jet, self.zero
        pi, not_pi = torch.sigmoid(g), torch.sigmoid(-g)
        x = jet.zero(P, u)[0]
        # x / expm1(x) -> 1 as x -> 0; where x underflowed to 0 the quotient would be 0 / 0
        e = torch.where(x > torch.finfo(x.dtype).tiny, x / torch.expm1(x), torch.ones_like(x))
        a, h = jet.derivatives(P, u, need_h)
        b, m = jet.truncation(P, u, need_h)
        eb = {k: e * v for k, v in b.items()}
        nothing = torch.zeros_like(x)
        grad = {k: torch.where(zero, nothing, a[k] + eb[k]) for k in a}
        grad[self.part] = torch.where(zero, not_pi, -pi)
        if not need_h:
            return grad, None
        ex = e * x
        curv = {(ki, kj): torch.where(zero, nothing, v + e * m[ki, kj] - eb[ki] * eb[kj]
                                      - ex * b[ki] * b[kj])
                for (ki, kj), v in h.items()}
        curv[self.part, self.part] = pi * not_pi  # no cross terms: the parts are apart
        return grad, curv
