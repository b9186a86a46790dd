"""File handling shared by the ``posheads`` subcommands: reading tables, checking columns,
turning a table into a design matrix, atomic writes, and the error a user mistake raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CLIError", "FeatureSpec", "atomic_dir", "atomic_file", "read_table",
           "require_columns"]


class CLIError(Exception):
    """A user mistake, reported as one line on stderr with exit status 2."""


def read_table(path: str) -> pd.DataFrame:
    """Read a CSV or Parquet file (Parquet by a ``.parquet`` or ``.pq`` suffix).

    Raises
    ------
    CLIError
        If the file does not exist or cannot be read as a table.
    """
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"no such file: {path} (check the path)")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except ImportError as exc:
        raise CLIError(f"cannot read {path}: {exc} (install pyarrow for Parquet)") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CLIError(f"cannot read {path} as a table: {exc}") from exc


def require_columns(frame: pd.DataFrame, columns: list[str]) -> None:
    """Check that ``frame`` has every one of ``columns``.

    Raises
    ------
    CLIError
        Naming the missing columns and the first twelve columns the file does have.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(map(repr, list(frame.columns)[:12]))
        raise CLIError(f"missing column(s) {', '.join(map(repr, missing))}; "
                       f"the file has: {shown}")


@dataclass
class FeatureSpec:
    """How a table becomes a design matrix, saved beside a model so ``predict`` agrees.

    Numeric columns are used as they are; text or categorical columns are one-hot encoded
    with their first level (in sorted order, as seen in training) dropped.

    Parameters
    ----------
    columns : list of str
        The feature columns, in order.
    categories : dict of str to list of str
        The sorted levels of each one-hot encoded column.
    exposure : str or None, default=None
        The column of positive exposures, if any.
    """

    columns: list[str]
    categories: dict[str, list[str]]
    exposure: str | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: list[str], exposure: str | None):
        """The spec of ``columns`` of a training table: which to encode, with which levels."""
        cats = {}
        for c in columns:
            col = frame[c]
            if not pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype):
                cats[c] = sorted(map(str, col.dropna().unique()))
        return cls(columns=list(columns), categories=cats, exposure=exposure)

    @property
    def feature_names(self) -> list[str]:
        """The names of the design matrix's columns (``column_level`` for encoded ones)."""
        names = []
        for c in self.columns:
            if c in self.categories:
                names += [f"{c}_{lvl}" for lvl in self.categories[c][1:]]
            else:
                names.append(c)
        return names

    def design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The design matrix of ``frame``; a clear error for missing or bad columns."""
        require_columns(frame, self.columns + ([self.exposure] if self.exposure else []))
        parts = []
        for c in self.columns:
            col = frame[c]
            if col.isna().any():
                raise CLIError(f"column {c!r} has {int(col.isna().sum())} missing value(s): "
                               "drop or fill those rows first")
            if c in self.categories:
                levels = self.categories[c]
                unknown = set(map(str, col.unique())) - set(levels)
                if unknown:
                    raise CLIError(f"column {c!r} has levels not seen in training: "
                                   f"{sorted(unknown)[:5]}")
                s = col.astype(str)
                for lvl in levels[1:]:
                    parts.append(pd.Series((s == lvl).astype(np.float64), name=f"{c}_{lvl}"))
            else:
                parts.append(pd.Series(col.astype(np.float64), name=c))
        return pd.concat(parts, axis=1)

    def exposure_of(self, frame: pd.DataFrame):
        """The exposures of ``frame`` as a float64 array, or None without an exposure column."""
        if self.exposure is None:
            return None
        t = pd.to_numeric(frame[self.exposure], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise CLIError(f"exposure column {self.exposure!r} must be positive numbers "
                           "with no missing values")
        return t

    def save(self, folder: Path) -> None:
        """Write the spec to ``folder/features.json``."""
        (folder / "features.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> FeatureSpec:
        """Read the spec that :meth:`save` wrote to ``folder``."""
        return cls(**json.loads((folder / "features.json").read_text()))


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    The folder is made beside ``path`` so the final move is a rename on one file system;
    on an error it is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str):
    """Yield a temporary file path that replaces ``path`` only if the block succeeds.

    The file is made beside ``path`` so the final move is an atomic rename; on an error it
    is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
