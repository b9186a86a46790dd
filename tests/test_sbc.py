"""Slow statistical checks of the engines (marked ``slow``; CI runs them).

* Simulation-based calibration (Talts et al. 2018; ``docs/inference.md``,
  "Simulation-based calibration") of ``fit_laplace`` and ``fit_nuts`` on the Poisson and
  negative-binomial GLMs of ``tests/_sbc.py``: the rank of the true parameter among the
  posterior draws must be uniform (chi-square p > 0.001 for every scalar parameter).
  Sizes are cut to fit CI; ``benchmarks/sbc.py`` runs the full version (200
  replications, 99 draws, 10 bins, every case).
* NUTS and Laplace agree on NMES1988 (priors ``b0 ~ N(0, 5)``, ``w ~ N(0, 1)``), and four
  NUTS chains mix.

Seeds are fixed; nothing is retried.
"""

import arviz as az
import numpy as np
import pytest
import torch

from posheads import ops
from posheads.datasets import load_nmes1988, nmes1988_design
from posheads.inference.laplace import fit_laplace
from posheads.inference.nuts import fit_nuts
from posheads.models.glm import GLMData, SoftplusGLM

from ._sbc import chi_square, run_sbc

pytestmark = pytest.mark.slow


def assert_uniform(ranks, num_draws, bins):
    for name, r in ranks.items():
        p_value, counts = chi_square(r, num_draws, bins)
        assert p_value > 1e-3, f"{name}: p = {p_value:.2g}, rank histogram {counts.tolist()}"


# Laplace is exact only for a Gaussian posterior: 100 rows suffice for the Poisson GLM,
# the NB concentration needs about 1,000 (with 300 its ranks already pile up at the top:
# the posterior of r is right-skewed and the Gaussian cuts its tail).
@pytest.mark.parametrize("likelihood, n", [("poisson", 100), ("negative_binomial", 1000)])
def test_sbc_laplace(likelihood, n):
    ranks = run_sbc(likelihood, "laplace", num_reps=200, n=n, p=5, num_draws=99, seed=0)
    assert_uniform(ranks, num_draws=99, bins=10)


# NUTS costs about 1 s (Poisson) to 4 s (NB) per replication on 2 cores, so CI runs fewer
# replications and draws than benchmarks/sbc.py: 100 x 49 draws in 10 bins for the
# Poisson GLM, 40 x 19 draws in 5 bins (8 expected per bin) for the NB GLM.
@pytest.mark.parametrize("likelihood, reps, draws, bins", [
    ("poisson", 100, 49, 10),
    ("negative_binomial", 40, 19, 5),
])
def test_sbc_nuts(likelihood, reps, draws, bins):
    ranks = run_sbc(likelihood, "nuts", num_reps=reps, n=100, p=5, num_draws=draws, seed=0,
                    num_warmup=100)
    assert_uniform(ranks, num_draws=draws, bins=bins)


def nmes1988():
    frame = load_nmes1988(as_frame=True).frame
    X = torch.tensor(nmes1988_design(frame, standardize=True).to_numpy(), dtype=torch.float64)
    y = torch.tensor(frame["visits"].to_numpy(), dtype=torch.float64)
    return GLMData(X=X, y=y)


def exact_moments(data, theta_hat, cov, num_draws=8000, seed=0):
    """Posterior mean and sd by importance sampling from the Laplace Gaussian.

    A slow, obviously-correct reference: the log joint of ``b0 ~ N(0, 5)``,
    ``w ~ N(0, 1)``, ``y ~ Poisson(softplus(b0 + X w))`` written out here, evaluated for all
    draws at once.
    """
    gen = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(cov)
    z = torch.randn(num_draws, len(theta_hat), generator=gen, dtype=torch.float64)
    theta = theta_hat + z @ L.T
    log_w = []
    for chunk, zc in zip(theta.split(1000), z.split(1000), strict=True):
        eta = chunk[:, 0] + data.X @ chunk[:, 1:].T  # (n, chunk)
        ll = ops.poisson_softplus_log_prob(eta, data.y[:, None]).sum(0)
        prior = -0.5 * (chunk[:, 0] / 5.0) ** 2 - 0.5 * (chunk[:, 1:] ** 2).sum(1)
        log_w.append(ll + prior + 0.5 * (zc**2).sum(1))  # minus the proposal's log density
    w = torch.softmax(torch.cat(log_w), 0)
    mean = w @ theta
    sd = (w @ (theta - mean) ** 2).sqrt()
    return mean.numpy(), sd.numpy(), float(1 / (w**2).sum())


def test_nmes1988_nuts_agrees_with_laplace_and_mixes():
    data = nmes1988()
    glm = SoftplusGLM("poisson", intercept_loc=0.0, intercept_scale=5.0, coef_scale=1.0)
    nuts = fit_nuts(glm, data, num_chains=4, num_warmup=300, num_samples=1000, seed=0,
                    verbose=0)
    laplace = fit_laplace(glm, data, num_samples=1, seed=0)
    theta_hat, cov = laplace.extra["map_theta"], laplace.extra["cov"]
    sd = cov.diagonal().sqrt().numpy()

    theta = np.concatenate([nuts.samples["intercept"].numpy()[..., None],
                            nuts.samples["coef"].numpy()], axis=-1)  # (4, 1000, 17)
    rhat = az.rhat(az.convert_to_dataset({"theta": theta}))["theta"].values
    assert rhat.max() < 1.01
    assert not nuts.sample_stats["diverging"].any()
    mean_nuts, sd_nuts = theta.reshape(-1, 17).mean(0), theta.reshape(-1, 17).std(0)

    # NUTS against the exact moments. Monte Carlo errors of the means: about 0.011 sd for
    # NUTS (bulk ESS about 8,000) and for 8,000 importance draws (weights nearly uniform);
    # of the sds about 1.8% for NUTS (the ESS of the squares is only about 1,700).
    mean_exact, sd_exact, ess = exact_moments(data, theta_hat, cov)
    assert ess > 7000
    assert np.all(np.abs(mean_nuts - mean_exact) < 0.1 * sd_exact)
    assert np.all(np.abs(sd_nuts / sd_exact - 1) < 0.08)

    # NUTS against Laplace. The Laplace mean is the mode; the exact posterior mean of the
    # intercept lies 0.094 sd above it (that of every coefficient within 0.03 sd), so the
    # intercept gets 0.15 sd, the coefficients 0.1 sd.
    gap = np.abs(mean_nuts - theta_hat.numpy()) / sd
    assert gap[0] < 0.15 and gap[1:].max() < 0.1
    assert np.all(np.abs(sd_nuts / sd - 1) < 0.1)
