"""Data-parallel fits on torch.distributed (posheads.inference.distributed).

The collectives are checked in this process on a one-worker gloo group (the code path of
any world size, with trivial sums), and end to end by ``torchrun`` with two local
workers over loopback, against the single-process fit.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as tdist

from posheads.inference import fit_map
from posheads.inference.distributed import (
    fit_map_distributed,
    fit_svi_distributed,
    init_process_group,
    shard,
    shard_rows,
)
from posheads.models.glm import GLMData, SoftplusGLM

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not tdist.is_available() or not tdist.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_worker():
    if tdist.is_initialized():  # someone else's group: leave it alone
        pytest.skip("a process group already exists")
    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    yield
    tdist.destroy_process_group()


def _data(n=1500, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    mu = torch.nn.functional.softplus(1 + X @ torch.tensor([0.5, -0.5, 0.2], dtype=X.dtype))
    y = torch.poisson(mu, generator=g)
    if zeros:
        y = torch.where(torch.rand(n, generator=g, dtype=X.dtype) < 0.3, 0.0, y)
    return X, y


def test_without_a_process_group_the_error_says_how_to_launch(monkeypatch):
    if tdist.is_initialized():
        pytest.skip("a process group already exists")
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="launch with torchrun"):
        init_process_group("cpu")
    X, y = _data(n=50)
    with pytest.raises(ValueError, match="no process group"):
        fit_map_distributed(SoftplusGLM(), GLMData(X, y))


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial", "zero_inflated_poisson"])
def test_map_on_one_worker_is_the_single_process_fit(one_worker, likelihood):
    X, y = _data(zeros=likelihood != "poisson")
    model = SoftplusGLM(likelihood)
    ref = fit_map(model, GLMData(X, y), tol=1e-10)
    post = fit_map_distributed(model, GLMData(X, y), tol=1e-10)
    torch.testing.assert_close(post.extra["theta"], ref.extra["theta"], rtol=1e-8, atol=1e-10)
    assert post.extra["converged"]
    assert post.extra["log_joint"] == pytest.approx(ref.extra["log_joint"], rel=1e-9)


def test_map_of_a_general_pyro_model_counts_the_prior_once(one_worker):
    X, y = _data(n=400)

    def model(X, y):
        zero = X.new_zeros(3)
        coef = pyro.sample("coef", dist.Normal(zero, 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("obs", dist.Poisson(torch.nn.functional.softplus(X @ coef)), obs=y)

    ref = fit_map(model, {"X": X, "y": y}, tol=1e-9, seed=0)
    post = fit_map_distributed(model, {"X": X, "y": y}, tol=1e-9, seed=0)
    torch.testing.assert_close(
        post.extra["map"]["coef"], ref.extra["map"]["coef"], rtol=1e-6, atol=1e-7
    )
    assert post.extra["log_joint"] == pytest.approx(ref.extra["log_joint"], rel=1e-9)


def test_svi_on_one_worker_is_the_single_process_fit(one_worker):
    from posheads.inference import fit_svi

    X, y = _data(n=600)
    options = {"num_steps": 60, "subsample_size": 100, "num_samples": 50, "seed": 3, "verbose": 0}
    ref = fit_svi(SoftplusGLM("poisson"), GLMData(X, y), **options)
    post = fit_svi_distributed(SoftplusGLM("poisson"), GLMData(X, y), **options)
    np.testing.assert_allclose(post.extra["elbo"], ref.extra["elbo"], rtol=1e-10)
    torch.testing.assert_close(post.samples["coef"], ref.samples["coef"])


def test_shards_cover_the_rows():
    X, y = _data(n=11)
    parts = [shard(GLMData(X, y), r, 3) for r in range(3)]
    assert [p.n for p in parts] == [3, 4, 4]
    torch.testing.assert_close(torch.cat([p.y for p in parts]), y)
    assert shard_rows(11, 2, 3) == slice(7, 11)
    assert shard({"X": X, "k": 2}, 0, 2)["k"] == 2


def test_two_workers_with_torchrun_match_one_process(tmp_path):
    X, y = _data(n=2000, seed=5)
    np.save(tmp_path / "X.npy", X.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    out = tmp_path / "fit.npz"
    # one intra-op thread per worker: two workers already fill a small CI machine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "examples" / "distributed_fit.py"),
        "--X",
        str(tmp_path / "X.npy"),
        "--y",
        str(tmp_path / "y.npy"),
        "--method",
        "map,svi,stream",
        "--steps",
        "150",
        "--batch-size",
        "100",
        "--epochs",
        "10",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fit = np.load(out)
    assert int(fit["world_size"]) == 2
    ref = fit_map(SoftplusGLM("poisson"), GLMData(X, y), tol=1e-10).extra["map"]
    for site in ("intercept", "coef"):
        # MAP: the same Newton steps on all-reduced sums -- float rounding apart
        np.testing.assert_allclose(fit[f"map_{site}"], ref[site].numpy(), rtol=1e-8, atol=1e-10)
        # SVI: a noisy estimate of the posterior mean (posterior sd here about 0.03)
        np.testing.assert_allclose(fit[f"svi_{site}"], ref[site].numpy(), atol=0.12)
        np.testing.assert_allclose(fit[f"stream_{site}"], ref[site].numpy(), atol=0.15)


@pytest.mark.parametrize("likelihood", ["negative_binomial", "zero_inflated_poisson"])
def test_likelihood_target_of_a_glm_drops_priors_and_jacobian(likelihood):
    """What the shards of ranks other than 0 evaluate: the log-likelihood alone."""
    X, y = _data(n=200, zeros=True)
    model = SoftplusGLM(likelihood)
    full = model.target(GLMData(X, y))
    part = full.likelihood()
    theta = full.init() + 0.1
    values = full.unpack(theta)
    ll = model.distribution(values, X).log_prob(y).sum()
    for jacobian in (False, True):
        torch.testing.assert_close(part.log_joint(theta, jacobian=jacobian), ll)
    torch.testing.assert_close(full.log_likelihood(theta), ll)
    torch.testing.assert_close(part.log_likelihood(theta), ll)
    # its Newton loss is the likelihood's (no Jacobian even when asked)
    loss = part.newton_loss(jacobian=True)
    torch.testing.assert_close(loss.log_joint(theta, loss.predictors(theta)), ll)
    u, g = part.potential_and_grad(theta)
    torch.testing.assert_close(u, -ll)
    th = theta.clone().requires_grad_()
    (ref,) = torch.autograd.grad(-part.log_joint(th), th)
    torch.testing.assert_close(g, ref)


def test_likelihood_target_of_a_pyro_model_counts_observed_sites_only():
    from posheads.models import PyroModel

    X, y = _data(n=50)

    def model(X, y):
        coef = pyro.sample("coef", dist.Normal(X.new_zeros(3), 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("obs", dist.Poisson(torch.nn.functional.softplus(X @ coef)), obs=y)

    target = PyroModel(model).target({"X": X, "y": y}, seed=0)
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=X.dtype)
    ll = dist.Poisson(torch.nn.functional.softplus(X @ theta)).log_prob(y).sum()
    torch.testing.assert_close(target.log_likelihood(theta), ll)
    part = target.likelihood()
    torch.testing.assert_close(part.log_joint(theta, jacobian=True), ll)
    prior = dist.Normal(X.new_zeros(3), 1.0).log_prob(theta).sum()
    torch.testing.assert_close(target.log_joint(theta, jacobian=False), ll + prior)
    assert part.layout == target.layout and torch.equal(part.init(), target.init())
