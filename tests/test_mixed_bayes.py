"""Bayesian engines of MixedCountRegressor: NUTS and SVI against the maximum-likelihood fit,
the InferenceData layout, the sampler warnings, and simulation-based calibration of NUTS
on a small random-intercept Poisson model (Talts et al. 2018)."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from posheads.estimators.mixed import MixedCountRegressor
from posheads.inference.checks import SamplerWarning
from posheads.inference.mixed_bayes import BayesianGLMM
from posheads.inference.nuts import fit_nuts
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM


def _softplus(x):
    return np.logaddexp(0.0, x)


def _grouped(seed=0, n=160, G=8, sd=0.6):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=(n, 1))
    y = rng.poisson(_softplus(1.0 + 0.5 * x[:, 0] + rng.normal(0, sd, G)[g])).astype(float)
    return x, y, np.array([f"p{k}" for k in g])


@pytest.fixture(scope="module")
def nuts_fit():
    x, y, g = _grouped()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)
        m = MixedCountRegressor(inference="nuts", num_warmup=100, num_samples=100,
                                num_chains=2, random_state=0).fit(x, y, groups={"patient": g})
    ml = MixedCountRegressor().fit(x, y, groups={"patient": g})
    return m, ml, (x, y, g)


def test_nuts_agrees_with_ml(nuts_fit):
    m, ml, _ = nuts_fit
    table = ml.summary()
    se = table.loc["fixed", "std_error"].to_numpy()
    est = np.r_[m.intercept_, m.coef_]
    assert np.all(np.abs(est - table.loc["fixed", "estimate"].to_numpy()) < 1.0 * se)
    # the posterior mean SD sits above the ML estimate (8 groups: a skewed posterior)
    assert 0.5 * ml.sd_["patient"][0] < m.sd_["patient"][0] < 3 * ml.sd_["patient"][0]
    # posterior mean effects track the conditional modes
    r = np.corrcoef(m.random_effects_["patient"]["1"], ml.random_effects_["patient"]["1"])
    assert r[0, 1] > 0.95
    assert m.diagnostics_.method == "nuts" and m.diagnostics_.num_chains == 2
    assert np.isnan(m.loglik_)
    with pytest.raises(ValueError, match="maximum-likelihood"):
        m.aic()


def test_inference_data_named_group_dims(nuts_fit):
    m, _, (x, y, g) = nuts_fit
    idata = m.to_inference_data()
    eff = idata.posterior["patient_effect"]
    assert eff.dims == ("chain", "draw", "patient", "patient_term")
    assert list(eff.coords["patient"].values) == sorted(set(g))
    assert eff.shape == (2, 100, 8, 1)
    # the effect is the non-centred draw scaled by the SD, draw by draw
    z = m.posterior_.samples["patient_z"].numpy()
    sd = m.posterior_.samples["patient_sd"].numpy()
    np.testing.assert_allclose(eff.values, z * sd[:, :, None, :], rtol=1e-12)
    assert idata.posterior["coef"].dims == ("chain", "draw", "term")
    assert list(idata.posterior["coef"].coords["term"].values) == ["Intercept", "x0"]
    assert idata.log_likelihood["obs"].shape == (2, 100, len(y))
    with pytest.raises(ValueError, match="Bayesian engine"):
        MixedCountRegressor().fit(x, y, groups=g).to_inference_data()


def test_random_slope_posterior_has_correlation_dims():
    rng = np.random.default_rng(3)
    n, G = 200, 10
    g = rng.integers(0, G, n)
    x = rng.normal(size=(n, 1))
    u = rng.normal(0, [0.5, 0.3], (G, 2))
    y = rng.poisson(_softplus(1 + 0.4 * x[:, 0] + u[g, 0] + u[g, 1] * x[:, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)
        m = MixedCountRegressor(inference="svi", num_steps=300, num_samples=100,
                                random_state=0, random_effects={"site": ["1", "x0"]}
                                ).fit(x, y, groups={"site": g})
    idata = m.to_inference_data(predictive=False)
    assert idata.posterior["site_effect"].dims == ("chain", "draw", "site", "site_term")
    assert list(idata.posterior["site_term"].values) == ["1", "x0"]
    corr = idata.posterior["site_corr"].values
    np.testing.assert_allclose(corr[..., 0, 0], 1.0, atol=1e-12)
    assert m.corr_["site"].shape == (2, 2)


def test_svi_and_laplace_near_ml():
    x, y, g = _grouped(seed=1, n=200, G=10, sd=0.9)
    ml = MixedCountRegressor().fit(x, y, groups=g)
    se = ml.summary().loc["fixed", "std_error"].to_numpy()
    for engine in ("svi", "laplace"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplerWarning)
            m = MixedCountRegressor(inference=engine, num_steps=800, num_samples=400,
                                    random_state=0).fit(x, y, groups=g)
        est = np.r_[m.intercept_, m.coef_]
        assert np.all(np.abs(est - np.r_[ml.intercept_, ml.coef_]) < se), engine
    # the marginal Laplace draws: their mean log SD is the ML estimate (within MC error)
    log_sd = np.log(m.posterior_.samples["group_sd"].numpy()).ravel()
    assert abs(log_sd.mean() - np.log(ml.sd_["group"][0])) < 4 * log_sd.std() / 20


def test_small_budget_warns():
    x, y, g = _grouped(seed=2, n=60, G=5)
    with pytest.warns(SamplerWarning):
        MixedCountRegressor(inference="nuts", num_warmup=5, num_samples=5,
                            random_state=0).fit(x, y, groups=g)


def test_bad_inference_name():
    x, y, g = _grouped(seed=2, n=60, G=5)
    with pytest.raises(ValueError, match="inference must be one of"):
        MixedCountRegressor(inference="mcmc").fit(x, y, groups=g)


def test_target_matches_pyro_potential():
    """The flat target's log joint equals Pyro's trace of the same model (with Jacobians)."""
    from pyro.infer.mcmc.util import initialize_model

    x, y, g = _grouped(seed=4, n=50, G=6)
    codes = np.unique(g, return_inverse=True)[1]
    X = torch.tensor(np.c_[np.ones(50), x])
    e = RandomEffect("g", ("1", "x"), X.clone(), torch.tensor(codes), 6)
    data = MixedData(X, (e,), torch.tensor(y))
    glmm = SoftplusGLMM("negative_binomial")
    target = BayesianGLMM(glmm).target(data)
    _, potential, transforms, _ = initialize_model(glmm, model_kwargs={"data": data})
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        theta = 0.3 * torch.randn(target.dim, generator=gen, dtype=torch.float64)
        values = target.unpack(theta)
        raw = {k: transforms[k](v) for k, v in values.items()}  # to unconstrained
        assert float(target.log_joint(theta)) == pytest.approx(-float(potential(raw)),
                                                               rel=1e-10)


# ------------------------------------------------------------------ SBC
def _sbc_replicate(seed, n=30, G=5):
    """Prior draw -> counts -> NUTS ranks of coef and sd (priors of SoftplusGLMM, with
    coef_scale 1 and sd_scale 1 so that counts stay moderate)."""
    gen = np.random.default_rng(seed)
    codes = gen.integers(0, G, n)
    X = torch.ones(n, 1, dtype=torch.float64)
    e = RandomEffect("g", ("1",), torch.ones(n, 1, dtype=torch.float64),
                     torch.tensor(codes), G)
    coef = gen.normal(0, 1.0)
    sd = abs(gen.normal(0, 1.0))
    u = gen.normal(0, sd, G)
    y = gen.poisson(_softplus(coef + u[codes]))
    glmm = SoftplusGLMM("poisson", coef_scale=1.0, sd_scale=1.0)
    data = MixedData(X, (e,), torch.tensor(y, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit_nuts(BayesianGLMM(glmm), data, num_samples=38, num_warmup=50,
                        init="median", dense_mass=False, seed=seed, verbose=0)
    draws = post.draws()
    c = draws["coef"][::2, 0].numpy()
    s = draws["g_sd"][::2, 0].numpy()
    return int((c < coef).sum()), int((s < sd).sum())


@pytest.mark.slow
def test_sbc_random_intercept_poisson():
    """Ranks of the truth among 19 thinned draws over 40 replications: uniform on 0..19
    by a chi-square test over 5 bins (p > 0.001 at this fixed seed)."""
    ranks = np.array([_sbc_replicate(1000 + r) for r in range(40)])
    for j in range(2):
        counts = np.bincount(ranks[:, j] // 4, minlength=5)
        assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_negative_binomial_target_starts_at_finite_prior_medians():
    # The NB concentration's prior has no closed-form quantile: the start takes the median
    # of draws instead, and the potential there is finite.
    from posheads.inference.mixed_bayes import GLMMTarget

    x, y, g = _grouped(seed=3)
    codes = np.unique(g, return_inverse=True)[1]
    X = torch.as_tensor(np.c_[np.ones(len(y)), x])
    effect = RandomEffect(name="patient", terms=("1",), Z=torch.ones(len(y), 1, dtype=X.dtype),
                          codes=torch.as_tensor(codes), n_groups=int(codes.max()) + 1)
    data = MixedData(X=X, effects=(effect,), y=torch.as_tensor(y))
    target = GLMMTarget(SoftplusGLMM("negative_binomial"), data)
    theta = target.init()
    assert torch.isfinite(theta).all()
    assert torch.isfinite(target.log_joint(theta)).all()
