"""The Tweedie law with ``1 < power < 2`` under a softplus link, and its series density.

A Tweedie variable with mean ``mu``, dispersion ``phi`` and power ``p`` in ``(1, 2)`` is a
compound Poisson sum of gamma amounts: ``N ~ Poisson(lam)`` events with
``lam = mu**(2 - p) / (phi (2 - p))``, each ``Gamma(k, scale=phi (p - 1) mu**(p - 1))``
with ``k = (2 - p) / (p - 1)``. It has an atom ``P(y = 0) = exp(-lam)`` and a density on
``y > 0``; its variance is ``phi mu**p``.

The density has no closed form. Following Dunn & Smyth (2005, "Series evaluation of
Tweedie exponential dispersion model densities", Statistics and Computing 15:267-280),

    f(y) = exp(-y mu**(1 - p) / (phi (p - 1)) - lam) W(y) / y,
    W(y) = sum_{j >= 1} W_j,
    log W_j = j z - lgamma(j + 1) - lgamma(k j),
    z = k log(y / (p - 1)) - log(phi) / (p - 1) - log(2 - p),

where ``W_j / W`` is the probability of ``N = j`` given ``y``. :func:`tweedie_log_series`
sums it in log space (a log-sum-exp) over a window around its largest term
``j0 = y**(2 - p) / (phi (2 - p))`` that holds every term within ``exp(-50)`` of it; where
that window is wide the sum over the integers equals the integral over ``j`` to far below
float64 rounding (Poisson summation), and a trapezoid rule with a step of a third of the
window's standard deviation replaces the integer terms, so the cost per value stays
bounded (a few hundred terms at most, 64 where the window is wide) whatever ``y`` and
``phi``. Rows are processed in blocks of one first term and similar window lengths, so a
block of rows costs what its own windows need, and the integer terms' ``lgamma(j + 1) +
lgamma(k j)``, which depend on neither ``y`` nor ``phi``, come from one table whose slice
serves the whole block. Without autograd a block is a few in-place passes: an outer
product, a shift by the term nearest ``j0``, the exponential, and one matrix product for
the sum and the moments. The derivation is in ``docs/positive-amounts.md``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from ._base import SoftplusLinked, exp_capped, link

__all__ = ["SoftplusTweedie", "check_power", "tweedie_log_series"]

# Half-width of the window in standard deviations sd = sqrt(j0 (p - 1)) of N given y:
# the terms left out are below exp(-10**2 / 2) = exp(-50) of the largest. The law of N
# given y is lighter-tailed than this Gaussian on the left; on the right its tail is
# heavier where j0 is small, which _ROOM / (1 + k) extra integer terms cover (checked
# against mpmath over the whole range in the tests).
_WIDTH = 10.0
_ROOM = 30.0
# Nodes of the trapezoid rule where the window is wide; the step is 20 sd / 63 ~ sd / 3,
# whose error exp(-2 pi**2 (sd / step)**2) ~ exp(-190) is nil.
_NODES = 64
# Row-by-node entries evaluated at once (bounds the memory of one block).
_BLOCK = 2**21


def check_power(power) -> float:
    """``power`` as a float in ``(1, 2)``; ``ValueError`` naming it otherwise."""
    if isinstance(power, bool) or not isinstance(power, (int, float)) \
            or not 1.0 < float(power) < 2.0:
        raise ValueError(f"power must be a number in (1, 2), got {power!r}")
    return float(power)


def _window(y, log_phi, power):
    """Per-row first node, step, number of nodes and ``j0`` (no autograd)."""
    j0 = torch.exp((2.0 - power) * torch.log(y) - log_phi - math.log(2.0 - power))
    sd = torch.sqrt(j0 * (power - 1.0))
    # integer terms: from j0 - 10 sd (at least 1) to j0 + 10 sd, with room for the
    # right tail of a small j0, where the terms fall like (j!)**-(1 + k): the room
    # shrinks as 1 / (1 + k)
    lo_int = torch.clamp(torch.floor(j0 - _WIDTH * sd - 5.0), min=1.0)
    room = math.ceil(_ROOM * (power - 1.0))  # _ROOM / (1 + k)
    count_int = torch.ceil(j0 + _WIDTH * sd + room) - lo_int + 1.0
    lo_cont = j0 - _WIDTH * sd
    wide = (count_int > _NODES) & (lo_cont >= 1.0)
    lo = torch.where(wide, lo_cont, lo_int)
    step = torch.where(wide, 2.0 * _WIDTH * sd / (_NODES - 1), torch.ones_like(sd))
    count = torch.where(wide, torch.full_like(sd, float(_NODES)), count_int)
    return lo, step, count, j0


def tweedie_log_series(y, phi, power, *, moments=False):
    """``log W(y, phi, p)`` of the Tweedie series (module docstring), for ``y > 0``.

    Parameters
    ----------
    y : Tensor, shape ``(n,)``
        Positive values.
    phi : Tensor, shape ``(n,)`` or ``()``
        Dispersion ``> 0``; differentiable.
    power : float
        In ``(1, 2)``.
    moments : bool
        Also return the mean and variance of ``N`` given ``y`` (the weights
        ``W_j / W``), from which the derivatives of ``log W`` in ``log(phi)`` follow:
        ``-E[N] / (p - 1)`` and ``Var[N] / (p - 1)**2``.

    Returns
    -------
    Tensor, shape ``(n,)``, in the dtype of ``y``
        Or ``(log_w, mean, var)`` with ``moments``. The sum runs in float64 whatever the
        input dtype: ``log W`` is a difference of terms of size ``j0 log j0``, which
        float32 would cancel.
    """
    power = check_power(power)
    dtype = y.dtype
    y64 = y.to(torch.float64)
    log_phi = torch.log(phi.to(torch.float64)).expand(y64.shape)
    k = (2.0 - power) / (power - 1.0)
    log_y = torch.log(y64)
    z = k * (log_y - math.log(power - 1.0)) - log_phi / (power - 1.0) - math.log(2.0 - power)
    with torch.no_grad():
        lo, step, count, j0 = _window(y64, log_phi.detach(), power)
        # the node nearest the largest term, whose value shifts the exponentials
        peak = torch.round((j0 - lo) / step).clamp_(min=0.0)
        wide = step != 1.0
        # blocks of rows with one first term lo, by window length, the trapezoid rows
        # last (integer keys: a stable integer sort is torch's fastest)
        key = count.to(torch.int64)
        if y64.numel():
            span = int(key.max()) + 1
            lo_key = torch.where(wide, torch.zeros_like(lo), lo).to(torch.int64)
            key = key + span * torch.where(wide, int(lo_key.max()) + 1, lo_key)
        order = torch.sort(key, stable=True)[1]
        sorted_counts = count.index_select(0, order).to(torch.int64)

        def counts(i):  # window length of the i-th row in block order
            return int(sorted_counts[i])

        n_int = int((~wide).sum())
        # lgamma(j + 1) + lgamma(k j) depends on neither y nor phi: one table for the
        # integer terms of every row
        # (each block's rows take its largest width: room for it past every lo)
        top = int(lo[~wide].max() + count[~wide].max()) if n_int else 1
        js = torch.arange(top + 1, dtype=torch.float64, device=y64.device)
        table = torch.lgamma(js + 1.0) + torch.lgamma(k * js.clamp(min=1.0))
    # the fast path sums the series' terms without autograd; a differentiable phi or y
    # takes the plain log-sum-exp, whose backward torch derives
    fast = not (torch.is_grad_enabled() and z.requires_grad)
    n, a = y64.shape[0], 0
    # the rows' quantities in block order, once: each block is then a slice
    lo_s, step_s, peak_s, z_s = (v.index_select(0, order) for v in (lo, step, peak, z))
    pieces = []
    while a < n:
        # a block ends where its lo changes (integer rows) or the trapezoid rows begin
        end = n if a >= n_int else int(torch.searchsorted(lo_s[:n_int], lo_s[a], right=True))
        width = counts(min(end, a + max(1, _BLOCK // counts(a))) - 1)
        b = min(end, a + max(1, _BLOCK // width))
        width = counts(b - 1)  # the longest window of the block: its last
        offsets = torch.arange(width, dtype=torch.float64, device=y64.device)
        lo_r, z_r = lo_s[a:b], z_s[a:b]
        # (a row's peak lies inside the block's width: its own window holds it)
        peak_r = peak_s[a:b].long().clamp_(max=width - 1)[:, None]
        if a < n_int:
            # every row of the block takes the block's (largest) width: the terms past a
            # row's own window are terms of the series too, smaller than its edge (log W_j
            # is concave in j), so they change nothing and no mask is needed
            # at j = lo + m, the same for every row of the block
            first = int(lo_s[a])
            gammas = table[first:first + width].expand(b - a, width)
            block = (_integer_block(z_r, lo_r, offsets, gammas, peak_r, moments) if fast
                     else _integer_block_autograd(z_r, lo_r, offsets, gammas, moments))
        else:
            block = _trapezoid_block(z_r, lo_r, step_s[a:b], offsets, k, peak_r, moments,
                                     fast)
        pieces.append(block)
        a = b
    back = torch.empty_like(order)
    back[order] = torch.arange(n, device=order.device)

    def gather(i):  # the blocks' results, back in the rows' order
        return (torch.cat([p[i] for p in pieces]).index_select(0, back) if pieces
                else y64.new_zeros(0)).to(dtype)

    if not moments:
        return gather(0)
    return gather(0), gather(1), gather(2)


def _shift(terms, peak):
    """Each row's term at its ``peak`` node (shape ``(r, 1)``): the node nearest ``j0``,
    where the terms are largest up to a few units of their log (Dunn & Smyth 2005,
    section 4: ``j0`` maximises them up to Stirling's error), so no exponential of a
    shifted term overflows and the largest is at least ``exp(-a few)``. A row maximum
    would do the same at the cost of a reduction over the block."""
    return terms.gather(1, peak)


def _offset_moments(weights, offsets, moments):
    """``log`` of the row sums of ``weights`` (shape ``(r, m)``) and, with ``moments``, the
    mean and variance of ``offsets`` under the weights normalised per row: one matrix
    product with the columns ``1, m, m**2``. The offsets are small (the window's own
    node numbers), so ``E[m**2] - E[m]**2`` loses nothing to cancellation."""
    if not moments:
        return torch.log(weights.sum(dim=1)), None, None
    powers = torch.stack([torch.ones_like(offsets), offsets, offsets * offsets], dim=1)
    sums = weights @ powers
    mean = sums[:, 1] / sums[:, 0]
    return torch.log(sums[:, 0]), mean, sums[:, 2] / sums[:, 0] - mean * mean


def _integer_block(z, lo, offsets, gammas, peak, moments):
    """``(log W, E[N], Var[N])`` of rows summed over the integers ``j = lo + m``, no
    autograd: ``log W_j = lo z + (m z - gammas)``, shifted by the term at each row's
    ``peak`` node before the exponential (in place, a few passes over the block)."""
    terms = torch.addr(gammas, z, offsets, beta=-1.0)  # m z - lgamma(j+1) - lgamma(kj)
    top = _shift(terms, peak)
    log_sum, mean, var = _offset_moments(terms.sub_(top).exp_(), offsets, moments)
    log_w = lo * z + top[:, 0] + log_sum
    return (log_w, None, None) if not moments else (log_w, lo + mean, var)


def _integer_block_autograd(z, lo, offsets, gammas, moments):
    """As :func:`_integer_block`, differentiable in ``z``."""
    j = lo[:, None] + offsets
    return _logsumexp_moments(j * z[:, None] - gammas, j, moments)


def _logsumexp_moments(terms, j, moments):
    """``log sum_j exp(terms)`` per row and, with ``moments``, the mean and variance of
    ``j`` under the weights ``exp(terms)`` (the differentiable form)."""
    log_w = torch.logsumexp(terms, dim=1)
    if not moments:
        return log_w, None, None
    weights = torch.exp(terms - log_w[:, None])
    mean = (weights * j).sum(dim=1)
    return log_w, mean, (weights * (j - mean[:, None]) ** 2).sum(dim=1)


def _trapezoid_block(z, lo, step, offsets, k, peak, moments, fast):
    """``(log W, E[N], Var[N])`` of rows whose window is wide: the trapezoid rule over the
    nodes ``j = lo + step m`` (every row has :data:`_NODES` of them)."""
    j = lo[:, None] + step[:, None] * offsets
    terms = j * z[:, None] - torch.lgamma(j + 1.0) - torch.lgamma(k * j) \
        + torch.log(step)[:, None]
    if not fast:
        return _logsumexp_moments(terms, j, moments)
    top = _shift(terms, peak)
    log_sum, mean, var = _offset_moments(terms.sub_(top).exp_(), offsets, moments)
    log_w = top[:, 0] + log_sum
    return (log_w, None, None) if not moments else (log_w, lo + step * mean,
                                                    step * step * var)


class SoftplusTweedie(SoftplusLinked):
    """Tweedie (compound Poisson-gamma) law of mean ``exposure * (low + softplus(eta))``.

    Non-negative amounts with exact zeros: variance ``dispersion * mean**power``,
    ``P(y = 0) = exp(-mean**(2 - power) / (dispersion (2 - power)))``, a density on
    ``y > 0`` evaluated by its series (:func:`tweedie_log_series`).

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the mean.
    dispersion : Tensor or float
        ``phi > 0``; broadcast with ``eta`` to ``batch_shape``.
    power : float
        ``p`` in ``(1, 2)``: fixed, like ``beta`` (a family holds one power).
    beta, threshold, low : float
        As in :class:`~posheads.distributions.SoftplusPoisson` (``low`` floors the mean).
    exposure : Tensor, optional
        Positive factor of the mean.
    validate_args : bool, optional

    Examples
    --------
    >>> d = SoftplusTweedie(torch.zeros(2, dtype=torch.float64), dispersion=1.0, power=1.5)
    >>> d.log_prob(torch.tensor([0.0, 2.0], dtype=torch.float64)).shape
    torch.Size([2])
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "dispersion": constraints.positive,
        "exposure": constraints.positive,
    }
    support = constraints.nonnegative
    has_rsample = False

    def __init__(self, eta, dispersion, *, power=1.5, beta=1.0, threshold=20.0, low=0.0,
                 exposure=None, validate_args=None):
        self.power = check_power(power)
        params = {"eta": eta, "dispersion": dispersion, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SoftplusTweedie, _instance)
        new.power = self.power
        return super().expand(batch_shape, _instance=new)

    @lazy_property
    def exposure(self):
        """Ones when no exposure was given."""
        return torch.ones_like(self.eta)

    @property
    def log_mean(self):
        """``log(mean)``, finite for every finite ``eta``."""
        log_mu = link(self.eta, self.beta, self.threshold, self.low)[1]
        return log_mu + torch.log(self.exposure) if "exposure" in self._names else log_mu

    @property
    def mean(self):
        mu = link(self.eta, self.beta, self.threshold, self.low)[0]
        return mu * self.exposure if "exposure" in self._names else mu

    @property
    def variance(self):
        return self.dispersion * exp_capped(self.power * self.log_mean)

    @property
    def log_zero_probability(self):
        """``log P(y = 0) = -mean**(2 - p) / (phi (2 - p))``; shape ``batch_shape``."""
        p = self.power
        return -exp_capped((2.0 - p) * self.log_mean - torch.log(self.dispersion)
                           - math.log(2.0 - p))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        p = self.power
        with torch.no_grad():
            log_mu = self.log_mean.expand(shape)
            phi = self.dispersion.expand(shape)
            lam = torch.exp((2.0 - p) * log_mu - torch.log(phi) - math.log(2.0 - p))
            n = torch.poisson(lam.clamp(max=torch.finfo(lam.dtype).max))
            scale = phi * (p - 1.0) * torch.exp((p - 1.0) * log_mu)
            shape_k = n * ((2.0 - p) / (p - 1.0))
            positive = n > 0
            gamma = torch._standard_gamma(torch.where(positive, shape_k,
                                                      torch.ones_like(shape_k)))
            return torch.where(positive, gamma * scale, torch.zeros_like(scale))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=self.eta.dtype, device=self.eta.device)
        p = self.power
        y, log_mu, phi = torch.broadcast_tensors(value, self.log_mean, self.dispersion)
        log_phi = torch.log(phi)
        positive = y > 0
        y_safe = torch.where(positive, y, torch.ones_like(y))  # keeps log(y) finite
        log_y = torch.log(y_safe)
        log_zero = -exp_capped((2.0 - p) * log_mu - log_phi - math.log(2.0 - p))
        # -y mu^(1 - p) / (phi (p - 1)), in log space: finite where mu underflows
        cross = -exp_capped(log_y + (1.0 - p) * log_mu - log_phi - math.log(p - 1.0))
        flat = positive.reshape(-1)
        index = flat.nonzero().squeeze(1)
        series = torch.zeros_like(flat, dtype=y.dtype).index_put(
            (index,), tweedie_log_series(y_safe.reshape(-1)[index],
                                         phi.reshape(-1)[index], p)).reshape(y.shape)
        log_density = log_zero + cross - log_y + series
        out = torch.where(positive, log_density, log_zero)
        return torch.where(y < 0, torch.full_like(out, -math.inf), out)

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor):
            bad = ~torch.isfinite(value) | (value < 0)
            if bad.any():
                raise ValueError(f"{type(self).__name__}: values must be finite and >= 0, "
                                 f"got {int(bad.sum())} value(s) that are not")
        super()._validate_sample(value)
