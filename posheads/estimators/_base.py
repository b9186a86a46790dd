"""The base of the softplus-link GLM estimators: :class:`SoftplusGLMRegressor`.

One base class does the work (validation, the choice of engine, prediction, scoring,
summaries, persistence); the public estimators in :mod:`posheads.estimators.glm` only
declare their family (``family = POISSON``), as scikit-learn's GLMs only choose a loss.
A regressor for a new likelihood is a subclass that declares its
:class:`~posheads.families.Family`. The engines and the model live in lower layers:
:class:`posheads.models.glm.SoftplusGLM` and :mod:`posheads.inference`.
"""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import (
    check_array,
    check_is_fitted,
    validate_data,
)

from posheads import families
from posheads.inference.checks import FitDiagnostics, diagnose

from ._inference import engine_budget, inference_config, is_bayesian
from ._inference_table import InferenceTableMixin
from ._persist import PersistMixin
from ._predictive import PredictiveMixin
from ._profile import grid_then_golden
from ._scoring import d2_score
from ._streaming import StreamingMixin
from ._summary import coefficient_table
from ._validation import (
    check_exposure,
    check_not_all_zero,
    check_sample_weight,
    check_target_scale,
    numeric_target,
    resolve_device,
    resolve_dtype,
    to_torch,
    torch_seed,
)
from .design import DataDesign, check_unique_columns, is_frame, needs_encoding, numeric_values

__all__ = ["SoftplusGLMRegressor", "regressor_for"]

# beta="auto": candidate softness values for the profile likelihood, then a golden-section
# refinement on log(beta) around the best one.
_BETA_GRID = np.geomspace(0.05, 20.0, 13)
# parameter sets that passed _validate_params, keyed by class, names, types and values
_VALID_PARAMS: set = set()


class SoftplusGLMRegressor(StreamingMixin, PersistMixin, PredictiveMixin,
                           InferenceTableMixin, RegressorMixin, BaseEstimator):
    """Base of the softplus-link regressors: a subclass declares ``family``.

    Attributes
    ----------
    family : Family or str
        The likelihood (class attribute; ``posheads.families.get_family`` resolves it).
        Its shapes become fitted attributes ``{shape}_`` (``concentration_``) and its
        parts ``{part}_intercept_`` and ``{part}_coef_`` (``gate_coef_``).
    coef_names_ : list of str
        The name of each coefficient: the design's columns (``health[poor]``) for a data
        frame or a formula, else ``feature_names_in_`` or ``x0, x1, ...``.
    zero_coef_names_ : list of str or None
        The names of the zero part's coefficients when it has its own design
        (``X_zero``, ``zero_formula``); ``None`` when it reads ``X``.
    design_ : DataDesign or None
        How a data frame or a formula became the design (re-applied at predict time);
        ``None`` for numeric arrays.

    Parameters ``formula`` and ``zero_formula`` (Wilkinson notation, through formulaic;
    see ``docs/formulas.md``) make ``fit`` read a data frame: ``formula="visits ~
    C(health) + age"`` with ``fit(df)``; pscl's ``"y ~ x | z"`` or ``zero_formula="~ z"``
    give the zero part of zero-inflated and hurdle models its own covariates.

    Examples
    --------
    >>> from posheads.families import NEGATIVE_BINOMIAL
    >>> class MyNegativeBinomialRegressor(SoftplusGLMRegressor):
    ...     family = NEGATIVE_BINOMIAL
    >>> MyNegativeBinomialRegressor(alpha=0.5).get_params()["alpha"]
    0.5
    """

    family = families.POISSON
    # parameters that "auto" chooses by profile likelihood over refits (not on a stream)
    searched_parameters: ClassVar[tuple[str, ...]] = ("beta",)
    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(numbers.Real, 0.0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "beta": [Interval(numbers.Real, 0.0, None, closed="neither"), StrOptions({"auto"})],
        "threshold": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "inference": [StrOptions({"map", "laplace", "svi", "nuts"}), HasMethods(["fit"])],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "num_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_warmup": [Interval(numbers.Integral, 0, None, closed="left")],
        "num_chains": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "device": [str, torch.device],
        "dtype": [str, torch.dtype, type],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "formula": [str, None],
        "zero_formula": [str, None],
    }

    def __init__(
        self,
        *,
        alpha=1.0,
        fit_intercept=True,
        beta=1.0,
        threshold=20.0,
        inference="map",
        max_iter=100,
        tol=1e-6,
        num_samples=1000,
        num_warmup=500,
        num_chains=1,
        num_steps=2000,
        batch_size=None,
        learning_rate=0.01,
        device="auto",
        dtype="float64",
        random_state=None,
        verbose=0,
        warm_start=False,
        formula=None,
        zero_formula=None,
    ):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.beta = beta
        self.threshold = threshold
        self.inference = inference
        self.max_iter = max_iter
        self.tol = tol
        self.num_samples = num_samples
        self.num_warmup = num_warmup
        self.num_chains = num_chains
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.formula = formula
        self.zero_formula = zero_formula

    @classmethod
    def _get_param_names(cls):
        # scikit-learn reads them from the signature of __init__ on every get_params()
        # (so on every fit, through the parameter validation); a class's signature
        # does not change, so each class reads it once.
        names = cls.__dict__.get("_param_names_cache")
        if names is None:
            names = super()._get_param_names()
            cls._param_names_cache = names
        return list(names)

    def _validate_params(self):
        # The check is a pure function of the parameter values (and their types), so a
        # set of hashable values that passed once passes again: skip scikit-learn's
        # constraint objects, a noticeable share of a small fit.
        params = self.get_params(deep=False)
        try:
            key = (type(self), tuple((k, type(v), v) for k, v in sorted(params.items())))
            hash(key)
        except TypeError:  # an unhashable value: check every time
            key = None
        if key is not None and key in _VALID_PARAMS:
            return
        super()._validate_params()
        if key is not None and len(_VALID_PARAMS) < 1024:
            _VALID_PARAMS.add(key)

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.positive_only = True
        return tags

    # ------------------------------------------------------------- validation
    def _validate_fit_data(self, X, y, sample_weight, exposure, offset=None, X_zero=None):
        """Checked training arrays ``X, y, w, t, offset, X_zero``; sets the input names.

        A formula, or a frame with categorical, string or boolean columns, goes through
        a :class:`~posheads.estimators.design.DataDesign` (kept as ``design_``); numeric
        arrays and frames through scikit-learn's ``validate_data``.
        """
        if self.formula is None and self.zero_formula is not None:
            raise ValueError("zero_formula needs formula as well")
        y = numeric_target(y)
        if self.formula is not None or needs_encoding(X) or needs_encoding(X_zero):
            if self.formula is None and not is_frame(X):
                raise TypeError("X_zero is a data frame with categorical columns; X must be "
                                f"a data frame as well, got {type(X).__name__}")
            # the design is built once, C-contiguous, in the estimator's dtype: fit()
            # shares it with the engine as it is
            dtype = self._design_dtype()
            design, X, Z, y = DataDesign.fit(
                X, formula=self.formula, zero_formula=self.zero_formula, X_zero=X_zero,
                fit_intercept=self.fit_intercept, y=y, dtype=dtype)
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                                 "target y is None")
            X = check_array(X, dtype=dtype)  # finite: no inf from a transform (no copy)
            Z = None if Z is None else check_array(Z, dtype=dtype)
            y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
            self.design_ = design
            self.feature_names_in_ = np.asarray(design.feature_names_in, dtype=object)
            self.n_features_in_ = len(self.feature_names_in_)
            names, zero_names = design.column_names, design.zero_column_names
        else:
            _name_non_numbers(X, "X")
            X, y = validate_data(
                self, X, y, accept_sparse=["csr", "csc", "coo"],
                dtype=[np.float64, np.float32], y_numeric=True, reset=True, copy=False,
            )
            self.design_ = None
            names = [str(c) for c in getattr(self, "feature_names_in_", [])] or \
                [f"x{j}" for j in range(X.shape[1])]
            Z = self._check_zero(X_zero, X.shape[0])
            zero_names = None
            if Z is not None:
                zero_names = [str(c) for c in X_zero.columns] if is_frame(X_zero) else \
                    [f"z{j}" for j in range(Z.shape[1])]
        if X.shape[0] != len(y):
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
        if (Z is not None or self.zero_formula is not None) and not self._family.parts:
            raise ValueError(f"the {self._family.name} family has no zero part: X_zero and "
                             "zero_formula are for zero-inflated and hurdle models")
        self.coef_names_, self.zero_coef_names_ = list(names), zero_names
        self.n_zero_features_in_ = None if Z is None else int(Z.shape[1])
        bayes = is_bayesian(self)
        family = self._family
        family.check_target(y, proper=bayes,
                            why=f"inference={self.inference!r} needs a proper count "
                            "likelihood" if bayes and not family.integer else "")
        check_target_scale(y, whole=family.support == "counts")
        w = check_sample_weight(sample_weight, X, dtype=np.float64)
        check_not_all_zero(y, w)
        t = check_exposure(exposure, X.shape[0], np.float64)
        o = _check_offset(offset, X.shape[0])
        return X, np.asarray(y, dtype=np.float64), w, t, o, Z

    def _check_zero(self, X_zero, n, q=None):
        """``X_zero`` of the array API as a checked array (``q`` columns if given)."""
        if X_zero is None:
            return None
        if not self._family.parts:
            raise ValueError(f"the {self._family.name} family has no zero part: X_zero is "
                             "for zero-inflated and hurdle models")
        _name_non_numbers(X_zero, "X_zero")
        Z = check_array(X_zero, accept_sparse=["csr", "csc", "coo"],
                        dtype=[np.float64, np.float32], input_name="X_zero")
        if Z.shape[0] != n:
            raise ValueError(f"X_zero has {Z.shape[0]} rows, X has {n}")
        if q is not None and Z.shape[1] != q:
            raise ValueError(f"X_zero has {Z.shape[1]} columns; the model was fitted with {q}")
        return Z

    def _validate_X(self, X, exposure=None, offset=None, X_zero=None):
        """Checked prediction arrays ``X, t`` (and, when asked, ``offset, X_zero``)."""
        check_is_fitted(self)
        design = getattr(self, "design_", None)
        if design is not None:
            dtype = self._design_dtype()
            X, Z = design.transform(X, X_zero, dtype=dtype)
            X = check_array(X, dtype=dtype)
            Z = None if Z is None else check_array(Z, dtype=dtype)
        else:
            _name_non_numbers(X, "X")
            X = validate_data(self, X, accept_sparse=["csr", "csc", "coo"],
                              dtype=[np.float64, np.float32], reset=False)
            q = getattr(self, "n_zero_features_in_", None)
            if q is not None and X_zero is None:
                raise ValueError("this estimator was fitted with X_zero: pass X_zero too")
            if q is None and X_zero is not None:
                raise ValueError("this estimator was fitted without X_zero")
            Z = self._check_zero(X_zero, X.shape[0], q)
        t = check_exposure(exposure, X.shape[0], np.float64)
        return X, t, _check_offset(offset, X.shape[0]), Z

    def _prediction_data(self, X, exposure=None, offset=None, X_zero=None):
        """Validated prediction inputs as the model's data object (torch, on the device).

        Every prediction method goes through here, so each input the estimators accept
        at predict time is checked and converted in one place: a data frame goes through
        the fitted ``design_`` (a formula's design, with its training state).

        Returns
        -------
        models.data.GLMData
            ``y`` is ``None``.
        """
        X, t, o, Z = self._validate_X(X, exposure, offset, X_zero)
        # a design built here from a frame is ours, not the caller's: used without a copy
        share = getattr(self, "design_", None) is not None
        return self.posterior_.model.prediction_data(
            self._torch(X, share), self._torch(t), X_zero=self._torch(Z, share),
            offset=self._torch(o))

    def _torch(self, a, share=False):
        return to_torch(a, device=self._device, dtype=self._dtype, share=share)

    def _design_dtype(self):
        """The numpy dtype of the estimator's ``dtype``: that of a frame's design."""
        return np.float32 if resolve_dtype(self.dtype) == torch.float32 else np.float64

    @property
    def _family(self) -> families.Family:
        return families.get_family(self.family)

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None, sample_weight=None, exposure=None, offset=None, X_zero=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Features. A data frame's categorical, string and boolean columns are encoded
            in treatment coding (``health[poor]``; the reference level is the first
            category, or the first in sorted order); with ``formula`` set, ``X`` is the
            data frame the formula reads. A sparse ``X`` stays sparse in the MAP engine.
            A dense array of the estimator's ``dtype`` on the CPU is used in place, not
            copied, and is never written to; ``summary()`` reads it again, so change a
            copy of it, not ``X`` itself, between ``fit`` and ``summary()``.
        y : array-like of shape (n_samples,), default=None
            Counts (non-negative). ``None`` only when ``formula`` names the response.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: a weight of 2 counts a row twice, a weight of 0 drops it.
        exposure : array-like of shape (n_samples,), default=None
            Positive exposure ``t``: the mean is ``t * softplus(eta)``.
        offset : array-like of shape (n_samples,), default=None
            A known term of the linear predictor: ``eta = offset + intercept + X @ coef``
            (under the softplus link this is not ``log(exposure)``: see
            ``docs/formulas.md``). Pass the same kind of offset to the prediction methods.
        X_zero : {array-like, sparse matrix, DataFrame} of shape (n_samples, q), default=None
            Covariates of the zero part of zero-inflated and hurdle models (default:
            ``X``); with a formula use ``zero_formula`` or ``"y ~ x | z"`` instead.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        X, y, w, t, o, Z = self._validate_fit_data(X, y, sample_weight, exposure, offset,
                                                   X_zero)
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        # no weights when none were given: unit weights would cost a product per row
        data = self._glm_data(X, y, None if sample_weight is None else w, t, share=True,
                              offset=o, X_zero=Z)
        if self.beta == "auto":
            beta = self._profile_beta(data, w)
        else:
            beta = float(self.beta)
        self.posterior_ = self._fit_engine(data, w, beta)
        self.beta_ = beta
        self._set_fitted_attributes()
        config = inference_config(self)
        self.diagnostics_ = diagnose(self.posterior_, budget=engine_budget(config),
                                     plateau=getattr(config, "patience", 1) is not None)
        return self

    def _glm_data(self, X, y, w, t, share=False, offset=None, X_zero=None):
        from posheads.models.glm import GLMData

        # fit() shares X, not copies it (as scikit-learn's estimators use it): the
        # posterior keeps it for summary() and the Laplace intervals, and nothing writes
        # into it. Mini-batches are copied: a stream may refill one buffer.
        return GLMData(
            X=to_torch(X, device=self._device, dtype=self._dtype, share=share), y=self._torch(y),
            exposure=self._torch(t), weights=self._torch(w), offset=self._torch(offset),
            X_zero=None if X_zero is None else to_torch(X_zero, device=self._device,
                                                        dtype=self._dtype, share=share),
        )

    def _coef_scale(self, weight_sum):
        # scikit-learn's objective, sum w d / (2 sum w) + alpha / 2 |coef|^2, is a Gaussian
        # prior of precision alpha * sum(w) on the coefficients (intercept unpenalised).
        return None if self.alpha == 0 else 1.0 / math.sqrt(self.alpha * float(weight_sum))

    def _model(self, beta, w):
        from posheads.models.glm import SoftplusGLM

        coef_scale = self._coef_scale(np.sum(w))
        return SoftplusGLM(
            self._family, beta=beta, threshold=float(self.threshold),
            fit_intercept=self.fit_intercept, coef_scale=coef_scale, intercept_scale=None,
        )

    def _fit_engine(self, data, w, beta):
        from posheads.inference import MAP, Laplace

        config = inference_config(self)
        model = self._model(beta, w)
        seed = torch_seed(self.random_state)
        options = {}
        if isinstance(config, (MAP, Laplace)):  # the mode search: a warm start, data checked
            init = None
            if self.warm_start and hasattr(self, "posterior_"):
                init = self.posterior_.extra.get("map")
            options = {"init": init, "check_input": False}
        return config.fit(model, data, seed=seed, verbose=self.verbose, **options)

    def _profile_beta(self, data, w):
        """Choose beta by profile likelihood: maximise the MAP log joint over log(beta)."""
        from posheads import inference

        def objective(log_beta):
            post = inference.fit_map(self._model(math.exp(log_beta), w), data,
                                     max_iter=self.max_iter, tol=self.tol)
            return -float(post.extra["log_joint"])

        return math.exp(grid_then_golden(objective, np.log(_BETA_GRID), tol=1e-2))

    def _set_fitted_attributes(self):
        post = self.posterior_
        means = post.point_estimate()
        coef = means.get("coef")
        self.coef_ = coef.detach().cpu().numpy().astype(np.float64)
        self.intercept_ = float(means["intercept"]) if self.fit_intercept else 0.0
        self.n_iter_ = int(post.extra.get("n_iter", 0))
        family = self._family
        for name in family.shape_names:
            setattr(self, f"{name}_", float(means[name]))
        if "concentration" in family.shape_names:
            self.dispersion_ = 1.0 / self.concentration_
        for part in family.part_names:
            if self.fit_intercept:
                setattr(self, f"{part}_intercept_", float(means[f"{part}_intercept"]))
            else:
                setattr(self, f"{part}_intercept_", 0.0)
            coef = means[f"{part}_coef"].detach().cpu().numpy().astype(np.float64)
            setattr(self, f"{part}_coef_", coef)
        # the maximised log-likelihood without the prior (nan for a Bayesian fit)
        self.loglik_ = self._fitted_log_likelihood()

    # ------------------------------------------------------------- predicting
    def _linear_predictor(self, X, offset=None):
        X, _, o, _ = self._validate_X(X, offset=offset)
        eta = X @ self.coef_ + self.intercept_
        return eta if o is None else eta + o

    def predict(self, X, exposure=None, offset=None, X_zero=None):
        """Expected counts ``exposure * softplus(offset + intercept + X @ coef)`` (posterior
        mean; for zero-inflated and hurdle models, with the zero part).

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            As in ``fit`` (a data frame goes through the fitted design).
        exposure : array-like of shape (n_samples,), default=None
        offset : array-like of shape (n_samples,), default=None
            Added to the count part's linear predictor, as in ``fit``.
        X_zero : {array-like, sparse matrix, DataFrame} of shape (n_samples, q), default=None
            The zero part's covariates, when the model was fitted with ``X_zero``.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        data = self._prediction_data(X, exposure, offset=offset, X_zero=X_zero)
        mean = self.posterior_.predict_mean(data.X, exposure=data.exposure, X_zero=data.X_zero,
                                            offset=data.offset)
        return mean.detach().cpu().numpy().astype(np.float64)

    def predict_interval(self, X, coverage=0.9, exposure=None, offset=None, X_zero=None):
        """Central posterior-predictive interval of the counts (plug-in for MAP).

        ``X``, ``exposure``, ``offset`` and ``X_zero`` as in :meth:`predict`.

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Lower and upper bounds, whole numbers.
        """
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        data = self._prediction_data(X, exposure, offset=offset, X_zero=X_zero)
        lo, hi = self.posterior_.predict_interval(data.X, coverage=coverage,
                                                  exposure=data.exposure, X_zero=data.X_zero,
                                                  seed=torch_seed(self.random_state),
                                                  offset=data.offset)
        return np.stack([lo.cpu().numpy(), hi.cpu().numpy()], axis=1).astype(np.float64)

    def sample_posterior_predictive(self, X, n_samples=1000, exposure=None, random_state=None,
                                    offset=None, X_zero=None):
        """Draws of counts from the posterior predictive, shape ``(n_samples, n_rows)``.

        ``X``, ``exposure``, ``offset`` and ``X_zero`` as in :meth:`predict`.
        """
        data = self._prediction_data(X, exposure, offset=offset, X_zero=X_zero)
        draws = self.posterior_.sample_predictive(data.X, n_samples, exposure=data.exposure,
                                                  X_zero=data.X_zero,
                                                  seed=torch_seed(random_state),
                                                  offset=data.offset)
        return draws.cpu().numpy()

    def score(self, X, y, sample_weight=None):
        """D², the fraction of the family's deviance explained (as scikit-learn's GLMs).

        The deviance is :meth:`Family.unit_deviance <posheads.families.Family.unit_deviance>`:
        the Poisson's for count families (what ``PoissonRegressor.score`` uses), the
        Gamma's and the Tweedie's (at the fitted power) for those families.

        Returns
        -------
        float
        """
        return d2_score(self._family, y, self.predict(X), sample_weight)

    # --------------------------------------------------------------- reports
    def summary(self, coverage=0.9, cov_type="model", groups=None):
        """Coefficient table: estimates, standard errors, (MAP) z statistics and p-values,
        intervals, and average marginal effects on the count scale with theirs.

        Parameters
        ----------
        coverage : float, default=0.9
        cov_type : {"model", "HC0", "HC1", "HC3", "cluster"}, default="model"
            The covariance of a MAP fit's standard errors (see :meth:`covariance_matrix`).
        groups : array-like of shape (n_samples,), optional
            The cluster of each training row, for ``cov_type="cluster"``.

        Returns
        -------
        pandas.DataFrame
            One row per parameter (see :func:`~posheads.estimators._summary.coefficient_table`).
        """
        check_is_fitted(self)
        return coefficient_table(self, coverage=coverage, cov_type=cov_type, groups=groups)

    def to_inference_data(self):
        """The fit as ``arviz.InferenceData`` (posterior, predictive, log-likelihood, data)."""
        check_is_fitted(self)
        return self.posterior_.to_inference_data()


    # ----------------------------------------------------------- persistence
    def _get_state(self) -> dict:
        post = self.posterior_
        model = post.model
        state = {k: v for k, v in vars(self).items()
                 if k.endswith("_") and not k.startswith("_") and k != "posterior_"}
        if "feature_names_in_" in state:
            state["feature_names_in_"] = [str(n) for n in state["feature_names_in_"]]
        if state.get("design_") is not None:  # JSON, saved in estimator.json
            state["design_"] = state["design_"].to_dict()
        state["coef_scale"] = model.coef_scale
        if isinstance(state.get("diagnostics_"), FitDiagnostics):  # JSON: a plain dict
            state["diagnostics_"] = state["diagnostics_"].to_dict()
        state["posterior"] = {
            "samples": dict(post.samples),
            "method": post.method,
            "num_chains": int(post.num_chains),
            "sample_stats": dict(post.sample_stats or {}),
            "extra": {k: v for k, v in post.extra.items()
                      if isinstance(v, (torch.Tensor, int, float, bool))},
        }
        return state

    def _set_state(self, state: dict) -> None:
        from posheads.models.glm import SoftplusGLM
        from posheads.posterior import Posterior

        state = dict(state)
        post = state.pop("posterior")
        coef_scale = state.pop("coef_scale")
        if "feature_names_in_" in state:
            state["feature_names_in_"] = np.asarray(state["feature_names_in_"], dtype=object)
        if state.get("design_") is not None:
            state["design_"] = DataDesign.from_dict(state["design_"])
        if isinstance(state.get("diagnostics_"), dict):
            state["diagnostics_"] = FitDiagnostics(**state["diagnostics_"])
        for k, v in state.items():
            setattr(self, k, v)
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        model = SoftplusGLM(self._family, beta=self.beta_, threshold=float(self.threshold),
                            fit_intercept=self.fit_intercept, coef_scale=coef_scale,
                            intercept_scale=None)
        samples = {k: v.to(self._device) for k, v in post["samples"].items()}
        self.posterior_ = Posterior(model, samples, method=post["method"], data=None,
                                    num_chains=post["num_chains"],
                                    sample_stats=post["sample_stats"] or None,
                                    extra=post["extra"])


def regressor_for(family) -> type[SoftplusGLMRegressor]:
    """The regressor class of a family: the subclass of :class:`SoftplusGLMRegressor` that
    declares it (posheads' own first, then any defined elsewhere).

    Parameters
    ----------
    family : str or Family

    Raises
    ------
    ValueError
        When no regressor declares the family.

    Examples
    --------
    >>> regressor_for("negative-binomial").__name__
    'NegativeBinomialSoftplusRegressor'
    """
    family = families.get_family(family)
    found = []  # a member of a collection (Tweedie at one power): its representative's
    todo = list(SoftplusGLMRegressor.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if families.get_family(cls.family) is family.canonical:
            found.append(cls)
    if not found:
        raise ValueError(f"no regressor declares the {family.name} family: define "
                         "`class MyRegressor(SoftplusGLMRegressor): family = ...`")
    found.sort(key=lambda c: not c.__module__.startswith("posheads."))
    return found[0]


def _check_offset(offset, n):
    """The offset as a finite float64 vector of ``n`` entries (a copy), or None."""
    if offset is None:
        return None
    o = check_array(offset, ensure_2d=False, dtype=np.float64, input_name="offset",
                    copy=True)
    if o.ndim != 1 or o.shape[0] != n:
        raise ValueError(f"offset must have shape ({n},), got {o.shape}")
    return o


def _name_non_numbers(X, name):
    """Raise a ``ValueError`` naming the column and the first row of a string in a numeric
    array or frame (scikit-learn's message names neither)."""
    if is_frame(X):
        check_unique_columns(X)
        for c in X.columns:
            if X[c].dtype == object:
                numeric_values(X[c], str(c), X)
        return
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 2:
        import pandas as pd

        frame = pd.DataFrame(X, columns=[f"{name}[:, {j}]" for j in range(X.shape[1])])
        for c in frame.columns:
            numeric_values(frame[c], c, frame)

