"""Continuous distributions under a softplus link: Gamma, Normal and LogNormal.

The Gamma's mean and the Normal family's scale are ``low + softplus(.)``; terms that can
overflow (``value / mean``, ``(value - loc)**2 / scale**2``) are computed in log space.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from ._base import SoftplusLinked, check_positive, exp_capped, link

__all__ = ["SoftplusGamma", "SoftplusLogNormal", "SoftplusNormal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SoftplusGamma(SoftplusLinked):
    """Gamma with mean ``exposure * (low + softplus(eta))`` and shape ``concentration``.

    The rate of torch's ``Gamma`` is ``concentration / mean``; the variance is
    ``mean**2 / concentration``.

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the mean.
    concentration : Tensor or float
        Shape ``a > 0``; broadcast with ``eta`` to ``batch_shape``.
    beta, threshold, low : float
        As in :class:`~posheads.distributions.SoftplusPoisson` (``low`` floors the mean).
    exposure : Tensor, optional
        Positive factor of the mean (a claim count behind a total amount); broadcast with
        ``eta``.
    validate_args : bool, optional

    Examples
    --------
    >>> d = SoftplusGamma(torch.tensor([0.0, 1.0]), concentration=3.0)
    >>> d.rsample((4,)).shape
    torch.Size([4, 2])
    """

    arg_constraints: ClassVar[dict] = {
        "eta": constraints.real,
        "concentration": constraints.positive,
        "exposure": constraints.positive,
    }
    support = constraints.positive
    has_rsample = True

    def __init__(self, eta, concentration, *, beta=1.0, threshold=20.0, low=0.0,
                 exposure=None, validate_args=None):
        params = {"eta": eta, "concentration": concentration, "exposure": exposure}
        super().__init__(params, beta, threshold, low, validate_args)

    @lazy_property
    def exposure(self):
        """Ones when no exposure was given."""
        return torch.ones_like(self.eta)

    def _mean_and_log(self):
        mu, log_mu = link(self.eta, self.beta, self.threshold, self.low)
        if "exposure" in self._names:
            mu, log_mu = mu * self.exposure, log_mu + torch.log(self.exposure)
        return mu, log_mu

    @property
    def mean(self):
        return self._mean_and_log()[0]

    @property
    def variance(self):
        return self.mean.pow(2) / self.concentration

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        a = self.concentration.expand(shape)
        value = torch._standard_gamma(a) * (self.mean / self.concentration).expand(shape)
        value.detach().clamp_(min=torch.finfo(value.dtype).tiny)  # as torch's Gamma: never 0
        return value

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a = self.concentration
        log_mean = self._mean_and_log()[1]
        log_value = torch.log(value)
        ratio = exp_capped(log_value - log_mean)  # value / mean without overflow
        return (a * torch.log(a) - torch.lgamma(a) + (a - 1.0) * log_value
                - a * log_mean - a * ratio)

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor):
            check_positive(type(self).__name__, value)
        super()._validate_sample(value)


class _SoftplusScale(SoftplusLinked):
    """``loc`` and ``scale = low + softplus(scale_eta)``, shared by Normal and LogNormal."""

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real,
        "scale_eta": constraints.real,
    }
    has_rsample = True

    def __init__(self, loc, scale_eta, *, beta=1.0, threshold=20.0, low=0.0,
                 validate_args=None):
        params = {"loc": loc, "scale_eta": scale_eta}
        super().__init__(params, beta, threshold, low, validate_args)

    @property
    def scale(self):
        """``low + softplus(scale_eta)``; shape ``batch_shape``."""
        return link(self.scale_eta, self.beta, self.threshold, self.low)[0]

    @property
    def log_scale(self):
        """``log(scale)``, finite for every finite ``scale_eta``."""
        return link(self.scale_eta, self.beta, self.threshold, self.low)[1]

    def _normal_log_prob(self, x):
        diff = x - self.loc
        zero = diff == 0
        log_abs = torch.log(torch.where(zero, torch.ones_like(diff), diff.abs()))
        # (x - loc)^2 / scale^2 in log space: finite even when scale underflows to 0
        quad = torch.where(zero, torch.zeros_like(diff),
                           exp_capped(2.0 * (log_abs - self.log_scale)))
        return -0.5 * quad - self.log_scale - _HALF_LOG_2PI

    def _normal_rsample(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * eps

    def _normal_entropy(self):
        return 0.5 + _HALF_LOG_2PI + self.log_scale


class SoftplusNormal(_SoftplusScale):
    """Normal with mean ``loc`` and standard deviation ``low + softplus(scale_eta)``.

    Parameters
    ----------
    loc : Tensor or float
        Mean.
    scale_eta : Tensor or float
        Linear predictor of the scale; broadcast with ``loc`` to ``batch_shape``.
    beta, threshold, low : float
        As in :class:`~posheads.distributions.SoftplusPoisson` (``low`` floors the scale).
    validate_args : bool, optional

    Examples
    --------
    >>> d = SoftplusNormal(torch.zeros(2), scale_eta=torch.tensor([-1e4, 0.0]))
    >>> bool(torch.isfinite(d.log_prob(torch.ones(2))).all())
    True
    """

    support = constraints.real

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.pow(2)

    def rsample(self, sample_shape=()):
        return self._normal_rsample(sample_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._normal_log_prob(value)

    def entropy(self):
        return self._normal_entropy()


class SoftplusLogNormal(_SoftplusScale):
    """Log-normal: ``log(y) ~ Normal(loc, low + softplus(scale_eta))``.

    Parameters
    ----------
    loc : Tensor or float
        Mean of ``log(y)``.
    scale_eta : Tensor or float
        Linear predictor of the standard deviation of ``log(y)``.
    beta, threshold, low, validate_args
        As in :class:`SoftplusNormal`.

    Examples
    --------
    >>> d = SoftplusLogNormal(torch.tensor(0.0), scale_eta=torch.tensor(0.0))
    >>> bool(d.sample((3,)).gt(0).all())
    True
    """

    support = constraints.positive

    @property
    def mean(self):
        return torch.exp(self.loc + 0.5 * self.scale.pow(2))

    @property
    def variance(self):
        s2 = self.scale.pow(2)
        return torch.expm1(s2) * torch.exp(2.0 * self.loc + s2)

    def rsample(self, sample_shape=()):
        return torch.exp(self._normal_rsample(sample_shape))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_value = torch.log(value)
        return self._normal_log_prob(log_value) - log_value

    def entropy(self):
        return self._normal_entropy() + self.loc

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor):
            check_positive(type(self).__name__, value)
        super()._validate_sample(value)
