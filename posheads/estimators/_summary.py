"""The coefficient table of a fitted GLM estimator, like statsmodels' ``summary()``.

Estimates are posterior means (the mode itself for MAP), ``std_err`` posterior standard
deviations and the interval central quantiles of the draws. A MAP fit has no draws, so
its table uses the Laplace approximation at the mode (the Gaussian with the inverse
Hessian as covariance: Wald intervals for the coefficients).

Under a softplus link a coefficient is not a log rate ratio: ``d E[y] / d x_j`` is
``t * sigmoid(beta * eta) * w_j``, close to ``w_j`` counts per unit of ``x_j`` where the
predictor is large. The table therefore also gives the average marginal effect (AME) on
the count scale, ``mean_i d E[y_i] / d x_ij``, with its interval over the draws. For
zero-inflated and hurdle models ``E[y]`` includes the zero part, so a feature's AME adds
its effect through the gate (``gate_coef_``) to that through the count part, and (for a
hurdle) the truncation of the count; it can then differ in size and even in sign from
the count part's coefficient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["coefficient_table"]

_LAPLACE_DRAWS = 4000


def _draws_of(est):
    """Posterior draws of every site, ``{site: (S, ...)}`` (Laplace draws for a MAP fit)."""
    post = est.posterior_
    if post.method != "map":
        return post.draws()
    if post.data is None:
        raise ValueError("this MAP fit was loaded without its training data, so its "
                         "Laplace intervals cannot be computed; refit to get a summary")
    from posheads.inference import fit_laplace

    lap = fit_laplace(post.model, post.data, num_samples=_LAPLACE_DRAWS, seed=0,
                      init=post.extra["map"], jacobian=False)
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in lap.samples.items()}


def _marginal_effects(est, draws) -> np.ndarray:
    """Per-draw average marginal effects of each feature on the expected count, (S, p).

    ``E[y_i]`` depends on ``x_ij`` only through the linear predictors, so
    ``d E[y_i] / d x_ij = dE/d eta_i * coef_j + sum over parts dE/d g_i * {part}_coef_j``;
    one backward pass gives the derivatives in every predictor for every draw and row.
    """
    post = est.posterior_
    model, data = post.model, post.data
    family = model.family
    eta, parts = model.predictors(draws, data.X, data.X_zero)
    eta = eta.requires_grad_(True)
    parts = {p: v.requires_grad_(True) for p, v in parts.items()}
    shapes = {name: draws[name][:, None] for name in family.shape_names}
    mean = model.predictor_distribution(eta, shapes, parts, data.exposure,
                                        validate_args=False).mean
    grads = torch.autograd.grad(mean.sum(), [eta, *parts.values()])
    ame = grads[0].mean(dim=1, keepdim=True) * draws["coef"]
    for grad, p in zip(grads[1:], parts, strict=True):
        ame = ame + grad.mean(dim=1, keepdim=True) * draws[f"{p}_coef"]
    return ame.detach().cpu().numpy()


def coefficient_table(est, coverage: float = 0.9) -> pd.DataFrame:
    """Coefficient table of a fitted estimator.

    Parameters
    ----------
    est : fitted SoftplusGLMRegressor
    coverage : float
        Probability mass of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per parameter (``intercept``, the features, the family's shapes such as
        ``concentration``, and per part ``gate_intercept``, ``gate:<feature>``) with
        columns ``estimate``, ``std_err``, ``lower``, ``upper`` and, for the features,
        ``ame``, ``ame_lower``, ``ame_upper``.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    draws = {k: v.detach() for k, v in _draws_of(est).items()}
    names = list(getattr(est, "feature_names_in_", [f"x{j}" for j in range(est.n_features_in_)]))
    q = [(1 - coverage) / 2, (1 + coverage) / 2]
    rows = []

    def add(label, values):
        v = values.cpu().numpy().astype(np.float64)
        lo, hi = np.quantile(v, q)
        rows.append({"parameter": label, "estimate": v.mean(), "std_err": v.std(ddof=1),
                     "lower": lo, "upper": hi})

    family = est.posterior_.model.family
    point = est.posterior_.point_estimate() if est.posterior_.method == "map" else None
    scalars = [s for s in ("intercept", *family.shape_names,
                           *(f"{p}_intercept" for p in family.part_names)) if s in draws]
    vectors = {"coef": names, **{f"{p}_coef": [f"{p}:{n}" for n in names]
                                 for p in family.part_names}}
    if "intercept" in draws:
        add("intercept", draws["intercept"])
    for j, name in enumerate(names):
        add(name, draws["coef"][:, j])
    for site in scalars:
        if site != "intercept":
            add(site, draws[site])
    for site, labels in vectors.items():
        if site != "coef":
            for j, label in enumerate(labels):
                add(label, draws[site][:, j])
    table = pd.DataFrame(rows).set_index("parameter")
    if point is not None:
        # A MAP fit reports the mode itself; the draws only give its spread.
        for site in scalars:
            table.loc[site, "estimate"] = float(point[site])
        for site, labels in vectors.items():
            table.loc[labels, "estimate"] = point[site].cpu().numpy()
    ame = _marginal_effects(est, _thin(draws, 1000))
    table["ame"] = np.nan
    table["ame_lower"] = np.nan
    table["ame_upper"] = np.nan
    table.loc[names, "ame"] = ame.mean(axis=0)
    table.loc[names, "ame_lower"] = np.quantile(ame, q[0], axis=0)
    table.loc[names, "ame_upper"] = np.quantile(ame, q[1], axis=0)
    return table


def _thin(draws: dict, at_most: int) -> dict:
    """Every k-th draw so that at most ``at_most`` remain (marginal effects cost S passes)."""
    n = next(iter(draws.values())).shape[0]
    step = max(1, -(-n // at_most))
    return {k: v[::step] for k, v in draws.items()}
