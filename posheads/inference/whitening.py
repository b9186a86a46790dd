"""The Laplace metric of NUTS: :class:`Whitening` and :func:`whitened_potential`.

:class:`Whitening` is the affine map ``theta = loc + L z`` with ``L L^T`` a Laplace
covariance; NUTS on ``z`` sees a posterior close to a standard normal (see
``docs/inference.md``, "NUTS in the Laplace metric"). :func:`whitened_potential` turns a
:class:`~posheads.models.target.Target` and a whitening into the ``potential_fn`` Pyro's
HMC/NUTS expect, as one custom autograd node that hands Pyro the target's gradient
instead of recording a graph. :func:`covariance_from_hessian` makes the covariance, with a
diagonal fallback where the Hessian is not positive definite.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["Whitening", "covariance_from_hessian", "whitened_potential"]


def covariance_from_hessian(hessian: torch.Tensor) -> torch.Tensor:
    """``H^{-1}`` by Cholesky, falling back to ``diag(1 / |H_ii|)`` when ``H`` is not PD.

    Parameters
    ----------
    hessian : Tensor, shape ``(d, d)``

    Returns
    -------
    Tensor, shape ``(d, d)``

    Warns
    -----
    RuntimeWarning
        When falling back: NUTS then starts from a diagonal metric.
    """
    h = 0.5 * (hessian + hessian.T)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0 and torch.isfinite(chol).all():
        return torch.cholesky_inverse(chol)
    warnings.warn(
        "the Hessian at the mode is not positive definite; NUTS starts from a diagonal "
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

    Examples
    --------
    >>> w = Whitening(torch.zeros(2), 4.0 * torch.eye(2))
    >>> w.to_theta(torch.ones(2))
    tensor([2., 2.])
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

    Parameters
    ----------
    target : Target
        Its ``potential_and_grad`` is evaluated once per call.
    whitening : Whitening
    """

    def __init__(self, target, whitening: Whitening):
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
