"""Closed-form per-row terms of the zero-inflated Poisson family.

With ``s = softplus_beta(eta)``, ``sigma = sigmoid(beta eta)``, ``rho = sigma / s``, the
rate ``mu = t s``, the gate logits ``g`` and ``pi = sigmoid(g)``, a row has

    y > 0:  l = -softplus(g) + y log mu - mu - lgamma(y + 1)
    y = 0:  l = -softplus(g) + logaddexp(g, -mu)

With ``q = P(structural zero | y) = sigmoid(g + mu)`` for ``y = 0`` and ``q = 0`` for
``y > 0`` both cases take one form:

    dl/deta        = y rho - (1 - q) t sigma
    dl/dg          = q - pi
    -d2l/deta2     = y rho^2 - beta (1 - sigma) dl/deta - q (1 - q) t^2 sigma^2
    -d2l/deta dg   = -q (1 - q) t sigma
    -d2l/dg2       = pi (1 - pi) - q (1 - q)

(``1 - q = sigmoid(-(g + mu))`` is computed as such, so neither it nor ``q (1 - q)``
loses precision where ``q`` is near 1.) ``-l`` is not convex in ``eta``: at ``y = 0`` the
last term of ``-d2l/deta2`` is negative. The derivation is in ``docs/count-likelihoods.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from .count_rows import PoissonRows

__all__ = ["ZeroInflatedPoissonRows"]


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
            P["_q"], P["_qq"], P["_tsig"], P["_pi"] = q, q * keep, tsig, pi
            P["_a"] = self.wy * P["_rho"] - self.w1 * keep * tsig
            P["_ag"] = self.w1 * (q - pi)
        return P["_a"], P["_ag"]

    def gradient(self, P, u=None):
        a, ag = self._first(P)
        return {"eta": a, "gate": ag}

    def curvature(self, P, u=None, index=None):
        a, _ = self._first(P)
        rho, sig, qq, tsig, pi = P["_rho"], P["_sig"], P["_qq"], P["_tsig"], P["_pi"]
        wy, w1 = self.wy, self.w1
        if index is not None:
            a, rho, sig, qq, tsig, pi = (v[index] for v in (a, rho, sig, qq, tsig, pi))
            wy, w1 = wy[index], w1[index]
        beta = self.beta
        w_qq = w1 * qq
        return {("eta", "eta"): wy * rho * rho - beta * (1.0 - sig) * a - w_qq * tsig * tsig,
                ("eta", "gate"): -w_qq * tsig,
                ("gate", "gate"): w1 * pi * (1.0 - pi) - w_qq}
