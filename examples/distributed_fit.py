"""Fit a softplus GLM data-parallel: one process per shard, launched with ``torchrun``.

Every process memory-maps the ``.npy`` files, copies its own contiguous shard of the rows
(:func:`posheads.inference.distributed.shard_rows`) and calls the same fit; the sums the
fit needs are all-reduced, so each process ends with the fit of all rows.

One machine, two processes (gloo on CPU)::

    torchrun --standalone --nproc_per_node 2 examples/distributed_fit.py \\
        --X X.npy --y y.npy --method map,svi --out fit.npz

Two machines with four GPUs each (NCCL; run the same line on both)::

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d \\
        --rdzv_endpoint host0:29500 examples/distributed_fit.py \\
        --X /data/X.npy --y /data/y.npy --device cuda --method map --out fit.npz

``--method stream`` streams each worker's blocks of the memory maps instead of copying
the shard (SVI in bounded memory). Rank 0 prints the estimates and, with ``--out``,
saves the posterior means as ``{method}_{site}`` arrays.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.distributed as dist

from posheads.inference.distributed import (
    fit_map_distributed,
    fit_svi_distributed,
    fit_svi_stream_distributed,
    init_process_group,
    shard_rows,
)
from posheads.inference.stream import ArraySource
from posheads.models.glm import GLMData, SoftplusGLM


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--X", required=True, help=".npy file of the covariates, shape (n, p)")
    p.add_argument("--y", required=True, help=".npy file of the counts, shape (n,)")
    p.add_argument("--exposure", help=".npy file of the exposure, shape (n,)")
    p.add_argument("--likelihood", default="poisson")
    p.add_argument("--method", default="map", help="comma-separated: map, svi, stream")
    p.add_argument("--steps", type=int, default=2000, help="SVI steps")
    p.add_argument("--batch-size", type=int, default=256, help="SVI rows per step and worker")
    p.add_argument("--epochs", type=int, default=5, help="passes of --method stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help=".npz file for the posterior means (written by rank 0)")
    return p.parse_args(argv)


def load_shard(args, device) -> GLMData:
    """This worker's rows of the memory-mapped files, as tensors on ``device``."""
    X = np.load(args.X, mmap_mode="r")
    rows = shard_rows(X.shape[0])

    def take(path):
        if path is None:
            return None
        part = np.array(np.load(path, mmap_mode="r")[rows], dtype=np.float64)  # a copy
        return torch.as_tensor(part, device=device)

    return GLMData(X=take(args.X), y=take(args.y), exposure=take(args.exposure))


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    rank, world = init_process_group(device)
    model = SoftplusGLM(args.likelihood)
    means = {}
    for method in args.method.split(","):
        if method == "map":
            post = fit_map_distributed(model, load_shard(args, device), tol=1e-10)
        elif method == "svi":
            post = fit_svi_distributed(
                model,
                load_shard(args, device),
                num_steps=args.steps,
                subsample_size=args.batch_size,
                num_samples=500,
                seed=args.seed,
                verbose=0,
            )
        elif method == "stream":
            source = ArraySource(
                args.X,
                args.y,
                exposure=args.exposure,
                batch_size=args.batch_size,
                block_size=4 * args.batch_size,
                seed=args.seed,
                device=device,
            )
            post = fit_svi_stream_distributed(
                model, source, epochs=args.epochs, num_samples=500, seed=args.seed, verbose=0
            )
        else:
            raise SystemExit(f"unknown method {method!r}")
        for site, value in post.point_estimate().items():
            means[f"{method}_{site}"] = value.detach().cpu().numpy()
    if rank == 0:
        for name, value in means.items():
            print(f"{name}: {np.array2string(np.atleast_1d(value), precision=6)}")
        if args.out:
            np.savez(args.out, world_size=world, **means)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
