"""The Laplace and adaptive Gauss-Hermite marginal likelihoods of a softplus GLMM.

For fixed parameters ``theta`` the group effects are integrated out of

    p(y | theta) = int prod_i p(y_i | eta_i(theta, z)) N(z; 0, I) dz,

with the non-centred effects ``z`` (``u_k = z_k @ Lambda_k.T``, see
:mod:`posheads.models.mixed`). Writing ``f(z) = sum_i l_i - ||z||^2 / 2``, its mode
``z_hat`` and ``H = -d2f/dz2 = I + Lambda' Z' W Z Lambda`` (``W`` the rows' negated second
derivatives in ``eta``), the Laplace approximation is

    log p(y | theta) ~ f(z_hat) - log det(H) / 2.

:class:`~.mixed_structure.EffectsStructure` holds how ``z`` reaches the rows and factorises
``H`` without forming it densely: batched ``q x q`` blocks for one grouping (its count and
zero-part factors together), a block elimination (Schur complement) of the largest for
several.

:func:`inner_mode` finds ``z_hat`` by damped Newton steps without autograd history, with
the exact Hessian wherever it is definite (quadratic convergence).
:func:`marginal_log_lik` is differentiable in ``theta``: from the detached mode it takes
one Newton step with the graph attached, ``z1 = z_hat + H^{-1} g(theta, z_hat)``, whose
derivative is the implicit-function-theorem derivative ``dz_hat/dtheta`` (``g = 0`` at
the mode), and evaluates the objective at ``z1`` -- so the gradient includes the
derivative of the log-determinant through the mode. The rows enter that graph only
through their derivatives at the mode (:class:`RowJets`: value plus first-order change),
so the backward pass never differentiates the family's log-likelihood itself. With
``n_quadrature > 1`` and a single random intercept it integrates each group's effect by
adaptive Gauss-Hermite quadrature centred at ``z_hat`` and scaled by ``H^{-1/2}``
(lme4's ``nAGQ``); one node is the Laplace approximation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .mixed_structure import EffectsStructure
from .mixed_zero import TwoPartRows, two_part_log_lik

__all__ = ["EffectsStructure", "RowJets", "inner_mode", "marginal_log_lik", "row_derivatives"]


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


class RowJets:
    """Each row's ``l`` and its derivatives at one point, detached, to carry a gradient.

    At ``eta`` (and the rows' parameters: the family's shapes and each part's fixed
    logits, per row with a zero-part design) it holds per row
    ``l``, ``d1 = dl/deta``, ``d2``, ``d3`` and the derivatives of ``l``, ``d1`` and ``d2``
    in each row parameter (per row, so each row keeps its own). :meth:`linear` then
    writes a row quantity as its value plus its first-order change in a graph-carrying
    ``eta`` and parameters: the value and the first derivative in ``theta`` are exact,
    and the backward pass never runs through the family's log-likelihood (a third-order
    graph otherwise).

    The derivatives come from the family's closed forms (:meth:`Family.rows`) where it
    has them, ``d3`` and those of ``d2`` in the parameters by central differences of the
    closed-form ``d2`` (relative step ``1e-5``: an error of about ``1e-9`` relative, far
    below what the optimiser or a standard error sees); else from autograd.

    Parameters
    ----------
    model : SoftplusGLMM
    params : dict of str to Tensor
        The named blocks (may carry a graph in ``theta``: kept for :meth:`linear`).
    data : MixedData
    eta : Tensor, shape ``(n,)``
        The point, detached.
    """

    #: relative step of the central differences of the closed-form curvature
    STEP = 1e-5

    def __init__(self, model, params, data, eta):
        fam = model.family
        # (name, whether a part's predictor): a part's fixed logits (per row with a
        # zero-part design) or a shape
        self.keys = ([(p.name, True) for p in fam.parts]
                     + [(s.name, False) for s in fam.shapes])
        values = dict(model.part_logits(params, data))
        values.update({s.name: params[s.name] for s in fam.shapes})
        # each row parameter's change from here: 0 in value, its graph in theta
        self.moves = [values[k] - values[k].detach() for k, _ in self.keys]
        fixed = {k: v.detach() for k, v in values.items()}
        terms = fam.rows(data.y, data.exposure, None, beta=model.beta,
                         threshold=model.threshold)
        eta = eta.detach()
        if not (terms.closed_form and self._closed(terms, fixed, eta)):
            self._autograd(model, {k: v.detach() for k, v in params.items()}, fixed, data,
                           eta)
        with torch.no_grad():  # the value with its constants
            self.ell = model.row_log_lik(eta, {k: v.detach() for k, v in params.items()},
                                         data)

    def _at(self, values, eta, bump=None, h=0.0):
        P, u = {"eta": eta}, {}
        for name, part in self.keys:
            v = values[name] + h if name == bump else values[name]
            if part:
                P[name] = v.expand_as(eta)
            else:
                u[name] = v
        return P, u

    def _closed(self, terms, values, eta) -> bool:
        def d2(bump=None, h=0.0, e=eta):
            return -terms.curvature(*self._at(values, e, bump, h))["eta", "eta"]

        P, u = self._at(values, eta)
        a, c = terms.gradient(P, u), terms.curvature(P, u)
        names = [name for name, _ in self.keys]
        if any(k not in a for k in ["eta", *names]) or ("eta", "eta") not in c:
            return False
        self.d1, self.d2 = a["eta"], -c["eta", "eta"]
        self.l_rows = [a[k] for k in names]
        # a pair the rows leave out is zero (a hurdle's count and zero parts)
        self.d1_rows = [-c["eta", k] if ("eta", k) in c else torch.zeros_like(eta)
                        for k in names]
        h = self.STEP * (1.0 + eta.abs())
        self.d3 = (d2(e=eta + h) - d2(e=eta - h)) / (2.0 * h)
        self.d2_rows = []
        for name, _ in self.keys:
            hk = self.STEP * (1.0 + float(values[name].abs().max()))
            self.d2_rows.append((d2(name, hk) - d2(name, -hk)) / (2.0 * hk))
        return True

    def _autograd(self, model, params, values, data, eta):
        with torch.enable_grad():
            e = eta.requires_grad_(True)
            leaves = {k: values[k].expand_as(e).clone().requires_grad_(True)
                      for k, _ in self.keys}
            local = dict(params)
            local.update({k: leaves[k] for k, part in self.keys if not part})
            ell = model.row_log_lik(e, local, data,
                                    {k: leaves[k] for k, part in self.keys if part})
            leaves = list(leaves.values())
            d1, *l_rows = _grads(ell, e, leaves, graph=True)
            d2, *d1_rows = _grads(d1, e, leaves, graph=True)
            self.d3, *self.d2_rows = _grads(d2, e, leaves, graph=False)
        self.d1, self.d2 = d1.detach(), d2.detach()
        self.l_rows = [v.detach() for v in l_rows]
        self.d1_rows = [v.detach() for v in d1_rows]

    def linear(self, value, by_eta, by_rows, step):
        """``value + by_eta * step + sum_k by_rows[k] * (change of parameter k)``."""
        out = value + by_eta * step
        for v, move in zip(by_rows, self.moves, strict=True):
            out = out + v * move
        return out


def _grads(out, eta, leaves, *, graph):
    """Per-row derivatives of the elementwise ``out`` in ``eta`` and each leaf (0 where
    ``out`` does not depend on one: a law whose ``d2`` is constant in ``eta``)."""
    inputs = [eta, *leaves]
    if not out.requires_grad:
        return [torch.zeros_like(eta) for _ in inputs]
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=graph, allow_unused=True)
    return [torch.zeros_like(eta) if d is None else d for d in grads]


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
        self.logits = model.part_logits(params, data)
        self.last = (None, None)

    @staticmethod
    def floor(w):
        """Negative curvatures set to 0."""
        return w.clamp(min=0.0)

    def _P(self, eta):
        # the same eta (object) again -- the derivatives at the point whose value the
        # line search accepted -- shares the family's per-row pieces kept in P
        if self.last[0] is eta:
            return self.last[1]
        parts = {k: v.expand_as(eta) for k, v in self.logits.items()}
        P = {"eta": eta, **parts}
        self.last = (eta, P)
        return P

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
    step (with effects in a zero part, each row's ``2 x 2`` curvature is floored to its
    nearest positive semi-definite matrix, :mod:`.mixed_zero`), so every step ascends.
    Steps are halved until ``f`` does not decrease.

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
    if structure.n_channels > 1:
        rows = TwoPartRows(model, params, data, structure)

        def predictors(z):
            return rows.predictors(A, z)
    else:
        rows = _RowDerivatives(model, params, data)

        def predictors(z):
            return eta0 + structure.eta(A, z)

    def objective(z):
        with torch.no_grad():
            eta = predictors(z)
            return eta, rows.log_lik(eta) - 0.5 * float(z.dot(z))

    z = theta.new_zeros(structure.R) if z0 is None else z0.detach().clone()
    eta, value = objective(z)
    for _ in range(max_iter):
        with torch.no_grad():
            d1, d2 = rows.derivatives(eta)
            g = structure.gradient(A, d1, z)
            # the floored H is at least I, so the step would be no longer than |g|
            if structure.R and float(g.norm()) < tol:
                return z, math.isfinite(value)
            try:
                step = structure.solve(structure.hessian(A, -d2), g)
            except FloatingPointError:  # not definite here: the floored curvature ascends
                step = structure.solve(structure.hessian(A, rows.floor(-d2)), g)
        t = 1.0
        while True:
            trial = z + t * step
            eta_trial, new = objective(trial)
            if new >= value - 1e-12 * abs(value) or t < 1e-6:
                break
            t *= 0.5
        z, eta, value = trial, eta_trial, new
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
    if structure.n_channels > 1:
        if n_quadrature != 1:
            raise ValueError("adaptive Gauss-Hermite quadrature (n_quadrature > 1) needs a "
                             "single grouping factor with a random intercept only")
        return two_part_log_lik(model, theta, data, structure, z_hat)
    params = model.unpack(theta, data)
    eta0 = model.fixed_eta(params, data)
    A = structure.rows(model.factors(params, data))
    eta = eta0 + structure.eta(A, z_hat)
    base = eta.detach()
    jet = RowJets(model, params, data, base)
    d1 = jet.linear(jet.d1, jet.d2, jet.d1_rows, eta - base)
    g = structure.gradient(A, d1, z_hat)
    # the exact Hessian at the mode (no floor): the implicit derivative needs it
    H0 = structure.hessian([a.detach() for a in A], -jet.d2)
    z1 = z_hat + structure.solve(H0, g)  # = z_hat in value; carries dz_hat/dtheta
    step = eta0 + structure.eta(A, z1) - base  # 0 in value
    ell = jet.linear(jet.ell, jet.d1, jet.l_rows, step)
    H = structure.hessian(A, -jet.linear(jet.d2, jet.d3, jet.d2_rows, step))
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
