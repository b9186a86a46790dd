"""A posterior as a potential on one flat vector, a Laplace fit of it, and whitening.

The sampling engines work on ``theta``, one flat unconstrained vector of shape ``(d,)``,
through a :class:`FlatTarget`:

* :func:`glm_target` wraps a :class:`~posheads.models.glm.SoftplusGLM` (its fused
  ``potential_and_grad``, gradient in closed form, no Pyro trace on the hot path);
* :func:`pyro_target` wraps any Pyro model through
  :func:`pyro.infer.mcmc.util.initialize_model` (Pyro's own potential, autograd gradient).

:class:`Whitening` is the affine map ``theta = loc + L z`` with ``L L^T`` a Laplace
covariance; NUTS on ``z`` sees a posterior close to a standard normal (see MATH.md,
"Laplace and NUTS"). :func:`whitened_potential` turns target and whitening into the
``potential_fn`` Pyro's HMC/NUTS expect, as one custom autograd node that hands Pyro the
precomputed gradient instead of recording a graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "FlatTarget",
    "Whitening",
    "glm_target",
    "is_glm",
    "laplace_flat",
    "pyro_target",
    "whitened_potential",
]


@dataclass
class FlatTarget:
    """A posterior density on one flat unconstrained vector ``theta`` of shape ``(d,)``.

    Attributes
    ----------
    potential_and_grad : callable
        ``theta (d,) -> (U, dU/dtheta)``: the negative log joint (scalar) and its
        gradient ``(d,)``, both detached.
    unpack : callable
        ``theta (..., d) -> dict`` of constrained site values with leading shape ``...``.
    init : Tensor, shape ``(d,)``
        A finite starting point.
    potential : callable, optional
        ``theta -> U`` differentiable by autograd (twice), for Hessians.
    """

    potential_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    unpack: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    init: torch.Tensor
    potential: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        return self.init.shape[-1]


def is_glm(model) -> bool:
    """Whether ``model`` offers the SoftplusGLM fast path (flat layout and fused potential)."""
    return all(hasattr(model, a) for a in ("layout", "unpack", "potential_and_grad", "log_joint"))


def glm_target(model, data) -> FlatTarget:
    """The posterior of a SoftplusGLM given ``data`` (a ``GLMData``) as a :class:`FlatTarget`."""
    layout = model.layout(data.X, getattr(data, "X_zero", None))
    d = sum(shape.numel() for _, shape in layout)
    return FlatTarget(
        potential_and_grad=lambda theta: model.potential_and_grad(theta, data),
        unpack=lambda theta: model.unpack(theta, layout),
        init=data.X.new_zeros(d),
        potential=lambda theta: -model.log_joint(theta, data),
    )


def pyro_target(model, model_kwargs: dict, init_strategy=None) -> FlatTarget:
    """Any Pyro model's posterior, conditioned through ``model_kwargs``, as a :class:`FlatTarget`.

    Latent sites are mapped to the real line by ``biject_to(site.support)`` (softplus
    for ``softplus_positive`` sites), packed in sorted name order. Discrete latent sites
    are enumerated out by Pyro's potential.
    """
    from pyro.infer.autoguide.initialization import init_to_median
    from pyro.infer.mcmc.util import initialize_model

    init_params, potential_fn, transforms, _ = initialize_model(
        model, model_kwargs=model_kwargs, init_strategy=init_strategy or init_to_median
    )
    names = sorted(init_params)
    shapes = [init_params[n].shape for n in names]
    sizes = [s.numel() for s in shapes]

    def split(theta):
        parts = torch.split(theta, sizes, dim=-1)
        lead = theta.shape[:-1]
        return {n: p.reshape(lead + s) for n, p, s in zip(names, parts, shapes, strict=True)}

    def potential(theta):
        return potential_fn(split(theta))

    def potential_and_grad(theta):
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            u = potential(th)
            (g,) = torch.autograd.grad(u, th)
        return u.detach(), g

    def unpack(theta):
        values = split(theta)
        return {n: transforms[n].inv(v) if n in transforms else v for n, v in values.items()}

    init = torch.cat([init_params[n].detach().reshape(-1) for n in names])
    return FlatTarget(potential_and_grad, unpack, init, potential)


def laplace_flat(target: FlatTarget, theta0: torch.Tensor | None = None, *, max_iter: int = 500):
    """MAP by L-BFGS on the flat potential and the covariance from the autograd Hessian.

    Parameters
    ----------
    target : FlatTarget
        Needs ``potential`` for the Hessian.
    theta0 : Tensor, shape ``(d,)``, optional
        Start (default ``target.init``).
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    theta_hat : Tensor, shape ``(d,)``
    cov : Tensor, shape ``(d, d)``
        ``H^{-1}``; where the Hessian is not positive definite, the inverse of its
        absolute diagonal instead (with a ``RuntimeWarning``).
    """
    theta = (target.init if theta0 is None else theta0).detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
        tolerance_grad=1e-9, tolerance_change=1e-12,
    )

    def closure():
        u, g = target.potential_and_grad(theta.detach())
        theta.grad = g
        return u

    opt.step(closure)
    theta_hat = theta.detach()
    u, _ = target.potential_and_grad(theta_hat)
    if not torch.isfinite(u):
        raise ValueError("the MAP search reached a non-finite log density; check the model")
    hessian = torch.autograd.functional.hessian(target.potential, theta_hat)
    return theta_hat, covariance_from_hessian(hessian)


def covariance_from_hessian(hessian: torch.Tensor) -> torch.Tensor:
    """``H^{-1}`` by Cholesky, falling back to ``diag(1 / |H_ii|)`` when ``H`` is not PD."""
    h = 0.5 * (hessian + hessian.T)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0 and torch.isfinite(chol).all():
        return torch.cholesky_inverse(chol)
    warnings.warn(
        "the Hessian at the MAP is not positive definite; NUTS starts from a diagonal "
        "metric and adapts it", RuntimeWarning, stacklevel=3,
    )
    diag = h.diagonal().abs()
    # A zero curvature (a flat direction) gets unit scale rather than an infinite one.
    diag = torch.where(diag > 0, diag, torch.ones_like(diag))
    return torch.diag(1.0 / diag)


class Whitening:
    """The affine map ``theta = loc + L z`` (``L`` lower triangular) or ``loc + s * z``.

    Parameters
    ----------
    loc : Tensor, shape ``(d,)``
    cov : Tensor, shape ``(d, d)``, optional
        Covariance whose Cholesky factor is ``L``; ``None`` gives the identity.
    dense : bool
        ``False`` keeps only the diagonal, ``s = sqrt(diag(cov))``.
    """

    def __init__(self, loc: torch.Tensor, cov: torch.Tensor | None = None, dense: bool = True):
        self.loc = loc
        self.log_det = 0.0
        if cov is None:
            self.scale = None
        elif dense:
            self.scale = torch.linalg.cholesky(0.5 * (cov + cov.T))
        else:
            self.scale = cov.diagonal().sqrt()
        if self.scale is not None:
            diag = self.scale if self.scale.dim() == 1 else self.scale.diagonal()
            self.log_det = float(diag.log().sum())

    def to_theta(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., d) -> (..., d)``."""
        if self.scale is None:
            return self.loc + z
        if self.scale.dim() == 1:
            return self.loc + z * self.scale
        return self.loc + z @ self.scale.T

    def to_z(self, theta: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_theta`, ``(..., d) -> (..., d)``."""
        diff = theta - self.loc
        if self.scale is None:
            return diff
        if self.scale.dim() == 1:
            return diff / self.scale
        return torch.linalg.solve_triangular(self.scale, diff.unsqueeze(-1), upper=False)[..., 0]

    def grad_to_z(self, grad: torch.Tensor) -> torch.Tensor:
        """Chain rule: ``dU/dz = L^T dU/dtheta``, ``(d,) -> (d,)``."""
        if self.scale is None:
            return grad
        if self.scale.dim() == 1:
            return grad * self.scale
        return self.scale.T @ grad


class _FusedPotential(torch.autograd.Function):
    """``U(z)`` as one autograd node: the gradient is computed in the forward pass."""

    @staticmethod
    def forward(ctx, z, evaluate):
        u, g = evaluate(z)
        ctx.save_for_backward(g)
        return u

    @staticmethod
    def backward(ctx, grad_u):
        (g,) = ctx.saved_tensors
        return grad_u * g, None


class whitened_potential:
    """Pyro ``potential_fn`` on ``{"z": z}`` for a target seen through a whitening.

    ``U(z) = -log p(loc + L z)``: the Jacobian ``log|L|`` is a constant and left out,
    so ``-U`` is the log joint of ``theta`` itself. ``calls`` counts evaluations (NUTS
    uses one per leapfrog step).
    """

    def __init__(self, target: FlatTarget, whitening: Whitening):
        self.target, self.whitening = target, whitening
        self.calls = 0

    def _evaluate(self, z):
        self.calls += 1
        u, g = self.target.potential_and_grad(self.whitening.to_theta(z.detach()))
        # Pyro turns a non-finite energy into a divergence; keep the gradient finite
        # there (a where, not an if, so no device synchronisation).
        g = torch.where(torch.isfinite(u), self.whitening.grad_to_z(g), torch.zeros_like(z))
        return u, g

    def __call__(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return _FusedPotential.apply(params["z"], self._evaluate)
