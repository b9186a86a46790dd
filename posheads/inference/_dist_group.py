"""The process group of the data-parallel fits: start-up, row shards and all-reduced sums
(for :mod:`posheads.inference.distributed`)."""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

__all__ = ["all_sum", "backend_for", "init_process_group", "leading_rows", "require_group",
           "shard", "shard_rows", "sum_floats"]


def backend_for(device) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_process_group(device="cpu", backend: str | None = None) -> tuple[int, int]:
    """Join the default process group, starting it from the environment if needed.

    Parameters
    ----------
    device : str or torch.device
        Where the data live: chooses the backend (and, for CUDA, the rank's device is
        ``LOCAL_RANK``).
    backend : str, optional
        Overrides the choice (``"gloo"``, ``"nccl"``).

    Returns
    -------
    (int, int)
        This worker's rank and the number of workers.

    Raises
    ------
    ValueError
        When there is no process group and the environment does not describe one.
    """
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed")
    if not dist.is_initialized():
        import os

        missing = [
            v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
        ]
        if missing:
            raise ValueError(
                f"no process group and {missing} unset: launch with torchrun, "
                "or call torch.distributed.init_process_group first"
            )
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend or backend_for(device), init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def require_group() -> tuple[int, int]:
    """This worker's rank and the number of workers; a ``ValueError`` without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "no process group: call posheads.inference.distributed."
            "init_process_group() (or launch with torchrun) first"
        )
    return dist.get_rank(), dist.get_world_size()


def shard_rows(n: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """Rows ``[rank n / W, (rank + 1) n / W)`` of ``n``: this worker's contiguous share.

    ``rank`` and ``world_size`` default to those of the process group.
    """
    if rank is None or world_size is None:
        rank, world_size = require_group()
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def shard(data, rank: int | None = None, world_size: int | None = None):
    """This worker's contiguous share of the rows of ``data``.

    Parameters
    ----------
    data : Tensor, dict of Tensor, or dataclass of Tensor (a GLMData)
        Tensors whose first dimension is the rows of the first one (others are passed
        unchanged).
    rank, world_size : int, optional
        Default: those of the process group.

    Returns
    -------
    The same type, with the rows :func:`shard_rows` gives.
    """
    if rank is None or world_size is None:
        rank, world_size = require_group()
    if torch.is_tensor(data):
        return data[shard_rows(data.shape[0], rank, world_size)]
    if isinstance(data, dict):
        n = leading_rows(data.values())
        return {k: shard(v, rank, world_size) if _is_rows(v, n) else v for k, v in data.items()}
    values = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    n = leading_rows(values.values())
    return dataclasses.replace(
        data, **{k: shard(v, rank, world_size) for k, v in values.items() if _is_rows(v, n)}
    )


def leading_rows(values) -> int | None:
    """The leading dimension of the first tensor of ``values`` that has one."""
    return next((int(v.shape[0]) for v in values if torch.is_tensor(v) and v.dim()), None)


def _is_rows(v, n):
    return torch.is_tensor(v) and v.dim() > 0 and n is not None and v.shape[0] == n


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the workers, in place."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_floats(values: list[float], op=None) -> list[float]:
    """Python floats reduced over the workers (on the device the backend needs)."""
    # NCCL reduces CUDA tensors only
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
    return t.tolist()
