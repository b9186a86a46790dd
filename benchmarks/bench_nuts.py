"""NUTS on the NMES1988 Poisson GLM: posheads' fit_nuts against Pyro's NUTS.

Model: ``mu = softplus(b0 + X w)``, ``visits ~ Poisson(mu)``, ``b0 ~ N(0, 5)``,
``w ~ N(0, 1)``; X is the standardised 4,406 x 16 design of ``nmes1988_design``. One chain,
500 warm-up iterations and 1,000 draws each. Wall time counts everything a user waits
for: posheads' MAP and Laplace fit, Pyro's JIT compilation. Efficiency is the smallest
bulk effective sample size over the 17 parameters (``arviz.ess``) per second.

The peer is Pyro's NUTS with its defaults and ``jit_compile=True`` on the model written
the ordinary Pyro way (``--ablation`` adds Pyro without the JIT and fit_nuts without the
Laplace whitening). Both run in this process, one after the other, with the same torch
thread count; only the ratio is comparable across machines.

Usage::

    python benchmarks/bench_nuts.py [--threads N] [--seed S] [--ablation]
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import MCMC, NUTS

from posheads.datasets import load_nmes1988, nmes1988_design
from posheads.inference.nuts import fit_nuts
from posheads.models.glm import GLMData, SoftplusGLM

NUM_WARMUP, NUM_SAMPLES = 500, 1000


def load():
    frame = load_nmes1988(as_frame=True).frame
    X = torch.tensor(nmes1988_design(frame, standardize=True).to_numpy(), dtype=torch.float64)
    y = torch.tensor(frame["visits"].to_numpy(), dtype=torch.float64)
    return X, y


def pyro_model(X, y):
    b0 = pyro.sample("b0", dist.Normal(torch.tensor(0.0, dtype=X.dtype), 5.0))
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 1.0).to_event(1))
    mu = F.softplus(b0 + X @ w)
    with pyro.plate("data", X.shape[0]):
        pyro.sample("obs", dist.Poisson(mu), obs=y)


def run_pyro(X, y, seed, jit):
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    kernel = NUTS(pyro_model, jit_compile=jit, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=NUM_SAMPLES, warmup_steps=NUM_WARMUP, disable_progbar=True)
    mcmc.run(X, y)
    wall = time.perf_counter() - start
    s = mcmc.get_samples()
    return wall, np.column_stack([s["b0"].numpy(), s["w"].numpy()])


def run_posheads(X, y, seed, init="map"):
    glm = SoftplusGLM("poisson", intercept_loc=0.0, intercept_scale=5.0, coef_scale=1.0)
    data = GLMData(X=X, y=y)
    start = time.perf_counter()
    post = fit_nuts(glm, data, num_samples=NUM_SAMPLES, num_warmup=NUM_WARMUP, init=init,
                    seed=seed, verbose=0)
    wall = time.perf_counter() - start
    s = post.draws()
    stats = post.sample_stats
    info = (f"step size {float(stats['step_size'].mean()):.2f}, "
            f"mean tree depth {float(stats['tree_depth'].float().mean()):.2f}, "
            f"{int(stats['diverging'].sum())} divergences")
    return wall, np.column_stack([s["intercept"].numpy(), s["coef"].numpy()]), info


def min_bulk_ess(draws: np.ndarray) -> float:
    """Smallest bulk ESS over the columns of ``draws`` (one chain, shape (draws, k))."""
    ess = az.ess(az.convert_to_dataset({"theta": draws[None]}), method="bulk")
    return float(ess["theta"].min())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation", action="store_true",
                        help="also Pyro without JIT and fit_nuts(init='uniform')")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y = load()
    print(f"NMES1988 Poisson GLM, n={X.shape[0]}, d={X.shape[1] + 1}; "
          f"{NUM_WARMUP} warm-up + {NUM_SAMPLES} draws, 1 chain; "
          f"torch threads: {torch.get_num_threads()}")

    runs = {}
    wall, draws = run_pyro(X, y, args.seed, jit=True)
    runs["Pyro NUTS, jit_compile=True"] = (wall, draws, "")
    wall, draws, info = run_posheads(X, y, args.seed)
    runs["posheads fit_nuts"] = (wall, draws, info)
    if args.ablation:
        wall, draws = run_pyro(X, y, args.seed, jit=False)
        runs["Pyro NUTS, jit_compile=False"] = (wall, draws, "")
        wall, draws, info = run_posheads(X, y, args.seed, init="uniform")
        runs["posheads fit_nuts(init='uniform')"] = (wall, draws, info)

    peer = "Pyro NUTS, jit_compile=True"
    peer_rate = min_bulk_ess(runs[peer][1]) / runs[peer][0]
    print("\n| sampler | wall s | min bulk ESS | ESS/s | ratio |\n|---|---|---|---|---|")
    for name, (wall, draws, _) in runs.items():
        ess = min_bulk_ess(draws)
        print(f"| {name} | {wall:.1f} | {ess:.0f} | {ess / wall:.0f} | "
              f"{ess / wall / peer_rate:.2f} |")
    for name, (_, _, info) in runs.items():
        if info:
            print(f"{name}: {info}")

    ref = runs[peer][1]
    mean_ref, sd_ref = ref.mean(0), ref.std(0, ddof=1)
    print("\nagreement with", peer)
    for name, (_, draws, _) in runs.items():
        if name == peer:
            continue
        gap = np.abs(draws.mean(0) - mean_ref) / sd_ref
        ratio = draws.std(0, ddof=1) / sd_ref
        print(f"  {name}: max |mean difference| = {gap.max():.3f} posterior sd; "
              f"sd ratio {ratio.min():.3f}-{ratio.max():.3f}")


if __name__ == "__main__":
    main()
