"""The count families: Poisson, NB2, their zero-inflated and hurdle forms, and the
discretized logistic.

:class:`CountFamily` adds what a zero part needs of a count law -- ``log P(y = 0)`` at a
rate -- so :class:`ZeroInflatedFamily` and :class:`HurdleFamily` wrap any count family
(as Pyro's ``ZeroInflatedDistribution`` wraps any base law), with their own starting
values: the share of zeros beyond the count law's, and the rate whose zero-truncated
mean is that of the positive targets.
"""

from __future__ import annotations

import math

import pyro.distributions as dist

from .. import distributions as D
from .. import ops
from .base import Family, Part, Shape, Start
from .start import (
    clip,
    positive_mean_rate,
    solve_truncated_rate,
    weighted_moments,
    zero_share,
)

__all__ = [
    "CONCENTRATION",
    "DISCRETIZED_LOGISTIC",
    "DISPERSION",
    "HURDLE_GATE",
    "HURDLE_NEGATIVE_BINOMIAL",
    "HURDLE_POISSON",
    "NEGATIVE_BINOMIAL",
    "POISSON",
    "ZERO_INFLATED_GATE",
    "ZERO_INFLATED_NEGATIVE_BINOMIAL",
    "ZERO_INFLATED_POISSON",
    "CountFamily",
    "GatedFamily",
    "HurdleFamily",
    "ZeroInflatedFamily",
]

CONCENTRATION = Shape(
    "concentration", default=1.0, bounds=(0.1, 1e3),
    prior=lambda like: D.half_normal_inverse_sqrt(1.0, like=like),
    description="NB2 concentration r (variance mu + mu**2 / r); "
                "prior 1 / sqrt(r) ~ HalfNormal(1)")
DISPERSION = Shape(
    "dispersion", default=1.0, bounds=(0.01, 100.0),
    prior=lambda like: D.SoftplusSupported(
        dist.LogNormal(like.new_tensor(0.0), like.new_tensor(2.0))),
    description="variance / mean of the discretized logistic; prior LogNormal(0, 2)")
ZERO_INFLATED_GATE = Part("gate", "gate_logits", default=0.1, bounds=(0.01, 0.9))
HURDLE_GATE = Part("gate", "gate_logits", default=0.1, bounds=(1e-3, 1.0 - 1e-3))


class CountFamily(Family):
    """A count law that a zero part can wrap: it knows ``log P(y = 0)`` at a rate, and
    may give its rows' closed forms unweighted (:meth:`jet`)."""

    def log_zero_probability(self, rate: float, shapes: dict[str, float]) -> float:
        """``log P(y = 0)`` of the law with mean ``rate`` and the given shapes."""
        raise NotImplementedError

    def jet(self, y, exposure=None, *, beta=1.0, threshold=20.0):
        """The law's :class:`~.count_jets.CountJet` on ``y`` (None: no closed forms)."""
        return None


class _Poisson(CountFamily):
    def log_zero_probability(self, rate, shapes):
        return -rate

    def jet(self, y, exposure=None, *, beta=1.0, threshold=20.0):
        from .count_jets import PoissonJet

        return PoissonJet(y, exposure, beta=beta, switch=ops.linear_switch(y.dtype, threshold))

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        from .count_rows import PoissonRows

        return PoissonRows(self, y, exposure, weights, beta=beta, threshold=threshold)


class _NegativeBinomial(CountFamily):
    def log_zero_probability(self, rate, shapes):
        r = shapes["concentration"]
        return -r * math.log1p(rate / r)

    def shape_starts(self, y, weights=None):
        # var = mu + mu^2 / r; data without over-dispersion start at the largest r
        mean, var = weighted_moments(y, weights)
        r = mean**2 / (var - mean) if var > mean > 0 else math.inf
        return {"concentration": clip(r, CONCENTRATION.bounds)}

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        from .count_rows import NegativeBinomialRows

        return NegativeBinomialRows(self, y, exposure, weights, beta=beta, threshold=threshold)

    def jet(self, y, exposure=None, *, beta=1.0, threshold=20.0):
        from .count_jets import NegativeBinomialJet

        return NegativeBinomialJet(y, exposure, beta=beta,
                                   switch=ops.linear_switch(y.dtype, threshold))


class GatedFamily(Family):
    """A count family with a zero part in front of a count law (the zero-inflated and
    hurdle families): the count law's shapes, one part, whole-number targets.

    Parameters
    ----------
    name : str
    distribution : type
        The distribution class of the whole law.
    base : CountFamily
        The count law behind the zero part.
    **kwargs
        As in :class:`Family` (``aliases``, ``description``).
    """

    part: Part

    def __init__(self, name, distribution, base: CountFamily, **kwargs):
        super().__init__(name, distribution, shapes=base.shapes, parts=(self.part,),
                         integer=True, **kwargs)
        self.base = base

    def shape_starts(self, y, weights=None):
        return self.base.shape_starts(y, weights)

    def _gated_rows(self, rows_class, y, exposure, weights, beta, threshold):
        """``rows_class`` over the base law's jet, or the autograd rows without one."""
        jet = self.base.jet(y, exposure, beta=beta, threshold=threshold)
        if jet is None:
            return super().rows(y, exposure, weights, beta=beta, threshold=threshold)
        return rows_class(self, jet, y, exposure, weights, beta=beta, threshold=threshold)


class ZeroInflatedFamily(GatedFamily):
    """Structural zeros of probability ``sigmoid(gate_logits)``, else the count law."""

    part = ZERO_INFLATED_GATE

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        from .gated_rows import ZeroInflatedPoissonRows, ZeroInflatedRows

        if isinstance(self.base, _Poisson):  # written out in full
            return ZeroInflatedPoissonRows(self, y, exposure, weights, beta=beta,
                                           threshold=threshold)
        return self._gated_rows(ZeroInflatedRows, y, exposure, weights, beta, threshold)

    def start(self, y, weights=None, exposure=None) -> Start:
        # zeros beyond those of the count law at the overall rate are structural:
        # p0 = pi + (1 - pi) P0  =>  pi = (p0 - P0) / (1 - P0)
        base = self.base.start(y, weights, exposure)
        p0 = zero_share(y, weights)
        count_zero = math.exp(self.base.log_zero_probability(base.rate, base.shapes))
        pi = clip((p0 - count_zero) / max(1.0 - count_zero, 1e-12), ZERO_INFLATED_GATE.bounds)
        return Start(base.rate / (1.0 - pi), base.shapes, {"gate": pi})


class HurdleFamily(GatedFamily):
    """A zero with probability ``sigmoid(gate_logits)``, else the count law truncated to
    ``y > 0``."""

    part = HURDLE_GATE

    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        from .gated_rows import HurdleRows

        return self._gated_rows(HurdleRows, y, exposure, weights, beta, threshold)

    def start(self, y, weights=None, exposure=None) -> Start:
        shapes = self.base.shape_starts(y, weights)
        gate = clip(zero_share(y, weights), HURDLE_GATE.bounds)
        positive = positive_mean_rate(y, exposure, weights)
        rate = solve_truncated_rate(1.0 if positive is None else positive,
                                    lambda mu: self.base.log_zero_probability(mu, shapes))
        return Start(rate, shapes, {"gate": gate})


class _DiscretizedLogistic(Family):
    def shape_starts(self, y, weights=None):
        mean, var = weighted_moments(y, weights)
        ratio = var / mean if mean > 0 else DISPERSION.default
        return {"dispersion": clip(ratio, DISPERSION.bounds)}


POISSON = _Poisson(
    "poisson", D.SoftplusPoisson, integer=False,
    description="Poisson counts (variance = mean)")
NEGATIVE_BINOMIAL = _NegativeBinomial(
    "negative_binomial", D.SoftplusNegativeBinomial, shapes=(CONCENTRATION,), integer=False,
    aliases=("nb", "nb2"), description="negative-binomial (NB2) counts, over-dispersed")
ZERO_INFLATED_POISSON = ZeroInflatedFamily(
    "zero_inflated_poisson", D.SoftplusZeroInflatedPoisson, POISSON, aliases=("zip",),
    description="zero-inflated Poisson: structural zeros, else Poisson")
ZERO_INFLATED_NEGATIVE_BINOMIAL = ZeroInflatedFamily(
    "zero_inflated_negative_binomial", D.SoftplusZeroInflatedNegativeBinomial,
    NEGATIVE_BINOMIAL, aliases=("zinb",),
    description="zero-inflated negative binomial: structural zeros, else NB2")
HURDLE_POISSON = HurdleFamily(
    "hurdle_poisson", D.SoftplusHurdlePoisson, POISSON,
    description="hurdle Poisson: a zero part, else a zero-truncated Poisson")
HURDLE_NEGATIVE_BINOMIAL = HurdleFamily(
    "hurdle_negative_binomial", D.SoftplusHurdleNegativeBinomial, NEGATIVE_BINOMIAL,
    description="hurdle negative binomial: a zero part, else a zero-truncated NB2")
DISCRETIZED_LOGISTIC = _DiscretizedLogistic(
    "discretized_logistic", D.SoftplusDiscretizedLogistic, shapes=(DISPERSION,),
    description="rounded logistic counts with a free dispersion, below or above the mean")
