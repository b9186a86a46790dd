"""Data-parallel SVI (:func:`fit_svi_distributed`, :func:`fit_svi_stream_distributed`);
see :mod:`.distributed`."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._dist_group import all_sum, leading_rows, require_group, sum_floats
from ._distributed_map import shard_mode, shard_target
from .sources import BatchSource, LazyTotals
from .stream import fit_svi_stream
from .svi import SVI
from .svi_state import SVIState

__all__ = ["DistributedSVIState", "fit_svi_distributed", "fit_svi_stream_distributed"]


class DistributedSVIState(SVIState):
    """An :class:`SVIState` whose steps average the loss and gradients over the workers.

    Each worker's loss is an unbiased estimate of the whole data's negative ELBO (its
    batch scaled by ``total_size``), so their mean is one with less variance. The guide's
    parameters are broadcast from rank 0 when made, so every worker steps the same values.
    """

    def setup(self, kwargs) -> None:
        super().setup(kwargs)
        with torch.no_grad():
            for p in self.optimizer.param_groups[0]["params"]:
                dist.broadcast(p.data, src=0)

    def reduce_loss(self, value: float) -> float:
        # all workers see the same (mean) loss: the same stopping and NaN decisions
        return sum_floats([value])[0] / dist.get_world_size()

    def reduce_gradients(self, params) -> None:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = all_sum(torch.cat([g.reshape(-1) for g in grads])) / dist.get_world_size()
        i = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[i : i + g.numel()].view_as(g).clone()
            i += g.numel()


def fit_svi_distributed(model, data, *, seed=None, verbose=1, **options):
    """:func:`~posheads.inference.fit_svi` on the union of the workers' shards.

    Parameters
    ----------
    model : PosteriorModel or callable
        The same on every worker.
    data : GLMData or dict
        This worker's shard.
    seed : int, optional
        The same on every worker; all return the same draws.
    verbose : int
        Rank 0's progress bar.
    **options
        The fields of :class:`~posheads.inference.svi.SVI`; ``subsample_size`` is the
        rows per step *per worker* (the global mini-batch is ``world_size`` times
        larger). A start at the mode (``init="map"``, the default where the target has a
        Newton loss) is the mode of all shards.

    Returns
    -------
    Posterior
        As :func:`~posheads.inference.fit_svi`'s, with ``data`` this worker's shard.
    """
    config = SVI(**options)
    rank, _ = require_group()
    mt, target = shard_target(model, data, seed=seed)
    start = None
    if config.starts_at_mode(target):
        start = shard_mode(mt, target, jacobian=True).values
    kwargs = mt.model_kwargs(target.data)
    (total,) = sum_floats([float(leading_rows(kwargs.values()))])
    state, converged = config.optimise(
        mt, kwargs, start=start, seed=seed, verbose=verbose and rank == 0,
        state_class=DistributedSVIState, total_size=int(total))
    return config.posterior(model, state, kwargs, data=target.data, converged=converged)


def fit_svi_stream_distributed(model, source: BatchSource, *, epochs=1, **options):
    """:func:`~posheads.inference.stream.fit_svi_stream` with each worker on its blocks.

    Each worker passes the same (unsharded) source description; it streams the blocks
    ``rank, rank + W, ...`` (:meth:`BatchSource.shard`). Every epoch stops after the
    fewest mini-batches any worker has, so all take the same steps.

    Parameters
    ----------
    model, source, epochs, **options
        As in :func:`~posheads.inference.stream.fit_svi_stream`.

    Returns
    -------
    Posterior
    """
    rank, world = require_group()
    mine = source.shard(rank, world)
    (rows,) = sum_floats([float(mine.num_rows)])

    def all_totals():
        # read by the model (on every worker alike) only when its priors need them
        totals = mine.totals()
        keys = sorted(totals)
        return dict(zip(keys, sum_floats([float(totals[k]) for k in keys]), strict=True))

    totals = LazyTotals(all_totals, known={"rows": int(rows)})
    (batches,) = sum_floats([float(mine.num_batches)], op=dist.ReduceOp.MIN)
    verbose = options.pop("verbose", 1) and rank == 0
    return fit_svi_stream(model, mine, epochs=epochs, state_class=DistributedSVIState,
                          totals=totals, batches_per_epoch=int(batches), verbose=verbose,
                          **options)
