"""The zero part's covariates of the mixed-model regressor: :class:`MixedZeroDesignMixin`.

A zero-inflated or hurdle GLMM's zero part (the logits of its zero part, ``gate``) has a
fixed intercept and, optionally, covariates of its own: ``X_zero=`` in ``fit`` (an array
or a frame; the plain GLMs' argument) or the fixed terms of
``zero_formula="~ x + (1 | g)"`` (glmmTMB's ``ziformula``), read from the frame ``X``.
Without either the zero part is intercept-only (unlike the plain GLMs, whose zero part
reads ``X`` by default). The columns exclude the intercept; each is checked (rows,
finite values, not constant, not collinear with the others and the intercept) with a
``ValueError`` that names it. Prediction re-applies the same design to new rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from posheads.models.mixed import MixedData

__all__ = ["MixedZeroDesignMixin"]


class MixedZeroDesignMixin:
    """The zero-part design of :class:`~posheads.estimators.mixed.MixedCountRegressor`."""

    def _zero_design(self, X, X_zero, n, fitting, family=None, fixed_terms=()):
        """The zero part's covariates ``(n, p_zero)`` float64, or None (intercept only).

        Parameters
        ----------
        X : array-like or DataFrame
            The rows (a frame holding the columns of ``zero_formula``'s fixed terms).
        X_zero : array-like or DataFrame, shape ``(n, p_zero)``, or None
        n : int
            Number of rows.
        fitting : bool
            Fitting: set ``zero_coef_names_``, ``n_zero_features_in_`` and (a formula)
            the design kept for new rows; else re-apply them.
        family : Family
            When fitting: the family (which must have a zero part).
        fixed_terms : list of str
            When fitting: ``zero_formula``'s fixed terms other than the intercept.
        """
        if fitting:
            return self._fit_zero_design(X, X_zero, n, family, list(fixed_terms))
        if getattr(self, "zero_formula_design_", None) is not None:
            if X_zero is not None:
                raise ValueError("the zero part's covariates come from zero_formula: do not "
                                 "pass X_zero")
            return self._checked_zero(self._formula_rows(X, n), n)
        q = getattr(self, "n_zero_features_in_", None)
        if q is None:
            if X_zero is not None:
                raise ValueError("this estimator was fitted without X_zero")
            return None
        if X_zero is None:
            raise ValueError("this estimator was fitted with X_zero: pass X_zero too")
        Z = self._checked_zero(X_zero, n)
        if Z.shape[1] != q:
            raise ValueError(f"X_zero has {Z.shape[1]} columns; the model was fitted with {q}")
        return Z

    def _fit_zero_design(self, X, X_zero, n, family, fixed_terms):
        self.zero_formula_design_ = None
        self.zero_coef_names_, self.n_zero_features_in_ = None, None
        if fixed_terms and X_zero is not None:
            raise ValueError(f"zero-part covariates given twice: zero_formula's terms "
                             f"{fixed_terms} and X_zero; give one")
        if not fixed_terms and X_zero is None:
            return None
        given = fixed_terms or (list(map(str, X_zero.columns))
                                if isinstance(X_zero, pd.DataFrame) else ["X_zero"])
        if not family.parts:
            raise ValueError(f"zero-part covariate(s) {given}: the family {family.name!r} "
                             "has no zero part (use a zero-inflated or hurdle family)")
        if fixed_terms:
            if not isinstance(X, pd.DataFrame):
                raise ValueError(f"zero_formula's covariates {fixed_terms} are read from X: "
                                 "X must be a data frame holding them (or pass X_zero=)")
            Z, names = self._formula_rows(X, n, " + ".join(["1", *fixed_terms]))
        else:
            Z = X_zero
            names = (list(map(str, X_zero.columns)) if isinstance(X_zero, pd.DataFrame)
                     else None)
        Z = self._checked_zero(Z, n, names)
        self.zero_coef_names_ = names or [f"z{j}" for j in range(Z.shape[1])]
        self.n_zero_features_in_ = Z.shape[1]
        self._check_zero_rank(Z)
        return Z

    def _formula_rows(self, X, n, fitting=None):
        """``zero_formula``'s fixed terms on the frame ``X``, intercept dropped; when
        fitting (``fitting`` the terms' formula) also the column names."""
        import formulae

        if not isinstance(X, pd.DataFrame):
            raise ValueError("the zero part's covariates come from zero_formula: X must be "
                             "a data frame holding them")
        missing = X.isna().any(axis=1).to_numpy()
        if fitting:
            self.zero_formula_design_ = formulae.design_matrices(fitting, X).common
            dm = self.zero_formula_design_
            names = list(dm.as_dataframe().columns)
            Z = np.asarray(np.asarray(dm), dtype=np.float64)
        else:
            Z = np.asarray(np.asarray(self.zero_formula_design_.evaluate_new_data(X)),
                           dtype=np.float64)
        if len(Z) != n:  # formulae drops rows with missing values
            raise ValueError(f"zero_formula's covariates: {int(missing.sum())} row(s) of X "
                             "hold missing values (NaN)")
        Z = Z[:, 1:]  # the intercept is the part's own parameter
        return (Z, names[1:]) if fitting else Z

    def _checked_zero(self, Z, n, names=None):
        """``Z`` as a finite float64 ``(n, p_zero)`` array without a constant column."""
        A = np.asarray(Z, dtype=np.float64)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2:
            raise ValueError(f"X_zero must be 2-d, got shape {A.shape}")
        if len(A) != n:
            raise ValueError(f"X_zero has {len(A)} rows but X has {n}")
        names = names or getattr(self, "zero_coef_names_", None) or \
            [f"z{j}" for j in range(A.shape[1])]
        for j, name in enumerate(names):
            if not np.isfinite(A[:, j]).all():
                raise ValueError(f"zero-part covariate {name!r} holds NaN or infinite values")
        return A

    def _check_zero_rank(self, Z):
        """``ValueError`` naming a zero-part column that is constant (it duplicates the
        part's intercept) or a linear combination of the others and the intercept."""
        for j, name in enumerate(self.zero_coef_names_):
            if np.ptp(Z[:, j]) == 0:
                raise ValueError(f"zero-part covariate {name!r} is constant: it duplicates "
                                 "the zero part's intercept")
        D = np.column_stack([np.ones(len(Z)), Z])
        if len(D) < D.shape[1]:
            raise ValueError(f"the zero part has {D.shape[1]} coefficients for {len(D)} rows")
        s = np.linalg.svd(D / np.linalg.norm(D, axis=0), compute_uv=False)
        if s[-1] <= 1e-10 * s[0]:
            raise ValueError(f"the zero part's covariates {self.zero_coef_names_} are "
                             "collinear (with each other or the intercept)")

    def _set_zero_part(self, params) -> None:
        """``{part}_intercept_`` and, with covariates, ``{part}_coef_`` (the GLMs'
        attributes) from the named estimates ``params``."""
        for p in self.model_.family.part_names:
            setattr(self, f"{p}_intercept_", float(np.asarray(params[f"{p}_intercept"])))
            if self.zero_coef_names_ is not None:
                setattr(self, f"{p}_coef_", np.asarray(params[f"{p}_coef"], dtype=np.float64))

    def _prediction_rows(self, Xf, X, X_zero, exposure=None) -> MixedData:
        """The new rows' :class:`MixedData` without effects: the fixed design ``Xf`` and
        the zero part's covariates (checked as at fit)."""
        Z = self._zero_design(X, X_zero, len(Xf), False)
        t = None if exposure is None else torch.as_tensor(np.asarray(exposure, np.float64))
        if t is not None and t.shape != (len(Xf),):
            raise ValueError(f"exposure has shape {tuple(t.shape)}, expected ({len(Xf)},)")
        return MixedData(torch.as_tensor(Xf), (), exposure=t,
                         X_zero=None if Z is None else torch.from_numpy(Z))
