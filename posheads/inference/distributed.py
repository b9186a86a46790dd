"""Data-parallel MAP and SVI on ``torch.distributed``: each worker holds a shard of the rows.

Launch one process per worker with ``torchrun`` (see ``examples/distributed_fit.py``);
every worker calls the same function on its own shard and gets the same fit.

* :func:`fit_map_distributed` -- every worker evaluates its shard's share of the
  objective: where the model's target has a Newton loss (a
  :class:`~posheads.models.glm.SoftplusGLM`), its gradient and Hessian are all-reduced
  and every worker takes the same Newton step -- the single-process fit up to float
  rounding; otherwise L-BFGS runs on the all-reduced objective and gradient. Priors, the
  log-Jacobian and data-dependent priors (a SoftplusGLM's default intercept prior mean,
  :meth:`~posheads.models.protocol.PosteriorModel.with_totals`) are those of all rows,
  counted once.
* :func:`fit_svi_distributed` and :func:`fit_svi_stream_distributed` -- every step each
  worker estimates the ELBO gradient on a mini-batch of its shard, scaled to all rows; the
  gradients are averaged before the optimiser step (:class:`DistributedSVIState`). The
  guide starts from the same values everywhere (identical seeds, and a broadcast from
  rank 0), so all workers hold the same parameters after every step.

The process group is the caller's when one exists; otherwise :func:`init_process_group`
starts one from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), with NCCL for CUDA data and gloo otherwise.
"""

from __future__ import annotations

from ._dist_group import backend_for, init_process_group, shard, shard_rows
from ._distributed_map import ShardLoss, fit_map_distributed
from ._distributed_svi import (
    DistributedSVIState,
    fit_svi_distributed,
    fit_svi_stream_distributed,
)

__all__ = [
    "DistributedSVIState",
    "ShardLoss",
    "backend_for",
    "fit_map_distributed",
    "fit_svi_distributed",
    "fit_svi_stream_distributed",
    "init_process_group",
    "shard",
    "shard_rows",
]
