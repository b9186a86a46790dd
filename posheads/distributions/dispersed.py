"""Consul's generalized Poisson under a softplus link: counts below or above the Poisson's
dispersion.

:class:`SoftplusGeneralizedPoisson` is parameterised by its mean ``mu`` (the softplus link
of ``eta``, times the exposure) and its *dispersion* ``delta = Var[y] / E[y]``, the
same shape as the discretized logistic's, so one positive number says how far a series is
from Poisson (``delta = 1``). In Consul's own parameters ``theta = mu / s`` and
``lambda = 1 - 1 / s`` with ``s = sqrt(delta)``:

``P(y) = theta (theta + lambda y)**(y - 1) exp(-theta - lambda y) / y!``.

For ``delta >= 1`` (``0 <= lambda < 1``) this is a proper law on all counts with mean
``mu`` and variance ``delta mu``. For ``delta < 1`` (``lambda < 0``) the formula is only
meaningful while ``theta + lambda y > 0``: the support is cut at the last such count and
the terms no longer sum to one. The law here is *renormalised over that truncated
support*, so its probabilities always sum to one; its mean and variance are then computed
from the probabilities wherever they differ from ``mu`` and ``delta mu``
(``docs/count-likelihoods.md`` derives where that is, and why the same renormalisation
also covers ``lambda < -1``, below Consul's original range).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import constraints

from ._base import SoftplusCounts, sample_poisson

__all__ = ["SoftplusGeneralizedPoisson"]

# The renormalising constant differs from 1 by more than 1e-12 only where the support's
# cut is within this many standard deviations of the mean...
_CUT_SDS = 20.0
# ... or where the standard deviation is below this many counts (the formula then
# behaves like a density sampled on the integers, whose sum is not 1); the check
# against mpmath is in tests/test_under_dispersed.py.
_LATTICE_SD = 2.0
# The window summed for the constant and the moments: the mean +- this many standard
# deviations + _WINDOW_PAD counts. Terms outside are below exp(-100) of the mode.
_WINDOW_SDS = 15.0
_WINDOW_PAD = 10.0
# Under-dispersed draws invert the CDF on a window of +-_SAMPLE_SDS standard deviations;
# rows whose standard deviation exceeds _SAMPLE_MAX_SD take a rounded normal draw instead
# (their skewness, (1 + 2 lambda) / sqrt(theta (1 - lambda)) = (3 s**2 - 2 s) / sd, is
# at most 1 / sd = 2e-3, so the two laws agree to that order).
_SAMPLE_SDS = 10.0
_SAMPLE_MAX_SD = 500.0
# Entries of the CDF table built in one pass of inversion (bounds the memory of a draw).
_SAMPLE_TABLE = 2**24
# The branching construction of over-dispersed draws ends with probability one; this cap
# only bounds the loop (a generation has lambda times the individuals of the last).
_MAX_GENERATIONS = 100_000


def _log_terms(y, mu, log_mu, s):
    """``log`` of Consul's term at counts ``y`` (broadcast with ``mu``, ``s``), and
    whether ``y`` lies in the support.

    With ``u = mu + (s - 1) y = s (theta + lambda y)``:
    ``log p(y) = log mu - y log s + (y - 1) log u - u / s - lgamma(y + 1)``, and
    ``log p(0) = -mu / s`` exactly. ``-inf`` outside the support (``u <= 0``).
    """
    tiny = torch.finfo(mu.dtype).tiny
    u = mu + (s - 1.0) * y
    inside = (s >= 1.0) | (u > 0) | (y == 0)  # only an under-dispersed law is cut
    # u underflows only when mu and (s - 1) y both do: then log u = log mu to every digit
    log_u = torch.where(u > tiny, torch.log(torch.where(u > tiny, u, torch.ones_like(u))),
                        log_mu)
    general = (log_mu - y * torch.log(s) + (y - 1.0) * log_u - u / s
               - torch.lgamma(y + 1.0))
    value = torch.where(y == 0, -mu / s, general)
    return torch.where(inside, value, torch.full_like(value, -math.inf)), inside


def _needs_sum(mu, s):
    """Rows whose renormalising constant is not 1 to 1e-12: under-dispersed, and the cut
    is near the mean or the law is narrower than the integers resolve."""
    sd = s * mu.sqrt()
    cut_in_sds = mu.sqrt() / (1.0 - s).clamp(min=torch.finfo(s.dtype).tiny)
    return (s < 1.0) & ((cut_in_sds < _CUT_SDS) | (sd < _LATTICE_SD))


def _count_window(mu, s, sds, pad):
    """Counts ``lo + arange(width)`` around each mean (shape ``mu.shape + (width,)``)."""
    half = sds * s * mu.sqrt() + pad
    lo = torch.floor((mu - half).clamp(min=0.0)).detach()
    width = int(torch.ceil(2.0 * half.max()).item()) + 2 if mu.numel() else 1
    k = torch.arange(width, dtype=mu.dtype, device=mu.device)
    return lo.unsqueeze(-1) + k


class SoftplusGeneralizedPoisson(SoftplusCounts):
    """Consul's generalized Poisson with mean ``mu = exposure * (low + softplus(eta))`` and
    variance ``dispersion * mu``, renormalised over its support when under-dispersed.

    ``dispersion < 1`` is under-dispersed (scheduled events), ``1`` is the Poisson, ``> 1``
    over-dispersed (a Poisson mixture: the total progeny of a branching process). Any
    positive dispersion is valid: below 1 the support is ``{0, ..., m}`` with ``m`` the
    last count where ``mu + (sqrt(dispersion) - 1) y > 0``, and ``log_prob`` is ``-inf``
    past it (probability 0, not an error). ``mean`` and ``variance`` are ``mu`` and
    ``dispersion * mu`` except where the truncation moves them (small means), where they
    are summed from the probabilities.

    Parameters
    ----------
    eta : Tensor or float, shape ``batch_shape``
        Linear predictor of the mean.
    dispersion : Tensor or float
        ``Var[y] / E[y] > 0``; broadcast with ``eta``.
    beta, threshold, low, exposure, validate_args
        As in :class:`~posheads.distributions.SoftplusPoisson`.

    Examples
    --------
    >>> d = SoftplusGeneralizedPoisson(torch.tensor(300.0, dtype=torch.float64), 0.2)
    >>> float(d.mean), round(float(d.variance), 6)
    (300.0, 60.0)
    >>> y = torch.arange(0.0, 400.0, dtype=torch.float64)
    >>> round(float(d.log_prob(y).exp().sum()), 6)
    1.0
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "dispersion": constraints.positive,
        "exposure": constraints.positive,
    }

    def __init__(self, eta, dispersion, *, beta=1.0, threshold=20.0, low=0.0,
                 exposure=None, validate_args=None):
        params = {"eta": eta, "dispersion": dispersion, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)

    @property
    def scale_ratio(self):
        """``s = sqrt(dispersion)``: ``theta = mu / s`` and ``lambda = 1 - 1 / s``."""
        return self.dispersion.sqrt()

    @property
    def lam(self):
        """Consul's ``lambda = 1 - 1 / sqrt(dispersion)`` (negative when under-dispersed)."""
        return 1.0 - 1.0 / self.scale_ratio

    @property
    def theta(self):
        """Consul's ``theta = mu / sqrt(dispersion)``."""
        return self.rate / self.scale_ratio

    # ------------------------------------------------------------- renormalisation
    def _window_terms(self, index):
        """Log terms on the summation window of the rows ``index`` (flat), and the counts."""
        mu, log_mu = self.rate.reshape(-1)[index], self.log_rate.reshape(-1)[index]
        s = self.scale_ratio.expand(self.batch_shape).reshape(-1)[index]
        y = _count_window(mu, s, _WINDOW_SDS, _WINDOW_PAD)
        log_p, _ = _log_terms(y, mu.unsqueeze(-1), log_mu.unsqueeze(-1), s.unsqueeze(-1))
        return log_p, y

    def _summed(self):
        """Flat indices of the rows needing sums, ``log Z`` there, and their moments."""
        s = self.scale_ratio.expand(self.batch_shape).reshape(-1)
        index = _needs_sum(self.rate.reshape(-1), s).nonzero().squeeze(-1)
        log_p, y = self._window_terms(index)
        log_z = torch.logsumexp(log_p, -1)
        p = torch.exp(log_p - log_z.unsqueeze(-1))
        mean = (p * y).sum(-1)
        var = (p * (y - mean.unsqueeze(-1)) ** 2).sum(-1)
        return index, log_z, mean, var

    def _scatter(self, full, index, values):
        flat = full.reshape(-1).clone()
        flat = flat.index_put((index,), values)
        return flat.reshape(full.shape)

    def log_normalizer(self):
        """``log`` of the sum of Consul's terms over the support; 0 (exactly, or to 1e-12)
        where no renormalisation is needed. Shape ``batch_shape``."""
        index, log_z, _, _ = self._summed()
        return self._scatter(torch.zeros(self.batch_shape, dtype=self.eta.dtype,
                                         device=self.eta.device), index, log_z)

    # ------------------------------------------------------------- count protocol
    def _count_log_prob(self, value):
        mu, log_mu, s = self.rate, self.log_rate, self.scale_ratio
        log_p, _ = _log_terms(value, mu, log_mu, s)
        if bool((s < 1.0).any()):
            log_z = self.log_normalizer()
            log_p = log_p - log_z
        return log_p

    def _count_moments(self):
        mu = self.rate
        dispersion = self.dispersion.expand(self.batch_shape)
        index, _, mean, var = self._summed()
        return self._scatter(mu, index, mean), self._scatter(dispersion * mu, index, var)

    def _count_sample(self, shape):
        mu = self.rate.expand(shape)
        s = self.scale_ratio.expand(shape)
        over = s >= 1.0
        out = torch.zeros_like(mu)
        if bool(over.any()):
            out[over] = _sample_branching(mu[over] / s[over], 1.0 - 1.0 / s[over])
        if not bool(over.all()):
            out[~over] = self._sample_under(shape, ~over)
        return out

    def _sample_under(self, shape, rows):
        """Draws of the under-dispersed entries ``rows`` (a mask of ``shape``)."""
        mu = self.rate.expand(self.batch_shape)
        s = self.scale_ratio.expand(self.batch_shape)
        n_batch = self.batch_shape.numel()
        n_draws = shape.numel() // max(n_batch, 1)
        u = torch.rand((n_draws, n_batch), dtype=mu.dtype, device=mu.device)
        log_mu = self.log_rate.expand(self.batch_shape)
        draws = _sample_by_inversion(mu.reshape(-1), log_mu.reshape(-1), s.reshape(-1), u).T
        return draws.reshape(shape)[rows]


def _sample_branching(theta, lam):
    """Generalized-Poisson draws for ``0 <= lambda < 1``: the total progeny of a
    Galton-Watson process with ``Poisson(theta)`` founders and ``Poisson(lambda)``
    offspring per individual (Consul and Famoye, *Lagrangian Probability Distributions*,
    2006, ch. 9)."""
    generation = sample_poisson(theta)
    total = generation.clone()
    for _ in range(_MAX_GENERATIONS):
        if not bool((generation > 0).any()):
            break
        generation = sample_poisson(lam * generation)
        total = total + generation
    return total


def _sample_by_inversion(mu, log_mu, s, u):
    """Under-dispersed draws by inverting the renormalised CDF on a window around each
    mean; ``u`` of shape ``(n_draws, n)``. Rows wider than ``_SAMPLE_MAX_SD`` standard
    deviations take a rounded normal draw (and rows with ``s >= 1`` are filled with 0:
    the caller overwrites them)."""
    out = torch.zeros_like(u)
    sd = s * mu.sqrt()
    exact = (s < 1.0) & (sd <= _SAMPLE_MAX_SD)
    wide = (s < 1.0) & ~exact
    index = exact.nonzero().squeeze(-1)
    # rows per pass, so that a pass's CDF table holds at most _SAMPLE_TABLE entries
    width = 2.0 * (_SAMPLE_SDS * _SAMPLE_MAX_SD + _WINDOW_PAD) + 2.0
    for rows in index.split(max(1, int(_SAMPLE_TABLE // width))):
        m_, s_ = mu[rows], s[rows]
        y = _count_window(m_, s_, _SAMPLE_SDS, _WINDOW_PAD)
        log_p, _ = _log_terms(y, m_.unsqueeze(-1), log_mu[rows].unsqueeze(-1),
                              s_.unsqueeze(-1))
        cdf = torch.softmax(log_p, -1).cumsum(-1)
        cdf = cdf / cdf[..., -1:]
        k = torch.searchsorted(cdf.contiguous(), u[:, rows].T.contiguous())
        k = k.clamp(max=y.shape[-1] - 1)
        out[:, rows] = torch.gather(y, -1, k).T
    if bool(wide.any()):
        z = torch.special.ndtri(u[:, wide].clamp(torch.finfo(u.dtype).tiny,
                                                 1.0 - torch.finfo(u.dtype).eps))
        out[:, wide] = torch.round(mu[wide] + sd[wide] * z).clamp(min=0.0)
    return out
