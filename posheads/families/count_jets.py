"""A count law's per-row log-probability and its derivatives, unweighted, for the zero
parts to wrap (:mod:`.gated_rows`).

A :class:`CountJet` gives, at the predictors ``P`` and unconstrained shapes ``u``,

* ``log_prob``: ``c = log p(y)`` per row, constants included;
* ``derivatives``: ``dc/dk`` and ``-d2c/dk dj`` per row in the law's keys (``"eta"``,
  then its shapes);
* ``zero``: ``x = -log p(0) >= 0`` and ``log x`` (finite where ``x`` underflows);
* ``truncation``: the derivatives of ``c0 = log p(0) = -x`` divided by ``x``
  (``a0 / x`` and ``h0 / x``, with ``h0 = -d2 c0``), which stay finite as ``x -> 0``
  where ``a0`` and ``h0`` themselves underflow with ``x``: the zero-truncation term
  ``-log(1 - exp(-x))`` of a hurdle law differentiates to them times
  ``x / expm1(x)``.

Everything keeps the graph of ``P`` and ``u`` under grad mode (the mixed models
differentiate the rows' derivatives once more) and is cached in ``P`` under ``"_jet"``
for the ``u`` object it was computed at. The formulas are in
``docs/count-likelihoods.md``.
"""

from __future__ import annotations

import torch

from .. import ops
from .count_rows import (
    count_levels,
    log_factorial,
    negative_binomial_derivatives,
    negative_binomial_pieces,
)

__all__ = ["CountJet", "NegativeBinomialJet", "PoissonJet"]


class CountJet:
    """Base of the count jets (see the module docstring).

    Parameters
    ----------
    y : Tensor, shape ``(n,)``
    exposure : Tensor, shape ``(n,)``, optional
    beta : float
    switch : float
        The softplus link's linear switch (:func:`posheads.ops.linear_switch`).

    Attributes
    ----------
    keys : tuple of str
        ``"eta"`` and the law's shapes, the keys of ``derivatives`` and ``truncation``.
    """

    keys: tuple = ("eta",)

    def __init__(self, y, exposure=None, *, beta=1.0, switch=20.0):
        self.y, self.t, self.beta, self.switch = y, exposure, float(beta), float(switch)
        self._log_fact = None

    def log_factorial(self) -> torch.Tensor:
        """``lgamma(y + 1)`` per row, computed once."""
        if self._log_fact is None:
            self._log_fact = log_factorial(self.y)
        return self._log_fact

    def _cached(self, P, u, make):
        key = None if u is None else u.get("concentration")
        hit = P.get("_jet")
        if hit is None or hit[0] is not key:
            hit = (key, make())
            P["_jet"] = hit
        return hit[1]


class PoissonJet(CountJet):
    """The Poisson law at rate ``mu = t s``, ``s = softplus_beta(eta)``:
    ``c = y log mu - mu - lgamma(y + 1)``, ``x = mu``."""

    def pieces(self, P, u=None):
        """``s, log s, sigma, rho`` and ``mu, log mu``, guarded (:mod:`posheads.ops`)."""
        def make():
            s, log_s, sig, rho = ops.softplus_branches(P["eta"], self.beta, self.switch)
            mu, log_mu = s, log_s
            if self.t is not None:
                mu, log_mu = self.t * s, log_s + torch.log(self.t)
            return {"s": s, "sig": sig, "rho": rho, "mu": mu, "log_mu": log_mu}
        return self._cached(P, u, make)

    def log_prob(self, P, u=None):
        k = self.pieces(P, u)
        return self.y * k["log_mu"] - k["mu"] - self.log_factorial()

    def zero(self, P, u=None):
        k = self.pieces(P, u)
        return k["mu"], k["log_mu"]

    def derivatives(self, P, u=None, need_h=True):
        k = self.pieces(P, u)
        sig, rho = k["sig"], k["rho"]
        tsig = sig if self.t is None else self.t * sig
        a = self.y * rho - tsig
        h = {("eta", "eta"): self.y * rho * rho - self.beta * (1.0 - sig) * a} \
            if need_h else None
        return {"eta": a}, h

    def truncation(self, P, u=None, need_h=True):
        # a0 = -t sigma = -mu rho; h0 = t beta sigma (1 - sigma) = mu beta (1 - sigma) rho
        k = self.pieces(P, u)
        rho = k["rho"]
        h = {("eta", "eta"): self.beta * (1.0 - k["sig"]) * rho} if need_h else None
        return {"eta": -rho}, h


class NegativeBinomialJet(CountJet):
    """NB2 with concentration ``r = softplus(u)``:
    ``c = lgamma(y + r) - lgamma(r) - lgamma(y + 1) - y softplus(-d) - r softplus(d)``
    with ``d = log mu - log r``, and ``x = r softplus(d)``."""

    keys = ("eta", "concentration")

    def __init__(self, y, exposure=None, *, beta=1.0, switch=20.0):
        super().__init__(y, exposure, beta=beta, switch=switch)
        self._levels = False  # not yet looked for

    @property
    def levels(self):
        """:func:`count_levels` of ``y`` (no weights), found once."""
        if self._levels is False:
            self._levels = count_levels(self.y, None)
        return self._levels

    def pieces(self, P, u):
        """:func:`negative_binomial_pieces` and the softplus pieces at ``d``:
        ``sp_d = softplus(d)``, ``log_sp_d``, ``rho_d = sigmoid(d) / softplus(d)``."""
        def make():
            k = negative_binomial_pieces(P["eta"], u["concentration"], self.t, self.beta,
                                         self.switch)
            sp, log_sp, _, rho_d = ops.softplus_branches(k["logit"], 1.0, self.switch)
            k.update(sp_d=sp, log_sp_d=log_sp, rho_d=rho_d)
            return k
        return self._cached(P, u, make)

    def log_prob(self, P, u):
        k = self.pieces(P, u)
        y, r, d, levels = self.y, k["r"], k["logit"], self.levels
        if levels is None:
            g = torch.lgamma(y + r) - torch.lgamma(r)
        else:
            g = (torch.lgamma(levels[0] + r) - torch.lgamma(r))[levels[1]]
        return g - self.log_factorial() - y * ops.softplus(-d) - r * k["sp_d"]

    def zero(self, P, u):
        k = self.pieces(P, u)
        return k["r"] * k["sp_d"], torch.log(k["r"]) + k["log_sp_d"]

    def derivatives(self, P, u, need_h=True):
        return negative_binomial_derivatives(self.y, self.pieces(P, u), self.levels,
                                             self.beta, need_h)

    def truncation(self, P, u, need_h=True):
        # the NB2 derivatives at y = 0 over x = r sp_d, with p / sp_d = rho_d:
        # a0 = -r p rho,  dc0/du = -sig_u (sp_d - p)
        k = self.pieces(P, u)
        r, p, rho, sig, su, rd = k["r"], k["p"], k["rho"], k["sig"], k["sig_u"], k["rho_d"]
        a = {"eta": -rho * rd, "concentration": -su * (1.0 - rd) / r}
        if not need_h:
            return a, None
        h = {("eta", "eta"): rho * rd * (self.beta * (1.0 - sig) - rho * p),
             ("eta", "concentration"): su * rho * rd * p / r,
             ("concentration", "concentration"):
                 (1.0 - rd) * (su * (1.0 - su) / r) - rd * p * (su * su / (r * r))}
        return a, h
