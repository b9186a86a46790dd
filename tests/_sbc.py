"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari and Gelman, 2018).

Repeat ``num_reps`` times: draw ``theta*`` from the prior of a SoftplusGLM and counts ``y``
given ``theta*``, fit the posterior, keep ``L`` (nearly) independent draws and record the
rank of each scalar component of ``theta*`` among them (0..L). For a correct posterior
the ranks are uniform; :func:`chi_square` bins them and tests uniformity.

Used by ``tests/test_sbc.py`` (a small run in CI) and ``benchmarks/sbc.py`` (the full
run). The priors are fixed numbers -- ``intercept_loc`` in particular, whose default is
computed from the data and would make the "prior" depend on ``y``.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from scipy import stats

from posheads.inference.laplace import fit_laplace
from posheads.inference.nuts import fit_nuts
from posheads.models.glm import GLMData, SoftplusGLM

__all__ = ["chi_square", "run_sbc", "sbc_model"]


def sbc_model(likelihood: str) -> SoftplusGLM:
    """The GLM under test: data-free priors, counts of about 1-3 per row.

    ``intercept ~ N(1, 0.5)``, ``coef ~ N(0, 0.5)``; for the negative binomial
    ``concentration ~ Gamma(4, 2)`` (mean 2, sd 1): overdispersion the data can see. The
    default prior of ``1 / sqrt(r)`` puts mass on ``r`` far in the Poisson limit, where
    the data say little and the posterior of ``r`` is heavy-tailed.
    """
    f64 = torch.float64
    prior = dist.Gamma(torch.tensor(4.0, dtype=f64), torch.tensor(2.0, dtype=f64))
    return SoftplusGLM(likelihood, intercept_loc=1.0, intercept_scale=0.5, coef_scale=0.5,
                       concentration_prior=prior if likelihood == "negative_binomial" else None)


def simulate(model: SoftplusGLM, n: int, p: int, seed: int):
    """One replication: features, a prior draw ``theta*`` and counts given it.

    Returns
    -------
    data : GLMData
    truth : dict of str to Tensor
        The prior draw of every latent site.
    """
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=gen, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trace = poutine.trace(model).get_trace(X)
    names = [name for name, _ in model.layout(X)]
    truth = {name: trace.nodes[name]["value"].detach() for name in names}
    return GLMData(X=X, y=trace.nodes["obs"]["value"].detach()), truth


def posterior_draws(model, data, engine: str, num_draws: int, seed: int, *, thin: int = 2,
                    num_warmup: int = 100):
    """``num_draws`` draws of every site: NUTS thinned by ``thin``, or Laplace draws."""
    if engine == "laplace":
        post = fit_laplace(model, data, num_samples=num_draws, seed=seed)
        return post.draws()
    if engine == "nuts":
        post = fit_nuts(model, data, num_samples=num_draws * thin, num_warmup=num_warmup,
                        seed=seed, verbose=0)
        return {k: v[::thin][:num_draws] for k, v in post.draws().items()}
    raise ValueError(f"unknown engine {engine!r}")


def ranks_of(draws: dict, truth: dict) -> dict[str, int]:
    """Rank of each scalar component of ``truth`` among the draws (number below it)."""
    out = {}
    for name, value in truth.items():
        below = (draws[name] < value).sum(0).reshape(-1)
        if below.numel() == 1:
            out[name] = int(below)
        else:
            for j, r in enumerate(below.tolist()):
                out[f"{name}[{j}]"] = int(r)
    return out


def run_sbc(likelihood: str, engine: str, *, num_reps: int, n: int, p: int, num_draws: int,
            seed: int = 0, thin: int = 2, num_warmup: int = 100, progress=None):
    """Ranks of every scalar parameter over ``num_reps`` replications.

    Returns
    -------
    dict of str to ndarray of shape (num_reps,)
        Ranks in ``0..num_draws``.
    """
    model = sbc_model(likelihood)
    seeds = np.random.SeedSequence(seed).generate_state(num_reps)
    ranks: dict[str, list[int]] = {}
    for r, s in enumerate(seeds):
        data, truth = simulate(model, n, p, int(s))
        draws = posterior_draws(model, data, engine, num_draws, int(s) + 1, thin=thin,
                                num_warmup=num_warmup)
        for name, rank in ranks_of(draws, truth).items():
            ranks.setdefault(name, []).append(rank)
        if progress is not None:
            progress(r)
    return {name: np.asarray(v) for name, v in ranks.items()}


def chi_square(ranks: np.ndarray, num_draws: int, bins: int):
    """Chi-square test of uniform ranks in ``0..num_draws`` over ``bins`` equal bins.

    ``num_draws + 1`` must be a multiple of ``bins`` so every bin holds as many rank
    values. Returns ``(p_value, counts)``.
    """
    if (num_draws + 1) % bins:
        raise ValueError("num_draws + 1 must be a multiple of bins")
    counts = np.bincount(ranks * bins // (num_draws + 1), minlength=bins)
    return float(stats.chisquare(counts).pvalue), counts
