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
its effect is shrunk towards 0 by the others.

Predictions: for a group seen in fitting the effect's conditional mode is used,
``softplus(eta + z'u_hat)``; for a new level the population-level mean
``E[softplus(eta + z'u)]`` over ``u ~ N(0, Sigma)`` by Gauss-Hermite quadrature, which is
larger than ``softplus(eta)`` because softplus is convex (see ``docs/mixed-models.md``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from posheads import families
from posheads.inference.mixed_laplace import row_derivatives
from posheads.inference.mixed_ml import fit_mixed_ml
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from .mixed_bayes import ENGINES, BayesianMixedMixin
from .mixed_icc import MAX_ROWS
from .mixed_predict import MixedPredictiveMixin
from .mixed_summary import MixedSummaryMixin

__all__ = ["MixedCountRegressor", "SingularFitWarning"]


class SingularFitWarning(UserWarning):
    """A variance component collapsed to 0 (the fit is on the boundary)."""


def _grouping_frame(groups, n):
    """The grouping columns as a frame of ``n`` rows (``ValueError`` naming a bad one)."""
    if groups is None:
        raise ValueError("groups is required (a frame, dict of arrays or 1-d array of "
                         "group labels), or give random-effect terms in formula=")
    if isinstance(groups, pd.Series):
        frame = groups.to_frame(groups.name if groups.name is not None else "group")
    elif isinstance(groups, pd.DataFrame):
        frame = groups
    elif isinstance(groups, dict):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in groups.items()})
    else:
        a = np.asarray(groups)
        if a.ndim == 1:
            frame = pd.DataFrame({"group": a})
        elif a.ndim == 2:
            frame = pd.DataFrame(a, columns=[f"group{j}" for j in range(a.shape[1])])
        else:
            raise ValueError(f"groups must be 1-d or 2-d, got shape {a.shape}")
    if len(frame) != n:
        raise ValueError(f"groups has {len(frame)} rows but X has {n}")
    for name in frame.columns:
        if frame[name].isna().any():
            raise ValueError(f"grouping column {name!r} holds missing values (NaN)")
    return frame


def _labels(frame, name):
    """The labels of factor ``name``; ``"a:b"`` joins columns ``a`` and ``b``."""
    cols = name.split(":")
    for c in cols:
        if c not in frame.columns:
            raise ValueError(f"random-effect term {name!r}: no grouping column {c!r} "
                             f"(have {list(frame.columns)})")
    if len(cols) == 1:
        return frame[cols[0]].astype(str).to_numpy()
    return frame[cols].astype(str).agg(":".join, axis=1).to_numpy()


class MixedCountRegressor(BayesianMixedMixin, MixedPredictiveMixin, MixedSummaryMixin,
                          RegressorMixin, BaseEstimator):
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
    sd_ : dict of str to ndarray
        Standard deviation of each factor's random terms.
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
                 n_quadrature=1, fit_intercept=True, beta=1.0, threshold=20.0,
                 max_iter=500, tol=1e-9, inference="ml", num_samples=1000, num_warmup=500,
                 num_chains=1, num_steps=2000, random_state=None, verbose=0):
        self.family = family
        self.random_effects = random_effects
        self.formula = formula
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
    _grouping = staticmethod(_grouping_frame)
    _labels_of = staticmethod(_labels)

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
        import formulae

        desc = formulae.model_description(self.formula)
        spec, fixed = {}, []
        for term in desc.terms:
            kind = type(term).__name__
            if kind == "GroupSpecificTerm":
                name = "1" if term.expr.name == "Intercept" else term.expr.name
                spec.setdefault(term.factor.name, []).append(name)
            elif kind == "Intercept":
                fixed.append("1")
            else:
                fixed.append(term.name)
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
    def fit(self, X, y=None, groups=None, exposure=None):
        """Fit by maximum marginal likelihood or the Bayesian engine ``inference`` names.

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        y : array-like, shape ``(n,)`` (not with a formula)
        groups : DataFrame, dict of arrays or array, ``n`` rows (not with a formula)
        exposure : array-like, shape ``(n,)``, optional
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
            frame = _grouping_frame(groups, len(Xf))
            spec = self.random_effects or {str(c): ["1"] for c in frame.columns}
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != len(Xf):
            raise ValueError(f"y has {len(y)} rows but X has {len(Xf)}")
        fam.check_target(y)
        effects, self.levels_ = [], {}
        for name, terms in spec.items():
            terms = list(terms)
            if len(set(terms)) != len(terms) or not terms:
                raise ValueError(f"random-effect terms of {name!r} must be distinct and "
                                 f"not empty, got {terms}")
            levels, codes = np.unique(_labels(frame, name), return_inverse=True)
            G, q = len(levels), len(terms)
            if G < 2:
                raise ValueError(f"random-effect term of {name!r} has one level: its "
                                 "variance is not identifiable")
            if G * q > len(y):  # an observation-level intercept (G = n) is allowed
                raise ValueError(f"random-effect term of {name!r} has {G * q} effects for "
                                 f"{len(y)} rows: not identifiable")
            Z = self._effect_design(frame if self.formula else X, name, terms, True)
            effects.append(RandomEffect(name, tuple(terms), torch.from_numpy(Z),
                                        torch.from_numpy(codes.astype(np.int64)), G))
            self.levels_[name] = levels
        self.random_terms_ = {e.name: list(e.terms) for e in effects}
        t = None if exposure is None else torch.as_tensor(
            np.asarray(exposure, dtype=np.float64))
        data = MixedData(torch.from_numpy(Xf), tuple(effects),
                         torch.from_numpy(y), exposure=t)
        self.model_ = SoftplusGLMM(fam, beta=self.beta, threshold=self.threshold)
        rows = np.unique(np.linspace(0, data.n - 1, min(data.n, MAX_ROWS)).round()
                         .astype(np.int64))
        self._icc_data = (Xf[rows], [e.Z.numpy()[rows] for e in effects],
                          None if t is None else t.numpy()[rows])
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
        several, each factor's block of ``H`` given the others at their modes."""
        if self.fit_.mode_cov is not None:
            return {data.effects[0].name: self.fit_.mode_cov[0]}
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        lams = self.model_.factors(params, data)
        eta = self.model_.fixed_eta(params, data)
        for e, u in zip(data.effects, self.fit_.modes, strict=True):
            eta = eta + (e.Z * torch.as_tensor(u)[e.codes]).sum(-1)
        _, _, d2 = row_derivatives(self.model_, eta, params, data)
        W = (-d2).clamp_min(0)  # the curvature floored at 0, as the inner Newton solve
        out = {}
        for e, lam in zip(data.effects, lams, strict=True):
            A = e.Z @ lam  # (n, q): d eta / d v
            H = torch.eye(e.q, dtype=A.dtype).repeat(e.n_groups, 1, 1).index_add(
                0, e.codes, W[:, None, None] * A[:, :, None] * A[:, None, :])
            out[e.name] = (lam @ torch.linalg.inv(H) @ lam.T).numpy()
        return out

    def _set_fitted(self, data):
        fit = self.fit_
        self.n_obs_ = data.n
        self.loglik_ = fit.log_lik
        coef = fit.params["coef"]
        self.intercept_ = float(coef[0]) if self.fit_intercept and not self.formula else 0.0
        self.coef_ = coef[1:] if self.fit_intercept and not self.formula else coef
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

    # ------------------------------------------------------------ criteria
    def aic(self) -> float:
        """Akaike's criterion ``-2 loglik + 2 k`` (``k`` fixed parameters; ML only)."""
        self._check_ml("aic")
        return -2.0 * self.loglik_ + 2.0 * len(self.fit_.theta)

    def bic(self) -> float:
        """Schwarz's criterion ``-2 loglik + k log(n)`` (ML only)."""
        self._check_ml("bic")
        return -2.0 * self.loglik_ + math.log(self.n_obs_) * len(self.fit_.theta)

    def _check_ml(self, what):
        check_is_fitted(self, "levels_")
        if self.inference != "ml":
            raise ValueError(f"{what} needs a maximum-likelihood fit (inference='ml'), "
                             f"this one is {self.inference!r}")

    # ------------------------------------------------------------ prediction
    def _eta_and_var(self, X, groups):
        """Linear predictor ``(n,)`` with seen levels' modes, and the unseen levels' variance."""
        check_is_fitted(self, "fit_")
        Xf, _ = self._fixed_design(X, False)
        n = len(Xf)
        frame = None
        if self.formula is not None:
            frame = X
        elif groups is not None:
            frame = _grouping_frame(groups, n)
        eta = Xf @ self.fit_.params["coef"]
        var = np.zeros(n)  # variance of the unseen levels' contributions
        for name, terms in self.random_terms_.items():
            Z = self._effect_design(frame if self.formula else X, name, terms, False)
            cov = self.sd_[name][:, None] * self.corr_[name] * self.sd_[name][None, :]
            seen = np.zeros(n, dtype=bool)
            if frame is not None and all(c in frame.columns for c in name.split(":")):
                labels = _labels(frame, name)
                pos = np.searchsorted(self.levels_[name], labels)
                pos = np.clip(pos, 0, len(self.levels_[name]) - 1)
                seen = self.levels_[name][pos] == labels
                u = self.random_effects_[name].to_numpy()[pos]
                eta = eta + np.where(seen, (Z * u).sum(1), 0.0)
            var = var + np.where(seen, 0.0, np.einsum("ij,jk,ik->i", Z, cov, Z))
        return Xf, eta, var

    def _node_distribution(self, X, groups, exposure, n_nodes):
        """The family's law at Gauss-Hermite nodes of each row's effect, and the weights."""
        Xf, eta, var = self._eta_and_var(X, groups)
        x, w = np.polynomial.hermite.hermgauss(n_nodes)
        nodes = eta[None, :] + math.sqrt(2.0) * np.sqrt(var)[None, :] * x[:, None]
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        t = None if exposure is None else torch.as_tensor(np.asarray(exposure, np.float64))
        data = MixedData(torch.from_numpy(Xf), (), exposure=t)
        law = self.model_.distribution(torch.from_numpy(nodes), params, data)
        return law, w / math.sqrt(math.pi)

    def predict(self, X, groups=None, exposure=None, n_nodes=32):
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

        Returns
        -------
        ndarray, shape ``(n,)``

        With a Bayesian engine the expectation is also averaged over (at most 400)
        posterior draws, each with its own effects and ``Sigma``.
        """
        check_is_fitted(self, "levels_")
        if self.inference != "ml":
            return self._bayes_average(X, groups, exposure, n_nodes)
        law, w = self._node_distribution(X, groups, exposure, n_nodes)
        return (w[:, None] * law.mean.numpy()).sum(0)

    def log_score(self, X, y, groups=None, exposure=None, n_nodes=32):
        """Predictive log density of each row: ``log p(y_i | data)``.

        A row of a level seen in the fit is scored at its conditional mode; a row of a new
        level (or without ``groups``) under the population law, its probability averaged
        over the random effects by Gauss-Hermite quadrature (the mean of the likelihood,
        not the likelihood at the mean).

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        y : array-like, shape ``(n,)``
        groups, exposure, n_nodes : as in :meth:`predict`

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
            return self._bayes_average(X, groups, exposure, n_nodes, y=y)
        law, w = self._node_distribution(X, groups, exposure, n_nodes)
        if len(y) != law.batch_shape[-1]:
            raise ValueError(f"y has {len(y)} rows but X has {law.batch_shape[-1]}")
        log_p = law.log_prob(torch.from_numpy(y)).numpy()
        return np.logaddexp.reduce(log_p + np.log(w)[:, None], axis=0)
