"""Zero-part group effects under the Bayesian engines (``zero_random_effects`` with
``inference="nuts" | "svi" | "laplace"``): the flat target against Pyro's trace of the same
model, the closed-form potential against autograd, the NUTS coordinates with a zero-part
factor present, and the estimator's fits against the maximum-likelihood one."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special

from posheads.estimators.mixed import MixedCountRegressor
from posheads.inference.checks import SamplerWarning
from posheads.inference.mixed_bayes import BayesianGLMM, GLMMTarget, OrthogonalFixedTarget
from posheads.inference.mixed_nuts import centred_factor
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

from ._zero_part_reference import potential_matches_autograd


def _data(*, zero_slope=False, count_slope=False, n=80, G=6, seed=0):
    """Counts with many zeros; a count-part factor ``g`` and a zero-part factor on the
    same grouping (``gate|g``, an intercept or an intercept and a slope), plus a second
    zero-part factor ``gate|h`` crossed with it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    X = torch.tensor(np.c_[np.ones(n), x])
    codes = torch.tensor(rng.integers(0, G, n))
    ones = torch.ones(n, 1, dtype=torch.float64)
    effects = (
        RandomEffect("g", ("1", "x") if count_slope else ("1",),
                     X.clone() if count_slope else ones, codes, G),
        RandomEffect("gate|g", ("1", "x") if zero_slope else ("1",),
                     X.clone() if zero_slope else ones, codes, G, part="gate"),
        RandomEffect("gate|h", ("1",), ones, torch.tensor(rng.integers(0, 3, n)), 3,
                     part="gate"),
    )
    y = rng.poisson(2.0, n).astype(float)
    y[rng.random(n) < 0.35] = 0.0
    return MixedData(X, effects, torch.tensor(y))


@pytest.mark.parametrize("family", ["zero_inflated_poisson", "hurdle_negative_binomial"])
@pytest.mark.parametrize("slopes", [(False, False), (True, True)])
def test_potential_matches_autograd_with_zero_part_effects(family, slopes):
    target = GLMMTarget(SoftplusGLMM(family),
                        _data(zero_slope=slopes[0], count_slope=slopes[1]))
    for _, g in potential_matches_autograd(target):
        # the zero-part effects carry gradient (they reach the likelihood)
        sizes = [free.numel() for *_, free in target.sites]
        names = [name for name, *_ in target.sites]
        start = sum(sizes[:names.index("gate|g_z")])
        assert float(g[start:start + 6].abs().max()) > 1e-6


def test_target_matches_pyro_trace_with_zero_part_effects():
    """The flat target's log joint equals Pyro's trace of the model, whose zero-part
    factors enter the gate's logits."""
    from pyro.infer.mcmc.util import initialize_model

    data = _data(zero_slope=True)
    glmm = SoftplusGLMM("zero_inflated_poisson")
    target = BayesianGLMM(glmm).target(data)
    _, potential, transforms, _ = initialize_model(glmm, model_kwargs={"data": data})
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        theta = 0.4 * torch.randn(target.dim, generator=gen, dtype=torch.float64)
        values = target.unpack(theta)
        raw = {k: transforms[k](v) for k, v in values.items()}
        assert float(target.log_joint(theta)) == pytest.approx(-float(potential(raw)),
                                                               rel=1e-10)


def test_draws_route_zero_part_effects_to_the_gate():
    """:class:`BayesianGLMM`'s draws: the zero-part effects move the zero probability, not
    the count mean, of the rows of their level."""
    data = _data()
    glmm = SoftplusGLMM("zero_inflated_poisson")
    target = GLMMTarget(glmm, data)
    theta = target.init()
    values = {k: v.unsqueeze(0) for k, v in target.unpack(theta).items()}
    model = BayesianGLMM(glmm)
    base = model.draw_means(values, data)
    values["gate|g_z"] = values["gate|g_z"].clone()
    values["gate|g_z"][0, 2, 0] = 3.0  # level 2's zero part: far more zeros
    moved = model.draw_means(values, data)
    rows = data.effects[1].codes == 2
    assert bool((moved[0, rows] < base[0, rows]).all())
    torch.testing.assert_close(moved[0, ~rows], base[0, ~rows], rtol=0, atol=0)
    sd = float(values["gate|g_sd"][0, 0])
    keep = special.expit(-(float(values["gate_intercept"][0]) + sd * 3.0
                           + float(values["gate|h_sd"][0, 0])
                           * values["gate|h_z"][0, data.effects[2].codes[rows], 0].numpy()))
    eta = float(values["coef"][0, 0]) + data.X[rows, 1].numpy() * float(values["coef"][0, 1])
    np.testing.assert_allclose(moved[0, rows].numpy(), keep * np.logaddexp(0.0, eta),
                               rtol=1e-12)


def test_nuts_coordinates_centre_only_a_count_factor():
    data = _data()
    # a group's mean count mixes its two parts: no factor is centred
    assert centred_factor(data) is None
    with pytest.raises(ValueError, match="count part"):
        OrthogonalFixedTarget(SoftplusGLMM("zero_inflated_poisson"), data, centre="gate|h")
    # with the count factor centred, the zero-part factors keep their own blocks: the
    # potential is the original one at the mapped point plus G log sd
    target = OrthogonalFixedTarget(SoftplusGLMM("zero_inflated_poisson"), data, centre="g")
    base = GLMMTarget(SoftplusGLMM("zero_inflated_poisson"), data)
    rng = np.random.default_rng(2)
    for _ in range(2):
        theta = torch.tensor(0.4 * rng.normal(size=target.dim))
        U, grad = target.potential_and_grad(theta)
        th = theta.clone().requires_grad_(True)
        ref = -base.log_joint(target.to_original(th)) + 6 * th[target.centre[0]]
        (g_ref,) = torch.autograd.grad(ref, th)
        assert float(U) == pytest.approx(float(ref.detach()), rel=1e-10)
        torch.testing.assert_close(grad, g_ref, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ the estimator
def _zip_frame(seed=0, n=300, G=10):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    u, v = rng.normal(0, 0.5, G), rng.normal(0, 1.0, G)
    mu = np.logaddexp(0.0, 1.2 + 0.6 * x + u[g])
    zero = rng.random(n) < special.expit(-0.5 + v[g])
    y = np.where(zero, 0.0, rng.poisson(mu)).astype(float)
    return pd.DataFrame({"x": x, "g": g, "y": y})


@pytest.fixture(scope="module")
def zip_fits():
    df = _zip_frame()
    kw = {"zero_random_effects": {"g": ["1"]}}
    ml = MixedCountRegressor("zip", **kw).fit(df[["x"]], df["y"], groups=df[["g"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)
        nuts = MixedCountRegressor("zip", inference="nuts", num_warmup=100, num_samples=100,
                                   random_state=0, **kw).fit(df[["x"]], df["y"],
                                                             groups=df[["g"]])
    return df, ml, nuts


def test_nuts_with_zero_part_effects_agrees_with_ml(zip_fits):
    df, ml, m = zip_fits
    se = ml.summary().loc["fixed", "std_error"].to_numpy()
    est = np.r_[m.intercept_, m.coef_]
    assert np.all(np.abs(est - np.r_[ml.intercept_, ml.coef_]) < 1.5 * se)
    # the zero part's SD and level effects: the posterior follows the ML estimates
    assert 0.5 * ml.sd_["gate|g"][0] < m.sd_["gate|g"][0] < 2.0 * ml.sd_["gate|g"][0]
    r = np.corrcoef(m.random_effects_["gate|g"]["1"], ml.random_effects_["gate|g"]["1"])
    assert r[0, 1] > 0.9
    table = m.summary()
    assert ("sd", "gate|g: 1") in table.index
    idata = m.to_inference_data(predictive=False)
    eff = idata.posterior["gate|g_effect"]
    assert eff.shape == (1, 100, 10, 1)
    assert idata.log_likelihood["obs"].shape == (1, 100, len(df))


def test_bayesian_prediction_integrates_the_zero_part(zip_fits):
    _, ml, m = zip_fits
    X = pd.DataFrame({"x": [-1.0, 0.0, 1.5]})
    new = pd.DataFrame({"g": [999, 999, 999]})
    got, ref = m.predict(X, groups=new), ml.predict(X, groups=new)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=0.15)
    # a seen level with a large zero-part effect predicts fewer counts than a new level
    v = m.random_effects_["gate|g"]["1"]
    hi = v.index[int(np.argmax(v.to_numpy()))]
    seen = m.predict(X, groups=pd.DataFrame({"g": [hi] * 3}))
    assert np.all(seen < got)
    # the posterior predictive law of a new level is a law: it sums to one
    ys = np.arange(40.0)
    p = np.exp(m.log_score(pd.DataFrame({"x": np.zeros(40)}), ys,
                           groups=pd.DataFrame({"g": [999] * 40})))
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    draws = m.sample_posterior_predictive(X, groups=new, n_samples=2000)
    se = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - got) < 5 * se + 0.02 * got)


@pytest.mark.parametrize("engine", ["svi", "laplace"])
def test_svi_and_laplace_with_zero_part_effects(zip_fits, engine):
    df, ml, _ = zip_fits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)
        m = MixedCountRegressor("zip", zero_formula="~ (1 | g)", inference=engine,
                                num_steps=400, num_samples=200, random_state=0).fit(
            df[["x"]], df["y"], groups=df[["g"]])
    se = ml.summary().loc["fixed", "std_error"].to_numpy()
    assert np.all(np.abs(np.r_[m.intercept_, m.coef_] - np.r_[ml.intercept_, ml.coef_])
                  < 1.5 * se), engine
    assert "gate|g_z" in m.posterior_.samples
    assert 0.3 * ml.sd_["gate|g"][0] < m.sd_["gate|g"][0] < 3.0 * ml.sd_["gate|g"][0]
    assert np.all(np.isfinite(m.predict(df[["x"]][:5], groups=df[["g"]][:5])))
