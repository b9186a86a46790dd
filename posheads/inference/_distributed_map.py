"""Data-parallel MAP fits (:func:`fit_map_distributed`); see :mod:`.distributed`."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist

from ._dist_group import _all_sum, _group, _sum_floats
from .stream import global_intercept_model


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
