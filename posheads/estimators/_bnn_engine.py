"""Guides, the SVI loop and NUTS for :class:`posheads.models.bnn.BayesianCountMLP`.

* Guides (:func:`make_guide`): ``"normal"``, a mean-field Gaussian over every latent site
  (Pyro's ``AutoNormal``); ``"lowrank"``, a Gaussian with a low-rank covariance; and
  ``"last_layer"``, point estimates (``AutoDelta``) for the hidden layers with the
  mean-field Gaussian over the head and the layer scales. Every Gaussian scale starts at
  ``init_scale`` and is mapped to the positive half line by posheads' softplus
  (:func:`posheads.constraints.softplus_positive`), so it can neither reach zero nor blow
  up through an ``exp``.
* :func:`run_svi` optimises the ELBO (``Trace_ELBO``): full batches, or
  mini-batches of an epoch-wise permutation passed to the model's ``pyro.plate`` as
  ``subsample``; Adam with an exponentially decaying step size, clipped gradients, and a
  stop when the smoothed loss has not improved for ``patience`` steps.
* :func:`run_nuts` runs Pyro's NUTS on the full data from the guide's point estimate.
* :func:`guide_draws` takes posterior draws from a fitted guide.
* :func:`intra_op_threads` runs small steps on one CPU thread.

Why ``"last_layer"`` exists: on count data the likelihood carries little information per
row, and a fully mean-field network pays a KL price for every hidden weight it moves
away from its prior; the optimum then leaves the hidden units near their prior and leans
on the GLM skip term (NMES1988: test deviance 5.61 fully mean-field, against 5.62 for the
negative-binomial GLM and 5.56 with point-estimated hidden layers; see
``benchmarks/bench_bnn.py``). Point estimates for the feature layers with a Bayesian
read-out ("Bayesian last layer") keep both the features and the predictive uncertainty of
the head.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoNormal,
)
from tqdm.auto import tqdm

from posheads.constraints import softplus_positive

__all__ = [
    "GUIDES",
    "SVIResult",
    "guide_draws",
    "intra_op_threads",
    "local_params",
    "make_guide",
    "run_nuts",
    "run_svi",
    "seeded",
]

GUIDES = ("last_layer", "normal", "lowrank")


def local_params():
    """Guides keep their parameters to themselves (no global parameter store)."""
    return pyro.settings.context(module_local_params=True)


class SoftplusAutoNormal(AutoNormal):
    """``AutoNormal`` whose scales are ``softplus`` of unconstrained parameters."""

    scale_constraint = softplus_positive()


class SoftplusAutoLowRank(AutoLowRankMultivariateNormal):
    """``AutoLowRankMultivariateNormal`` with softplus-mapped diagonal scales."""

    scale_constraint = softplus_positive()


def init_locations(model):
    """The guide's starting point: a random network whose head predicts the mean of ``y``.

    Hidden weights are a draw from their prior (``1 / sqrt(fan_in)``, as LeCun's
    initialisation), hidden biases 0, the head's weights 0 and its biases at their prior
    location (the moment-matched start), layer scales at their prior scale.
    """
    del model  # every value follows from the site's prior

    def init(site):
        name, fn = site["name"], site["fn"]
        base = fn.base_dist if hasattr(fn, "base_dist") else fn
        if name == "layer_scale":
            return base.scale.detach().clone()
        if name.startswith("hidden.") and name.endswith(".weight"):
            return fn.sample().detach()
        if name == "head.proj.bias":
            return base.loc.detach().clone()
        return torch.zeros(fn.shape(), dtype=base.mean.dtype, device=base.mean.device)

    return init


def make_guide(model, kind: str, *, init_scale: float, rank: int | None = None):
    """Build a guide for ``model`` (call inside :func:`local_params`)."""
    init = init_locations(model)
    if kind == "normal":
        return SoftplusAutoNormal(model, init_loc_fn=init, init_scale=init_scale)
    if kind == "lowrank":
        return SoftplusAutoLowRank(model, init_loc_fn=init, init_scale=init_scale, rank=rank)
    if kind != "last_layer":
        raise ValueError(f"guide must be one of {GUIDES}, got {kind!r}")
    hidden = [f"hidden.{i}.{p}" for i in range(len(model.hidden)) for p in ("weight", "bias")]
    guide = AutoGuideList(model)
    if hidden:
        guide.append(AutoDelta(poutine.block(model, expose=hidden), init_loc_fn=init))
    guide.append(SoftplusAutoNormal(poutine.block(model, hide=hidden), init_loc_fn=init,
                                    init_scale=init_scale))
    return guide


class _Plateau:
    """True once an exponential moving average of the loss stalls for ``patience`` steps."""

    def __init__(self, patience: int | None, tol: float):
        self.patience, self.tol = patience, tol
        self.alpha = 1.0 / max(1, (patience or 1) // 5)
        self.smooth = self.best = math.inf
        self.since = 0

    def __call__(self, loss: float) -> bool:
        if self.patience is None:
            return False
        first = not math.isfinite(self.smooth)
        self.smooth = loss if first else self.smooth + self.alpha * (loss - self.smooth)
        if self.smooth < self.best - self.tol:
            self.best, self.since = self.smooth, 0
        else:
            self.since += 1
        return self.since >= self.patience


def _batches(n: int, batch_size: int | None, generator: torch.Generator, device):
    """Endless row indices: ``None`` (full batch) or slices of per-epoch permutations."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    while True:
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - batch_size + 1, batch_size):  # whole batches only
            yield perm[start:start + batch_size]


# Below this many numbers in the largest activation of a step, torch's intra-op threads
# cost more in synchronisation than they save: measured on NMES1988 (3,525 x 48) with two
# busy cores, one thread took 29 ms per step and two threads 400 ms.
_SMALL_STEP = 2**20


@contextlib.contextmanager
def intra_op_threads(step_numbers: int, device: torch.device):
    """Use one CPU thread for steps of fewer than ``2**20`` numbers, then restore."""
    before = torch.get_num_threads()
    small = device.type == "cpu" and step_numbers < _SMALL_STEP
    try:
        if small:
            torch.set_num_threads(1)
        yield
    finally:
        if small:
            torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Run a block on torch's generators seeded with ``seed``; restore them afterwards."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


class SVIResult:
    """The outcome of :func:`run_svi`: the fitted guide and its loss curve."""

    def __init__(self, guide, losses: list[float], converged: bool):
        self.guide, self.losses, self.converged = guide, losses, converged

    @property
    def num_steps(self) -> int:
        return len(self.losses)


def _step_loss(elbo, model, guide, kwargs, step: int) -> torch.Tensor:
    loss = elbo.differentiable_loss(model, guide, **kwargs)
    if not torch.isfinite(loss):
        raise ValueError(
            f"SVI loss is {float(loss.detach())} at step {step}: the network diverged; try a "
            "smaller learning_rate or prior_scale, or check the data")
    return loss


def run_svi(model, guide, data: dict, *, num_steps: int, learning_rate: float,
            lr_decay: float = 0.1, batch_size: int | None = None, patience: int | None = 300,
            tol: float = 0.0, clip_norm: float = 10.0, seed: int | None = None,
            verbose: int = 0) -> SVIResult:
    """Optimise ``guide`` against ``model`` conditioned on ``data`` (model kwargs).

    Parameters
    ----------
    model, guide : callable
        The Pyro model and its guide (built inside :func:`local_params`).
    data : dict
        ``X`` ``(n, p)``, ``y`` ``(n,)`` and optional ``exposure`` / ``weights`` ``(n,)``.
    num_steps : int
        Largest number of gradient steps.
    learning_rate, lr_decay : float
        Adam's initial step size, decayed exponentially to ``learning_rate * lr_decay``
        over ``num_steps`` (damps the jitter of the Monte Carlo gradients).
    batch_size : int, optional
        Rows per step (``None``: all rows).
    patience, tol : int or None, float
        Stop once the smoothed loss per row has not improved by ``tol`` for ``patience``
        steps (``None``: run all steps).
    clip_norm : float
        Clip of the global gradient norm.
    seed : int, optional
        Seed of the guide's start, the steps' draws and the batch order.
    verbose : int
        Show a progress bar when > 0.

    Returns
    -------
    SVIResult
        The guide, the loss of every step (negative ELBO estimates for the full data)
        and whether the plateau rule stopped the run.

    Raises
    ------
    ValueError
        When a loss is not finite, naming the step.
    """
    n = data["X"].shape[0]
    elbo = Trace_ELBO()
    gamma = lr_decay ** (1.0 / num_steps)
    plateau, losses, converged = _Plateau(patience, tol), [], False
    with local_params(), seeded(seed, data["X"].device), \
            tqdm(total=num_steps, desc="SVI", disable=not verbose, leave=False) as bar:
        # the batch order comes from its own generator, seeded from the (seeded) global one
        generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ())))
        batches = _batches(n, batch_size, generator, data["X"].device)
        with torch.no_grad():  # create the guide's parameters; the model runs on few rows
            guide(**data, subsample=torch.arange(min(n, 256), device=data["X"].device))
        params = [p for p in guide.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=learning_rate)
        for step in range(num_steps):
            # Pyro's argument checks (support, NaN, weights) on the first step only: the
            # estimator validated the data, and the checks on every site of every later
            # step cost about a fifth of a mini-batch step; a non-finite loss still stops
            # the run with its step (_step_loss).
            with pyro.validation_enabled(step == 0):
                loss = _step_loss(elbo, model, guide, {**data, "subsample": next(batches)},
                                  step)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            for group in optimizer.param_groups:
                group["lr"] *= gamma
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix_str(f"loss/row {losses[-1] / n:.4g}", refresh=False)
            if plateau(losses[-1] / n):
                converged = True
                break
    return SVIResult(guide, losses, converged)


@torch.no_grad()
def guide_draws(result: SVIResult, data: dict, num_samples: int,
                seed: int | None = None) -> dict[str, torch.Tensor]:
    """Draws of every latent site from a fitted guide: dict of ``(S, *site_shape)``."""
    draws: dict[str, list[torch.Tensor]] = {}
    with local_params(), seeded(seed, data["X"].device):
        for _ in range(num_samples):
            trace = poutine.trace(result.guide).get_trace(**data)
            for name, site in trace.nodes.items():
                if site["type"] == "sample" and not site["is_observed"]:
                    draws.setdefault(name, []).append(site["value"].detach())
    return {name: torch.stack(values) for name, values in draws.items()}


def run_nuts(model, data: dict, init_values: dict, *, num_samples: int, num_warmup: int,
             seed: int | None = None, verbose: int = 0) -> tuple[dict, dict]:
    """Pyro's NUTS on the full data, started at ``init_values``.

    Returns
    -------
    draws : dict
        ``site -> (num_samples, *site_shape)``.
    stats : dict
        ``"diverging"`` (``num_samples``,) booleans.
    """
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    kernel = NUTS(model, init_strategy=init_to_value(values=init_values), jit_compile=False,
                  max_tree_depth=8)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                disable_progbar=not verbose)
    with seeded(seed, data["X"].device):
        mcmc.run(**data)
    draws = {k: v.detach() for k, v in mcmc.get_samples().items()}
    diverging = torch.zeros(num_samples, dtype=torch.bool)
    for i in mcmc.diagnostics().get("divergences", {}).get("chain 0", []):
        diverging[int(i)] = True
    return draws, {"diverging": diverging}
