"""Forecasts of a fitted :class:`~.forecaster.CountForecaster`: ``predict``,
``sample_paths`` and ``backtest``, for one series or a long frame.

:class:`ForecastPredictMixin` draws from whichever engine ran: the Laplace engine's joint
draws (:mod:`.laplace_mixin`, one series or many), or the Pyro forecaster of SVI and
NUTS traced over the history and the future covariates. The rest of the forecasting
interface (``predict_interval``, ``plot``, the one-series ``backtest``) comes from
:class:`~.baseline.ForecasterMixin`, which calls ``_paths_and_mean`` here.
"""

from __future__ import annotations

import numpy as np
from pyro import poutine
from sklearn.utils.validation import check_is_fitted

from .baseline import derived_seed
from .engine import isolated
from .panel import is_long_frame
from .report import to_numpy
from .series import check_covariates

__all__ = ["ForecastPredictMixin"]


class ForecastPredictMixin:
    """``predict``, ``sample_paths`` and ``backtest`` of :class:`~.forecaster.CountForecaster`."""

    def _future_covariates(self, horizon, X_future):
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if self.n_features_in_ == 0:
            if X_future is not None:
                raise ValueError(
                    "X_future was given but the forecaster was fitted without covariates"
                )
            return np.zeros((horizon, 0))
        if X_future is None:
            raise ValueError(
                f"the forecaster was fitted with {self.n_features_in_} "
                f"covariate(s): pass X_future with their {horizon} future rows"
            )
        columns = getattr(self, "feature_names_in_", None)
        values, _ = check_covariates(
            X_future,
            horizon,
            name="X_future",
            columns=columns,
            index=self.series_info_.future_index(horizon),
        )
        if values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X_future has {values.shape[1]} columns; the forecaster was "
                f"fitted with {self.n_features_in_}"
            )
        return values

    def _draw(self, covariates, n, seed):
        """Trace the forecaster over ``covariates`` (history + future): (paths, trace)."""
        data = self._tensor(np.log1p(self.history_) if self._log else self.history_)[:, None]
        with isolated(seed, params=self._param_state), poutine.trace() as tr:
            paths = self.forecaster_(data, covariates, num_samples=n)
        return to_numpy(paths.reshape(n, -1)), tr.trace

    def _paths_and_mean(self, horizon, X_future, n):
        check_is_fitted(self)
        future = self._future_covariates(horizon, X_future)
        if self.inference_ == "laplace":
            paths, mean = self._laplace_draws(horizon, [future], n,
                                              derived_seed(self.random_state, 1))
            return paths[:, 0], mean[0]
        full = np.concatenate([self._covariates_train, future], axis=0)
        seed = derived_seed(self.random_state, 1)
        paths, trace = self._draw(self._design(full, 0), n, seed)
        eta = trace.nodes["eta"]["value"].reshape(n, -1)[:, len(self.history_) :]
        if self._log:
            z = np.minimum(paths, np.log(np.finfo(np.float64).max) - 1.0)  # expm1 stays finite
            draws = np.expm1(z)
            return np.clip(np.rint(draws), 0, None), draws.mean(axis=0)
        # The mean given each posterior draw, averaged: no Monte Carlo noise from counts.
        site = self.model_.shape_site
        shape = None if site is None else trace.nodes[site]["value"].reshape(n, 1)
        mean = self.model_.observation(eta, shape).mean.mean(0)
        return paths, to_numpy(mean)

    def predict(self, horizon, X_future=None, level=None):
        """Posterior-predictive mean of the next ``horizon`` counts.

        The mean over posterior draws of ``scale * softplus(eta)`` (no count noise in it).

        Parameters
        ----------
        horizon : int
        X_future : array-like of shape (horizon, n_features), or long DataFrame
            Covariates of the forecast steps; after a long-frame fit, a long frame with
            the id and time columns and the covariate columns.
        level : sequence of float, default=None
            Coverages in percent of the intervals (e.g. ``[80, 90]``): asks for the long
            frame. It is always returned after a long-frame fit.

        Returns
        -------
        ndarray of shape (horizon,), or Series indexed by the future time stamps
            One series fitted without ``level``.
        DataFrame
            ``id_col, time_col, mean, median, lo-L, hi-L`` for each level ``L`` (whole
            counts), one row per series and step (series, then hierarchy totals).
        """
        if getattr(self, "is_panel_", False):
            return self._predict_frame(horizon, X_future, level)
        paths, mean = self._paths_and_mean(horizon, X_future, self.num_samples)
        if level is None:
            return self._output(mean)
        from .panel import forecast_frame

        name = 0 if self.series_info_.name is None else self.series_info_.name
        stamps = self.series_info_.future_index(horizon)
        if stamps is None:
            stamps = np.arange(len(self.history_), len(self.history_) + horizon)
        return forecast_frame([name], [stamps], mean[None], paths[:, None], level,
                              self.id_col, self.time_col)

    def sample_paths(self, horizon, n, X_future=None):
        """Joint draws of the next ``horizon`` counts from the predictive distribution.

        Parameters
        ----------
        horizon : int
        n : int
            Number of paths.
        X_future : array-like of shape (horizon, n_features), or long DataFrame
            The covariates of the forecast steps (required when fitted with covariates).

        Returns
        -------
        ndarray of shape (n, horizon), int64
            For one series.
        ndarray of shape (n, n_series, horizon), int64
            After a long-frame fit: rows in the order of ``series_ids_`` (the series, then
            the hierarchy totals, whose draws are the sums of their parts' draws); draw
            ``i`` of every series comes from the same posterior draw (joint draws).
        """
        if getattr(self, "is_panel_", False):
            return self._panel_draws(horizon, X_future, int(n))[2].astype(np.int64)
        return super().sample_paths(horizon, n, X_future=X_future)

    def backtest(self, y, X=None, *, horizon, n_windows=5, stride=None, coverage=0.9):
        """Rolling-origin evaluation (see :meth:`ForecasterMixin.backtest`).

        On a long frame, every window refits all series together (each series' origins
        counted from its own end) and the table has one row per series and window, with
        the id column and ``window`` first.
        """
        if is_long_frame(y, self.time_col, self.target_col):
            return self._backtest_frame(y, horizon, n_windows, stride, coverage)
        return super().backtest(y, X, horizon=horizon, n_windows=n_windows, stride=stride,
                                coverage=coverage)
