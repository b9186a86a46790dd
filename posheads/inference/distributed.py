"""Data-parallel MAP and SVI on ``torch.distributed``: each worker holds a shard of the rows.

Launch one process per worker with ``torchrun`` (see ``examples/distributed_fit.py``);
every worker calls the same function on its own shard and gets the same fit.

* :func:`fit_map_distributed` -- for a :class:`~posheads.models.glm.SoftplusGLM`, every
  worker computes the gradient and Hessian of its shard's negative log-likelihood
  (:class:`~posheads.models._loss.GLMLoss`), the sums are all-reduced and every worker
  takes the same Newton step: the single-process fit up to float rounding. Priors, the
  log-Jacobian and the default intercept prior mean are those of all rows, counted once.
  Any other Pyro model runs L-BFGS on the all-reduced log joint and gradient.
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
from ._distributed_map import fit_map_distributed
from ._distributed_svi import (
    DistributedSVIState,
    fit_svi_distributed,
    fit_svi_stream_distributed,
)

__all__ = [
    "DistributedSVIState",
    "backend_for",
    "fit_map_distributed",
    "fit_svi_distributed",
    "fit_svi_stream_distributed",
    "init_process_group",
    "shard",
    "shard_rows",
]
