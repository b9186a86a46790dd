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
    """Which columns of a table a model reads, saved beside it so ``predict`` agrees.

    The encoding itself is the estimator's (:mod:`posheads.estimators.design`: numeric
    columns as they are, categorical and text columns in treatment coding, or a formula),
    saved with the estimator; the spec records the input columns and their kinds as seen
    in training (a :class:`~posheads.estimators.design.ColumnSchema`), so that a table
    with a missing column, a missing value, a string in a numeric column or a level not
    seen in training is reported by column and row before the model sees it.

    Parameters
    ----------
    columns : list of str
        The input columns the model reads, in order.
    schema : dict
        :meth:`ColumnSchema.to_dict` of those columns.
    exposure : str or None, default=None
        The column of positive exposures, if any.
    formula : str or None, default=None
        The model's formula, when it was fitted with ``--formula``.
    """

    columns: list[str]
    schema: dict
    exposure: str | None = None
    formula: str | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: list[str], exposure: str | None,
                   formula: str | None = None):
        """The spec of ``columns`` of a training table.

        Raises
        ------
        CLIError
            For a missing column or a bad value (named by column and row).
        """
        from posheads.estimators.design import ColumnSchema

        require_columns(frame, list(columns) + ([exposure] if exposure else []))
        try:
            schema = ColumnSchema.from_frame(frame, list(columns))
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        return cls(columns=list(columns), schema=schema.to_dict(), exposure=exposure,
                   formula=formula)

    def design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns of ``frame``, checked against training.

        Raises
        ------
        CLIError
            For a missing column or a bad value (named by column and row).
        """
        from posheads.estimators.design import ColumnSchema

        require_columns(frame, self.columns + ([self.exposure] if self.exposure else []))
        try:
            ColumnSchema.from_dict(self.schema).check(frame)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        return frame[self.columns]

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
        """Read the spec that :meth:`save` wrote to ``folder``.

        Raises
        ------
        CLIError
            For a spec written before posheads encoded tables inside the estimator.
        """
        state = json.loads((folder / "features.json").read_text())
        if "categories" in state:
            raise CLIError(f"{folder} was written by an older posheads (its table encoding "
                           "is no longer read): fit the model again")
        return cls(**state)


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
