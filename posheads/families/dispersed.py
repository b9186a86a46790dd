"""Families of counts whose dispersion may fall below the Poisson's: the generalized Poisson.

:data:`GENERALIZED_POISSON` is Consul's generalized Poisson
(:class:`~posheads.distributions.SoftplusGeneralizedPoisson`) with one positive shape,
``dispersion = Var[y] / E[y]``: below 1 for under-dispersed counts (scheduled departures,
shifts), 1 for the Poisson, above 1 for over-dispersed ones. It is the same shape, with
the same meaning and prior, as the discretized logistic's, so a fit of either reads the
same way. Why the generalized Poisson rather than the Conway-Maxwell-Poisson is argued
in ``docs/count-likelihoods.md``, with the measurements in ``benchmarks/README.md``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from .. import distributions as D
from ..distributions.dispersed import SoftplusGeneralizedPoisson
from .base import Shape
from .counts import CountFamily
from .start import clip, softplus_inverse_scalar, weighted_moments

__all__ = ["GENERALIZED_POISSON", "GP_DISPERSION", "GeneralizedPoissonFamily"]

GP_DISPERSION = Shape(
    "dispersion", default=1.0, bounds=(0.01, 100.0),
    prior=lambda like: D.SoftplusSupported(dist.LogNormal(  # like may be a sparse X
        torch.tensor(0.0, dtype=like.dtype, device=like.device),
        torch.tensor(2.0, dtype=like.dtype, device=like.device))),
    description="variance / mean of the generalized Poisson (below 1: under-dispersed); "
                "prior LogNormal(0, 2)")


class GeneralizedPoissonFamily(CountFamily):
    """The generalized Poisson: its moment start and ``log P(y = 0)``."""

    def shape_starts(self, y, weights=None):
        # Var / mean of the targets; covariates explain part of the variance, so this
        # start errs towards over-dispersion, where the support is not cut
        mean, var = weighted_moments(y, weights)
        ratio = var / mean if mean > 0 else GP_DISPERSION.default
        return {"dispersion": clip(ratio, GP_DISPERSION.bounds)}

    def log_zero_probability(self, rate, shapes):
        # -theta, less log Z where the support is cut (small rates, dispersion < 1)
        eta = torch.tensor(softplus_inverse_scalar(rate), dtype=torch.float64)
        d = SoftplusGeneralizedPoisson(
            eta, torch.tensor(float(shapes["dispersion"]), dtype=torch.float64))
        return float(d.log_prob(torch.zeros((), dtype=torch.float64)))


GENERALIZED_POISSON = GeneralizedPoissonFamily(
    "generalized_poisson", SoftplusGeneralizedPoisson, shapes=(GP_DISPERSION,),
    aliases=("gp", "genpois"),
    description="Consul's generalized Poisson: counts below or above the Poisson's "
                "dispersion")
