"""Per-row log-likelihood terms of a family on fixed data, and their derivatives.

A GLM's log-likelihood depends on its parameters only through a few per-row quantities:
the linear predictors (``"eta"`` and one per part, e.g. ``"gate"``) and the unconstrained
shapes (``u`` with ``r = softplus(u)``, keyed by the shape's name). A :class:`RowTerms`
object gives, for fixed targets, exposures and row weights,

* ``value(P, u)``: ``-sum_i w_i l_i`` (up to a constant that does not depend on the
  parameters), a 0-d tensor;
* ``gradient(P, u)``: the weighted first derivatives ``w_i dl_i/dk`` per row, keyed by
  predictor or shape ``k``;
* ``curvature(P, u, index)``: the weighted negated second derivatives
  ``-w_i d2l_i/dk dj`` per row, keyed by pairs ``(k, j)`` in the order of
  :attr:`RowTerms.keys` (a pair left out is zero in every row);
* ``log_likelihood(P, u)``: ``sum_i w_i l_i`` exactly, constants included.

``P`` is a dict of predictors, each of shape ``(n,)``; implementations may cache
intermediate results in it under keys starting with ``"_"`` (a new ``P`` is made for every
parameter value). ``u`` maps each shape's name to a 0-d tensor. A solver contracts these
rows with the design (``X.T @ a``, ``X.T @ diag(h) @ X``); see ``docs/inference.md``.

:class:`AutogradRows` derives everything from the family's distribution by autograd: one
backward pass per key, exact, ``O(n)`` whatever the number of coefficients. Families with
closed forms (:mod:`.count_rows`) override it.
"""

from __future__ import annotations

import torch

from .. import ops

__all__ = ["AutogradRows", "RowTerms"]


class RowTerms:
    """Base of the per-row terms (see the module docstring).

    Parameters
    ----------
    family : Family
    y : Tensor, shape ``(n,)``
    exposure, weights : Tensor, shape ``(n,)``, optional
    beta, threshold : float
        The softplus link.

    Attributes
    ----------
    keys : tuple of str
        ``"eta"``, the part names, then the shape names: the order of the curvature pairs.
    closed_form : bool
        No derivative needs autograd.
    convex : bool
        ``-l`` is convex in ``eta``, so the ``("eta", "eta")`` curvature is ``>= 0``.
    """

    closed_form = False
    convex = False

    def __init__(self, family, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        self.family, self.y, self.t, self.w = family, y, exposure, weights
        self.beta, self.threshold = float(beta), float(threshold)
        self.switch = ops.linear_switch(y.dtype, threshold)
        self.keys = ("eta", *family.part_names, *family.shape_names)

    def fallback(self, P) -> bool:
        """Prepare ``P`` for a guarded re-evaluation after a non-finite :meth:`value`.

        Returns False when there is nothing safer to try (the default).
        """
        del P
        return False

    # ---- the generic path: the family's distribution, differentiated by autograd
    def _log_lik(self, eta, parts: dict, shapes: dict) -> torch.Tensor:
        """Weighted log-likelihood per row (shapes given constrained)."""
        d = self.family.build(eta, shapes=shapes, parts=parts, beta=self.beta,
                              threshold=self.threshold, exposure=self.t, validate_args=False)
        ll = d.log_prob(self.y)
        return ll if self.w is None else ll * self.w

    def _at(self, P, u):
        parts = {name: P[name] for name in self.family.part_names}
        shapes = {name: ops.softplus(u[name]) for name in self.family.shape_names}
        return P["eta"], parts, shapes

    def log_likelihood(self, P, u) -> torch.Tensor:
        """``sum w l``, constants included (0-d tensor, no autograd)."""
        with torch.no_grad():
            return self._log_lik(*self._at(P, u)).sum()

    def value(self, P, u) -> torch.Tensor:
        """``-sum w l`` (0-d tensor)."""
        return -self.log_likelihood(P, u)


class AutogradRows(RowTerms):
    """Per-row derivatives of any family by autograd on its distribution's ``log_prob``.

    A per-row quantity's second derivatives are the gradient of the sum of its first
    derivatives, so one backward pass per key gives a column of curvatures.
    """

    def _derivatives(self, P, u, need_h):
        n = self.y.shape[0]
        names = ["eta", *self.family.part_names]
        with torch.enable_grad():
            leaves = {k: P[k].detach().requires_grad_() for k in names}
            for s in self.family.shape_names:
                names.append(s)
                leaves[s] = u[s].detach().expand(n).clone().requires_grad_()
            parts = {k: leaves[k] for k in self.family.part_names}
            shapes = {s: ops.softplus(leaves[s]) for s in self.family.shape_names}
            ll = self._log_lik(leaves["eta"], parts, shapes)
            xs = [leaves[k] for k in names]
            first = torch.autograd.grad(ll.sum(), xs, create_graph=need_h)
            a = {k: g.detach() for k, g in zip(names, first, strict=True)}
            if not need_h:
                return a, None
            h = {}
            for i, ki in enumerate(names):
                if not first[i].requires_grad:  # linear in this key
                    continue
                sec = torch.autograd.grad(first[i].sum(), xs[i:], retain_graph=True,
                                          allow_unused=True)
                for kj, g in zip(names[i:], sec, strict=True):
                    if g is not None:
                        h[ki, kj] = -g.detach()
        return a, h

    def gradient(self, P, u) -> dict:
        return self._derivatives(P, u, need_h=False)[0]

    def curvature(self, P, u, index=None) -> dict:
        h = self._derivatives(P, u, need_h=True)[1]
        return h if index is None else {k: v[index] for k, v in h.items()}
