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
