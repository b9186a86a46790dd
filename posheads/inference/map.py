"""MAP and maximum-likelihood fits: :class:`MAP`, :func:`fit_map`, and :func:`find_mode`,
the mode search every engine shares.

:func:`find_mode` works on a :class:`~posheads.models.target.Target`, the posterior on one
flat unconstrained vector ``theta``. Where the target offers a loss with Newton's
structure (:meth:`~posheads.models.target.Target.newton_loss`, as a
:class:`~posheads.models.glm.SoftplusGLM`'s closed-form
:class:`~posheads.models.glm_loss.GLMLoss` does), the mode is found by Newton's method
with the exact Hessian and an Armijo line search
(:class:`~posheads.inference.newton.NewtonSolver`), jointly in all parameters -- a GLM's
shapes included, which converges quadratically where alternating coefficient steps with
a 1-D search in a shape converge only linearly. Otherwise L-BFGS with a strong-Wolfe line
search runs on the log joint by autograd. Both minimise the negative log joint divided
by :attr:`~posheads.models.target.Target.num_obs`, so ``tol`` is scale-free.

Both maximise the log joint of the *constrained* parameters (``jacobian=False``: the MAP
of the model as written, the maximum-likelihood estimate under flat priors);
``jacobian=True`` maximises the density of the unconstrained vector instead, the centre
the Laplace approximation, the NUTS metric and the SVI guide's start use (see
``docs/inference.md``, "MAP versus the mode of the unconstrained density").
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import torch
from sklearn.exceptions import ConvergenceWarning

from posheads.models.protocol import as_model
from posheads.posterior import Posterior

from .checks import user_stacklevel
from .common import check_int, check_real, intra_op_threads
from .newton import NewtonSolver

__all__ = [
    "MAP",
    "Mode",
    "NewtonSolver",
    "find_mode",
    "fit_map",
    "initial_theta",
    "lbfgs",
    "map_posterior",
    "newton_mode",
]


@dataclass(frozen=True)
class MAP:
    """Configuration of the MAP / maximum-likelihood engine.

    Parameters
    ----------
    max_iter : int
        Maximum Newton (or L-BFGS) iterations.
    tol : float
        Tolerance on ``max |gradient|`` of the negative log joint divided by the sum of
        the row weights (a GLM) or the number of observed values (a general model).

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(200, 2, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1 + X @ torch.tensor([0.5, -0.5],
    ...     dtype=torch.float64)))
    >>> post = MAP(tol=1e-10).fit(SoftplusGLM(coef_scale=None), GLMData(X, y))
    >>> post.extra["converged"]
    True
    """

    max_iter: int = 100
    tol: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "max_iter", check_int("max_iter", self.max_iter, 1))
        object.__setattr__(self, "tol", check_real("tol", self.tol, 0.0))

    def fit(self, model, data, *, seed=None, verbose=0, init=None, jacobian=False,
            check_input=True) -> Posterior:
        """The mode of ``model``'s posterior given ``data``; see :func:`fit_map`."""
        target, mode = self.target_and_mode(model, data, seed=seed, verbose=verbose,
                                            init=init, jacobian=jacobian,
                                            check_input=check_input)
        return map_posterior(model, target.data, mode)

    def target_and_mode(self, model, data, *, seed=None, verbose=0, init=None,
                        jacobian=False, check_input=True):
        """``model``'s :class:`~posheads.models.target.Target` given ``data`` and its
        :class:`Mode` under this configuration (the first step of MAP and Laplace)."""
        target = as_model(model).target(data, validate=check_input, seed=seed)
        mode = find_mode(target, jacobian=jacobian, init=init, max_iter=self.max_iter,
                         tol=self.tol, verbose=verbose)
        return target, mode


def fit_map(model, data, *, max_iter=100, tol=1e-8, init=None, verbose=0, seed=None,
            jacobian=False, check_input=True) -> Posterior:
    """Maximum a posteriori (or, under flat priors, maximum-likelihood) estimate.

    Parameters
    ----------
    model : PosteriorModel or callable
        A :class:`~posheads.models.glm.SoftplusGLM` (Newton with closed-form derivatives)
        or any Pyro model (L-BFGS by autograd).
    data : GLMData or dict
        The GLM's data, or the keyword arguments of a general Pyro model.
    max_iter, tol
        See :class:`MAP`.
    init : dict or Tensor, optional
        Start: constrained site values (e.g. ``posterior.extra["map"]``) or a flat
        unconstrained ``theta``. Default: the target's own start (the intercept-only fit
        of a GLM, the prior median of a general model).
    verbose : int
        Print progress when > 0.
    seed : int, optional
        Seeds the prior draws of a general model's starting point (a GLM's fit is
        deterministic).
    jacobian : bool
        Maximise the density of the unconstrained parameters instead (see module docs).
    check_input : bool
        Validate the data (for a GLM: finite values, non-negative counts, positive
        exposure and weights). Pass ``False`` only for data validated already, as the
        estimators do; the vectors are still cast to ``X``'s dtype and device.

    Returns
    -------
    Posterior
        ``method="map"`` with one draw; ``extra`` holds ``"map"`` (constrained values),
        ``"theta"``, ``"log_joint"`` (of the objective maximised: with the log-Jacobian
        when ``jacobian``), ``"n_iter"``, ``"converged"``, ``"grad_max"`` and
        ``"jacobian"``.

    Warns
    -----
    ConvergenceWarning
        When the tolerance is not met within ``max_iter`` iterations.

    Notes
    -----
    A fit whose target reads fewer than ``2**18`` numbers per pass runs on one intra-op
    thread (:func:`~posheads.inference.common.intra_op_threads`), a process-wide setting
    restored afterwards.
    """
    return _config(max_iter, tol).fit(model, data, seed=seed, verbose=verbose, init=init,
                                      jacobian=jacobian, check_input=check_input)


def _config(max_iter, tol) -> MAP:
    """``MAP(max_iter, tol)``, validated once per distinct pair: a small GLM's fit is
    short enough for a validation on every call to count."""
    try:
        return _cached_config(max_iter, tol)
    except TypeError:  # unhashable: validation names the parameter
        return MAP(max_iter=max_iter, tol=tol)


@functools.lru_cache(maxsize=64, typed=True)  # typed: 1 and True are different keys
def _cached_config(max_iter, tol) -> MAP:
    return MAP(max_iter=max_iter, tol=tol)


@dataclass
class Mode:
    """The outcome of a mode search.

    Attributes
    ----------
    theta : Tensor, shape ``(d,)``
        The mode, unconstrained (an ordinary tensor, never an inference tensor).
    values : dict of str to Tensor
        The mode's constrained site values.
    n_iter : int
    converged : bool
    grad_max : float
        ``max |gradient|`` of the objective at ``theta``.
    log_joint : float
        The log joint maximised (with the log-Jacobian when ``jacobian``).
    jacobian : bool
    """

    theta: torch.Tensor
    values: dict
    n_iter: int
    converged: bool
    grad_max: float
    log_joint: float
    jacobian: bool

    def extra(self) -> dict:
        """The entries a MAP posterior's ``extra`` holds."""
        return {"map": self.values, "theta": self.theta, "n_iter": self.n_iter,
                "converged": self.converged, "grad_max": self.grad_max,
                "log_joint": self.log_joint, "jacobian": self.jacobian}


def map_posterior(model, data, mode: Mode) -> Posterior:
    """A one-draw ``method="map"`` :class:`Posterior` at ``mode``."""
    samples = {k: v[None, None] for k, v in mode.values.items()}
    return Posterior(model, samples, method="map", data=data, extra=mode.extra())


def find_mode(target, *, jacobian=False, init=None, max_iter=100, tol=1e-8,
              verbose=0) -> Mode:
    """The mode of ``target``: Newton where it has a Newton loss, L-BFGS otherwise.

    Parameters
    ----------
    target : Target
    jacobian : bool
        Maximise the density of ``theta`` itself (see the module docstring).
    init : dict or Tensor, optional
        See :func:`fit_map`.
    max_iter, tol, verbose
        See :func:`fit_map`.

    Returns
    -------
    Mode
    """
    with intra_op_threads(target.work_size):
        loss = target.newton_loss(jacobian)
        # after newton_loss: a target may start from the loss it just built
        theta0 = initial_theta(init, target.init(), target.pack)
        if loss is not None:
            theta, solver = newton_mode(loss, theta0, max_iter=max_iter, tol=tol,
                                        verbose=verbose)
            values = target.unpack(theta)
            log_joint = float(loss.log_joint(theta, solver.P))
            return Mode(theta, values, solver.n_iter, solver.converged, solver.g_max,
                        log_joint, jacobian)
        scale = 1.0 / max(float(target.num_obs), 1.0)

        def objective(theta):
            return -target.log_joint(theta, jacobian=jacobian) * scale

        theta, n_iter, g_max, converged = lbfgs(objective, theta0, max_iter, tol, verbose)
        with torch.no_grad():
            values = {k: v.detach() for k, v in target.unpack(theta).items()}
            log_joint = float(target.log_joint(theta, jacobian=jacobian))
    return Mode(theta, values, n_iter, converged, g_max, log_joint, jacobian)


def newton_mode(loss, theta0, *, max_iter, tol, verbose):
    """Run :class:`NewtonSolver` on ``loss`` from ``theta0``.

    Where the loss says it is safe (``loss.inference_mode_safe``: no derivative needs
    autograd, no sparse design) the solver runs in ``torch.inference_mode()``: no autograd
    bookkeeping, a visible share of a small fit's time. Its tensors stay local, and
    ``theta`` is cloned into an ordinary tensor that autograd may use later.

    Returns
    -------
    (Tensor, NewtonSolver)
        The final ``theta`` (an ordinary tensor) and the solver, whose ``P``, ``n_iter``,
        ``converged`` and ``g_max`` describe the run.
    """
    solver = NewtonSolver(loss, tol=tol, max_iter=max_iter, verbose=verbose)
    lean = getattr(loss, "inference_mode_safe", False)
    with torch.inference_mode() if lean else contextlib.nullcontext():
        theta = solver.solve(theta0)
    return theta.clone(), solver


def initial_theta(init, default: torch.Tensor, pack) -> torch.Tensor:
    """The start of a mode search: ``default``, or ``init`` (constrained values packed by
    ``pack``, or a flat ``theta``) checked against it.

    Raises
    ------
    ValueError
        When ``init`` has the wrong number of values or non-finite ones.
    """
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


def _gradient(objective, theta):
    theta = theta.detach().requires_grad_()
    return torch.autograd.grad(objective(theta), theta)[0]


def lbfgs(objective, theta0, max_iter, tol, verbose):
    """L-BFGS (strong Wolfe), restarted while it makes progress, up to ``max_iter`` steps.

    Parameters
    ----------
    objective : callable
        ``theta (d,) -> scalar``, differentiable by autograd.
    theta0 : Tensor, shape ``(d,)``
    max_iter : int
    tol : float
        On ``max |gradient|``.
    verbose : int

    Returns
    -------
    (Tensor, int, float, bool)
        ``theta``, iterations, ``max |gradient|``, converged. Converged means the
        gradient tolerance is met, or that the objective stopped decreasing in floating
        point with a gradient below ``sqrt(eps) * max(1, |f|)`` -- as small as round-off
        lets it get.

    Warns
    -----
    ConvergenceWarning
        When not converged.
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
        n_iter += max(int(opt.state[theta].get("n_iter", 1)), 1)
        f = float(objective(theta).detach())
        g_max = float(_gradient(objective, theta).abs().max())
        if verbose:
            print(f"L-BFGS: {n_iter} iterations, f = {f:.12g}, max|grad| = {g_max:.3g}")
        if g_max <= tol:
            converged = True
            break
        if f >= f_prev - eps * abs(f):  # no progress since the last restart
            converged = g_max <= math.sqrt(eps) * max(1.0, abs(f))
            break
        f_prev = f
    if not converged:
        warnings.warn(f"L-BFGS did not converge in {n_iter} iteration(s): max |gradient| = "
                      f"{g_max:.3g} > tol = {tol:.3g}. Increase max_iter.",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    return theta.detach(), n_iter, g_max, converged
