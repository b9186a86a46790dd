"""Many series in one long frame: checks, padding, and the long forecast frame.

A panel comes as statsforecast's long format: one row per series and step, with an id
column (``unique_id``), a time column (``ds``: time stamps of one regular frequency, or
integer positions), the counts (``y``) and optionally covariate columns (every other
column). :func:`check_panel` validates it -- every error names the series and the row --
and returns a :class:`Panel`; :func:`check_future` validates the covariates of the
forecast steps; :func:`forecast_frame` writes the long output frame with statsforecast's
column names (``mean``, ``median``, ``lo-90``, ``hi-90``, ...). :func:`check_hierarchy`
validates a grouping of series into totals.

Nothing here modifies the caller's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Panel",
    "check_future",
    "check_hierarchy",
    "check_panel",
    "forecast_frame",
    "is_long_frame",
]


@dataclass
class Panel:
    """A validated panel of count series.

    Attributes
    ----------
    ids : list
        The series' ids, in order of first appearance.
    values : list of ndarray
        Each series' counts (float64).
    stamps : list of Index
        Each series' time stamps (or integer positions).
    covariates : list of ndarray
        Each series' covariates, shape ``(n_steps, n_covariates)``.
    covariate_names : list of str
    freq : pandas offset or None
        None for integer positions.
    origin : Timestamp or int
        The earliest time stamp: step 0 of the seasonal phase of every series.
    """

    ids: list
    values: list
    stamps: list
    covariates: list
    covariate_names: list
    freq: object
    origin: object

    def positions(self, s: int, horizon: int = 0) -> np.ndarray:
        """Steps of series ``s`` since the origin, its history then ``horizon`` more."""
        first = self._offset(self.stamps[s][0])
        return np.arange(first, first + len(self.values[s]) + horizon, dtype=np.float64)

    def _offset(self, stamp) -> int:
        if self.freq is None:
            return int(stamp - self.origin)
        return len(pd.date_range(self.origin, stamp, freq=self.freq)) - 1

    def future_stamps(self, s: int, horizon: int):
        """Time stamps of the ``horizon`` steps after series ``s``."""
        last = self.stamps[s][-1]
        if self.freq is None:
            return pd.Index(np.arange(last + 1, last + 1 + horizon))
        return pd.date_range(last + self.freq, periods=horizon, freq=self.freq)


def is_long_frame(y, time_col: str, target_col: str) -> bool:
    """Whether ``y`` is a long frame (a DataFrame with the time and target columns)."""
    return isinstance(y, pd.DataFrame) and time_col in y.columns and target_col in y.columns


def _plain(value):
    """A NumPy scalar as the Python value (for readable messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _where(df, ids, mask, what):
    """``'series X, row R'`` for the first row where ``mask`` holds."""
    i = int(np.argmax(np.asarray(mask)))
    return f"series {_plain(ids.iloc[i])!r}, row {_plain(df.index[i])!r}: {what}"


def _panel_freq(stamps_by_series):
    """The frequency of the first series (longest first) whose stamps pandas can read;
    else the smallest step, as a fixed offset (so that a gap is reported as one)."""
    for stamps in sorted(stamps_by_series, key=len, reverse=True):
        if len(stamps) >= 3:
            freq = pd.infer_freq(pd.DatetimeIndex(stamps))
            if freq is not None:
                return pd.tseries.frequencies.to_offset(freq)
    steps = [np.diff(np.asarray(st, dtype="datetime64[ns]")) for st in stamps_by_series]
    steps = np.concatenate([d for d in steps if len(d)]) if any(len(d) for d in steps) else []
    if len(steps) == 0 or np.min(steps) <= np.timedelta64(0, "ns"):
        raise ValueError("the time stamps have no regular frequency")
    return pd.tseries.frequencies.to_offset(pd.Timedelta(np.min(steps)))


def check_panel(df: pd.DataFrame, id_col: str, time_col: str, target_col: str, *,
                min_length: int = 3) -> Panel:
    """Validate a long frame; every error names the series and the row.

    Parameters
    ----------
    df : DataFrame
        Columns ``id_col``, ``time_col``, ``target_col`` and optional numeric covariates.
    id_col, time_col, target_col : str
    min_length : int
        The fewest steps a series may have (at least one season).

    Returns
    -------
    Panel
    """
    if id_col not in df.columns:
        raise ValueError(f"the frame has no id column {id_col!r} (id_col=)")
    if len(df) == 0:
        raise ValueError("the frame has no rows")
    ids = df[id_col]
    dup = df.duplicated([id_col, time_col]).to_numpy()
    if dup.any():
        raise ValueError(_where(df, ids, dup, f"duplicate ({id_col}, {time_col}) "
                                f"{df[time_col].iloc[int(np.argmax(dup))]!r}"))
    y = pd.to_numeric(df[target_col], errors="coerce").to_numpy(dtype=np.float64)
    for bad, what in (
        (~np.isfinite(y), "the count is missing or not a finite number"),
        (np.isfinite(y) & (y < 0), "the count is negative"),
        (np.isfinite(y) & (y != np.floor(y)), "the count is not a whole number"),
    ):
        if bad.any():
            raise ValueError(_where(df, ids, bad, what))
    cov_names = [c for c in df.columns if c not in (id_col, time_col, target_col)]
    cov = np.zeros((len(df), 0))
    if cov_names:
        cov = df[cov_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(cov).all(axis=1)
        if bad.any():
            raise ValueError(_where(df, ids, bad, "a covariate is missing or not numeric "
                                    "(covariates must be aligned with every count)"))
    ds = df[time_col]
    integer = pd.api.types.is_integer_dtype(ds)
    if not integer:
        try:
            ds = pd.to_datetime(ds)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{time_col!r} must hold time stamps or integer steps: {exc}") \
                from None
    order = np.lexsort((ds.to_numpy(), pd.factorize(ids)[0]))
    out = {"ids": [], "values": [], "stamps": [], "covariates": []}
    groups = pd.Series(np.arange(len(df))[order]).groupby(pd.factorize(ids)[0][order],
                                                           sort=True)
    uniques = pd.unique(ids)
    groups = [(uniques[code], rows.to_numpy()) for code, rows in groups]
    freq = None if integer else _panel_freq([ds.to_numpy()[rows] for _, rows in groups])
    for name, rows in groups:
        stamps = pd.Index(ds.to_numpy()[rows])
        step = (np.arange(len(rows)) + stamps[0]) if integer else pd.date_range(
            stamps[0], periods=len(rows), freq=freq)
        gap = np.asarray(stamps != step)
        if gap.any():
            j = rows[int(np.argmax(gap))]
            raise ValueError(f"series {_plain(name)!r}, row {_plain(df.index[j])!r}: a gap in "
                             f"{time_col} before {ds.iloc[j]!r} (steps must be regular and "
                             "complete)")
        if len(rows) < min_length:
            raise ValueError(f"series {_plain(name)!r}, row {_plain(df.index[rows[0]])!r}: "
                             f"{len(rows)} steps; "
                             f"at least {min_length} (one season) are needed")
        out["ids"].append(name)
        out["values"].append(y[rows].copy())
        out["stamps"].append(stamps)
        out["covariates"].append(cov[rows].copy())
    origin = min(s[0] for s in out["stamps"])
    return Panel(**out, covariate_names=cov_names, freq=freq, origin=origin)


def check_future(X_future, panel: Panel, horizon: int, id_col: str, time_col: str) -> list:
    """Covariates of the ``horizon`` steps after each series, from a long frame.

    Returns
    -------
    list of ndarray of shape (horizon, n_covariates), one per series of ``panel``
    """
    p = len(panel.covariate_names)
    if p == 0:
        if X_future is not None:
            raise ValueError("X_future was given but the forecaster was fitted without "
                             "covariates")
        return [np.zeros((horizon, 0)) for _ in panel.ids]
    if not isinstance(X_future, pd.DataFrame):
        raise ValueError(f"the forecaster was fitted with covariates "
                         f"{panel.covariate_names}: pass X_future as a long frame with "
                         f"{id_col!r}, {time_col!r} and those columns")
    missing = [c for c in (id_col, time_col, *panel.covariate_names) if c not in X_future]
    if missing:
        raise ValueError(f"X_future lacks the column(s) {missing}")
    known = set(panel.ids)
    unseen = ~X_future[id_col].isin(known).to_numpy()
    if unseen.any():
        i = int(np.argmax(unseen))
        raise ValueError(f"X_future, row {_plain(X_future.index[i])!r}: series "
                         f"{_plain(X_future[id_col].iloc[i])!r} was not seen in fit")
    out = []
    for s, name in enumerate(panel.ids):
        rows = X_future[X_future[id_col] == name]
        stamps = panel.future_stamps(s, horizon)
        ds = rows[time_col] if panel.freq is None else pd.to_datetime(rows[time_col])
        table = pd.DataFrame(rows[panel.covariate_names].to_numpy(dtype=np.float64),
                             index=pd.Index(ds.to_numpy()))
        if table.index.has_duplicates:
            raise ValueError(f"X_future, series {name!r}: duplicate {time_col}")
        absent = ~stamps.isin(table.index)
        if absent.any():
            raise ValueError(f"X_future, series {name!r}: no row for {time_col} "
                             f"{stamps[int(np.argmax(absent))]!r} (need the {horizon} steps "
                             "after the series)")
        values = table.loc[stamps].to_numpy()
        if not np.isfinite(values).all():
            raise ValueError(f"X_future, series {name!r}: a covariate is missing or not finite")
        out.append(values)
    return out


def check_hierarchy(hierarchy, ids) -> dict:
    """Validate ``{total: [series, ...]}``: known parts, new total names."""
    if hierarchy is None:
        return {}
    if not isinstance(hierarchy, dict):
        raise ValueError(f"hierarchy must be a dict {{total: [series, ...]}}, got "
                         f"{type(hierarchy).__name__}")
    known = list(ids)
    out = {}
    for total, parts in hierarchy.items():
        parts = list(parts)
        if total in known:
            raise ValueError(f"hierarchy total {total!r} is also a series of the data; totals "
                             "are forecast as the sums of their parts")
        unknown = [p for p in parts if p not in known]
        if unknown or not parts:
            raise ValueError(f"hierarchy total {total!r}: unknown or no parts {unknown}")
        out[total] = [known.index(p) for p in parts]
    return out


def forecast_frame(ids, stamps, mean, paths, level, id_col: str, time_col: str):
    """The long forecast frame: ``id_col, time_col, mean, median``, then ``lo-L`` and
    ``hi-L`` for every level ``L`` (whole-number order statistics of the draws).

    Parameters
    ----------
    ids : list
    stamps : list of Index, one per series (its forecast steps)
    mean : ndarray (S, h)
    paths : ndarray (n, S, h)
    level : sequence of float or None
        Coverages in percent.
    """
    h = mean.shape[1]
    frame = {
        id_col: np.repeat(np.asarray(ids, dtype=object), h),
        time_col: np.concatenate([np.asarray(st) for st in stamps]),
        "mean": mean.reshape(-1),
        "median": np.quantile(paths, 0.5, axis=0, method="inverted_cdf").reshape(-1),
    }
    for lv in sorted(level or []):
        if not 0 < lv < 100:
            raise ValueError(f"level must hold percentages in (0, 100), got {lv!r}")
        tail = (1 - lv / 100) / 2
        lo, hi = np.quantile(paths, [tail, 1 - tail], axis=0, method="inverted_cdf")
        frame[f"lo-{lv:g}"], frame[f"hi-{lv:g}"] = lo.reshape(-1), hi.reshape(-1)
    return pd.DataFrame(frame)
