"""Softplus GLMMs: the Laplace / AGHQ marginal likelihood against an independent scipy
reference, its gradient, maximum-likelihood recovery at known truth, the estimator's
predictions, formulas and bad input."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, optimize, special, stats

from posheads import families
from posheads.estimators.mixed import MixedCountRegressor, SingularFitWarning
from posheads.inference.mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik
from posheads.inference.mixed_ml import fit_mixed_ml
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from ._laplace_check import assert_gradient_matches_differences


def _softplus(x):
    return np.logaddexp(0.0, x)


def _simulate(rng, family, n, G, coef, sd, slope_sd=0.0, rho=0.0, shapes=None):
    codes = rng.integers(0, G, n)
    x = rng.normal(size=n)
    cov = np.array([[sd**2, rho * sd * slope_sd], [rho * sd * slope_sd, slope_sd**2]])
    u = rng.multivariate_normal([0.0, 0.0], cov, G) if slope_sd else \
        np.c_[rng.normal(0, sd, G), np.zeros(G)]
    eta = coef[0] + coef[1] * x + u[codes, 0] + u[codes, 1] * x
    y, _ = families.get_family(family).simulate(_softplus(eta), rng, shapes=shapes)
    return x, codes, y.astype(np.float64)


def _data(x, codes, y, G, slope=False):
    n = len(y)
    X = torch.tensor(np.c_[np.ones(n), x])
    Z = X.clone() if slope else torch.ones(n, 1, dtype=torch.float64)
    e = RandomEffect("g", ("1", "x") if slope else ("1",), Z, torch.tensor(codes), G)
    return MixedData(X, (e,), torch.tensor(y))


def _reference_log_lik(x, codes, y, G, coef, sd, logpmf):
    """log p(y) by adaptive scipy quadrature of each group's one-dimensional integral."""
    total = 0.0
    for g in range(G):
        idx = codes == g
        eta = coef[0] + coef[1] * x[idx]

        def log_f(u, eta=eta, idx=idx):
            return logpmf(y[idx], _softplus(eta + u)).sum() + stats.norm.logpdf(u, 0, sd)

        mode = optimize.minimize_scalar(lambda u: -log_f(u), bounds=(-10 * sd, 10 * sd),
                                        method="bounded", options={"xatol": 1e-10}).x
        peak = log_f(mode)
        val, _ = integrate.quad(lambda u, p=peak: math.exp(log_f(u) - p), mode - 12 * sd,
                                mode + 12 * sd, points=[mode], epsabs=0, epsrel=1e-13,
                                limit=400)
        total += peak + math.log(val)
    return total


POISSON = stats.poisson.logpmf


def _nb_logpmf(r):
    def logpmf(y, mu):
        return (special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
                + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu)))
    return logpmf


@pytest.mark.parametrize("family, shapes", [("poisson", {}), ("negative_binomial",
                                                              {"concentration": 3.0})])
def test_aghq_and_laplace_match_scipy_quadrature(family, shapes):
    rng = np.random.default_rng(0)
    G, coef, sd = 7, (1.0, 0.4), 0.8
    x, codes, y = _simulate(rng, family, 35, G, coef, sd, shapes=shapes)
    data, model = _data(x, codes, y, G), SoftplusGLMM(family)
    f64 = torch.float64
    params = {"coef": torch.tensor(coef, dtype=f64),
              "g_log_sd": torch.tensor([math.log(sd)], dtype=f64)}
    logpmf = POISSON
    if shapes:
        r = shapes["concentration"]
        # the flat vector holds the inverse softplus of the concentration
        params["concentration"] = torch.tensor(r + math.log(-math.expm1(-r)), dtype=f64)
        logpmf = _nb_logpmf(r)
    theta = model.pack(params, data)
    st = EffectsStructure(data.effects)
    z, ok = inner_mode(model, theta, data, st)
    assert ok
    ref = _reference_log_lik(x, codes, y, G, coef, sd, logpmf)
    aghq = float(marginal_log_lik(model, theta, data, st, z, 25))
    laplace = float(marginal_log_lik(model, theta, data, st, z, 1))
    assert abs(aghq - ref) < 1e-8
    # Laplace's error is O(1/n_g) per group (5 rows each here): small, not zero
    assert 1e-5 < abs(laplace - ref) < 0.02 * G


def test_gradient_through_the_mode_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, codes, y = _simulate(rng, "negative_binomial", 120, 10, (2.0, 0.8), 0.7,
                            slope_sd=0.4, rho=0.3, shapes={"concentration": 4.0})
    data, model = _data(x, codes, y, 10, slope=True), SoftplusGLMM("negative_binomial")
    # a second, crossed factor: the dense joint Hessian
    other = RandomEffect("h", ("1",), torch.ones(120, 1, dtype=torch.float64),
                         torch.tensor(rng.integers(0, 4, 120)), 4)
    data = MixedData(data.X, (*data.effects, other), data.y)
    theta = torch.tensor([1.9, 0.7, 1.2, -0.3, -0.9, 0.2, -1.0], dtype=torch.float64)
    assert_gradient_matches_differences(model, data, theta)


@pytest.mark.slow
def test_aghq_estimate_converges_and_matches_a_scipy_ml_fit():
    rng = np.random.default_rng(2)
    G = 12
    x, codes, y = _simulate(rng, "poisson", 60, G, (0.5, 0.5), 1.0)
    data, model = _data(x, codes, y, G), SoftplusGLMM("poisson")
    fits = {k: fit_mixed_ml(model, data, n_quadrature=k, compute_cov=False)
            for k in (1, 3, 9, 25)}
    gaps = [np.abs(fits[k].theta - fits[25].theta).max() for k in (1, 3, 9)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4
    # an independent ML fit (Nelder-Mead, no gradients) on the trapezoidal rule over a
    # fine fixed grid (exponentially accurate for these smooth, fast-decaying integrands)
    grid = np.linspace(-10.0, 10.0, 4001)

    def neg_log_lik(t):
        sd = math.exp(t[2])
        eta = t[0] + t[1] * x[:, None] + sd * grid[None, :]
        rows = POISSON(y[:, None], _softplus(eta))
        per_group = np.zeros((G, len(grid)))
        np.add.at(per_group, codes, rows)
        log_f = per_group + stats.norm.logpdf(grid)
        peak = log_f.max(1, keepdims=True)
        return -float((peak[:, 0] + np.log(np.trapezoid(np.exp(log_f - peak), grid))).sum())

    ref = optimize.minimize(neg_log_lik, fits[25].theta, method="Nelder-Mead",
                            options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 400})
    np.testing.assert_allclose(fits[25].theta, ref.x, atol=2e-4)
    assert abs(fits[25].log_lik + ref.fun) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("family, slope", [("poisson", False), ("negative_binomial", True)])
def test_recovery_at_known_truth(family, slope):
    rng = np.random.default_rng(3)
    coef, sd, slope_sd, rho, r = (2.0, 0.7), 0.6, 0.4, 0.4, 5.0
    shapes = {"concentration": r} if family != "poisson" else None
    x, codes, y = _simulate(rng, family, 3000, 150, coef, sd,
                            slope_sd=slope_sd if slope else 0.0, rho=rho, shapes=shapes)
    df = pd.DataFrame({"x": x})
    spec = {"g": ["1", "x"] if slope else ["1"]}
    m = MixedCountRegressor(family, random_effects=spec).fit(df, y, groups={"g": codes})
    s = m.summary()
    truth = {("fixed", "Intercept"): coef[0], ("fixed", "x"): coef[1], ("sd", "g: 1"): sd}
    if slope:
        truth |= {("sd", "g: x"): slope_sd, ("corr", "g: 1, x"): rho}
    if shapes:
        truth[("family", "concentration")] = r
    for key, value in truth.items():
        est, se = s.loc[key, "estimate"], s.loc[key, "std_error"]
        assert abs(est - value) < 3 * se, (key, est, se, value)


def test_zero_variance_is_estimated_near_zero_with_a_warning():
    rng = np.random.default_rng(4)
    x, codes, y = _simulate(rng, "poisson", 400, 20, (1.5, 0.5), 0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = MixedCountRegressor().fit(x[:, None], y, groups=codes)
    assert m.sd_["group"][0] < 0.05
    assert m.fit_.converged
    if m.sd_["group"][0] < 1e-4:
        assert any(issubclass(w.category, SingularFitWarning) for w in caught)


def test_predict_seen_and_new_groups():
    rng = np.random.default_rng(5)
    x, codes, y = _simulate(rng, "poisson", 300, 15, (1.0, 0.5), 1.2)
    m = MixedCountRegressor().fit(x[:, None], y, groups=codes)
    b0, b1, sd = m.intercept_, m.coef_[0], m.sd_["group"][0]
    u = m.random_effects_["group"]["1"]
    Xn = np.array([[0.3], [-1.0]])
    seen = m.predict(Xn, groups=np.array([u.index[2], u.index[2]]))
    np.testing.assert_allclose(seen, _softplus(b0 + b1 * Xn[:, 0] + u.iloc[2]), rtol=1e-12)
    new = m.predict(Xn, groups=np.array(["unseen", "unseen"]))
    ref = [integrate.quad(lambda v, e=b0 + b1 * xi: _softplus(e + v) * stats.norm.pdf(v, 0, sd),
                          -12 * sd, 12 * sd, epsabs=0, epsrel=1e-12)[0] for xi in Xn[:, 0]]
    np.testing.assert_allclose(new, ref, rtol=1e-8)
    assert (new > _softplus(b0 + b1 * Xn[:, 0])).all()  # convexity: above softplus(eta)
    np.testing.assert_allclose(m.predict(Xn), new, rtol=1e-12)  # no groups: population


def test_formula_matches_groups_and_crossed_factors_fit():
    rng = np.random.default_rng(6)
    x, codes, y = _simulate(rng, "poisson", 300, 12, (1.0, 0.5), 0.8)
    site = rng.integers(0, 4, 300)
    df = pd.DataFrame({"y": y, "x": x, "g": codes, "site": site})
    a = MixedCountRegressor(formula="y ~ x + (1 | g) + (1 | site)").fit(df)
    b = MixedCountRegressor().fit(df[["x"]], y, groups=df[["g", "site"]])
    assert abs(a.loglik_ - b.loglik_) < 1e-6
    np.testing.assert_allclose(a.fit_.theta, b.fit_.theta, atol=1e-4)
    assert a.bic() > a.aic()
    c = MixedCountRegressor(formula="y ~ x + (1 + x | g)").fit(df)
    assert c.summary().loc[("corr", "g: 1, x"), "estimate"] == pytest.approx(
        c.corr_["g"][1, 0])


def test_bad_input_names_the_problem():
    rng = np.random.default_rng(7)
    n = 60
    X = pd.DataFrame({"x": rng.normal(size=n), "c": np.ones(n)})
    y = rng.poisson(2.0, n)
    g = rng.integers(0, 6, n).astype(float)
    m = MixedCountRegressor
    bad = g.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="'group' holds missing"):
        m().fit(X, y, groups=bad)
    with pytest.raises(ValueError, match="groups has 59 rows"):
        m().fit(X, y, groups=g[:-1])
    with pytest.raises(ValueError, match=r"slope on 'c'.*constant"):
        m(random_effects={"group": ["1", "c"]}).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="'group' has one level"):
        m().fit(X, y, groups=np.zeros(n))
    with pytest.raises(ValueError, match="120 effects for 60 rows"):
        m(random_effects={"group": ["1", "x"]}).fit(X, y, groups=np.arange(n))
    with pytest.raises(ValueError, match="no column 'z'"):
        m(random_effects={"group": ["1", "z"]}).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="no random-effect term"):
        m(formula="y ~ x").fit(X.assign(y=y))
    one_row = g.copy()
    one_row[0] = 99.0  # a group with a single row is allowed
    m().fit(X, y, groups=one_row)


def test_pyro_face_matches_the_flat_parameterisation():
    import pyro
    from pyro import poutine

    rng = np.random.default_rng(8)
    x, codes, y = _simulate(rng, "negative_binomial", 60, 5, (1.0, 0.5), 0.7,
                            slope_sd=0.3, rho=0.2, shapes={"concentration": 3.0})
    data, model = _data(x, codes, y, 5, slope=True), SoftplusGLMM("negative_binomial")
    f64 = torch.float64
    sd, rho, r = torch.tensor([0.7, 0.3], dtype=f64), 0.2, torch.tensor(3.0, dtype=f64)
    L = torch.tensor([[1.0, 0.0], [rho, math.sqrt(1 - rho**2)]], dtype=f64)
    z = torch.tensor(rng.normal(size=(5, 2)))
    values = {"coef": torch.tensor([1.0, 0.5], dtype=f64), "concentration": r,
              "g_sd": sd, "g_corr_chol": L, "g_z": z}
    trace = poutine.trace(poutine.condition(model, values)).get_trace(data)
    obs = trace.nodes["obs"]["fn"].log_prob(trace.nodes["obs"]["value"]).sum()
    # the same rows through the flat vector (correlation factor raw value rho / sqrt(1-rho^2))
    theta = model.pack({"coef": values["coef"], "concentration": r + torch.log(-torch.expm1(-r)),
                        "g_log_sd": sd.log(),
                        "g_corr": torch.tensor([rho / math.sqrt(1 - rho**2)], dtype=f64)},
                       data)
    params = model.unpack(theta, data)
    st = EffectsStructure(data.effects)
    eta = model.fixed_eta(params, data) + st.eta(st.rows(model.factors(params, data)),
                                                   z.reshape(-1))
    assert float(obs) == pytest.approx(float(model.row_log_lik(eta, params, data).sum()),
                                       rel=1e-12)
    draws = pyro.infer.Predictive(model, num_samples=3)(data)
    assert draws["obs"].shape == (3, 60) and draws["g_z"].shape == (3, 5, 2)


def test_log_score_matches_scipy_for_seen_and_new_groups():
    rng = np.random.default_rng(3)
    g = rng.integers(0, 20, 400)
    x = rng.normal(size=(400, 1))
    y = rng.poisson(np.log1p(np.exp(1 + x[:, 0] + rng.normal(0, 0.5, 20)[g])))
    m = MixedCountRegressor().fit(x, y, groups=g)
    # a seen level: the Poisson pmf at its conditional mean
    np.testing.assert_allclose(m.log_score(x, y, groups=g),
                               stats.poisson.logpmf(y, m.predict(x, groups=g)), atol=1e-12)
    # a new level: the pmf averaged over the effect (fine trapezoid rule), not at the mean
    sd, coef = m.sd_["group"][0], m.fit_.params["coef"]
    z = np.linspace(-9.0, 9.0, 6001)
    for i in range(3):
        rate = np.logaddexp(0.0, coef[0] + coef[1] * x[i, 0] + sd * z)
        expected = np.log(np.trapezoid(stats.poisson.pmf(y[i], rate) * stats.norm.pdf(z), z))
        assert m.log_score(x[i:i + 1], y[i:i + 1])[0] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="rows"):
        m.log_score(x, y[:-1], groups=g)


def test_a_correlation_at_one_is_reported_as_a_singular_fit():
    # Epilepsy: a random slope for the fourth period is not supported; the fit puts the
    # slope's correlation with the intercept at -1 (the slope a multiple of the intercept)
    # with an SD well away from 0 -- singular by the correlation rule, not the SD rule.
    from posheads.datasets import load_epilepsy

    frame = load_epilepsy(as_frame=True).frame
    frame["lbase"] = np.log(frame["base"] / 4)
    frame["treat"] = (frame["trt"] == "progabide").astype(float)
    m = MixedCountRegressor("negative_binomial",
                            formula="y ~ lbase * treat + V4 + (1 + V4 | subject)")
    with pytest.warns(SingularFitWarning, match=r"subject\[V4\] is not identified"):
        m.fit(frame)
    assert abs(m.corr_["subject"][0, 1]) > 0.999
    assert m.sd_["subject"][1] > 1e-3
