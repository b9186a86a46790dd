"""The GLMM posterior in the coordinates NUTS samples: :class:`OrthogonalFixedTarget`."""

from __future__ import annotations

import math

import torch

from posheads.models.mixed import MixedData

from .mixed_structure import orthogonal_design
from .mixed_target import GLMMTarget

__all__ = ["OrthogonalFixedTarget"]


class OrthogonalFixedTarget(GLMMTarget):
    """:class:`GLMMTarget` in the coordinates NUTS samples: the fixed effects in an
    orthogonal basis and, optionally, one intercept factor centred on the intercept.

    * With the thin QR factorisation ``X = Q R`` (intercept first) and ``T = R / sqrt(n)``,
      the sampler's ``coef`` block is ``c = T b`` (``X b = sqrt(n) Q c``). Uncentred or
      collinear covariates (an intercept beside ``log(age)``) make the posterior of ``b``
      a long narrow ridge that a diagonal metric cannot follow; in ``c`` the fixed block's
      curvature is close to a multiple of the identity. The map is linear, its Jacobian
      constant: the potential is ``U(b(c))``, its gradient ``T^{-T} dU/db``.
    * ``centre=k`` (a ``(1|k)`` factor): its block holds the group levels
      ``m_g = (A c)_g + sd_k z_g`` instead of ``z_g``, where ``A c`` (``A = W T^{-1}``,
      shape ``(G, p)``) is the part of ``X b`` carried by the columns constant within each
      group (the intercept, group-level covariates; ``W`` their values per group). Where
      each group's rows pin down its level (several rows, large counts), ``z_g`` and
      those coefficients are tightly coupled given the data and NUTS needs long
      trajectories; ``m_g`` is nearly independent of them (hierarchical centring). The
      Jacobian ``|dz/dm| = sd^{-G}`` adds ``G log sd`` to the potential.

    Priors stay on the original sites, and :meth:`unpack` (hence every draw) gives them
    on the original scale. A rank-deficient design (or ``n <= p``) keeps ``b``, and
    no factor is centred.

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets ``y``.
    centre : str, optional
        The name of a random-intercept-only factor to centre.
    """

    def __init__(self, model, data: MixedData, centre: str | None = None):
        super().__init__(model, data)
        n, p = data.X.shape
        #: ``T`` (shape ``(p, p)``) and its inverse, or None where ``b`` is kept
        self.basis = None
        orthogonal = orthogonal_design(data.X)
        if orthogonal is not None:
            T = orthogonal[1]
            self.basis = (T, torch.linalg.solve_triangular(
                T, torch.eye(p, dtype=T.dtype, device=T.device), upper=True))
        self._p = p
        self.centre = None
        if centre is not None:
            effect = {e.name: e for e in data.effects}.get(centre)
            if effect is None or effect.q != 1 or effect.part is not None or \
                    not bool((effect.Z == 1).all()):
                raise ValueError(f"centre={centre!r} is not a random-intercept factor of "
                                 "the count part")
            if self.basis is not None:
                # the columns of X constant within every group (the intercept, group-level
                # covariates): their part of eta is each group's level, A c
                codes = effect.codes
                first = torch.full((effect.n_groups,), n, dtype=torch.long,
                                   device=codes.device).scatter_reduce(
                    0, codes, torch.arange(n, device=codes.device), reduce="amin"
                ).clamp_(max=n - 1)  # a level without rows: any row (A is only a basis)
                W = data.X.index_select(0, first)  # (G, p): each group's first row
                within = (data.X == W.index_select(0, effect.codes)).all(0)
                A = W * within @ self.basis[1]
                sl = self._potential.slices
                self.centre = (sl[f"{centre}_sd"].start, sl[f"{centre}_z"], A)

    def to_original(self, theta: torch.Tensor) -> torch.Tensor:
        """``(c, ..., m) -> (b, ..., z)`` over the last dimension, shape kept."""
        if self.basis is None:
            return theta
        out = torch.cat([theta[..., :self._p] @ self.basis[1].to(theta).T,
                         theta[..., self._p:]], dim=-1)
        if self.centre is not None:
            i, block, A = self.centre
            level = theta[..., :self._p] @ A.to(theta).T
            out[..., block] = (theta[..., block] - level) * (-theta[..., i:i + 1]).exp()
        return out

    def from_original(self, theta: torch.Tensor) -> torch.Tensor:
        """``(b, ..., z) -> (c, ..., m)``: the inverse of :meth:`to_original`."""
        if self.basis is None:
            return theta
        out = torch.cat([theta[..., :self._p] @ self.basis[0].to(theta).T,
                         theta[..., self._p:]], dim=-1)
        if self.centre is not None:
            i, block, A = self.centre
            level = out[..., :self._p] @ A.to(theta).T
            out[..., block] = level + theta[..., block] * theta[..., i:i + 1].exp()
        return out

    def _log_jacobian(self, theta):
        """``log |d original / d theta|`` less its constant part: ``-G log sd``."""
        if self.centre is None:
            return theta.new_zeros(())
        i, block, _ = self.centre
        return -(block.stop - block.start) * theta[..., i]

    def _split(self, theta):
        return super()._split(self.to_original(theta))

    def pack(self, values):
        return self.from_original(super().pack(values))

    def log_joint(self, theta, jacobian=True):
        out = super().log_joint(theta, jacobian)
        return out + self._log_jacobian(theta) if jacobian else out

    def potential_and_grad(self, theta):
        """``U(original(theta)) - log|J|`` and its gradient by the chain rule."""
        theta = theta.detach()
        original = self.to_original(theta)
        U, g = self._potential(original)
        if self.basis is None:
            return U, g
        grad = g.clone()
        grad[:self._p] = self.basis[1].T.to(g) @ g[:self._p]
        if self.centre is not None:
            i, block, A = self.centre
            inv_sd = math.exp(-float(theta[i]))
            gz = g[block]
            grad[block] = gz * inv_sd
            grad[:self._p] -= inv_sd * (A.T.to(gz) @ gz)
            G = block.stop - block.start
            grad[i] -= torch.dot(gz, original[block]) - G
            U = U + G * theta[i]
        return U, grad
