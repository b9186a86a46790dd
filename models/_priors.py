"""Prior distributions of the softplus GLMs (``posheads.models.glm``).

* :class:`SoftplusInverseGamma` -- the default prior of a negative binomial
  concentration ``r``. ``1 / sqrt(r) ~ HalfNormal(scale)`` (a half-normal on the square
  root of the NB2 dispersion ``1 / r``, as the Stan prior-choice notes recommend) is the
  same law as ``r ~ InverseGamma(1/2, rate=1 / (2 scale**2))``; its support is
  :func:`posheads.constraints.softplus_positive`, so every engine and autoguide maps the
  site to the real line with softplus rather than ``exp``.
* :func:`flat` -- an improper flat prior (maximum likelihood at that site).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from posheads.constraints import softplus_positive

__all__ = ["SoftplusInverseGamma", "flat", "half_normal_inverse_sqrt"]


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


def flat(support=constraints.real, event_shape=(), like: torch.Tensor | None = None):
    """Improper uniform prior on ``support`` with the given ``event_shape``.

    Its ``log_prob`` is 0, so the MAP estimate at the site is the maximum likelihood.
    """
    del like  # ImproperUniform has no parameters
    return dist.ImproperUniform(support, torch.Size(), torch.Size(event_shape))
