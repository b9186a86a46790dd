"""Count time-series models for :mod:`pyro.contrib.forecast` with a softplus link.

:class:`CountForecastModel` is a :class:`~pyro.contrib.forecast.ForecastingModel` whose
linear predictor is

``eta_t = bias + level_t + seasonal . f_t + weight . x_t``

with ``level_t`` a Gaussian random walk (plus, optionally, an integrated random-walk
slope: a local linear trend), ``f_t`` seasonal features (Fourier terms, built by the
caller and put in the first ``n_seasonal`` covariate columns) and ``x_t`` the remaining
covariates (known in advance: holidays, weather, an intervention). Counts follow a
family of :mod:`posheads.families` (negative binomial, Poisson, discretized logistic, or
any other without a zero part) with mean ``scale * softplus(eta_t)``. ``scale`` is a
fixed exposure taken from the data (the mean count), so every prior is on a unit scale
whatever the size of the counts.

Poisson and negative binomial counts have a variance of at least their mean. Counts of
scheduled events (flights, trains, shifts) are often *under*-dispersed: the daily NYC
departures vary by about 6 flights around a weekly pattern of 300, where a Poisson law
says 17. For such series :class:`~posheads.distributions.SoftplusDiscretizedLogistic` is a
count law with a free dispersion (variance about ``dispersion * mean``, below or above the mean).

How a count likelihood fits the framework
-----------------------------------------
:meth:`ForecastingModel.predict` observes ``data - prediction`` under a "noise"
distribution and forecasts ``prediction + noise``. Passing the count distribution itself
as the noise and a prediction of zeros makes the observed site the counts, with their
count likelihood, and the forecast a draw of integer counts. The framework reshapes the
noise distribution (:func:`~pyro.contrib.forecast.util.reshape_batch`) and, when it
forecasts, conditions it on the observed prefix
(:func:`~pyro.contrib.forecast.util.prefix_condition`); both are single-dispatch functions,
and this module registers every softplus-link distribution with them. Given the latent
path, counts are independent over time, so conditioning on the prefix is slicing the
parameters to the forecast steps.

:class:`LogGaussianForecastModel` is the comparator a Pyro user would otherwise write (as
in Pyro's forecasting tutorials): the same structure on ``log1p(counts)`` with Gaussian
noise.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.contrib.forecast import ForecastingModel
from pyro.contrib.forecast.util import prefix_condition, reshape_batch

from posheads import families
from posheads.distributions import SoftplusDiscretizedLogistic, SoftplusLinked

from .forecast_panel import FamilyNames

__all__ = [
    "CountForecastModel",
    "LogGaussianForecastModel",
    "SoftplusDiscretizedLogistic",
]

# LogNormal priors (loc, scale) of shapes on a series' unit scale, where they differ from
# the family's default: the NB concentration of a count series is about as often 1 as 1000.
_SHAPE_PRIORS = {"concentration": (3.0, 2.0), "dispersion": (0.0, 2.0)}


# ----------------------------------------------------- framework registrations
def _rebuild(d, transform):
    """The same law with every tensor parameter transformed (reshaped, sliced)."""
    params = {name: transform(getattr(d, name)) for name in d._names}
    return type(d)(**params, beta=d.beta, threshold=d.threshold, low=d.low)


def _reshape_counts(d, batch_shape):
    return _rebuild(d, lambda p: p.reshape(batch_shape))


def _prefix_condition_counts(d, data):
    # Counts are conditionally independent over time given eta: conditioning on the first
    # t observations leaves the law of the remaining steps unchanged.
    t = data.size(-2)
    return _rebuild(d, lambda p: p[..., t:, :])


# every softplus-link distribution: the count laws of all families
reshape_batch.register(SoftplusLinked)(_reshape_counts)
prefix_condition.register(SoftplusLinked)(_prefix_condition_counts)


# ------------------------------------------------------------------- helpers
def _global(name, family, loc, scale, like):
    """A global parameter with a trailing event dimension of size 1 (the data dimension).

    The prior's constants are made with the device and dtype of ``like`` (the data), so
    the model runs wherever its data lives.
    """
    prior = family(like.new_tensor(loc), like.new_tensor(scale))
    return pyro.sample(name, prior.expand([1]).to_event(1))


def _exchangeable(name, scale, size, like):
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
            seasonal = _exchangeable("seasonal", self.seasonal_scale, n_seasonal, zero_data)
            eta = eta + (seasonal * covariates[..., :n_seasonal]).sum(-1, keepdim=True)
        if n_reg:
            weight = _exchangeable("weight", self.weight_scale, n_reg, zero_data)
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


class CountForecastModel(FamilyNames, _StructuralMixin, ForecastingModel):
    """Local-level count model with seasons and covariates, under a softplus link.

    Call it through :class:`pyro.contrib.forecast.Forecaster` (SVI) or
    :class:`pyro.contrib.forecast.HMCForecaster` (NUTS) with ``data`` of shape
    ``(T, 1)`` (counts as floats) and ``covariates`` of shape ``(T, n_seasonal + n_reg)``.
    Forecasts are integer-valued float tensors.

    Parameters
    ----------
    likelihood : str or Family
        Observation family, one without parts (``posheads.families.get_family``):
        ``"negative_binomial"`` (NB2, ``concentration ~ LogNormal(3, 2)``), ``"poisson"``,
        ``"discretized_logistic"`` (``dispersion ~ LogNormal(0, 2)``) or your own; other
        shapes take the family's default prior.
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
        family = families.get_family(likelihood)
        if family.parts:
            raise ValueError(f"likelihood {family.name!r} has a zero part, which the count "
                             "forecaster does not model; choose a family without one")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        _check_common(n_seasonal, trend)
        super().__init__()
        self.family = family
        self.n_seasonal, self.scale, self.bias_loc, self.trend = n_seasonal, scale, bias_loc, trend
        self.beta = beta
        self.bias_scale, self.seasonal_scale = bias_scale, seasonal_scale
        self.weight_scale, self.drift_loc = weight_scale, drift_loc

    def _shape_prior(self, shape, like):
        if shape.name in _SHAPE_PRIORS:
            loc, scale = _SHAPE_PRIORS[shape.name]
            return dist.LogNormal(like.new_tensor(loc), like.new_tensor(scale))
        return shape.prior(like)

    def observation(self, eta, shape=None):
        """The count law given the linear predictor and the shape parameter.

        Parameters
        ----------
        eta : Tensor
            Linear predictor, any shape.
        shape : Tensor, optional
            The family's shape (concentration, dispersion), broadcastable with ``eta``;
            unused for a family without one.
        """
        exposure = torch.full_like(eta, self.scale)
        shapes = {self.shape_site: shape} if self.shape_site is not None else {}
        return self.family.build(eta, shapes=shapes, beta=self.beta, exposure=exposure)

    def model(self, zero_data, covariates):
        eta = self._linear_predictor(zero_data, covariates, self.bias_loc)
        shape = None
        if self.shape_site is not None:
            prior = self._shape_prior(self.family.shapes[0], eta)
            shape = pyro.sample(self.shape_site, prior.expand([1]).to_event(1))
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
