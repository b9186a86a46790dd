"""Loaders of the real count data sets shipped under ``datasets/data/``.

Each returns a :class:`sklearn.utils.Bunch` the way scikit-learn's own loaders do
(``data``, ``target``, ``frame``, ``feature_names``, ``target_names``, ``DESCR``), or
``(data, target)`` with ``return_X_y=True``. Categorical columns stay pandas categoricals
with ``as_frame=True``; with ``as_frame=False`` they are one-hot encoded with the first
(reference) level dropped, and ``feature_names`` name the encoded columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._base import as_categories, make_bunch, one_hot, read_csv_verified

__all__ = [
    "load_biochemists",
    "load_epilepsy",
    "load_grouseticks",
    "load_nmes1988",
    "load_nyc_departures",
    "load_seatbelts",
    "nmes1988_design",
]

_YES_NO = ["no", "yes"]

# Levels of each factor, reference level first (as in the R packages' documentation).
_BIOCHEMISTS_LEVELS = {"fem": ["Men", "Women"], "mar": ["Single", "Married"]}
_NMES_LEVELS = {
    "health": ["average", "poor", "excellent"],
    "adl": ["normal", "limited"],
    "region": ["other", "northeast", "midwest", "west"],
    "afam": _YES_NO,
    "gender": ["female", "male"],
    "married": _YES_NO,
    "employed": _YES_NO,
    "insurance": _YES_NO,
    "medicaid": _YES_NO,
}
_NMES_OUTCOMES = ["visits", "nvisits", "ovisits", "novisits", "emergency", "hospital"]
_SEATBELTS_COUNTS = ["VanKilled", "DriversKilled", "drivers", "front", "rear"]
_SEATBELTS_FEATURES = ["kms", "PetrolPrice", "law"]
_NYC_ORIGINS = ["EWR", "JFK", "LGA"]
_NYC_TZ = "America/New_York"
_NYC_WEATHER = {  # weather columns of the daily and the hourly file
    "D": "temp temp_min temp_max dewp humid wind_speed precip pressure visib".split(),
    "h": "temp dewp humid wind_dir wind_speed precip pressure visib".split(),
}


def _int_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.astype(dict.fromkeys(columns, np.int64))


def load_biochemists(*, as_frame: bool = False, return_X_y: bool = False):
    """Load the articles of 915 biochemistry PhD students (``pscl::bioChemists``).

    Over-dispersed counts with many zeros (30% of students published nothing), the standard
    example for negative binomial and zero-inflated regression (Long 1990).

    Parameters
    ----------
    as_frame : bool, default=False
        Return pandas objects (``fem`` and ``mar`` as categoricals) instead of numpy arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``data`` of shape (915, 5): ``fem``, ``mar``, ``kid5``, ``phd``, ``ment`` (numpy:
        ``fem_Women`` and ``mar_Married`` are 0/1); ``target`` of shape (915,): ``art``, the
        articles published in the last three years of the PhD (int64); ``frame`` of shape
        (915, 6) when ``as_frame``, else None; ``feature_names``, ``target_names``, ``DESCR``.
    (data, target) : tuple
        With ``return_X_y=True``.

    Examples
    --------
    >>> from posheads.datasets import load_biochemists
    >>> X, y = load_biochemists(return_X_y=True)
    >>> X.shape, y.shape
    ((915, 5), (915,))
    """
    frame = read_csv_verified("biochemists.csv")
    frame = as_categories(_int_columns(frame, ["art", "kid5", "ment"]), _BIOCHEMISTS_LEVELS)
    features = ["fem", "mar", "kid5", "phd", "ment"]
    return make_bunch(
        frame, features, "art", as_frame=as_frame, return_X_y=return_X_y, filename="biochemists.csv"
    )


def load_nmes1988(*, as_frame: bool = False, return_X_y: bool = False):
    """Load the physician office visits of 4,406 US elderly (``AER::NMES1988``).

    Parameters
    ----------
    as_frame : bool, default=False
        Return pandas objects (factors as categoricals) instead of numpy arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``target`` of shape (4406,): ``visits`` (int64). ``data``: the 13 covariates (every
        column but the six utilisation counts), shape (4406, 13) as a DataFrame, or the
        (4406, 16) float64 design of :func:`nmes1988_design` (unstandardised) as numpy.
        ``frame`` of shape (4406, 19) holds all columns, including the other outcomes
        ``nvisits``, ``ovisits``, ``novisits``, ``emergency`` and ``hospital``.
    (data, target) : tuple
        With ``return_X_y=True``.

    See Also
    --------
    nmes1988_design : the benchmarks' 16-column design matrix, optionally standardised.
    """
    frame = read_csv_verified("nmes1988.csv")
    frame = as_categories(_int_columns(frame, [*_NMES_OUTCOMES, "chronic", "school"]), _NMES_LEVELS)
    features = [c for c in frame.columns if c not in _NMES_OUTCOMES]
    return make_bunch(
        frame, features, "visits", as_frame=as_frame, return_X_y=return_X_y, filename="nmes1988.csv"
    )


def nmes1988_design(frame: pd.DataFrame, *, standardize: bool = False) -> pd.DataFrame:
    """Return the standard NMES1988 design matrix used by the posheads benchmarks.

    Drops the utilisation counts (``visits``, ``nvisits``, ``ovisits``, ``novisits``,
    ``emergency``, ``hospital``) and one-hot encodes the factors with their reference level
    dropped (``health``: average, ``region``: other, ``adl``: normal, ``gender``: female,
    yes/no factors: no). The frame is not modified.

    Parameters
    ----------
    frame : pandas.DataFrame of shape (n_samples, n_columns)
        ``load_nmes1988(as_frame=True).frame`` (or its ``data``), or any frame with the same
        columns, factors given as strings or categoricals.
    standardize : bool, default=False
        Centre each column and scale it to unit variance (population standard deviation, as
        :class:`sklearn.preprocessing.StandardScaler` does), dummies included.

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, 16), float64
        Columns ``health_poor, health_excellent, chronic, adl_limited, region_northeast,
        region_midwest, region_west, age, afam_yes, gender_male, married_yes, school,
        income, employed_yes, insurance_yes, medicaid_yes``.

    Examples
    --------
    >>> from posheads.datasets import load_nmes1988, nmes1988_design
    >>> nmes1988_design(load_nmes1988(as_frame=True).frame).shape
    (4406, 16)
    """
    covariates = frame.drop(columns=[c for c in _NMES_OUTCOMES if c in frame.columns])
    missing = sorted(set(_NMES_LEVELS) - set(covariates.columns))
    if missing:
        raise ValueError(f"frame lacks the NMES1988 columns {missing}")
    design = one_hot(as_categories(covariates, _NMES_LEVELS))
    if standardize:
        scale = design.std(ddof=0).replace(0.0, 1.0)  # a constant column stays 0, not NaN
        design = (design - design.mean()) / scale
    return design


def load_seatbelts(*, target: str = "VanKilled", as_frame: bool = False, return_X_y: bool = False):
    """Load monthly UK road casualties, Jan 1969 - Dec 1984 (R ``datasets::Seatbelts``).

    Wearing front seat belts became compulsory on 31 January 1983 (``law`` is 1 from
    February 1983). ``VanKilled`` is a small-count series (2 to 17 a month),
    ``DriversKilled`` a large-count one (60 to 198).

    Parameters
    ----------
    target : {"VanKilled", "DriversKilled", "drivers", "front", "rear"}, default="VanKilled"
        The count series returned as ``target``.
    as_frame : bool, default=False
        Return pandas objects indexed by month instead of numpy arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``data`` of shape (192, 3): ``kms`` (distance driven), ``PetrolPrice``, ``law``;
        ``target`` of shape (192,) (int64); ``frame`` of shape (192, 8) with all eight series
        when ``as_frame``; ``index``: the months as a ``DatetimeIndex`` with ``freq="MS"``
        (also the index of the pandas outputs).
    (data, target) : tuple
        With ``return_X_y=True``.
    """
    if target not in _SEATBELTS_COUNTS:
        raise ValueError(f"target must be one of {_SEATBELTS_COUNTS}, got {target!r}")
    frame = read_csv_verified("seatbelts.csv")
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("date")), freq="MS", name="date")
    frame = _int_columns(frame, [*_SEATBELTS_COUNTS, "kms", "law"]).set_axis(index)
    return make_bunch(
        frame,
        _SEATBELTS_FEATURES,
        target,
        as_frame=as_frame,
        return_X_y=return_X_y,
        filename="seatbelts.csv",
    )


def _fill_weather(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fill weather gaps per origin: linear in time, wind direction carried forward."""
    frame = frame.copy()
    groups = frame.groupby("origin", observed=True, sort=False)
    for column in columns:
        if column == "wind_dir":  # an angle: interpolating across 360/0 would be wrong
            filled = groups[column].transform(lambda s: s.ffill().bfill())
        else:
            filled = groups[column].transform(lambda s: s.interpolate().ffill().bfill())
        frame[column] = filled
    return frame


def load_nyc_departures(
    freq: str = "D",
    origin: str | None = None,
    *,
    as_frame: bool = False,
    return_X_y: bool = False,
    fill_missing: bool = False,
):
    """Load the 2013 flight departures from New York City airports (``nycflights13``).

    ``departures`` counts the flights that left (cancelled flights excluded) in each day or
    scheduled local hour, per origin airport, next to that airport's weather and a US
    federal holiday indicator. Weekly and daily seasonality, holidays, and the February 2013
    blizzard make it a count-forecasting set.

    Parameters
    ----------
    freq : {"D", "h"}, default="D"
        Daily counts (365 per airport) or hourly counts (8,760 per airport, index in
        America/New_York time, so 2013-03-10 has 23 hours and 2013-11-03 has 25).
    origin : {"EWR", "JFK", "LGA"} or None, default=None
        One airport, giving a single regular series whose index carries ``freq``; or None
        for all three stacked (airport by airport, each in time order) with ``origin`` as a
        categorical feature (one-hot ``origin_JFK``, ``origin_LGA`` in numpy). The stacked
        index repeats each time stamp three times, so it has no ``freq``.
    as_frame : bool, default=False
        Return pandas objects indexed by time instead of numpy arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    fill_missing : bool, default=False
        Fill hours or days without a weather record: linear interpolation in time per
        airport (wind direction carried forward). By default they are NaN: the hourly file
        lacks under 1% of weather readings (11% of pressures), the daily file
        one day (31 December, after the weather record ends).

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``data`` of shape (n_timesteps, n_features): ``holiday`` (0/1), weather (daily:
        ``temp, temp_min, temp_max, dewp, humid, wind_speed, precip, pressure, visib``;
        hourly: ``temp, dewp, humid, wind_dir, wind_speed, precip, pressure, visib``), and
        ``origin`` when ``origin=None``; ``target`` of shape (n_timesteps,): ``departures``
        (int64); ``frame`` with every column, ``origin`` included; ``index``: the
        ``DatetimeIndex`` of the rows (named ``date`` or ``time``).
    (data, target) : tuple
        With ``return_X_y=True``.
    """
    if freq not in _NYC_WEATHER:
        raise ValueError(f'freq must be "D" (daily) or "h" (hourly), got {freq!r}')
    if origin is not None and origin not in _NYC_ORIGINS:
        raise ValueError(f"origin must be one of {_NYC_ORIGINS} or None, got {origin!r}")
    daily = freq == "D"
    filename = "nyc_departures_daily.csv" if daily else "nyc_departures_hourly.csv"
    frame = read_csv_verified(filename)
    stamp = frame.pop("date" if daily else "time")
    if daily:
        times = pd.to_datetime(stamp, format="%Y-%m-%d")
    else:  # ISO 8601 with the UTC offset of the day: exact across the DST changes
        times = pd.to_datetime(stamp, format="ISO8601", utc=True).dt.tz_convert(_NYC_TZ)
    frame = as_categories(_int_columns(frame, ["departures", "holiday"]), {"origin": _NYC_ORIGINS})
    weather = _NYC_WEATHER[freq]
    frame[weather] = frame[weather].astype(np.float64)
    if origin is not None:
        keep = (frame["origin"] == origin).to_numpy()
        frame, times = frame[keep], times[keep]
    index = pd.DatetimeIndex(times, name="date" if daily else "time")
    if origin is not None:
        index = pd.DatetimeIndex(index, freq=freq)  # checks that the series is regular
    frame = frame.set_axis(index)
    if fill_missing:
        frame = _fill_weather(frame, weather)
    features = ["holiday", *weather] if origin is not None else ["origin", "holiday", *weather]
    return make_bunch(
        frame, features, "departures", as_frame=as_frame, return_X_y=return_X_y, filename=filename
    )


def load_grouseticks(*, as_frame: bool = False, return_X_y: bool = False):
    """Load the ticks counted on 403 red grouse chicks (``lme4::grouseticks``).

    Grouped counts: chicks sit in 118 broods, broods at 63 locations, over three years;
    the standard example for count models with nested and crossed random effects (Elston et
    al. 2001). The counts are strongly over-dispersed (mean 6.4, variance 172).

    Parameters
    ----------
    as_frame : bool, default=False
        Return pandas objects (``YEAR`` as a categorical of levels 95, 96, 97) instead of
        numpy arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``target`` of shape (403,): ``TICKS`` (int64). ``data``: ``BROOD`` and ``LOCATION``
        (integer group labels), ``HEIGHT`` (metres above sea level) and ``YEAR``; as numpy,
        shape (403, 5) with ``YEAR_96`` and ``YEAR_97`` as 0/1 columns. ``frame`` of shape
        (403, 5) when ``as_frame``, else None.
    (data, target) : tuple
        With ``return_X_y=True``.

    Examples
    --------
    >>> from posheads.datasets import load_grouseticks
    >>> frame = load_grouseticks(as_frame=True).frame
    >>> frame["BROOD"].nunique(), frame["LOCATION"].nunique()
    (118, 63)
    """
    frame = read_csv_verified("grouseticks.csv")
    frame = _int_columns(frame, ["TICKS", "BROOD", "HEIGHT", "LOCATION"])
    frame["YEAR"] = pd.Categorical(frame["YEAR"].astype(str), categories=["95", "96", "97"])
    features = ["BROOD", "LOCATION", "HEIGHT", "YEAR"]
    return make_bunch(
        frame, features, "TICKS", as_frame=as_frame, return_X_y=return_X_y,
        filename="grouseticks.csv",
    )


def load_epilepsy(*, as_frame: bool = False, return_X_y: bool = False):
    """Load the seizure counts of 59 epileptics over four periods (``MASS::epil``).

    Repeated counts: each patient contributes four two-week counts after an eight-week
    baseline, in a randomised trial of progabide against placebo (Thall & Vail 1990); the
    classic example for Poisson models with a random intercept per patient.

    Parameters
    ----------
    as_frame : bool, default=False
        Return pandas objects (``trt`` as a categorical, placebo first) instead of numpy
        arrays.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    bunch : sklearn.utils.Bunch
        ``target`` of shape (236,): ``y``, seizures in the two-week period (int64).
        ``data``: ``trt``, ``base`` (seizures in the eight-week baseline), ``age``, ``V4``
        (1 in the fourth period), ``subject`` (1 to 59) and ``period`` (1 to 4); as numpy,
        shape (236, 6) with ``trt_progabide`` as a 0/1 column. ``frame`` of shape (236, 7)
        when ``as_frame``, else None.
    (data, target) : tuple
        With ``return_X_y=True``.
    """
    frame = read_csv_verified("epilepsy.csv")
    frame = _int_columns(frame, ["y", "base", "age", "V4", "subject", "period"])
    frame = as_categories(frame, {"trt": ["placebo", "progabide"]})
    features = ["trt", "base", "age", "V4", "subject", "period"]
    return make_bunch(
        frame, features, "y", as_frame=as_frame, return_X_y=return_X_y, filename="epilepsy.csv"
    )
