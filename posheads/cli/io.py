"""File handling shared by the ``posheads`` subcommands: reading tables, checking columns,
targets and output locations, atomic writes, and the error a user mistake raises.

Every file the command writes is first written under a temporary name in the folder of
its destination and moved into place by :func:`os.replace` only when complete, so a
failed or interrupted run leaves the destination as it was; files and folders get the
permissions the user's umask gives (``0o666 & ~umask``, ``0o777 & ~umask``), as files
made with ``open`` do. An output named ``-`` is standard output.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas are imported by the commands that read data
    import numpy as np
    import pandas as pd

__all__ = ["STDOUT", "CLIError", "atomic_dir", "atomic_file", "check_device",
           "check_output", "check_target_values", "loaded_model", "one_line", "read_table",
           "require_columns", "write_table"]

#: The output name that means standard output.
STDOUT = "-"

# The longest message printed on the error line; longer ones (a tensor printed into an
# exception, a long list of columns) are cut, since one line must stay readable.
_MAX_MESSAGE = 400


class CLIError(Exception):
    """A user mistake, reported as one line on stderr with exit status 2."""


def one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    """``text`` on one line: its first non-empty line, cut to ``limit`` characters.

    The first line of an exception's message says what is wrong; the lines after it are
    details such as a printed tensor.
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1 and first.endswith(":"):
        first = first[:-1]  # "found invalid values:" announced a dump that is dropped
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first


# ------------------------------------------------------------------ reading tables
def read_table(path: str) -> pd.DataFrame:
    """Read a CSV or Parquet file (Parquet by a ``.parquet`` or ``.pq`` suffix).

    Raises
    ------
    CLIError
        If the file does not exist, cannot be read as a table, is empty, has a header
        but no rows, or repeats a column name.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"no such file: {path} (check the path)")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        else:
            _check_header(p)
            frame = pd.read_csv(p, encoding="utf-8")
    except ImportError as exc:
        raise CLIError(f"cannot read {path}: {exc} (install pyarrow for Parquet)") from exc
    except UnicodeDecodeError as exc:
        raise CLIError(f"cannot read {path}: it is not UTF-8 text (byte "
                       f"{exc.object[exc.start]:#04x} at offset {exc.start}); save it as "
                       "UTF-8 CSV") from exc
    except pd.errors.EmptyDataError as exc:
        raise CLIError(f"{path} is empty: a table needs a header line and rows") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CLIError(f"cannot read {path} as a table: {one_line(exc)}") from exc
    if len(frame) == 0:
        raise CLIError(f"{path} has a header but no rows")
    return frame


def _check_header(path: Path) -> None:
    """A :class:`CLIError` for a CSV header that names a column twice (pandas would
    rename the second ``a`` to ``a.1`` without a word)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), [])
    names = [name.strip() for name in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CLIError(f"{path} names column(s) {', '.join(map(repr, twice))} more than "
                       "once: rename them")


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


#: The largest target the command reads: counts above 2**53 are not exact in float64.
MAX_TARGET = 2.0 ** 53


def check_target_values(y: np.ndarray, column: str) -> None:
    """A :class:`CLIError` for a negative, infinite or unrepresentably large target value,
    naming the column and the first such row."""
    import numpy as np

    bad = ~np.isfinite(y) | (y < 0) | (y > MAX_TARGET)
    if bad.any():
        i = int(np.argmax(bad))
        what = ("negative: counts must be >= 0" if y[i] < 0 else
                f"too large (at most 2**53 = {MAX_TARGET:.4g})")
        raise CLIError(f"target column {column!r} has the value {y[i]:.6g} in row {i}, "
                       f"which is {what}")


# ---------------------------------------------------------- options checked early
def check_device(value: str) -> str:
    """Check ``--device`` before any work: a device this torch can use.

    ``auto`` and ``cpu`` are always accepted (torch is not imported for them).

    Raises
    ------
    CLIError
        For a string torch does not read as a device, or a CUDA (or MPS) device that
        this torch build or machine does not have.
    """
    if value in ("auto", "cpu"):
        return value
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise CLIError(f"--device {value!r} is not a device: use auto, cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {value}: this torch has no CUDA support or sees no "
                           "GPU; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {value}: only {torch.cuda.device_count()} CUDA "
                           "device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"--device {value}: MPS is not available; use --device cpu")
    elif device.type != "cpu":
        raise CLIError(f"--device {value}: posheads runs on auto, cpu or cuda")
    return value


def check_output(path: str, *, folder: bool = False, replace_marker: str | None = None,
                 what: str = "--out") -> None:
    """Check before any work starts that ``path`` can be written.

    Parameters
    ----------
    path : str
        A file (``folder=False``; ``-`` is standard output) or a folder.
    folder : bool, default=False
        ``path`` is a folder.
    replace_marker : str, optional
        For a folder that the command replaces as a whole: the file that marks an
        earlier output of the command (``features.json`` of a model folder). A
        non-empty folder without it is not replaced. Without a marker, the command
        writes into the folder and keeps what else it holds.
    what : str, default="--out"
        The option's name, for the message.

    Raises
    ------
    CLIError
        For a folder where a file is needed or the reverse, a folder that would be
        replaced but holds other things, or a location where files cannot be created
        (a missing parent that cannot be made, a read-only or virtual file system).
    """
    if not folder and path == STDOUT:
        return
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise CLIError(f"{what} {path} is a file; a folder is needed")
    if not folder and p.is_dir():
        raise CLIError(f"{what} {path} is a folder; give a file name")
    if folder and replace_marker and p.is_dir() and any(p.iterdir()) \
            and not (p / replace_marker).is_file():
        raise CLIError(f"{what} {path} is a folder that holds other files (no "
                       f"{replace_marker}): choose a new or empty folder")
    # the folder whose entries change: the output's parent, or the folder written into
    where = p if folder and not replace_marker and p.is_dir() else p.absolute().parent
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        raise CLIError(f"cannot write {what} {path}: {where} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".posheads-check.", dir=where)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CLIError(f"cannot write {what} {path}: cannot create files in {where} "
                       f"({reason})") from None


# ------------------------------------------------------------------ atomic writes
def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str):
    """Yield a temporary file path that replaces ``path`` only if the block succeeds.

    The file is made beside ``path`` so the final move is an atomic rename; it gets the
    mode ``0o666 & ~umask`` of a file made with ``open``. On an error it is removed and
    ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0o600: give the usual mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    The folder is made beside ``path`` so the final move is a rename on one file system;
    it gets the mode ``0o777 & ~umask``. An existing ``path`` is moved aside first and
    removed only once the new folder is in place. On an error the temporary folder is
    removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0o700: give the usual mode
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not target.exists():  # the final move failed: put the old folder back
                os.replace(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def loaded_model(folder: str):
    """Report errors of a model read from disk as a damaged model, on one line.

    The table has been checked against the model's :class:`FeatureSpec` before, so a
    ``KeyError``, ``IndexError``, ``AttributeError`` or torch ``RuntimeError`` while the
    model predicts comes from a folder whose files disagree (edited or damaged), not
    from the user's table.
    """
    try:
        yield
    except (KeyError, IndexError, AttributeError, RuntimeError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else one_line(exc)
        raise CLIError(f"the model in {folder} is damaged (its files disagree: "
                       f"{type(exc).__name__}: {what}); fit it again") from exc


def write_table(frame: pd.DataFrame, path: str, **to_csv) -> None:
    """Write ``frame`` as CSV to ``path`` atomically, or to standard output for ``-``."""
    if path == STDOUT:
        frame.to_csv(sys.stdout, **to_csv)
        sys.stdout.flush()  # a closed pipe shows here, inside the command's error handling
        return
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, **to_csv)
