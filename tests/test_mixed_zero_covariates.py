"""Covariates in the zero part of zero-inflated and hurdle GLMMs (glmmTMB's
``ziformula = ~ w + (1 | g)``; ``X_zero=`` or ``zero_formula``'s fixed terms): the marginal
log-likelihood against an independent Gauss-Hermite reference in numpy/scipy, the
closed-form Bayesian potential against autograd and Pyro's trace, recovery of a known
zero-part slope, the limit of vanishing group effects against the plain ZIP GLM, and bad
input."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import optimize, special

from posheads import families
from posheads.distributions import SoftplusHurdleNegativeBinomial
from posheads.estimators.glm import ZeroInflatedPoissonSoftplusRegressor
from posheads.estimators.mixed import MixedCountRegressor
from posheads.families import AutogradRows
from posheads.inference import MAP
from posheads.inference.mixed_bayes import GLMMTarget
from posheads.inference.mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik
from posheads.models.glm import GLMData, SoftplusGLM
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from ._laplace_check import assert_gradient_matches_differences, laplace_value
from ._zero_part_reference import potential_matches_autograd, softplus, zip_logpmf

TRUTH = {"coef": (0.6, 0.7), "gate": (-0.3, 1.2), "sd": 0.6}


def _simulate_zip(seed, n, G, coef, gate, sd, sd_zero=0.0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, G, n)
    x, w = rng.normal(size=n), rng.normal(size=n)
    u, v = rng.normal(0, sd, G), rng.normal(0, sd_zero, G)
    mu = softplus(coef[0] + coef[1] * x + u[codes])
    zero = rng.random(n) < special.expit(gate[0] + gate[1] * w + v[codes])
    y = np.where(zero, 0.0, rng.poisson(mu)).astype(np.float64)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": codes})


def _data(df, G, zero_effect=False):
    n = len(df)
    ones = torch.ones(n, 1, dtype=torch.float64)
    c = torch.tensor(df["g"].to_numpy())
    effects = (RandomEffect("g", ("1",), ones, c, G),)
    if zero_effect:
        effects += (RandomEffect("gate|g", ("1",), ones, c, G, part="gate"),)
    return MixedData(torch.tensor(np.c_[np.ones(n), df["x"]]), effects,
                     torch.tensor(df["y"].to_numpy()),
                     X_zero=torch.tensor(df[["w"]].to_numpy()))


def _theta(model, data, coef, gate, sd, sd_zero=None):
    f64 = torch.float64
    p = {"coef": torch.tensor(coef, dtype=f64), "gate_intercept": torch.tensor(gate[0], dtype=f64),
         "gate_coef": torch.tensor(gate[1:], dtype=f64),
         "g_log_sd": torch.tensor([math.log(sd)], dtype=f64)}
    if sd_zero is not None:
        p["gate|g_log_sd"] = torch.tensor([math.log(sd_zero)], dtype=f64)
    return model.pack(p, data)


def _reference(df, G, coef, gate, sd, nodes):
    """``log p(y)`` with a count-part random intercept by adaptive Gauss-Hermite quadrature
    in numpy/scipy: per group, centred at the mode of ``z`` and scaled by the curvature
    there (central differences); the zero part's logits ``gate[0] + gate[1] w``."""
    gh_x, gh_w = np.polynomial.hermite.hermgauss(nodes)
    y, x, w, codes = (df[k].to_numpy() for k in ("y", "x", "w", "g"))
    total = 0.0
    for g in range(G):
        i = codes == g
        eta, logit = coef[0] + coef[1] * x[i], gate[0] + gate[1] * w[i]

        def f(z, eta=eta, logit=logit, i=i):
            z = np.atleast_1d(z)
            ll = zip_logpmf(y[i][:, None], softplus(eta[:, None] + sd * z[None]),
                             logit[:, None]).sum(0)
            return ll - 0.5 * z**2

        m = optimize.minimize_scalar(lambda z: -f(z)[0], bracket=(-1.0, 1.0),
                                     options={"xtol": 1e-12}).x
        h = 1e-3  # the second difference's rounding error is eps |f| / h^2
        curv = -(f(m + h) - 2 * f(m) + f(m - h))[0] / h**2
        s = math.sqrt(2.0 / curv)
        vals = f(m + s * gh_x) + np.log(gh_w) + gh_x**2
        total += special.logsumexp(vals) + math.log(s) - 0.5 * math.log(2 * math.pi)
    return total


# ------------------------------------------------------------ (a) the marginal likelihood
def test_marginal_likelihood_matches_reference():
    G = 8
    df = _simulate_zip(11, 120, G, **TRUTH)
    data, model = _data(df, G), SoftplusGLMM("zip")
    theta = _theta(model, data, **TRUTH)
    exact = _reference(df, G, **TRUTH, nodes=60)
    assert abs(_reference(df, G, **TRUTH, nodes=40) - exact) < 1e-9  # converged
    structure = EffectsStructure(data.effects)
    z, ok = inner_mode(model, theta, data, structure)
    assert ok
    agq = float(marginal_log_lik(model, theta, data, structure, z, n_quadrature=40))
    assert agq == pytest.approx(exact, abs=1e-8)
    # Laplace is the one-node quadrature, within its error of the integral
    laplace = float(laplace_value(model, data, theta))
    assert laplace == pytest.approx(_reference(df, G, **TRUTH, nodes=1), abs=1e-6)
    assert laplace != pytest.approx(exact, abs=1e-6)
    # the zero-part slope matters: a wrong one moves the value by far more
    wrong = _theta(model, data, TRUTH["coef"], (-0.3, 0.0), TRUTH["sd"])
    assert float(laplace_value(model, data, wrong)) < laplace - 1.0


@pytest.mark.parametrize("zero_effect", [False, True])
def test_laplace_gradient_with_zero_covariates(zero_effect):
    G = 6
    df = _simulate_zip(3, 90, G, **TRUTH, sd_zero=0.5)
    data, model = _data(df, G, zero_effect), SoftplusGLMM("zip")
    theta = _theta(model, data, **TRUTH, sd_zero=0.7 if zero_effect else None)
    assert_gradient_matches_differences(model, data, theta)


@pytest.mark.parametrize("closed", [True, False])
def test_hurdle_nb_gradient(closed, monkeypatch):
    # a family with a shape: the rows in (eta, gate) from its closed forms (the
    # concentration at its value in theta) or, forced, from autograd
    if not closed:
        fam = families.HURDLE_NEGATIVE_BINOMIAL
        monkeypatch.setattr(fam, "rows", lambda y, exposure=None, weights=None, **kw:
                            AutogradRows(fam, y, exposure, weights, **kw))
    G = 5
    df = _simulate_zip(4, 70, G, **TRUTH)
    data, model = _data(df, G, zero_effect=True), SoftplusGLMM("hurdle_negative_binomial")
    p = SoftplusGLMM("zip").unpack(_theta(SoftplusGLMM("zip"), data, **TRUTH, sd_zero=0.5),
                                   data)
    p["concentration"] = torch.tensor(0.8, dtype=torch.float64)
    assert_gradient_matches_differences(model, data, model.pack(p, data))


# ------------------------------------------------------------ (b) the Bayesian target
@pytest.mark.parametrize("family", ["zero_inflated_poisson", "hurdle_negative_binomial"])
@pytest.mark.parametrize("zero_effect", [False, True])
def test_potential_matches_autograd_and_pyro(family, zero_effect):
    from pyro.infer.mcmc.util import initialize_model

    G = 6
    df = _simulate_zip(5, 80, G, **TRUTH)
    data, glmm = _data(df, G, zero_effect), SoftplusGLMM(family)
    target = GLMMTarget(glmm, data)
    assert [n for n, *_ in target.sites][:3] == ["coef", "gate_intercept", "gate_coef"]
    _, potential, transforms, _ = initialize_model(glmm, model_kwargs={"data": data})
    sl = target._potential.slices["gate_coef"]
    for theta, g in potential_matches_autograd(target):
        assert float(g[sl].abs().max()) > 1e-6  # the slope reaches the likelihood
        raw = {k: transforms[k](v) for k, v in target.unpack(theta).items()}
        assert float(target.log_joint(theta)) == pytest.approx(-float(potential(raw)),
                                                               rel=1e-10)


# ------------------------------------------------------------ (c) recovery
def _simulate_hurdle_nb(seed, n, G):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, G, n)
    x, w = rng.normal(size=n), rng.normal(size=n)
    eta = 1.0 + 0.6 * x + rng.normal(0, 0.5, G)[codes]
    law = SoftplusHurdleNegativeBinomial(torch.tensor(eta), torch.tensor(2.0),
                                         gate_logits=torch.tensor(-0.2 - 0.9 * w))
    torch.manual_seed(seed)
    return pd.DataFrame({"y": law.sample().numpy(), "x": x, "w": w, "g": codes})


@pytest.mark.parametrize("family, truth", [("zip", 1.2), ("hurdle_negative_binomial", -0.9)])
def test_recovery_of_zero_part_slope(family, truth):
    df = (_simulate_zip(21, 800, 30, **TRUTH) if family == "zip"
          else _simulate_hurdle_nb(22, 800, 30))
    m = MixedCountRegressor(family, formula="y ~ x + (1 | g)", zero_formula="~ w").fit(df)
    # the flat layout: coef (2), gate_intercept, gate_coef, ...
    estimate, se = m.fit_.theta[3], math.sqrt(m.fit_.cov[3, 3])
    assert abs(estimate - truth) < 2.5 * se
    assert 0.03 < se < 0.3
    assert float(m.gate_coef_[0]) == estimate
    # the criteria count the slope: coef (2), the gate's intercept and slope, the SD
    # (and the NB concentration)
    k = 5 + (family != "zip")
    assert len(m.fit_.theta) == k
    assert m.aic() == pytest.approx(-2 * m.loglik_ + 2 * k)
    assert m.bic() == pytest.approx(-2 * m.loglik_ + math.log(800) * k)


# ------------------------------------------------------------ (d) the GLM limit
def test_vanishing_group_effects_match_plain_zip_glm():
    G = 10
    df = _simulate_zip(7, 300, G, TRUTH["coef"], TRUTH["gate"], sd=0.0)
    glm = ZeroInflatedPoissonSoftplusRegressor(alpha=0.0, max_iter=500, tol=1e-10).fit(
        df[["x"]], df["y"], X_zero=df[["w"]])
    data, model = _data(df, G, zero_effect=True), SoftplusGLMM("zip")
    tiny = math.exp(-12.0)  # both SDs at the fit's lower bound
    theta = _theta(model, data, (glm.intercept_, *glm.coef_),
                   (glm.gate_intercept_, *glm.gate_coef_), tiny, tiny).requires_grad_(True)
    value = laplace_value(model, data, theta)
    y, x, w = (df[k].to_numpy() for k in ("y", "x", "w"))
    ref = zip_logpmf(y, softplus(glm.intercept_ + glm.coef_[0] * x),
                      glm.gate_intercept_ + glm.gate_coef_[0] * w).sum()
    assert float(value.detach()) == pytest.approx(ref, abs=1e-6)
    # the GLM's estimate is the mixed model's stationary point in its fixed parameters,
    # up to the GLM's N(0, 1) prior on the zero part's slopes (gate_coef_scale=1; alpha=0
    # leaves the count part flat): d loglik / d gate_coef = gate_coef there
    (grad,) = torch.autograd.grad(value, theta)
    np.testing.assert_allclose(grad[:4].numpy(), [0.0, 0.0, 0.0, glm.gate_coef_[0]],
                               atol=2e-4)
    # and the flat-prior GLM's maximum likelihood (the same model through posheads' GLM
    # and MAP engine) is the stationary point itself, the SDs' slopes aside
    flat = SoftplusGLM("zip", coef_scale=None, intercept_scale=None, gate_coef_scale=None)
    est = MAP(max_iter=200, tol=1e-12).fit(flat, GLMData(
        X=torch.tensor(df[["x"]].to_numpy()), y=torch.tensor(y),
        X_zero=torch.tensor(df[["w"]].to_numpy()))).point_estimate()
    theta = _theta(model, data, (float(est["intercept"]), *est["coef"].tolist()),
                   (float(est["gate_intercept"]), *est["gate_coef"].tolist()), tiny, tiny)
    (grad,) = torch.autograd.grad(laplace_value(model, data, theta.requires_grad_(True)),
                                  theta)
    assert float(grad[:4].abs().max()) < 2e-4


# ------------------------------------------------------------ estimator routes
@pytest.fixture(scope="module")
def zip_frame():
    return _simulate_zip(8, 200, 10, **TRUTH, sd_zero=0.4)


def test_formula_and_array_routes_agree(zip_frame):
    df = zip_frame
    a = MixedCountRegressor("zip", formula="y ~ x + (1 | g)",
                            zero_formula="~ w + (1 | g)").fit(df)
    b = MixedCountRegressor("zip", zero_random_effects={"g": ["1"]}).fit(
        df[["x"]], df["y"], groups=df[["g"]], X_zero=df["w"].to_numpy()[:, None])
    assert a.loglik_ == pytest.approx(b.loglik_, abs=1e-6)
    assert a.zero_coef_names_ == ["w"] and b.zero_coef_names_ == ["z0"]
    assert ("fixed", "gate:w") in a.summary().index
    new = df.iloc[:6].assign(g=[0, 1, 2, 100, 101, 3])  # seen and new levels
    groups = new[["g"]]
    Xz = new["w"].to_numpy()[:, None]
    np.testing.assert_allclose(a.predict(new), b.predict(new[["x"]], groups, X_zero=Xz),
                               rtol=1e-5)
    np.testing.assert_allclose(a.log_score(new, new["y"]),
                               b.log_score(new[["x"]], new["y"], groups, X_zero=Xz), rtol=1e-5)
    # the zero part's covariate moves the prediction of a row (same x, level)
    moved = new.assign(w=new["w"] + 2.0)
    assert np.all(a.predict(moved) < a.predict(new))
    draws = a.sample_posterior_predictive(moved, n_samples=400, random_state=0)
    assert draws.shape == (400, 6)
    assert (draws == 0).mean() > (a.sample_posterior_predictive(new, n_samples=400,
                                                                random_state=0) == 0).mean()
    assert a.predict_interval(new, n_samples=200).shape == (6, 2)


def test_bayesian_engines_carry_zero_coefficients(zip_frame):
    df = zip_frame
    m = MixedCountRegressor("zip", formula="y ~ x + (1 | g)", zero_formula="~ w",
                            inference="laplace", num_samples=200, random_state=0).fit(df)
    assert m.posterior_.draws()["gate_coef"].shape == (200, 1)
    assert ("fixed", "gate:w") in m.summary().index
    idata = m.to_inference_data(predictive=False)
    assert idata.posterior["gate_coef"].dims == ("chain", "draw", "gate_term")
    assert list(idata.posterior["gate_coef"].coords["gate_term"].values) == ["w"]
    new = df.iloc[:4].assign(g=[0, 1, 50, 51])
    assert np.all(np.isfinite(m.log_score(new, new["y"])))
    assert np.all(m.predict(new.assign(w=new["w"] + 2.0)) < m.predict(new))
    s = MixedCountRegressor("zip", formula="y ~ x + (1 | g)", zero_formula="~ w",
                            inference="svi", num_steps=60, num_samples=50,
                            random_state=0).fit(df)
    assert s.posterior_.draws()["gate_coef"].shape == (50, 1)
    assert np.isfinite(s.gate_coef_).all()


# ------------------------------------------------------------ (e) bad input
@pytest.mark.parametrize("family, kwargs, X_zero, match", [
    ("zip", {}, lambda df: df[["w"]].iloc[:-3], "X_zero has 197 rows"),
    ("zip", {}, lambda df: df[["w"]].assign(w=np.where(df.index == 4, np.nan, df["w"])),
     "'w' holds NaN"),
    ("zip", {}, lambda df: df[["w"]].assign(c=1.0), "'c' is constant"),
    ("zip", {}, lambda df: df[["w"]].assign(v=2 * df["w"] + 1), "collinear"),
    ("poisson", {}, lambda df: df[["w"]], r"\['w'\].*'poisson' has no zero part"),
    ("negative_binomial", {"zero_formula": "~ w"}, None, r"\['w'\].*no zero part"),
    ("zip", {"zero_formula": "~ w"}, lambda df: df[["w"]], "given twice"),
    ("zip", {"zero_formula": "~ 0 + w"}, None, "intercept"),
])
def test_bad_zero_design(zip_frame, family, kwargs, X_zero, match):
    df = zip_frame
    with pytest.raises(ValueError, match=match):
        MixedCountRegressor(family, **kwargs).fit(
            df[["x", "w"]], df["y"], groups=df[["g"]],
            X_zero=None if X_zero is None else X_zero(df))


def test_bad_zero_design_at_prediction(zip_frame):
    df = zip_frame
    m = MixedCountRegressor("zip").fit(df[["x"]], df["y"], groups=df[["g"]],
                                       X_zero=df[["w"]])
    with pytest.raises(ValueError, match="pass X_zero"):
        m.predict(df[["x"]])
    with pytest.raises(ValueError, match="X_zero has 2 columns"):
        m.predict(df[["x"]], X_zero=df[["w", "x"]])
    with pytest.raises(ValueError, match="'w' holds NaN"):
        m.predict(df[["x"]], X_zero=df[["w"]].assign(w=np.nan))
    f = MixedCountRegressor("zip", formula="y ~ x + (1 | g)", zero_formula="~ w").fit(df)
    with pytest.raises(ValueError, match=r"'w' holds NaN|missing values"):
        f.predict(df.assign(w=np.where(df.index == 0, np.nan, df["w"])))
    with pytest.raises(ValueError, match="do not pass X_zero"):
        f.predict(df, X_zero=df[["w"]])
