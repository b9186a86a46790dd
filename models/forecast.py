"""Count time-series models for :mod:`pyro.contrib.forecast` with a softplus link.

:class:`CountForecastModel` is a :class:`~pyro.contrib.forecast.ForecastingModel` whose
linear predictor is

``eta_t = bias + level_t + seasonal . f_t + weight . x_t``

with ``level_t`` a Gaussian random walk (plus, optionally, an integrated random-walk
slope: a local linear trend), ``f_t`` seasonal features (Fourier terms, built by the
caller and put in the first ``n_seasonal`` covariate columns) and ``x_t`` the remaining
covariates (known in advance: holidays, weather, an intervention). Counts are Poisson or
negative binomial with mean ``scale * softplus(eta_t)``, through
:class:`~posheads.distributions.SoftplusPoisson` and
:class:`~posheads.distributions.SoftplusNegativeBinomial`. ``scale`` is a fixed exposure
taken from the data (the mean count), so every prior is on a unit scale whatever the size
of the counts.

Poisson and negative binomial counts have a variance of at least their mean. Counts of
scheduled events (flights, trains, shifts) are often *under*-dispersed: the daily NYC
departures vary by about 6 flights around a weekly pattern of 300, where a Poisson law
says 17. For such series :class:`SoftplusDiscretizedLogistic` is a count law with a free
dispersion (variance about ``dispersion * mean``, below or above the mean).

How a count likelihood fits the framework
-----------------------------------------
:meth:`ForecastingModel.predict` observes ``data - prediction`` under a "noise"
distribution and forecasts ``prediction + noise``. Passing the count distribution itself
as the noise and a prediction of zeros makes the observed site the counts, with their
count likelihood, and the forecast a draw of integer counts. The framework reshapes the
noise distribution (:func:`~pyro.contrib.forecast.util.reshape_batch`) and, when it
forecasts, conditions it on the observed prefix
(:func:`~pyro.contrib.forecast.util.prefix_condition`); both are single-dispatch functions,
and this module registers the softplus count distributions with them. Given the latent
path, counts are independent over time, so conditioning on the prefix is slicing the
parameters to the forecast steps.

:class:`LogGaussianForecastModel` is the comparator a Pyro user would otherwise write (as
in Pyro's forecasting tutorials): the same structure on ``log1p(counts)`` with Gaussian
noise.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.contrib.forecast import ForecastingModel
from pyro.contrib.forecast.util import prefix_condition, reshape_batch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from posheads import ops
from posheads.distributions import SoftplusNegativeBinomial, SoftplusPoisson

__all__ = [
    "LIKELIHOODS",
    "CountForecastModel",
    "LogGaussianForecastModel",
    "SoftplusDiscretizedLogistic",
]

LIKELIHOODS = ("poisson", "negative_binomial", "discretized_logistic")


class SoftplusDiscretizedLogistic(TorchDistribution):
    """Counts ``y = max(0, round(z))`` with ``z ~ Logistic(mu, s)``: a count law of any dispersion.

    ``mu = exposure * (low + softplus_beta(eta))`` and ``s = sqrt(3 * dispersion * mu) / pi``,
    so the variance is about ``dispersion * mu`` (plus 1/12 from rounding) where ``mu`` is
    a few ``s`` above zero: ``dispersion < 1`` is under-dispersed, ``1`` Poisson-like.
    The logistic's exponential tails make the fit robust to a few outlying counts. The
    probabilities are differences of logistic CDFs (as in PixelCNN++'s discretized
    logistic), written in log space without cancellation:

    ``log P(y) = -softplus(-b) - softplus(b - 1/s) + log(1 - exp(-1/s))`` for ``y >= 1``,
    ``log P(0) = -softplus(-b)``, with ``b = (y + 1/2 - mu) / s``.

    Parameters
    ----------
    eta : Tensor or float
        Linear predictor of the location ``mu`` (the mean where ``mu >> s``).
    dispersion : Tensor or float
        ``> 0``; broadcast with ``eta``.
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

    def __init__(
        self,
        eta,
        dispersion,
        *,
        beta=1.0,
        threshold=20.0,
        low=0.0,
        exposure=None,
        validate_args=None,
    ):
        exposure = torch.ones(()) if exposure is None else exposure
        self.eta, self.dispersion, self.exposure = broadcast_all(eta, dispersion, exposure)
        self.beta, self.threshold, self.low = float(beta), float(threshold), float(low)
        super().__init__(self.eta.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return _rebuild(self, lambda p: p.expand(batch_shape))

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
        # E[y] = sum_{k >= 1} P(y >= k), each a logistic tail; 40 scales past mu the
        # remaining terms are below exp(-40) of the mean.
        mu, s = self.loc, self.scale
        top = int(torch.max(mu + 40.0 * s).ceil().item()) + 1
        k = torch.arange(1, top + 1, dtype=mu.dtype, device=mu.device)
        return torch.sigmoid((mu.unsqueeze(-1) - k + 0.5) / s.unsqueeze(-1)).sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=self.eta.dtype, device=self.eta.device)
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


# Parameters of each count distribution, in the keyword names of its constructor.
_COUNT_PARAMS = {
    SoftplusPoisson: ("eta", "exposure"),
    SoftplusNegativeBinomial: ("eta", "concentration", "exposure"),
    SoftplusDiscretizedLogistic: ("eta", "dispersion", "exposure"),
}


# ----------------------------------------------------- framework registrations
def _rebuild(d, transform):
    params = {name: transform(getattr(d, name)) for name in _COUNT_PARAMS[type(d)]}
    return type(d)(**params, beta=d.beta, threshold=d.threshold, low=d.low)


def _reshape_counts(d, batch_shape):
    return _rebuild(d, lambda p: p.reshape(batch_shape))


def _prefix_condition_counts(d, data):
    # Counts are conditionally independent over time given eta: conditioning on the first
    # t observations leaves the law of the remaining steps unchanged.
    t = data.size(-2)
    return _rebuild(d, lambda p: p[..., t:, :])


for _type in _COUNT_PARAMS:
    reshape_batch.register(_type)(_reshape_counts)
    prefix_condition.register(_type)(_prefix_condition_counts)


# ------------------------------------------------------------------- helpers
def _global(name, family, loc, scale, like):
    """A global parameter with a trailing event dimension of size 1 (the data dimension).

    The prior's constants are made with the device and dtype of ``like`` (the data), so
    the model runs wherever its data lives.
    """
    prior = family(like.new_tensor(loc), like.new_tensor(scale))
    return pyro.sample(name, prior.expand([1]).to_event(1))


def _vector(name, scale, size, like):
    """``size`` exchangeable coefficients ``~ Normal(0, scale)`` (seasons or regressors)."""
    prior = dist.Normal(like.new_zeros(()), like.new_tensor(scale))
    return pyro.sample(name, prior.expand([size]).to_event(1))


def _check_common(n_seasonal, trend):
    if not (isinstance(n_seasonal, int) and n_seasonal >= 0):
        raise ValueError(f"n_seasonal must be an int >= 0, got {n_seasonal!r}")
    if not isinstance(trend, bool):
        raise ValueError(f"trend must be True or False, got {trend!r}")


class _StructuralMixin:
    """The shared linear predictor: bias, random-walk level (and slope), seasons, covariates."""

    def _linear_predictor(self, zero_data, covariates, bias_loc):
        eta = _global("bias", dist.Normal, bias_loc, self.bias_scale, zero_data)
        n_seasonal = self.n_seasonal
        n_reg = covariates.size(-1) - n_seasonal
        if n_seasonal:
            seasonal = _vector("seasonal", self.seasonal_scale, n_seasonal, zero_data)
            eta = eta + (seasonal * covariates[..., :n_seasonal]).sum(-1, keepdim=True)
        if n_reg:
            weight = _vector("weight", self.weight_scale, n_reg, zero_data)
            eta = eta + (weight * covariates[..., n_seasonal:]).sum(-1, keepdim=True)
        drift_scale = _global("drift_scale", dist.LogNormal, self.drift_loc, 1.0, zero_data)
        if self.trend:
            slope_scale = _global(
                "slope_scale", dist.LogNormal, self.drift_loc - 3.0, 1.0, zero_data
            )
        with self.time_plate:
            # Non-centred: the guide learns standard-normal innovations, scaled here.
            z = pyro.sample("drift", dist.Normal(zero_data, 1.0).to_event(1))
            if self.trend:
                u = pyro.sample("slope", dist.Normal(zero_data, 1.0).to_event(1))
        step = drift_scale * z
        if self.trend:
            step = step + (slope_scale * u).cumsum(-2)
        eta = eta + step.cumsum(-2)
        pyro.deterministic("eta", eta, event_dim=2)
        return eta


class CountForecastModel(_StructuralMixin, ForecastingModel):
    """Local-level count model with seasons and covariates, under a softplus link.

    Call it through :class:`pyro.contrib.forecast.Forecaster` (SVI) or
    :class:`pyro.contrib.forecast.HMCForecaster` (NUTS) with ``data`` of shape
    ``(T, 1)`` (counts as floats) and ``covariates`` of shape ``(T, n_seasonal + n_reg)``.
    Forecasts are integer-valued float tensors.

    Parameters
    ----------
    likelihood : {"negative_binomial", "poisson", "discretized_logistic"}
        Observation family. The negative binomial is NB2 with ``concentration ~
        LogNormal(3, 2)``; the discretized logistic has ``dispersion ~ LogNormal(0, 2)``.
    n_seasonal : int
        How many leading covariate columns are seasonal features (prior scale
        ``seasonal_scale``); the rest are regressors (prior scale ``weight_scale``).
    scale : float
        Positive exposure: the mean is ``scale * softplus(eta)``. Use the mean count.
    bias_loc : float
        Prior mean of the bias; ``softplus_inverse(1)`` puts the prior median of the mean
        at ``scale``.
    trend : bool
        Add a random-walk slope to the level (a local linear trend).
    beta : float
        Softness of the softplus.
    bias_scale, seasonal_scale, weight_scale : float
        Standard deviations of the Gaussian priors on the unit (``eta``) scale.
    drift_loc : float
        Location of the LogNormal prior on the per-step standard deviation of the level.

    Examples
    --------
    >>> import torch
    >>> from pyro.contrib.forecast import Forecaster
    >>> y = torch.poisson(torch.full((60, 1), 5.0))
    >>> f = Forecaster(CountForecastModel(scale=5.0), y, torch.zeros(60, 0), num_steps=2,
    ...                log_every=0)
    >>> f(y, torch.zeros(67, 0), num_samples=3).shape
    torch.Size([3, 7, 1])
    """

    def __init__(
        self,
        *,
        likelihood="negative_binomial",
        n_seasonal=0,
        scale=1.0,
        bias_loc=0.5413248546129181,
        trend=False,
        beta=1.0,
        bias_scale=1.0,
        seasonal_scale=1.0,
        weight_scale=1.0,
        drift_loc=-4.0,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        _check_common(n_seasonal, trend)
        super().__init__()
        self.likelihood = likelihood
        self.n_seasonal, self.scale, self.bias_loc, self.trend = n_seasonal, scale, bias_loc, trend
        self.beta = beta
        self.bias_scale, self.seasonal_scale = bias_scale, seasonal_scale
        self.weight_scale, self.drift_loc = weight_scale, drift_loc

    # Shape parameter of each likelihood: (site name, prior).
    _SHAPE = {  # noqa: RUF012 -- a constant table, never mutated
        "poisson": None,
        "negative_binomial": ("concentration", (3.0, 2.0)),
        "discretized_logistic": ("dispersion", (0.0, 2.0)),
    }

    @property
    def shape_site(self):
        """Name of the likelihood's shape parameter site, or None (Poisson)."""
        shape = self._SHAPE[self.likelihood]
        return None if shape is None else shape[0]

    def observation(self, eta, shape=None):
        """The count law given the linear predictor and the shape parameter.

        Parameters
        ----------
        eta : Tensor
            Linear predictor, any shape.
        shape : Tensor, optional
            Concentration (negative binomial) or dispersion (discretized logistic),
            broadcastable with ``eta``; unused for the Poisson.
        """
        exposure = torch.full_like(eta, self.scale)
        if self.likelihood == "poisson":
            return SoftplusPoisson(eta, beta=self.beta, exposure=exposure)
        if self.likelihood == "discretized_logistic":
            return SoftplusDiscretizedLogistic(eta, shape, beta=self.beta, exposure=exposure)
        return SoftplusNegativeBinomial(eta, shape, beta=self.beta, exposure=exposure)

    def model(self, zero_data, covariates):
        eta = self._linear_predictor(zero_data, covariates, self.bias_loc)
        shape = None
        if self.shape_site is not None:
            loc, scale = self._SHAPE[self.likelihood][1]
            shape = _global(self.shape_site, dist.LogNormal, loc, scale, eta)
        # The count law is the "noise" around a zero prediction: the observed site is
        # the counts themselves, and the forecast is a draw of counts.
        self.predict(self.observation(eta, shape), torch.zeros_like(eta))


class LogGaussianForecastModel(_StructuralMixin, ForecastingModel):
    """The usual Pyro recipe for counts: the same structure on ``log1p(y)``, Gaussian noise.

    Fit it to ``log1p(counts)`` and map forecasts back with ``expm1`` (rounded and
    clipped at zero to give counts). Parameters as in :class:`CountForecastModel`, with
    ``bias_loc`` on the ``log1p`` scale; ``noise ~ Normal(0, sigma)``, ``sigma ~
    LogNormal(-2, 2)``.
    """

    def __init__(
        self,
        *,
        n_seasonal=0,
        bias_loc=0.0,
        trend=False,
        bias_scale=3.0,
        seasonal_scale=1.0,
        weight_scale=1.0,
        drift_loc=-4.0,
    ):
        _check_common(n_seasonal, trend)
        super().__init__()
        self.n_seasonal, self.bias_loc, self.trend = n_seasonal, bias_loc, trend
        self.bias_scale, self.seasonal_scale = bias_scale, seasonal_scale
        self.weight_scale, self.drift_loc = weight_scale, drift_loc

    def model(self, zero_data, covariates):
        loc = self._linear_predictor(zero_data, covariates, self.bias_loc)
        sigma = _global("sigma", dist.LogNormal, -2.0, 2.0, loc)
        self.predict(dist.Normal(torch.zeros_like(loc), sigma), loc)
