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

import copy

import torch
import torch.distributed as dist

from ._potential import is_glm
from .stream import BatchSource, fit_svi_stream, global_intercept_model, needs_global_intercept
from .svi import SVIState

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


# ------------------------------------------------------------------ process group
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


def _group() -> tuple[int, int]:
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
        rank, world_size = _group()
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def shard(data, rank: int | None = None, world_size: int | None = None):
    """This worker's contiguous share of the rows of ``data``.

    Parameters
    ----------
    data : GLMData, dict of Tensor, or Tensor
        Tensors whose first dimension is the rows (others are passed unchanged).
    rank, world_size : int, optional
        Default: those of the process group.

    Returns
    -------
    The same type, with the rows :func:`shard_rows` gives.
    """
    if rank is None or world_size is None:
        rank, world_size = _group()
    if torch.is_tensor(data):
        return data[shard_rows(data.shape[0], rank, world_size)]
    if isinstance(data, dict):
        n = _rows(data.values())
        return {k: shard(v, rank, world_size) if _is_rows(v, n) else v for k, v in data.items()}
    fields = {k: getattr(data, k) for k in ("X", "y", "exposure", "weights", "X_zero")}
    n = int(data.X.shape[0])
    return type(data)(
        **{k: shard(v, rank, world_size) if _is_rows(v, n) else v for k, v in fields.items()}
    )


def _rows(values):
    return next((int(v.shape[0]) for v in values if torch.is_tensor(v) and v.dim()), None)


def _is_rows(v, n):
    return torch.is_tensor(v) and v.dim() > 0 and n is not None and v.shape[0] == n


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _sum_floats(values: list[float], op=None) -> list[float]:
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


# ------------------------------------------------------------------ MAP
class _ShardLoss:
    """The NewtonSolver interface of :class:`GLMLoss` summed over the workers' shards.

    Rank 0 holds the shard's loss with the priors (and the log-Jacobian); the others the
    likelihood alone, so the all-reduced sums count the priors once. Everything is
    unnormalised on the shards and divided by the total weight here, the scale of the
    single-process objective (and of its ``tol``).
    """

    def __init__(self, loss, wsum: float):
        self.loss, self.scale = loss, 1.0 / wsum
        self.layout, self.dtype, self.device = loss.layout, loss.dtype, loss.device

    def predictors(self, theta, start=False):
        return self.loss.predictors(theta, start)

    def step(self, P, dP, a):
        return self.loss.step(P, dP, a)

    def value(self, theta, P) -> float:
        v = torch.tensor([self.loss.value(theta, P)], dtype=torch.float64, device=self.device)
        return float(_all_sum(v)) * self.scale

    def gradient(self, theta, P):
        return _all_sum(self.loss.gradient(theta, P)) * self.scale

    def hessian(self, theta, P, exact=False):
        return _all_sum(self.loss.hessian(theta, P, exact=exact)) * self.scale

    def log_joint(self, theta, P=None):
        return _all_sum(self.loss.log_joint(theta, P).reshape(1).clone())[0]


def _likelihood_only(model):
    """A copy of a SoftplusGLM with flat priors: the shards of ranks other than 0."""
    out = copy.copy(model)
    out.coef_scale = out.intercept_scale = out.gate_coef_scale = None
    out.concentration_prior = "flat"
    out._loss_cache = None
    return out


def _glm_totals(data) -> dict:
    """:meth:`BatchSource.totals` of all shards of a GLMData, all-reduced."""
    y = data.y.to(torch.float64)
    w = torch.ones_like(y) if data.weights is None else data.weights.to(y)
    t = torch.ones_like(y) if data.exposure is None else data.exposure.to(y)
    v = torch.stack(
        [
            torch.tensor(float(data.n), dtype=y.dtype, device=y.device),
            w.sum(),
            w @ y,
            w @ t,
            t.sum(),
        ]
    )
    rows, wsum, wy, wt, tsum = _all_sum(v).tolist()
    return {
        "rows": int(rows),
        "weights": wsum,
        "y": wy,
        "exposure": wt,
        "exposure_unweighted": tsum,
    }


def fit_map_distributed(
    model, data, *, max_iter=100, tol=1e-8, init=None, verbose=0, seed=None, jacobian=False
):
    """:func:`~posheads.inference.fit_map` on the union of the workers' shards.

    Every worker of the process group calls it with its own shard (see :func:`shard`)
    and the same arguments; all get the same result.

    Parameters
    ----------
    model : SoftplusGLM or callable
        The model, the same on every worker.
    data : GLMData or dict
        This worker's rows (a GLMData for a SoftplusGLM, model keyword arguments else).
    max_iter, tol, init, verbose, seed, jacobian
        As in :func:`~posheads.inference.fit_map` (``tol`` on the gradient divided by
        the total weight of all shards).

    Returns
    -------
    Posterior
        As :func:`~posheads.inference.fit_map`'s, with ``data`` this worker's shard and
        ``extra["log_joint"]`` that of all rows.
    """
    from posheads.models.glm import SoftplusGLM

    rank, _ = _group()
    if isinstance(model, SoftplusGLM):
        return _fit_glm(model, data, rank, max_iter, tol, init, verbose, jacobian)
    return _fit_pyro(model, data, rank, max_iter, tol, init, verbose, seed, jacobian)


def _fit_glm(model, data, rank, max_iter, tol, init, verbose, jacobian):
    from posheads.models._data import check_glm_data
    from posheads.models._loss import GLMLoss
    from posheads.models.glm import GLMData
    from posheads.posterior import Posterior

    from ._newton import NewtonSolver
    from .map import _initial_theta, _threads_for

    data = check_glm_data(GLMData(**data) if isinstance(data, dict) else data)
    totals = _glm_totals(data)
    model = global_intercept_model(model, totals)
    shard_model = model if rank == 0 else _likelihood_only(model)
    with _threads_for(data.X):
        local = GLMLoss(
            shard_model,
            data,
            jacobian=jacobian and rank == 0,
            normalize=False,
            validate=False,
            hessian_rows="auto",
        )
        loss = _ShardLoss(local, totals["weights"])
        # The intercept-only start of all rows (its rate all-reduced); the moments that
        # start the NB and zero parts are averaged over shards (close to, not exactly, the
        # single-process start -- Newton goes to the same optimum).
        local.rate = torch.tensor(
            totals["y"] / totals["exposure"]
            if totals["y"] > 0
            else 0.5 / totals["exposure_unweighted"],
            dtype=local.dtype,
        )
        start = _all_sum(local.init_theta() * (data.n / totals["rows"]))
        theta0 = _initial_theta(init, start, lambda v: model.pack(v, loss.layout))
        solver = NewtonSolver(loss, tol=tol, max_iter=max_iter, verbose=verbose and rank == 0)
        theta = solver.solve(theta0)
        values = model.unpack(theta, loss.layout)
        log_joint = float(loss.log_joint(theta, solver.P))
    extra = {
        "map": values,
        "theta": theta,
        "n_iter": solver.n_iter,
        "converged": solver.converged,
        "grad_max": solver.g_max,
        "log_joint": log_joint,
        "jacobian": jacobian,
    }
    samples = {k: v[None, None] for k, v in values.items()}
    return Posterior(model, samples, method="map", data=data, extra=extra)


class _GlobalObjective(torch.autograd.Function):
    """``sum over workers of f_r(theta)`` with its all-reduced gradient, as one autograd node."""

    @staticmethod
    def forward(ctx, theta, local):
        with torch.enable_grad():
            x = theta.detach().requires_grad_()
            f = local(x)
            (g,) = torch.autograd.grad(f, x)
        total = _all_sum(torch.cat([f.detach().reshape(1), g]))
        ctx.save_for_backward(total[1:])
        return total[0].clone()

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return grad_out * g, None


def _fit_pyro(model, kwargs, rank, max_iter, tol, init, verbose, seed, jacobian):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from posheads.posterior import Posterior

    from ._pyro_model import FlatModel
    from .map import _initial_theta, _lbfgs, _pack_flat

    flat = FlatModel(model, kwargs, seed=seed)
    _check_global_latents(flat)
    theta0 = _initial_theta(init, flat.theta0, lambda v: _pack_flat(flat, v))
    dist.broadcast(theta0, src=0)  # a data-dependent prior median differs by shard
    (num_obs,) = _sum_floats([float(flat.num_obs)])
    scale = 1.0 / max(num_obs, 1.0)

    def local(theta, jac=jacobian):
        # the latent sites (and the Jacobian) on rank 0 only: the priors count once
        values, log_det = flat.unpack(theta, with_log_det=True)
        from pyro import poutine

        tr = poutine.trace(poutine.condition(flat.model, values)).get_trace(**flat.kwargs)
        lp = tr.log_prob_sum(site_filter=lambda _, s: s["is_observed"] or rank == 0)
        return -(lp + log_det if jac and rank == 0 else lp) * scale

    def objective(theta):
        return _GlobalObjective.apply(theta, local)

    theta, n_iter, g_max, converged = _lbfgs(
        objective, theta0, max_iter, tol, verbose and rank == 0
    )
    if not converged:
        warnings.warn(
            f"L-BFGS did not converge in {n_iter} iteration(s): max |gradient| = "
            f"{g_max:.3g} > tol = {tol:.3g}. Increase max_iter.",
            ConvergenceWarning,
            stacklevel=3,
        )
    with torch.no_grad():
        values = {k: v.detach() for k, v in flat.unpack(theta).items()}
        log_joint = -float(_GlobalObjective.apply(theta, lambda x: local(x, False))) / scale
    extra = {
        "map": values,
        "theta": theta.detach(),
        "n_iter": n_iter,
        "converged": converged,
        "grad_max": g_max,
        "log_joint": log_joint,
        "jacobian": jacobian,
        "flat_model": flat,
    }
    samples = {k: v[None, None] for k, v in values.items()}
    return Posterior(model, samples, method="map", data=kwargs, extra=extra)


def _check_global_latents(flat):
    """Latent sites inside the data plate differ by shard: they cannot be all-reduced."""
    from pyro import poutine

    tr = poutine.trace(flat.model).get_trace(**flat.kwargs)
    for name, _, _ in flat.sites:
        if any(f.name == "data" for f in tr.nodes[name]["cond_indep_stack"]):
            raise ValueError(
                f"latent site {name!r} is local to the rows (in the 'data' "
                "plate): only global latent sites can be fitted on shards"
            )


# ------------------------------------------------------------------ SVI
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
