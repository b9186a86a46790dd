"""Count forecasters with scikit-learn parameters: ``CountForecaster`` and a seasonal naive.

:class:`CountForecaster` fits :class:`posheads.models.forecast.CountForecastModel` (a
random-walk level, Fourier seasons and known-in-advance covariates inside a softplus
link, Poisson or negative binomial counts) with Pyro's forecasting framework, by SVI or
NUTS, and forecasts integer sample paths. ``likelihood="log_gaussian"`` fits the same
structure to ``log1p(y)`` with Gaussian noise instead -- the recipe of Pyro's tutorials,
kept as the comparator. :class:`SeasonalNaiveForecaster` repeats the last season with
Gaussian errors whose spread grows with the number of seasons ahead (as R's ``snaive``).

All forecasters share ``predict_interval``, ``plot`` and ``backtest`` (rolling origins,
scored by CRPS, MAE and interval coverage; see :mod:`posheads.estimators._series`).
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from pyro import poutine
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._forecast_engine import NUTSForecaster, isolated
from ._series import (
    backtest_windows,
    check_covariates,
    check_series,
    default_season_lengths,
    fourier_features,
    interval_from_paths,
    score_paths,
)

__all__ = ["CountForecaster", "SeasonalNaiveForecaster"]

_SOFTPLUS_INV_1 = 0.5413248546129181  # softplus_inverse(1): the bias giving mean == scale


def _seed(random_state, offset: int = 0) -> int | None:
    """A torch seed from ``random_state`` (None: fresh entropy), shifted per use."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return (int(random_state) + offset) % (2**31 - 1)


def _init_to_mean(site):
    """Start the guide at prior means (zero innovations), as a fresh tensor.

    The prior of the innovations has an expanded (stride-0) mean; an optimiser cannot
    update a parameter that shares memory, hence the copy.
    """
    from pyro.infer.autoguide import init_to_mean

    return init_to_mean(site).clone()


class _ForecasterMixin:
    """Intervals, plots and backtests, written once on top of ``sample_paths``."""

    def _output(self, values, columns=None):
        index = self.series_info_.future_index(len(values))
        if index is None:
            return values
        if columns is None:
            return pd.Series(values, index=index, name=self.series_info_.name)
        return pd.DataFrame(values, index=index, columns=columns)

    def sample_paths(self, horizon, n, X_future=None):
        """Joint draws of the next ``horizon`` counts from the predictive distribution.

        Parameters
        ----------
        horizon : int
        n : int
            Number of paths.
        X_future : array-like of shape (horizon, n_features), default=None
            The covariates of the forecast steps (required when fitted with ``X``).

        Returns
        -------
        ndarray of shape (n, horizon), int64
        """
        return self._paths_and_mean(horizon, X_future, int(n))[0].astype(np.int64)

    def predict_interval(self, horizon, coverage=0.9, X_future=None):
        """Central predictive interval of the next ``horizon`` counts.

        Parameters
        ----------
        horizon : int
        coverage : float, default=0.9
        X_future : array-like of shape (horizon, n_features), default=None

        Returns
        -------
        ndarray of shape (horizon, 2), or DataFrame with columns ``lower``, ``upper``
            Whole-number bounds; a DataFrame indexed by the future time stamps when the
            forecaster was fitted on a series with a ``DatetimeIndex``.
        """
        paths = self.sample_paths(horizon, self.num_samples, X_future=X_future)
        return self._output(interval_from_paths(paths, coverage), ["lower", "upper"])

    def plot(self, horizon, X_future=None, *, coverage=0.9, n_history=None, ax=None):
        """Plot the end of the history, the mean forecast and its predictive interval.

        Parameters
        ----------
        horizon : int
        X_future : array-like of shape (horizon, n_features), default=None
        coverage : float, default=0.9
        n_history : int, default=None
            History steps to show (default: ``4 * horizon``, at most the whole series).
        ax : matplotlib Axes, default=None
            Axes to draw on (default: a new figure).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        check_is_fitted(self)
        paths, mean = self._paths_and_mean(horizon, X_future, self.num_samples)
        lo, hi = interval_from_paths(paths, coverage).T
        history = self.history_
        n_history = min(len(history), 4 * horizon if n_history is None else n_history)
        info = self.series_info_
        if info.index is None:
            t_hist = np.arange(len(history))[-n_history:]
            t_future = np.arange(len(history), len(history) + horizon)
        else:
            t_hist, t_future = info.index[-n_history:], info.future_index(horizon)
        if ax is None:
            fig, ax = plt.subplots(figsize=(9, 3.5))
        else:
            fig = ax.figure
        ax.plot(t_hist, history[-n_history:], color="0.2", lw=1, label="observed")
        ax.fill_between(t_future, lo, hi, color="C0", alpha=0.25, step=None,
                        label=f"{coverage:.0%} interval")
        ax.plot(t_future, mean, color="C0", lw=1.5, label="forecast mean")
        ax.set_ylabel(info.name if info.name is not None else "count")
        ax.legend(loc="best", frameon=False)
        return fig

    def backtest(self, y, X=None, *, horizon, n_windows=5, stride=None, coverage=0.9):
        """Rolling-origin evaluation: refit on each prefix, score the next ``horizon`` steps.

        The estimator itself is not changed: each window fits a clone. Window ``i`` trains
        on the first ``t1_i`` steps, where the last window's test ends the series and
        origins are ``stride`` (default ``horizon``) steps apart.

        Parameters
        ----------
        y : array-like or pandas Series of shape (n_steps,)
        X : array-like of shape (n_steps, n_features), default=None
            Covariates; the test window's rows serve as the known future values.
        horizon, n_windows : int
        stride : int, default=None
        coverage : float, default=0.9

        Returns
        -------
        DataFrame
            One row per window: ``train_end`` (last training step), ``test_start``,
            ``test_end``, ``n_train``, ``crps``, ``mae`` (of the median forecast) and
            ``coverage`` (fraction of test counts inside the interval).
        """
        values, info = check_series(y)
        n = len(values)
        Xv = None if X is None else check_covariates(X, n)[0]
        ends = backtest_windows(n, horizon, n_windows, stride, self._min_train())
        labels = info.index if info.index is not None else pd.RangeIndex(n)
        rows = []
        for t1 in ends:
            est = clone(self)
            y_train = y.iloc[:t1] if isinstance(y, pd.Series) else values[:t1]
            X_train = None if Xv is None else _rows(X, 0, t1)
            est.fit(y_train, X_train)
            X_test = None if Xv is None else Xv[t1:t1 + horizon]
            paths = est.sample_paths(horizon, self.num_samples, X_future=X_test)
            scores = score_paths(paths, values[t1:t1 + horizon], coverage)
            rows.append({"train_end": labels[t1 - 1], "test_start": labels[t1],
                         "test_end": labels[t1 + horizon - 1], "n_train": t1, **scores})
        return pd.DataFrame(rows)


def _rows(X, start, stop):
    return X.iloc[start:stop] if isinstance(X, (pd.DataFrame, pd.Series)) else \
        np.asarray(X)[start:stop]


class CountForecaster(_ForecasterMixin, BaseEstimator):
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
    likelihood : {"negative_binomial", "poisson", "log_gaussian"}, default="negative_binomial"
        The count law; ``"log_gaussian"`` is the log-transform comparator.
    inference : {"svi", "nuts"}, default="svi"
    num_steps : int, default=1000
        SVI steps.
    learning_rate : float, default=0.05
        Initial learning rate of SVI (decayed tenfold over the run).
    num_samples : int, default=500
        Forecast sample paths drawn for predictions, intervals and backtests; NUTS draws.
    num_warmup : int, default=300
        NUTS warm-up steps.
    beta : float, default=1.0
        Softness of the softplus link.
    dtype : {"float64", "float32"}, default="float64"
    random_state : int, RandomState or None, default=None
        Seeds fitting and forecasting: the same seed gives the same paths.
    verbose : int, default=0
        Log SVI losses (ten times a run) or show the NUTS progress bar.

    Attributes
    ----------
    season_lengths_, fourier_terms_ : tuple
        The seasons used.
    scale_ : float
        Exposure of the count law (the mean count, at least 1).
    n_features_in_ : int
        Covariates seen in ``fit``; ``feature_names_in_`` when they came as a DataFrame.
    forecaster_ : pyro.contrib.forecast.Forecaster or NUTSForecaster
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
        "fourier_terms": [Interval(numbers.Integral, 0, None, closed="left"), "array-like",
                          None],
        "trend": ["boolean"],
        "likelihood": [StrOptions({"negative_binomial", "poisson", "log_gaussian"})],
        "inference": [StrOptions({"svi", "nuts"})],
        "num_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "num_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_warmup": [Interval(numbers.Integral, 0, None, closed="left")],
        "beta": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "dtype": [StrOptions({"float64", "float32"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, season_lengths=None, *, fourier_terms=None, trend=False,
                 likelihood="negative_binomial", inference="svi", num_steps=1000,
                 learning_rate=0.05, num_samples=500, num_warmup=300, beta=1.0,
                 dtype="float64", random_state=None, verbose=0):
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
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

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
        values, info = check_series(y)
        n = len(values)
        self._set_seasons(info, n)
        self._set_covariates(X, n, info)
        self.series_info_, self.history_ = info, values
        self.scale_ = float(max(values.mean(), 1.0))
        data = self._tensor(np.log1p(values) if self._log else values)[:, None]
        covariates = self._design(self._covariates_train, 0)
        self.model_ = self._make_model(values)
        with isolated(_seed(self.random_state), verbose=self.verbose) as param_state:
            self.forecaster_ = self._engine(data, covariates)
        self._param_state = param_state
        self.losses_ = list(getattr(self.forecaster_, "losses", []))
        return self

    @property
    def _log(self):
        return self.likelihood == "log_gaussian"

    def _tensor(self, a):
        return torch.as_tensor(np.asarray(a), dtype=getattr(torch, self.dtype))

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
        terms = [int(k) for k in np.broadcast_to(np.asarray(terms), (len(seasons),))]
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

    def _make_model(self, values):
        from posheads.models.forecast import CountForecastModel, LogGaussianForecastModel

        n_seasonal = fourier_features(np.zeros(1), self.season_lengths_,
                                      self.fourier_terms_).shape[1]
        if self._log:
            return LogGaussianForecastModel(n_seasonal=n_seasonal, trend=self.trend,
                                            bias_loc=float(np.log1p(values).mean()))
        return CountForecastModel(likelihood=self.likelihood, n_seasonal=n_seasonal,
                                  scale=self.scale_, bias_loc=_SOFTPLUS_INV_1,
                                  trend=self.trend, beta=float(self.beta))

    def _engine(self, data, covariates):
        if self.inference == "nuts":
            return NUTSForecaster(self.model_, data, covariates, num_warmup=self.num_warmup,
                                  num_samples=self.num_samples, verbose=self.verbose)
        from pyro.contrib.forecast import Forecaster

        log_every = max(self.num_steps // 10, 1) if self.verbose else 0
        return Forecaster(self.model_, data, covariates, learning_rate=self.learning_rate,
                          num_steps=self.num_steps, init_loc_fn=_init_to_mean,
                          log_every=log_every)

    # ------------------------------------------------------------- forecasts
    def _future_covariates(self, horizon, X_future):
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if self.n_features_in_ == 0:
            if X_future is not None:
                raise ValueError("X_future was given but the forecaster was fitted without "
                                 "covariates")
            return np.zeros((horizon, 0))
        if X_future is None:
            raise ValueError(f"the forecaster was fitted with {self.n_features_in_} "
                             f"covariate(s): pass X_future with their {horizon} future rows")
        columns = getattr(self, "feature_names_in_", None)
        values, _ = check_covariates(X_future, horizon, name="X_future", columns=columns,
                                     index=self.series_info_.future_index(horizon))
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"X_future has {values.shape[1]} columns; the forecaster was "
                             f"fitted with {self.n_features_in_}")
        return values

    def _draw(self, covariates, n, seed):
        """Trace the forecaster over ``covariates`` (history + future): (paths, trace)."""
        data = self._tensor(np.log1p(self.history_) if self._log else self.history_)[:, None]
        with isolated(seed, params=self._param_state), poutine.trace() as tr:
            paths = self.forecaster_(data, covariates, num_samples=n)
        return paths.reshape(n, -1).double().numpy(), tr.trace

    def _paths_and_mean(self, horizon, X_future, n):
        check_is_fitted(self)
        future = self._future_covariates(horizon, X_future)
        full = np.concatenate([self._covariates_train, future], axis=0)
        paths, trace = self._draw(self._design(full, 0), n, _seed(self.random_state, 1))
        eta = trace.nodes["eta"]["value"].reshape(n, -1)[:, len(self.history_):]
        if self._log:
            z = np.minimum(paths, np.log(np.finfo(np.float64).max) - 1.0)  # expm1 stays finite
            draws = np.expm1(z)
            return np.clip(np.rint(draws), 0, None), draws.mean(axis=0)
        from posheads.ops import softplus

        mean = self.scale_ * softplus(eta.double(), beta=float(self.beta)).mean(0)
        return paths, mean.numpy()

    def predict(self, horizon, X_future=None):
        """Posterior-predictive mean of the next ``horizon`` counts.

        The mean over posterior draws of ``scale * softplus(eta)`` (no count noise in it).

        Returns
        -------
        ndarray of shape (horizon,), or Series indexed by the future time stamps
        """
        return self._output(self._paths_and_mean(horizon, X_future, self.num_samples)[1])

    # ------------------------------------------------------------- posterior
    def _posterior_trace(self):
        check_is_fitted(self)
        covariates = self._design(self._covariates_train, 0)
        return self._draw(covariates, self.num_samples, _seed(self.random_state, 2))[1]

    def _param_names(self):
        names = []
        for p, k in zip(self.season_lengths_, self.fourier_terms_, strict=True):
            for j in range(1, k + 1):
                names += [f"season{p:g}_cos{j}"] + ([f"season{p:g}_sin{j}"] if 2 * j != p else [])
        features = getattr(self, "feature_names_in_", None)
        if features is None:
            features = [f"x{i}" for i in range(self.n_features_in_)]
        return {"seasonal": names, "weight": list(features)}

    def summary(self, coverage=0.9):
        """Posterior mean, sd and central interval of every global parameter.

        Weights of standardised covariates are per training standard deviation; those of
        0/1 covariates per unit. All are on the scale of the linear predictor ``eta``.

        Returns
        -------
        DataFrame with columns ``mean``, ``sd``, ``lower``, ``upper``
        """
        trace, names = self._posterior_trace(), self._param_names()
        tail = (1 - coverage) / 2
        rows = {}
        for site in ("bias", "seasonal", "weight", "drift_scale", "slope_scale",
                     "concentration", "sigma"):
            if site not in trace.nodes:
                continue
            draws = trace.nodes[site]["value"].reshape(self.num_samples, -1).double().numpy()
            labels = names.get(site, [site])
            for j in range(draws.shape[1]):
                d = draws[:, j]
                rows[labels[j]] = [d.mean(), d.std(), *np.quantile(d, [tail, 1 - tail])]
        return pd.DataFrame.from_dict(rows, orient="index",
                                      columns=["mean", "sd", "lower", "upper"])

    def covariate_effect(self, column, coverage=0.9):
        """Posterior effect of one covariate on the expected count, where it is non-zero.

        Compares, over the training steps where the covariate is non-zero, the fitted
        mean ``scale * softplus(eta)`` with the counterfactual mean whose ``eta`` lacks
        that covariate's term. Under a softplus link the effect depends on the level, so
        it is summarised as the mean change per step and the relative change of the
        total (``sum(mu) / sum(mu_without) - 1``).

        Parameters
        ----------
        column : str or int
            A name from ``feature_names_in_`` or a column position.
        coverage : float, default=0.9

        Returns
        -------
        DataFrame with rows ``change_per_step``, ``relative_change`` and columns
        ``mean``, ``lower``, ``upper``
        """
        check_is_fitted(self)
        if self._log:
            raise ValueError("covariate_effect needs a count likelihood, not log_gaussian")
        j = self._column_position(column)
        active = self._covariates_train[:, j] != 0
        if not active.any():
            raise ValueError(f"covariate {column!r} is zero at every training step")
        from posheads.ops import softplus

        trace = self._posterior_trace()
        eta = trace.nodes["eta"]["value"].reshape(self.num_samples, -1).double()[:, active]
        w = trace.nodes["weight"]["value"].reshape(self.num_samples, -1).double()[:, j:j + 1]
        x = (self._covariates_train[active, j] - self._cov_center[j]) / self._cov_scale[j]
        beta = float(self.beta)
        mu = self.scale_ * softplus(eta, beta=beta)
        mu0 = self.scale_ * softplus(eta - w * torch.as_tensor(x), beta=beta)
        draws = {"change_per_step": (mu - mu0).mean(1).numpy(),
                 "relative_change": (mu.sum(1) / mu0.sum(1) - 1.0).numpy()}
        tail = (1 - coverage) / 2
        return pd.DataFrame({k: [v.mean(), *np.quantile(v, [tail, 1 - tail])]
                             for k, v in draws.items()}, index=["mean", "lower", "upper"]).T

    def _column_position(self, column):
        names = getattr(self, "feature_names_in_", None)
        if isinstance(column, (int, np.integer)) and 0 <= column < self.n_features_in_:
            return int(column)
        if names is not None and column in list(names):
            return list(names).index(column)
        raise ValueError(f"unknown covariate {column!r}; the forecaster has "
                         f"{list(names) if names is not None else self.n_features_in_}")


class SeasonalNaiveForecaster(_ForecasterMixin, BaseEstimator):
    """Repeat the last season; Gaussian errors with spread ``sigma * sqrt(seasons ahead)``.

    ``sigma`` is the root mean square of the in-sample seasonal differences
    ``y_t - y_{t-m}``, as in R's ``forecast::snaive``; draws are rounded and clipped at 0
    so that paths are counts.

    Parameters
    ----------
    season_length : int, default=None
        ``m``; None takes the first period of the frequency's default seasons (7 for
        days, 12 for months), or 1 (a naive forecast) without a calendar.
    num_samples : int, default=500
    random_state : int, RandomState or None, default=None

    Examples
    --------
    >>> import numpy as np
    >>> f = SeasonalNaiveForecaster(season_length=2).fit(np.array([1, 5, 2, 6, 1, 5]))
    >>> f.predict(3)
    array([1., 5., 1.])
    """

    _parameter_constraints: ClassVar[dict] = {
        "season_length": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "num_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, season_length=None, *, num_samples=500, random_state=None):
        self.season_length = season_length
        self.num_samples = num_samples
        self.random_state = random_state

    def _min_train(self):
        return 2 * (self.season_length or 1) + 1

    def fit(self, y, X=None):
        """Store the last season and the spread of seasonal differences (``X`` is ignored)."""
        self._validate_params()
        values, info = check_series(y)
        m = self.season_length
        if m is None:
            seasons = default_season_lengths(info.freq, len(values))
            m = round(seasons[0]) if seasons else 1
        if len(values) <= m:
            raise ValueError(f"y has {len(values)} steps; a season of {m} needs more")
        diff = values[m:] - values[:-m]
        self.season_length_, self.sigma_ = m, float(np.sqrt(np.mean(diff**2)))
        self.series_info_, self.history_ = info, values
        return self

    def _moments(self, horizon):
        check_is_fitted(self)
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        m, h = self.season_length_, np.arange(horizon)
        last = self.history_[-m:]
        return last[h % m], self.sigma_ * np.sqrt(h // m + 1.0)

    def predict(self, horizon, X_future=None):
        """The last season repeated (``X_future`` is ignored)."""
        return self._output(self._moments(horizon)[0].astype(np.float64))

    def _paths_and_mean(self, horizon, X_future, n):
        mean, sd = self._moments(horizon)
        rng = np.random.default_rng(_seed(self.random_state))
        draws = rng.normal(mean, sd, size=(n, horizon))
        return np.clip(np.rint(draws), 0, None), mean
