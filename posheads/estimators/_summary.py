"""The coefficient table of a fitted GLM estimator, like statsmodels' ``summary()``.

For a MAP fit the table is frequentist: the mode, standard errors from a covariance
matrix of the chosen kind (model-based, heteroscedasticity- or cluster-robust; see
:mod:`posheads.estimators._covariance`), z statistics, two-sided p-values and Wald
intervals. A shape (the NB concentration) gets its interval from the one of
``u = softplus^-1(r)``, mapped back (so it stays positive), and no z statistic (``r = 0``
is not a hypothesis of interest). For a Bayesian fit, estimates are posterior means,
``std_err`` posterior standard deviations and the interval central quantiles of the draws.

Under a softplus link a coefficient is not a log rate ratio: ``d E[y] / d x_j`` is
``t * sigmoid(beta * eta) * w_j``, close to ``w_j`` counts per unit of ``x_j`` where the
predictor is large. The table therefore also gives the average marginal effect (AME) on
the count scale, ``mean_i d E[y_i] / d x_ij``: for a MAP fit with a standard error by the
delta method (its gradient in the parameters, through the same covariance), for a
Bayesian fit over the draws. For zero-inflated and hurdle models ``E[y]`` includes the
zero part, so a feature's AME adds its effect through the gate (``gate_coef_``) to that
through the count part, and (for a hurdle) the truncation of the count; it can then
differ in size and even in sign from the count part's coefficient. Where the zero part
has its own design (``X_zero``), a variable's effect goes through every part whose design
has a column of its name, and a variable only the zero part has gets its AME on its
``gate:<name>`` row.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ._covariance import (
    map_fit,
    natural_scale,
    parameter_blocks,
    predictors_of,
    theta_covariance,
)
from ._hypothesis_tests import normal_sf

__all__ = ["average_marginal_effects", "coefficient_table"]


def average_marginal_effects(model, data, values: dict, blocks: list,
                             create_graph: bool = False):
    """Average marginal effect of each variable on the expected count, per draw.

    ``E[y_i]`` depends on a variable ``v`` only through the linear predictors whose design
    has a column for it, so ``d E[y_i] / d x_iv`` is the sum over those predictors ``k``
    of ``dE/dk_i * coef_kv`` (with a zero part reading ``X``, every variable acts through
    both); one backward pass gives the derivatives in every predictor for every draw and
    row.

    Parameters
    ----------
    model : SoftplusGLM
    data : GLMData
    values : dict of str to Tensor
        Constrained site values with a leading draw dimension ``S``.
    blocks : list of Block
        The model's sites (:func:`~posheads.estimators._covariance.parameter_blocks`).
    create_graph : bool
        Keep the result differentiable in ``values`` (for the delta method).

    Returns
    -------
    (Tensor of shape (S, m), list of str)
        The effects of the ``m`` distinct variables and the table row of each: the count
        part's coefficient, or the first zero part's for a variable only it has.
    """
    family = model.family
    variables, rows = [], []
    for b in blocks:
        for v, label in zip(b.variables, b.labels if b.variables else (), strict=True):
            if v not in variables:
                variables.append(v)
                rows.append(label)
    with torch.enable_grad():
        eta, parts = predictors_of(model, values, data)
        if not create_graph:
            eta = eta.detach().requires_grad_(True)
            parts = {p: v.detach().requires_grad_(True) for p, v in parts.items()}
        shapes = {name: values[name][:, None] for name in family.shape_names}
        mean = model.predictor_distribution(eta, shapes, parts, data.exposure,
                                            validate_args=False).mean
        grads = torch.autograd.grad(mean.sum(), [eta, *parts.values()],
                                    create_graph=create_graph)
        slope = dict(zip(["eta", *parts], (g.mean(dim=1) for g in grads), strict=True))
        ame = eta.new_zeros(eta.shape[0], len(variables))
        for b in blocks:
            if b.variables:
                index = torch.tensor([variables.index(v) for v in b.variables],
                                     device=ame.device)
                ame = ame.index_add(1, index, slope[b.key][:, None] * values[b.site])
    return ame, rows


def coefficient_table(est, coverage: float = 0.9, cov_type: str = "model",
                      groups=None) -> pd.DataFrame:
    """Coefficient table of a fitted estimator.

    Parameters
    ----------
    est : fitted SoftplusGLMRegressor
    coverage : float
        Probability mass of the intervals.
    cov_type : {"model", "HC0", "HC1", "HC3", "cluster"}
        The covariance of a MAP fit's standard errors (see ``covariance_matrix``); a
        Bayesian fit takes only ``"model"`` (its draws).
    groups : array-like of shape (n_samples,), optional
        Cluster labels of the training rows, for ``cov_type="cluster"``.

    Returns
    -------
    pandas.DataFrame
        One row per parameter (``intercept``, the features, the family's shapes such as
        ``concentration``, and per part ``gate_intercept``, ``gate:<feature>``) with
        columns ``estimate``, ``std_err``, (MAP) ``z``, ``p_value``, then ``lower``,
        ``upper`` and, for the features, ``ame``, ``ame_std_err``, ``ame_lower``,
        ``ame_upper``; after NUTS also ``r_hat`` (NaN with one chain), ``ess_bulk``
        and ``ess_tail``. ``table.attrs["diagnostics"]`` holds the lines of the fit's
        :class:`~posheads.inference.checks.FitDiagnostics` (convergence, divergences,
        R-hat, ESS, the ELBO's plateau, and each warning).
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    if est.posterior_.method == "map":
        table = _map_table(est, coverage, cov_type, groups)
    elif cov_type != "model" or groups is not None:
        raise ValueError("cov_type and groups apply to MAP fits; a "
                         f"{est.posterior_.method!r} fit's uncertainty is its posterior")
    else:
        table = _posterior_table(est, coverage)
    diagnostics = getattr(est, "diagnostics_", None)
    if diagnostics is not None:  # the fit's own report, for printed summaries
        table.attrs["diagnostics"] = diagnostics.lines()
    return table


def _map_table(est, coverage, cov_type, groups) -> pd.DataFrame:
    """The frequentist table of a MAP fit (see the module docstring)."""
    fit = map_fit(est, "summary()")
    cov, keep = theta_covariance(fit, cov_type, groups)
    estimate, diag = natural_scale(fit)
    se_theta = cov.diagonal().clamp(min=0.0).sqrt()
    q = float(torch.special.ndtri(torch.tensor((1 + coverage) / 2, dtype=torch.float64)))
    with torch.no_grad():  # the interval of theta, mapped to the natural scale
        lower = _flat(fit, fit.theta - q * se_theta)
        upper = _flat(fit, fit.theta + q * se_theta)
    se = (se_theta * diag.abs()).cpu().numpy().astype(np.float64)
    estimate = estimate.cpu().numpy().astype(np.float64)
    z = estimate / se
    z[fit.shape_mask.cpu().numpy()] = np.nan
    table = pd.DataFrame({"estimate": estimate, "std_err": se, "z": z,
                          "p_value": 2.0 * normal_sf(np.abs(z)),
                          "lower": lower.cpu().double().numpy(),
                          "upper": upper.cpu().double().numpy()},
                         index=pd.Index(fit.labels, name="parameter"))
    with torch.enable_grad():
        theta = fit.theta.clone().requires_grad_(True)
        values = fit.model.unpack(theta[None], fit.layout)
        ame, names = average_marginal_effects(fit.model, fit.data, values, fit.blocks,
                                              create_graph=True)
        ame = ame[0]
        jac = torch.stack([torch.autograd.grad(a, theta, retain_graph=True)[0]
                           for a in ame]) if ame.numel() else theta.new_zeros(0, theta.numel())
    jac = jac[:, keep]
    ame_se = (jac @ cov @ jac.t()).diagonal().clamp(min=0.0).sqrt()
    ame = ame.detach()
    _put_ame(table, names, ame.cpu().numpy(), ame_se.cpu().numpy(),
             (ame - q * ame_se).cpu().numpy(), (ame + q * ame_se).cpu().numpy())
    return table


def _flat(fit, theta) -> torch.Tensor:
    """The natural-scale values at ``theta``, flat in the order of the layout."""
    values = fit.model.unpack(theta, fit.layout)
    return torch.cat([values[name].reshape(-1) for name, _ in fit.layout])


def _put_ame(table, names, ame, se, lower, upper):
    for column, v in [("ame", ame), ("ame_std_err", se), ("ame_lower", lower),
                      ("ame_upper", upper)]:
        table[column] = np.nan
        table.loc[names, column] = np.asarray(v, dtype=np.float64)


def _posterior_table(est, coverage) -> pd.DataFrame:
    """The table of a Bayesian fit: summaries of its draws."""
    post = est.posterior_
    draws = {k: v.detach() for k, v in post.draws().items()}
    q = [(1 - coverage) / 2, (1 + coverage) / 2]
    rows, blocks = [], parameter_blocks(est)
    for b in blocks:
        v = draws[b.site].reshape(draws[b.site].shape[0], -1).cpu().numpy().astype(np.float64)
        for j, label in enumerate(b.labels):
            lo, hi = np.quantile(v[:, j], q)
            rows.append({"parameter": label, "estimate": v[:, j].mean(),
                         "std_err": v[:, j].std(ddof=1) if len(v) > 1 else math.nan,
                         "lower": lo, "upper": hi})
    table = pd.DataFrame(rows).set_index("parameter")
    if post.method == "nuts":
        _put_sampler_columns(table, post, blocks)
    ame, names = average_marginal_effects(post.model, post.data, _thin(draws, 1000), blocks)
    ame = ame.detach().cpu().numpy()
    _put_ame(table, names, ame.mean(axis=0),
             ame.std(axis=0, ddof=1) if len(ame) > 1 else np.full(ame.shape[1], np.nan),
             np.quantile(ame, q[0], axis=0), np.quantile(ame, q[1], axis=0))
    return table


def _put_sampler_columns(table, post, blocks) -> None:
    """NUTS: each parameter's R-hat (NaN with one chain) and bulk / tail ESS, by arviz."""
    from posheads.inference.checks import draw_statistics

    columns = {"r_hat": [], "ess_bulk": [], "ess_tail": []}
    for b in blocks:
        v = post.samples[b.site].detach()
        v = v.reshape(v.shape[0], v.shape[1], -1)
        stats = draw_statistics(v)
        for name, values in columns.items():
            full = np.full(v.shape[-1], np.nan)
            full[stats["index"]] = stats[name]
            values.extend(full[:len(b.labels)])
    for name, values in columns.items():
        table[name] = np.asarray(values, dtype=np.float64)


def _thin(draws: dict, at_most: int) -> dict:
    """Every k-th draw so that at most ``at_most`` remain (marginal effects cost S passes)."""
    n = next(iter(draws.values())).shape[0]
    step = max(1, -(-n // at_most))
    return {k: v[::step] for k, v in draws.items()}
