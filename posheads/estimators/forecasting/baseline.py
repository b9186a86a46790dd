"""The shared base of posheads' forecasters, and the seasonal naive forecaster.

:class:`ForecasterMixin` writes ``sample_paths``, ``predict_interval``, ``plot`` and
``backtest`` once, on top of what a forecaster provides: ``_paths_and_mean(horizon,
X_future, n)`` (sample paths and the mean forecast), ``_min_train()`` (the shortest
training prefix a backtest window may have), and the fitted ``history_`` and
``series_info_``. :func:`derived_seed` turns ``random_state`` into the seed of each random
step of a forecaster.
:class:`SeasonalNaiveForecaster` repeats the last season with Gaussian errors whose spread
grows with the number of seasons ahead (as R's ``forecast::snaive``): the baseline every
count forecaster should beat.
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .series import (
    backtest_windows,
    check_covariates,
    check_series,
    default_season_lengths,
    interval_from_paths,
    score_paths,
    take_rows,
)

__all__ = ["ForecasterMixin", "SeasonalNaiveForecaster", "derived_seed"]


def derived_seed(random_state, offset: int = 0) -> int | None:
    """The seed of one random step of a forecaster, from its ``random_state``.

    Each step (fitting, forecasting, summaries) passes its own ``offset``, so that the
    steps draw different streams while a fixed ``random_state`` fixes them all.

    Parameters
    ----------
    random_state : int, RandomState or None
        None gives None (fresh entropy); a ``RandomState`` gives its next integer.
    offset : int, default=0

    Returns
    -------
    int in ``[0, 2**31 - 1)``, or None
    """
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return (int(random_state) + offset) % (2**31 - 1)


class ForecasterMixin:
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

    def plot(self, horizon, X_future=None, *, coverage=0.9, n_history=None, ax=None,
             title=None):
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
        title : str, default=None
            Title of the axes (default: the series' name, the horizon and the coverage);
            time stamps get concise date labels (:func:`.plots.format_time_axis`).

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
        ax.fill_between(
            t_future, lo, hi, color="C0", alpha=0.25, step=None, label=f"{coverage:.0%} interval"
        )
        ax.plot(t_future, mean, color="C0", lw=1.5, label="forecast mean")
        ax.set_ylabel(info.name if info.name is not None else "count")
        ax.legend(loc="best", frameon=False)
        from .plots import format_time_axis

        name = "series" if info.name is None else info.name
        ax.set_title(title if title is not None else
                     f"{name}: {horizon}-step forecast, {coverage:.0%} interval")
        format_time_axis(ax)
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
            X_train = None if Xv is None else take_rows(X, 0, t1)
            est.fit(y_train, X_train)
            X_test = None if Xv is None else Xv[t1 : t1 + horizon]
            paths = est.sample_paths(horizon, self.num_samples, X_future=X_test)
            scores = score_paths(paths, values[t1 : t1 + horizon], coverage)
            rows.append(
                {
                    "train_end": labels[t1 - 1],
                    "test_start": labels[t1],
                    "test_end": labels[t1 + horizon - 1],
                    "n_train": t1,
                    **scores,
                }
            )
        return pd.DataFrame(rows)


class SeasonalNaiveForecaster(ForecasterMixin, BaseEstimator):
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
        rng = np.random.default_rng(derived_seed(self.random_state))
        draws = rng.normal(mean, sd, size=(n, horizon))
        return np.clip(np.rint(draws), 0, None), mean
