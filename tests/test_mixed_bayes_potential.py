"""The GLMM potential NUTS runs on (:class:`posheads.inference.mixed_potential.GLMMPotential`):
its value and gradient against autograd through ``GLMMTarget.log_joint`` (itself checked
against Pyro's trace of the same model in ``test_mixed_bayes.py``), for every kind of
site; and a NUTS fit that never builds an autograd graph over the data."""

import warnings

import numpy as np
import pytest
import torch

from posheads.inference.mixed_bayes import BayesianGLMM, GLMMTarget
from posheads.inference.mixed_nuts import glmm_nuts
from posheads.inference.mixed_potential import GLMMPotential
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM


def _data(family, *, slope=False, crossed=False, exposure=False, offset=False, n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    X = torch.tensor(np.c_[np.ones(n), x])
    G = 7
    Z = X.clone() if slope else torch.ones(n, 1, dtype=torch.float64)
    effects = [RandomEffect("g", ("1", "x") if slope else ("1",), Z,
                            torch.tensor(rng.integers(0, G, n)), G)]
    if crossed:  # a second factor with a slope alone (a Z that is not all ones)
        effects.append(RandomEffect("h", ("x",), X[:, 1:].clone(),
                                    torch.tensor(rng.integers(0, 4, n)), 4))
    y = rng.poisson(2.0, n).astype(float)
    y[:8] = 0.0
    t = torch.tensor(rng.uniform(0.5, 2.0, n)) if exposure else None
    off = torch.tensor(rng.normal(0.0, 0.3, n)) if offset else None
    return MixedData(X, tuple(effects), torch.tensor(y), exposure=t, offset=off)


def _autograd(target, theta):
    th = theta.clone().requires_grad_(True)
    u = -target.log_joint(th)
    (g,) = torch.autograd.grad(u, th)
    return float(u.detach()), g


@pytest.mark.parametrize("family", ["poisson", "negative_binomial", "zero_inflated_poisson",
                                    "hurdle_negative_binomial"])
@pytest.mark.parametrize("design", [{}, {"slope": True},
                                    {"crossed": True, "exposure": True, "offset": True}])
def test_potential_matches_autograd(family, design):
    target = GLMMTarget(SoftplusGLMM(family), _data(family, **design))
    gen = torch.Generator().manual_seed(1)
    for scale in (0.1, 0.6, 1.5):
        theta = scale * torch.randn(target.dim, generator=gen, dtype=torch.float64)
        u, g = target.potential_and_grad(theta)
        u_ref, g_ref = _autograd(target, theta)
        assert float(u) == pytest.approx(u_ref, rel=1e-10)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10 * float(g_ref.abs().max()))


def test_closed_forms_cover_the_default_priors():
    # NB's concentration and every SD have closed forms; only a correlation factor goes
    # through autograd (a few numbers, not the data)
    target = GLMMTarget(SoftplusGLMM("negative_binomial"), _data("nb", slope=True))
    pot = GLMMPotential(target.model, target.data, target.sites,
                        torch.zeros(target.dim, dtype=torch.float64))
    assert sorted(name for name, *_ in pot.closed) == ["concentration", "g_sd"]
    assert [name for name, *_ in pot.graph] == ["g_corr_chol"]
    assert sorted(name for name, *_ in pot.normal) == ["coef", "g_z"]


def test_zero_density_is_an_infinite_potential():
    # a generalized-Poisson row whose count is beyond the law's support at these values
    data = _data("generalized_poisson", n=40)
    target = GLMMTarget(SoftplusGLMM("generalized_poisson"), data)
    gen = torch.Generator().manual_seed(0)
    seen_inf = seen_finite = False
    for _ in range(6):
        theta = 1.5 * torch.randn(target.dim, generator=gen, dtype=torch.float64)
        u, g = target.potential_and_grad(theta)
        u_ref, g_ref = _autograd(target, theta)
        if np.isfinite(u_ref):
            seen_finite = True
            assert float(u) == pytest.approx(u_ref, rel=1e-10)
            torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9 * float(g_ref.abs().max()))
        else:
            seen_inf = True
            assert float(u) == np.inf and not g.abs().sum()
    assert seen_finite and seen_inf


def test_nuts_never_differentiates_the_log_joint(monkeypatch):
    """Every leapfrog step goes through the closed-form potential: a fit that fell back
    to autograd over the data (the slow path) fails here; and the evaluations are the
    sampler's own count (no hidden extra passes)."""
    data = _data("poisson", n=120, seed=3)
    calls = {"potential": 0}
    original = GLMMTarget.potential_and_grad

    def counted(self, theta):
        calls["potential"] += 1
        return original(self, theta)

    def forbidden(self, theta, jacobian=True):
        raise AssertionError("log_joint (autograd) called during NUTS")

    monkeypatch.setattr(GLMMTarget, "potential_and_grad", counted)
    monkeypatch.setattr(GLMMTarget, "log_joint", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = glmm_nuts(num_samples=30, num_warmup=30).fit(
            BayesianGLMM(SoftplusGLMM("poisson")), data, seed=0, verbose=0)
    assert calls["potential"] == post.extra["num_evaluations"]
    # a 7-group random-intercept Poisson model: short trees after warm-up (at this seed
    # the mean is far below the cap of 2**10 - 1 steps a broken metric runs into)
    assert float(post.sample_stats["n_steps"].double().mean()) < 32


@pytest.mark.parametrize("family,slope,centre", [
    ("poisson", False, None), ("poisson", False, "g"),
    ("negative_binomial", False, "g"), ("negative_binomial", True, None)])
def test_orthogonal_fixed_target_is_the_same_posterior(family, slope, centre):
    """In NUTS's coordinates (``c = T b``, and the centred levels ``m`` where asked) the
    potential is the original one at the mapped point plus ``G log sd`` (the Jacobian of
    ``z = (m - s c_0) / sd``; that of ``T`` is constant and left out), to 1e-10; its
    closed-form gradient matches autograd through the original log joint composed with
    the map; the draws' sites are the original ones."""
    from posheads.inference.mixed_bayes import OrthogonalFixedTarget

    rng = np.random.default_rng(3)
    data = _data(family, slope=slope, offset=True)
    # an uncentred covariate beside the intercept: X has a far-from-orthogonal design
    X = data.X.clone()
    X[:, 1] = X[:, 1] + 3.0
    data = MixedData(X, data.effects, data.y, offset=data.offset)
    model = SoftplusGLMM(family)
    base = GLMMTarget(model, data)
    target = OrthogonalFixedTarget(model, data, centre=centre)
    assert target.basis is not None and (target.centre is not None) == (centre is not None)
    for _ in range(3):
        theta = torch.tensor(0.4 * rng.normal(size=target.dim))
        original = target.to_original(theta)
        torch.testing.assert_close(target.from_original(original), theta, rtol=0, atol=1e-12)
        U, grad = target.potential_and_grad(theta)
        G = data.effects[0].n_groups
        jac = G * float(theta[target.centre[0]]) if centre else 0.0
        U0, _ = base.potential_and_grad(original)
        assert float(U) == pytest.approx(float(U0) + jac, rel=1e-10, abs=1e-10)
        th = theta.clone().requires_grad_(True)
        sd_raw = th[target.centre[0]] if centre else th.new_zeros(())
        ref = -base.log_joint(target.to_original(th)) + G * sd_raw
        (g_ref,) = torch.autograd.grad(ref, th)
        assert float(ref.detach()) == pytest.approx(float(U), rel=1e-10, abs=1e-10)
        torch.testing.assert_close(grad, g_ref, rtol=1e-10, atol=1e-10)
        assert float(-target.log_joint(theta)) == pytest.approx(float(U), rel=1e-10)
        values, ref_values = target.unpack(theta), base.unpack(original)
        for k in values:
            torch.testing.assert_close(values[k], ref_values[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(target.pack(values), theta, rtol=0, atol=1e-10)


def test_orthogonal_fixed_target_rejects_a_slope_factor_as_centre():
    from posheads.inference.mixed_bayes import OrthogonalFixedTarget

    with pytest.raises(ValueError, match="not a random-intercept factor"):
        OrthogonalFixedTarget(SoftplusGLMM("poisson"), _data("poisson", slope=True),
                              centre="g")


def test_nuts_coordinates_give_short_trees():
    """On a random-intercept Poisson model with an uncentred covariate and groups the
    data pin down (the case of deep trees in the original coordinates), NUTS in
    :func:`nuts_model`'s coordinates (orthogonal fixed effects, the factor centred) keeps
    short trajectories after warm-up, and its draws are of the original sites."""
    from posheads.inference.mixed_nuts import centred_factor, nuts_model

    rng = np.random.default_rng(5)
    n, G = 120, 8
    codes = rng.integers(0, G, n)
    x = rng.normal(3.0, 0.5, n)  # uncentred: nearly collinear with the intercept
    u = rng.normal(0.0, 3.0, G)
    y = rng.poisson(np.logaddexp(0.0, 2.0 + 1.0 * (x - 3.0) + 5.0 + u[codes])).astype(float)
    X = torch.tensor(np.c_[np.ones(n), x])
    e = RandomEffect("g", ("1",), torch.ones(n, 1, dtype=torch.float64), torch.tensor(codes), G)
    data = MixedData(X, (e,), torch.tensor(y))
    assert centred_factor(data) == "g"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = glmm_nuts(num_samples=40, num_warmup=100).fit(
            nuts_model(SoftplusGLMM("poisson"), data), data, seed=0, verbose=0)
    assert set(post.samples) == {"coef", "g_sd", "g_z"}
    # 31.4 at this seed (31-37 over seeds 0-2); the original coordinates (BayesianGLMM's
    # GLMMTarget) take 40-71 over the same seeds
    assert float(post.sample_stats["n_steps"].double().mean()) < 38
    # the slope is identified by the within-group variation: near its true value 1
    assert abs(float(post.samples["coef"][0, :, 1].mean()) - 1.0) < 0.5
