"""Helpers of the forecasters: series and covariate checks, seasonal features, backtests.

Nothing here modifies what the caller passed. Scores are computed from sample paths, the
same way for every forecaster, so that a table compares like with like:

- CRPS, the continuous ranked probability score of the empirical distribution of the
  paths (:func:`pyro.ops.stats.crps_empirical`), averaged over the horizon;
- MAE of the median path value (the point forecast that minimises absolute error, as
  :func:`pyro.contrib.forecast.eval_mae` takes it);
- coverage, the fraction of held-out counts inside the central predictive interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyro.ops.stats import crps_empirical

__all__ = [
    "SeriesInfo",
    "backtest_windows",
    "check_covariates",
    "check_series",
    "default_season_lengths",
    "fourier_features",
    "interval_from_paths",
    "score_paths",
    "take_rows",
]

# Seasonal periods by the rule code of a pandas frequency (anchors such as "-SUN" are
# dropped first). A year of days is 365.25 so that leap years do not shift the phase.
_SEASONS = {
    "D": (7.0,),
    "B": (5.0,),
    "h": (24.0, 168.0),
    "H": (24.0, 168.0),
    "W": (52.18,),
    "MS": (12.0,),
    "ME": (12.0,),
    "M": (12.0,),
    "QS": (4.0,),
    "QE": (4.0,),
    "Q": (4.0,),
}


@dataclass
class SeriesInfo:
    """What a fitted forecaster remembers about the time axis of its series."""

    index: pd.DatetimeIndex | None  # the time stamps of the training series, if any
    freq: object  # a pandas offset, or None for a positional series
    name: object  # the name of the series (a pandas Series' name), or None

    def future_index(self, horizon: int):
        """Time stamps of the next ``horizon`` steps (positions if there is no calendar)."""
        if self.index is None:
            return None
        return pd.date_range(
            self.index[-1] + self.freq, periods=horizon, freq=self.freq, name=self.index.name
        )


def check_series(y, *, min_length: int = 3):
    """Validate a 1-D count series; return ``(values as float64, SeriesInfo)``.

    A pandas Series with a ``DatetimeIndex`` must be sorted, without duplicates, and
    regular (a frequency pandas can infer); any other index is taken as positions.
    """
    info = SeriesInfo(index=None, freq=None, name=getattr(y, "name", None))
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"y must be one series (1-D), got a frame with {y.shape[1]} columns")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series) and isinstance(y.index, pd.DatetimeIndex):
        info.index, info.freq = _regular_index(y.index)
    try:
        values = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must hold numbers (counts), got {exc}") from exc
    if values.ndim != 1:
        raise ValueError(f"y must be a 1-D series, got an array of shape {values.shape}")
    if values.shape[0] < min_length:
        raise ValueError(f"y has {values.shape[0]} time steps; at least {min_length} are needed")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"y contains {int(bad.sum())} NaN or infinite value(s) (first at "
            f"position {int(np.argmax(bad))}): counts must be finite"
        )
    if np.any(values < 0):
        raise ValueError(
            f"y contains {int((values < 0).sum())} negative value(s): counts must be >= 0"
        )
    if np.any(values != np.floor(values)):
        raise ValueError("y contains values that are not whole numbers: counts are 0, 1, 2, ...")
    return values.copy(), info


def _regular_index(index: pd.DatetimeIndex):
    if index.has_duplicates or not index.is_monotonic_increasing:
        raise ValueError("the DatetimeIndex of y must be sorted in time and without duplicates")
    freq = index.freq
    if freq is None and len(index) >= 3:
        freq = pd.DatetimeIndex(index, freq="infer").freq
    if freq is None:
        raise ValueError(
            "the DatetimeIndex of y is irregular (no frequency can be inferred): the "
            "forecaster needs equally spaced steps; resample the series (e.g. "
            "y.asfreq('D', fill_value=0) for days without events) or pass a plain array"
        )
    return index, freq


def check_covariates(X, n_rows: int, *, name: str = "X", columns=None, index=None):
    """Validate covariates: a 2-D finite float array with ``n_rows`` rows.

    Returns ``(array, column names or None)``. ``columns``, when given, are the names seen
    in ``fit``: a frame must have them (in any order; it is reordered). ``index``, when
    given with a frame that has a ``DatetimeIndex``, must equal the frame's index.
    """
    names = None
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        if len(X) != n_rows:
            raise ValueError(
                f"{name} has {len(X)} rows but {n_rows} are needed (one per time step)"
            )
        if columns is not None:
            missing = [c for c in columns if c not in X.columns]
            if missing:
                raise ValueError(f"{name} lacks the column(s) seen in fit: {missing}")
            X = X[list(columns)]
        if (
            index is not None
            and isinstance(X.index, pd.DatetimeIndex)
            and not X.index.equals(index)
        ):
            raise ValueError(
                f"the index of {name} does not match the time stamps it is "
                f"for ({index[0]} .. {index[-1]})"
            )
        names = [str(c) for c in X.columns]
    try:
        values = np.array(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold numbers, got {exc}") from exc
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (time steps x covariates), got {values.shape}")
    if values.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {values.shape[0]} rows but {n_rows} are needed (one per time step)"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite value(s): "
            "fill them first (covariates must be known at every step)"
        )
    return values, names


def take_rows(X, start: int, stop: int):
    """Rows ``start:stop`` of ``X``, a frame or series kept as one (its index and names)."""
    if isinstance(X, (pd.DataFrame, pd.Series)):
        return X.iloc[start:stop]
    return np.asarray(X)[start:stop]


def default_season_lengths(freq, n_obs: int) -> tuple[float, ...]:
    """Seasonal periods for a pandas frequency: weekly for days (plus yearly from 2 years)."""
    if freq is None:
        return ()
    code = freq.rule_code.split("-")[0]
    seasons = _SEASONS.get(code, ())
    if code == "D" and n_obs >= 730:
        seasons = (*seasons, 365.25)
    return seasons


def fourier_features(t: np.ndarray, season_lengths, fourier_terms) -> np.ndarray:
    """Columns ``cos(2 pi k t / p), sin(2 pi k t / p)`` for each period ``p`` and ``k``.

    ``sin`` is left out where ``2 k == p`` (it is zero at every whole ``t``).

    Returns
    -------
    ndarray of shape ``(len(t), n_features)``
    """
    columns = []
    for p, n_terms in zip(season_lengths, fourier_terms, strict=True):
        for k in range(1, n_terms + 1):
            angle = 2.0 * math.pi * k * t / p
            columns.append(np.cos(angle))
            if 2 * k != p:
                columns.append(np.sin(angle))
    if not columns:
        return np.zeros((len(t), 0))
    return np.stack(columns, axis=1)


def interval_from_paths(paths: np.ndarray, coverage: float) -> np.ndarray:
    """Central interval of each column of ``paths`` (draws x steps), shape ``(steps, 2)``.

    Bounds are order statistics of the draws (``inverted_cdf``), so they are whole counts.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    tail = (1.0 - coverage) / 2.0
    q = np.quantile(paths, [tail, 1.0 - tail], axis=0, method="inverted_cdf")
    return q.T.astype(np.float64)


def score_paths(paths: np.ndarray, truth: np.ndarray, coverage: float) -> dict:
    """CRPS, MAE of the median and interval coverage of sample paths against the truth."""
    crps = crps_empirical(
        torch.as_tensor(paths, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64)
    )
    lo, hi = interval_from_paths(paths, coverage).T
    median = np.quantile(paths, 0.5, axis=0, method="inverted_cdf")
    return {
        "crps": float(crps.mean()),
        "mae": float(np.mean(np.abs(median - truth))),
        "coverage": float(np.mean((truth >= lo) & (truth <= hi))),
    }


def backtest_windows(n_obs: int, horizon: int, n_windows: int, stride, min_train: int):
    """Training ends ``t1`` of ``n_windows`` rolling origins; the last test ends the series."""
    for name, value in (("horizon", horizon), ("n_windows", n_windows)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    stride = horizon if stride is None else stride
    if not (isinstance(stride, (int, np.integer)) and stride >= 1):
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    ends = [n_obs - horizon - stride * (n_windows - 1 - i) for i in range(n_windows)]
    if ends[0] < min_train:
        raise ValueError(
            f"{n_windows} windows of horizon {horizon} and stride {stride} leave "
            f"{ends[0]} training steps in the first window; at least {min_train} are needed"
        )
    return ends
