"""Group effects in the zero part of zero-inflated and hurdle GLMMs (glmmTMB's
``ziformula = ~ (1 | g)``): the Laplace marginal likelihood against an independent
two-dimensional adaptive Gauss-Hermite reference in numpy/scipy, its gradient against
finite differences, recovery in simulation, no change without zero-part effects, and bad
input."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import optimize, special

from posheads.estimators.mixed import MixedCountRegressor
from posheads.inference.mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik
from posheads.inference.mixed_ml import fit_mixed_ml
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from ._laplace_check import assert_gradient_matches_differences, laplace_value
from ._zero_part_reference import softplus, zip_logpmf


def _simulate_zip(rng, n, G, coef, gate, sd_count, sd_zero):
    codes = np.sort(rng.integers(0, G, n))
    x = rng.normal(size=n)
    u, v = rng.normal(0, sd_count, G), rng.normal(0, sd_zero, G)
    mu = softplus(coef[0] + coef[1] * x + u[codes])
    inflated = rng.random(n) < special.expit(gate + v[codes])
    y = np.where(inflated, 0.0, rng.poisson(mu)).astype(np.float64)
    return x, codes, y


def _data(x, codes, y, G, count=True):
    n = len(y)
    ones = torch.ones(n, 1, dtype=torch.float64)
    c = torch.tensor(codes)
    effects = ((RandomEffect("g", ("1",), ones, c, G),) if count else ()) + (
        RandomEffect("zi|g", ("1",), ones, c, G, part="gate"),)
    return MixedData(torch.tensor(np.c_[np.ones(n), x]), effects, torch.tensor(y))


def _reference(x, codes, y, G, coef, gate, sd_count, sd_zero, nodes):
    """log p(y) by adaptive Gauss-Hermite quadrature over each group's (z_count, z_zero)
    (tensor product of ``nodes`` per axis, centred at the mode and scaled by the
    Cholesky factor of the inverse Hessian; one node is the Laplace approximation)."""
    gh_x, gh_w = np.polynomial.hermite.hermgauss(nodes)
    X1, X2 = np.meshgrid(gh_x, gh_x, indexing="ij")
    pts = np.sqrt(2.0) * np.stack([X1.ravel(), X2.ravel()])              # (2, K^2)
    logw = np.log(np.outer(gh_w, gh_w).ravel()) + (pts**2).sum(0) / 2.0
    total = 0.0
    for g in range(G):
        i = codes == g
        eta = coef[0] + coef[1] * x[i]

        def f(z, eta=eta, i=i):
            z = np.asarray(z).reshape(2, -1)
            ll = zip_logpmf(y[i][:, None], softplus(eta[:, None] + sd_count * z[0]),
                             gate + sd_zero * z[1]).sum(0)
            return ll - 0.5 * (z**2).sum(0)

        res = optimize.minimize(lambda z: -f(z)[0], np.zeros(2), method="BFGS",
                                options={"gtol": 1e-11})
        m, h = res.x, 1e-4
        H = np.empty((2, 2))
        for a in range(2):
            for b in range(2):
                ea, eb = np.eye(2)[a] * h, np.eye(2)[b] * h
                H[a, b] = -(f(m + ea + eb) - f(m + ea - eb) - f(m - ea + eb)
                            + f(m - ea - eb))[0] / (4 * h * h)
        L = np.linalg.cholesky(np.linalg.inv(H))
        z = m[:, None] + L @ pts
        vals = f(z) + logw
        total += (special.logsumexp(vals) + np.log(np.linalg.det(L)) - np.log(2 * np.pi)
                  + np.log(2.0))  # jacobian sqrt(2)^2 of the nodes
    return total


TRUTH = {"coef": (0.8, 0.5), "gate": -0.4, "sd_count": 0.5, "sd_zero": 0.9}


def _theta(model, data, coef, gate, sd_count, sd_zero, count=True):
    p = {"coef": torch.tensor(coef, dtype=torch.float64),
         "gate_intercept": torch.tensor(gate, dtype=torch.float64),
         "zi|g_log_sd": torch.tensor([math.log(sd_zero)], dtype=torch.float64)}
    if count:
        p["g_log_sd"] = torch.tensor([math.log(sd_count)], dtype=torch.float64)
    return model.pack(p, data)


def test_reference_laplace_and_quadrature():
    # the one-node reference is the Laplace value; many nodes converge on the integral
    rng = np.random.default_rng(1)
    G = 6
    x, codes, y = _simulate_zip(rng, 90, G, **TRUTH)
    args = (x, codes, y, G, *TRUTH.values())
    exact = _reference(*args, nodes=40)
    assert abs(_reference(*args, nodes=30) - exact) < 1e-8
    assert abs(_reference(*args, nodes=1) - exact) < 0.05 * G


def test_laplace_matches_reference_and_gradient():
    rng = np.random.default_rng(2)
    G = 6
    x, codes, y = _simulate_zip(rng, 90, G, **TRUTH)
    data, model = _data(x, codes, y, G), SoftplusGLMM("zip")
    theta = _theta(model, data, **TRUTH)
    value = float(laplace_value(model, data, theta).detach())
    args = (x, codes, y, G, *TRUTH.values())
    # the engine's Laplace value is the one-node quadrature, to the reference's accuracy
    assert value == pytest.approx(_reference(*args, nodes=1), abs=1e-6)
    # and within the Laplace error of the integral (a few hundredths per group here)
    exact = _reference(*args, nodes=40)
    assert abs(value - exact) < 0.05 * G
    # the gradient through the inner solve against central differences
    assert_gradient_matches_differences(model, data, theta)


def test_recovery_of_zero_part_sd():
    rng = np.random.default_rng(0)
    G = 50
    x, codes, y = _simulate_zip(rng, 1500, G, **TRUTH)
    data, model = _data(x, codes, y, G), SoftplusGLMM("zip")
    fit = fit_mixed_ml(model, data)
    assert fit.converged
    se = np.sqrt(np.diag(fit.cov))
    sizes = [int(np.prod(s, dtype=int)) for s in model.layout(data).values()]
    at = dict(zip(model.layout(data), np.cumsum([0, *sizes[:-1]]), strict=True))
    for name, truth in [("zi|g_log_sd", math.log(TRUTH["sd_zero"])),
                        ("g_log_sd", math.log(TRUTH["sd_count"])),
                        ("gate_intercept", TRUTH["gate"])]:
        i = at[name]
        assert abs(fit.theta[i] - truth) < 2 * se[i], name


def test_no_zero_effects_fit_unchanged():
    # a count-part-only GLMM fits exactly as before zero-part effects existed (the
    # figures come from the code without them, same data and seed)
    rng = np.random.default_rng(5)
    G, n = 12, 240
    codes = np.sort(rng.integers(0, G, n))
    x = rng.normal(size=n)
    mu = np.logaddexp(0, 0.7 + 0.4 * x + rng.normal(0, 0.6, G)[codes])
    y = np.where(rng.random(n) < 0.3, 0.0, rng.poisson(mu)).astype(float)
    effect = RandomEffect("g", ("1",), torch.ones(n, 1, dtype=torch.float64),
                          torch.tensor(codes), G)
    data = MixedData(torch.tensor(np.c_[np.ones(n), x]), (effect,), torch.tensor(y))
    fit = fit_mixed_ml(SoftplusGLMM("zip"), data)
    assert fit.log_lik == pytest.approx(-273.178928442522, abs=1e-8)
    np.testing.assert_allclose(fit.theta, [0.6899354313268788, 0.37628524489247245,
                                           -0.5062227832139445, -0.8966835371483974],
                               rtol=0, atol=1e-8)


def test_one_block_per_level_matches_the_schur_path():
    # (1 | g) in both parts: one 2 x 2 block per level, the same Laplace value and
    # gradient as eliminating the count factor and keeping the zero factor in S
    rng = np.random.default_rng(7)
    G = 15
    x, codes, y = _simulate_zip(rng, 200, G, **TRUTH)
    data, model = _data(x, codes, y, G), SoftplusGLMM("zip")
    values = []
    for merge in (True, False):
        s = EffectsStructure(data.effects, merge=merge)
        assert s.blocked == merge and s.dense_size == (2 if merge else G)
        theta = _theta(model, data, **TRUTH).requires_grad_(True)
        z, ok = inner_mode(model, theta, data, s)
        assert ok
        value = marginal_log_lik(model, theta, data, s, z)
        grad, = torch.autograd.grad(value, theta)
        values.append((float(value.detach()), grad.numpy(), z.numpy()))
    (v1, g1, z1), (v2, g2, z2) = values
    assert abs(v1 - v2) < 1e-10
    np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-9)
    np.testing.assert_allclose(z1, z2, rtol=0, atol=1e-9)


def test_warm_start_keeps_the_effects_at_a_far_larger_sd(monkeypatch):
    # the ML fit warm-starts each inner solve from the last mode with its effects
    # u = sd z kept (EffectsStructure.rescale): at a trial count SD e^8 (the upper bound)
    # from a mode at 0.5 it reaches the mode a cold or plain warm start reaches, in far
    # fewer Newton steps than the plain warm start (whose predictors start e^8 / 0.5
    # times too far out); and the fit is the one with the plain warm start
    from posheads.inference import mixed_structure

    rng = np.random.default_rng(5)
    G = 40
    x, codes, y = _simulate_zip(rng, 1200, G, **TRUTH)
    data, model = _data(x, codes, y, G), SoftplusGLMM("zero_inflated_poisson")
    st = EffectsStructure(data.effects)
    near = _theta(model, data, TRUTH["coef"], TRUTH["gate"], 0.5, 0.9)
    far = _theta(model, data, TRUTH["coef"], TRUTH["gate"], math.exp(8.0), 0.9)
    z_near, ok = inner_mode(model, near, data, st)
    assert ok
    lams = [model.factors(model.unpack(t, data), data) for t in (near, far)]
    steps = []
    solve = mixed_structure.EffectsStructure.solve

    def counted(self, H, g):
        steps[-1] += 1
        return solve(self, H, g)

    monkeypatch.setattr(mixed_structure.EffectsStructure, "solve", counted)
    modes = []
    for z0 in (st.rescale(z_near, *lams), z_near, None):
        steps.append(0)
        z, ok = inner_mode(model, far, data, st, z0)
        assert ok
        modes.append(torch.cat([zk @ lam.T for zk, lam in zip(st.split(z), lams[1],
                                                                strict=True)]))
    np.testing.assert_allclose(modes[0].numpy(), modes[1].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(modes[0].numpy(), modes[2].numpy(), rtol=1e-6, atol=1e-6)
    assert 2 * steps[0] < steps[1], steps  # (from 0: about as few as the first)
    monkeypatch.setattr(mixed_structure.EffectsStructure, "solve", solve)

    fit = fit_mixed_ml(model, data, compute_cov=False)
    monkeypatch.setattr(mixed_structure.EffectsStructure, "rescale",
                        lambda self, z, old, new: z)
    plain = fit_mixed_ml(model, data, compute_cov=False)
    assert fit.converged and plain.converged
    assert abs(fit.log_lik - plain.log_lik) < 1e-6 * abs(plain.log_lik)
    np.testing.assert_allclose(fit.theta, plain.theta, atol=1e-4)


def test_many_levels_in_both_parts_stay_linear():
    # 10,000 levels of ~3 rows, (1 | g) in both parts: 20,000 effects. Two factors would
    # put 10,000 in a dense Schur complement (refused beyond dense_limit); one unit keeps
    # 2 x 2 blocks, so the largest dense matrix does not grow with the levels
    rng = np.random.default_rng(8)
    G = 10_000
    x, codes, y = _simulate_zip(rng, 3 * G, G, **TRUTH)
    codes[:G] = np.arange(G)  # every level occurs
    data, model = _data(x, codes, y, G), SoftplusGLMM("zip")
    s = EffectsStructure(data.effects)
    assert s.blocked and s.R == 2 * G and s.R_C == 0 and s.dense_size == 2
    with pytest.raises(ValueError, match="dense_limit=8000"):
        EffectsStructure(data.effects, merge=False)
    theta0 = _theta(model, data, **TRUTH)  # a start near the estimate: fewer iterations
    fit = fit_mixed_ml(model, data, theta0=theta0, compute_cov=False)
    assert fit.converged and np.isfinite(fit.log_lik)
    assert fit.z.shape == (2 * G,)
    assert [m.shape for m in fit.modes] == [(G, 1), (G, 1)]


@pytest.fixture(scope="module")
def zip_frame():
    rng = np.random.default_rng(0)
    x, codes, y = _simulate_zip(rng, 1200, 40, **TRUTH)
    return pd.DataFrame({"x": x, "g": codes, "y": y})


@pytest.fixture(scope="module")
def zip_fit(zip_frame):
    df = zip_frame
    return MixedCountRegressor("zip", zero_random_effects={"g": ["1"]}).fit(
        df[["x"]], df["y"], groups=df[["g"]])


def test_estimator_matches_engine_and_formula(zip_frame, zip_fit):
    df, m = zip_frame, zip_fit
    assert sorted(m.sd_) == ["g", "gate|g"]
    f = MixedCountRegressor("zip", formula="y ~ x + (1 | g)", zero_formula="~ (1 | g)").fit(df)
    assert f.loglik_ == pytest.approx(m.loglik_, abs=1e-8)
    np.testing.assert_allclose(f.sd_["gate|g"], m.sd_["gate|g"], atol=1e-6)
    data = _data(df["x"].to_numpy(), df["g"].to_numpy(), df["y"].to_numpy(), 40)
    fit = fit_mixed_ml(SoftplusGLMM("zip"), data, compute_cov=False)
    assert fit.log_lik == pytest.approx(m.loglik_, abs=1e-6)


def test_population_prediction_integrates_both_parts(zip_fit):
    # for a new level E[(1 - sigmoid(gate + v)) softplus(eta + u)] factorises over the
    # independent u, v: two one-dimensional integrals by scipy
    from scipy import integrate, stats

    m = zip_fit
    X = pd.DataFrame({"x": [-1.0, 0.0, 2.0]})
    got = m.predict(X, groups=pd.DataFrame({"g": [999, 999, 999]}))
    su, sv = float(m.sd_["g"][0]), float(m.sd_["gate|g"][0])
    gate = float(m.fit_.params["gate_intercept"])
    keep, _ = integrate.quad(lambda v: special.expit(-(gate + v)) * stats.norm.pdf(v, 0, sv),
                             -12 * sv, 12 * sv, epsabs=1e-13)
    for xi, gi in zip(X["x"], got, strict=True):
        eta = m.intercept_ + m.coef_[0] * xi
        mu, _ = integrate.quad(lambda u, e=eta: softplus(e + u) * stats.norm.pdf(u, 0, su),
                               -12 * su, 12 * su, epsabs=1e-13)
        assert gi == pytest.approx(keep * mu, rel=1e-8)
    # a seen level: its conditional modes in both parts
    u = m.random_effects_["g"].loc["3"].iloc[0]
    v = m.random_effects_["gate|g"].loc["3"].iloc[0]
    seen = m.predict(X[:1], groups=pd.DataFrame({"g": [3]}))
    eta = m.intercept_ + m.coef_[0] * -1.0 + u
    assert seen[0] == pytest.approx(special.expit(-(gate + v)) * softplus(eta), rel=1e-10)
    # the predictive law of a new level is a law: its probabilities sum to one
    ys = np.arange(60.0)
    X3 = pd.DataFrame({"x": np.zeros(60)})
    p = np.exp(m.log_score(X3, ys, groups=pd.DataFrame({"g": [999] * 60})))
    assert p.sum() == pytest.approx(1.0, abs=1e-8)


def test_draws_and_summary_carry_zero_part(zip_fit):
    m = zip_fit
    X = pd.DataFrame({"x": [0.0, 0.0]})
    g = pd.DataFrame({"g": [3, 999]})
    draws = m.sample_posterior_predictive(X, groups=g, n_samples=6000, random_state=1)
    pred = m.predict(X, groups=g)
    se = draws.std(0) / math.sqrt(len(draws))
    # parameter uncertainty moves the mean a little: within 4 MC SEs plus 3 %
    assert np.all(np.abs(draws.mean(0) - pred) < 4 * se + 0.03 * pred)
    table = m.summary()
    assert ("sd", "gate|g: 1") in table.index and ("icc", "gate|g") in table.index
    assert np.isfinite(table.loc["icc", "estimate"]).all()
    assert set(m.conditional_cov_) == {"g", "gate|g"}


@pytest.mark.parametrize("kwargs, match", [
    ({"family": "poisson", "zero_random_effects": {"g": ["1"]}}, "'g'.*no zero part"),
    ({"family": "negative_binomial", "zero_formula": "~ (1 | g)"}, "'g'.*no zero part"),
    ({"family": "zip", "zero_formula": "~ 0 + x + (1 | g)"}, "intercept"),
    ({"family": "zip", "zero_formula": "~ (1 | g)", "zero_random_effects": {"g": ["1"]}},
     "once"),
    ({"family": "zip", "zero_random_effects": {"h": ["1"]}}, "'h'"),
])
def test_bad_zero_part_input(zip_frame, kwargs, match):
    df = zip_frame
    kwargs = dict(kwargs)
    family = kwargs.pop("family")
    with pytest.raises(ValueError, match=match):
        MixedCountRegressor(family, **kwargs).fit(df[["x"]], df["y"], groups=df[["g"]])


def test_model_rejects_part_the_family_lacks():
    n = 4
    e = RandomEffect("zi|g", ("1",), torch.ones(n, 1, dtype=torch.float64),
                     torch.tensor([0, 0, 1, 1]), 2, part="gate")
    data = MixedData(torch.ones(n, 1, dtype=torch.float64), (e,), torch.zeros(n))
    with pytest.raises(ValueError, match=r"'zi\|g'.*no zero part"):
        SoftplusGLMM("poisson").layout(data)


@pytest.mark.parametrize("family", ["zinb", "hurdle_poisson"])
def test_gradient_other_families(family):
    # the implicit-derivative gradient of the Laplace value against central differences
    from posheads.inference.mixed_start import start_theta

    rng = np.random.default_rng(3)
    G = 5
    x, codes, y = _simulate_zip(rng, 60, G, **TRUTH)
    data, model = _data(x, codes, y, G), SoftplusGLMM(family)
    theta = start_theta(model, data) + 0.1
    assert_gradient_matches_differences(model, data, theta)


def test_count_scale_variances_with_zero_part():
    # ZIP at eta = 0: the mean is (1 - expit(gate)) log 2, so a zero-part effect
    # g ~ N(0, 1) explains log(2)^2 Var(expit(-g)) (scipy quadrature); with no zero-part
    # variance the two-predictor path equals the one-predictor one
    from scipy import integrate, stats

    from posheads.estimators.mixed_icc import N_NODES_2D, count_scale_variances

    model = SoftplusGLMM("zip")
    eta = torch.zeros(1, 3, dtype=torch.float64)
    params = {"gate_intercept": torch.zeros(1, 1, dtype=torch.float64)}
    one, nil = torch.ones_like(eta), torch.zeros_like(eta)
    v, v_u, _ = count_scale_variances(model, eta, [nil, one], params, parts=[None, "gate"])

    def moment(k):
        return integrate.quad(lambda g: special.expit(-g) ** k * stats.norm.pdf(g),
                              -12, 12, epsabs=1e-14)[0]

    want = math.log(2.0) ** 2 * (moment(2) - moment(1) ** 2)
    # N_NODES_2D = 8 nodes per axis: a relative error of about 3e-4 at an SD of 1
    assert float(v[1, 0]) == pytest.approx(want, rel=1e-3)
    assert float(v_u[0]) == pytest.approx(want, rel=1e-3)
    assert float(v[0, 0]) == pytest.approx(0.0, abs=1e-12)
    two = count_scale_variances(model, eta, [0.3 * one, nil], params, parts=[None, "gate"])
    ref = count_scale_variances(model, eta, [0.3 * one], params, n_nodes=N_NODES_2D)
    for a, b in zip(two, ref, strict=True):
        np.testing.assert_allclose(a[:1].numpy(), b.numpy(), rtol=1e-10)
