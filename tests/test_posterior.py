"""Tests of posheads.posterior.Posterior: draws, prediction, summaries and ArviZ."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from posheads.datasets import make_count_regression
from posheads.inference import fit_laplace, fit_map
from posheads.models import GLMData, SoftplusGLM
from posheads.posterior import Posterior

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

F64 = torch.float64


def data_for(likelihood="poisson", n=400, seed=0):
    kind = {"negative_binomial": "negative_binomial", "poisson": "poisson"}.get(
        likelihood, "zero_inflated_poisson")
    X, y, info = make_count_regression(n, 3, likelihood=kind, random_state=seed)
    return GLMData(torch.from_numpy(X), torch.from_numpy(y).to(F64)), info


@pytest.fixture(scope="module")
def laplace_poisson():
    data, _ = data_for()
    return fit_laplace(SoftplusGLM(), data, num_samples=800, seed=0)


@pytest.fixture(scope="module")
def laplace_nb():
    data, _ = data_for("negative_binomial")
    return fit_laplace(SoftplusGLM("negative_binomial"), data, num_samples=800, seed=0)


# ------------------------------------------------------------------ construction
def test_invalid_posteriors_raise():
    with pytest.raises(ValueError, match="method must be one of"):
        Posterior(SoftplusGLM(), {"coef": torch.zeros(1, 1, 2)}, method="mcmc")
    with pytest.raises(ValueError, match="num_chains"):
        Posterior(SoftplusGLM(), {"coef": torch.zeros(1, 3, 2), "intercept": torch.zeros(2, 3)},
                  method="nuts")


def test_draws_and_point_estimate(laplace_poisson):
    post = laplace_poisson
    assert post.num_chains == 1 and post.num_draws == 800
    flat = post.draws()
    assert flat["coef"].shape == (800, 3) and flat["intercept"].shape == (800,)
    assert post.draws(flat=False)["coef"].shape == (1, 800, 3)
    torch.testing.assert_close(post.point_estimate()["coef"], flat["coef"].mean(0))
    assert "laplace" in repr(post)


# ------------------------------------------------------------------ prediction
def test_predict_mean_is_the_mean_over_draws(laplace_poisson):
    post, X = laplace_poisson, laplace_poisson.data.X[:7]
    expected = post.model.predict_mean(post.draws(), X).mean(0)
    torch.testing.assert_close(post.predict_mean(X), expected)
    t = torch.full((7,), 2.0, dtype=F64)
    torch.testing.assert_close(post.predict_mean(X, exposure=t), 2 * expected)
    np_pred = post.predict_mean(X.numpy())  # array-likes are accepted
    torch.testing.assert_close(np_pred, expected)


def test_sample_predictive_is_seeded_counts(laplace_nb):
    X = laplace_nb.data.X[:5]
    a = laplace_nb.sample_predictive(X, 300, seed=1)
    b = laplace_nb.sample_predictive(X, 300, seed=1)
    assert a.shape == (300, 5)
    torch.testing.assert_close(a, b)
    assert (a >= 0).all() and (a == a.round()).all()
    with pytest.raises(ValueError, match="n must be"):
        laplace_nb.sample_predictive(X, 0)


def test_predict_interval_matches_the_true_predictive_quantiles():
    """Known answer: with 2000 rows the posterior is narrow, so the 80% interval is (nearly
    always) the true NB2 law's 10% quantile ``q`` and its ``0.8 + P(y < q)`` quantile."""
    from scipy import stats

    data, info = data_for("negative_binomial", n=2000, seed=4)
    post = fit_laplace(SoftplusGLM("negative_binomial"), data, num_samples=400, seed=0)
    X = data.X[:300]
    mu = np.logaddexp(0.0, info.intercept + X.numpy() @ info.coef)
    law = stats.nbinom(2.0, 2.0 / (2.0 + mu))
    lo, hi = post.predict_interval(X, coverage=0.8, n_samples=4000, seed=0)
    assert (lo == lo.round()).all() and (lo <= hi).all()
    q = law.ppf(0.1)
    for ours, truth in ((lo, q), (hi, law.ppf(0.8 + law.cdf(q - 1)))):
        diff = np.abs(ours.numpy() - truth)
        assert np.mean(diff == 0) > 0.8 and diff.max() <= 2
    with pytest.raises(ValueError, match="coverage"):
        post.predict_interval(X, coverage=1.5)


def test_count_interval_moves_the_floor_tail_up_and_holds_the_coverage():
    from posheads.posterior import count_interval

    # 30% zeros: the 5% quantile is 0, nothing lies below it, so the upper bound is the
    # 90% quantile (not the 95% one of a central interval)
    draws = torch.cat([torch.zeros(300), torch.arange(1.0, 701.0)])[torch.randperm(1000)]
    lo, hi = count_interval(draws[:, None], 0.9)
    assert (float(lo[0]), float(hi[0])) == (0.0, 600.0)
    inside = ((draws >= lo[0]) & (draws <= hi[0])).float().mean()
    assert inside >= 0.9
    # no atom at the floor: 49 draws below, 50 above, exactly 900 of 1000 inside
    lo, hi = count_interval(torch.arange(1.0, 1001.0)[:, None], 0.9)
    assert (float(lo[0]), float(hi[0])) == (50.0, 949.0)


def test_map_posterior_is_a_plug_in():
    data, _ = data_for()
    post = fit_map(SoftplusGLM(), data)
    assert post.method == "map" and post.num_draws == 1
    X = data.X[:4]
    mean = post.model.predict_mean(post.extra["map"], X)[0]
    torch.testing.assert_close(post.predict_mean(X), mean)
    draws = post.sample_predictive(X, 4000, seed=0)
    assert torch.allclose(draws.mean(0), mean, rtol=0.1)
    table = post.summary()
    assert list(table.columns) == ["mean", "sd", "hdi_lo", "hdi_hi", "r_hat", "ess_bulk",
                                   "ess_tail"]
    assert table["sd"].isna().all()
    assert table.loc["coef[0]", "mean"] == pytest.approx(float(post.extra["map"]["coef"][0]))


# ------------------------------------------------------------------ reports
def test_summary_of_laplace_draws(laplace_poisson):
    table = laplace_poisson.summary(hdi_prob=0.9)
    assert list(table.index) == ["intercept", "coef[0]", "coef[1]", "coef[2]"]
    draws = laplace_poisson.draws()
    assert table.loc["coef[1]", "mean"] == pytest.approx(float(draws["coef"][:, 1].mean()))
    sd = laplace_poisson.extra["cov"].diagonal().sqrt()
    np.testing.assert_allclose(table["sd"].to_numpy(), sd.numpy(), rtol=0.1)
    assert (table["hdi_lo"] < table["mean"]).all() and (table["mean"] < table["hdi_hi"]).all()
    assert (table["r_hat"] < 1.02).all() and (table["ess_bulk"] > 500).all()


def test_inference_data_and_loo(laplace_poisson, laplace_nb):
    idata = laplace_poisson.to_inference_data(seed=0)
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data"):
        assert hasattr(idata, group)
    n = laplace_poisson.data.n
    assert idata.log_likelihood["obs"].shape == (1, 800, n)
    assert idata.posterior_predictive["obs"].shape == (1, 800, n)
    np.testing.assert_allclose(idata.observed_data["obs"].values, laplace_poisson.data.y)
    ll = laplace_poisson.log_likelihood()
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, ll.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata, pointwise=True)
        waic = az.waic(idata)
        # elpd_loo is the fitted log-likelihood less an effective number of parameters
        # close to the 4 free parameters
        assert 2.0 < float(loo.p_loo) < 8.0
        assert abs(float(waic.elpd_waic) - float(loo.elpd_loo)) < 1.0
        compare = az.compare({"poisson": idata, "nb": laplace_nb.to_inference_data(seed=0)})
    assert set(compare.index) == {"poisson", "nb"}


def test_nuts_sample_stats_are_kept():
    data, _ = data_for(n=50)
    gen = torch.Generator().manual_seed(0)
    samples = {"intercept": torch.randn(2, 30, generator=gen, dtype=F64) * 0.1 + 1.0,
               "coef": torch.randn(2, 30, 3, generator=gen, dtype=F64) * 0.1}
    stats = {"diverging": torch.zeros(2, 30, dtype=torch.bool)}
    post = Posterior(SoftplusGLM(), samples, method="nuts", data=data, num_chains=2,
                     sample_stats=stats)
    idata = post.to_inference_data(predictive=False)
    assert idata.sample_stats["diverging"].shape == (2, 30)
    assert not hasattr(idata, "posterior_predictive")
    assert post.log_likelihood().shape == (2, 30, 50)
    assert post.summary()["r_hat"].notna().all()


# ------------------------------------------------------------------ general Pyro models
def normal_model(x, y=None):
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("obs", dist.Normal(a + b * x, 0.5), obs=y)


def test_general_model_posterior():
    x = torch.linspace(-1, 1, 20, dtype=F64)
    y = 1.0 + 2.0 * x + 0.5 * torch.randn(20, generator=torch.Generator().manual_seed(0),
                                          dtype=F64)
    post = fit_laplace(normal_model, {"x": x, "y": y}, num_samples=60, seed=0)
    mean = post.predict_mean({"x": x})
    assert mean.shape == (20,)
    assert float((mean - (1.0 + 2.0 * x)).abs().max()) < 0.6
    draws = post.sample_predictive({"x": x}, 7, seed=0)
    assert draws.shape == (7, 20)
    assert post.log_likelihood().shape == (1, 60, 20)
    idata = post.to_inference_data(seed=0)
    assert idata.posterior_predictive["obs"].shape == (1, 60, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(float(az.loo(idata).elpd_loo))
