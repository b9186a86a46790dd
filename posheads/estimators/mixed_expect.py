"""Point predictions of the mixed-model regressor: expected counts and log scores.

:class:`MixedExpectationMixin` gives :class:`~posheads.estimators.mixed.MixedCountRegressor`
``predict`` and ``log_score``. A row of a level seen in fitting takes the conditional
mode of its effect; a row of a new level (or without grouping labels) is averaged over
its effects ``u ~ N(0, Sigma)`` by Gauss-Hermite quadrature, ``E[softplus(eta + z'u)]``
rather than ``softplus(eta)``. A zero part's covariates enter its logits for the new rows.
With a zero part's effects (independent of the count
part's) the quadrature is the tensor product of one axis for ``eta`` and one for the zero
part's logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from posheads import families

from .mixed_terms import factor_labels, grouping_frame

__all__ = ["MixedExpectationMixin"]


class MixedExpectationMixin:
    """``predict`` and ``log_score`` of a mixed model (see the module docstring)."""

    def _factor_of(self, name):
        """The grouping factor of effect ``name`` and the part it reaches (None: ``eta``)."""
        return getattr(self, "effect_factors_", {}).get(name, (name, None))

    def _eta_and_var(self, X, groups, X_zero=None, exposure=None):
        """Per predictor (``None``: ``eta``; else a part's logits) the mean ``(n,)`` with
        seen levels' modes and the unseen levels' variance ``(n,)``; and the rows'
        :class:`MixedData` (the fixed and the zero part's designs)."""
        check_is_fitted(self, "fit_")
        Xf, _ = self._fixed_design(X, False)
        n = len(Xf)
        data = self._prediction_rows(Xf, X, X_zero, exposure)
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        fixed_parts = {k: np.broadcast_to(v.numpy(), (n,))
                       for k, v in self.model_.part_logits(params, data).items()}
        frame = None
        if self.formula is not None:
            frame = X
        elif groups is not None:
            frame = grouping_frame(groups, n)
        out = {None: [Xf @ self.fit_.params["coef"], np.zeros(n)]}
        for name, terms in self.random_terms_.items():
            factor, part = self._factor_of(name)
            if part not in out:
                out[part] = [fixed_parts[part], np.zeros(n)]
            Z = self._effect_design(frame if self.formula else X, factor, terms, False)
            cov = self.sd_[name][:, None] * self.corr_[name] * self.sd_[name][None, :]
            seen = np.zeros(n, dtype=bool)
            if frame is not None and all(c in frame.columns for c in factor.split(":")):
                labels = factor_labels(frame, factor)
                pos = np.searchsorted(self.levels_[name], labels)
                pos = np.clip(pos, 0, len(self.levels_[name]) - 1)
                seen = self.levels_[name][pos] == labels
                u = self.random_effects_[name].to_numpy()[pos]
                out[part][0] = out[part][0] + np.where(seen, (Z * u).sum(1), 0.0)
            out[part][1] = out[part][1] + np.where(seen, 0.0,
                                                   np.einsum("ij,jk,ik->i", Z, cov, Z))
        return data, out

    def _node_distribution(self, X, groups, exposure, n_nodes, X_zero=None):
        """The family's law at Gauss-Hermite nodes of each row's effects, and the weights:
        one axis of ``n_nodes`` for ``eta``; with a zero part's effects, their tensor
        product with an axis for the part's logits (the two are independent)."""
        data, pred = self._eta_and_var(X, groups, X_zero, exposure)
        x, w = np.polynomial.hermite.hermgauss(n_nodes)
        w = w / math.sqrt(math.pi)

        def nodes(mean, var):
            return mean[None, :] + math.sqrt(2.0) * np.sqrt(var)[None, :] * x[:, None]

        eta = nodes(*pred.pop(None))
        parts = {}
        if pred:  # (K, n) x (K, n) -> (K * K, n), eta's node outer
            (part, (mean, var)), = pred.items()
            gate = nodes(mean, var)
            eta = np.repeat(eta, n_nodes, axis=0)
            parts[part] = torch.from_numpy(np.tile(gate, (n_nodes, 1)))
            w = np.outer(w, w).ravel()
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        law = self.model_.distribution(torch.from_numpy(eta), params, data, parts)
        return law, w

    def predict(self, X, groups=None, exposure=None, n_nodes=32, X_zero=None):
        """Expected counts: seen levels use their effect, new levels are averaged over.

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        groups : as in :meth:`fit`, optional
            Without it (and without the formula's grouping columns in ``X``) every
            row is predicted at the population level.
        exposure : array-like, shape ``(n,)``, optional
        n_nodes : int
            Gauss-Hermite nodes of the population-level mean.
        X_zero : array-like or DataFrame, shape ``(n, p_zero)``, optional
            The zero part's covariates, when the model was fitted with ``X_zero``
            (with ``zero_formula``'s covariates they are read from ``X``).

        Returns
        -------
        ndarray, shape ``(n,)``

        With a Bayesian engine the expectation is also averaged over (at most 400)
        posterior draws, each with its own effects and ``Sigma``.
        """
        check_is_fitted(self, "levels_")
        if self.inference != "ml":
            return self._bayes_average(X, groups, exposure, n_nodes, X_zero=X_zero)
        law, w = self._node_distribution(X, groups, exposure, n_nodes, X_zero)
        return (w[:, None] * law.mean.numpy()).sum(0)

    def log_score(self, X, y, groups=None, exposure=None, n_nodes=32, X_zero=None):
        """Predictive log density of each row: ``log p(y_i | data)``.

        A row of a level seen in the fit is scored at its conditional mode; a row of a new
        level (or without ``groups``) under the population law, its probability averaged
        over the random effects by Gauss-Hermite quadrature (the mean of the likelihood,
        not the likelihood at the mean).

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        y : array-like, shape ``(n,)``
        groups, exposure, n_nodes, X_zero : as in :meth:`predict`

        Returns
        -------
        ndarray, shape ``(n,)``
        """
        check_is_fitted(self, "levels_")
        y = np.asarray(y, dtype=np.float64).ravel()
        families.get_family(self.family).check_target(y)
        if self.inference != "ml":
            n = len(self._fixed_design(X, False)[0])
            if len(y) != n:
                raise ValueError(f"y has {len(y)} rows but X has {n}")
            return self._bayes_average(X, groups, exposure, n_nodes, y=y, X_zero=X_zero)
        law, w = self._node_distribution(X, groups, exposure, n_nodes, X_zero)
        if len(y) != law.batch_shape[-1]:
            raise ValueError(f"y has {len(y)} rows but X has {law.batch_shape[-1]}")
        log_p = law.log_prob(torch.from_numpy(y)).numpy()
        return np.logaddexp.reduce(log_p + np.log(w)[:, None], axis=0)
