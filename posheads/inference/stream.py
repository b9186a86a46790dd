"""Mini-batches streamed from disk, and SVI on them: data larger than memory.

* :class:`ArraySource` -- rows of ``.npy`` files opened as memory maps (or any arrays).
* :class:`ParquetSource` -- columns of a Parquet file chosen by name, read with
  ``pyarrow.parquet.ParquetFile.iter_batches``.
* :func:`fit_svi_stream` -- SVI over epochs of such a source, each step's likelihood
  scaled to the whole data set (:class:`~posheads.inference.svi.SVIState`).

A source splits its rows into *blocks* (``block_size`` rows of a memory map, or chunks of
at most ``block_size`` rows of one Parquet row group), visits the blocks in an order
shuffled by ``seed`` and the epoch, shuffles the rows inside each block, and yields
mini-batches of ``batch_size`` rows as dicts of torch tensors
``{"X": (b, p), "y": (b,), "exposure": (b,), "weights": (b,)}`` (the last two only when
given) -- the keyword arguments of a :class:`~posheads.models.glm.SoftplusGLM`. At most
one block plus one unfinished mini-batch is held in memory, which
:attr:`BatchSource.peak_rows` records. Every block is validated as it is read: a NaN,
a negative count, a non-positive exposure or a negative weight raises a ``ValueError``
naming the column and the rows.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from ._potential import is_glm
from .svi import _GUIDES, SVIState, _make_guide

__all__ = ["ArraySource", "BatchSource", "ParquetSource", "fit_svi_stream"]

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


def _check_block(part: dict, where: str) -> dict:
    """Validate a block of rows (float64 numpy arrays); ``where`` names the rows."""
    for name, v in part.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{name} contains NaN, missing or infinite values in {where}")
    if "y" in part and (part["y"] < 0).any():
        raise ValueError(f"y must be non-negative counts: negative values in {where}")
    if "exposure" in part and (part["exposure"] <= 0).any():
        raise ValueError(f"exposure must be positive: values <= 0 in {where}")
    if "weights" in part and (part["weights"] < 0).any():
        raise ValueError(f"weights must be non-negative: negative values in {where}")
    return part


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
        yield _check_block(part, f"rows {start}..{stop - 1}")


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
            yield _check_block(part, f"row group {key}, rows {start}..{start + rows - 1}")
            start += rows


def _column(batch, name):
    # nulls become NaN (to_numpy of a nullable column), which _check_block reports
    col = batch.column(name)
    try:
        return col.to_numpy(zero_copy_only=False).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {name!r} is not numeric ({col.type})") from err


# ----------------------------------------------------------------- fitting
def needs_global_intercept(model) -> bool:
    """Whether ``model`` is a SoftplusGLM whose intercept prior mean depends on the data."""
    return bool(
        is_glm(model)
        and getattr(model, "intercept_loc", 0) is None
        and getattr(model, "fit_intercept", False)
        and getattr(model, "intercept_scale", None) is not None
    )


def global_intercept_model(model, totals: dict):
    """A SoftplusGLM whose default intercept prior mean comes from all rows, not a batch.

    The default prior mean is ``softplus_inverse`` of the weighted mean rate of the data
    the model is called with; on a mini-batch or a shard that would change from call to
    call. Other models are returned unchanged.
    """
    if not needs_global_intercept(model):
        return model
    from posheads import ops

    rate = (
        totals["y"] / totals["exposure"]
        if totals["y"] > 0
        else (0.5 / totals["exposure_unweighted"])
    )
    out = copy.copy(model)
    out.intercept_loc = float(
        ops.softplus_inverse(torch.tensor(rate, dtype=torch.float64), model.beta, model.threshold)
    )
    out._loss_cache = None
    return out


def fit_svi_stream(
    model,
    source: BatchSource,
    *,
    epochs: int = 1,
    guide="normal",
    learning_rate: float = 0.01,
    lr_decay: float = 0.1,
    num_samples: int = 1000,
    clip_norm: float | None = 10.0,
    average_window: int = 100,
    init: str = "auto",
    num_particles: int = 1,
    seed: int | None = None,
    verbose: int = 1,
    state_class=SVIState,
    totals: dict | None = None,
    batches_per_epoch: int | None = None,
):
    """SVI over ``epochs`` passes of a :class:`BatchSource`, in bounded memory.

    Parameters
    ----------
    model : SoftplusGLM or callable
        A Pyro model called as ``model(**batch)`` with the source's keys (``X``, ``y``,
        ``exposure``, ``weights``); its observations in a ``pyro.plate("data")``.
    source : BatchSource
    epochs : int
        Passes over the source.
    guide : str or guide object
        As in :func:`~posheads.inference.fit_svi`.
    learning_rate, lr_decay, clip_norm, num_particles, num_samples
        As in :func:`~posheads.inference.fit_svi` (the decay spans all steps).
    average_window : int
        The draws come from the guide at its parameters averaged over about this many
        final steps (iterate averaging).
    init : {"auto", "map", "median"}
        Guide location at start: the mode of the first mini-batch's unconstrained
        density, or the prior median; ``"auto"`` is ``"map"`` for a SoftplusGLM.
    seed : int, optional
        Seed of the guide and of the ELBO's draws (the source has its own ``seed``).
    verbose : int
        0 silences the progress bar.
    state_class : type
        :class:`~posheads.inference.svi.SVIState` or a subclass (the distributed engine
        passes one that combines the gradients of all workers).
    totals : dict, optional
        :meth:`BatchSource.totals` of the whole data set when ``source`` is one shard of
        it (default: the source's own, computed only where needed).
    batches_per_epoch : int, optional
        Stop each epoch after this many mini-batches (default: all); workers that must
        take the same number of steps pass the smallest of their counts.

    Returns
    -------
    Posterior
        ``method="svi"``, ``samples[site]`` of shape ``(1, num_samples, *site_shape)``,
        ``data=None`` (the data stay on disk); ``extra``: ``"elbo"``, ``"n_iter"``,
        ``"epochs"``, ``"guide"``, ``"svi_state"``.

    Notes
    -----
    Each step's log-likelihood is scaled by ``total_size / batch rows``, so the ELBO is
    that of the whole data set. For a SoftplusGLM whose intercept prior mean is the data's
    (the default), one extra pass over the 1-D columns finds it for all rows
    (:func:`global_intercept_model`).
    """
    from tqdm.auto import tqdm

    from posheads.posterior import Posterior

    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if init not in ("auto", "map", "median"):
        raise ValueError(f"init must be 'auto', 'map' or 'median', got {init!r}")
    if isinstance(guide, str) and guide not in _GUIDES:
        raise ValueError(f"guide must be one of {tuple(_GUIDES)} or a guide object, got {guide!r}")
    if not isinstance(source, BatchSource):
        raise ValueError(f"source must be a BatchSource, got {type(source).__name__}")
    if needs_global_intercept(model):
        model = global_intercept_model(model, source.totals() if totals is None else totals)
    total = source.num_rows if totals is None else int(totals["rows"])
    per_epoch = source.num_batches if batches_per_epoch is None else int(batches_per_epoch)
    steps = epochs * per_epoch
    state = None
    batch = None
    with tqdm(total=steps, desc="SVI", disable=not verbose, leave=False) as pbar:
        for _ in range(epochs):
            for _, batch in zip(range(per_epoch), source, strict=False):
                if state is None:
                    start = _start(model, batch, init, seed)
                    state = state_class(
                        model,
                        _make_guide(model, guide, start, None),
                        learning_rate=learning_rate,
                        gamma=lr_decay ** (1.0 / steps),
                        clip_norm=clip_norm,
                        num_particles=num_particles,
                        average_window=average_window,
                        seed=seed,
                    )
                loss = state.step(batch, total_size=total)
                pbar.update(1)
                if state.num_steps % 50 == 1:
                    pbar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
    state.use_averaged()
    draws = state.sample(num_samples, batch)
    samples = {name: v.unsqueeze(0) for name, v in draws.items()}
    extra = {
        "elbo": list(state.losses),
        "n_iter": state.num_steps,
        "epochs": epochs,
        "guide": state.guide,
        "svi_state": state,
    }
    return Posterior(model, samples, method="svi", data=None, num_chains=1, extra=extra)


def _start(model, batch, init, seed):
    """The guide's ``init_loc_fn``: the first batch's mode (GLM by default) or the median."""
    from pyro.infer.autoguide.initialization import init_to_median, init_to_value

    if init == "median" or (init == "auto" and not is_glm(model)):
        return init_to_median
    from .map import fit_map

    data = batch
    if is_glm(model):
        from posheads.models.glm import GLMData

        data = GLMData(**batch)
    # a few hundred rows need not pin every coefficient down: the mode is only a start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        values = fit_map(model, data, seed=seed, jacobian=True).extra["map"]
    return init_to_value(values={k: v.detach() for k, v in values.items()}, fallback=init_to_median)
