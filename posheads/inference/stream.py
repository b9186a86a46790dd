"""Mini-batches streamed from disk, and SVI on them: data larger than memory.

* :class:`ArraySource` -- rows of ``.npy`` files opened as memory maps (or any arrays).
* :class:`ParquetSource` -- columns of a Parquet file chosen by name, read with
  ``pyarrow.parquet.ParquetFile.iter_batches``.
* :func:`fit_svi_stream` -- SVI (configured by :class:`~posheads.inference.svi.SVI`) over
  epochs of such a source, each step's likelihood scaled to the whole data set.

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

import warnings

from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from posheads.models.protocol import as_model
from posheads.posterior import Posterior

from .common import check_int, make_guide
from .map import find_mode
from .sources import ArraySource, BatchSource, LazyTotals, ParquetSource
from .svi import SVI, init_at
from .svi_state import SVIState

__all__ = ["ArraySource", "BatchSource", "ParquetSource", "fit_svi_stream", "svi_stream"]

# SVI options that describe an in-memory run: a stream's steps are its epochs' batches,
# all of them taken.
_NOT_FOR_STREAMS = ("num_steps", "patience", "tol", "subsample_size")


def fit_svi_stream(model, source: BatchSource, *, epochs: int = 1, average_window: int = 100,
                   seed: int | None = None, verbose: int = 1, state_class=SVIState,
                   totals=None, batches_per_epoch: int | None = None, **options) -> Posterior:
    """SVI over ``epochs`` passes of a :class:`BatchSource`, in bounded memory.

    Parameters
    ----------
    model : PosteriorModel or callable
        A Pyro model called as ``model(**batch)`` with the source's keys (``X``, ``y``,
        ``exposure``, ``weights``); its observations in a ``pyro.plate("data")``.
    source : BatchSource
    epochs : int
        Passes over the source.
    average_window : int
        The draws come from the guide at its parameters averaged over about this many
        final steps (iterate averaging).
    seed : int, optional
        Seed of the guide and of the ELBO's draws (the source has its own ``seed``).
    verbose : int
        0 silences the progress bar.
    state_class, totals, batches_per_epoch
        See :func:`svi_stream`.
    **options
        Fields of :class:`~posheads.inference.svi.SVI` (``guide``, ``learning_rate``,
        ``lr_decay`` -- the decay spans all steps --, ``num_samples``, ``clip_norm``,
        ``init``, ``rank``, ``num_particles``); ``num_steps``, ``patience``, ``tol`` and
        ``subsample_size`` do not apply to a stream.

    Returns
    -------
    Posterior
        See :func:`svi_stream`.
    """
    wrong = [name for name in _NOT_FOR_STREAMS if name in options]
    if wrong:
        raise ValueError(f"{wrong} do not apply to a streamed fit, which takes every "
                         "mini-batch of `epochs` passes")
    config = SVI(average_window=average_window, **options)
    return svi_stream(config, model, source, epochs=epochs, seed=seed, verbose=verbose,
                      state_class=state_class, totals=totals,
                      batches_per_epoch=batches_per_epoch)


def svi_stream(config: SVI, model, source: BatchSource, *, epochs: int = 1, seed=None,
               verbose=1, state_class=SVIState, totals=None,
               batches_per_epoch: int | None = None) -> Posterior:
    """:func:`fit_svi_stream` with its options as an :class:`~posheads.inference.svi.SVI`.

    Parameters
    ----------
    config : SVI
    model, source, epochs, seed, verbose
        See :func:`fit_svi_stream`.
    state_class : type
        :class:`~posheads.inference.svi_state.SVIState` or a subclass (the distributed
        engine passes one that combines the gradients of all workers).
    totals : Mapping, optional
        :meth:`BatchSource.totals` of the whole data set when ``source`` is one shard of
        it (default: the source's own, read only if the model asks for them).
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
    that of the whole data set. A model whose priors depend on the data (a SoftplusGLM's
    default intercept prior mean) takes them from the totals of all rows
    (:meth:`~posheads.models.protocol.PosteriorModel.with_totals`), found by one pass
    over the 1-D columns.
    """
    epochs = check_int("epochs", epochs, 1)
    if not isinstance(source, BatchSource):
        raise ValueError(f"source must be a BatchSource, got {type(source).__name__}")
    m = as_model(model).with_totals(LazyTotals(source.totals) if totals is None else totals)
    fn = m
    total = source.num_rows if totals is None else int(totals["rows"])
    per_epoch = source.num_batches if batches_per_epoch is None else int(batches_per_epoch)
    steps = epochs * per_epoch
    state = kwargs = None
    with tqdm(total=steps, desc="SVI", disable=not verbose, leave=False) as pbar:
        for _ in range(epochs):
            for _, batch in zip(range(per_epoch), source, strict=False):
                kwargs = m.model_kwargs(batch)
                if state is None:
                    guide = make_guide(fn, config.guide, init_at(_start(config, m, batch, seed)),
                                       rank=config.rank)
                    state = config.new_state(fn, guide, steps, seed, state_class)
                loss = state.step(kwargs, total_size=total)
                pbar.update(1)
                if state.num_steps % 50 == 1:
                    pbar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
    return config.posterior(model, state, kwargs, data=None, epochs=epochs)


def _start(config: SVI, m, batch, seed):
    """Where the guide starts: the first batch's mode, or None (the prior median)."""
    if config.init == "median":
        return None
    target = m.target(batch, validate=True, seed=seed)
    if not config.starts_at_mode(target):
        return None
    # a few hundred rows need not pin every coefficient down: the mode is only a start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return find_mode(target, jacobian=True).values
