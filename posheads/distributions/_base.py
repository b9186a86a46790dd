"""Shared pieces of the softplus-link distributions: numerics, checks and base classes.

``SoftplusLinked`` holds the tensor parameters (broadcast together), the link settings
``beta``, ``threshold`` and ``low``, and a generic ``expand``; ``SoftplusCounts`` adds the
exposure, the count support, ``rate``/``log_rate`` and the validation of counts. The count
families (Poisson, NB2) and the zero-inflation plug into it from :mod:`.counts`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, lazy_property

from .. import ops

__all__ = [
    "SoftplusCounts",
    "SoftplusLinked",
    "as_float",
    "check_counts",
    "check_link",
    "check_positive",
    "exp_capped",
    "link",
    "log1mexp",
    "sample_negative_binomial",
    "sample_poisson",
    "sample_truncated_negative_binomial",
]

# torch.poisson counts in int64 and wraps past 2**63; far below that the normal
# approximation is exact to float precision (Poisson skewness is 1e-6 at 1e12).
_NORMAL_APPROX_RATE = 1e12
# Zero-truncated NB draws: rounds of "draw, keep the positive ones" before the rest
# (rows with P(0) near 1, where rejection would take long) go to inversion.
_REJECTION_ROUNDS = 4


# ---------------------------------------------------------------- helpers
def check_link(beta, threshold, low) -> None:
    """Raise ``ValueError`` naming ``beta``, ``threshold`` or ``low`` when it is invalid."""
    ops.check_link_args(beta, threshold)
    if not (isinstance(low, (int, float)) and math.isfinite(low) and low >= 0):
        raise ValueError(f"low must be a finite number >= 0, got {low!r}")


def link(eta, beta, threshold, low):
    """``low + softplus(eta)`` and its logarithm, both finite for every finite ``eta``."""
    value = ops.softplus(eta, beta, threshold)
    log_value = ops.log_softplus(eta, beta, threshold)
    if low:
        value = value + low
        log_value = torch.logaddexp(log_value, torch.full_like(log_value, math.log(low)))
    return value, log_value


def log1mexp(x, log_x):
    """``log(1 - exp(-x))`` for ``x >= 0``, using ``log(x)`` where ``x`` has underflowed."""
    ok = x > torch.finfo(x.dtype).tiny
    x_safe = torch.where(ok, x, torch.ones_like(x))  # keeps the unused branch finite
    # below tiny, 1 - exp(-x) = x to every digit, and log(x) is known without underflow
    return torch.where(ok, torch.log(-torch.expm1(-x_safe)), log_x)


def exp_capped(t):
    """``exp(t)``, continued linearly (value and slope match) above ``log(sqrt(finfo.max))``."""
    cap = 0.5 * math.log(torch.finfo(t.dtype).max)
    t_low = t.clamp(max=cap)
    return torch.exp(t_low) * (1.0 + (t - t_low))


def sample_poisson(rate):
    """Integer-valued float Poisson draws, finite for every non-negative rate."""
    rate = rate.clamp(max=torch.finfo(rate.dtype).max)  # an overflowed rate -> largest float
    big = rate > _NORMAL_APPROX_RATE
    exact = torch.poisson(torch.where(big, torch.zeros_like(rate), rate))
    approx = torch.round(rate + rate.sqrt() * torch.randn_like(rate)).clamp(min=0)
    return torch.where(big, approx, exact)


def sample_negative_binomial(mu, r):
    """NB2 draws of mean ``mu`` and concentration ``r`` (same shape), as floats.

    Gamma-Poisson mixture: ``lambda = mu G / r`` with ``G ~ Gamma(r, 1)`` has mean ``mu``
    and variance ``mu**2 / r``.
    """
    gamma = torch.distributions.Gamma(r, torch.ones_like(r)).sample()
    return sample_poisson(mu * (gamma / r))


def sample_truncated_negative_binomial(mu, r):
    """Exact draws of NB2(``mu``, ``r``) conditioned on ``y > 0`` (same shape), as floats.

    Rejection first (draw, redraw the zeros) for ``_REJECTION_ROUNDS`` rounds; what is left
    is drawn by inverting the truncated CDF, ``y = min{k : S(k) <= v S(0)}`` for
    ``v ~ U(0, 1]`` and the survival function ``S`` of SciPy's ``nbinom`` (float64, CPU),
    with ``S(0) = -expm1(-r softplus(log(mu / r)))`` computed here without cancellation.
    """
    out = sample_negative_binomial(mu, r)
    for _ in range(_REJECTION_ROUNDS):
        zero = out == 0
        if not bool(zero.any()):
            return out
        out[zero] = sample_negative_binomial(mu[zero], r[zero])
    zero = out == 0
    if bool(zero.any()):
        out[zero] = _truncated_nb_by_inversion(mu[zero], r[zero]).to(out)
    return out


def _truncated_nb_by_inversion(mu, r):
    from scipy.stats import nbinom

    mu, r = mu.detach().double(), r.detach().double()
    d = torch.log(mu) - torch.log(r)  # logit of mu / (r + mu)
    survival0 = -torch.expm1(-r * ops.softplus(d))
    v = 1.0 - torch.rand(mu.shape, dtype=torch.float64, device=mu.device)  # (0, 1]
    q = (v * survival0).cpu().numpy()
    draws = nbinom.isf(q, r.cpu().numpy(), torch.sigmoid(-d).cpu().numpy())
    draws = torch.from_numpy(draws).to(mu.device)
    # rounding in SciPy's S(0) (p = r / (r + mu) near 1) can return 0 for q near S(0); a
    # rate that underflowed to 0 leaves all of the positive part on 1
    return torch.where(survival0 > 0, draws.clamp(min=1.0), torch.ones_like(draws))


def as_float(value, like):
    """``value`` as a tensor on ``like``'s device; integer counts take ``like``'s dtype."""
    value = torch.as_tensor(value, device=like.device)
    return value if value.is_floating_point() else value.to(like.dtype)


def _first_bad(value, bad) -> str:
    return f"{int(bad.sum())} value(s), e.g. {value[bad].flatten()[0].item()!r}"


def check_counts(name, value) -> None:
    """Raise ``ValueError`` saying which counts are non-finite, negative or fractional."""
    finite = torch.isfinite(value)
    if not finite.all():
        raise ValueError(f"{name}: counts must be finite, got {_first_bad(value, ~finite)}")
    if (value < 0).any():
        raise ValueError(f"{name}: counts must be non-negative, got {_first_bad(value, value < 0)}")
    frac = value != torch.floor(value)
    if frac.any():
        raise ValueError(f"{name}: counts must be whole numbers, got {_first_bad(value, frac)}")


def check_positive(name, value) -> None:
    """Raise ``ValueError`` for values that are not positive and finite."""
    bad = ~(value > 0) | ~torch.isfinite(value)
    if bad.any():
        detail = _first_bad(value, bad)
        raise ValueError(f"{name}: values must be positive and finite, got {detail}")


# ---------------------------------------------------------------- shared bases
class SoftplusLinked(TorchDistribution):
    """Tensor parameters (broadcast together), the link settings and a generic ``expand``."""

    def __init__(self, params, beta, threshold, low, validate_args):
        check_link(beta, threshold, low)
        self._names = tuple(k for k, v in params.items() if v is not None)
        values = broadcast_all(*(params[k] for k in self._names))
        for name, value in zip(self._names, values, strict=True):
            setattr(self, name, value)
        self.beta, self.threshold, self.low = float(beta), float(threshold), float(low)
        super().__init__(batch_shape=values[0].shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._names:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        new._names, new.beta, new.threshold, new.low = (
            self._names, self.beta, self.threshold, self.low)
        TorchDistribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class SoftplusCounts(SoftplusLinked):
    """Counts whose count part has mean ``rate = exposure * (low + softplus(eta))``.

    Subclasses mix in a count family (``_count_log_prob``, ``_count_sample``,
    ``_count_moments``); the plain families use the methods below as they are.
    """

    support = constraints.nonnegative_integer

    @lazy_property
    def exposure(self):
        """Ones when no exposure was given."""
        return torch.ones_like(self.eta)

    @property
    def _exposure(self):
        return self.exposure if "exposure" in self._names else None

    @property
    def rate(self):
        """Mean of the count part, ``exposure * (low + softplus(eta))``; shape ``batch_shape``."""
        mu = link(self.eta, self.beta, self.threshold, self.low)[0]
        return mu if self._exposure is None else mu * self._exposure

    @property
    def log_rate(self):
        """``log(rate)``, finite for every finite ``eta`` (no ``log(0)``)."""
        log_mu = link(self.eta, self.beta, self.threshold, self.low)[1]
        return log_mu if self._exposure is None else log_mu + torch.log(self._exposure)

    @property
    def mean(self):
        return self._count_moments()[0]

    @property
    def variance(self):
        return self._count_moments()[1]

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self._count_sample(self._extended_shape(sample_shape))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._count_log_prob(as_float(value, self.eta))

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor):
            check_counts(type(self).__name__, value)
        super()._validate_sample(value)
