"""Prior distributions whose positive support maps to the real line by softplus.

* :class:`SoftplusInverseGamma` -- the default prior of a negative-binomial concentration
  ``r``: ``1 / sqrt(r) ~ HalfNormal(scale)`` (a half-normal on the square root of the NB2
  dispersion ``1 / r``) is the law ``r ~ InverseGamma(1/2, rate=1 / (2 scale**2))``
  (:func:`half_normal_inverse_sqrt`); see ``docs/count-likelihoods.md``.
* :class:`SoftplusHalfNormal` -- a half-normal (for scales of weights).
* :class:`SoftplusSupported` -- any law over the positive reals, with that support.
* :func:`flat` -- an improper flat prior (maximum likelihood at that site).

The support of the first two is :func:`posheads.constraints.softplus_positive`, so every
engine and Pyro autoguide maps their sites to the reals with softplus rather than ``exp``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ..constraints import softplus_positive

__all__ = [
    "SoftplusHalfNormal",
    "SoftplusInverseGamma",
    "SoftplusSupported",
    "flat",
    "half_normal_inverse_sqrt",
]


class SoftplusInverseGamma(dist.InverseGamma):
    """``InverseGamma(concentration, rate)`` whose support maps to the reals by softplus.

    Parameters
    ----------
    concentration, rate : Tensor or float, shape ``batch_shape``
        Shape and rate of the inverse gamma law (``1 / r ~ Gamma(concentration, rate)``).
    validate_args : bool, optional

    Examples
    --------
    >>> d = half_normal_inverse_sqrt(1.0)
    >>> d.support
    SoftplusPositive(beta=1.0, low=0.0)
    """

    support = softplus_positive()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SoftplusInverseGamma, _instance)
        return super().expand(batch_shape, _instance=new)


class SoftplusHalfNormal(dist.HalfNormal):
    """``HalfNormal(scale)`` whose support maps to the reals by softplus.

    Examples
    --------
    >>> SoftplusHalfNormal(torch.tensor(2.0)).support
    SoftplusPositive(beta=1.0, low=0.0)
    """

    support = softplus_positive()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SoftplusHalfNormal, _instance)
        return super().expand(batch_shape, _instance=new)


class SoftplusSupported(TorchDistribution):
    """A law over the positive reals whose support maps to the reals by softplus.

    Densities and draws are those of ``base``; only the support differs, so that
    ``biject_to`` (Pyro's autoguides, NUTS) maps the site with softplus as posheads' own
    flat parameter vectors do.

    Parameters
    ----------
    base : Distribution
        A law over ``(0, inf)``.

    Examples
    --------
    >>> d = SoftplusSupported(dist.LogNormal(0.0, 2.0))
    >>> d.support, float(d.log_prob(torch.tensor(1.0)))  # doctest: +ELLIPSIS
    (SoftplusPositive(beta=1.0, low=0.0), -1.61...)
    """

    arg_constraints: dict = {}  # noqa: RUF012 -- checked by the base law
    support = softplus_positive()

    def __init__(self, base, validate_args=None):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def has_rsample(self):
        return self.base.has_rsample

    def expand(self, batch_shape, _instance=None):
        return SoftplusSupported(self.base.expand(batch_shape))

    def log_prob(self, value):
        return self.base.log_prob(value)

    def sample(self, sample_shape=()):
        return self.base.sample(sample_shape)

    def rsample(self, sample_shape=()):
        return self.base.rsample(sample_shape)

    @property
    def mean(self):
        return self.base.mean

    @property
    def variance(self):
        return self.base.variance


def half_normal_inverse_sqrt(scale: float = 1.0, like: torch.Tensor | None = None):
    """Prior on ``r`` such that ``1 / sqrt(r) ~ HalfNormal(scale)``.

    ``1 / r = scale**2 * chi2_1`` is ``Gamma(1/2, rate=1 / (2 scale**2))``, so ``r`` is
    inverse gamma with those parameters: a log density of
    ``-log(2 pi) / 2 - log(scale) - 1.5 log(r) - 1 / (2 scale**2 r)``.

    Parameters
    ----------
    scale : float
        Scale of the half-normal on ``1 / sqrt(r)``; 1 puts the median dispersion ``1 / r``
        at 0.45 and keeps ``r`` away from 0 (where the NB likelihood is flat).
    like : Tensor, optional
        Tensor whose dtype and device the parameters take.

    Returns
    -------
    SoftplusInverseGamma
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    kw = {} if like is None else {"dtype": like.dtype, "device": like.device}
    a = torch.tensor(0.5, **kw)
    b = torch.tensor(0.5 / scale**2, **kw)
    return SoftplusInverseGamma(a, b)


def flat(support=constraints.real, event_shape=()):
    """Improper uniform prior on ``support`` with the given ``event_shape``.

    Its ``log_prob`` is 0, so the MAP estimate at the site is the maximum likelihood.
    """
    return dist.ImproperUniform(support, torch.Size(), torch.Size(event_shape))
