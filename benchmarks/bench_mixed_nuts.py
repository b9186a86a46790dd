"""GLMM NUTS: posheads' sampler against Pyro's default ``pyro.infer.NUTS`` on the same model.

Both samplers draw from the posterior of the same :class:`~posheads.models.mixed.SoftplusGLMM`
(same priors, non-centred group effects) given the same :class:`MixedData`:

- posheads: the engine ``MixedCountRegressor(inference="nuts")`` runs
  (:func:`posheads.inference.mixed_nuts.glmm_nuts`) on
  :func:`~posheads.inference.mixed_nuts.nuts_model` (fixed effects in the design's
  orthogonal basis, a data-dominated random intercept centred);
- Pyro: ``pyro.infer.NUTS(model)`` with its defaults (``init_to_uniform``, diagonal mass
  matrix adapted in warm-up, step size adapted) and ``pyro.infer.MCMC`` on the Pyro face of
  the same ``SoftplusGLMM``.

Cases: ``epilepsy`` (MASS's epil, ``(1|subject)``, 59 patients x 4 visits) with Poisson and
negative-binomial counts, ``grouseticks`` (NB, ``(1|BROOD) + (1|LOCATION)``, optional: slow
for Pyro), ``slope``: a simulated Poisson model with a correlated random intercept and
slope (300 rows, 20 groups), and ``zip``: a simulated zero-inflated Poisson with a random
intercept in the count part and another in the zero part (1,000 rows, 40 groups).

Reported per case: the CPU cost of one potential-and-gradient evaluation at a fixed point
(posheads' closed form, autograd through the same target, Pyro's trace-based potential
with autograd; medians of interleaved rounds); then per sampler: wall and CPU seconds of
the whole fit (set-up, warm-up and draws), the minimum bulk ESS (arviz, over every scalar
of every latent site: fixed effects, shapes, SDs, correlation factors and every group's
``z``), min ESS per second (wall and CPU), divergences, mean leapfrog steps per draw
(posheads only: Pyro's NUTS does not report them); then the ratio posheads / Pyro of min
ESS per CPU second, and the same-model check: the largest |difference of posterior means|
over all scalars, in units of its Monte Carlo standard error (``sqrt(mcse_a^2 +
mcse_b^2)``, arviz's ``mcse`` of the mean), with the number of scalars past 4 such errors.
``--tools`` with no name prints the gradient costs alone.

Run (one thread each; on a shared host CPU seconds are the steadier figure)::

    OMP_NUM_THREADS=1 python benchmarks/bench_mixed_nuts.py [--cases epilepsy slope] \\
        [--families poisson] [--warmup 500] [--samples 1000] [--chains 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import arviz
import numpy as np
import pyro
import torch
from bench_mixed import epilepsy, grouseticks, zip_simulated
from machine import cpu_model  # benchmarks/machine.py (the script's folder is on sys.path)

from posheads.inference.mixed_nuts import glmm_nuts, nuts_model
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM


def mixed_data(X, y, groups, spec, zero=None) -> MixedData:
    """The estimator's design: an intercept column, then ``X``; one effect per factor (and
    per factor of ``zero``, the zero part's spec, an effect on the gate's logits)."""
    A = np.column_stack([np.ones(len(X)), np.asarray(X, dtype=np.float64)])
    cols = list(X.columns)
    effects = []
    for name, terms, part in ([(k, t, None) for k, t in spec.items()]
                              + [(k, t, "gate") for k, t in (zero or {}).items()]):
        levels, codes = np.unique(groups[name].astype(str).to_numpy(), return_inverse=True)
        Z = np.column_stack([np.ones(len(X)) if t == "1" else A[:, 1 + cols.index(t)]
                             for t in terms])
        effects.append(RandomEffect(name if part is None else f"{part}|{name}", tuple(terms),
                                    torch.from_numpy(Z),
                                    torch.from_numpy(codes.astype(np.int64)), len(levels),
                                    part=part))
    return MixedData(torch.from_numpy(A), tuple(effects), torch.as_tensor(y, dtype=torch.float64))


def slope_case(seed=0, n=300, G=20):
    """Poisson counts, softplus link, correlated random intercept and slope on ``x``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    sd, corr = np.array([0.6, 0.4]), 0.4
    cov = np.outer(sd, sd) * np.array([[1.0, corr], [corr, 1.0]])
    u = rng.multivariate_normal(np.zeros(2), cov, size=G)
    y = rng.poisson(np.logaddexp(0.0, 1.5 + 0.5 * x + u[g, 0] + u[g, 1] * x)).astype(float)
    return (pd.DataFrame({"x": x}), y, pd.DataFrame({"g": g.astype(str)}),
            {"g": ["1", "x"]})


def zip_case():
    """``bench_mixed.zip_simulated`` at 1,000 rows in 40 groups: ``(1|g)`` in the count
    and in the zero part."""
    X, y, groups, spec = zip_simulated(n_rows=1_000, n_groups=40)
    return X, y, groups, spec, {"g": ["1"]}


def flat(samples: dict, chains: int, names) -> np.ndarray:
    """``(chains, draws, K)``: every scalar of the named sites (leading dimension
    ``chains * draws``, chain after chain), in order."""
    cols = []
    for name in names:
        v = samples[name].detach().to(torch.float64).numpy()
        cols.append(v.reshape(chains, -1, int(np.prod(v.shape[1:], dtype=int))))
    return np.concatenate(cols, axis=-1)


def summary(arr: np.ndarray):
    """Bulk ESS, mean and MCSE of the mean of each scalar of ``(chains, draws, K)``."""
    ds = arviz.convert_to_dataset(arr)  # variable "x", dims (chain, draw, x_dim_0)
    ess = arviz.ess(ds, method="bulk")["x"].values
    mcse = arviz.mcse(ds, method="mean")["x"].values
    return ess, arr.mean(axis=(0, 1)), mcse


def run_posheads(glmm, data, args):
    start, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = glmm_nuts(num_samples=args.samples, num_warmup=args.warmup,
                         num_chains=args.chains).fit(nuts_model(glmm, data), data, seed=args.seed,
                                                     verbose=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    samples = {k: v.reshape(-1, *v.shape[2:]) for k, v in post.samples.items()}
    stats = post.sample_stats
    return samples, wall, cpu, int(stats["diverging"].sum()), float(
        stats["n_steps"].double().mean())


def run_pyro(glmm, data, args):
    from pyro.infer import MCMC, NUTS

    pyro.set_rng_seed(args.seed)
    start, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = NUTS(glmm)
        mcmc = MCMC(kernel, num_samples=args.samples, warmup_steps=args.warmup,
                    num_chains=args.chains, disable_progbar=True)
        mcmc.run(data)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    samples = mcmc.get_samples()  # chains concatenated
    div = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    steps = np.nan  # Pyro's NUTS does not report its trajectory lengths
    return samples, wall, cpu, div, steps


def gradient_costs(glmm, data, rounds=5, calls=50):
    """CPU microseconds per ``(U, dU/dtheta)`` at one point: posheads' closed-form
    potential, autograd through ``GLMMTarget.log_joint``, and Pyro's potential (a trace of
    the model) with autograd; medians of interleaved rounds."""
    from pyro.infer.mcmc.util import initialize_model

    from posheads.inference.mixed_bayes import GLMMTarget
    from posheads.models.target import Target

    target = GLMMTarget(glmm, data)
    theta = 0.1 * torch.randn(target.dim, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)
    _, potential, transforms, _ = initialize_model(glmm, model_kwargs={"data": data})
    raw = {k: transforms[k](v).detach() for k, v in target.unpack(theta).items()}

    def pyro_grad():
        leaves = {k: v.clone().requires_grad_(True) for k, v in raw.items()}
        u = potential(leaves)
        return u, torch.autograd.grad(u, list(leaves.values()))

    ways = {"closed form": lambda: target.potential_and_grad(theta),
            "autograd": lambda: Target.potential_and_grad(target, theta),
            "pyro trace": pyro_grad}
    times = {k: [] for k in ways}
    for _ in range(rounds):
        for name, f in ways.items():
            f()
            cpu0 = time.process_time()
            for _ in range(calls):
                f()
            times[name].append((time.process_time() - cpu0) / calls * 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


CASES = {
    "epilepsy": (epilepsy, ["poisson", "negative_binomial"]),
    "slope": (slope_case, ["poisson"]),
    "grouseticks": (grouseticks, ["negative_binomial"]),
    "zip": (zip_case, ["zero_inflated_poisson"]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["epilepsy", "slope"])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="+", default=None,
                        help="only these families of each case")
    parser.add_argument("--tools", nargs="*", default=["posheads", "pyro"],
                        choices=["posheads", "pyro"], help="none: gradient costs only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f} at start; "
          f"{args.warmup} warm-up + {args.samples} draws x {args.chains} chain(s), seed "
          f"{args.seed}, torch threads 1")
    print("case | family | sampler | wall s | CPU s | min bulk ESS | ESS/s (wall) | "
          "ESS/s (CPU) | divergences | mean steps")
    for case in args.cases:
        make, fams = CASES[case]
        X, y, groups, spec, *zero = make()
        for family in [f for f in fams if args.families is None or f in args.families]:
            glmm = SoftplusGLMM(family)
            data = mixed_data(X, y, groups, spec, *zero)
            cost = gradient_costs(glmm, data)
            print(f"#   {case} {family}: CPU us per gradient: " + ", ".join(
                f"{k} {v:.0f}" for k, v in cost.items()) + f" (Pyro / closed form "
                f"{cost['pyro trace'] / cost['closed form']:.1f})", flush=True)
            results = {}
            for tool in args.tools:
                run = run_posheads if tool == "posheads" else run_pyro
                samples, wall, cpu, div, steps = run(glmm, data, args)
                names = sorted(samples)
                arr = flat(samples, args.chains, names)
                ess, mean, mcse = summary(arr)
                results[tool] = (ess.min() / cpu, mean, mcse)
                print(f"{case} | {family} | {tool} | {wall:.1f} | {cpu:.1f} | "
                      f"{ess.min():.0f} | {ess.min() / wall:.1f} | {ess.min() / cpu:.1f} | "
                      f"{div} | {steps:.1f}", flush=True)
            if len(results) == 2:
                (r_a, m_a, s_a), (r_b, m_b, s_b) = results["posheads"], results["pyro"]
                moving = (s_a > 0) | (s_b > 0)  # a correlation factor's fixed entries do not
                z = np.abs(m_a - m_b)[moving] / np.sqrt(s_a**2 + s_b**2)[moving]
                print(f"#   {case} {family}: ESS/CPU-s ratio posheads/Pyro {r_a / r_b:.1f}; "
                      f"posterior means: max |diff|/MCSE {z.max():.2f} over {z.size} scalars, "
                      f"{int((z > 4).sum())} past 4; load average {os.getloadavg()[0]:.1f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
