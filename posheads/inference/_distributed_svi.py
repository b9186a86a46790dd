"""Data-parallel SVI (:func:`fit_svi_distributed`, :func:`fit_svi_stream_distributed`);
see :mod:`.distributed`."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._dist_group import _all_sum, _group, _rows, _sum_floats
from ._distributed_map import _glm_totals, fit_map_distributed
from ._potential import is_glm
from .stream import BatchSource, fit_svi_stream, global_intercept_model, needs_global_intercept
from .svi import SVIState


class DistributedSVIState(SVIState):
    """An :class:`SVIState` whose steps average the loss and gradients over the workers.

    Each worker's loss is an unbiased estimate of the whole data's negative ELBO (its
    batch scaled by ``total_size``), so their mean is one with less variance. The guide's
    parameters are broadcast from rank 0 when made, so every worker steps the same values.
    """

    def _setup(self, kwargs) -> None:
        super()._setup(kwargs)
        with torch.no_grad():
            for p in self.optimizer.param_groups[0]["params"]:
                dist.broadcast(p.data, src=0)

    def _reduce_loss(self, value: float) -> float:
        # all workers see the same (mean) loss: the same stopping and NaN decisions
        return _sum_floats([value])[0] / dist.get_world_size()

    def _reduce_gradients(self, params) -> None:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = _all_sum(torch.cat([g.reshape(-1) for g in grads])) / dist.get_world_size()
        i = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[i : i + g.numel()].view_as(g).clone()
            i += g.numel()


def fit_svi_distributed(
    model,
    data,
    *,
    guide="normal",
    num_steps=5000,
    learning_rate=0.01,
    lr_decay=0.1,
    subsample_size=None,
    num_samples=1000,
    clip_norm=10.0,
    patience=500,
    tol=0.1,
    init="auto",
    rank=None,
    num_particles=1,
    seed=None,
    verbose=1,
):
    """:func:`~posheads.inference.fit_svi` on the union of the workers' shards.

    Parameters are those of :func:`~posheads.inference.fit_svi`; ``data`` is this
    worker's shard and ``subsample_size`` the rows per step *per worker* (the global
    mini-batch is ``world_size`` times larger). ``init="map"`` (the default for a
    SoftplusGLM) starts at :func:`fit_map_distributed`'s mode. Every worker must pass the
    same ``seed``; all return the same draws.

    Returns
    -------
    Posterior
        As :func:`~posheads.inference.fit_svi`'s, with ``data`` this worker's shard.
    """
    from posheads.posterior import Posterior

    from . import svi

    _group()
    if init not in ("auto", "map", "median"):
        raise ValueError(f"init must be 'auto', 'map' or 'median', got {init!r}")
    glm = is_glm(model) and hasattr(model, "layout")
    if glm and needs_global_intercept(model):
        from posheads.models.glm import GLMData

        model = global_intercept_model(
            model, _glm_totals(GLMData(**data) if isinstance(data, dict) else data)
        )
    n_local = _rows(svi._model_kwargs(model, data).values())
    total = int(_sum_floats([float(n_local)])[0])
    kwargs = svi._model_kwargs(model, data, subsample_size)
    init = ("map" if glm else "median") if init == "auto" else init
    if init == "map":
        values = fit_map_distributed(model, data, seed=seed, jacobian=True).extra["map"]
        from pyro.infer.autoguide.initialization import init_to_median, init_to_value

        start = init_to_value(
            values={k: v.detach() for k, v in values.items()}, fallback=init_to_median
        )
    else:
        start = svi._init_loc_fn(model, data, "median", seed)
    guide = svi._make_guide(model, guide, start, rank)
    plateau = svi._Plateau(patience, tol)
    state = DistributedSVIState(
        model,
        guide,
        learning_rate=learning_rate,
        gamma=lr_decay ** (1.0 / num_steps),
        clip_norm=clip_norm,
        num_particles=num_particles,
        average_window=plateau.window,
        seed=seed,
    )
    converged = svi._run(
        state, kwargs, num_steps, plateau, verbose and dist.get_rank() == 0, total_size=total
    )
    state.use_averaged()
    draws = state.sample(num_samples, svi._model_kwargs(model, data, None))
    samples = {name: v.unsqueeze(0) for name, v in draws.items()}
    extra = {
        "elbo": list(state.losses),
        "n_iter": state.num_steps,
        "converged": converged,
        "guide": guide,
        "svi_state": state,
    }
    return Posterior(model, samples, method="svi", data=data, num_chains=1, extra=extra)


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
    rank, world = _group()
    mine = source.shard(rank, world)
    totals = (
        mine.totals()
        if needs_global_intercept(model)
        else {
            "rows": mine.num_rows,
            "weights": 0.0,
            "y": 0.0,
            "exposure": 0.0,
            "exposure_unweighted": 0.0,
        }
    )
    keys = sorted(totals)
    totals = dict(zip(keys, _sum_floats([float(totals[k]) for k in keys]), strict=True))
    (batches,) = _sum_floats([float(mine.num_batches)], op=dist.ReduceOp.MIN)
    verbose = options.pop("verbose", 1) and rank == 0
    return fit_svi_stream(
        model,
        mine,
        epochs=epochs,
        state_class=DistributedSVIState,
        totals=totals,
        batches_per_epoch=int(batches),
        verbose=verbose,
        **options,
    )
