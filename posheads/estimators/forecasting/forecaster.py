"""Count forecasting with scikit-learn parameters: :class:`CountForecaster`.

:class:`CountForecaster` fits :class:`posheads.models.forecast.CountForecastModel` (a
random-walk level, Fourier seasons and known-in-advance covariates inside a softplus
link; counts from a family of :mod:`posheads.families` without parts: negative binomial,
Poisson, discretized logistic or one of your own) with Pyro's forecasting framework, by
SVI or NUTS, and forecasts integer sample paths. ``likelihood="log_gaussian"`` fits the
same structure to ``log1p(y)`` with Gaussian noise instead -- the recipe of Pyro's
tutorials, kept as the comparator (see :mod:`.likelihood` for how the parameter is read).

Its shared behaviour comes from mixins: ``sample_paths``, ``predict_interval``, ``plot``
and ``backtest`` from :class:`~.baseline.ForecasterMixin` (as for
:class:`~.baseline.SeasonalNaiveForecaster`), ``summary`` and ``covariate_effect`` from
:mod:`.report`, and ``save`` / ``load`` without pickle from :mod:`.state`. It fits on CUDA
when one is available (``device="auto"``).
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import pyro
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from posheads.families import Family
from posheads.inference.checks import budget_warning, warn

from .._persist import PersistMixin
from .._validation import resolve_device, resolve_dtype
from .baseline import ForecasterMixin, derived_seed
from .engine import NUTSForecaster, fit_guide, init_to_mean, isolated, sample_posterior
from .laplace_mixin import LaplaceForecastMixin, single_panel
from .likelihood import check_likelihood, choose_family, is_log_gaussian, likelihood_name
from .panel import is_long_frame
from .predicting import ForecastPredictMixin
from .report import ForecastReportMixin
from .series import check_covariates, check_series, default_season_lengths, fourier_features
from .state import ForecastStateMixin

__all__ = ["CountForecaster", "unit_bias"]


def unit_bias(beta) -> float:
    """``softplus_inverse_beta(1)``: the bias at which the mean equals ``scale``."""
    from posheads.ops import softplus_inverse

    return float(softplus_inverse(torch.tensor(1.0, dtype=torch.float64), beta=float(beta)))


class CountForecaster(ForecastPredictMixin, LaplaceForecastMixin, ForecastStateMixin,
                      ForecastReportMixin, PersistMixin, ForecasterMixin, BaseEstimator):
    """Bayesian count forecaster: random-walk level, seasons and covariates, softplus link.

    Parameters
    ----------
    season_lengths : sequence of float, default=None
        Seasonal periods in steps, e.g. ``(7, 365.25)`` for days. None picks them from
        the frequency of a ``DatetimeIndex`` (days: 7, plus 365.25 from two years of
        data; hours: 24 and 168; months: 12; quarters: 4), and none for a plain array.
    fourier_terms : int or sequence of int, default=None
        Harmonics per period; None uses ``min(p // 2, 10)`` (every harmonic for short
        periods: a free periodic effect).
    trend : bool, default=False
        Add a random-walk slope (local linear trend) to the random-walk level.
    likelihood : "auto", "log_gaussian", str or Family, default="auto"
        The count law: a family of :mod:`posheads.families` without parts, by name
        (``"negative_binomial"``, ``"poisson"``, ``"discretized-logistic"``, ...) or as a
        :class:`~posheads.families.Family` object. Poisson and negative binomial counts
        vary at least as much as their mean; the discretized logistic
        (:class:`~posheads.distributions.SoftplusDiscretizedLogistic`) has a free
        dispersion, below or above the mean, for under-dispersed series such as counts of
        scheduled events. ``"auto"`` takes the discretized logistic when the training
        series is clearly under-dispersed (see :func:`.dispersion_index`: below
        ``0.5``) and the negative binomial otherwise; with ``inference="laplace"`` it
        also fits the other of the two and takes it where its Laplace evidence is
        higher by more than 5 nats (:data:`.EVIDENCE_MARGIN`; a long frame is weighed
        on at most 20 of its series). ``"log_gaussian"`` is the
        log-transform comparator. ``save`` needs a family given by name.
    inference : {"laplace", "svi", "nuts"}, default="laplace"
        ``"laplace"``: the mode of the level path and per-series parameters with the
        level's step integrated over a grid by the Laplace approximation of its marginal
        likelihood (:mod:`.laplace`); the level follows the data, and one year of daily
        counts fits in seconds. With ``trend=True`` or ``likelihood="log_gaussian"`` it
        falls back to SVI (``inference_`` says which ran). ``"svi"``: the mean-field
        guide of the Pyro model (the earlier default; it shrinks the level's step).
        ``"nuts"``: posterior draws by NUTS. Long frames need ``"laplace"``.
    num_steps : int, default=None
        Newton iterations of the Laplace fit per batch of series (at most; None: 200)
        or SVI steps (None: 1000).
    learning_rate : float, default=0.05
        Initial learning rate of SVI (decayed tenfold over the run).
    num_samples : int, default=500
        Forecast sample paths drawn for predictions, intervals and backtests; NUTS draws.
    num_warmup : int, default=300
        NUTS warm-up steps.
    beta : float, default=1.0
        Softness of the softplus link.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the model is fitted and forecasts are drawn; "auto" is CUDA when available.
        Results come back as NumPy arrays on the CPU either way.
    dtype : {"float64", "float32"} or torch.dtype, default="float64"
        Floating type of the model's tensors.
    random_state : int, RandomState or None, default=None
        Seeds fitting and forecasting: the same seed gives the same paths.
    verbose : int, default=0
        Show a progress bar over the Laplace fit's batches, SVI steps or NUTS draws.
    id_col, time_col, target_col : str, default="unique_id", "ds", "y"
        The columns of a long frame passed to ``fit`` (statsforecast's format): series
        id, time stamps (or integer steps), counts; every other column is a covariate.
    hierarchy : dict, default=None
        ``{total: [series ids]}``: forecast each total as the sum of its parts' draws
        (coherent forecasts), after a long-frame fit.
    level_steps : {"normal", "jumps"}, default="normal"
        The law of the level's steps (``inference="laplace"``): ``"normal"``, or
        ``"jumps"``, a two-scale mixture ``0.95 N(0, sigma^2) + 0.05 N(0, (5 sigma)^2)``
        that takes a break in the level (a new law, a lost customer) as one rare step
        instead of widening every step. Measured on the shipped series: 0.4% lower CRPS
        and 90% coverage closer to nominal on six of seven, at about 1.5 times the fit time.

    Attributes
    ----------
    season_lengths_, fourier_terms_ : tuple
        The seasons used.
    likelihood_ : str
        The name of the family used (``"auto"`` resolved), or ``"log_gaussian"``.
    likelihood_evidence_ : dict
        Laplace log evidence (up to a constant of the data) of each count law fitted, by
        name, summed over the series weighed: both laws where ``"auto"`` weighed two, the
        law fitted otherwise; empty for SVI and NUTS.
    scale_ : float
        Exposure of the count law (the mean count, at least 1).
    n_features_in_ : int
        Covariates seen in ``fit``; ``feature_names_in_`` when they came as a DataFrame.
    inference_ : str
        The engine that ran.
    forecaster_ : pyro.contrib.forecast.Forecaster or NUTSForecaster
        With ``inference_`` ``"svi"`` or ``"nuts"``.
    laplace_ : LaplaceFit
        With ``inference_ == "laplace"``: the modes, last-level variances and the
        posterior over the level's step, per grid value and series.
    is_panel_ : bool
        Whether ``fit`` took a long frame.
    losses_ : list of float
        SVI loss per step (per observation); empty for NUTS.

    Examples
    --------
    >>> from posheads.datasets import load_seatbelts
    >>> y = load_seatbelts(as_frame=True).target
    >>> f = CountForecaster(num_steps=50, random_state=0).fit(y)
    >>> f.predict(12).shape
    (12,)
    """

    _parameter_constraints: ClassVar[dict] = {
        "season_lengths": ["array-like", None],
        "fourier_terms": [Interval(numbers.Integral, 0, None, closed="left"), "array-like", None],
        "trend": ["boolean"],
        "likelihood": [str, Family],  # which ones: check_likelihood, in fit
        "inference": [StrOptions({"laplace", "svi", "nuts"})],
        "num_steps": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "num_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_warmup": [Interval(numbers.Integral, 0, None, closed="left")],
        "beta": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "device": [str, torch.device],
        "dtype": [str, torch.dtype, type],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "id_col": [str],
        "time_col": [str],
        "target_col": [str],
        "hierarchy": [dict, None],
        "level_steps": [StrOptions({"normal", "jumps"})],
    }

    def __init__(
        self,
        season_lengths=None,
        *,
        fourier_terms=None,
        trend=False,
        likelihood="auto",
        inference="laplace",
        num_steps=None,
        learning_rate=0.05,
        num_samples=500,
        num_warmup=300,
        beta=1.0,
        device="auto",
        dtype="float64",
        random_state=None,
        verbose=0,
        id_col="unique_id",
        time_col="ds",
        target_col="y",
        hierarchy=None,
        level_steps="normal",
    ):
        self.season_lengths = season_lengths
        self.fourier_terms = fourier_terms
        self.trend = trend
        self.likelihood = likelihood
        self.inference = inference
        self.num_steps = num_steps
        self.learning_rate = learning_rate
        self.num_samples = num_samples
        self.num_warmup = num_warmup
        self.beta = beta
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.id_col = id_col
        self.time_col = time_col
        self.target_col = target_col
        self.hierarchy = hierarchy
        self.level_steps = level_steps

    # ------------------------------------------------------------------ fit
    def fit(self, y, X=None):
        """Fit the model to a count series.

        Parameters
        ----------
        y : pandas Series with a regular DatetimeIndex, or array-like of shape (n_steps,)
            Non-negative whole-number counts, no NaN.
        X : DataFrame or array-like of shape (n_steps, n_features), default=None
            Covariates known in advance (holidays, weather, interventions). 0/1 columns
            are used as they are, others are standardised with the training mean and sd.

        Returns
        -------
        self : CountForecaster
        """
        self._validate_params()
        check_likelihood(self.likelihood, parts=self.inference == "laplace")
        if message := budget_warning(**{"svi": {"num_steps": self.num_steps}, "nuts": {
                "num_warmup": self.num_warmup, "num_samples": self.num_samples}}.get(
                    self.inference, {})):
            warn(message)  # a SamplerWarning pointing at the caller's fit()
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        self.is_panel_ = is_long_frame(y, self.time_col, self.target_col)
        if self.is_panel_:
            if X is not None:
                raise ValueError("with a long frame, covariates are columns of the frame; "
                                 "X must be None")
            family = self._fit_frame(y, self._choose_family)
            self.likelihood_ = likelihood_name(family)
            self.scale_ = float(max(np.mean(self.scales_), 1.0))
            return self
        values, info = check_series(y)
        n = len(values)
        self._set_seasons(info, n)
        self._set_covariates(X, n, info)
        self.series_info_, self.history_ = info, values
        family = self._choose_family(values)
        self.likelihood_ = likelihood_name(family)
        self.scale_ = float(max(values.mean(), 1.0))
        data = self._tensor(np.log1p(values) if self._log else values)[:, None]
        covariates = self._design(self._covariates_train, 0)
        self.inference_ = self._resolve_inference(family)
        self.likelihood_evidence_ = {}
        if self.inference_ == "laplace":
            if self.season_lengths_ and len(values) < max(self.season_lengths_):
                raise ValueError(f"y has {n} steps, fewer than the season of "
                                 f"{max(self.season_lengths_):g}: lower season_lengths")
            self._hierarchy = {}
            family = self._fit_laplace(single_panel(values, info, self._covariates_train),
                                       family)
            self.likelihood_ = likelihood_name(family)
            return self
        self.model_ = self._make_model(values, family)
        num_steps = 1000 if self.num_steps is None else self.num_steps
        with isolated(derived_seed(self.random_state), verbose=self.verbose):
            self.forecaster_, self._param_state, self.losses_ = self._engine(
                data, covariates, num_steps)
        return self

    def _resolve_inference(self, family):
        """The engine used: Laplace unless SVI/NUTS is asked for, or the model needs SVI
        (a trend, or the log-Gaussian comparator)."""
        engine = self.inference
        if engine == "laplace" and (family is None or self.trend):
            engine = "svi"
        if engine != "laplace" and family is not None and family.parts:
            raise ValueError(f"likelihood {family.name!r} has a zero part, which only "
                             "inference='laplace' without a trend models")
        return engine

    @property
    def _log(self):
        """Whether the model is the comparator, fitted to ``log1p(y)``."""
        return is_log_gaussian(self.likelihood)

    def _choose_family(self, values):
        """The family fitted to ``values`` (None: the comparator); seasons must be set."""
        lag = round(self.season_lengths_[0]) if self.season_lengths_ else 1
        return choose_family(self.likelihood, values, lag, parts=self.inference == "laplace")

    def _tensor(self, a):
        return torch.as_tensor(np.asarray(a), dtype=self._dtype, device=self._device)

    def _min_train(self):
        lengths = self.season_lengths or (0,)
        return max(10, int(np.ceil(max(lengths))) + 1)

    def _set_seasons(self, info, n):
        seasons = self.season_lengths
        if seasons is None:
            seasons = default_season_lengths(info.freq, n)
        seasons = tuple(float(p) for p in np.atleast_1d(np.asarray(seasons, dtype=float)))
        if any(not np.isfinite(p) or p < 2 for p in seasons):
            raise ValueError(f"season_lengths must be periods >= 2 steps, got {seasons}")
        terms = self.fourier_terms
        if terms is None:
            terms = [min(int(p // 2), 10) for p in seasons]
        try:
            terms = [int(k) for k in np.broadcast_to(np.asarray(terms), (len(seasons),))]
        except ValueError as exc:
            raise ValueError(
                f"fourier_terms must be one int or one per season ({len(seasons)}), got {terms!r}"
            ) from exc
        for p, k in zip(seasons, terms, strict=True):
            if not 0 <= k <= p // 2:  # harmonics above p / 2 alias lower ones at whole steps
                raise ValueError(
                    f"fourier_terms for period {p:g} must be in 0..{int(p // 2)}, got {k}"
                )
        self.season_lengths_, self.fourier_terms_ = seasons, tuple(terms)

    def _set_covariates(self, X, n, info):
        if X is None:
            self.n_features_in_ = 0
            self._covariates_train = np.zeros((n, 0))
            self._cov_center = self._cov_scale = np.zeros(0)
            return
        values, names = check_covariates(X, n, index=info.index)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = values.shape[1]
        binary = np.all((values == 0) | (values == 1), axis=0)
        sd = values.std(axis=0)
        self._cov_center = np.where(binary, 0.0, values.mean(axis=0))
        self._cov_scale = np.where(binary | (sd == 0), 1.0, sd)  # a constant column stays put
        self._covariates_train = values

    def _design(self, covariates, start):
        """Fourier features of steps ``start..`` next to the standardised covariates."""
        t = np.arange(start, start + len(covariates), dtype=np.float64)
        seasonal = fourier_features(t, self.season_lengths_, self.fourier_terms_)
        scaled = (covariates - self._cov_center) / self._cov_scale
        return self._tensor(np.concatenate([seasonal, scaled], axis=1))

    def _make_model(self, values, family):
        """The Pyro model: ``family``'s counts, or the comparator when it is None."""
        from posheads.models.forecast import CountForecastModel, LogGaussianForecastModel

        seasonal = fourier_features(np.zeros(1), self.season_lengths_, self.fourier_terms_)
        n_seasonal = seasonal.shape[1]
        if family is None:
            return LogGaussianForecastModel(
                n_seasonal=n_seasonal, trend=self.trend, bias_loc=float(np.log1p(values).mean())
            )
        return CountForecastModel(
            likelihood=family,
            n_seasonal=n_seasonal,
            scale=self.scale_,
            bias_loc=unit_bias(self.beta),
            trend=self.trend,
            beta=float(self.beta),
        )

    def _engine(self, data, covariates, num_steps):
        """Fit by the inference stack: ``(forecaster, parameter-store state, losses)``."""
        if self.inference == "nuts":
            samples = sample_posterior(self.model_, data, covariates,
                                       num_warmup=self.num_warmup,
                                       num_samples=self.num_samples, verbose=self.verbose)
            forecaster = NUTSForecaster(self.model_, data, covariates, samples=samples)
            return forecaster, {"params": {}, "constraints": {}}, []
        return self._svi(data, covariates, num_steps)

    def _svi(self, data, covariates, num_steps, guide=None):
        """SVI for ``num_steps`` (0: the guide at its start, for loading), wrapped in a
        :class:`pyro.contrib.forecast.Forecaster` that draws the forecasts."""
        from pyro.contrib.forecast import Forecaster

        guide, params, losses = fit_guide(
            self.model_, data, covariates, init_loc_fn=init_to_mean, num_steps=num_steps,
            learning_rate=self.learning_rate, verbose=self.verbose, guide=guide)
        with pyro.get_param_store().scope(params):
            forecaster = Forecaster(self.model_, data, covariates, guide=guide, num_steps=0,
                                    log_every=0)
        return forecaster, params, losses
