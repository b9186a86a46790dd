"""The Laplace and adaptive Gauss-Hermite marginal likelihoods of a softplus GLMM.

For fixed parameters ``theta`` the group effects are integrated out of

    p(y | theta) = int prod_i p(y_i | eta_i(theta, z)) N(z; 0, I) dz,

with the non-centred effects ``z`` (``u_k = z_k @ Lambda_k.T``, see
:mod:`posheads.models.mixed`). Writing ``f(z) = sum_i l_i - ||z||^2 / 2``, its mode
``z_hat`` and ``H = -d2f/dz2 = I + Lambda' Z' W Z Lambda`` (``W`` the rows' negated second
derivatives in ``eta``), the Laplace approximation is

    log p(y | theta) ~ f(z_hat) - log det(H) / 2.

:class:`~.mixed_structure.EffectsStructure` holds how ``z`` reaches the rows and factorises
``H`` without forming it densely: batched ``q x q`` blocks for one grouping factor, a block
elimination (Schur complement) of the largest factor for several.

:func:`inner_mode` finds ``z_hat`` by damped Newton steps without autograd history, with
the exact Hessian wherever it is definite (quadratic convergence).
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

from .mixed_structure import EffectsStructure

__all__ = ["EffectsStructure", "inner_mode", "marginal_log_lik", "row_derivatives"]


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

    Each step uses the exact Hessian ``H`` when it is definite (then ``H^{-1} g`` ascends
    and the steps converge quadratically); where it is not (rows whose curvature
    ``-d2l/deta2`` is negative far from the mode: a softplus-link NB row with ``y = 0`` and
    a large ``eta``, zero-inflated laws) the negative curvatures are floored at 0 for that
    step, so every step ascends. Steps are halved until ``f`` does not decrease.

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
            # the floored H is at least I, so the step would be no longer than |g|
            if structure.R and float(g.norm()) < tol:
                return z, math.isfinite(value)
            try:
                step = structure.solve(structure.hessian(A, -d2), g)
            except FloatingPointError:  # not definite here: the floored curvature ascends
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
    eta = eta0 + structure.eta(A, z_hat)
    with torch.enable_grad():  # d1 keeps its history in theta; the curvature need not
        graph = eta.requires_grad
        eta = eta if graph else eta.detach().requires_grad_(True)
        ell = model.row_log_lik(eta, params, data)
        d1, = torch.autograd.grad(ell.sum(), eta, create_graph=graph)
    g = structure.gradient(A, d1, z_hat)
    # the exact Hessian at the mode (no floor): the implicit derivative needs it
    fixed = {k: v.detach() for k, v in params.items()}
    _, d2 = _RowDerivatives(model, fixed, data).derivatives(eta.detach())
    H0 = structure.hessian([a.detach() for a in A], -d2)
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
