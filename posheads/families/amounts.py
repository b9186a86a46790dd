"""Families of positive amounts: the Gamma and the Tweedie (compound Poisson-gamma) laws.

:data:`GAMMA` models positive amounts (claim severities, durations, costs) with mean
``t * softplus(eta)`` and a shape ``concentration`` (``dispersion = 1 / concentration``).
:func:`tweedie_family` gives the Tweedie family at one power ``1 < p < 2``: non-negative
amounts with exact zeros (a pure premium), mean ``t * softplus(eta)``, variance
``dispersion * mean**p``. The power is fixed within a family (as ``beta`` within a
model): each power is its own family, registered under ``tweedie_<p>`` (``tweedie_1_3``)
when first made; :data:`TWEEDIE` (``p = 1.5``, also called ``"tweedie"``) stands for them
all, which is the family the Tweedie regressor declares.

Both have closed-form per-row terms (:class:`GammaRows`, :class:`TweedieRows`). The
Tweedie's in ``eta`` are those of its deviance divided by the dispersion, so for a fixed
power the coefficients' optimum is the deviance minimiser whatever the dispersion, as in
scikit-learn's ``TweedieRegressor``; its terms in the dispersion come from the series
density (:func:`~posheads.distributions.tweedie.tweedie_log_series`): the derivatives of
``log W`` in ``log(phi)`` are moments of the series' terms, so one pass over the rows
gives value, gradient and curvature. A MAP fit needs the series only for the dispersion:
the coefficients minimise the deviance (the family's :attr:`~TweedieFamily.deviance_family`,
the law at ``phi = 1``, whose rows never touch the series) and
:meth:`TweedieFamily.profile_dispersion` then maximises the likelihood in ``phi`` alone.
Derivations: ``docs/positive-amounts.md``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro.distributions as dist
import torch
from sklearn.exceptions import ConvergenceWarning

from .. import distributions as D
from .. import ops
from ..distributions.tweedie import SoftplusTweedie, check_power, tweedie_log_series
from ..ops.softplus_family import softplus_and_log
from .base import Family, Shape
from .registry import register_family
from .rows import RowTerms
from .start import clip, weighted_moments

__all__ = [
    "GAMMA",
    "GAMMA_SHAPE",
    "TWEEDIE",
    "TWEEDIE_DISPERSION",
    "GammaFamily",
    "GammaRows",
    "TweedieDevianceFamily",
    "TweedieFamily",
    "TweedieRows",
    "tweedie_family",
]

GAMMA_SHAPE = Shape(
    "concentration", default=1.0, bounds=(1e-2, 1e4),
    prior=lambda like: D.half_normal_inverse_sqrt(2.0, like=like),
    description="Gamma shape a (variance mean**2 / a, coefficient of variation "
                "1 / sqrt(a)); prior 1 / sqrt(a) ~ HalfNormal(2)")
TWEEDIE_DISPERSION = Shape(
    "dispersion", default=1.0, bounds=(1e-4, 1e4),
    prior=lambda like: D.SoftplusSupported(dist.LogNormal(  # like may be a sparse design
        torch.tensor(0.0, dtype=like.dtype, device=like.device),
        torch.tensor(3.0, dtype=like.dtype, device=like.device))),
    description="Tweedie dispersion phi (variance phi * mean**power); prior LogNormal(0, 3)")

# The power of the Tweedie family that stands for all of them (TWEEDIE).
_CANONICAL_POWER = 1.5


def _log_mean(rows, P):
    """``log mu``, ``sigma = sigmoid(beta eta)`` and ``rho = d log mu / d eta`` per row,
    kept in ``P``."""
    _mean(rows, P)
    if "_rho" not in P:
        if "_s" in P:  # plain forms, exact where s is a normal float (as ops does)
            eta = P["eta"]
            P["_sig"] = torch.sigmoid(eta * rows.beta if rows.beta != 1.0 else eta)
            P["_rho"] = P["_sig"] / P["_s"]
        else:
            _, _, P["_sig"], P["_rho"] = ops.softplus_derivatives(P["eta"], rows.beta,
                                                                  rows.switch)
    return P["_log_mu"], P["_sig"], P["_rho"]


def _mean(rows, P):
    """``(mu, log mu)`` per row, kept in ``P``; ``mu`` is None where ``softplus(eta)``
    underflows (the guarded branches give ``log mu`` only). A value needs no more: the
    derivatives' ``sigma`` and ``rho`` wait until :func:`_log_mean` asks for them."""
    if "_log_mu" not in P:
        eta = P["eta"]
        if torch.is_grad_enabled():  # under autograd: the branches safe to differentiate
            s, log_s, P["_sig"], P["_rho"] = ops.softplus_derivatives(eta, rows.beta,
                                                                      rows.switch)
        else:
            s, log_s = softplus_and_log(eta, rows.beta, rows.switch)
        if not bool((s < torch.finfo(s.dtype).tiny).any()):
            P["_s"] = s
        if rows.t is None:
            P["_mu"], P["_log_mu"] = P.get("_s"), log_s
        else:
            P["_log_mu"] = log_s + torch.log(rows.t)
            mu = P["_s"] * rows.t if "_s" in P else None
            # (a tiny exposure may take the product below the normal floats)
            P["_mu"] = None if mu is None or bool((mu < torch.finfo(mu.dtype).tiny).any()) \
                else mu
    return P["_mu"], P["_log_mu"]


def _row_weighted(rows, v, w=None):
    """``v`` times the row weights (``w``: those of a row subset)."""
    w = rows.w if w is None else w
    return v if w is None else v * w


def _subset(rows, index, *values):
    """``values`` and the row weights at the rows ``index`` (all rows when None): a
    Hessian from a row subset computes its curvatures on those rows only."""
    if index is None:
        return (*values, rows.w)
    w = None if rows.w is None else rows.w[index]
    return (*(v[index] if v.dim() else v for v in values), w)


def _total(rows, v):
    return v.sum() if rows.w is None else torch.dot(rows.w, v)


# ---------------------------------------------------------------------- Gamma
class GammaRows(RowTerms):
    """Gamma rows in closed form: with ``a = softplus(u)`` and ``r = y / mu``,

        l          = a log a - lgamma(a) + (a - 1) log y - a log mu - a r
        dl/deta    = a (r - 1) rho
        -d2l/deta2 = a rho**2 (2 r - 1) - beta (1 - sigma) dl/deta
        dl/da      = log a + 1 - psi(a) + log r - r,      d2l/da2 = 1 / a - psi'(a)
        d2l/deta da = (r - 1) rho
    """

    closed_form = True

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        self.log_y = torch.log(y)
        # the data's parts of the summed log-likelihood, once
        self.sum_w = y.new_tensor(y.shape[0]) if weights is None else weights.sum()
        self.sum_log_y = _total(self, self.log_y)

    def _ratio(self, P):
        """``r = y / mu`` per row, kept in ``P`` (in log space where ``mu`` underflows)."""
        if "_r" not in P:
            mu, log_mu = _mean(self, P)
            P["_r"] = self.y / mu if mu is not None else torch.exp(self.log_y - log_mu)
        return P["_r"]

    def log_likelihood(self, P, u):
        # sum w l = sum(w) (a log a - lgamma a) + (a - 1) sum(w log y)
        #           - a (sum(w log mu) + sum(w r)): two reductions per value
        with torch.no_grad():
            a = ops.softplus(u["concentration"])
            r, log_mu = self._ratio(P), _mean(self, P)[1]
            return self.sum_w * (a * torch.log(a) - torch.lgamma(a)) \
                + (a - 1.0) * self.sum_log_y - a * (_total(self, log_mu) + _total(self, r))

    def value(self, P, u):
        return -self.log_likelihood(P, u)

    def _rows(self, P, u, need_h, index=None):
        # in place where a temporary is ours: fewer passes and fresh buffers per row
        uu = u["concentration"]
        a, su = ops.softplus(uu), torch.sigmoid(uu)
        log_mu, sig, rho = _log_mean(self, P)
        r, log_mu, sig, rho, log_y, w = _subset(self, index, self._ratio(P), log_mu, sig, rho,
                                                self.log_y)
        r1 = r - 1.0
        a_eta = (r1 * rho).mul_(a)
        # dl/da = log a + 1 - psi(a) + log r - r
        d_a = (log_y - log_mu).sub_(r).add_(torch.log(a) + 1.0 - torch.digamma(a))
        if not need_h:
            return {"eta": _row_weighted(self, a_eta, w),
                    "concentration": _row_weighted(self, d_a.mul_(su), w)}
        # a rho**2 (2 r - 1) - beta (1 - sigma) a (r - 1) rho
        h_ee = (r + r1).mul_(rho).sub_((1.0 - sig).mul_(r1), alpha=self.beta).mul_(rho).mul_(a)
        h_eu = r1.mul_(rho).mul_(-su)
        d_aa = 1.0 / a - torch.polygamma(1, a)
        h_uu = d_a.mul_(-su * (1.0 - su)).sub_(d_aa * su * su)
        return {("eta", "eta"): _row_weighted(self, h_ee, w),
                ("eta", "concentration"): _row_weighted(self, h_eu, w),
                ("concentration", "concentration"): _row_weighted(self, h_uu, w)}

    def gradient(self, P, u):
        return self._rows(P, u, need_h=False)

    def curvature(self, P, u, index=None):
        return self._rows(P, u, need_h=True, index=index)


class GammaFamily(Family):
    """The Gamma family: its moment start, deviance and closed-form rows."""

    def shape_starts(self, y, weights=None):
        # var = mean**2 / a for one common mean: covariates explain part of the
        # variance, so this start errs towards a smaller shape
        mean, var = weighted_moments(y, weights)
        a = mean**2 / var if var > 0 else GAMMA_SHAPE.bounds[1]
        return {"concentration": clip(a, GAMMA_SHAPE.bounds)}

    def unit_deviance(self, y, mu):
        """``2 ((y - mu) / mu - log(y / mu))`` (``y > 0``)."""
        mu = np.maximum(mu, np.finfo(np.float64).tiny)
        return 2.0 * ((y - mu) / mu - np.log(y / mu))

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        return GammaRows(self, y, exposure, weights, beta=beta, threshold=threshold)


GAMMA = GammaFamily(
    "gamma", D.SoftplusGamma, shapes=(GAMMA_SHAPE,), integer=False, support="positive",
    description="Gamma amounts (variance mean**2 / concentration)")


# ---------------------------------------------------------------------- Tweedie
class TweedieRows(RowTerms):
    """Tweedie rows in closed form (module docstring). With ``phi = softplus(u)``,
    ``A = y mu**(1 - p)``, ``B = mu**(2 - p)``, ``G = A / (p - 1) + B / (2 - p)`` and
    ``c(y, phi) = log W(y, phi) - log y`` (0 at ``y = 0``),

        l          = -G / phi + c
        dl/deta    = (A - B) rho / phi
        -d2l/deta2 = (rho**2 (p A - (p - 1) B)) / phi - beta (1 - sigma) dl/deta
        dl/dphi    = G / phi**2 + c',   d2l/dphi2 = -2 G / phi**3 + c''
        d2l/deta dphi = -(A - B) rho / phi**2

    where ``c' = -E[N] / ((p - 1) phi)`` and ``c'' = (Var[N] / (p - 1)**2 + E[N] / (p - 1))
    / phi**2`` are moments of the series' terms, computed once per dispersion. For the
    deviance family (no shape: ``phi = 1``) ``value`` is ``sum w G``, half the weighted
    deviance up to a constant, and only ``log_likelihood`` asks for the series (once).
    """

    closed_form = True

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        super().__init__(family, y, exposure, weights, beta=beta, threshold=threshold)
        self.power = family.power
        self.fixed = not family.shapes  # the deviance family: phi = 1
        self.positive = (y > 0).nonzero().squeeze(1)
        self.log_y = torch.log(torch.where(y > 0, y, torch.ones_like(y)))
        self._series = None

    def _pieces(self, P):
        if "_A" not in P:
            p = self.power
            mu, log_mu = _mean(self, P)
            P["_B"] = torch.exp((2.0 - p) * log_mu)
            if mu is not None:  # y mu**(1 - p) = y B / mu, finite for a normal mu and p < 2
                P["_A"] = self.y * (P["_B"] / mu)
            else:  # in log space where mu underflows
                P["_A"] = torch.where(self.y > 0, torch.exp(self.log_y + (1.0 - p) * log_mu),
                                      0.0)
        return P["_A"], P["_B"]

    def _phi(self, u):
        """``(phi, dphi/du)``: the shape, or 1 for the deviance family."""
        if self.fixed:
            one = torch.ones((), dtype=self.y.dtype, device=self.y.device)
            return one, None
        return ops.softplus(u["dispersion"]), torch.sigmoid(u["dispersion"])

    def _c(self, u):
        """``c`` per row and its first two derivatives in ``phi``, cached per ``u``."""
        key = None if self.fixed else u["dispersion"]
        if self._series is None or not (self.fixed or bool(self._series[0] == key)):
            p, phi = self.power, self._phi(u)[0]
            c, c1, c2 = (torch.zeros_like(self.y) for _ in range(3))
            idx = self.positive
            with torch.no_grad():
                log_w, mean, var = tweedie_log_series(self.y[idx], phi, p, moments=True)
            c[idx] = log_w - self.log_y[idx]
            c1[idx] = -mean / ((p - 1.0) * phi)
            c2[idx] = (var / (p - 1.0) ** 2 + mean / (p - 1.0)) / phi**2
            self._series = (None if key is None else key.clone(), c, c1, c2)
        return self._series[1:]

    def _g(self, P):
        p = self.power
        A, B = self._pieces(P)
        return A / (p - 1.0) + B / (2.0 - p)

    def log_likelihood(self, P, u):
        with torch.no_grad():
            return _total(self, self._c(u)[0] - self._g(P) / self._phi(u)[0])

    def value(self, P, u):
        if self.fixed:  # no parameter moves c: leave it out (no series)
            return _total(self, self._g(P))
        return -self.log_likelihood(P, u)

    def _rows(self, P, u, need_h, index=None):
        p = self.power
        phi, su = self._phi(u)
        _, sig, rho = _log_mean(self, P)
        A, B, sig, rho, w = _subset(self, index, *self._pieces(P), sig, rho)
        a_eta = (A - B).mul_(rho).div_(phi)
        h_ee = None
        if need_h:  # rho**2 (p A - (p - 1) B) / phi - beta (1 - sigma) dl/deta
            h_ee = (p * A).sub_(B, alpha=p - 1.0).mul_(rho).mul_(rho).div_(phi) \
                .sub_((1.0 - sig).mul_(a_eta), alpha=self.beta)
        if self.fixed:
            return {("eta", "eta"): _row_weighted(self, h_ee, w)} if need_h else \
                {"eta": _row_weighted(self, a_eta, w)}
        _, c1, c2 = self._c(u)
        c1, c2, G, _ = _subset(self, index, c1, c2, self._g(P))
        d_phi = G / phi**2 + c1
        grad = {"eta": _row_weighted(self, a_eta, w),
                "dispersion": _row_weighted(self, d_phi * su, w)}
        if not need_h:
            return grad
        h_eu = a_eta * su / phi
        d_pp = -2.0 * G / phi**3 + c2
        h_uu = -(d_pp * su * su + d_phi * su * (1.0 - su))
        return {("eta", "eta"): _row_weighted(self, h_ee, w),
                ("eta", "dispersion"): _row_weighted(self, h_eu, w),
                ("dispersion", "dispersion"): _row_weighted(self, h_uu, w)}

    def gradient(self, P, u):
        return self._rows(P, u, need_h=False)

    def curvature(self, P, u, index=None):
        return self._rows(P, u, need_h=True, index=index)


class TweedieFamily(Family):
    """The Tweedie family at one power ``1 < p < 2`` (make it with :func:`tweedie_family`).

    Parameters
    ----------
    power : float
    **kwargs
        As in :class:`Family` (``aliases``).
    """

    def __init__(self, power: float, **kwargs):
        self.power = check_power(power)
        name = "tweedie_" + repr(self.power).replace(".", "_")
        super().__init__(name, SoftplusTweedie, shapes=(TWEEDIE_DISPERSION,), integer=False,
                         support="nonnegative",
                         description=f"Tweedie amounts with exact zeros, power {self.power}",
                         **kwargs)

    def __reduce__(self):
        return tweedie_family, (self.power,)

    @property
    def canonical(self) -> Family:
        return tweedie_family(_CANONICAL_POWER)

    @property
    def fixed_arguments(self) -> dict:
        return {"power": self.power}

    def shape_starts(self, y, weights=None):
        # var = phi mean**p for one common mean (an over-estimate: covariates explain
        # part of the variance)
        mean, var = weighted_moments(y, weights)
        phi = var / mean**self.power if mean > 0 and var > 0 else TWEEDIE_DISPERSION.default
        return {"dispersion": clip(phi, TWEEDIE_DISPERSION.bounds)}

    def unit_deviance(self, y, mu):
        """``2 (y**(2-p) / ((1-p)(2-p)) - y mu**(1-p) / (1-p) + mu**(2-p) / (2-p))``."""
        p = self.power
        mu = np.maximum(mu, np.finfo(np.float64).tiny)
        return 2.0 * (np.power(y, 2.0 - p) / ((1.0 - p) * (2.0 - p))
                      - y * np.power(mu, 1.0 - p) / (1.0 - p) + np.power(mu, 2.0 - p) / (2.0 - p))

    def log_zero_probability(self, rate: float, shapes: dict) -> float:
        """``log P(y = 0)`` at mean ``rate``: ``-rate**(2 - p) / (phi (2 - p))``."""
        p = self.power
        return -rate ** (2.0 - p) / (shapes["dispersion"] * (2.0 - p))

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        return TweedieRows(self, y, exposure, weights, beta=beta, threshold=threshold)

    @property
    def deviance_family(self) -> TweedieDevianceFamily:
        """This law with ``phi = 1``: the family whose MAP minimises the deviance."""
        if "_deviance" not in self.__dict__:
            self._deviance = TweedieDevianceFamily(self)
        return self._deviance

    def profile_dispersion(self, y, mu, weights=None, *, prior=None, tol=1e-6,
                           max_iter=50):
        """The dispersion that maximises the likelihood (times ``prior``) at means ``mu``.

        Newton's method in ``log(phi)`` from the Pearson estimate; each step is one pass
        of the series, whose moments give the exact first and second derivatives
        (``docs/positive-amounts.md``).

        Parameters
        ----------
        y, mu : Tensor, shape ``(n,)``
            Targets and fitted means.
        weights : Tensor, shape ``(n,)``, optional
        prior : Distribution, optional
            Prior of ``phi`` (None or an improper flat law: maximum likelihood).
        tol : float
            Stop after a Newton step in ``log(phi)`` below this (the result is then exact
            to about ``tol**2``).
        max_iter : int

        Returns
        -------
        phi : Tensor, shape ``()``
        log_likelihood : float
            ``sum w log f(y | mu, phi)`` at ``phi``.
        n_iter : int
        """
        p = self.power
        w = torch.ones_like(y) if weights is None else weights
        log_mu = torch.log(mu)
        pos = (y > 0) & (w > 0)
        y_pos, w_pos = y[pos], w[pos]
        cross = torch.exp(torch.log(y_pos) + (1.0 - p) * log_mu[pos])
        G = float((w_pos * cross).sum()) / (p - 1.0) \
            + float((w * torch.exp((2.0 - p) * log_mu)).sum()) / (2.0 - p)
        log_y = float((w_pos * torch.log(y_pos)).sum())
        pearson = float((w * (y - mu) ** 2 / torch.exp(p * log_mu)).sum() / w.sum())
        L = math.log(clip(pearson, TWEEDIE_DISPERSION.bounds))
        for n_iter in range(1, max_iter + 1):
            phi = torch.tensor(math.exp(L), dtype=y.dtype, device=y.device)
            log_w, mean, var = tweedie_log_series(y_pos, phi, p, moments=True)
            ll = float((w_pos * log_w).sum()) - log_y - G / float(phi)
            g1 = -float((w_pos * mean).sum()) / (p - 1.0) + G / float(phi)
            g2 = float((w_pos * var).sum()) / (p - 1.0) ** 2 - G / float(phi)
            _, d1, d2 = _prior_terms(prior, phi)
            g1, g2 = g1 + d1 * float(phi), g2 + d2 * float(phi) ** 2 + d1 * float(phi)
            # a Newton step where the objective is concave in log(phi), else a step of
            # at most 1 uphill; steps are capped at a factor e in phi
            step = -g1 / g2 if g2 < 0 else math.copysign(1.0, g1)
            step = max(-1.0, min(1.0, step))
            L += step
            if abs(step) < tol:
                # Newton converges quadratically: the step just taken is exact to about
                # step**2, and the quadratic model gives the log-likelihood there
                phi = torch.tensor(math.exp(L), dtype=y.dtype, device=y.device)
                return phi, ll + 0.5 * g1 * step, n_iter
        warnings.warn(f"the {self.name} dispersion did not converge in {max_iter} steps",
                      ConvergenceWarning, stacklevel=2)
        return phi, ll, max_iter


class TweedieDevianceFamily(Family):
    """The Tweedie law at one power with the dispersion fixed at 1: its MAP coefficients
    minimise the Tweedie deviance (plus the prior's penalty), as scikit-learn's
    ``TweedieRegressor``'s do, and its rows need no series.

    Parameters
    ----------
    base : TweedieFamily
    """

    def __init__(self, base: TweedieFamily):
        super().__init__(f"{base.name}_deviance", SoftplusTweedie, integer=False,
                         support="nonnegative",
                         description=f"the Tweedie deviance at power {base.power}")
        self.base, self.power = base, base.power

    def __reduce__(self):
        return _deviance_family, (self.power,)

    @property
    def fixed_arguments(self) -> dict:
        return {"power": self.power, "dispersion": 1.0}

    def unit_deviance(self, y, mu):
        return self.base.unit_deviance(y, mu)

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        return TweedieRows(self, y, exposure, weights, beta=beta, threshold=threshold)


def _deviance_family(power):
    return tweedie_family(power).deviance_family


def _prior_terms(prior, phi):
    """``log p(phi)`` and its first two derivatives in ``phi`` (autograd on a scalar)."""
    if prior is None or isinstance(prior, dist.ImproperUniform):
        return 0.0, 0.0, 0.0
    with torch.enable_grad():
        x = phi.detach().clone().requires_grad_()
        lp = prior.log_prob(x)
        (d1,) = torch.autograd.grad(lp, x, create_graph=True)
        d2 = torch.autograd.grad(d1, x)[0] if d1.requires_grad else torch.zeros_like(d1)
    return float(lp.detach()), float(d1.detach()), float(d2)


_MEMBERS: dict[float, TweedieFamily] = {}


def tweedie_family(power) -> TweedieFamily:
    """The Tweedie family at ``power`` (one object per power, registered by name).

    Parameters
    ----------
    power : float
        In ``(1, 2)``.

    Returns
    -------
    TweedieFamily
        Named ``tweedie_<power>`` with the dot as an underscore (``tweedie_1_3``); the
        family at 1.5 is :data:`TWEEDIE`, also called ``"tweedie"``.

    Examples
    --------
    >>> tweedie_family(1.3).name
    'tweedie_1_3'
    >>> tweedie_family(1.3) is tweedie_family(1.3)
    True
    """
    power = check_power(power)
    family = _MEMBERS.get(power)
    if family is None:
        canonical = power == _CANONICAL_POWER
        family = TweedieFamily(power, aliases=("tweedie",) if canonical else ())
        _MEMBERS[power] = family
        if not canonical:  # the package registers TWEEDIE with the other families
            register_family(family)
    return family


TWEEDIE = tweedie_family(_CANONICAL_POWER)
