"""Forecast draws of the Laplace engine that carry the weights' uncertainty.

References are independent: the joint covariance of the last level and the weights against
NumPy's dense inverse of the full Hessian, the draws against that covariance, and a
forecaster's interval widening where a covariate is extrapolated. Small problems only: the
file runs in a few seconds.
"""

import numpy as np
import pandas as pd
import torch

from posheads.estimators.forecasting import CountForecaster
from posheads.estimators.forecasting.laplace import (
    LaplaceFit,
    draw_states,
    forecast_draws,
    state_cholesky,
    state_covariance,
)
from posheads.families import POISSON
from posheads.models.forecast_panel import LocalLevelPanel


def _dense_reference(w, f, sigma, level0_prec, weight_prec):
    """Covariance of ``(x_last, b)`` from the dense Hessian of the level path and weights."""
    t, k = f.shape
    q = np.zeros((t, t))
    for i in range(1, t):  # the walk's term (x_i - x_{i-1})**2 / (2 sigma**2)
        q[[i, i - 1], [i, i - 1]] += 1.0
        q[i, i - 1] -= 1.0
        q[i - 1, i] -= 1.0
    jac = np.hstack([np.eye(t), f])  # eta = x + f b
    h = jac.T @ np.diag(w) @ jac
    h[:t, :t] += q / sigma**2
    h[0, 0] += level0_prec
    h[t:, t:] += weight_prec * np.eye(k)
    keep = [t - 1, *range(t, t + k)]
    return np.linalg.inv(h)[np.ix_(keep, keep)]


def test_state_covariance_matches_the_dense_inverse():
    rng = np.random.default_rng(0)
    n_grid, n_series, n_steps, k = 2, 3, 14, 3
    w = rng.uniform(0.0, 4.0, size=(n_grid, n_series, n_steps))
    w[:, 0, :4] = 0.0  # left padding: no curvature
    f = rng.normal(size=(n_series, n_steps, k))
    sigma = np.array([0.05, 0.8])
    model = LocalLevelPanel(POISSON, bias=0.5)
    cov = state_covariance(model, torch.as_tensor(w), torch.as_tensor(f), torch.as_tensor(sigma))
    level0_prec, weight_prec = model.prior_precisions(n_series)
    assert weight_prec > 0
    for g in range(n_grid):
        for s in range(n_series):
            ref = _dense_reference(w[g, s], f[s], sigma[g], level0_prec, weight_prec)
            np.testing.assert_allclose(cov[g, s].numpy(), ref, rtol=1e-9, atol=1e-12)


def test_one_series_weights_are_free_but_finite():
    model = LocalLevelPanel(POISSON, bias=0.5, weight_sd=0.5)
    assert model.prior_precisions(1)[1] == 1e-2
    assert np.isclose(model.prior_precisions(4)[1], 0.75 / 0.25)


def test_draws_follow_the_state_covariance():
    rng = np.random.default_rng(1)
    k = 2
    a = rng.normal(size=(1 + k, 1 + k))
    cov = torch.as_tensor(a @ a.T / 4 + 0.05 * np.eye(1 + k))[None, None]
    chol = state_cholesky(cov)
    np.testing.assert_allclose((chol @ chol.mT).numpy(), cov.numpy(), rtol=1e-8)
    mode = torch.tensor([0.5, -0.2], dtype=torch.float64)
    fit = LaplaceFit(
        sigma=torch.tensor([0.1, 0.3], dtype=torch.float64),
        log_post=torch.tensor([[0.0], [-30.0]], dtype=torch.float64),  # the first value
        level=torch.full((2, 1, 5), 3.0, dtype=torch.float64),
        last_var=cov[..., 0, 0].expand(2, 1).clone(),
        weight=mode.expand(2, 1, k).clone(),
        log_shapes=torch.zeros(2, 1, 0, dtype=torch.float64),
        gates=torch.zeros(2, 1, 0, dtype=torch.float64),
        losses=[], state_cov=torch.cat([cov, 4.0 * cov]))
    torch.manual_seed(0)
    g, sigma, last, weight = draw_states(fit, 40_000)
    assert torch.all(g == 0) and torch.all(sigma == 0.1)
    state = torch.cat([last[..., None], weight], -1)[:, 0].numpy()
    np.testing.assert_allclose(state.mean(0), [3.0, 0.5, -0.2], atol=0.02)
    np.testing.assert_allclose(np.cov(state.T), cov[0, 0].numpy(), atol=0.02)
    # forecasts with and without the weights' spread: same centre, wider with it
    model = LocalLevelPanel(POISSON, bias=0.5)
    features = torch.full((1, 3, k), 2.0, dtype=torch.float64)
    scale = torch.ones(1, dtype=torch.float64)
    torch.manual_seed(1)
    with_cov, _ = forecast_draws(model, fit, scale, features, 20_000)
    fit.state_cov = None
    torch.manual_seed(1)
    without, _ = forecast_draws(model, fit, scale, features, 20_000)
    assert with_cov.var(0).min() > without.var(0).max()


def _series_with_covariate(seed, n=60):
    """Poisson counts around 200 whose rate moves with a covariate: the data pin the
    level well, the covariate's weight less so."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n + 14)
    eta = 0.54 + 0.3 * x
    y = rng.poisson(200.0 * np.logaddexp(0.0, eta))
    index = pd.date_range("2020-01-01", periods=n + 14, freq="D")
    return (pd.Series(y[:n], index=index[:n]),
            pd.DataFrame({"x": x}, index=index))


def test_extrapolated_covariate_widens_the_interval():
    y, X = _series_with_covariate(2)
    X_future = X.iloc[len(y):].copy()
    X_future["x"] = np.linspace(0.0, 6.0, len(X_future))  # up to 6 sd beyond the data
    est = CountForecaster((), num_samples=2000, random_state=0).fit(y, X.iloc[:len(y)])
    assert est.laplace_.state_cov is not None
    lo, hi = est.predict_interval(len(X_future), coverage=0.9, X_future=X_future).to_numpy().T
    width_with = hi - lo
    est.laplace_.state_cov = None  # weights at their mode: the previous draws
    lo0, hi0 = est.predict_interval(len(X_future), coverage=0.9, X_future=X_future).to_numpy().T
    width_without = hi0 - lo0
    # the weight's sd times the covariate grows along the horizon: so does the gap
    assert width_with[-1] > width_without[-1] * 1.05
    assert np.all(width_with[-3:] >= width_without[-3:])


def test_dispersion_floor_keeps_the_level_from_interpolating_the_counts():
    # NYC JFK's daily departures are under-dispersed (discretized logistic). Without a floor
    # on the dispersion, large level steps let the level pass through every count with a
    # dispersion near 0 -- a spurious mode whose Laplace evidence took all the grid's
    # weight and made the forecast intervals far too wide.
    import math

    from posheads.datasets import load_nyc_departures

    b = load_nyc_departures("D", origin="JFK", as_frame=True, fill_missing=True)
    X = b.data[["holiday", "precip", "wind_speed", "visib"]]
    y = b.target.astype(float)
    t1 = len(y) - 28 * 6
    fc = CountForecaster(num_samples=300, random_state=0).fit(y.iloc[:t1], X.iloc[:t1])
    assert fc.likelihood_ == "discretized_logistic"
    fit = fc.laplace_
    assert (fit.log_shapes >= math.log(0.05) - 1e-12).all()
    post = fit.log_post[:, 0].exp()
    sigma_mean = float((post * fit.sigma).sum())
    assert sigma_mean < 0.05, (post, fit.sigma)
    paths = np.asarray(fc.sample_paths(28, 300, X_future=X.iloc[t1:t1 + 28]))
    lo, hi = np.quantile(paths, [0.05, 0.95], axis=0)
    # the one-week-ahead 90% interval is a few tens of flights wide, not hundreds
    assert np.median((hi - lo)[:7]) < 60
