"""Group effects in a zero part: the rows' derivatives in two linear predictors.

When some grouping factors reach a family's part (:attr:`RandomEffect.part`, the zero
part's logits ``gate`` of a zero-inflated or hurdle law; glmmTMB's ``ziformula``), each
row's log-likelihood depends on two predictors, ``eta_i`` and ``gate_i``, and the inner
problem of the Laplace approximation needs its ``2 x 2`` Hessian in them: from the
family's closed forms where they cover both predictors (the zero-inflated and hurdle
Poisson and NB2 laws; a concentration enters at its value in the parameters), else from
autograd (the rows are independent, so the gradient of a sum is each row's derivative).

:class:`TwoPartRows` serves the inner Newton solve (no history; a curvature that is not
definite is floored to its nearest positive semi-definite ``2 x 2``);
:func:`two_part_log_lik` is the differentiable Laplace marginal log-likelihood, through
one Newton step from the detached mode (the implicit derivative of the mode, as in
:mod:`.mixed_laplace`), with the row derivatives' own graph (third order in the
predictors) instead of the one-predictor engine's jets.
"""

from __future__ import annotations

import torch

__all__ = ["TwoPartRows", "closed_in", "family_rows", "floor_curvature", "part_name",
           "row_derivatives_2", "two_part_log_lik"]


def part_name(effects) -> str:
    """The one part the group effects reach besides ``eta``."""
    return next(e.part for e in effects if e.part is not None)


def row_derivatives_2(model, eta, gate, params, data, part, *, graph=False, value=True,
                      terms=None):
    """Each row's ``l``, gradient ``(n, 2)`` and Hessian ``(n, 2, 2)`` in ``(eta, gate)``.

    With ``graph=True`` all three keep their history (differentiable in whatever ``eta``,
    ``gate`` and ``params`` depend on); otherwise they are detached. ``value=False``
    returns None for ``l`` where it would cost a pass of its own. The derivatives come
    from the family's closed forms where it has them for these two predictors (its
    shapes held at ``params``; :meth:`Family.rows`), else from autograd. ``terms``: the
    family's rows on ``data`` (:func:`family_rows`) when the caller keeps them.
    """
    fam = model.family
    if terms is None:
        terms = family_rows(model, data)
    if closed_in(terms, model, part):
        with torch.set_grad_enabled(graph and torch.is_grad_enabled()):
            if not graph:
                eta, gate = eta.detach(), gate.detach()
            P = {"eta": eta, part: gate.expand_as(eta)}
            u = {s: params[s] if graph else params[s].detach() for s in fam.shape_names}
            grad, hess = _stacked(terms, P, u, part)
            ell = model.row_log_lik(eta, params if graph else
                                    {k: v.detach() for k, v in params.items()},
                                    data, {part: gate}) if value else None
        return ell, grad, hess
    with torch.enable_grad():
        if not graph:
            eta = eta.detach().requires_grad_(True)
            gate = gate.detach().requires_grad_(True)
            params = {k: v.detach() for k, v in params.items()}
        elif not (eta.requires_grad and gate.requires_grad):
            # no graph in theta reaches the rows: differentiate at a detached point
            eta, gate = eta.requires_grad_(True), gate.requires_grad_(True)
        ell = model.row_log_lik(eta, params, data, {part: gate})
        d1 = _per_row_grads(ell, (eta, gate), True)
        d2 = [_per_row_grads(d, (eta, gate), graph) for d in d1]
    grad = torch.stack(d1, dim=-1)
    hess = torch.stack([torch.stack(r, dim=-1) for r in d2], dim=-2)
    if not graph:
        ell, grad, hess = ell.detach(), grad.detach(), hess.detach()
    return ell, grad, hess


def closed_in(terms, model, part) -> bool:
    """Whether the rows ``terms`` give every derivative in ``(eta, part)`` in closed form
    (the family's shapes held fixed)."""
    return terms.closed_form and tuple(terms.keys) == ("eta", part,
                                                       *model.family.shape_names)


def _stacked(terms, P, u, part):
    """The closed-form rows' gradient ``(n, 2)`` and Hessian ``(n, 2, 2)`` at ``P``."""
    c = terms.curvature(P, u)  # first: the gradient then reuses its pieces
    a = terms.gradient(P, u)
    grad = torch.stack([a["eta"], a[part]], dim=-1)
    # a pair the rows leave out is zero (the hurdle's parts do not meet)
    cross = -c["eta", part] if ("eta", part) in c else torch.zeros_like(a["eta"])
    hess = torch.stack([torch.stack([-c["eta", "eta"], cross], -1),
                        torch.stack([cross, -c[part, part]], -1)], dim=-2)
    return grad, hess


def family_rows(model, data):
    """The family's row terms on ``data`` (unweighted), for :func:`row_derivatives_2`."""
    return model.family.rows(data.y, data.exposure, None, beta=model.beta,
                             threshold=model.threshold)


def _per_row_grads(out, inputs, graph):
    """Per-row derivatives of the elementwise ``out`` in each input (0 where unused)."""
    if not out.requires_grad:
        return [torch.zeros_like(inputs[0]) for _ in inputs]
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=graph, allow_unused=True,
                                retain_graph=True)
    return [torch.zeros_like(inputs[0]) if d is None else d for d in grads]


def floor_curvature(w: torch.Tensor) -> torch.Tensor:
    """The nearest positive semi-definite matrix of each ``2 x 2`` in ``w`` (``(n, 2, 2)``):
    negative eigenvalues set to 0, so a Newton step with it still ascends."""
    vals, vecs = torch.linalg.eigh(0.5 * (w + w.transpose(-1, -2)))
    return (vecs * vals.clamp(min=0.0).unsqueeze(-2)) @ vecs.transpose(-1, -2)


class TwoPartRows:
    """The rows at fixed parameters for the inner solve: ``eta`` is ``(n, 2)`` here, the
    count predictor and the part's logits side by side.

    Parameters
    ----------
    model : SoftplusGLMM
    params : dict of str to Tensor, detached
    data : MixedData
    structure : EffectsStructure
        With two channels.
    """

    def __init__(self, model, params, data, structure):
        self.model, self.params, self.data = model, params, data
        self.part = part_name(structure.effects)
        self.structure = structure
        eta = model.fixed_eta(params, data)
        gate = model.part_logits(params, data)[self.part]
        self.base = torch.stack([eta, gate.expand_as(eta)], -1)
        self.terms = family_rows(model, data)
        self.closed = closed_in(self.terms, model, self.part)
        self.u = {s: params[s].detach() for s in model.family.shape_names}
        self.last = (None, None)

    def _P(self, eta) -> dict:
        # the same eta (object) again -- the derivatives at the point whose value the
        # line search accepted -- shares the rows' per-row pieces kept in P
        if self.last[0] is not eta:
            self.last = (eta, {"eta": eta[:, 0], self.part: eta[:, 1]})
        return self.last[1]

    def predictors(self, A, z) -> torch.Tensor:
        """``(eta, gate)`` of each row at the effects ``z``, shape ``(n, 2)``."""
        s = self.structure
        return self.base + torch.stack([s.eta(A, z, 0), s.eta(A, z, 1)], -1)

    def log_lik(self, eta) -> float:
        """``sum_i l_i``."""
        if self.closed:
            return float(self.terms.log_likelihood(self._P(eta), self.u))
        with torch.no_grad():
            return float(self.model.row_log_lik(eta[:, 0], self.params, self.data,
                                                {self.part: eta[:, 1]}).sum())

    def derivatives(self, eta):
        """``(dl/d(eta, gate), d2l/d(eta, gate)^2)``, shapes ``(n, 2)`` and ``(n, 2, 2)``."""
        if self.closed:
            with torch.no_grad():
                return _stacked(self.terms, self._P(eta), self.u, self.part)
        _, d1, d2 = row_derivatives_2(self.model, eta[:, 0], eta[:, 1], self.params,
                                      self.data, self.part, value=False, terms=self.terms)
        return d1, d2

    @staticmethod
    def floor(w):
        """See :func:`floor_curvature`."""
        return floor_curvature(w)


def two_part_log_lik(model, theta, data, structure, z_hat):
    """The Laplace marginal log-likelihood with effects in ``eta`` and a part, differentiable.

    Parameters
    ----------
    model : SoftplusGLMM
    theta : Tensor, shape ``(P,)``
    data : MixedData
    structure : EffectsStructure
        With two channels.
    z_hat : Tensor, shape ``(R,)``
        The mode at ``theta``, detached.

    Returns
    -------
    Tensor, 0-d
    """
    params = model.unpack(theta, data)
    part = part_name(structure.effects)
    A = structure.rows(model.factors(params, data))
    eta0 = model.fixed_eta(params, data)
    gate0 = model.part_logits(params, data)[part].expand_as(eta0)

    def at(z):
        return eta0 + structure.eta(A, z, 0), gate0 + structure.eta(A, z, 1)

    terms = family_rows(model, data)
    _, d1, d2 = row_derivatives_2(model, *at(z_hat), params, data, part, graph=True,
                                  value=False, terms=terms)
    g = structure.gradient(A, d1, z_hat)
    # the exact Hessian at the mode (no floor): the implicit derivative needs it
    H0 = structure.hessian([a.detach() for a in A], -d2.detach())
    z1 = z_hat + structure.solve(H0, g)  # = z_hat in value; carries dz_hat/dtheta
    ell, _, d2 = row_derivatives_2(model, *at(z1), params, data, part, graph=True,
                                   terms=terms)
    H = structure.hessian(A, -d2)
    return ell.sum() - 0.5 * z1.dot(z1) - 0.5 * structure.logdet(H)
