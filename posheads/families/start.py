"""Moment arithmetic behind the families' starting values.

Every family starts from the same few statistics of its targets -- the weighted mean
rate, the weighted mean and variance, the weighted share of zeros, the mean of the
positive targets -- computed here once. Nothing here estimates: a start only has to be
finite, on the right scale and inside the region where the likelihood is informative.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "clip",
    "positive_mean_rate",
    "softplus_inverse_scalar",
    "solve_truncated_rate",
    "weighted_mean_rate",
    "weighted_moments",
    "zero_share",
]


def clip(x: float, bounds: tuple[float, float]) -> float:
    """``x`` clipped to ``[bounds[0], bounds[1]]``."""
    return min(max(x, bounds[0]), bounds[1])


def softplus_inverse_scalar(value: float, beta: float = 1.0, threshold: float = 20.0) -> float:
    """``softplus_beta^{-1}`` of one positive Python float (no tensor round trip).

    ``value + log(-expm1(-beta value)) / beta`` as :func:`posheads.ops.softplus_inverse`
    computes it, with its linear branch above the float64 switch.
    """
    from .. import ops

    z = beta * value
    if z > ops.linear_switch(torch.float64, threshold):
        return value
    return value + math.log(-math.expm1(-z)) / beta


def weighted_mean_rate(y, exposure=None, weights=None) -> torch.Tensor:
    """``sum(w y) / sum(w t)``: the maximum-likelihood rate of an intercept-only model.

    When every count is 0 it is half a count over the total exposure, ``0.5 / sum(t)``,
    so that its softplus inverse stays finite.

    Returns
    -------
    Tensor, shape ``()``
        On the device of ``y``.
    """
    if exposure is None and weights is None:
        return torch.where(y.sum() > 0, y.mean(), 0.5 / y.shape[0])
    t = torch.ones_like(y) if exposure is None else exposure
    wy = (y if weights is None else weights * y).sum()
    wt = (t if weights is None else weights * t).sum()
    return torch.where(wy > 0, wy / wt, 0.5 / t.sum())


def _weights(y, weights):
    return torch.ones_like(y) if weights is None else weights


def weighted_moments(y, weights=None) -> tuple[float, float]:
    """Weighted mean and (population) variance of ``y``; the variance is 0 for one value."""
    w = _weights(y, weights)
    total = float(w.sum())
    mean = float((w * y).sum()) / total
    var = float((w * (y - mean) ** 2).sum()) / total
    return mean, var


def zero_share(y, weights=None) -> float:
    """The weighted share of zero targets."""
    w = _weights(y, weights)
    return float((w * (y == 0)).sum() / w.sum())


def positive_mean_rate(y, exposure=None, weights=None) -> float | None:
    """``sum(w y) / sum(w t)`` over the positive targets; None when there are none."""
    positive = y > 0
    if not bool(positive.any()):
        return None
    w = _weights(y, weights)[positive]
    t = 1.0 if exposure is None else exposure[positive]
    return float((w * y[positive]).sum() / (w * t).sum())


# A positive part's starting rate is kept at or above this: below it the truncated law
# sits on 1 and the rate is not identified.
_MIN_RATE = 1e-3


def solve_truncated_rate(mean: float, log_zero_probability) -> float:
    """The rate ``mu`` whose zero-truncated law has mean ``mean``.

    Solves ``mu / (1 - P0(mu)) = mean`` by bisection on ``log(mu)`` (with
    ``1 - P0 = -expm1(log P0)``, exact for small ``mu``): the truncated mean
    increases with ``mu`` from 1 (all mass on 1 as ``mu -> 0``) and exceeds ``mu``, so
    the root lies in ``(0, mean)``. A mean of 1 or less gives ``_MIN_RATE``.

    Parameters
    ----------
    mean : float
        Mean of the positive targets.
    log_zero_probability : callable
        ``mu -> log P(y = 0)`` of the untruncated count law.
    """
    if not mean > 1.0:
        return _MIN_RATE
    lo, hi = math.log(1e-12), math.log(mean)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        mu = math.exp(mid)
        if mu / -math.expm1(log_zero_probability(mu)) < mean:
            lo = mid
        else:
            hi = mid
    return max(math.exp(0.5 * (lo + hi)), _MIN_RATE)
