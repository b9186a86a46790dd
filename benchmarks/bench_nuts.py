"""NUTS side by side: posheads' fit_nuts, Pyro's NUTS, NumPyro and PyMC.

Every sampler fits the same softplus-link GLM with the same priors::

    b0 ~ N(0, 5),  w ~ N(0, 1) (each),  mu = softplus(b0 + X w)
    y ~ Poisson(mu)   or   y ~ NB2(mean mu, concentration r),  r ~ InverseGamma(1/2, 1/2)

(the inverse gamma is posheads' default NB prior, ``1 / sqrt(r) ~ HalfNormal(1)``; posheads
is called through ``SoftplusGLM(coef_scale=1.0, intercept_scale=5.0, intercept_loc=0.0)``,
not the estimator, whose ``alpha`` prior has precision ``alpha * n``). X is standardised.
Each sampler runs 500 warm-up iterations and 1,000 draws per chain, with 1 chain or 4
chains run one after the other, at its own defaults otherwise: posheads' Laplace-whitened
NUTS (``data_precision="auto"``: float32 passes over the rows of the 100,000-row set,
float64 everywhere else); Pyro's NUTS with ``jit_compile=True`` (faster than its default
``False``); NumPyro's NUTS (float32, JAX's default); PyMC's NUTS (``cores=1``, so its
chains are sequential too).

Each (data set, sampler, chains) runs in a fresh process with one thread
(``OMP_NUM_THREADS=1``, torch's and XLA's thread counts set to 1), timed from after the
imports and the data load to the draws in hand: posheads' MAP and Laplace fit, Pyro's
and NumPyro's JIT compilation and PyMC's model compilation are all counted (PyMC's
compiled C modules are cached on disk across processes: run once before timing, its
figures are "warm"). Efficiency is the smallest bulk effective sample size over the
parameters (``arviz.ess``, all chains) per second of CPU time of the process and its children (the
headline on a shared host) and per wall second. Samplers that are not installed are
skipped with a note.

Data sets: NMES1988 (4,406 x 16; Poisson and NB), bioChemists (915 x 5, articles;
Poisson), Seatbelts (192 x 3, vans' drivers killed; Poisson), grouse ticks (403 x 3;
NB), and a simulated Poisson problem of 100,000 x 10.

Usage::

    python benchmarks/bench_nuts.py [--datasets a,b] [--samplers a,b] [--chains 1 4]
        [--seed S] [--jobs J] [--skip sampler:dataset:chains,...] [--out results.json]
    python benchmarks/bench_nuts.py --tables a.json b.json   # one table from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

NUM_WARMUP, NUM_SAMPLES = 500, 1000
SAMPLERS = ("posheads", "pyro", "numpyro", "pymc")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


# ---------------------------------------------------------------- data
def _standardise(X):
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


def _nmes():
    from posheads.datasets import load_nmes1988, nmes1988_design

    frame = load_nmes1988(as_frame=True).frame
    X = nmes1988_design(frame, standardize=True).to_numpy(dtype=np.float64)
    return X, frame["visits"].to_numpy(dtype=np.float64)


def _biochemists():
    from posheads.datasets import load_biochemists

    X, y = load_biochemists(return_X_y=True)
    return _standardise(X), np.asarray(y, dtype=np.float64)


def _seatbelts():
    from posheads.datasets import load_seatbelts

    X, y = load_seatbelts(return_X_y=True)
    return _standardise(X), np.asarray(y, dtype=np.float64)


def _grouseticks():
    from posheads.datasets import load_grouseticks

    bunch = load_grouseticks()
    keep = [bunch.feature_names.index(c) for c in ("HEIGHT", "YEAR_96", "YEAR_97")]
    return _standardise(bunch.data[:, keep]), np.asarray(bunch.target, dtype=np.float64)


def _simulated():
    rng = np.random.default_rng(20261202)
    X = rng.standard_normal((100_000, 10))
    w = np.linspace(-0.3, 0.3, 10)
    mu = np.logaddexp(0.0, 1.0 + X @ w)
    return X, rng.poisson(mu).astype(np.float64)


# name -> (loader, likelihood, description)
DATASETS = {
    "nmes_poisson": (_nmes, "poisson", "NMES1988 visits, Poisson, 4406 x 16"),
    "nmes_nb": (_nmes, "negative_binomial", "NMES1988 visits, NB, 4406 x 16"),
    "biochemists": (_biochemists, "poisson", "bioChemists articles, Poisson, 915 x 5"),
    "seatbelts": (_seatbelts, "poisson", "Seatbelts VanKilled, Poisson, 192 x 3"),
    "grouseticks": (_grouseticks, "negative_binomial", "grouse ticks, NB, 403 x 3"),
    "sim100k": (_simulated, "poisson", "simulated, Poisson, 100000 x 10"),
}


# ---------------------------------------------------------------- samplers
def run_posheads(X, y, nb, chains, seed):
    import torch

    from posheads.inference.nuts import fit_nuts
    from posheads.models.glm import GLMData, SoftplusGLM

    torch.set_num_threads(1)
    start = _clock()
    glm = SoftplusGLM("negative_binomial" if nb else "poisson", intercept_loc=0.0,
                      intercept_scale=5.0, coef_scale=1.0)
    post = fit_nuts(glm, GLMData(X=torch.as_tensor(X), y=torch.as_tensor(y)),
                    num_samples=NUM_SAMPLES, num_warmup=NUM_WARMUP, num_chains=chains,
                    seed=seed, verbose=0)
    s = post.samples
    parts = [s["intercept"].numpy()[..., None], s["coef"].numpy()]
    if nb:
        parts.append(s["concentration"].numpy()[..., None])
    stats = post.sample_stats
    info = {"step_size": float(stats["step_size"].mean()),
            "mean_steps": float(stats["n_steps"].float().mean()),
            "divergences": int(stats["diverging"].sum())}
    return _clock(start), np.concatenate(parts, -1), info


def run_pyro(X, y, nb, chains, seed):
    import pyro
    import pyro.distributions as dist
    import torch
    import torch.nn.functional as F
    from pyro.infer import MCMC, NUTS

    torch.set_num_threads(1)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def model(X, y):
        b0 = pyro.sample("b0", dist.Normal(torch.tensor(0.0, dtype=X.dtype), 5.0))
        w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 1.0)
                        .to_event(1))
        mu = F.softplus(b0 + X @ w)
        if nb:
            r = pyro.sample("r", dist.InverseGamma(torch.tensor(0.5, dtype=X.dtype), 0.5))
            law = dist.GammaPoisson(r, r / mu)
        else:
            law = dist.Poisson(mu)
        with pyro.plate("data", X.shape[0]):
            pyro.sample("obs", law, obs=y)

    start = _clock()
    draws = []
    for c in range(chains):  # one after the other, as every other sampler here
        pyro.set_rng_seed(seed + c)
        kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=NUM_SAMPLES, warmup_steps=NUM_WARMUP,
                    disable_progbar=True)
        mcmc.run(Xt, yt)
        s = mcmc.get_samples()
        parts = [s["b0"].numpy()[:, None], s["w"].numpy()]
        if nb:
            parts.append(s["r"].numpy()[:, None])
        draws.append(np.concatenate(parts, -1))
    return _clock(start), np.stack(draws), {}


def run_numpyro(X, y, nb, chains, seed):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def model(X, y):
        b0 = numpyro.sample("b0", dist.Normal(0.0, 5.0))
        w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
        mu = jax.nn.softplus(b0 + X @ w)
        if nb:
            r = numpyro.sample("r", dist.InverseGamma(0.5, 0.5))
            law = dist.NegativeBinomial2(mu, r)
        else:
            law = dist.Poisson(mu)
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("obs", law, obs=y)

    start = _clock()
    mcmc = MCMC(NUTS(model), num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES,
                num_chains=chains, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), Xj, yj, extra_fields=("num_steps", "diverging"))
    s = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    parts = [np.asarray(s["b0"])[..., None], np.asarray(s["w"])]
    if nb:
        parts.append(np.asarray(s["r"])[..., None])
    draws = np.concatenate(parts, -1).astype(np.float64)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    info = {"mean_steps": float(np.mean(extra["num_steps"])),
            "divergences": int(np.sum(extra["diverging"]))}
    return _clock(start), draws, info


def run_pymc(X, y, nb, chains, seed):
    import pymc as pm

    start = _clock()
    with pm.Model():
        b0 = pm.Normal("b0", 0.0, 5.0)
        w = pm.Normal("w", 0.0, 1.0, shape=X.shape[1])
        mu = pm.math.log1pexp(b0 + pm.math.dot(X, w))  # softplus
        if nb:
            r = pm.InverseGamma("r", alpha=0.5, beta=0.5)
            pm.NegativeBinomial("obs", mu=mu, alpha=r, observed=y)
        else:
            pm.Poisson("obs", mu=mu, observed=y)
        idata = pm.sample(draws=NUM_SAMPLES, tune=NUM_WARMUP, chains=chains, cores=1,
                          random_seed=seed, progressbar=False,
                          compute_convergence_checks=False)
    post = idata.posterior
    parts = [post["b0"].values[..., None], post["w"].values]
    if nb:
        parts.append(post["r"].values[..., None])
    stats = idata.sample_stats
    info = {"mean_steps": float(stats["n_steps"].values.mean()),
            "divergences": int(stats["diverging"].values.sum())}
    return _clock(start), np.concatenate(parts, -1), info


RUNNERS = {"posheads": run_posheads, "pyro": run_pyro, "numpyro": run_numpyro,
           "pymc": run_pymc}
PACKAGES = {"posheads": "posheads", "pyro": "pyro", "numpyro": "numpyro", "pymc": "pymc"}


def _clock(start=None):
    # CPU time of this process and of its finished children (PyMC's C compiler runs)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = (time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime)
    return now if start is None else (now[0] - start[0], now[1] - start[1])


def min_bulk_ess(draws: np.ndarray) -> float:
    """Smallest bulk ESS over the parameters of ``draws`` of shape (chains, draws, k)."""
    import arviz as az

    ess = az.ess(az.convert_to_dataset({"theta": draws}), method="bulk")
    return float(ess["theta"].min())


def worker(sampler: str, dataset: str, chains: int, seed: int) -> dict:
    """One timed run, in this process; returns a JSON-able record."""
    import importlib.metadata as md

    loader, likelihood, _ = DATASETS[dataset]
    X, y = loader()
    name = PACKAGES[sampler]
    version = md.version("pyro-ppl" if name == "pyro" else name)
    __import__(name)  # imports are not timed
    (wall, cpu), draws, info = RUNNERS[sampler](X, y, likelihood == "negative_binomial",
                                                chains, seed)
    draws = draws if draws.ndim == 3 else draws[None]
    ess = min_bulk_ess(draws)
    flat = draws.reshape(-1, draws.shape[-1])
    return {"sampler": sampler, "version": version, "dataset": dataset, "chains": chains,
            "wall": wall, "cpu": cpu, "min_ess": ess, "mean": flat.mean(0).tolist(),
            "sd": flat.std(0, ddof=1).tolist(), "info": info}


def run_one(sampler, dataset, chains, seed, timeout):
    """``worker`` in a fresh single-threaded process; a dict with ``skipped`` on failure."""
    cmd = [sys.executable, __file__, "--worker", sampler, dataset, str(chains), str(seed)]
    env = {**os.environ, **ONE_THREAD}
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"sampler": sampler, "dataset": dataset, "chains": chains,
                "skipped": f"over {timeout} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    if "ModuleNotFoundError" in out.stderr or "PackageNotFoundError" in out.stderr:
        tail = f"not installed ({tail})"
    return {"sampler": sampler, "dataset": dataset, "chains": chains, "skipped": tail}


def table(results: list[dict]) -> str:
    """Markdown: ESS per CPU and wall second, ratio to Pyro, agreement with posheads."""
    lines = ["| data set | chains | sampler | wall s | CPU s | min bulk ESS | ESS/CPU s | "
             "ESS/wall s | ratio to Pyro (CPU) | posheads / this (CPU) | max mean gap (sd) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    key = {}
    for r in results:
        if "skipped" not in r:
            key[(r["dataset"], r["chains"], r["sampler"])] = r
    for r in results:
        ds, k, s = r["dataset"], r["chains"], r["sampler"]
        if "skipped" in r:
            lines.append(f"| {ds} | {k} | {s} | skipped: {r['skipped']} | | | | | | | |")
            continue
        rate, wrate = r["min_ess"] / r["cpu"], r["min_ess"] / r["wall"]
        pyro, ours = key.get((ds, k, "pyro")), key.get((ds, k, "posheads"))
        to_pyro = f"{rate / (pyro['min_ess'] / pyro['cpu']):.2f}" if pyro else ""
        ours_ratio = f"{(ours['min_ess'] / ours['cpu']) / rate:.2f}" if ours else ""
        gap = ""
        if ours and s != "posheads":
            m, m0, sd0 = (np.asarray(v) for v in (r["mean"], ours["mean"], ours["sd"]))
            gap = f"{np.max(np.abs(m - m0) / sd0):.3f}"
        lines.append(f"| {ds} | {k} | {s} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                     f"{r['min_ess']:.0f} | {rate:.0f} | {wrate:.0f} | {to_pyro} | "
                     f"{ours_ratio} | {gap} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("SAMPLER", "DATASET", "CHAINS", "SEED"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds per run before it is skipped")
    parser.add_argument("--skip", default="",
                        help="runs to leave out, as sampler:dataset:chains, comma-separated")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default=None, help="write the records as JSON here")
    parser.add_argument("--tables", nargs="+", default=None, metavar="JSON",
                        help="print one table from the records of earlier --out files")
    args = parser.parse_args(argv)
    if args.tables:
        records = [r for path in args.tables for r in json.load(open(path))]
        order = {name: i for i, name in enumerate(DATASETS)}
        records.sort(key=lambda r: (r["chains"], order.get(r["dataset"], 99),
                                    SAMPLERS.index(r["sampler"])))
        print(table(records))
        return
    if args.worker:
        sampler, dataset, chains, seed = args.worker
        print(json.dumps(worker(sampler, dataset, int(chains), int(seed))))
        return
    skip = set(filter(None, args.skip.split(",")))
    runs = [(s, d, k) for d in args.datasets.split(",") for k in args.chains
            for s in args.samplers.split(",")]
    done = {}

    def one(run):
        sampler, dataset, chains = run
        if f"{sampler}:{dataset}:{chains}" in skip:
            r = {"sampler": sampler, "dataset": dataset, "chains": chains,
                 "skipped": "left out (--skip)"}
        else:
            r = run_one(sampler, dataset, chains, args.seed, args.timeout)
        done[run] = r
        print(json.dumps(r), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump([done[k] for k in runs if k in done], f, indent=1)

    # --jobs 2 runs two single-threaded processes side by side (CPU times stay per process)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, runs))
    print()
    print(table([done[k] for k in runs]))


if __name__ == "__main__":
    main()
