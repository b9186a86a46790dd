"""A local-level count model over many series at once, written as a log density in torch.

:class:`LocalLevelPanel` is the model behind the forecaster's default (Laplace) inference.
For series ``s`` and step ``t`` (series left-padded to a common length ``T``, a mask
marking the observed steps), the linear predictor is

``eta[s, t] = level[s, t] + features[s, t] . weight[s]``

with ``level[s, t] = level0[s] + sigma * cumsum(z[s])[t]`` a random walk written with
standardised innovations ``z`` (non-centred): standard normal, Student-t with ``level_df``
degrees of freedom, or a two-scale mixture ``(1 - p) N(0, 1) + p N(0, k**2)``
(``level_jumps=(p, k)``). With heavy-tailed steps ``sigma`` is the scale of an ordinary
step, and a rare large one -- a break in the level, such as a new law's effect -- costs
the walk little, so that the evidence does not move ``sigma`` up to absorb it.
``features`` are the Fourier terms of the seasons followed by the standardised
covariates, and counts come from a family of :mod:`posheads.families` with mean
``scale[s] * softplus(eta)``; a family's shapes
(concentration, dispersion) and zero parts (gate logits) are constant over time, one per
series.

Per-series parameters are drawn from shared priors, so that short series borrow strength
from long ones: ``weight[s] ~ Normal(weight_mean, weight_sd)``, the log of each shape
``~ Normal(shape_mean, 1)`` and each gate logit ``~ Normal(gate_mean, 1.5)``, the shared
means under weak priors (a shape mean under the family's default prior, or the forecaster's
own where it has one). The level's step ``sigma`` is *not* a parameter of this density:
the inference integrates it over a grid (see
:mod:`posheads.estimators.forecasting.laplace`).

All tensors carry leading batch dimensions ``(G, S)``: ``G`` values of ``sigma`` times ``S``
series. The model is plain torch over a family object: no Pyro sites, no inference code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from posheads import ops
from posheads.families import (
    DISCRETIZED_LOGISTIC,
    HURDLE_NEGATIVE_BINOMIAL,
    HURDLE_POISSON,
    NEGATIVE_BINOMIAL,
    POISSON,
    Family,
)
from posheads.families.logistic_derivatives import discretized_logistic_derivatives

__all__ = ["FamilyNames", "LocalLevelPanel", "PanelData", "PanelParams"]

# LogNormal (loc, scale) priors of a family's shape mean where the forecaster has its own:
# the NB concentration of a count series is about as often 1 as 1000.
_SHAPE_PRIORS = {"concentration": (3.0, 2.0), "dispersion": (0.0, 2.0)}
# Lower bounds of log shapes in the likelihood. A discretized logistic whose dispersion goes
# to 0 lets a rough level path pass through every count (each count's probability near 1,
# its curvature near 0 inside the rounding bin): a spurious mode of the joint that the
# Laplace approximation cannot see as such. A variance of 1/20 of Poisson's is the floor.
_SHAPE_FLOORS = {"dispersion": math.log(0.05)}
_LEVEL0_SD = 3.0  # prior sd of the first level around the unit bias (eta scale)
_SHAPE_SD = 1.0  # spread of series' log-shapes around their shared mean
_GATE_SD = 1.5  # spread of series' gate logits around their shared mean
_GATE_MEAN_SD = 3.0
_WEIGHT_PRECISION_FLOOR = 1e-2  # a weight the data never informs: sd 10 on eta
# Laws whose derivatives in (eta, log-shapes, gate logits) have closed forms here (and the
# discretized logistic, in posheads.families.logistic_derivatives): whether
# the count part is a negative binomial, and whether a hurdle (a zero part, then the
# zero-truncated count) wraps it.
_CLOSED_FORMS = ((POISSON, False, False), (NEGATIVE_BINOMIAL, True, False),
                 (HURDLE_POISSON, False, True), (HURDLE_NEGATIVE_BINOMIAL, True, True))


@dataclass
class PanelData:
    """The padded panel a :class:`LocalLevelPanel` is evaluated on.

    Attributes
    ----------
    y : Tensor of shape (S, T)
        Counts, left-padded with zeros.
    mask : Tensor of shape (S, T)
        1 where a count is observed, 0 on padding.
    features : Tensor of shape (S, T, K)
        Seasonal Fourier terms, then standardised covariates.
    scale : Tensor of shape (S,)
        Each series' exposure (its mean count).
    """

    y: torch.Tensor
    mask: torch.Tensor
    features: torch.Tensor
    scale: torch.Tensor


@dataclass
class PanelParams:
    """Unconstrained parameters of a :class:`LocalLevelPanel`, batch ``(G, S)``.

    Attributes
    ----------
    z : Tensor (G, S, T - 1)
        Standard-normal innovations of the level.
    level0 : Tensor (G, S)
    weight : Tensor (G, S, K)
    log_shapes : Tensor (G, S, n_shapes)
    gates : Tensor (G, S, n_parts)
        Logits of the family's zero parts.
    weight_mean : Tensor (G, K)
    shape_mean : Tensor (G, n_shapes)
    gate_mean : Tensor (G, n_parts)
    """

    z: torch.Tensor
    level0: torch.Tensor
    weight: torch.Tensor
    log_shapes: torch.Tensor
    gates: torch.Tensor
    weight_mean: torch.Tensor
    shape_mean: torch.Tensor
    gate_mean: torch.Tensor

    def tensors(self):
        """The parameters as a list (what an optimiser updates)."""
        return [self.z, self.level0, self.weight, self.log_shapes, self.gates,
                self.weight_mean, self.shape_mean, self.gate_mean]


class FamilyNames:
    """The names a forecaster reads off a forecasting model's ``family``."""

    family: Family

    @property
    def likelihood(self) -> str:
        """The family's name."""
        return self.family.name

    @property
    def shape_site(self):
        """Name of the family's first shape (concentration, dispersion), or None."""
        return self.family.shapes[0].name if self.family.shapes else None


class LocalLevelPanel(FamilyNames):
    """Random-walk level, seasons and covariates under a softplus link, over ``S`` series.

    Parameters
    ----------
    family : Family
        The count law (with or without zero parts).
    bias : float
        Prior mean of the first level (``softplus_inverse(1)``: the mean at ``scale``).
    beta : float
        Softness of the softplus link.
    weight_sd : float
        Spread of the series' seasonal and covariate weights around their shared mean.
    level_df : float or None
        Degrees of freedom of a Student-t law of the level's standardised steps.
    level_jumps : (float, float) or None
        ``(p, k)``: the standardised steps are ``N(0, k**2)`` with probability ``p`` and
        ``N(0, 1)`` otherwise (takes precedence over ``level_df``). Neither: normal steps.

    Examples
    --------
    >>> import torch
    >>> from posheads.families import POISSON
    >>> m = LocalLevelPanel(POISSON, bias=0.54)
    >>> level = torch.zeros(1, 2, 5)
    >>> m.eta(level, torch.zeros(1, 2, 0), torch.zeros(2, 5, 0)).shape
    torch.Size([1, 2, 5])
    """

    def __init__(self, family: Family, *, bias: float, beta: float = 1.0,
                 weight_sd: float = 0.5, level_df: float | None = None,
                 level_jumps: tuple[float, float] | None = None):
        self.family, self.bias, self.beta, self.weight_sd = family, bias, beta, weight_sd
        self.level_df = None if level_df is None else float(level_df)
        self.level_jumps = None if level_jumps is None else tuple(map(float, level_jumps))

    # ------------------------------------------------------------ structure
    @staticmethod
    def level(params: PanelParams, sigma: torch.Tensor) -> torch.Tensor:
        """The level path ``(G, S, T)``; ``sigma`` has shape ``(G, 1)`` or ``(G, S)``."""
        steps = sigma[..., None] * params.z.cumsum(-1)
        first = params.level0[..., None]
        return torch.cat([first, first + steps], dim=-1)

    @staticmethod
    def eta(level, weight, features):
        """``level + features . weight``: ``(G, S, T)`` from ``(G, S, T)``, ``(G, S, K)``
        and ``(S, T, K)``."""
        if features.shape[-1] == 0:
            return level
        return level + torch.einsum("stk,gsk->gst", features, weight)

    def observation(self, eta, scale, log_shapes, gates):
        """The count law at ``eta`` (``(..., S, T)``); per-series shapes and gates
        ``(..., S, n)`` are broadcast over time; ``scale`` is ``(S,)``."""
        log_shapes = self.floored(log_shapes)
        shapes = {s.name: log_shapes[..., i, None].exp().expand_as(eta)
                  for i, s in enumerate(self.family.shapes)}
        parts = {p.name: gates[..., i, None].expand_as(eta)
                 for i, p in enumerate(self.family.parts)}
        exposure = scale[:, None].expand_as(eta)
        return self.family.build(eta, shapes=shapes, parts=parts, beta=self.beta,
                                 exposure=exposure)

    def floored(self, log_shapes):
        """The log shapes the likelihood uses, ``(..., n_shapes)``: each at least its floor
        (a discretized logistic's dispersion at least 0.05; see ``_SHAPE_FLOORS``)."""
        floors = [_SHAPE_FLOORS.get(s.name, -math.inf) for s in self.family.shapes]
        if all(f == -math.inf for f in floors):
            return log_shapes
        return torch.maximum(log_shapes, log_shapes.new_tensor(floors))

    def prior_precisions(self, n_series: int) -> tuple[float, float]:
        """Prior precisions of the first level and of one series' weights (``eta`` scale).

        A series' weight is ``Normal(weight_mean, weight_sd)`` around a shared mean under a
        flat prior; with ``n_series`` series, the precision of one series' weight given the
        others is ``(1 - 1 / n_series) / weight_sd**2`` (0 for one series: its weights are
        free). The floor ``1 / 10**2`` keeps a weight that the data never sees (a covariate
        that is zero all through training) at a finite variance.
        """
        weight = max((1.0 - 1.0 / n_series) / self.weight_sd**2, _WEIGHT_PRECISION_FLOOR)
        return 1.0 / _LEVEL0_SD**2, weight

    # ------------------------------------------------------------ level steps
    def innovation_log_density(self, z):
        """Log density of the standardised level steps ``z`` (``(..., T - 1)``), summed over
        time, up to a constant: ``-z**2 / 2`` for normal steps, ``-(df + 1) / 2 log(1 +
        z**2 / df)`` for Student-t ones, ``log((1 - p) N(z; 0, 1) + p N(z; 0, k**2))`` for
        two-scale ones."""
        if self.level_jumps is not None:
            return self._jump_terms(z)[0].sum(-1)
        if self.level_df is None:
            return -0.5 * (z**2).sum(-1)
        nu = self.level_df
        return -0.5 * (nu + 1.0) * torch.log1p(z**2 / nu).sum(-1)

    def innovation_curvature(self, z, exact: bool = False):
        """Curvature of minus the log density of each step, ``(..., T - 1)`` like ``z``.

        1 for normal steps. Both heavy-tailed laws are scale mixtures of normals, whose
        minus log density is concave in ``z**2``: the default is the reweighting weight
        ``E[1 / v | z]`` of iteratively reweighted least squares (``(df + 1) / (df +
        z**2)``; ``r + (1 - r) / k**2`` with ``r`` the narrow component's responsibility),
        positive, a majorizer (the quadratic through ``z`` with this curvature lies above
        minus the log density everywhere) and exact at ``z = 0``. ``exact=True`` gives the
        second derivative, ``E[1 / v | z] - z**2 Var[1 / v | z]``, which turns negative
        for a large step (beyond ``sqrt(df)`` for the t).
        """
        if self.level_jumps is not None:
            _, c, r = self._jump_terms(z)
            k2 = self.level_jumps[1] ** 2
            return c - z**2 * r * (1.0 - r) * (1.0 - 1.0 / k2) ** 2 if exact else c
        if self.level_df is None:
            return torch.ones_like(z)
        nu = self.level_df
        if exact:
            return (nu + 1.0) * (nu - z**2) / (nu + z**2) ** 2
        return (nu + 1.0) / (nu + z**2)

    def innovations(self, shape, like):
        """Standardised level steps ``shape`` drawn from their law (torch's global
        generator), with the dtype and device of ``like``."""
        z = torch.randn(shape, dtype=like.dtype, device=like.device)
        if self.level_jumps is not None:
            p, k = self.level_jumps
            jump = torch.rand(shape, dtype=like.dtype, device=like.device) < p
            return torch.where(jump, k * z, z)
        if self.level_df is None:
            return z
        nu = like.new_tensor(self.level_df)  # z / sqrt(chi2(df) / df)
        return z * (torch.distributions.Gamma(nu / 2, nu / 2).sample(shape)).rsqrt()

    def _jump_terms(self, z):
        """Two-scale steps: log density (up to a constant), reweighting weight and the
        narrow component's responsibility, each like ``z``."""
        p, k = self.level_jumps
        narrow = math.log1p(-p) - 0.5 * z**2
        lp = torch.logaddexp(narrow, math.log(p / k) - 0.5 * (z / k) ** 2)
        r = (narrow - lp).exp()
        return lp, r + (1.0 - r) / k**2, r

    # ------------------------------------------------------------ densities
    def log_likelihood(self, eta, params: PanelParams, data: PanelData):
        """Masked log-likelihood of every count, ``(G, S, T)``."""
        d = self.observation(eta, data.scale, params.log_shapes, params.gates)
        return d.log_prob(data.y) * data.mask

    def log_prior(self, params: PanelParams):
        """Log prior of everything but the level's step, per ``(G, S)`` (shared terms
        are spread evenly over the series)."""
        z = params.z
        n_series = z.shape[-2]
        lp = self.innovation_log_density(z)
        lp = lp - 0.5 * ((params.level0 - self.bias) / _LEVEL0_SD) ** 2
        dw = (params.weight - params.weight_mean[:, None, :]) / self.weight_sd
        lp = lp - 0.5 * (dw**2).sum(-1)
        ds = (params.log_shapes - params.shape_mean[:, None, :]) / _SHAPE_SD
        lp = lp - 0.5 * (ds**2).sum(-1)
        dg = (params.gates - params.gate_mean[:, None, :]) / _GATE_SD
        lp = lp - 0.5 * (dg**2).sum(-1)
        shared = -0.5 * ((params.gate_mean / _GATE_MEAN_SD) ** 2).sum(-1)
        for i, s in enumerate(self.family.shapes):
            shared = shared + self._shape_log_prior(s, params.shape_mean[:, i])
        return lp + shared[:, None] / n_series

    @staticmethod
    def _shape_log_prior(shape, log_value):
        """Log density of ``log(shape)`` under the shape's prior (LogNormal or the family's)."""
        if shape.name in _SHAPE_PRIORS:
            loc, sd = _SHAPE_PRIORS[shape.name]
            return -0.5 * ((log_value - loc) / sd) ** 2 - math.log(sd)
        prior = shape.prior(log_value)
        return prior.log_prob(log_value.exp()) + log_value  # change of variables to log

    def log_joint(self, params: PanelParams, sigma, data: PanelData):
        """Log joint density per ``(G, S)`` at ``sigma`` (``(G, 1)`` or ``(G, S)``)."""
        eta = self.eta(self.level(params, sigma), params.weight, data.features)
        return self.log_likelihood(eta, params, data).sum(-1) + self.log_prior(params)

    # ------------------------------------------------------------ derivatives
    def likelihood_derivatives(self, eta, params: PanelParams, data: PanelData):
        """Closed-form first and second derivatives of the masked log-likelihood.

        The law of ``y[t]`` depends on ``eta[t]`` and the series' log-shapes and gate
        logits ``ab`` only, so the derivatives in ``eta`` are element by element. Written
        through ``L = log mean`` (``L' = sigmoid / softplus`` in ``eta``, ``L'' = L' (beta
        (1 - sigmoid) - L')``), with ``q = mean / (mean + r)`` for the negative binomial of
        concentration ``r = exp(rho)`` and, for a hurdle, ``u = -log P(count = 0)`` (``r
        softplus(L - rho)``, or the mean for Poisson) in the truncation ``-log(1 -
        exp(-u))``; the zero part contributes ``-softplus(-g)`` at a zero and
        ``-softplus(g)`` elsewhere.

        Parameters
        ----------
        eta : Tensor (G, S, T)
        params : PanelParams
            Supplies ``log_shapes`` and ``gates``, ``(G, S, n)``.
        data : PanelData

        Returns
        -------
        tuple or None
            ``(g_eta (G, S, T), g_ab (G, S, n), h_eta (G, S, T), cross (G, S, T, n),
            h_ab (G, S, n, n))``: the gradient in ``eta`` and in ``ab`` (log-shapes, then
            gate logits; summed over time), the second derivative in ``eta``, the mixed
            ones in ``eta`` and ``ab``, and the Hessian in ``ab``; None for a law without
            a closed form here (use autograd).
        """
        if self.family is DISCRETIZED_LOGISTIC:
            return self._logistic_derivatives(eta, params, data)
        kind = [form[1:] for form in _CLOSED_FORMS if form[0] is self.family]
        if not kind:
            return None
        nb, hurdle = kind[0]
        y, mask = data.y, data.mask
        with torch.no_grad():
            _, log_s, sig, dlog = ops.softplus_derivatives(
                eta, self.beta, ops.linear_switch(eta.dtype))
            ddlog = dlog * (self.beta * (1.0 - sig) - dlog)  # L'' in eta
            mu = data.scale[:, None] * log_s.exp()
            if not nb:
                f_l, f_ll, f_lr, f_rr = y - mu, -mu, None, None
                u, u_l, u_ll = mu, mu, mu
            else:
                rho = params.log_shapes[..., :1]  # (G, S, 1)
                r = rho.exp()
                d = data.scale.log()[:, None] + log_s - rho  # logit of q
                q, sp = torch.sigmoid(d), ops.softplus(d)
                qq = q * (1.0 - q)
                f_l, f_ll = y - (y + r) * q, -(y + r) * qq
                f_lr = q * ((1.0 - q) * y - r * q)
                dig = torch.digamma(y + r) - torch.digamma(r)
                f_r = r * (dig - sp + q) - y * (1.0 - q)
                f_rr = (f_r + y * (1.0 - q) + r * r * (torch.polygamma(1, y + r)
                        - torch.polygamma(1, r)) + r * q * q - y * qq)
                u = r * sp
                u_l, u_ll, u_r = r * q, r * qq, u - r * q
                u_lr, u_rr = r * q * q, u - r * q - r * q * q
            if hurdle:  # the truncation -log(1 - exp(-u)) on the positive counts
                a1 = -1.0 / torch.expm1(u)  # its first and second derivatives in u
                a2 = -a1 * (1.0 - a1)
                f_l, f_ll = f_l + a1 * u_l, f_ll + a2 * u_l * u_l + a1 * u_ll
                if nb:
                    f_lr = f_lr + a2 * u_l * u_r + a1 * u_lr
                    f_r = f_r + a1 * u_r
                    f_rr = f_rr + a2 * u_r * u_r + a1 * u_rr
                pos = mask * (y > 0)
            else:
                pos = mask
            g_eta = pos * f_l * dlog
            h_eta = pos * (f_ll * dlog * dlog + f_l * ddlog)
            g_ab, cross, h_ab = [], [], []
            if nb:
                g_ab.append((pos * f_r).sum(-1))
                cross.append(pos * f_lr * dlog)
                h_ab.append((pos * f_rr).sum(-1))
            if hurdle:
                g = params.gates[..., :1]
                pg = torch.sigmoid(g)
                zero = mask * (y == 0)
                g_ab.append((zero * (1.0 - pg) - pos * pg).sum(-1))
                cross.append(torch.zeros_like(eta))
                h_ab.append(-(pg * (1.0 - pg)).squeeze(-1) * mask.sum(-1))
            n = len(g_ab)
            g_ab = torch.stack(g_ab, -1) if n else eta.new_zeros((*eta.shape[:-1], 0))
            cross = torch.stack(cross, -1) if n else eta.new_zeros((*eta.shape, 0))
            h_ab = torch.diag_embed(torch.stack(h_ab, -1)) if n else \
                eta.new_zeros((*eta.shape[:-1], 0, 0))
        return g_eta, g_ab, h_eta, cross, h_ab

    def _logistic_derivatives(self, eta, params: PanelParams, data: PanelData):
        """:meth:`likelihood_derivatives` of the discretized logistic
        (:func:`~posheads.families.logistic_derivatives.discretized_logistic_derivatives`);
        a log dispersion held at its floor has no derivatives."""
        rho = params.log_shapes[..., :1]
        floor = _SHAPE_FLOORS["dispersion"]
        free = (rho > floor).to(eta.dtype)
        f_e, f_r, f_ee, f_er, f_rr = discretized_logistic_derivatives(
            data.y, eta, rho.clamp_min(floor), data.scale[:, None], self.beta)
        mask = data.mask
        g_ab = (mask * f_r).sum(-1, keepdim=True) * free
        h_ab = ((mask * f_rr).sum(-1, keepdim=True) * free)[..., None]
        return mask * f_e, g_ab, mask * f_ee, (mask * f_er * free)[..., None], h_ab
