"""NUTS started at the MAP with the Laplace covariance as its metric: :func:`fit_nuts`.

The sampler is Pyro's :class:`~pyro.infer.NUTS` driven by :class:`~pyro.infer.MCMC`. What
posheads adds is the geometry it is run in:

1. the MAP ``theta_hat`` and the Laplace covariance ``H^{-1}`` (Newton with the exact
   Hessian for a SoftplusGLM, L-BFGS and an autograd Hessian for any other Pyro model);
2. the whitening ``theta = theta_hat + L z`` with ``L L^T = H^{-1}`` (dense, or its
   diagonal), so NUTS samples ``z`` from a posterior close to a standard normal: step
   sizes near 1, short trees, no mass-matrix warm-up windows (MATH.md, "Laplace and NUTS");
3. for a SoftplusGLM, a potential built on the model's fused ``potential_and_grad``
   (closed-form gradient) and handed to Pyro as one autograd node, instead of Pyro's
   trace-based potential.

Chains run one after the other, each from its own seed and its own starting point.
"""

from __future__ import annotations

import contextlib
import numbers

import torch
from tqdm.auto import tqdm

from ._potential import (
    FlatTarget,
    Whitening,
    glm_target,
    is_glm,
    laplace_flat,
    pyro_target,
    whitened_potential,
)
from ._random import child_seeds, seeded
from .map import _threads_for

__all__ = ["fit_nuts"]

_INITS = ("map", "uniform")


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_glm_data(data):
    if isinstance(data, dict):
        from posheads.models.glm import GLMData

        return GLMData(**data)
    return data


def _laplace(model, data, target: FlatTarget, seed):
    """MAP and Laplace covariance in the flat unconstrained space."""
    if is_glm(model):
        from .laplace import fit_laplace

        lap = fit_laplace(model, data, num_samples=1, seed=seed)
        return lap.extra["map_theta"].detach(), lap.extra["cov"].detach()
    return laplace_flat(target)


class _Recorder:
    """MCMC hook: per-draw statistics and the progress bar."""

    def __init__(self, potential: whitened_potential, num_samples: int, pbar):
        self.potential, self.pbar = potential, pbar
        self.calls = self.divergences = 0
        self.diverging = torch.zeros(num_samples, dtype=torch.bool)
        self.n_steps = torch.zeros(num_samples, dtype=torch.long)
        self.step_size = torch.zeros(num_samples, dtype=torch.float64)
        self.accept = torch.zeros(num_samples, dtype=torch.float64)
        self.lp = torch.zeros(num_samples, dtype=torch.float64)
        self._mean_accept = 0.0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        steps, self.calls = self.potential.calls - self.calls, self.potential.calls
        if stage.startswith("Sample"):
            # One potential evaluation per leapfrog step (Pyro caches the current one).
            self.n_steps[i] = steps
            self.step_size[i] = float(kernel.step_size)
            # Pyro keeps a running mean of the acceptance statistic over the draws;
            # undo the running mean to get this draw's value.
            mean = float(getattr(kernel, "_mean_accept_prob", float("nan")))
            self.accept[i] = (i + 1) * mean - i * self._mean_accept
            self._mean_accept = mean
            self.lp[i] = -float(getattr(kernel, "_potential_energy_last", float("nan")))
            # The kernel lists the draws (after warm-up) whose trajectory diverged.
            divergences = len(kernel.diagnostics()["divergences"])
            self.diverging[i] = divergences > self.divergences
            self.divergences = divergences
        self.pbar.update(1)
        if i % 25 == 0:
            self.pbar.set_postfix_str(f"{stage.lower()}, step size {kernel.step_size:.3g}",
                                      refresh=False)


def _run_chain(target, whitening, z0, *, num_samples, num_warmup, adapt_mass_matrix,
               dense_mass, target_accept_prob, max_tree_depth, pbar):
    from pyro.infer import MCMC, NUTS

    potential = whitened_potential(target, whitening)
    kernel = NUTS(
        potential_fn=potential,
        adapt_step_size=True,
        adapt_mass_matrix=adapt_mass_matrix,
        full_mass=dense_mass and adapt_mass_matrix,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
    )
    recorder = _Recorder(potential, num_samples, pbar)
    setup = kernel.setup

    def setup_then_count(*args, **kwargs):
        # The evaluations of the set-up (initial step size search) are no draw's.
        setup(*args, **kwargs)
        recorder.calls = potential.calls

    kernel.setup = setup_then_count
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                initial_params={"z": z0}, hook_fn=recorder, disable_progbar=True)
    mcmc.run()
    z = mcmc.get_samples()["z"].to(z0)
    stats = {
        "diverging": recorder.diverging,
        "step_size": recorder.step_size,
        "tree_depth": torch.as_tensor([int(n).bit_length() for n in recorder.n_steps]),
        "n_steps": recorder.n_steps,
        "acceptance_rate": recorder.accept,
        "lp": recorder.lp,
    }
    return z, stats, potential.calls


def fit_nuts(
    model,
    data,
    *,
    num_samples: int = 1000,
    num_warmup: int = 500,
    num_chains: int = 1,
    init: str = "map",
    dense_mass: bool = True,
    adapt_mass_matrix: bool | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    seed: int | None = None,
    verbose: int = 1,
):
    """Sample the posterior with NUTS, in the metric of the Laplace approximation.

    Parameters
    ----------
    model : SoftplusGLM or callable
        A :class:`~posheads.models.glm.SoftplusGLM` (fast path: fused potential with a
        closed-form gradient) or any Pyro model with continuous latent sites.
    data : GLMData or dict
        For a SoftplusGLM, its ``GLMData`` (or a dict of its fields); for any other
        model, the keyword arguments that condition it.
    num_samples, num_warmup : int
        Draws kept, and warm-up iterations (step-size adaptation), per chain.
    num_chains : int
        Chains, run one after the other.
    init : {"map", "uniform"}
        ``"map"``: whiten with the Laplace approximation and start each chain at a draw
        from it, ``theta_hat + L z0`` with ``z0 ~ N(0, I)``. ``"uniform"``: plain NUTS,
        each chain starting at a uniform draw from ``[-2, 2]^d`` in unconstrained space
        (Pyro's ``init_to_uniform``) with the mass matrix adapted during warm-up.
    dense_mass : bool
        Whiten with the full Cholesky factor of the Laplace covariance (``True``) or only
        its diagonal; with mass adaptation on, adapt a dense or a diagonal matrix.
    adapt_mass_matrix : bool, optional
        Also adapt Pyro's mass matrix during warm-up, on top of the whitening. Default:
        off with ``init="map"`` (the Laplace metric is kept), on with ``"uniform"``.
    target_accept_prob : float
        Target of the step-size adaptation.
    max_tree_depth : int
        Largest number of trajectory doublings.
    seed : int, optional
        Seed for the whole fit (chains get seeds derived from it); the caller's random
        state is left untouched. ``None`` draws from torch's global generator.
    verbose : int
        0 silences the progress bar.

    Returns
    -------
    Posterior
        ``method="nuts"``; ``samples[site]`` of shape ``(num_chains, num_samples,
        *site_shape)`` in constrained space; ``sample_stats`` of ``(num_chains,
        num_samples)`` tensors: ``"diverging"``, ``"step_size"``, ``"tree_depth"``,
        ``"n_steps"`` (leapfrog steps), ``"acceptance_rate"`` and ``"lp"`` (log joint of
        the draw in unconstrained space); ``extra``: ``"map_theta"`` (d,) and ``"cov"``
        (d, d) of the Laplace fit (``init="map"``), ``"num_evaluations"`` (potential and
        gradient evaluations, all chains).

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(200, 3, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1.0 + X[:, 0]))
    >>> post = fit_nuts(SoftplusGLM("poisson"), GLMData(X, y), num_samples=100,
    ...                 num_warmup=100, num_chains=2, seed=0, verbose=0)
    >>> post.samples["coef"].shape
    torch.Size([2, 100, 3])
    """
    num_samples = _check_int(num_samples, "num_samples", 1)
    num_warmup = _check_int(num_warmup, "num_warmup", 0)
    num_chains = _check_int(num_chains, "num_chains", 1)
    max_tree_depth = _check_int(max_tree_depth, "max_tree_depth", 1)
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")
    if adapt_mass_matrix is None:
        adapt_mass_matrix = init != "map"

    glm = is_glm(model)
    if glm:
        data = _as_glm_data(data)
    chain_seeds = child_seeds(seed, num_chains + 1)
    with seeded(chain_seeds[0]):
        target = glm_target(model, data) if glm else pyro_target(model, dict(data))
        extra = {}
        if init == "map":
            theta_hat, cov = _laplace(model, data, target, chain_seeds[0])
            whitening = Whitening(theta_hat, cov, dense=dense_mass)
            extra.update(map_theta=theta_hat, cov=cov)
        else:
            whitening = Whitening(torch.zeros_like(target.init))

    draws, stats, evaluations = [], [], 0
    total = num_chains * (num_warmup + num_samples)
    # a GLM potential on a small design is many tiny kernels: one thread, as for MAP
    serial = _threads_for(data.X) if glm else contextlib.nullcontext()
    with serial, tqdm(total=total, desc="NUTS", disable=not verbose, leave=False) as pbar:
        for c in range(num_chains):
            pbar.set_description(f"NUTS chain {c + 1}/{num_chains}")
            with seeded(chain_seeds[c + 1], target.init.device):
                like = target.init
                if init == "map":
                    z0 = torch.randn(like.shape, dtype=like.dtype, device=like.device)
                else:
                    z0 = 4.0 * torch.rand(like.shape, dtype=like.dtype, device=like.device) - 2.0
                z, chain_stats, calls = _run_chain(
                    target, whitening, z0, num_samples=num_samples, num_warmup=num_warmup,
                    adapt_mass_matrix=adapt_mass_matrix, dense_mass=dense_mass,
                    target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                    pbar=pbar,
                )
            draws.append(z)
            stats.append(chain_stats)
            evaluations += calls

    theta = whitening.to_theta(torch.stack(draws))  # (chains, draws, d)
    values = target.unpack(theta.reshape(-1, theta.shape[-1]))
    samples = {
        name: v.detach().reshape((num_chains, num_samples, *v.shape[1:]))
        for name, v in values.items()
    }
    sample_stats = {k: torch.stack([s[k] for s in stats]) for k in stats[0]}
    extra["num_evaluations"] = evaluations
    from posheads.posterior import Posterior

    return Posterior(model, samples, method="nuts", data=data, num_chains=num_chains,
                     sample_stats=sample_stats, extra=extra)
