"""The Laplace and adaptive Gauss-Hermite marginal likelihoods of a softplus GLMM.

For fixed parameters ``theta`` the group effects are integrated out of

    p(y | theta) = int prod_i p(y_i | eta_i(theta, z)) N(z; 0, I) dz,

with the non-centred effects ``z`` (``u_k = z_k @ Lambda_k.T``, see
:mod:`posheads.models.mixed`). Writing ``f(z) = sum_i l_i - ||z||^2 / 2``, its mode
``z_hat`` and ``H = -d2f/dz2 = I + Lambda' Z' W Z Lambda`` (``W`` the rows' negated second
derivatives in ``eta``), the Laplace approximation is

    log p(y | theta) ~ f(z_hat) - log det(H) / 2.

:class:`EffectsStructure` holds how ``z`` reaches the rows. With one grouping factor
``H`` is block-diagonal, one ``q x q`` block per level: it is assembled by ``index_add``
and factorised by batched Cholesky (``O(n q^2 + G q^3)`` time, ``O(G q^2)`` memory).
With several (crossed or nested) factors the blocks couple; ``H`` is then formed densely
over all ``R = sum_k G_k q_k`` effects (``O(R^2)`` memory, at most ``dense_limit``
effects) -- a sparse Cholesky is not done.

:func:`inner_mode` finds ``z_hat`` by damped Newton steps without autograd history.
:func:`marginal_log_lik` is differentiable in ``theta``: from the detached mode it takes
one Newton step with the graph attached, ``z1 = z_hat + H^{-1} g(theta, z_hat)``, whose
derivative is the implicit-function-theorem derivative ``dz_hat/dtheta`` (``g = 0`` at
the mode), and evaluates the objective at ``z1`` -- so the gradient includes the
derivative of the log-determinant through the mode. With ``n_quadrature > 1`` and a
single random intercept it integrates each group's effect by adaptive Gauss-Hermite
quadrature centred at ``z_hat`` and scaled by ``H^{-1/2}`` (lme4's ``nAGQ``); one node is
the Laplace approximation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["EffectsStructure", "inner_mode", "marginal_log_lik", "row_derivatives"]


class EffectsStructure:
    """How the flat effects ``z`` (shape ``(R,)``) reach the rows, and ``H``'s structure.

    Parameters
    ----------
    effects : tuple of RandomEffect
    dense_limit : int
        Largest ``R`` for which several factors' joint ``H`` is formed densely.
    """

    def __init__(self, effects, dense_limit: int = 6000):
        if not effects:
            raise ValueError("a mixed model needs at least one grouping factor")
        self.effects = tuple(effects)
        sizes = [e.n_groups * e.q for e in self.effects]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.R = int(self.offsets[-1])
        self.blocked = len(self.effects) == 1
        if not self.blocked and self.R > dense_limit:
            raise ValueError(
                f"several grouping factors with {self.R} effects in all: the joint Hessian "
                f"is formed densely, at most dense_limit={dense_limit} effects")
        if not self.blocked:
            # each row's positions in the flat z, one (n, q_k) index per factor
            self.index = [self.offsets[k] + e.codes.unsqueeze(1) * e.q
                          + torch.arange(e.q, device=e.codes.device)
                          for k, e in enumerate(self.effects)]

    def split(self, z: torch.Tensor) -> list:
        """The flat ``z`` as one ``(G_k, q_k)`` tensor per factor."""
        return [z[self.offsets[k]:self.offsets[k + 1]].reshape(e.n_groups, e.q)
                for k, e in enumerate(self.effects)]

    def rows(self, lams: list) -> list:
        """``A_k = Z_k @ Lambda_k`` per factor, shapes ``(n, q_k)``."""
        return [e.Z @ lam for e, lam in zip(self.effects, lams, strict=True)]

    def eta(self, A: list, z: torch.Tensor) -> torch.Tensor:
        """The effects' part of the linear predictor, shape ``(n,)``."""
        return sum((a * zk[e.codes]).sum(-1)
                   for a, e, zk in zip(A, self.effects, self.split(z), strict=True))

    def gradient(self, A: list, d1: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``df/dz = A' d1 - z``, shape ``(R,)``."""
        parts = [torch.zeros(e.n_groups, e.q, dtype=z.dtype, device=z.device)
                 .index_add(0, e.codes, d1.unsqueeze(1) * a)
                 for a, e in zip(A, self.effects, strict=True)]
        return torch.cat([p.reshape(-1) for p in parts]) - z

    def hessian(self, A: list, w: torch.Tensor) -> torch.Tensor:
        """``H = I + A' diag(w) A``: ``(G, q, q)`` blocks for one factor, else ``(R, R)``."""
        if self.blocked:
            (a,), (e,) = A, self.effects
            outer = (w.view(-1, 1, 1) * a.unsqueeze(2)) * a.unsqueeze(1)
            H = torch.zeros(e.n_groups, e.q, e.q, dtype=a.dtype, device=a.device)
            H = H.index_add(0, e.codes, outer)
            return H + torch.eye(e.q, dtype=a.dtype, device=a.device)
        H = torch.eye(self.R, dtype=w.dtype, device=w.device)
        for ak, ik in zip(A, self.index, strict=True):
            for al, il in zip(A, self.index, strict=True):
                vals = (w.view(-1, 1, 1) * ak.unsqueeze(2)) * al.unsqueeze(1)
                rows = ik.unsqueeze(2).expand_as(vals)
                cols = il.unsqueeze(1).expand_as(vals)
                H = H.index_put((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1),
                                accumulate=True)
        return H

    def cholesky(self, H: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of ``H`` (blocks or dense); raises if ``H`` is not definite."""
        L, info = torch.linalg.cholesky_ex(H)
        if bool((info != 0).any()):
            raise FloatingPointError("the Hessian of the random effects is not definite")
        return L

    def solve(self, H: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``H^{-1} g``, shape ``(R,)``."""
        L = self.cholesky(H)
        if self.blocked:
            return torch.cholesky_solve(g.view(L.shape[0], -1, 1), L).reshape(-1)
        return torch.cholesky_solve(g.unsqueeze(1), L).squeeze(1)

    def logdet(self, H: torch.Tensor) -> torch.Tensor:
        """``log det H`` (0-d)."""
        return 2.0 * self.cholesky(H).diagonal(dim1=-2, dim2=-1).log().sum()


def row_derivatives(model, eta, params, data, *, graph: bool = False):
    """Each row's ``l``, ``dl/deta`` and ``d2l/deta2`` by autograd, shapes ``(n,)``.

    With ``graph=True`` the derivatives keep their history (differentiable in
    ``theta``); otherwise ``eta`` is detached first.
    """
    with torch.enable_grad():
        if not (graph and eta.requires_grad):
            graph = False
            eta = eta.detach().requires_grad_(True)
        ell = model.row_log_lik(eta, params, data)
        d1, = torch.autograd.grad(ell.sum(), eta, create_graph=True)
        d2, = torch.autograd.grad(d1.sum(), eta, create_graph=graph)
    if not graph:
        ell, d1 = ell.detach(), d1.detach()
    return ell, d1, d2


class _RowDerivatives:
    """Rows' ``l``, ``dl/deta`` and ``d2l/deta2`` at fixed parameters, without history:
    the family's closed forms (:meth:`Family.rows`) where it has them, else autograd."""

    def __init__(self, model, params, data):
        self.model, self.params, self.data = model, params, data
        fam = model.family
        terms = fam.rows(data.y, data.exposure, None, beta=model.beta,
                         threshold=model.threshold)
        self.terms = terms if terms.closed_form else None
        self.shapes = {s.name: params[s.name] for s in fam.shapes}

    def _P(self, eta):
        parts = {p.name: self.params[f"{p.name}_intercept"].expand_as(eta)
                 for p in self.model.family.parts}
        return {"eta": eta, **parts}

    def log_lik(self, eta) -> float:
        """``sum_i l_i`` up to a constant that does not depend on ``eta``."""
        if self.terms is not None:
            return -float(self.terms.value(self._P(eta), self.shapes))
        with torch.no_grad():
            return float(self.model.row_log_lik(eta, self.params, self.data).sum())

    def derivatives(self, eta):
        """``(dl/deta, d2l/deta2)``, shapes ``(n,)``."""
        if self.terms is not None:
            P = self._P(eta)
            d1 = self.terms.gradient(P, self.shapes)["eta"]
            return d1, -self.terms.curvature(P, self.shapes)[("eta", "eta")]
        _, d1, d2 = row_derivatives(self.model, eta, self.params, self.data)
        return d1, d2


def inner_mode(model, theta, data, structure, z0=None, *, max_iter=100, tol=1e-10):
    """The mode ``z_hat`` of ``f(z)`` at fixed ``theta`` by damped Newton steps.

    Where a row's curvature ``-d2l/deta2`` is negative (zero-inflated laws far from the
    mode) it is floored at 0 for the step, so every step ascends; steps are halved until
    ``f`` does not decrease.

    Returns
    -------
    z : Tensor, shape ``(R,)``, detached
    converged : bool
    """
    theta = theta.detach()
    params = model.unpack(theta, data)
    with torch.no_grad():
        eta0 = model.fixed_eta(params, data)
        A = structure.rows(model.factors(params, data))
    rows = _RowDerivatives(model, params, data)

    def objective(z):
        with torch.no_grad():
            return rows.log_lik(eta0 + structure.eta(A, z)) - 0.5 * float(z.dot(z))

    z = theta.new_zeros(structure.R) if z0 is None else z0.detach().clone()
    value = objective(z)
    for _ in range(max_iter):
        with torch.no_grad():
            d1, d2 = rows.derivatives(eta0 + structure.eta(A, z))
            g = structure.gradient(A, d1, z)
            step = structure.solve(structure.hessian(A, (-d2).clamp(min=0.0)), g)
        t = 1.0
        while True:
            trial = z + t * step
            new = objective(trial)
            if new >= value - 1e-12 * abs(value) or t < 1e-6:
                break
            t *= 0.5
        z, value = trial, new
        size = float((t * step).abs().max()) if structure.R else 0.0
        if size < tol or not math.isfinite(value):
            return z, math.isfinite(value)
    return z, False


def marginal_log_lik(model, theta, data, structure, z_hat, n_quadrature: int = 1):
    """The Laplace (``n_quadrature=1``) or AGHQ marginal log-likelihood, differentiable.

    Parameters
    ----------
    model : SoftplusGLMM
    theta : Tensor, shape ``(P,)``
        The fixed parameters (may require grad).
    data : MixedData
    structure : EffectsStructure
    z_hat : Tensor, shape ``(R,)``
        The mode at ``theta`` (:func:`inner_mode`), detached.
    n_quadrature : int
        Gauss-Hermite nodes per group; more than one needs a single random intercept.

    Returns
    -------
    Tensor, 0-d
    """
    params = model.unpack(theta, data)
    eta0 = model.fixed_eta(params, data)
    A = structure.rows(model.factors(params, data))
    _, d1, d2 = row_derivatives(model, eta0 + structure.eta(A, z_hat), params, data,
                                graph=True)
    g = structure.gradient(A, d1, z_hat)
    # the exact Hessian at the mode (no floor): the implicit derivative needs it
    H0 = structure.hessian(A, -d2).detach()
    z1 = z_hat + structure.solve(H0, g)  # = z_hat in value; carries dz_hat/dtheta
    ell, _, d2 = row_derivatives(model, eta0 + structure.eta(A, z1), params, data,
                                 graph=True)
    H = structure.hessian(A, -d2)
    if n_quadrature == 1:
        return ell.sum() - 0.5 * z1.dot(z1) - 0.5 * structure.logdet(H)
    (e,) = structure.effects
    if e.q != 1 or not structure.blocked:
        raise ValueError("adaptive Gauss-Hermite quadrature (n_quadrature > 1) needs a "
                         "single grouping factor with a random intercept only")
    x, w = np.polynomial.hermite.hermgauss(n_quadrature)
    x = torch.as_tensor(x, dtype=theta.dtype, device=theta.device)
    logw = torch.as_tensor(np.log(w), dtype=theta.dtype, device=theta.device)
    h = H.reshape(-1)
    nodes = z1.unsqueeze(1) + math.sqrt(2.0) * x / h.sqrt().unsqueeze(1)      # (G, K)
    eta = eta0.unsqueeze(0) + A[0][:, 0] * nodes[e.codes].T                   # (K, n)
    ell = model.row_log_lik(eta, params, data)                                # (K, n)
    f = torch.zeros_like(nodes).index_add(0, e.codes, ell.T) - 0.5 * nodes**2  # (G, K)
    per_group = torch.logsumexp(logw + x**2 + f, dim=1) - 0.5 * h.log()
    return per_group.sum() - 0.5 * e.n_groups * math.log(math.pi)
