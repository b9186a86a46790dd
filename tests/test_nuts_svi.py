"""NUTS and SVI engines: shapes, statistics, agreement with Laplace and exact posteriors,
reproducibility, silence, error messages, and the step-at-a-time SVIState."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from posheads.inference.laplace import fit_laplace
from posheads.inference.nuts import NUTS, fit_nuts
from posheads.inference.svi import SVI, SVIState, fit_svi
from posheads.inference.whitening import Whitening
from posheads.models.glm import GLMData, SoftplusGLM

DTYPE = torch.float64


def glm_data(n=300, p=3, likelihood="poisson", seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=gen, dtype=DTYPE)
    coef = torch.linspace(-0.5, 0.5, p, dtype=DTYPE)
    mu = torch.nn.functional.softplus(1.0 + X @ coef)
    if likelihood == "poisson":
        y = torch.poisson(mu, generator=gen)
    else:  # NB2 with concentration 3 as a gamma-Poisson mixture
        y = torch.poisson(torch._standard_gamma(torch.full_like(mu, 3.0), generator=gen)
                          * mu / 3.0, generator=gen)
    return GLMData(X=X, y=y)


@pytest.fixture(scope="module")
def poisson_fit():
    glm, data = SoftplusGLM("poisson"), glm_data()
    nuts = fit_nuts(glm, data, num_samples=300, num_warmup=150, num_chains=2, seed=1,
                    verbose=0)
    laplace = fit_laplace(glm, data, num_samples=4000, seed=1)
    return glm, data, nuts, laplace


def mean_sd(post, site):
    d = post.draws()[site]
    return d.mean(0), d.std(0)


# ---------------------------------------------------------------- NUTS
def test_nuts_shapes_and_stats(poisson_fit):
    _, _, post, _ = poisson_fit
    assert post.method == "nuts" and post.num_chains == 2
    assert post.samples["intercept"].shape == (2, 300)
    assert post.samples["coef"].shape == (2, 300, 3)
    for key in ("diverging", "step_size", "tree_depth", "n_steps", "acceptance_rate", "lp"):
        assert post.sample_stats[key].shape == (2, 300), key
    stats = post.sample_stats
    assert stats["diverging"].dtype == torch.bool and not stats["diverging"].any()
    # Whitened by the Laplace covariance: step sizes near 1 and short trees
    # (docs/inference.md, "NUTS in the Laplace metric").
    assert 0.3 < float(stats["step_size"].mean()) < 1.5
    assert float(stats["tree_depth"].float().mean()) <= 3.5
    assert ((stats["acceptance_rate"] >= 0) & (stats["acceptance_rate"] <= 1 + 1e-9)).all()
    assert torch.isfinite(stats["lp"]).all()
    assert post.extra["cov"].shape == (4, 4)
    # tree depth is the number of doublings: 2**(depth-1) <= n_steps < 2**depth
    depth, steps = stats["tree_depth"], stats["n_steps"]
    assert ((2 ** (depth - 1) <= steps) & (steps < 2**depth)).all()


def test_nuts_posterior_to_inference_data(poisson_fit):
    _, _, post, _ = poisson_fit
    idata = post.to_inference_data(predictive=False)
    assert idata.posterior["coef"].shape[:2] == (2, 300)
    assert idata.sample_stats["diverging"].shape == (2, 300)
    assert not bool(idata.sample_stats["diverging"].any())


def test_nuts_recorder_marks_divergent_draws():
    # The hook reads the kernel's list of divergent draws and the potential's call count.
    from types import SimpleNamespace

    from posheads.inference.nuts import _Recorder

    potential = SimpleNamespace(calls=0)
    kernel = SimpleNamespace(step_size=0.5, _mean_accept_prob=0.0, _potential_energy_last=1.0,
                             divergences=[])
    kernel.diagnostics = lambda: {"divergences": kernel.divergences}
    pbar = SimpleNamespace(update=lambda n: None, set_postfix_str=lambda *a, **k: None)
    recorder = _Recorder(potential, 4, pbar)
    for i, (steps, diverged) in enumerate([(3, False), (1, True), (7, False), (2, True)]):
        potential.calls += steps
        if diverged:
            kernel.divergences.append(i)
        recorder(kernel, {}, "Sample", i)
    assert recorder.diverging.tolist() == [False, True, False, True]
    assert recorder.n_steps.tolist() == [3, 1, 7, 2]


def test_nuts_agrees_with_laplace(poisson_fit):
    # n = 300 rows and 4 parameters: the Laplace approximation is accurate to a few
    # hundredths of a posterior sd; 600 draws give a Monte Carlo error of about 0.05 sd.
    _, _, nuts, laplace = poisson_fit
    for site in ("intercept", "coef"):
        m_n, s_n = mean_sd(nuts, site)
        m_l, s_l = mean_sd(laplace, site)
        assert torch.all((m_n - m_l).abs() < 0.2 * s_l), site
        assert torch.all((s_n / s_l - 1).abs() < 0.15), site


def test_nuts_reproducible_and_leaves_global_rng(poisson_fit):
    glm, data, _, _ = poisson_fit
    state = torch.get_rng_state()
    a = fit_nuts(glm, data, num_samples=20, num_warmup=20, seed=3, verbose=0)
    assert torch.equal(state, torch.get_rng_state())
    b = fit_nuts(glm, data, num_samples=20, num_warmup=20, seed=3, verbose=0)
    c = fit_nuts(glm, data, num_samples=20, num_warmup=20, seed=4, verbose=0)
    assert torch.equal(a.samples["coef"], b.samples["coef"])
    assert not torch.equal(a.samples["coef"], c.samples["coef"])


def test_nuts_silent_with_verbose_0(poisson_fit, capsys):
    glm, data, _, _ = poisson_fit
    fit_nuts(glm, data, num_samples=5, num_warmup=5, seed=0, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("options", [{"init": "uniform"}, {"dense_mass": False},
                                     {"adapt_mass_matrix": True}])
def test_nuts_options(poisson_fit, options):
    glm, data, _, laplace = poisson_fit
    post = fit_nuts(glm, data, num_samples=200, num_warmup=200, seed=2, verbose=0, **options)
    m_n, _ = mean_sd(post, "coef")
    m_l, s_l = mean_sd(laplace, "coef")
    assert torch.all((m_n - m_l).abs() < 0.35 * s_l)


def test_nuts_negative_binomial_positive_site():
    glm, data = SoftplusGLM("negative_binomial"), glm_data(likelihood="nb")
    post = fit_nuts(glm, data, num_samples=150, num_warmup=100, seed=0, verbose=0)
    r = post.samples["concentration"]
    assert r.shape == (1, 150) and (r > 0).all()
    assert 1.0 < float(r.mean()) < 10.0  # simulated with concentration 3


def conjugate_model(y=None, n=20):
    # mu ~ N(0, 2^2), y_i ~ N(mu, 1); tau ~ Gamma(3, 2) untouched by the data
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DTYPE), 2.0))
    pyro.sample("tau", dist.Gamma(torch.tensor(3.0, dtype=DTYPE), 2.0))
    with pyro.plate("data", n):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def conjugate_posterior(y):
    precision = 1 / 4 + len(y)
    return float(y.sum() / precision), 1 / math.sqrt(precision)


@pytest.mark.parametrize("init", ["map", "uniform"])
def test_nuts_general_pyro_model(init):
    y = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=DTYPE) + 1.0
    post = fit_nuts(conjugate_model, {"y": y}, num_samples=400, num_warmup=200,
                    init=init, seed=0, verbose=0)
    mean, sd = conjugate_posterior(y)
    mu = post.draws()["mu"]
    assert abs(float(mu.mean()) - mean) < 0.15 * sd
    assert abs(float(mu.std()) / sd - 1) < 0.15
    tau = post.draws()["tau"]  # prior Gamma(3, 2): mean 1.5, sd 0.87
    assert (tau > 0).all() and abs(float(tau.mean()) - 1.5) < 0.2


@pytest.mark.parametrize("bad, match", [
    ({"num_samples": 0}, "num_samples"),
    ({"num_chains": 1.5}, "num_chains"),
    ({"init": "prior"}, "init"),
    ({"target_accept_prob": 1.0}, "target_accept_prob"),
])
def test_nuts_invalid_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        fit_nuts(SoftplusGLM(), glm_data(n=20), verbose=0, **bad)


def test_whitening_round_trip():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=gen, dtype=DTYPE)
    cov = A @ A.T + torch.eye(4, dtype=DTYPE)
    loc = torch.randn(4, generator=gen, dtype=DTYPE)
    z = torch.randn(7, 4, generator=gen, dtype=DTYPE)
    for dense in (True, False):
        w = Whitening(loc, cov, dense=dense)
        torch.testing.assert_close(w.to_z(w.to_theta(z)), z)
    w = Whitening(loc, cov)
    # theta = loc + L z has covariance L L^T = cov
    torch.testing.assert_close(w.scale @ w.scale.T, cov)


# ---------------------------------------------------------------- SVI
@pytest.mark.parametrize("guide", ["normal", "multivariate_normal", "lowrank"])
def test_svi_guides_near_laplace(poisson_fit, guide):
    glm, data, _, laplace = poisson_fit
    post = fit_svi(glm, data, guide=guide, num_steps=600, learning_rate=0.03,
                   num_samples=1000, seed=0, verbose=0)
    assert post.method == "svi" and post.samples["coef"].shape == (1, 1000, 3)
    assert len(post.extra["elbo"]) == post.extra["n_iter"] <= 600
    m_s, s_s = mean_sd(post, "coef")
    m_l, s_l = mean_sd(laplace, "coef")
    # Measured (seeds 0 and 1): means within 0.17 sd of Laplace, sds 1.07-1.23 times
    # Laplace's -- single-particle gradients of a scale are skewed, and Adam's normalised
    # steps then settle a little above the optimum; the bounds leave room.
    assert torch.all((m_s - m_l).abs() < 0.3 * s_l)
    assert torch.all((s_s / s_l > 0.7) & (s_s / s_l < 1.35))


def test_svi_subsampled_and_plateau(poisson_fit):
    glm, data, _, laplace = poisson_fit
    post = fit_svi(glm, data, subsample_size=60, num_steps=4000, patience=300,
                   learning_rate=0.02, seed=0, verbose=0)
    assert post.extra["converged"] and post.extra["n_iter"] < 4000
    m_s, _ = mean_sd(post, "coef")
    m_l, s_l = mean_sd(laplace, "coef")
    assert torch.all((m_s - m_l).abs() < 1.0 * s_l)  # noisy mini-batch gradients


def test_svi_reproducible_isolated_and_silent(poisson_fit, capsys):
    glm, data, _, _ = poisson_fit
    pyro.clear_param_store()
    state = torch.get_rng_state()
    a = fit_svi(glm, data, num_steps=30, num_samples=10, seed=5, verbose=0)
    b = fit_svi(glm, data, num_steps=30, num_samples=10, seed=5, verbose=0)
    assert torch.equal(a.samples["coef"], b.samples["coef"])
    assert a.extra["elbo"] == b.extra["elbo"]
    assert torch.equal(state, torch.get_rng_state())
    assert len(pyro.get_param_store()) == 0  # guides keep their parameters to themselves
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_svi_general_pyro_model():
    y = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=DTYPE) + 1.0
    post = fit_svi(conjugate_model, {"y": y}, guide="multivariate_normal", num_steps=600,
                   learning_rate=0.05, num_samples=1000, seed=0, verbose=0)
    mean, sd = conjugate_posterior(y)
    mu = post.draws()["mu"]
    assert abs(float(mu.mean()) - mean) < 0.3 * sd
    assert 0.7 < float(mu.std()) / sd < 1.35
    assert (post.draws()["tau"] > 0).all()


def nan_model(y):
    loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=DTYPE), 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=y)


def test_svi_nan_names_step_and_site():
    # init="median" builds no target: the SVI loop's own checks meet the NaN
    y = torch.tensor([0.0, float("nan"), 1.0], dtype=DTYPE)
    with pytest.raises(ValueError, match=r"step 0.*'obs'"):
        fit_svi(nan_model, {"y": y}, init="median", num_steps=10, seed=0, verbose=0)
    # the default init builds the model's target first, whose error names the site too
    with pytest.raises(ValueError, match="'obs'"):
        fit_svi(nan_model, {"y": y}, num_steps=10, seed=0, verbose=0)


def test_svi_infinite_loss_names_step_and_site():
    # A valid but absurd observation: the log density of "obs" overflows to -inf.
    y = torch.tensor([1e200], dtype=DTYPE)
    match = r"loss is (nan|inf) at step 0: non-finite model site 'obs'"
    with pytest.raises(ValueError, match=match):
        fit_svi(nan_model, {"y": y}, init="median", num_steps=10, seed=0, verbose=0)


def test_svi_invalid_arguments():
    with pytest.raises(ValueError, match="guide"):
        fit_svi(SoftplusGLM(), glm_data(n=20), guide="flow", verbose=0)
    with pytest.raises(ValueError, match="num_steps"):
        fit_svi(SoftplusGLM(), glm_data(n=20), num_steps=0, verbose=0)


def test_svi_state_total_size_rescales_the_batch():
    # One step on a batch with total_size = 2 * rows sees the same loss as a step on the
    # batch stacked twice (same seed: same guide initialisation and draw).
    glm, data = SoftplusGLM("poisson", intercept_loc=0.0), glm_data(n=50)
    twice = {"X": torch.cat([data.X, data.X]), "y": torch.cat([data.y, data.y])}
    losses = []
    for kwargs, total in (({"X": data.X, "y": data.y}, 100), (twice, None)):
        state = SVIState(glm, pyro.infer.autoguide.AutoNormal(glm), seed=0)
        losses.append(state.step(kwargs, total_size=total))
    assert np.isclose(losses[0], losses[1], rtol=1e-10)


def test_svi_state_partial_steps_reduce_the_loss():
    glm, data = SoftplusGLM("poisson", intercept_loc=0.0), glm_data(n=200)
    state = SVIState(glm, pyro.infer.autoguide.AutoNormal(glm), learning_rate=0.05, seed=0)
    for _ in range(60):
        for rows in torch.arange(200).split(50):
            state.step({"X": data.X[rows], "y": data.y[rows]}, total_size=200)
    assert state.num_steps == 240
    first, last = np.mean(state.losses[:20]), np.mean(state.losses[-20:])
    assert last < first
    draws = state.sample(5, {"X": data.X, "y": data.y})
    assert draws["coef"].shape == (5, 3)


def test_svi_state_total_size_needs_data_plate():
    def model(y):
        loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=DTYPE), 1.0))
        with pyro.plate("rows", len(y)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=y)

    state = SVIState(model, pyro.infer.autoguide.AutoNormal(model), seed=0)
    with pytest.raises(ValueError, match="'data'"):
        state.step({"y": torch.zeros(3, dtype=DTYPE)}, total_size=10)


def test_svi_negative_binomial_concentration():
    # The concentration is a softplus_positive site: the guide works on its softplus
    # pre-image and its draws stay positive.
    glm, data = SoftplusGLM("negative_binomial"), glm_data(likelihood="nb")
    post = fit_svi(glm, data, num_steps=500, learning_rate=0.03, num_samples=500, seed=0,
                   verbose=0)
    r = post.draws()["concentration"]
    assert (r > 0).all() and 1.0 < float(r.mean()) < 10.0  # simulated with 3


# ---------------------------------------------------------------- configurations
@pytest.mark.parametrize("config, bad, match", [
    (NUTS, {"num_samples": 0}, "num_samples must be an integer >= 1"),
    (NUTS, {"num_warmup": -1}, "num_warmup must be an integer >= 0"),
    (NUTS, {"num_chains": 1.5}, "num_chains must be an integer"),
    (NUTS, {"max_tree_depth": True}, "max_tree_depth must be an integer"),
    (NUTS, {"target_accept_prob": 1.0}, r"target_accept_prob must be in \(0, 1\)"),
    (NUTS, {"init": "prior"}, "init must be one of"),
    (SVI, {"num_steps": 0}, "num_steps must be an integer >= 1"),
    (SVI, {"learning_rate": 0.0}, "learning_rate must be > 0"),
    (SVI, {"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
    (SVI, {"guide": "flow"}, "guide must be one of"),
    (SVI, {"num_samples": 0}, "num_samples must be an integer >= 1"),
    (SVI, {"clip_norm": -1.0}, "clip_norm must be > 0 or None"),
    (SVI, {"patience": 0}, "patience must be an integer >= 1 or None"),
    (SVI, {"tol": -0.1}, "tol must be >= 0"),
    (SVI, {"init": "prior"}, "init must be one of"),
    (SVI, {"rank": 0}, "rank must be an integer >= 1 or None"),
    (SVI, {"num_particles": 0}, "num_particles must be an integer >= 1"),
    (SVI, {"subsample_size": 0}, "subsample_size must be an integer >= 1 or None"),
    (SVI, {"average_window": 0}, "average_window must be an integer >= 1 or None"),
])
def test_config_validation_names_the_parameter(config, bad, match):
    with pytest.raises(ValueError, match=match):
        config(**bad)


def test_configs_are_exported_frozen_and_defaulted():
    import dataclasses

    from posheads import inference

    assert inference.NUTS is NUTS and inference.SVI is SVI
    with pytest.raises(dataclasses.FrozenInstanceError):
        NUTS().num_samples = 5
    assert NUTS().adapt_mass_matrix is False and NUTS(init="uniform").adapt_mass_matrix
    assert SVI().window == 100 and SVI(patience=50).window == 10
    assert SVI(patience=None).window == 100 and SVI(average_window=7).window == 7
    with pytest.raises(TypeError):
        fit_svi(SoftplusGLM(), glm_data(n=20), no_such_option=1)


def test_nuts_config_runs_as_fit_nuts(poisson_fit):
    glm, data, _, _ = poisson_fit
    options = {"num_samples": 30, "num_warmup": 30, "num_chains": 2, "dense_mass": False}
    a = NUTS(**options).fit(glm, data, seed=7, verbose=0)
    b = fit_nuts(glm, data, seed=7, verbose=0, **options)
    assert torch.equal(a.samples["coef"], b.samples["coef"])
    assert torch.equal(a.sample_stats["n_steps"], b.sample_stats["n_steps"])


def test_svi_config_runs_as_fit_svi(poisson_fit):
    glm, data, _, _ = poisson_fit
    a = SVI(num_steps=40, num_samples=20, guide="lowrank", rank=2).fit(glm, data, seed=3,
                                                                        verbose=0)
    b = fit_svi(glm, data, num_steps=40, num_samples=20, guide="lowrank", rank=2, seed=3,
                verbose=0)
    assert a.extra["elbo"] == b.extra["elbo"]
    assert torch.equal(a.samples["coef"], b.samples["coef"])


# ---------------------------------------------------------------- shared helpers
def test_plateau_counts_improvements_after_its_warm_up_window():
    from posheads.inference.common import Plateau

    # one lucky early loss inside the window does not become the best to beat
    stop = Plateau(patience=10, tol=0.0)
    assert stop.window == 2
    assert not stop(-100.0)  # the warm-up: no decision
    assert not stop(10.0)  # end of the window: the mean, -45, is the first best
    losses = [10.0] * 10
    assert not any(stop(v) for v in losses[:-1])
    assert stop(losses[-1])  # ten steps without improvement
    # an improving loss never stops, and patience=None never stops
    improving = Plateau(patience=5, tol=0.0)
    assert not any(improving(100.0 - i) for i in range(100))
    never = Plateau(patience=None, tol=0.0)
    assert never.window == 100 and not any(never(1.0) for _ in range(500))


def test_seeded_is_reproducible_and_leaves_the_caller_generator():
    from posheads.inference.common import RandomState, child_seeds, seeded

    state = torch.get_rng_state()
    with seeded(3):
        a = torch.rand(4)
    with seeded(3, "cpu"):
        b = torch.rand(4)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    # None: the caller's generator, advanced (an outer seed decides the draws)
    torch.manual_seed(11)
    with seeded(None):
        c = torch.rand(4)
    torch.manual_seed(11)
    assert torch.equal(c, torch.rand(4))
    # a RandomState carries its stream across blocks
    carried = RandomState(5)
    with carried:
        first = torch.rand(2)
    with carried:
        second = torch.rand(2)
    with seeded(5):
        both = torch.rand(4)
    assert torch.equal(torch.cat([first, second]), both)
    assert child_seeds(None, 2) == [None, None]
    assert child_seeds(1, 3) == child_seeds(1, 3) and len(set(child_seeds(1, 3))) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_seeded_forks_the_cuda_generator_of_the_data():
    from posheads.inference.common import seeded

    device = torch.device("cuda", torch.cuda.current_device())
    state = torch.cuda.get_rng_state(device)
    with seeded(3, device):
        a = torch.rand(4, device=device)
    with seeded(3, "cuda"):
        b = torch.rand(4, device=device)
    assert torch.equal(a, b) and torch.equal(torch.cuda.get_rng_state(device), state)


def test_intra_op_threads_serialises_small_cpu_work_only():
    from posheads.inference.common import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(100):
        inside = torch.get_num_threads()
    assert inside == 1 and torch.get_num_threads() == before
    for args in ((None,), (2**18,), (100, "meta")):
        with intra_op_threads(*args):
            assert torch.get_num_threads() == before


@pytest.mark.parametrize("kind", ["normal", "multivariate_normal", "lowrank"])
def test_make_guide_has_softplus_scales(kind):
    from pyro.infer.autoguide.initialization import init_to_median

    from posheads.constraints import SoftplusPositive
    from posheads.inference.common import make_guide

    glm, data = SoftplusGLM("poisson"), glm_data(n=30)
    guide = make_guide(glm, kind, init_to_median, rank=2, init_scale=0.05)
    assert isinstance(guide.scale_constraint, SoftplusPositive)
    guide(data.X, data.y)  # creates the parameters
    scale = guide.scales.coef if kind == "normal" else guide.scale
    torch.testing.assert_close(scale.detach().max(), torch.tensor(0.05 * (
        0.5**0.5 if kind == "lowrank" else 1.0), dtype=DTYPE))
    assert make_guide(glm, guide, init_to_median) is guide
    with pytest.raises(ValueError, match="guide must be one of"):
        make_guide(glm, "flow", init_to_median)
    with pytest.raises(ValueError, match="hidden layers"):
        make_guide(glm, "last_layer", init_to_median)


def test_svi_state_clamps_gradient_elements_and_takes_adam_betas():
    """clip_value clamps each gradient element (the norm clip scales them all); betas
    reach Adam."""
    import pyro.distributions as pdist

    def model():
        pyro.sample("x", pdist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1))

    def guide():
        loc = pyro.param("loc", torch.tensor([50.0, -50.0, 0.5], dtype=torch.float64))
        pyro.sample("x", pdist.Delta(loc).to_event(1))

    state = SVIState(model, guide, learning_rate=1e-3, clip_norm=None, clip_value=2.0,
                     betas=(0.5, 0.9))
    state.step({})
    grad = state.optimizer.param_groups[0]["params"][0].grad
    torch.testing.assert_close(grad, torch.tensor([2.0, -2.0, 0.5], dtype=torch.float64))
    assert state.optimizer.param_groups[0]["betas"] == (0.5, 0.9)


# ---------------------------------------------------------------- posheads' own sampler
def gaussian_evaluate(mean, sd):
    """``z -> (U, grad)`` of independent ``N(mean, sd**2)``: the reference is exact."""
    def evaluate(z):
        r = (z - mean) / sd
        return float(0.5 * torch.dot(r, r)), r / sd
    return evaluate


def test_sample_chain_matches_a_gaussian():
    # Identity metric on scales 0.5 to 2: step size and U-turns must handle a 4x spread.
    from posheads.inference.nuts_sampler import sample_chain

    mean = torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=DTYPE)
    sd = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=DTYPE)
    torch.manual_seed(0)
    draws, stats, calls = sample_chain(gaussian_evaluate(mean, sd), torch.zeros(4, dtype=DTYPE),
                                       num_warmup=300, num_samples=3000)
    assert draws.shape == (3000, 4)
    # Monte Carlo error of the mean is about sd / sqrt(ESS), ESS > 1000 per coordinate
    assert torch.all((draws.mean(0) - mean).abs() < 0.1 * sd)
    assert torch.all((draws.std(0) / sd - 1).abs() < 0.08)
    assert not stats["diverging"].any()
    assert 0.6 < float(stats["acceptance_rate"].mean()) < 0.97  # target 0.8
    assert calls >= int(stats["n_steps"].sum())
    # lp is -U of each draw
    u = torch.tensor([gaussian_evaluate(mean, sd)(z)[0] for z in draws[:5]], dtype=DTYPE)
    assert torch.allclose(stats["lp"][:5], -u)


def test_sample_chain_marks_divergences_at_a_wall():
    # A density cut at z0 = 1 (U infinite past it): trajectories that hit the wall
    # diverge, and no draw lies beyond it.
    from posheads.inference.nuts_sampler import sample_chain

    inner = gaussian_evaluate(torch.zeros(2, dtype=DTYPE), torch.ones(2, dtype=DTYPE))

    def evaluate(z):
        u, g = inner(z)
        return (math.inf if float(z[0]) > 1.0 else u), g

    torch.manual_seed(1)
    draws, stats, _ = sample_chain(evaluate, torch.zeros(2, dtype=DTYPE), num_warmup=100,
                                   num_samples=500)
    assert (draws[:, 0] <= 1.0).all()
    assert stats["diverging"].any() and not stats["diverging"].all()


def test_sample_chain_rejects_a_bad_start():
    from posheads.inference.nuts_sampler import sample_chain

    with pytest.raises(ValueError, match="not finite at the chain's starting point"):
        sample_chain(lambda z: (math.inf, z), torch.zeros(2, dtype=DTYPE), num_warmup=1,
                     num_samples=1)


def test_step_size_adapter_finds_the_target():
    # acceptance exp(-eps): the step size for a mean of 0.8 is -log(0.8) = 0.223
    from posheads.inference.nuts_sampler import StepSizeAdapter

    adapter = StepSizeAdapter(1.0, 0.8)
    eps = 1.0
    for _ in range(2000):
        eps = adapter.update(math.exp(-eps))
    assert abs(adapter.final - (-math.log(0.8))) < 0.01


@pytest.mark.parametrize("dense", [True, False, None])
def test_whitened_evaluate_is_the_whitened_potential(dense):
    from posheads.inference.nuts import whitened_evaluate
    from posheads.inference.whitening import whitened_potential

    glm, data = SoftplusGLM("poisson"), glm_data(n=50)
    target = glm.target(data, validate=True, seed=0)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=gen, dtype=DTYPE)
    cov = None if dense is None else 0.01 * (a @ a.T + 4 * torch.eye(4, dtype=DTYPE))
    whitening = Whitening(torch.full((4,), 0.1, dtype=DTYPE), cov, dense=bool(dense))
    z = torch.randn(4, generator=gen, dtype=DTYPE).requires_grad_(True)
    u_ref = whitened_potential(target, whitening)({"z": z})
    (g_ref,) = torch.autograd.grad(u_ref, z)
    u, g = whitened_evaluate(target, whitening)(z.detach())
    assert math.isclose(u, float(u_ref.detach()), rel_tol=1e-12)
    assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)


def test_fit_nuts_runs_the_own_sampler_without_mass_adaptation(poisson_fit):
    # Every potential evaluation of a chain is a leapfrog step of a draw, of warm-up or
    # of the first step-size search: the count is the sampler's, not Pyro's.
    _, _, post, _ = poisson_fit
    steps = int(post.sample_stats["n_steps"].sum())
    assert steps <= post.extra["num_evaluations"] <= 4 * steps


def test_metric_windows_follow_stans_schedule():
    from posheads.inference.nuts_sampler import metric_windows

    # 1,000 warm-up: 75 + 25, 50, 100, 200, then 500 stretched to end at 950
    assert metric_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450),
                                    (450, 950)]
    assert metric_windows(500) == [(75, 100), (100, 150), (150, 450)]
    assert metric_windows(100) == [(15, 90)]  # 15% and 10% buffers
    assert metric_windows(10) == []


def test_sample_chain_adapts_a_diagonal_metric():
    # scales 0.01 to 100: with the identity metric the step size follows the smallest
    # scale and trees hit the depth cap; the adapted diagonal metric makes the target
    # near-isotropic, so trees stay short and every coordinate is right
    from posheads.inference.nuts_sampler import sample_chain

    mean = torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=DTYPE)
    sd = torch.tensor([0.01, 1.0, 10.0, 100.0], dtype=DTYPE)
    torch.manual_seed(0)
    draws, stats, _ = sample_chain(gaussian_evaluate(mean, sd), torch.zeros(4, dtype=DTYPE),
                                   num_warmup=500, num_samples=2000, adapt_diagonal=True)
    assert torch.all((draws.mean(0) - mean).abs() < 0.1 * sd)
    assert torch.all((draws.std(0) / sd - 1).abs() < 0.1)
    assert float(stats["n_steps"].double().mean()) < 8
    assert not stats["diverging"].any()
    torch.manual_seed(0)
    _, plain, _ = sample_chain(gaussian_evaluate(mean, sd), torch.zeros(4, dtype=DTYPE),
                               num_warmup=500, num_samples=200)
    assert float(plain["n_steps"].double().mean()) > 100
