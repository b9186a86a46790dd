"""MAP and maximum-likelihood fits: :func:`fit_map`.

For a :class:`~posheads.models.glm.SoftplusGLM` the fit is Newton's method with the exact
Hessian and an Armijo line search (:class:`~posheads.inference._newton.NewtonSolver`) on
:class:`~posheads.models._loss.GLMLoss`, jointly in all parameters -- the NB
concentration included. A joint Newton step with the exact Hessian converges
quadratically in ``(coef, concentration)`` together, with no inner loop to tune; the
alternative, alternating coefficient steps with a 1-D search in the concentration,
converges only linearly whenever the two are correlated (as they are under
zero inflation). The NB and zero-inflated likelihoods are not convex, so the solver
damps the Hessian (Levenberg-Marquardt) wherever it is not positive definite, and the
line search keeps every step a descent step.

Cost per Newton step: two passes over ``X`` (the gradient ``X.T @ a`` and the line
search's ``X @ d``) and one weighted Gram matrix. For a dense design of at least
``4 * 2**17`` rows the Gram matrix comes from a fixed systematic subset of
``max(2**17, 1000 p)`` rows (a sub-sampled Newton method; the gradient stays exact, so
the optimum is the exact one), and a design with fewer than ``2**18`` entries is fitted
on one intra-op thread (its kernels are shorter than waking a second one).

Any other Pyro model is fitted by L-BFGS with a strong-Wolfe line search on its log
joint over the unconstrained latent sites (:class:`~posheads.inference._pyro_model.FlatModel`).

Both maximise the log joint of the *constrained* parameters (``jacobian=False``: the
MAP of the model as written, and the maximum-likelihood estimate under flat priors);
``jacobian=True`` maximises the density of the unconstrained vector instead, the centre
:func:`~posheads.inference.fit_laplace` uses.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from posheads.models._data import check_glm_data
from posheads.models._loss import GLMLoss
from posheads.models.glm import GLMData, SoftplusGLM
from posheads.posterior import Posterior

from ._newton import NewtonSolver
from ._pyro_model import FlatModel

__all__ = ["NewtonSolver", "fit_map"]


def fit_map(model, data, *, max_iter=100, tol=1e-8, init=None, verbose=0, seed=None,
            jacobian=False, check_input=True) -> Posterior:
    """Maximum a posteriori (or, under flat priors, maximum-likelihood) estimate.

    Parameters
    ----------
    model : SoftplusGLM or callable
        The GLM (fast Newton path) or any Pyro model.
    data : GLMData or dict
        The GLM's data, or the keyword arguments of a general Pyro model.
    max_iter : int
        Maximum Newton (or L-BFGS) iterations.
    tol : float
        Tolerance on ``max |gradient|`` of the negative log joint divided by the sum of
        the row weights (GLM) or by the number of observed values (general model).
    init : dict or Tensor, optional
        Start: constrained site values (e.g. ``posterior.extra["map"]``) or a flat
        unconstrained ``theta``. Default: the intercept-only fit (GLM), the prior
        median (general model).
    verbose : int
        Print progress when > 0.
    seed : int, optional
        Seeds the prior draws of a general model's starting point (the GLM fit is
        deterministic).
    jacobian : bool
        Maximise the density of the unconstrained parameters instead (see module docs).
    check_input : bool
        Validate a GLM's ``data`` (finite values, non-negative counts, positive exposure
        and weights). Pass ``False`` only for data validated already, as the estimators
        do; the vectors are still cast to ``X``'s dtype and device.

    Returns
    -------
    Posterior
        ``method="map"`` with one draw; ``extra`` holds ``"map"`` (constrained values),
        ``"theta"``, ``"log_joint"``, ``"n_iter"``, ``"converged"`` and ``"grad_max"``.

    Warns
    -----
    ConvergenceWarning
        When the tolerance is not met within ``max_iter`` iterations.

    Notes
    -----
    A small GLM fit sets ``torch.set_num_threads(1)`` for its duration and restores the
    previous value (a process-wide setting: it also applies to other Python threads
    running torch meanwhile).

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(200, 2, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1 + X @ torch.tensor([0.5, -0.5],
    ...     dtype=torch.float64)))
    >>> post = fit_map(SoftplusGLM(coef_scale=None), GLMData(X, y))
    >>> post.extra["converged"]
    True
    """
    if isinstance(model, SoftplusGLM):
        return _fit_glm(model, data, max_iter, tol, init, verbose, jacobian, check_input)
    return _fit_pyro(model, data, max_iter, tol, init, verbose, seed, jacobian)


def _fit_glm(model, data, max_iter, tol, init, verbose, jacobian, check_input=True):
    data = GLMData(**data) if isinstance(data, dict) else data
    X = getattr(data, "X", None)
    # the validation's reductions too: on a busy machine a two-thread sum of a small X
    # waits for a descheduled thread far longer than the sum takes
    matrix = isinstance(X, torch.Tensor) and X.dim() == 2  # else check_glm_data raises
    with _threads_for(X) if matrix else contextlib.nullcontext():
        data = check_glm_data(data, validate=check_input)
        loss = GLMLoss(model, data, jacobian=jacobian, validate=False, hessian_rows="auto")
        theta0 = _initial_theta(init, loss.init_theta(), lambda v: model.pack(v, loss.layout))
        solver = NewtonSolver(loss, tol=tol, max_iter=max_iter, verbose=verbose)
        # Where no derivative needs autograd, no autograd bookkeeping in the solver: a
        # tenth of a small fit's time. Its tensors stay local, and theta is cloned into
        # an ordinary tensor that autograd may use later. (Not for a sparse X: torch
        # cannot convert sparse layouts of inference tensors.)
        lean = loss.closed_form and not loss.X.sparse
        with torch.inference_mode() if lean else contextlib.nullcontext():
            theta = solver.solve(theta0)
        theta = theta.clone()
        values = model.unpack(theta, loss.layout)
        log_joint = float(loss.log_joint(theta, solver.P))
    extra = {"map": values, "theta": theta, "n_iter": solver.n_iter,
             "converged": solver.converged, "grad_max": solver.g_max,
             "log_joint": log_joint, "jacobian": jacobian}
    samples = {k: v[None, None] for k, v in values.items()}
    return Posterior(model, samples, method="map", data=data, extra=extra)


# Below this many entries of X a fit is a few hundred small kernels, each shorter than
# waking a second thread (and far shorter than waiting for one on a busy machine).
_SERIAL_ENTRIES = 2**18


@contextlib.contextmanager
def _threads_for(X):
    """Run small CPU fits on one intra-op thread; restore the setting afterwards."""
    threads = torch.get_num_threads()
    if X.device.type != "cpu" or threads == 1 or X.shape[0] * X.shape[1] >= _SERIAL_ENTRIES:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _initial_theta(init, default, pack):
    if init is None:
        return default
    if isinstance(init, dict):
        theta = pack({k: torch.as_tensor(v, dtype=default.dtype, device=default.device)
                      for k, v in init.items()})
    else:
        theta = torch.as_tensor(init, dtype=default.dtype, device=default.device)
    if theta.shape != default.shape:
        raise ValueError(f"init has {tuple(theta.shape)} unconstrained values, the model "
                         f"{tuple(default.shape)}")
    if not torch.isfinite(theta).all():
        raise ValueError("init contains non-finite values")
    return theta.detach().clone()


def _fit_pyro(model, kwargs, max_iter, tol, init, verbose, seed, jacobian):
    flat = FlatModel(model, kwargs, seed=seed)
    theta0 = _initial_theta(init, flat.theta0, lambda v: _pack_flat(flat, v))
    scale = 1.0 / max(flat.num_obs, 1)

    def objective(theta):
        return -flat.log_joint(theta, jacobian=jacobian) * scale

    theta, n_iter, g_max, converged = _lbfgs(objective, theta0, max_iter, tol, verbose)
    if not converged:
        warnings.warn(f"L-BFGS did not converge in {n_iter} iteration(s): max |gradient| = "
                      f"{g_max:.3g} > tol = {tol:.3g}. Increase max_iter.",
                      ConvergenceWarning, stacklevel=3)
    with torch.no_grad():
        values = {k: v.detach() for k, v in flat.unpack(theta).items()}
        log_joint = float(flat.log_joint(theta, jacobian=False))
    extra = {"map": values, "theta": theta.detach(), "n_iter": n_iter, "converged": converged,
             "grad_max": g_max, "log_joint": log_joint, "jacobian": jacobian,
             "flat_model": flat}
    samples = {k: v[None, None] for k, v in values.items()}
    return Posterior(model, samples, method="map", data=kwargs, extra=extra)


def _pack_flat(flat, values):
    return torch.cat([t.inv(values[name]).reshape(-1) for name, _, t in flat.sites])


def _grad(objective, theta):
    theta = theta.detach().requires_grad_()
    return torch.autograd.grad(objective(theta), theta)[0]


def _lbfgs(objective, theta0, max_iter, tol, verbose):
    """L-BFGS (strong Wolfe), restarted while it makes progress, up to ``max_iter`` steps.

    Returns ``(theta, n_iter, max |gradient|, converged)``. Converged means the gradient
    tolerance is met, or that the objective stopped decreasing in floating point with a
    gradient below ``sqrt(eps) * max(1, |f|)`` -- as small as round-off lets it get.
    """
    theta = theta0.detach().clone().requires_grad_()
    eps = torch.finfo(theta.dtype).eps
    n_iter, f_prev, g_max, converged = 0, math.inf, math.inf, False

    def closure():
        opt.zero_grad()
        f = objective(theta)
        if not math.isfinite(float(f.detach())):
            raise ValueError("the log joint is not finite at the current point")
        f.backward()
        return f

    while n_iter < max_iter:
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter - n_iter, history_size=20,
                                tolerance_grad=tol, tolerance_change=eps,
                                line_search_fn="strong_wolfe")
        opt.step(closure)
        n_iter += max(int(opt.state[opt._params[0]].get("n_iter", 1)), 1)
        f = float(objective(theta).detach())
        g_max = float(_grad(objective, theta).abs().max())
        if verbose:
            print(f"L-BFGS: {n_iter} iterations, f = {f:.12g}, max|grad| = {g_max:.3g}")
        if g_max <= tol:
            converged = True
            break
        if f >= f_prev - eps * abs(f):  # no progress since the last restart
            converged = g_max <= math.sqrt(eps) * max(1.0, abs(f))
            break
        f_prev = f
    return theta.detach(), n_iter, g_max, converged
