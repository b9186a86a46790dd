"""A table comparing fitted count models: fit, information criteria, predictive scores.

For each model: its log-likelihood on the training data at the estimate, AIC and BIC
(Akaike 1974; Schwarz 1978), the mean log predictive score on held-out data when given
(higher is better), and, for Bayesian fits that kept their training data, the
leave-one-out expected log predictive density ``elpd_loo`` by Pareto-smoothed importance
sampling (Vehtari, Gelman & Gabry 2017; computed by ArviZ, imported only for it).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .checks import check_predictive_model

__all__ = ["compare_models", "log_likelihood", "n_parameters"]


def n_parameters(model) -> int:
    """Number of scalar parameters estimated (coefficients, intercepts, shapes, parts)."""
    point = model.posterior_.point_estimate()
    return int(sum(v.numel() for v in point.values()))


def log_likelihood(model) -> float:
    """Training log-likelihood at the estimate (posterior mean for Bayesian fits).

    Uses the estimator's own ``loglik_`` when it is defined (MAP fits); otherwise evaluates the
    model's pointwise log-likelihood on the data kept by the fit, weighted by the
    training row weights.

    Raises
    ------
    ValueError
        For a fit loaded without its training data and without ``loglik_``.
    """
    value = getattr(model, "loglik_", None)
    if value is not None and math.isfinite(value):  # NaN: not a MAP fit
        return float(value)
    post = model.posterior_
    data = post.data
    if data is None or getattr(data, "y", None) is None:
        raise ValueError(f"{type(model).__name__} was loaded without its training data: "
                         "its log-likelihood cannot be computed; refit it")
    point = {k: v[None] for k, v in post.point_estimate().items()}
    ll = post.model.draw_log_likelihood(point, data)[0]
    w = data.weights
    return float((ll if w is None else ll * w).sum())


def _n_obs(model) -> float:
    """Training rows (the sum of the weights, with weights); NaN for a loaded fit."""
    data = model.posterior_.data
    if data is None:
        return math.nan
    w = data.weights
    return float(data.n if w is None else w.sum())


def _criteria(model, ll, k, n):
    """AIC and BIC of a MAP fit: the estimator's own ``aic()``/``bic()`` when it has them.

    Both are criteria of a maximised likelihood; Bayesian fits get NaN (compare them by
    ``elpd_loo``).
    """
    if model.posterior_.method != "map":
        return math.nan, math.nan
    if callable(getattr(model, "aic", None)) and callable(getattr(model, "bic", None)):
        return float(model.aic()), float(model.bic())
    return 2 * k - 2 * ll, k * math.log(n) - 2 * ll if n > 0 else math.nan


def _loo(model):
    post = model.posterior_
    if post.method == "map" or post.data is None:
        return math.nan, math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's Pareto-k warning: reported as a column
        import arviz as az

        loo = az.loo(post.to_inference_data(predictive=False), pointwise=True)
    return (float(loo.elpd_loo), float(loo.se), float(loo.p_loo),
            float(np.max(np.asarray(loo.pareto_k))))


def compare_models(models, X=None, y=None, *, exposure=None, offset=None, X_zero=None,
                   names=None):
    """Compare fitted models: log-likelihood, AIC/BIC, held-out log score, ``elpd_loo``.

    Parameters
    ----------
    models : dict of str to estimator, or sequence of estimators
        Fitted posheads GLM estimators (fitted to the same rows, for the information
        criteria to be comparable).
    X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features), optional
        Held-out features for the log score.
    y : array-like of shape (n_samples,), optional
        Held-out targets.
    exposure, offset : array-like of shape (n_samples,), optional
        Held-out exposures and offsets.
    X_zero : array-like of shape (n_samples, n_zero_features), optional
        Held-out features of the zero part.
    names : list of str, optional
        Row labels for a sequence of models (default: class name and engine).

    Returns
    -------
    pandas.DataFrame
        One row per model: ``n_params``, ``n_obs`` (training rows, or the sum of the
        training weights), ``loglik``, ``aic``, ``bic`` (NaN for Bayesian fits),
        ``log_score`` (mean log predictive probability of the held-out ``y``; NaN
        without it), ``elpd_loo``, ``se_elpd_loo``, ``p_loo`` and ``pareto_k_max``
        (NaN for MAP fits).
    """
    import pandas as pd

    if (X is None) != (y is None):
        raise ValueError("pass both X and y (held-out data) or neither")
    if isinstance(models, dict):
        labels, models = list(map(str, models)), list(models.values())
    else:
        models = list(models)
        labels = list(names) if names is not None else [
            f"{type(m).__name__}({getattr(m, 'inference', '?')})" for m in models]
    if not models:
        raise ValueError("models is empty: pass at least one fitted model")
    if len(labels) != len(models):
        raise ValueError(f"{len(labels)} name(s) for {len(models)} model(s)")
    if len(set(labels)) != len(labels):
        raise ValueError(f"model names must be unique, got {labels}")
    rows = []
    for model in models:
        check_predictive_model(model)
        ll, k, n = log_likelihood(model), n_parameters(model), _n_obs(model)
        aic, bic = _criteria(model, ll, k, n)
        score = math.nan if X is None else model.log_score(
            X, y, exposure=exposure, offset=offset, X_zero=X_zero)
        elpd, se, p_loo, khat = _loo(model)
        rows.append({"n_params": k, "n_obs": n, "loglik": ll, "aic": aic, "bic": bic,
                     "log_score": score, "elpd_loo": elpd, "se_elpd_loo": se,
                     "p_loo": p_loo, "pareto_k_max": khat})
    return pd.DataFrame(rows, index=pd.Index(labels, name="model"))
