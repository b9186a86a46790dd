"""Count distributions under a softplus link: Poisson, NB2, zero-inflated and hurdle.

The count families are mixins (``_PoissonCounts``, ``_NegativeBinomialCounts``) providing
``_count_log_prob``, ``_count_sample``, ``_count_moments`` and the zero-truncation pieces
(``_log_positive``, ``_dispersion_index``, ``_positive_sample``) to the shared
``SoftplusCounts`` base; ``_ZeroInflated`` wraps any of them with structural zeros and
``_Hurdle`` with a separate zero part in front of the zero-truncated count.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import constraints

from .. import ops
from ._base import (
    SoftplusCounts,
    as_float,
    log1mexp,
    sample_negative_binomial,
    sample_poisson,
    sample_truncated_negative_binomial,
)

__all__ = [
    "SoftplusHurdleNegativeBinomial",
    "SoftplusHurdlePoisson",
    "SoftplusNegativeBinomial",
    "SoftplusPoisson",
    "SoftplusZeroInflatedNegativeBinomial",
    "SoftplusZeroInflatedPoisson",
]


class _PoissonCounts:
    """Poisson count part (mixin for ``SoftplusCounts``)."""

    def _count_log_prob(self, value):
        if self.low == 0:
            return ops.poisson_softplus_log_prob(
                self.eta, value, self.beta, self.threshold, self._exposure)
        return value * self.log_rate - self.rate - torch.lgamma(value + 1.0)

    def _count_sample(self, shape):
        return sample_poisson(self.rate.expand(shape))

    def _count_moments(self):
        rate = self.rate
        return rate, rate

    def _log_positive(self):
        # log P(y > 0) = log(1 - exp(-rate)), from log(rate) once the rate underflows
        return log1mexp(self.rate, self.log_rate)

    def _dispersion_index(self):
        return torch.ones_like(self.rate)

    def _positive_sample(self, shape):
        rate = self.rate.expand(shape)
        # Zero-truncated Poisson, exactly: the first event of a rate-`rate` process on
        # [0, 1] given one occurs is at t = -log1p(u expm1(-rate)) / rate, and the events
        # after it number Poisson(rate (1 - t)). No rejection, fine for tiny rates.
        u = torch.rand_like(rate)
        rest = (rate + torch.log1p(u * torch.expm1(-rate))).clamp(min=0)
        return 1.0 + sample_poisson(rest)


class _NegativeBinomialCounts:
    """NB2 count part with ``concentration`` r (mixin for ``SoftplusCounts``)."""

    def _count_log_prob(self, value):
        r = self.concentration
        if self.low == 0:
            return ops.negative_binomial_softplus_log_prob(
                self.eta, value, r, self.beta, self.threshold, self._exposure)
        d = self.log_rate - torch.log(r)  # logit of mu / (r + mu), finite for any mu
        return (torch.lgamma(value + r) - torch.lgamma(r) - torch.lgamma(value + 1.0)
                - value * ops.softplus(-d) - r * ops.softplus(d))

    def _count_sample(self, shape):
        return sample_negative_binomial(self.rate.expand(shape),
                                        self.concentration.expand(shape))

    def _count_moments(self):
        mu = self.rate
        return mu, mu * (1.0 + mu / self.concentration)

    def _log_positive(self):
        # -log P(0) = r log(1 + mu / r) = r softplus(d); its log from log_softplus when the
        # rate is so small that the product underflows
        r = self.concentration
        d = self.log_rate - torch.log(r)
        return log1mexp(r * ops.softplus(d), torch.log(r) + ops.log_softplus(d))

    def _dispersion_index(self):
        return 1.0 + self.rate / self.concentration

    def _positive_sample(self, shape):
        return sample_truncated_negative_binomial(self.rate.expand(shape),
                                                  self.concentration.expand(shape))


class _ZeroInflated:
    """Structural zeros with probability ``gate = sigmoid(gate_logits)`` (mixin)."""

    @property
    def gate(self):
        return torch.sigmoid(self.gate_logits)

    @property
    def mean(self):
        return torch.sigmoid(-self.gate_logits) * self._count_moments()[0]

    @property
    def variance(self):
        # E[y^2] - E[y]^2 = (1 - pi) (var + pi mu^2), written without cancellation
        mu, var = self._count_moments()
        pi = self.gate
        return (1.0 - pi) * (var + pi * mu * mu)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = as_float(value, self.eta)
        g = self.gate_logits
        log_count = self._count_log_prob(value) - ops.softplus(g)  # log(1 - pi) + log p(y)
        log_zero = torch.logaddexp(-ops.softplus(-g), log_count)  # log(pi + (1 - pi) p(0))
        return torch.where(value == 0, log_zero, log_count)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            counts = self._count_sample(shape)
            structural = torch.bernoulli(self.gate.expand(shape)).bool()
            return counts.masked_fill(structural, 0.0)


class _Hurdle:
    """A zero with probability ``gate = sigmoid(gate_logits)``, else the count part
    truncated to ``y > 0`` (mixin).

    ``log P(0) = -softplus(-g)``; for ``y > 0``,
    ``log P(y) = -softplus(g) + log p(y) - log P_count(y > 0)``.
    """

    @property
    def gate(self):
        """Probability of a zero, ``sigmoid(gate_logits)``."""
        return torch.sigmoid(self.gate_logits)

    def _truncated_mean(self):
        # rate / P(count > 0) in log space: tends to 1 as the rate underflows
        return torch.exp(self.log_rate - self._log_positive())

    @property
    def mean(self):
        return torch.sigmoid(-self.gate_logits) * self._truncated_mean()

    @property
    def variance(self):
        # the truncated count has E[y^2] = m (var / mu + mu) for its mean m, so
        # Var = p m (var / mu + mu - p m) with p = 1 - gate
        p_pos, m = torch.sigmoid(-self.gate_logits), self._truncated_mean()
        return p_pos * m * (self._dispersion_index() + self.rate - p_pos * m)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = as_float(value, self.eta)
        g = self.gate_logits
        log_pos = self._count_log_prob(value) - self._log_positive()
        return torch.where(value == 0, -ops.softplus(-g), log_pos - ops.softplus(g))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            counts = self._positive_sample(shape)
            zero = torch.bernoulli(self.gate.expand(shape)).bool()
            return counts.masked_fill(zero, 0.0)


class _GatedPoissonArgs:
    """Parameters ``(eta, gate_logits)`` of a Poisson count with a zero part (mixin)."""

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "gate_logits": constraints.real,
        "exposure": constraints.positive,
    }

    def __init__(self, eta, gate_logits, *, beta=1.0, threshold=20.0, low=0.0,
                 exposure=None, validate_args=None):
        params = {"eta": eta, "gate_logits": gate_logits, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)


class _GatedNegativeBinomialArgs:
    """Parameters ``(eta, concentration, gate_logits)`` of an NB2 count with a zero part
    (mixin)."""

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "concentration": constraints.positive,
        "gate_logits": constraints.real,
        "exposure": constraints.positive,
    }

    def __init__(self, eta, concentration, gate_logits, *, beta=1.0, threshold=20.0,
                 low=0.0, exposure=None, validate_args=None):
        params = {"eta": eta, "concentration": concentration, "gate_logits": gate_logits,
                  "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)


# ---------------------------------------------------------------- count distributions
class SoftplusPoisson(_PoissonCounts, SoftplusCounts):
    """Poisson with rate ``exposure * (low + softplus_beta(eta))``.

    Parameters
    ----------
    eta : Tensor or float, shape ``batch_shape``
        Linear predictor (any real number).
    beta, threshold : float
        Softness and linear-branch threshold of the softplus (see :mod:`posheads.ops`).
    low : float
        Floor of the rate per unit exposure, ``>= 0``.
    exposure : Tensor, optional
        Positive exposure multiplying the rate; broadcast with ``eta``.
    validate_args : bool, optional
        Check parameters and, in ``log_prob``, that values are non-negative whole numbers.

    Examples
    --------
    >>> d = SoftplusPoisson(torch.tensor([0.0, 2.0]))
    >>> d.log_prob(torch.tensor([1.0, 3.0])).shape
    torch.Size([2])
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "exposure": constraints.positive,
    }

    def __init__(self, eta, *, beta=1.0, threshold=20.0, low=0.0, exposure=None,
                 validate_args=None):
        params = {"eta": eta, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)


class SoftplusNegativeBinomial(_NegativeBinomialCounts, SoftplusCounts):
    """NB2 with mean ``mu = exposure * (low + softplus(eta))``, variance ``mu + mu**2 / r``.

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor.
    concentration : Tensor or float
        ``r > 0`` (``total_count`` of torch's ``NegativeBinomial``); ``1 / r`` is the
        dispersion. Broadcast with ``eta`` to ``batch_shape``.
    beta, threshold, low, exposure, validate_args
        As in :class:`SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusNegativeBinomial(torch.zeros(3), concentration=2.0)
    >>> d.sample((5,)).shape
    torch.Size([5, 3])
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "concentration": constraints.positive,
        "exposure": constraints.positive,
    }

    def __init__(self, eta, concentration, *, beta=1.0, threshold=20.0, low=0.0,
                 exposure=None, validate_args=None):
        params = {"eta": eta, "concentration": concentration, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)


class SoftplusZeroInflatedPoisson(_ZeroInflated, _PoissonCounts, _GatedPoissonArgs,
                                  SoftplusCounts):
    """Zero-inflated Poisson: a zero with probability ``sigmoid(gate_logits)``, else Poisson.

    ``log P(0) = logaddexp(-softplus(-g), -softplus(g) - rate)`` and
    ``log P(y > 0) = -softplus(g) + log Poisson(y | rate)``, with ``rate`` as in
    :class:`SoftplusPoisson`.

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the Poisson part.
    gate_logits : Tensor or float
        Logits of the structural-zero probability; broadcast with ``eta``.
    beta, threshold, low, exposure, validate_args
        As in :class:`SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusZeroInflatedPoisson(torch.tensor(1.0), gate_logits=torch.tensor(-1.0))
    >>> float(d.mean) < float(d.rate)
    True
    """


class SoftplusZeroInflatedNegativeBinomial(
        _ZeroInflated, _NegativeBinomialCounts, _GatedNegativeBinomialArgs, SoftplusCounts):
    """Zero-inflated NB2: a zero with probability ``sigmoid(gate_logits)``, else NB2.

    Parameters
    ----------
    eta, concentration : Tensor or float
        As in :class:`SoftplusNegativeBinomial`.
    gate_logits : Tensor or float
        Logits of the structural-zero probability.
    beta, threshold, low, exposure, validate_args
        As in :class:`SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusZeroInflatedNegativeBinomial(0.5, 2.0, gate_logits=torch.zeros(4))
    >>> d.batch_shape
    torch.Size([4])
    """


class SoftplusHurdlePoisson(_Hurdle, _PoissonCounts, _GatedPoissonArgs, SoftplusCounts):
    """Hurdle Poisson: zero with probability ``sigmoid(gate_logits)``, else zero-truncated.

    ``log P(0) = -softplus(-g)``; for ``y > 0``,
    ``log P(y) = -softplus(g) + log Poisson(y | rate) - log(1 - exp(-rate))``, where the
    last term is computed from ``log(rate)`` when ``rate`` underflows, so ``log_prob`` is
    finite for every finite ``eta`` (as ``rate -> 0`` the positive part puts its mass on 1).

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the (untruncated) Poisson rate.
    gate_logits : Tensor or float
        Logits of ``P(y = 0)``.
    beta, threshold, low, exposure, validate_args
        As in :class:`SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusHurdlePoisson(torch.tensor(-30.0), gate_logits=torch.tensor(0.0))
    >>> d.log_prob(torch.tensor(1.0))  # log(1/2): the positive part is all at 1
    tensor(-0.6931)
    """


class SoftplusHurdleNegativeBinomial(
        _Hurdle, _NegativeBinomialCounts, _GatedNegativeBinomialArgs, SoftplusCounts):
    """Hurdle NB2: zero with probability ``sigmoid(gate_logits)``, else zero-truncated NB2.

    ``log P(0) = -softplus(-g)``; for ``y > 0``,
    ``log P(y) = -softplus(g) + log NB(y | mu, r) - log(1 - (r / (r + mu))**r)``, the last
    term from ``log(mu)`` when ``mu`` underflows (the positive part then sits on 1).
    Samples are exact: NB draws rejected while zero, and after a few rounds the remaining
    ones (those with ``P(0)`` near 1) by inverting the truncated CDF with SciPy.

    Parameters
    ----------
    eta, concentration : Tensor or float
        As in :class:`SoftplusNegativeBinomial` (of the untruncated NB2).
    gate_logits : Tensor or float
        Logits of ``P(y = 0)``.
    beta, threshold, low, exposure, validate_args
        As in :class:`SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusHurdleNegativeBinomial(0.5, 2.0, gate_logits=torch.tensor([-40.0, 0.0]))
    >>> bool((d.sample((100,))[:, 0] > 0).all())
    True
    """
