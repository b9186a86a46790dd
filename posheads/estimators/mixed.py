"""The mixed-model regressor: softplus-link GLMMs with random intercepts and slopes.

:class:`MixedCountRegressor` fits a :class:`~posheads.models.mixed.SoftplusGLMM` of any
family by maximum marginal likelihood (Laplace, or adaptive Gauss-Hermite quadrature with
``n_quadrature > 1`` for one random intercept; :mod:`posheads.inference.mixed_ml`), or with
a Bayesian engine, ``inference="nuts" | "svi" | "laplace"`` (:mod:`.mixed_bayes`).
Predictive draws and intervals carry the group-level uncertainty (:mod:`.mixed_predict`);
``summary()`` (:mod:`.mixed_summary`) adds the intraclass variation on the count scale
(:mod:`.mixed_icc`).

The grouping is given either as ``groups=`` in :meth:`~MixedCountRegressor.fit` (a frame,
dict of arrays or a 1-d array) with ``random_effects={"patient": ["1"], "site": ["1",
"age"]}`` (``"1"`` the intercept, other names columns of ``X``; by default a random
intercept per grouping column), or as lme4-style bar terms of a formula,
``"y ~ age + (1 | patient) + (1 + age | site)"``, parsed by the ``formulae`` package (the
fixed part too; ``X`` is then one data frame holding every column). A nested factor is
written ``(1 | site:patient)`` or coded uniquely. A group with a single row is allowed:
its effect is shrunk towards 0 by the others. A zero-inflated or hurdle family's zero
part may have covariates and group effects of its own, independent of the count part's:
``zero_formula="~ x + (1 | patient)"`` (glmmTMB's ``ziformula``), or ``X_zero=`` in
:meth:`~MixedCountRegressor.fit` with ``zero_random_effects={"patient": ["1"]}``
(:mod:`.mixed_zero_design`); the effects are named ``"{part}|{factor}"``
(``"gate|patient"``) in the fitted attributes.

Predictions (:mod:`.mixed_expect`): for a group seen in fitting the effect's conditional
mode is used, ``softplus(eta + z'u_hat)``; for a new level the population-level mean
``E[softplus(eta + z'u)]`` over ``u ~ N(0, Sigma)`` by Gauss-Hermite quadrature, which is
larger than ``softplus(eta)`` because softplus is convex (see ``docs/mixed-models.md``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from posheads import families
from posheads.inference.mixed_laplace import row_derivatives
from posheads.inference.mixed_ml import fit_mixed_ml
from posheads.inference.mixed_zero import floor_curvature, row_derivatives_2
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from .mixed_bayes import ENGINES, BayesianMixedMixin
from .mixed_expect import MixedExpectationMixin
from .mixed_icc import MAX_ROWS
from .mixed_predict import MixedPredictiveMixin
from .mixed_summary import MixedSummaryMixin
from .mixed_terms import bar_terms, factor_labels, grouping_frame, zero_part_spec
from .mixed_zero_design import MixedZeroDesignMixin

__all__ = ["MixedCountRegressor", "SingularFitWarning"]


class SingularFitWarning(UserWarning):
    """A variance component collapsed to 0 (the fit is on the boundary)."""


class MixedCountRegressor(BayesianMixedMixin, MixedExpectationMixin, MixedPredictiveMixin,
                          MixedSummaryMixin, MixedZeroDesignMixin, RegressorMixin,
                          BaseEstimator):
    """Softplus-link GLMM of any count family, by maximum marginal likelihood or a
    Bayesian engine.

    Parameters
    ----------
    family : str or Family, default="poisson"
        The likelihood (any registered family).
    random_effects : dict of str to list of str, optional
        Grouping column -> random terms (``"1"``: intercept; other names: columns of
        ``X``). Default: a random intercept for every grouping column.
    formula : str, optional
        ``"y ~ fixed + (terms | factor) + ..."``; ``X`` is then a frame with every
        column and ``y``/``groups`` are not given.
    zero_random_effects : dict of str to list of str, optional
        Group effects of the family's zero part (the logits of a zero-inflated or
        hurdle law's zero part), in the form of ``random_effects``; independent of the
        count part's. Every engine fits them.
    zero_formula : str, optional
        The zero part's formula, glmmTMB's ``ziformula``: ``"~ x + (1 | patient)"``;
        bar terms give its group effects, fixed terms its covariates (read from the
        frame ``X``; or pass ``X_zero=`` to :meth:`fit`). The zero part keeps its
        intercept.
    n_quadrature : int, default=1
        1: Laplace; more: adaptive Gauss-Hermite nodes (one random intercept only).
    fit_intercept : bool, default=True
        Add a fixed intercept (without a formula).
    beta, threshold : float
        The softplus link.
    max_iter, tol : int, float
        The outer L-BFGS-B budget and tolerance.
    inference : {"ml", "nuts", "svi", "laplace"}, default="ml"
        ``"ml"``: maximum marginal likelihood (Laplace / adaptive Gauss-Hermite). The
        engines ``"nuts"`` and ``"svi"`` fit the same model with the priors of
        :class:`~posheads.models.mixed.SoftplusGLMM` (non-centred effects): NUTS in the
        Laplace metric, SVI with a mean-field normal guide. ``"laplace"`` draws from the
        Laplace approximation of the marginal posterior at the ML fit (flat priors): the
        fixed parameters from ``N(theta_hat, fit_.cov)``, each level's effect from its
        conditional normal.
    num_samples, num_warmup, num_chains : int
        Posterior draws (all Bayesian engines), NUTS warm-up and chains.
    num_steps : int
        SVI steps.
    random_state : int or None, default=None
        Seeds the Bayesian engines and the predictive draws.
    verbose : int, default=0
        Progress bars of NUTS and SVI when > 0.

    Attributes
    ----------
    coef_ : ndarray, shape ``(p,)``
        Fixed effects (``intercept_`` apart when ``fit_intercept``).
    feature_names_ : list of str
        Names of the fixed effects (``"Intercept"`` first when there is one).
    zero_coef_names_ : list of str or None
        Names of the zero part's covariates (``X_zero``'s columns, ``z0, z1, ...`` for
        an array, or ``zero_formula``'s columns); ``None`` for an intercept-only zero
        part. ``summary()`` names their rows ``"{part}:{name}"`` (``"gate:x"``).
    gate_intercept_, gate_coef_ : float, ndarray of shape ``(p_zero,)``
        A zero part's intercept and coefficients (logit scale; named after the family's
        part, ``gate`` for the zero-inflated and hurdle families; ``gate_coef_`` only
        with covariates).
    sd_ : dict of str to ndarray
        Standard deviation of each factor's random terms (a zero part's factor is named
        ``"{part}|{factor}"``, e.g. ``"gate|patient"``).
    corr_ : dict of str to ndarray
        Correlation matrix of each factor's random terms.
    random_effects_ : dict of str to DataFrame
        Conditional modes of the effects, one row per level (Bayesian engines: their
        posterior means).
    conditional_cov_ : dict of str to ndarray, shapes ``(G, q, q)``
        ML only: the conditional covariance of each level's effect (with several
        factors, each factor's block given the others at their modes).
    loglik_ : float
        The maximised marginal log-likelihood (NaN for a Bayesian engine).
    fit_ : MixedFit
        ML only: the engine's result (covariance, modes, convergence).
    posterior_ : Posterior
        Bayesian engines only: the draws (sites ``coef``, ``{k}_sd``, ``{k}_corr_chol``,
        ``{k}_z`` -- the non-centred effects -- and the family's).
    diagnostics_ : FitDiagnostics
        Bayesian engines only: divergences, R-hat, ESS (each shortfall is warned as a
        :class:`~posheads.inference.checks.SamplerWarning`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> g = rng.integers(0, 20, 400); x = rng.normal(size=(400, 1))
    >>> y = rng.poisson(np.log1p(np.exp(1 + x[:, 0] + rng.normal(0, .5, 20)[g])))
    >>> m = MixedCountRegressor().fit(x, y, groups=g)
    >>> sorted(m.sd_)
    ['group']
    """

    def __init__(self, family="poisson", *, random_effects=None, formula=None,
                 zero_random_effects=None, zero_formula=None, n_quadrature=1,
                 fit_intercept=True, beta=1.0, threshold=20.0,
                 max_iter=500, tol=1e-9, inference="ml", num_samples=1000, num_warmup=500,
                 num_chains=1, num_steps=2000, random_state=None, verbose=0):
        self.family = family
        self.random_effects = random_effects
        self.formula = formula
        self.zero_random_effects = zero_random_effects
        self.zero_formula = zero_formula
        self.n_quadrature = n_quadrature
        self.fit_intercept = fit_intercept
        self.beta = beta
        self.threshold = threshold
        self.max_iter = max_iter
        self.tol = tol
        self.inference = inference
        self.num_samples = num_samples
        self.num_warmup = num_warmup
        self.num_chains = num_chains
        self.num_steps = num_steps
        self.random_state = random_state
        self.verbose = verbose

    # the grouping helpers, for the mixins
    _grouping = staticmethod(grouping_frame)
    _labels_of = staticmethod(factor_labels)

    # ------------------------------------------------------------ design
    def _fixed_design(self, X, fitting):
        """The fixed design ``(n, p)`` float64 and, when fitting, names and ``y``."""
        if self.formula is not None:
            if fitting:
                import formulae

                self.formula_fixed_ = formulae.design_matrices(self.fixed_formula_, X)
                dm = self.formula_fixed_
                self.feature_names_ = list(dm.common.as_dataframe().columns)
                return (np.asarray(np.asarray(dm.common), dtype=np.float64),
                        np.asarray(np.asarray(dm.response), dtype=np.float64).ravel())
            new = self.formula_fixed_.common.evaluate_new_data(X)
            return np.asarray(np.asarray(new), dtype=np.float64), None
        frame = X if isinstance(X, pd.DataFrame) else None
        A = np.asarray(X, dtype=np.float64)
        if A.ndim != 2:
            raise ValueError(f"X must be 2-d, got shape {A.shape}")
        if not np.isfinite(A).all():
            raise ValueError("X holds NaN or infinite values")
        if fitting:
            self.columns_ = (list(map(str, frame.columns)) if frame is not None
                             else [f"x{j}" for j in range(A.shape[1])])
            self.n_features_in_ = A.shape[1]
            self.feature_names_ = (["Intercept"] if self.fit_intercept else []) + self.columns_
        elif A.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {A.shape[1]} features, the fit had {self.n_features_in_}")
        if self.fit_intercept:
            A = np.column_stack([np.ones(len(A)), A])
        return A, None

    def _parse_formula(self):
        spec, fixed = bar_terms(self.formula)
        if not spec:
            raise ValueError(f"formula {self.formula!r} has no random-effect term "
                             "such as (1 | group)")
        response = self.formula.split("~")[0].strip()
        rhs = " + ".join(fixed) if "1" in fixed else " + ".join(["0", *fixed])
        self.fixed_formula_ = f"{response} ~ {rhs or '1'}"
        return spec

    def _slope_column(self, X, name, factor):
        if self.formula is not None or isinstance(X, pd.DataFrame):
            if name not in X.columns:
                raise ValueError(f"random-effect term {name!r} of {factor!r}: no column "
                                 f"{name!r} in X")
            return np.asarray(X[name], dtype=np.float64)
        if name not in self.columns_:
            raise ValueError(f"random-effect term {name!r} of {factor!r}: no column "
                             f"{name!r} (columns of an array are x0, x1, ...)")
        return np.asarray(X, dtype=np.float64)[:, self.columns_.index(name)]

    def _effect_design(self, X, name, terms, fitting):
        cols = []
        for t in terms:
            if t == "1":
                cols.append(np.ones(len(X)))
                continue
            c = self._slope_column(X, t, name)
            if fitting and np.ptp(c) == 0:
                raise ValueError(f"random slope on {t!r} in the term of {name!r}: the "
                                 "column is constant")
            cols.append(c)
        return np.column_stack(cols)

    # ------------------------------------------------------------ fit
    def fit(self, X, y=None, groups=None, exposure=None, X_zero=None):
        """Fit by maximum marginal likelihood or the Bayesian engine ``inference`` names.

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        y : array-like, shape ``(n,)`` (not with a formula)
        groups : DataFrame, dict of arrays or array, ``n`` rows (not with a formula)
        exposure : array-like, shape ``(n,)``, optional
        X_zero : array-like or DataFrame, shape ``(n, p_zero)``, optional
            The zero part's covariates (zero-inflated and hurdle families; without an
            intercept column), or give them as ``zero_formula``'s fixed terms. Without
            either the zero part is intercept-only.
        """
        fam = families.get_family(self.family)
        if self.inference not in ENGINES:
            raise ValueError(f"inference must be one of {ENGINES}, got {self.inference!r}")
        if self.formula is not None:
            spec = self._parse_formula()
            if not isinstance(X, pd.DataFrame):
                raise ValueError("with formula=, X must be a data frame holding every column")
            Xf, y = self._fixed_design(X, True)
            frame = X
        else:
            Xf, _ = self._fixed_design(X, True)
            if y is None:
                raise ValueError("y is required (or give formula=)")
            frame = grouping_frame(groups, len(Xf))
            spec = self.random_effects or {str(c): ["1"] for c in frame.columns}
        zero_spec, zero_terms = zero_part_spec(self.zero_formula, self.zero_random_effects,
                                               fam)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != len(Xf):
            raise ValueError(f"y has {len(y)} rows but X has {len(Xf)}")
        Xz = self._zero_design(X, X_zero, len(Xf), True, fam, zero_terms)
        fam.check_target(y)
        effects, self.levels_, self.effect_factors_ = [], {}, {}
        part = fam.parts[0].name if zero_spec else None
        for key, terms, where in ([(k, t, None) for k, t in spec.items()]
                                  + [(k, t, part) for k, t in zero_spec.items()]):
            name = key if where is None else f"{where}|{key}"
            terms = list(terms)
            if len(set(terms)) != len(terms) or not terms:
                raise ValueError(f"random-effect terms of {name!r} must be distinct and "
                                 f"not empty, got {terms}")
            levels, codes = np.unique(factor_labels(frame, key), return_inverse=True)
            G, q = len(levels), len(terms)
            if G < 2:
                raise ValueError(f"random-effect term of {name!r} has one level: its "
                                 "variance is not identifiable")
            if G * q > len(y):  # an observation-level intercept (G = n) is allowed
                raise ValueError(f"random-effect term of {name!r} has {G * q} effects for "
                                 f"{len(y)} rows: not identifiable")
            Z = self._effect_design(frame if self.formula else X, key, terms, True)
            effects.append(RandomEffect(name, tuple(terms), torch.from_numpy(Z),
                                        torch.from_numpy(codes.astype(np.int64)), G,
                                        part=where))
            self.levels_[name] = levels
            self.effect_factors_[name] = (key, where)
        self.random_terms_ = {e.name: list(e.terms) for e in effects}
        t = None if exposure is None else torch.as_tensor(
            np.asarray(exposure, dtype=np.float64))
        data = MixedData(torch.from_numpy(Xf), tuple(effects), torch.from_numpy(y),
                         exposure=t, X_zero=None if Xz is None else torch.from_numpy(Xz))
        self.model_ = SoftplusGLMM(fam, beta=self.beta, threshold=self.threshold)
        rows = np.unique(np.linspace(0, data.n - 1, min(data.n, MAX_ROWS)).round()
                         .astype(np.int64))
        self._icc_data = (Xf[rows], [e.Z.numpy()[rows] for e in effects],
                          None if t is None else t.numpy()[rows],
                          None if Xz is None else Xz[rows])
        if self.inference in ("nuts", "svi"):
            self._fit_bayes(data)
            return self
        self.fit_ = fit_mixed_ml(self.model_, data, n_quadrature=self.n_quadrature,
                                 max_iter=self.max_iter, tol=self.tol)
        self._set_fitted(data)
        self.conditional_cov_ = self._conditional_cov(data)
        if self.inference == "laplace":
            self._fit_bayes(data)
        return self

    def _conditional_cov(self, data) -> dict:
        """``Lambda H_g^{-1} Lambda'`` of each level: the engine's with one factor; with
        several, each factor's block of ``H`` given the others at their modes (with a zero
        part's effects, the rows' curvature in the factor's own predictor)."""
        if self.fit_.mode_cov is not None:
            return {data.effects[0].name: self.fit_.mode_cov[0]}
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        lams = self.model_.factors(params, data)
        eta = self.model_.fixed_eta(params, data)
        fixed_parts, parts = self.model_.part_logits(params, data), {}
        for e, u in zip(data.effects, self.fit_.modes, strict=True):
            term = (e.Z * torch.as_tensor(u)[e.codes]).sum(-1)
            if e.part is None:
                eta = eta + term
            else:
                parts[e.part] = parts.get(e.part, fixed_parts[e.part]) + term
        if parts:
            (part, gate), = parts.items()
            _, _, d2 = row_derivatives_2(self.model_, eta, gate, params, data, part)
            W = floor_curvature(-d2)  # as the inner Newton solve floors it
        else:
            _, _, d2 = row_derivatives(self.model_, eta, params, data)
            W = (-d2).clamp_min(0)  # the curvature floored at 0, as the inner Newton solve
        out = {}
        for e, lam in zip(data.effects, lams, strict=True):
            A = e.Z @ lam  # (n, q): d eta / d v
            w = W if W.dim() == 1 else W[:, int(e.part is not None), int(e.part is not None)]
            H = torch.eye(e.q, dtype=A.dtype).repeat(e.n_groups, 1, 1).index_add(
                0, e.codes, w[:, None, None] * A[:, :, None] * A[:, None, :])
            out[e.name] = (lam @ torch.linalg.inv(H) @ lam.T).numpy()
        return out

    def _set_fitted(self, data):
        fit = self.fit_
        self.n_obs_ = data.n
        self.loglik_ = fit.log_lik
        coef = fit.params["coef"]
        self.intercept_ = float(coef[0]) if self.fit_intercept and not self.formula else 0.0
        self.coef_ = coef[1:] if self.fit_intercept and not self.formula else coef
        self._set_zero_part(fit.params)
        self.sd_, self.corr_, self.random_effects_ = {}, {}, {}
        for e, u in zip(data.effects, fit.modes, strict=True):
            sd = np.exp(fit.params[f"{e.name}_log_sd"])
            L = self.model_.factors({k: torch.as_tensor(v) for k, v in fit.params.items()},
                                    data)[data.effects.index(e)].numpy() / sd[:, None]
            self.sd_[e.name], self.corr_[e.name] = sd, L @ L.T
            self.random_effects_[e.name] = pd.DataFrame(u, index=self.levels_[e.name],
                                                        columns=list(e.terms))
        if fit.singular:
            warnings.warn(f"singular fit: {', '.join(fit.singular)} is not identified (its "
                          "variance is 0 or its correlation with another term is +-1); "
                          "drop the term", SingularFitWarning, stacklevel=3)
