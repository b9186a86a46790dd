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
import numbers
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from ._potential import is_glm
from ._sources import ArraySource, BatchSource, ParquetSource
from .svi import _GUIDES, SVIState, _make_guide

__all__ = ["ArraySource", "BatchSource", "ParquetSource", "fit_svi_stream"]


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
