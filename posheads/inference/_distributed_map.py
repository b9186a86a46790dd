"""Data-parallel mode search (:func:`fit_map_distributed`); see :mod:`.distributed`.

Every worker holds the :class:`~posheads.models.target.Target` of its shard: rank 0 the
full one, the others :meth:`~posheads.models.target.Target.likelihood` (no priors, no
log-Jacobian), so the sums over the workers count the priors once. Where the target has a
Newton loss, every worker evaluates its shard's share of it and the sums are
all-reduced (:class:`ShardLoss`), so all take the same Newton steps; otherwise L-BFGS runs
on the all-reduced objective and gradient.
"""

from __future__ import annotations

import torch
from pyro import poutine

from posheads.models.protocol import as_model

from ._dist_group import all_sum, leading_rows, require_group, sum_floats
from .common import intra_op_threads
from .map import MAP, Mode, initial_theta, lbfgs, map_posterior, newton_mode

__all__ = ["ShardLoss", "column_totals", "fit_map_distributed", "shard_mode", "shard_target"]


class ShardLoss:
    """A Newton loss summed over the workers' shares (the NewtonSolver interface).

    Parameters
    ----------
    loss : Newton loss
        This worker's, per unit of its own ``num_obs``.
    share : float
        This worker's ``num_obs`` over all workers': the weight that makes the sum of
        the shares the loss of all rows per unit weight (the single-process scale, and
        that of its ``tol``).
    """

    closed_form = False  # the collectives run outside inference mode

    def __init__(self, loss, share: float):
        self.loss, self.share = loss, share

    def predictors(self, theta, start=False):
        return self.loss.predictors(theta, start)

    def step(self, P, dP, a):
        return self.loss.step(P, dP, a)

    def value(self, theta, P) -> float:
        v = torch.tensor([self.loss.value(theta, P) * self.share], dtype=torch.float64,
                         device=theta.device)
        return float(all_sum(v))

    def gradient(self, theta, P):
        return all_sum(self.loss.gradient(theta, P) * self.share)

    def hessian(self, theta, P, exact=False):
        return all_sum(self.loss.hessian(theta, P, exact=exact) * self.share)

    def log_joint(self, theta, P=None):
        return all_sum(self.loss.log_joint(theta, P).reshape(1).clone())[0]


def column_totals(kwargs: dict) -> dict:
    """:meth:`~posheads.inference.stream.BatchSource.totals` of the named columns
    (``"y"``, ``"weights"``, ``"exposure"``) of all workers' shards, all-reduced."""
    rows = leading_rows(kwargs.values()) or 0
    like = next(v for v in kwargs.values() if torch.is_tensor(v))
    zeros = torch.zeros(rows, dtype=torch.float64, device=like.device)
    y = zeros if kwargs.get("y") is None else kwargs["y"].to(zeros)
    w = zeros + 1 if kwargs.get("weights") is None else kwargs["weights"].to(zeros)
    t = zeros + 1 if kwargs.get("exposure") is None else kwargs["exposure"].to(zeros)
    v = torch.stack([zeros.new_tensor(float(rows)), w.sum(), w @ y, w @ t, t.sum()])
    total_rows, wsum, wy, wt, tsum = all_sum(v).tolist()
    return {"rows": int(total_rows), "weights": wsum, "y": wy, "exposure": wt,
            "exposure_unweighted": tsum}


def shard_target(model, data, *, seed=None, validate=True):
    """This worker's model and target, their data-dependent priors from all rows.

    Returns
    -------
    (PosteriorModel, Target)
        :meth:`~posheads.models.protocol.PosteriorModel.with_totals` of all shards'
        :func:`column_totals`, and its (full) target on this shard.
    """
    m = as_model(model)
    target = m.target(data, validate=validate, seed=seed)
    mt = m.with_totals(column_totals(m.model_kwargs(target.data)))
    if mt is not m:
        target = mt.target(target.data, validate=False, seed=seed)
    return mt, target


def shard_mode(mt, target, *, jacobian=False, init=None, max_iter=100, tol=1e-8,
               verbose=0) -> Mode:
    """The mode of the posterior of all shards; every worker gets the same.

    Parameters
    ----------
    mt, target
        From :func:`shard_target`.
    jacobian, init, max_iter, tol, verbose
        As in :func:`~posheads.inference.map.find_mode` (``tol`` per unit weight of all
        shards).
    """
    rank, _ = require_group()
    (num_obs,) = sum_floats([float(target.num_obs)])
    share = float(target.num_obs) / num_obs
    part = target if rank == 0 else target.likelihood()
    jac = jacobian and rank == 0
    with intra_op_threads(target.work_size):
        loss = part.newton_loss(jac)
        # the shards' starts averaged (a data-dependent start differs by shard; the
        # search goes to the same mode)
        start = all_sum(part.init().detach() * share)
        theta0 = initial_theta(init, start, part.pack)
        if loss is not None:
            theta, solver = newton_mode(ShardLoss(loss, share), theta0, max_iter=max_iter,
                                        tol=tol, verbose=verbose and rank == 0)
            log_joint = float(solver.loss.log_joint(theta, solver.P))
            return Mode(theta, target.unpack(theta), solver.n_iter, solver.converged,
                        solver.g_max, log_joint, jacobian)
        _check_global_latents(mt, target)

        def local(theta):
            return -part.log_joint(theta, jacobian=jac) / num_obs

        def objective(theta):
            return _GlobalObjective.apply(theta, local)

        theta, n_iter, g_max, converged = lbfgs(objective, theta0, max_iter, tol,
                                                verbose and rank == 0)
        with torch.no_grad():
            values = {k: v.detach() for k, v in target.unpack(theta).items()}
            log_joint = -float(objective(theta)) * num_obs
    return Mode(theta, values, n_iter, converged, g_max, log_joint, jacobian)


def fit_map_distributed(model, data, *, max_iter=100, tol=1e-8, init=None, verbose=0,
                        seed=None, jacobian=False):
    """:func:`~posheads.inference.fit_map` on the union of the workers' shards.

    Every worker of the process group calls it with its own shard (see :func:`shard`)
    and the same arguments; all get the same result.

    Parameters
    ----------
    model : PosteriorModel or callable
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
    config = MAP(max_iter=max_iter, tol=tol)
    require_group()
    mt, target = shard_target(model, data, seed=seed)
    mode = shard_mode(mt, target, jacobian=jacobian, init=init, max_iter=config.max_iter,
                      tol=config.tol, verbose=verbose)
    return map_posterior(model, target.data, mode)


class _GlobalObjective(torch.autograd.Function):
    """``sum over workers of f_r(theta)`` with its all-reduced gradient, as one autograd node."""

    @staticmethod
    def forward(ctx, theta, local):
        with torch.enable_grad():
            x = theta.detach().requires_grad_()
            f = local(x)
            (g,) = torch.autograd.grad(f, x)
        total = all_sum(torch.cat([f.detach().reshape(1), g]))
        ctx.save_for_backward(total[1:])
        return total[0].clone()

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return grad_out * g, None


def _check_global_latents(mt, target):
    """Latent sites inside the data plate differ by shard: they cannot be all-reduced."""
    trace = poutine.trace(mt).get_trace(**mt.model_kwargs(target.data))
    for name, _ in target.layout:
        if any(f.name == "data" for f in trace.nodes[name]["cond_indep_stack"]):
            raise ValueError(
                f"latent site {name!r} is local to the rows (in the 'data' "
                "plate): only global latent sites can be fitted on shards"
            )
