"""Sources of mini-batches read from disk, for :mod:`posheads.inference.stream`.

* :class:`BatchSource` -- the base: blocks read one at a time, shuffled, cut into
  mini-batches of torch tensors, validated as they are read;
* :class:`ArraySource` -- rows of ``.npy`` memory maps (or any arrays);
* :class:`ParquetSource` -- named columns of a Parquet file;
* :class:`LazyTotals` -- a source's column totals, read only when a model asks for them.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["ArraySource", "BatchSource", "LazyTotals", "ParquetSource"]

_VECTORS = ("y", "exposure", "weights")


class BatchSource:
    """Shuffled mini-batches of rows read block by block (base of the concrete sources).

    Subclasses define ``_blocks`` (a list of opaque block keys), ``_block_rows`` (rows of
    each) and ``_read(key)``, which returns an iterator of dicts of numpy arrays.

    Parameters
    ----------
    batch_size : int
        Rows per mini-batch (the last of an epoch may have fewer).
    block_size : int
        Rows read from disk at once: the memory bound, and the unit of shuffling.
    shuffle : bool
        Shuffle the block order and the rows within each block.
    seed : int, optional
        Seed of the shuffles; epoch ``e`` uses ``(seed, e)``.
    device, dtype
        Of the yielded tensors.

    Attributes
    ----------
    num_rows : int
        Rows in the source (of this shard, see :meth:`shard`).
    num_features : int
        Columns of ``X``.
    peak_rows : int
        The most rows held in memory at once so far (at most ``block_size + batch_size``).
    """

    def __init__(self, batch_size, block_size, shuffle, seed, device, dtype):
        for name, value in (("batch_size", batch_size), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.batch_size, self.block_size = int(batch_size), int(block_size)
        self.shuffle, self.seed = bool(shuffle), seed
        self.device, self.dtype = torch.device(device), dtype
        self.peak_rows = 0
        self.epoch = 0
        self._blocks: list = []
        self._block_rows: list[int] = []

    @property
    def num_rows(self) -> int:
        return int(sum(self._block_rows))

    @property
    def num_batches(self) -> int:
        """Mini-batches per epoch."""
        return math.ceil(self.num_rows / self.batch_size)

    def shard(self, rank: int, world_size: int) -> BatchSource:
        """The blocks ``rank, rank + world_size, ...``: one worker's share of the data.

        Returns
        -------
        BatchSource
            A copy of this source restricted to those blocks.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        if len(self._blocks) < world_size:
            raise ValueError(
                f"{len(self._blocks)} blocks cannot be shared by {world_size} "
                "workers: use a smaller block_size"
            )
        out = copy.copy(self)
        out._blocks = self._blocks[rank::world_size]
        out._block_rows = self._block_rows[rank::world_size]
        out.peak_rows = 0
        return out

    # ----------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """The mini-batches of the next epoch."""
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def batches(self, epoch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The mini-batches of epoch ``epoch``: dicts of tensors of ``batch_size`` rows."""
        rng = np.random.default_rng(None if self.seed is None else [int(self.seed), epoch])
        order = rng.permutation(len(self._blocks)) if self.shuffle else range(len(self._blocks))
        carry = None
        for b in order:
            for part in self._read(self._blocks[b]):
                if self.shuffle:
                    perm = rng.permutation(len(part["X"]))
                    part = {k: v[perm] for k, v in part.items()}
                if carry is not None:
                    part = {k: np.concatenate([carry[k], v]) for k, v in part.items()}
                rows = len(part["X"])
                self.peak_rows = max(self.peak_rows, rows)
                stop = rows - rows % self.batch_size
                for i in range(0, stop, self.batch_size):
                    yield self._tensors({k: v[i : i + self.batch_size] for k, v in part.items()})
                carry = {k: v[stop:] for k, v in part.items()} if stop < rows else None
        if carry is not None:
            yield self._tensors(carry)

    def _tensors(self, batch):
        return {
            k: torch.as_tensor(np.ascontiguousarray(v), dtype=self.dtype, device=self.device)
            for k, v in batch.items()
        }

    def totals(self) -> dict[str, float]:
        """Weighted sums over all rows, in one pass that reads the 1-D columns only.

        Returns
        -------
        dict
            ``"rows"``, ``"weights"`` (sum w), ``"y"`` (sum w y), ``"exposure"``
            (sum w t) and ``"exposure_unweighted"`` (sum t).
        """
        out = dict.fromkeys(("weights", "y", "exposure", "exposure_unweighted"), 0.0)
        for key in self._blocks:
            for part in self._read(key, columns=_VECTORS):
                y = part["y"]
                w = part.get("weights", np.ones_like(y))
                t = part.get("exposure", np.ones_like(y))
                out["weights"] += float(w.sum())
                out["y"] += float(w @ y)
                out["exposure"] += float(w @ t)
                out["exposure_unweighted"] += float(t.sum())
        out["rows"] = self.num_rows
        return out

    def _read(self, key, columns=None) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError


def _check_block(part: dict, where: str, columns: dict | None = None, first: int = 0) -> dict:
    """Validate a block of rows (float64 numpy arrays).

    ``where`` names the block (``"row group 0"``), ``first`` is the number of its first
    row, and ``columns`` maps ``"X"``, ``"y"``, ... to the column names they were read
    from, so that a bad value is reported by column and row.
    """
    checks = [
        (lambda v: ~np.isfinite(v), "contains NaN, missing or infinite values"),
        (lambda v: v < 0, "must be non-negative: negative values", ("y", "weights")),
        (lambda v: v <= 0, "must be positive: values <= 0", ("exposure",)),
    ]
    for name, v in part.items():
        for bad_of, text, *only in checks:
            if only and name not in only[0]:
                continue
            with np.errstate(invalid="ignore"):
                bad = bad_of(v)
            if bad.any():
                raise ValueError(f"{name} {text} in {_bad_cell(bad, name, columns, first)} "
                                 f"({where})")
    return part


def _bad_cell(bad: np.ndarray, name: str, columns: dict | None, first: int) -> str:
    """``"column 'age', row 17"`` for the first ``True`` of ``bad`` (rows, or rows by
    columns for ``X``); a column without a name is given by its position."""
    if bad.ndim == 2:
        row, col = np.argwhere(bad)[0]
        names = (columns or {}).get(name)
        label = repr(names[col]) if names else str(int(col))
    else:
        row = int(np.argmax(bad))
        names = (columns or {}).get(name)
        label = repr(names[0]) if names else None
    where = f"row {first + int(row)}"
    return f"column {label}, {where}" if label is not None else where


class ArraySource(BatchSource):
    """Mini-batches from arrays on disk: ``.npy`` files opened as memory maps.

    Parameters
    ----------
    X : str, Path or array, shape ``(n, p)``
        A ``.npy`` path (opened with ``numpy.load(mmap_mode="r")``) or an array such as
        a ``numpy.memmap``; only the rows of one block are read at a time.
    y : str, Path or array, shape ``(n,)``
        Counts.
    exposure, weights : str, Path or array, shape ``(n,)``, optional
    batch_size, block_size, shuffle, seed, device, dtype
        See :class:`BatchSource`.

    Examples
    --------
    >>> src = ArraySource("X.npy", "y.npy", batch_size=256, seed=0)   # doctest: +SKIP
    >>> next(iter(src))["X"].shape                                     # doctest: +SKIP
    torch.Size([256, 3])
    """

    def __init__(
        self,
        X,
        y,
        *,
        exposure=None,
        weights=None,
        batch_size=256,
        block_size=65536,
        shuffle=True,
        seed=None,
        device="cpu",
        dtype=torch.float64,
    ):
        super().__init__(batch_size, block_size, shuffle, seed, device, dtype)
        self.arrays = {"X": _open(X, "X")}
        for name, value in (("y", y), ("exposure", exposure), ("weights", weights)):
            if value is not None:
                self.arrays[name] = _open(value, name)
        X = self.arrays["X"]
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
        n = X.shape[0]
        if n == 0:
            raise ValueError("X has no rows")
        for name, v in self.arrays.items():
            if name != "X" and v.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like the rows of X, got {v.shape}")
        self.num_features = int(X.shape[1])
        starts = range(0, n, self.block_size)
        self._blocks = [(s, min(s + self.block_size, n)) for s in starts]
        self._block_rows = [b - a for a, b in self._blocks]

    def _read(self, key, columns=None):
        start, stop = key
        names = [k for k in self.arrays if columns is None or k in columns]
        # a copy of the slice out of the memory map: one block in memory, writable
        part = {k: np.array(self.arrays[k][start:stop], dtype=np.float64) for k in names}
        yield _check_block(part, f"rows {start}..{stop - 1}", first=start)


def _open(value, name):
    if isinstance(value, (str, Path)):
        value = np.load(value, mmap_mode="r")
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.number):
        raise ValueError(f"{name} must be a numeric .npy file or array, got {type(value).__name__}")
    return value


class ParquetSource(BatchSource):
    """Mini-batches from named columns of a Parquet file (pyarrow).

    Blocks are chunks of at most ``block_size`` rows of one row group; the row groups are
    visited in shuffled order, so write the file with several row groups (pyarrow's
    ``row_group_size``) for the shuffle to mix the whole file.

    Parameters
    ----------
    path : str or Path
    features : sequence of str
        Columns of ``X``, in this order.
    target : str
        Column of the counts.
    exposure, weights : str, optional
        Columns of the exposure and the row weights.
    batch_size, block_size, shuffle, seed, device, dtype
        See :class:`BatchSource`.

    Examples
    --------
    >>> src = ParquetSource("claims.parquet", ["age", "power"], "n_claims",
    ...                     exposure="years", batch_size=512, seed=0)   # doctest: +SKIP
    """

    def __init__(
        self,
        path,
        features: Sequence[str],
        target: str,
        *,
        exposure=None,
        weights=None,
        batch_size=256,
        block_size=65536,
        shuffle=True,
        seed=None,
        device="cpu",
        dtype=torch.float64,
    ):
        import pyarrow.parquet as pq

        super().__init__(batch_size, block_size, shuffle, seed, device, dtype)
        if isinstance(features, str) or not len(features):
            raise ValueError(f"features must be a non-empty list of column names, got {features!r}")
        self.path = str(path)
        self.columns = {"X": list(features), "y": [target]}
        for name, col in (("exposure", exposure), ("weights", weights)):
            if col is not None:
                self.columns[name] = [col]
        meta = pq.ParquetFile(self.path).metadata
        names = set(meta.schema.names)
        missing = [c for cols in self.columns.values() for c in cols if c not in names]
        if missing:
            raise ValueError(f"columns {missing} are not in {self.path} (it has {sorted(names)})")
        if meta.num_rows == 0:
            raise ValueError(f"{self.path} has no rows")
        self.num_features = len(features)
        self._blocks = [g for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
        self._block_rows = [meta.row_group(g).num_rows for g in self._blocks]
        # the file's row number of each row group's first row, for messages
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._group_start = dict(enumerate(np.cumsum([0, *sizes[:-1]]).tolist()))

    def _read(self, key, columns=None):
        import pyarrow.parquet as pq

        wanted = {k: v for k, v in self.columns.items() if columns is None or k in columns}
        flat = [c for cols in wanted.values() for c in cols]
        # a new handle per pass: a source (and its shards) may be read by several loops
        reader = pq.ParquetFile(self.path)
        start = 0
        for batch in reader.iter_batches(
            batch_size=self.block_size, row_groups=[key], columns=flat, use_threads=False
        ):
            part = {
                k: np.stack([_column(batch, c) for c in cols], axis=1) for k, cols in wanted.items()
            }
            part = {k: (v if k == "X" else v[:, 0]) for k, v in part.items()}
            rows = batch.num_rows
            yield _check_block(part, f"row group {key}", wanted,
                               first=self._group_start[key] + start)
            start += rows


def _column(batch, name):
    # nulls become NaN (to_numpy of a nullable column), which _check_block reports
    col = batch.column(name)
    try:
        return col.to_numpy(zero_copy_only=False).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {name!r} is not numeric ({col.type})") from err


class LazyTotals(Mapping):
    """Totals (as :meth:`BatchSource.totals` returns them) computed on first access.

    A model's :meth:`~posheads.models.protocol.PosteriorModel.with_totals` reads them
    only when its priors depend on all rows, so a model that does not costs no pass over
    the source.

    Parameters
    ----------
    compute : callable
        ``() -> dict`` of the totals; called at most once.
    known : dict, optional
        Totals known already (``"rows"``), returned without computing the others.
    """

    def __init__(self, compute: Callable[[], dict], known: dict | None = None):
        self._compute, self._values = compute, None
        self._known = dict(known or {})

    def _get(self) -> dict:
        if self._values is None:
            self._values = {**dict(self._compute()), **self._known}
        return self._values

    def __getitem__(self, key):
        if key in self._known:
            return self._known[key]
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())
