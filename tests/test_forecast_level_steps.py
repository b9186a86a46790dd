"""Heavy-tailed level steps of the panel model: their law, its curvature, the banded algebra
weighted by it, and what they change in a fit.

References are independent: the step laws' log densities against their closed forms and
SciPy, their reweighting curvature against finite differences and as a majorizer, the
weighted tridiagonal elimination and state covariance against NumPy's dense algebra, the
draws against the law's tail probabilities, and a simulated series with one break in its
level against the true step size. Small problems only: the file runs in a few seconds.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from posheads.estimators.forecasting.forecaster import unit_bias
from posheads.estimators.forecasting.laplace import (
    default_sigma_grid,
    fit_panel_laplace,
    state_covariance,
    tridiagonal_elimination,
)
from posheads.families import POISSON
from posheads.models.forecast_panel import LocalLevelPanel, PanelData

LAWS = {"normal": {}, "student": {"level_df": 4.0}, "jumps": {"level_jumps": (0.05, 5.0)}}


def _reference_log_density(kw, z):
    """SciPy's log density of a standardised step (with its normalising constant)."""
    if "level_df" in kw:
        return stats.t(kw["level_df"]).logpdf(z)
    if "level_jumps" in kw:
        p, k = kw["level_jumps"]
        return np.logaddexp(np.log1p(-p) + stats.norm.logpdf(z),
                            np.log(p) + stats.norm(scale=k).logpdf(z))
    return stats.norm.logpdf(z)


@pytest.mark.parametrize("law", list(LAWS))
def test_step_log_density_matches_scipy_up_to_a_constant(law):
    model = LocalLevelPanel(POISSON, bias=0.5, **LAWS[law])
    z = np.linspace(-30.0, 30.0, 121)
    got = np.array([float(model.innovation_log_density(torch.tensor([[v]], dtype=torch.float64)))
                    for v in z])
    diff = got - _reference_log_density(LAWS[law], z)
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)


@pytest.mark.parametrize("law", list(LAWS))
def test_step_curvature_is_a_positive_majorizer_exact_at_zero(law):
    # the reweighting curvature c(z) bounds minus the log density from above by the
    # quadratic through z with its slope: a Newton step on it cannot increase the objective
    model = LocalLevelPanel(POISSON, bias=0.5, **LAWS[law])
    z = torch.linspace(-25.0, 25.0, 201, dtype=torch.float64)

    def nlp(v):
        return -model.innovation_log_density(v[..., None])

    zz = z.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(nlp(zz).sum(), zz)
    c = model.innovation_curvature(z)
    assert bool((c > 0).all())
    other = torch.linspace(-60.0, 60.0, 241, dtype=torch.float64)
    bound = nlp(z)[:, None] + slope[:, None] * (other - z[:, None]) \
        + 0.5 * c[:, None] * (other - z[:, None]) ** 2
    assert bool((nlp(other)[None, :] <= bound + 1e-9).all())
    h = 1e-4  # the exact curvature against finite differences; the weight equals it at 0
    exact = (nlp(z + h) - 2 * nlp(z) + nlp(z - h)) / h**2
    got = model.innovation_curvature(z, exact=True)
    np.testing.assert_allclose(got.numpy(), exact.numpy(), rtol=1e-5, atol=1e-6)
    assert bool((got <= c + 1e-12).all())
    zero = torch.zeros(1, dtype=torch.float64)
    np.testing.assert_allclose(float(model.innovation_curvature(zero)),
                               float(model.innovation_curvature(zero, exact=True)), rtol=1e-12)


@pytest.mark.parametrize("law", list(LAWS))
def test_step_draws_follow_the_law(law):
    model = LocalLevelPanel(POISSON, bias=0.5, **LAWS[law])
    torch.manual_seed(0)
    z = model.innovations((200_000,), torch.zeros((), dtype=torch.float64)).numpy()
    assert z.dtype == np.float64
    for q in (1.0, 3.0, 6.0):  # two-sided tail probabilities, by quadrature of the density
        grid = np.linspace(q, 200.0, 400_001)
        tail = 2 * np.trapezoid(np.exp(_reference_log_density(LAWS[law], grid)), grid)
        se = math.sqrt(tail * (1 - tail) / len(z))
        assert abs(np.mean(np.abs(z) > q) - tail) < 5 * se + 1e-5, (q, tail)


def _dense_walk(c, sigma):
    n = len(c) + 1
    q = np.zeros((n, n))
    for i, ci in enumerate(c):  # step i joins x_i and x_{i+1}
        q[[i, i + 1], [i, i + 1]] += ci
        q[i, i + 1] -= ci
        q[i + 1, i] -= ci
    return q / sigma**2


def test_weighted_elimination_and_state_covariance_match_dense_algebra():
    rng = np.random.default_rng(4)
    g, s, t, k = 2, 3, 13, 2
    w = rng.uniform(0.0, 4.0, size=(g, s, t))
    walk = rng.uniform(0.02, 1.5, size=(g, s, t - 1))
    f = rng.normal(size=(s, t, k))
    sigma = np.array([0.05, 0.4])
    model = LocalLevelPanel(POISSON, bias=0.5)
    logdet, last_var = tridiagonal_elimination(torch.as_tensor(w), torch.as_tensor(sigma),
                                               torch.as_tensor(walk))
    cov = state_covariance(model, torch.as_tensor(w), torch.as_tensor(f), torch.as_tensor(sigma),
                           torch.as_tensor(walk)).numpy()
    level0_prec, weight_prec = model.prior_precisions(s)
    for i in range(g):
        for j in range(s):
            q = _dense_walk(walk[i, j], sigma[i])
            h = np.diag(w[i, j]) + q
            sub = h[1:, 1:]  # the first level is a parameter in the evidence
            assert np.isclose(logdet[i, j].item(), np.linalg.slogdet(sub)[1], rtol=1e-10)
            assert np.isclose(last_var[i, j].item(), np.linalg.inv(sub)[-1, -1], rtol=1e-10)
            jac = np.hstack([np.eye(t), f[j]])
            full = jac.T @ np.diag(w[i, j]) @ jac
            full[:t, :t] += q
            full[0, 0] += level0_prec
            full[t:, t:] += weight_prec * np.eye(k)
            keep = [t - 1, *range(t, t + k)]
            np.testing.assert_allclose(cov[i, j], np.linalg.inv(full)[np.ix_(keep, keep)],
                                       rtol=1e-8, atol=1e-12)


def _broken_level(seed, n_steps=120, sigma=0.02, jump=-0.5, at=80):
    """Poisson counts (about 300 a step) around a random walk with one break."""
    rng = np.random.default_rng(seed)
    steps = sigma * rng.standard_normal(n_steps - 1)
    steps[at] = jump
    eta = 0.54 + np.r_[0.0, np.cumsum(steps)]
    mean = 300.0 * np.logaddexp(0.0, eta)
    y = torch.as_tensor(rng.poisson(mean), dtype=torch.float64)[None]
    data = PanelData(y, torch.ones_like(y), torch.zeros(1, n_steps, 0, dtype=torch.float64),
                     y.mean(-1))
    return data, mean[-1]


@pytest.mark.parametrize("seed", [1, 2])
def test_heavy_tailed_steps_keep_the_step_size_after_a_break(seed):
    # a normal walk pays for the break with every step (its sigma grows to 2-3 times the
    # truth); heavy-tailed steps take the break as one rare step and keep sigma near it
    data, last_mean = _broken_level(seed)
    found = {}
    for law in ("normal", "student", "jumps"):
        model = LocalLevelPanel(POISSON, bias=unit_bias(1.0), **LAWS[law])
        fit = fit_panel_laplace(model, data, default_sigma_grid(20))
        post = fit.log_post[:, 0].exp()
        found[law] = float((post * fit.sigma).sum())
        level = fit.level[post.argmax(), 0, -1]
        fitted = float(data.scale[0] * torch.nn.functional.softplus(level))
        assert abs(fitted / last_mean - 1) < 0.05, (law, fitted, last_mean)
    assert found["normal"] > 0.04, found
    assert found["student"] < 0.03, found
    assert found["jumps"] < 0.04, found
    assert max(found["student"], found["jumps"]) < 0.75 * found["normal"]



def _early_and_full(monkeypatch, fit, max_ratio):
    """Fit with the early stops and with none (``_OUTWEIGHED`` infinite); check that the
    early fit took fewer than ``max_ratio`` of the Newton steps and found the same posterior
    over the grid, and the same modes where that posterior has weight."""
    from posheads.estimators.forecasting import laplace_newton

    calls = []
    step = laplace_newton._newton_step

    def counted(*args):
        calls.append(1)
        return step(*args)

    monkeypatch.setattr(laplace_newton, "_newton_step", counted)
    early = fit().laplace_
    n_early = len(calls)
    calls.clear()
    monkeypatch.setattr(laplace_newton, "_OUTWEIGHED", math.inf)
    full = fit().laplace_
    assert n_early < max_ratio * len(calls), (n_early, len(calls))
    weight_early, weight_full = early.log_post.exp(), full.log_post.exp()
    np.testing.assert_allclose(weight_early, weight_full, atol=1e-5)
    carried = weight_full > 1e-3
    np.testing.assert_allclose(early.level[carried], full.level[carried], atol=1e-5)
    np.testing.assert_allclose(early.state_cov[carried], full.state_cov[carried], rtol=1e-4,
                               atol=1e-7)


def test_grid_values_the_evidence_rules_out_stop_early_without_changing_the_fit(monkeypatch):
    # with two-scale steps Newton crawls at step sizes the data rule out; stopping those
    # grid values (> 30 nats below the series' best, barely moving) leaves the posterior
    # over the grid, and the modes that carry its weight, as a full solve finds them (a
    # stopped series still informs the shared means of its grid value: the other series'
    # modes at that value move by up to 2e-3 on the eta scale, where their weight is 5e-4)
    from posheads.datasets import make_intermittent_panel
    from posheads.estimators.forecasting import CountForecaster

    frame, _ = make_intermittent_panel(12, 365, random_state=0)
    frame["y"] = frame.y.astype(float)
    _early_and_full(monkeypatch, lambda: CountForecaster(random_state=0, level_steps="jumps")
                    .fit(frame), 0.5)


def test_shared_means_settle_only_where_the_evidence_leaves_weight(monkeypatch):
    # the discretized logistic at the largest level steps follows the counts with its
    # dispersion at the floor, hundreds of nats below the best step: the passes over the
    # shared means no longer wait for those grid values to settle. The posterior over the
    # grid, and the modes that carry it, are those of a full solve
    from posheads.datasets import load_nyc_departures
    from posheads.estimators.forecasting import CountForecaster

    b = load_nyc_departures("D", origin="EWR", as_frame=True, fill_missing=True)
    y, X = b.target.iloc[:300], b.data[["holiday", "precip", "wind_speed", "visib"]].iloc[:300]
    _early_and_full(monkeypatch, lambda: CountForecaster(
        likelihood="discretized_logistic", random_state=0).fit(y, X), 0.6)
