"""Heads of positive and real targets: :class:`GammaHead`, :class:`NormalHead`,
:class:`LogNormalHead` (declared directly, with moment starts of their own)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .. import distributions as D
from ..families.start import clip
from ._shared import inv_softplus, positive
from .base import DistributionHead

__all__ = ["GammaHead", "LogNormalHead", "NormalHead"]

# Moment-based starting values are clamped to this range: the data only suggest a start.
_CONCENTRATION_RANGE = (0.1, 100.0)
# Raw starting bias of the concentration: 1.
_CONCENTRATION_START = {"concentration": inv_softplus(1.0)}


def _moments(y: torch.Tensor):
    """Mean and (population) variance of ``y``; the variance is None for fewer than 2."""
    mean = float(y.mean())
    return mean, (float(y.var(unbiased=False)) if y.numel() > 1 else None)


class GammaHead(DistributionHead):
    """Features -> :class:`~posheads.distributions.SoftplusGamma` (positive targets).

    Raw outputs: ``eta`` (the mean's predictor) and ``concentration`` (softplus), which
    starts at 1 or at ``mean**2 / var`` clamped to [0.1, 100].

    Examples
    --------
    >>> head = GammaHead(3, target_mean=2.0)
    >>> head(torch.randn(4, 3)).mean.detach()
    tensor([2., 2., 2., 2.])
    """

    raw_names = ("eta", "concentration")
    distribution_class = D.SoftplusGamma
    _default_raw: ClassVar[dict[str, float]] = _CONCENTRATION_START

    def domain_map(self, raw):
        return {"eta": raw["eta"], "concentration": positive(raw["concentration"])}

    def _init_raw(self, y, exposure):
        mean, var = _moments(y)
        raw = {"eta": inv_softplus(mean, self.low, self.beta)}
        if var is not None and var > 0:
            raw["concentration"] = inv_softplus(clip(mean**2 / var, _CONCENTRATION_RANGE))
        return raw


class NormalHead(DistributionHead):
    """Features -> :class:`~posheads.distributions.SoftplusNormal`.

    Raw outputs: ``loc`` and ``scale_eta`` (scale ``low + softplus(scale_eta)``).

    Examples
    --------
    >>> head = NormalHead(3).init_from_targets(torch.tensor([1.0, 3.0]))
    >>> head(torch.randn(2, 3)).scale.detach()
    tensor([1., 1.])
    """

    raw_names = ("loc", "scale_eta")
    distribution_class = D.SoftplusNormal

    def _init_raw(self, y, exposure):
        mean, var = _moments(y)
        raw = {"loc": mean}
        if var is not None and var > 0:
            raw["scale_eta"] = inv_softplus(math.sqrt(var), self.low, self.beta)
        return raw


class LogNormalHead(NormalHead):
    """Features -> :class:`~posheads.distributions.SoftplusLogNormal` (positive targets).

    Raw outputs: ``loc`` and ``scale_eta`` of ``log(y)``; initialised from the moments of
    ``log(y)``.

    Examples
    --------
    >>> head = LogNormalHead(3)
    >>> bool((head(torch.randn(4, 3)).sample() > 0).all())
    True
    """

    distribution_class = D.SoftplusLogNormal

    def _init_raw(self, y, exposure):
        if not bool((y > 0).all()):
            raise ValueError("LogNormalHead needs positive targets")
        return super()._init_raw(torch.log(y), exposure)
