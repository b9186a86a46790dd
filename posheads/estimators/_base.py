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
from sklearn.utils.validation import check_is_fitted, validate_data

from posheads import families

from ._inference import inference_config, is_bayesian
from ._persist import PersistMixin
from ._streaming import StreamingMixin
from ._summary import coefficient_table
from ._validation import (
    check_counts,
    check_exposure,
    check_sample_weight,
    resolve_device,
    resolve_dtype,
    to_torch,
    torch_seed,
)

__all__ = ["SoftplusGLMRegressor", "regressor_for"]

# beta="auto": candidate softness values for the profile likelihood, then a golden-section
# refinement on log(beta) around the best one.
_BETA_GRID = np.geomspace(0.05, 20.0, 13)
# parameter sets that passed _validate_params, keyed by class, names, types and values
_VALID_PARAMS: set = set()


class SoftplusGLMRegressor(StreamingMixin, PersistMixin, RegressorMixin, BaseEstimator):
    """Base of the softplus-link regressors: a subclass declares ``family``.

    Attributes
    ----------
    family : Family or str
        The likelihood (class attribute; ``posheads.families.get_family`` resolves it).
        Its shapes become fitted attributes ``{shape}_`` (``concentration_``) and its
        parts ``{part}_intercept_`` and ``{part}_coef_`` (``gate_coef_``).

    Examples
    --------
    >>> from posheads.families import NEGATIVE_BINOMIAL
    >>> class MyNegativeBinomialRegressor(SoftplusGLMRegressor):
    ...     family = NEGATIVE_BINOMIAL
    >>> MyNegativeBinomialRegressor(alpha=0.5).get_params()["alpha"]
    0.5
    """

    family = families.POISSON
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
    def _validate_fit_data(self, X, y, sample_weight, exposure):
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc", "coo"], dtype=[np.float64, np.float32],
            y_numeric=True, reset=True, copy=False,
        )
        bayes = is_bayesian(self)
        integer = self._family.integer
        check_counts(y, integer=integer or bayes,
                     why=f"inference={self.inference!r} needs a proper count likelihood"
                     if bayes and not integer else "")
        w = check_sample_weight(sample_weight, X, dtype=np.float64)
        t = check_exposure(exposure, X.shape[0], np.float64)
        return X, np.asarray(y, dtype=np.float64), w, t

    def _validate_X(self, X, exposure=None):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc", "coo"],
                          dtype=[np.float64, np.float32], reset=False)
        return X, check_exposure(exposure, X.shape[0], np.float64)

    def _prediction_data(self, X, exposure=None):
        """Validated prediction inputs as the model's data object (torch, on the device).

        Every prediction method goes through here, so each input the estimators accept
        at predict time is checked and converted in one place.

        Returns
        -------
        models.data.GLMData
            ``y`` is ``None``.
        """
        X, t = self._validate_X(X, exposure)
        return self.posterior_.model.prediction_data(self._torch(X), self._torch(t))

    def _torch(self, a):
        return to_torch(a, device=self._device, dtype=self._dtype)

    @property
    def _family(self) -> families.Family:
        return families.get_family(self.family)

    # -------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, exposure=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Features. A sparse ``X`` stays sparse in the MAP engine. A dense array of
            the estimator's ``dtype`` on the CPU is used in place, not copied, and is
            never written to; ``summary()`` reads it again, so change a copy of it, not
            ``X`` itself, between ``fit`` and ``summary()``.
        y : array-like of shape (n_samples,)
            Counts (non-negative).
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: a weight of 2 counts a row twice, a weight of 0 drops it.
        exposure : array-like of shape (n_samples,), default=None
            Positive exposure ``t``: the mean is ``t * softplus(eta)``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        X, y, w, t = self._validate_fit_data(X, y, sample_weight, exposure)
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        # no weights when none were given: unit weights would cost a product per row
        data = self._glm_data(X, y, None if sample_weight is None else w, t, share=True)
        if self.beta == "auto":
            beta = self._profile_beta(data, w)
        else:
            beta = float(self.beta)
        self.posterior_ = self._fit_engine(data, w, beta)
        self.beta_ = beta
        self._set_fitted_attributes()
        return self

    def _glm_data(self, X, y, w, t, share=False):
        from posheads.models.glm import GLMData

        # fit() shares X, not copies it (as scikit-learn's estimators use it): the
        # posterior keeps it for summary() and the Laplace intervals, and nothing writes
        # into it. Mini-batches are copied: a stream may refill one buffer.
        return GLMData(
            X=to_torch(X, device=self._device, dtype=self._dtype, share=share), y=self._torch(y),
            exposure=self._torch(t), weights=self._torch(w),
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

        grid = np.log(_BETA_GRID)
        values = [objective(b) for b in grid]
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        return math.exp(_golden_section(objective, lo, hi, tol=1e-2))

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

    # ------------------------------------------------------------- predicting
    def _linear_predictor(self, X):
        X, _ = self._validate_X(X)
        return X @ self.coef_ + self.intercept_

    def predict(self, X, exposure=None):
        """Expected counts ``exposure * softplus(intercept + X @ coef)`` (posterior mean).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        exposure : array-like of shape (n_samples,), default=None

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        data = self._prediction_data(X, exposure)
        mean = self.posterior_.predict_mean(data.X, exposure=data.exposure, X_zero=data.X_zero)
        return mean.detach().cpu().numpy().astype(np.float64)

    def predict_interval(self, X, coverage=0.9, exposure=None):
        """Central posterior-predictive interval of the counts (plug-in for MAP).

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Lower and upper bounds, whole numbers.
        """
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        data = self._prediction_data(X, exposure)
        lo, hi = self.posterior_.predict_interval(data.X, coverage=coverage,
                                                  exposure=data.exposure, X_zero=data.X_zero,
                                                  seed=torch_seed(self.random_state))
        return np.stack([lo.cpu().numpy(), hi.cpu().numpy()], axis=1).astype(np.float64)

    def sample_posterior_predictive(self, X, n_samples=1000, exposure=None, random_state=None):
        """Draws of counts from the posterior predictive, shape ``(n_samples, n_rows)``."""
        data = self._prediction_data(X, exposure)
        draws = self.posterior_.sample_predictive(data.X, n_samples, exposure=data.exposure,
                                                  X_zero=data.X_zero,
                                                  seed=torch_seed(random_state))
        return draws.cpu().numpy()

    def score(self, X, y, sample_weight=None):
        """D², the fraction of Poisson deviance explained (as scikit-learn's GLMs).

        Returns
        -------
        float
        """
        mu = self.predict(X)
        y = np.asarray(y, dtype=np.float64)
        check_counts(y, integer=False)
        w = check_sample_weight(sample_weight, mu[:, None], dtype=np.float64)
        y_bar = np.average(y, weights=w)
        dev = np.sum(w * _poisson_unit_deviance(y, mu))
        dev_null = np.sum(w * _poisson_unit_deviance(y, np.full_like(y, y_bar)))
        return 1.0 - dev / dev_null

    # --------------------------------------------------------------- reports
    def summary(self, coverage=0.9):
        """Coefficient table with intervals and average marginal effects on the count scale."""
        check_is_fitted(self)
        return coefficient_table(self, coverage=coverage)

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
        state["coef_scale"] = model.coef_scale
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
    found = []
    todo = list(SoftplusGLMRegressor.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if families.get_family(cls.family) is family:
            found.append(cls)
    if not found:
        raise ValueError(f"no regressor declares the {family.name} family: define "
                         "`class MyRegressor(SoftplusGLMRegressor): family = ...`")
    found.sort(key=lambda c: not c.__module__.startswith("posheads."))
    return found[0]


def _poisson_unit_deviance(y, mu):
    # 2 (y log(y / mu) - (y - mu)) with 0 log 0 = 0; mu is floored at the smallest float
    # so a predicted zero mean gives a large, finite deviance.
    mu = np.maximum(mu, np.finfo(np.float64).tiny)
    ratio = np.where(y > 0, y / mu, 1.0)
    return 2.0 * (np.where(y > 0, y * np.log(ratio), 0.0) - (y - mu))


def _golden_section(f, lo, hi, tol):
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2

