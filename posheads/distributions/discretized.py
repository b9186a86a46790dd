"""A count law of any dispersion: the softplus-link discretized logistic.

Poisson and negative-binomial counts vary at least as much as their mean; counts of
scheduled events are often *under*-dispersed. :class:`SoftplusDiscretizedLogistic`
rounds a logistic variable to the counts, with a free dispersion below or above the mean.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from .. import ops
from ._base import SoftplusLinked, as_float, check_counts

__all__ = ["SoftplusDiscretizedLogistic"]

# E[y] sums the logistic tails P(y >= k) up to this many scales past the location: the
# terms left out are below exp(-40) of the mean.
_MEAN_TAIL_SCALES = 40.0


class SoftplusDiscretizedLogistic(SoftplusLinked):
    """Counts ``y = max(0, round(z))`` with ``z ~ Logistic(mu, s)``: a count law of any dispersion.

    ``mu = exposure * (low + softplus_beta(eta))`` and ``s = sqrt(3 * dispersion * mu) / pi``,
    so the variance is about ``dispersion * mu`` (plus 1/12 from rounding) where ``mu`` is
    a few ``s`` above zero: ``dispersion < 1`` is under-dispersed, ``1`` Poisson-like.
    The logistic's exponential tails make a fit robust to a few outlying counts. The
    probabilities are differences of logistic CDFs, written in log space without
    cancellation (``docs/count-likelihoods.md``):

    ``log P(y) = -softplus(-b) - softplus(b - 1/s) + log(1 - exp(-1/s))`` for ``y >= 1``,
    ``log P(0) = -softplus(-b)``, with ``b = (y + 1/2 - mu) / s``.

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the location ``mu`` (the mean where ``mu >> s``).
    dispersion : Tensor or float
        ``> 0``; broadcast with ``eta`` to ``batch_shape``.
    beta, threshold, low : float
        As in :class:`posheads.distributions.SoftplusPoisson`.
    exposure : Tensor, optional
        Positive exposure multiplying ``mu``.
    validate_args : bool, optional

    Examples
    --------
    >>> d = SoftplusDiscretizedLogistic(torch.tensor(300.0), dispersion=0.1)
    >>> float(d.sample((2000,)).std()) < 17.0  # a Poisson(300) has sd 17.3
    True
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "dispersion": constraints.positive,
        "exposure": constraints.positive,
    }
    support = constraints.nonnegative_integer

    def __init__(self, eta, dispersion, *, beta=1.0, threshold=20.0, low=0.0, exposure=None,
                 validate_args=None):
        params = {"eta": eta, "dispersion": dispersion, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)

    @lazy_property
    def exposure(self):
        """Ones when no exposure was given."""
        return torch.ones_like(self.eta)

    @property
    def loc(self):
        """``mu = exposure * (low + softplus(eta))``."""
        return self.exposure * (self.low + ops.softplus(self.eta, self.beta, self.threshold))

    @property
    def scale(self):
        """Logistic scale ``s``, floored at ``finfo.eps`` so ``1 / s`` stays finite."""
        s = torch.sqrt(3.0 * self.dispersion * self.loc) / math.pi
        return s.clamp(min=torch.finfo(s.dtype).eps)

    @property
    def mean(self):
        # E[y] = sum_{k >= 1} P(y >= k), each a logistic tail
        mu, s = self.loc, self.scale
        top = int(torch.max(mu + _MEAN_TAIL_SCALES * s).ceil().item()) + 1
        k = torch.arange(1, top + 1, dtype=mu.dtype, device=mu.device)
        return torch.sigmoid((mu.unsqueeze(-1) - k + 0.5) / s.unsqueeze(-1)).sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = as_float(value, self.eta)
        s = self.scale
        b = (value + 0.5 - self.loc) / s
        log_zero = -ops.softplus(-b)
        log_bin = log_zero - ops.softplus(b - 1.0 / s) + torch.log(-torch.expm1(-1.0 / s))
        return torch.where(value == 0, log_zero, log_bin)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            tiny = torch.finfo(self.eta.dtype).tiny  # keeps log(u) and log1p(-u) finite
            u = torch.rand(shape, dtype=self.eta.dtype, device=self.eta.device)
            u = u.clamp(tiny, 1.0 - torch.finfo(self.eta.dtype).eps)
            z = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.round(z).clamp(min=0.0)

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor):
            check_counts(type(self).__name__, value)
        super()._validate_sample(value)
