"""Shared machinery of the data loaders: where the CSV files live, their checksums, reading
them safely, one-hot encoding, descriptions from ``README.md``, and the ``Bunch`` they return.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = [
    "CHECKSUMS",
    "DATA_DIR",
    "ChecksumError",
    "get_data_dir",
    "list_datasets",
    "read_csv_verified",
]

#: Folder holding the shipped CSV files. Module-level so that tests can point it elsewhere.
DATA_DIR = Path(__file__).resolve().parent / "data"

_README = Path(__file__).resolve().parent / "README.md"

#: Expected sha256 of every shipped file (written by ``tools/extract_datasets.py``; the same values
#: are listed in ``datasets/README.md``).
CHECKSUMS: dict[str, str] = {
    "biochemists.csv": "475de29651d8969f63a618a94650b79e1888fb8692da409da70e8583759e6a57",
    "nmes1988.csv": "dafe16e9eac4e59fc96c0f5dd390531eb9de61f544d2d55360daafa154578620",
    "seatbelts.csv": "f1a0c31fd03370aa5f11bb433d79f5d8913bf0d454f42db834eb0a7019f69c1c",
    "nyc_departures_daily.csv": "db415adfeedeb09fc4a13a203c37b23d5a49ae4f4bd1498f2d57566c0072ed0c",
    "nyc_departures_hourly.csv": "68da9de9cb71e1fa9eb2cae6a749cfc521a2b9de5afe0ee7d335cfe3b94620da",
    "grouseticks.csv": "294dc76df2949082892cad5f5975e875a7fbf73e1358cb1855b90e08bc41a641",
    "epilepsy.csv": "e5165a8be2c6d874f7a30a65d760ecdecfbcc58f31c82f61cb363e9f08290c50",
}

# name -> (loader call, file, one-line description); the order of list_datasets().
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "biochemists": (
        "load_biochemists()",
        "biochemists.csv",
        "articles by 915 biochemistry PhD students; over-dispersed, many zeros (Long 1990)",
    ),
    "nmes1988": (
        "load_nmes1988()",
        "nmes1988.csv",
        "physician office visits of 4,406 US elderly, NMES 1987-88 (Deb & Trivedi 1997)",
    ),
    "seatbelts": (
        "load_seatbelts()",
        "seatbelts.csv",
        "monthly UK road deaths 1969-84, seat-belt law from Feb 1983 (Harvey 1989)",
    ),
    "nyc_departures_daily": (
        'load_nyc_departures(freq="D")',
        "nyc_departures_daily.csv",
        "daily flight departures from EWR, JFK and LGA in 2013, with weather and holidays",
    ),
    "nyc_departures_hourly": (
        'load_nyc_departures(freq="h")',
        "nyc_departures_hourly.csv",
        "hourly flight departures from EWR, JFK and LGA in 2013, with weather and holidays",
    ),
    "grouseticks": (
        "load_grouseticks()",
        "grouseticks.csv",
        "ticks on 403 red grouse chicks in 118 broods at 63 locations (Elston et al. 2001)",
    ),
    "epilepsy": (
        "load_epilepsy()",
        "epilepsy.csv",
        "seizure counts of 59 epileptics over four two-week periods (Thall & Vail 1990)",
    ),
}


class ChecksumError(OSError):
    """A shipped data file does not have the sha256 it was released with."""


def get_data_dir() -> Path:
    """Return the folder that holds the shipped CSV files (``posheads/datasets/data``)."""
    return DATA_DIR


def list_datasets(verbose: bool = False) -> dict[str, str]:
    """List the real data sets shipped with posheads, one line each.

    Parameters
    ----------
    verbose : bool, default=False
        Also print one line per data set: its name, its loader and its description.

    Returns
    -------
    datasets : dict of str to str
        Data set name -> one-line description, in a fixed order.

    Examples
    --------
    >>> from posheads.datasets import list_datasets
    >>> sorted(list_datasets())[:2]
    ['biochemists', 'nmes1988']
    """
    if verbose:
        width = max(map(len, _REGISTRY))
        for name, (loader, _, text) in _REGISTRY.items():
            print(f"{name:<{width}}  {text}  [{loader}]")
    return {name: text for name, (_, _, text) in _REGISTRY.items()}


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def read_csv_verified(filename: str, **read_csv_kwargs) -> pd.DataFrame:
    """Read one shipped CSV after checking its sha256 against :data:`CHECKSUMS`.

    Parameters
    ----------
    filename : str
        A key of :data:`CHECKSUMS`, e.g. ``"biochemists.csv"``.
    **read_csv_kwargs
        Passed on to :func:`pandas.read_csv`.

    Returns
    -------
    frame : pandas.DataFrame

    Raises
    ------
    FileNotFoundError
        If the file is not in :func:`get_data_dir`.
    ChecksumError
        If its bytes differ from the released file; the message names the file and both hashes.
    """
    expected = CHECKSUMS[filename]
    path = Path(DATA_DIR) / filename  # looked up at call time: tests may repoint DATA_DIR
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"posheads data file {filename!r} is missing (looked for {path}; expected sha256 "
            f"{expected}). Reinstall posheads, or rebuild it with tools/extract_datasets.py."
        ) from None
    actual = _sha256(payload)
    if actual != expected:
        raise ChecksumError(
            f"posheads data file {filename!r} ({path}) has been altered or is corrupt: its "
            f"sha256 is {actual}, expected {expected}. Reinstall posheads, or rebuild it with "
            "tools/extract_datasets.py."
        )
    return pd.read_csv(io.BytesIO(payload), **read_csv_kwargs)


def as_categories(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Return ``frame`` with the named columns as unordered categoricals of fixed levels.

    The first level of each column is its reference level (R's default contrast), the one
    that :func:`one_hot` drops.
    """
    frame = frame.copy()
    for column, levels in categories.items():
        unknown = set(frame[column].dropna().unique()) - set(levels)
        if unknown:
            raise ValueError(f"column {column!r} has unknown levels {sorted(unknown)}")
        frame[column] = pd.Categorical(frame[column], categories=levels)
    return frame


def one_hot(frame: pd.DataFrame) -> pd.DataFrame:
    """One-hot encode the categorical columns of ``frame``, dropping each first level.

    A column ``c`` with levels ``[a, b, d]`` becomes the 0/1 columns ``c_b`` and ``c_d`` at
    its place; other columns are kept as they are. All columns come out as float64.
    """
    parts = []
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            parts.append(pd.get_dummies(values, prefix=column, drop_first=True, dtype=np.float64))
        else:
            parts.append(values.astype(np.float64))
    return pd.concat(parts, axis=1)


def descr(filename: str) -> str:
    """Return the section of ``README.md`` that documents ``filename`` (for ``DESCR``).

    Sections start at level-two headings; the one whose heading names ``filename`` in
    backticks is returned, from its heading to the next one.
    """
    text = _README.read_text(encoding="utf-8") if _README.is_file() else ""
    for section in re.split(r"(?m)^(?=## )", text):
        if section.startswith("## ") and f"`{filename}`" in section.splitlines()[0]:
            return section.strip() + "\n"
    return f"{filename}: see datasets/README.md in the posheads repository.\n"


def make_bunch(
    frame: pd.DataFrame,
    feature_names: list[str],
    target_name: str,
    *,
    as_frame: bool,
    return_X_y: bool,
    filename: str,
):
    """Split ``frame`` into ``data`` and ``target`` the way scikit-learn's loaders do.

    With ``as_frame=True``: ``data`` is a DataFrame (categoricals kept), ``target`` a Series,
    ``frame`` the whole table. Otherwise ``data`` is a float64 array of shape
    ``(n_samples, n_encoded_features)`` with categoricals one-hot encoded (first level
    dropped), ``target`` an int64 array of shape ``(n_samples,)``, and ``frame`` is None.
    ``feature_names`` always name the columns of ``data``.
    """
    data = frame[feature_names]
    target = frame[target_name]
    if not as_frame:
        data = one_hot(data)
        feature_names = list(data.columns)
        data = data.to_numpy(dtype=np.float64)
        target = target.to_numpy(dtype=np.int64)
    if return_X_y:
        return data, target
    bunch = Bunch(
        data=data,
        target=target,
        frame=frame if as_frame else None,
        feature_names=list(feature_names),
        target_names=[target_name],
        DESCR=descr(filename),
        filename=str(Path(DATA_DIR) / filename),
    )
    if isinstance(frame.index, pd.DatetimeIndex):
        bunch.index = frame.index
    return bunch
