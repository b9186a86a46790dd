"""Softplus-link GLMMs (``MixedCountRegressor``, Laplace ML) against R's glmmTMB (log link).

The same rows, the same covariates and the same random-effect terms go to both; each fits
on a training split and scores the held-out rows (20% of the rows of every group with at
least two, so every held-out row's group was seen: conditional predictions):

- ``grouseticks``: ``TICKS ~ YEAR + HEIGHT + (1|BROOD) + (1|LOCATION)``, negative binomial
  (lme4's grouse ticks: 403 chicks, 118 broods nested in 63 locations);
- ``epilepsy``: ``y ~ progabide + log(base/4) + log(age) + V4 + (1|subject)``, Poisson and
  negative binomial (MASS's epil: 59 patients, four counts each);
- ``simulated``: a softplus-link NB model with a correlated random intercept and slope,
  100,000 rows in 2,000 groups (``--rows``/``--groups`` to change);
- ``zip_simulated``: a softplus-link zero-inflated Poisson model with a random intercept
  in the count part and another in the zero part (glmmTMB's ``ziformula = ~ (1|g)``),
  5,000 rows in 200 groups;
- ``zip_covariate``: the same with a covariate ``w`` in the zero part as well
  (``ziformula = ~ w + (1|g)``; posheads' ``X_zero``), 5,000 rows in 200 groups;
- ``zinb_simulated``: a softplus-link zero-inflated NB2 model with random intercepts in
  both parts (glmmTMB's ``nbinom2`` with ``ziformula = ~ (1|g)``), 5,000 rows in 200
  groups.

With ``--autograd-rows`` each round also fits posheads with the family's rows
differentiated by autograd instead of its closed forms (the path a family without closed
forms takes): the closed forms' gain, measured in the same rounds.

Reported per case: the median fit time (wall and CPU seconds: on a busy shared host the
CPU time is the steadier figure) over ``--repeats`` interleaved rounds, each one
posheads fit (in this process, after one untimed warm-up fit) then one glmmTMB fit (in a
fresh R, after loading the library and one untimed warm-up fit), so both tools see the
same load and neither counts start-up; the simulated case runs one round, without
glmmTMB's warm-up fit. Then the maximised log-likelihood, and the held-out log
predictive density (sum over held-out rows, and per row). glmmTMB has no softplus link,
so the two are different models of the same data: the log-likelihoods and held-out
densities compare fits, not optimisers.

Needs ``Rscript`` with glmmTMB (Debian: ``apt-get install r-base-core r-cran-glmmtmb``);
without it, only posheads' figures are printed. Run::

    python benchmarks/bench_mixed.py [--cases grouseticks epilepsy simulated] [--repeats 5]

On a shared host set ``OMP_NUM_THREADS=1`` (glmmTMB runs on one thread; torch's OpenMP
threads spin on a busy host and burn CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_model  # benchmarks/machine.py (the script's folder is on sys.path)

from posheads.datasets import load_epilepsy, load_grouseticks
from posheads.estimators.mixed import MixedCountRegressor
from posheads.families import AutogradRows, get_family

HERE = Path(__file__).resolve().parent
R_FAMILY = {"poisson": "poisson", "negative_binomial": "nbinom2",
            "zero_inflated_poisson": "poisson", "zero_inflated_negative_binomial": "nbinom2"}


def grouseticks():
    f = load_grouseticks(as_frame=True).frame
    X = pd.DataFrame({
        "YEAR96": (f["YEAR"] == "96").astype(float),
        "YEAR97": (f["YEAR"] == "97").astype(float),
        "HEIGHT": (f["HEIGHT"] - f["HEIGHT"].mean()) / f["HEIGHT"].std(),
    })
    groups = f[["BROOD", "LOCATION"]].astype(str)
    return X, f["TICKS"].to_numpy(float), groups, {"BROOD": ["1"], "LOCATION": ["1"]}


def epilepsy():
    f = load_epilepsy(as_frame=True).frame
    X = pd.DataFrame({
        "progabide": (f["trt"] == "progabide").astype(float),
        "lbase": np.log(f["base"] / 4.0),
        "lage": np.log(f["age"]),
        "V4": f["V4"].astype(float),
    })
    return X, f["y"].to_numpy(float), f[["subject"]].astype(str), {"subject": ["1"]}


def simulated(n_rows, n_groups, seed=0):
    """NB counts, softplus link, correlated random intercept and slope on ``x``."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n_rows)
    x = rng.normal(size=n_rows)
    sd, corr = np.array([0.6, 0.4]), 0.4
    cov = np.outer(sd, sd) * np.array([[1.0, corr], [corr, 1.0]])
    u = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    mean = np.logaddexp(0.0, 2.0 + 0.7 * x + u[g, 0] + u[g, 1] * x)
    concentration = 5.0
    y = rng.negative_binomial(concentration, concentration / (concentration + mean))
    X = pd.DataFrame({"x": x})
    groups = pd.DataFrame({"g": g.astype(str)})
    return X, y.astype(float), groups, {"g": ["1", "x"]}


def zip_simulated(n_rows=5_000, n_groups=200, seed=0):
    """ZIP counts, softplus link; random intercepts in the count and the zero part."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n_rows)
    x = rng.normal(size=n_rows)
    u, v = rng.normal(0, 0.5, n_groups), rng.normal(0, 0.9, n_groups)
    mean = np.logaddexp(0.0, 1.0 + 0.5 * x + u[g])
    inflated = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-(-0.5 + v[g])))
    y = np.where(inflated, 0, rng.poisson(mean))
    X = pd.DataFrame({"x": x})
    groups = pd.DataFrame({"g": g.astype(str)})
    return X, y.astype(float), groups, {"g": ["1"]}


def zip_covariate(n_rows=5_000, n_groups=200, seed=1):
    """ZIP counts, softplus link; a zero-part covariate ``w`` beside the random intercepts
    of both parts. Returns the case and the zero part's covariates."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n_rows)
    x, w = rng.normal(size=n_rows), rng.normal(size=n_rows)
    u, v = rng.normal(0, 0.5, n_groups), rng.normal(0, 0.7, n_groups)
    mean = np.logaddexp(0.0, 1.0 + 0.5 * x + u[g])
    inflated = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-(-0.5 + 1.0 * w + v[g])))
    y = np.where(inflated, 0, rng.poisson(mean))
    X = pd.DataFrame({"x": x})
    groups = pd.DataFrame({"g": g.astype(str)})
    return X, y.astype(float), groups, {"g": ["1"]}, pd.DataFrame({"w": w})


def zinb_simulated(n_rows=5_000, n_groups=200, seed=2):
    """ZINB counts (concentration 1.5), softplus link; random intercepts in the count and
    the zero part."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n_rows)
    x = rng.normal(size=n_rows)
    u, v = rng.normal(0, 0.5, n_groups), rng.normal(0, 0.9, n_groups)
    mean, r = np.logaddexp(0.0, 1.0 + 0.5 * x + u[g]), 1.5
    inflated = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-(-0.5 + v[g])))
    y = np.where(inflated, 0, rng.negative_binomial(r, r / (r + mean)))
    X = pd.DataFrame({"x": x})
    groups = pd.DataFrame({"g": g.astype(str)})
    return X, y.astype(float), groups, {"g": ["1"]}


def split(groups, seed=0, share=0.2):
    """Boolean test mask: ``share`` of the rows of every group (of the first factor) with >= 2."""
    rng = np.random.default_rng(seed)
    key = groups.iloc[:, 0].to_numpy()
    test = np.zeros(len(key), dtype=bool)
    for rows in pd.Series(np.arange(len(key))).groupby(key).indices.values():
        if len(rows) >= 2:
            k = max(1, round(share * len(rows)))
            test[rng.choice(rows, size=min(k, len(rows) - 1), replace=False)] = True
    return test


def r_formula(target, X, spec):
    fixed = " + ".join(X.columns)
    bars = []
    for name, terms in spec.items():
        lhs = " + ".join("1" if t == "1" else t for t in terms)
        bars.append(f"({lhs} | {name})")
    return f"{target} ~ {fixed} + {' + '.join(bars)}"


def zi_formula(zero, Xz=None):
    """glmmTMB's ``ziformula`` of a zero part's spec and covariates (``"~0"``: no zero
    part)."""
    if zero is None and Xz is None:
        return "~0"
    terms = [] if Xz is None else list(Xz.columns)
    terms += [f"({' + '.join(t)} | {k})" for k, t in (zero or {}).items()]
    return "~ " + " + ".join(terms)


def run_glmmtmb(X, y, groups, spec, test, family, repeats, warmup=0, zero=None, Xz=None):
    if shutil.which("Rscript") is None:
        return None
    frame = pd.concat([X.reset_index(drop=True), groups.reset_index(drop=True)]
                      + ([] if Xz is None else [Xz.reset_index(drop=True)]), axis=1)
    frame["y"] = y
    with tempfile.TemporaryDirectory() as tmp:
        train_csv, test_csv = Path(tmp, "train.csv"), Path(tmp, "test.csv")
        frame[~test].to_csv(train_csv, index=False)
        frame[test].to_csv(test_csv, index=False)
        cmd = ["Rscript", str(HERE / "glmmtmb_fit.R"), str(train_csv), str(test_csv),
               r_formula("y", X, spec), R_FAMILY[family], ",".join(groups.columns),
               str(repeats), str(warmup), zi_formula(zero, Xz)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  glmmTMB failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Posheads:
    """Fits of one case by ``MixedCountRegressor``; the first (untimed) call warms up."""

    def __init__(self, X, y, groups, spec, test, family, zero=None, Xz=None,
                 autograd_rows=False):
        self.args = (X, y, groups, spec, test, family)
        self.zero, self.Xz, self.autograd_rows = zero, Xz, autograd_rows
        start = time.perf_counter()
        self.model = self.fit()
        self.time_first = time.perf_counter() - start

    def fit(self):
        X, y, groups, spec, test, family = self.args
        fam = get_family(family)
        if self.autograd_rows:  # the family's rows by autograd, for this fit only
            fam.rows = lambda y, exposure=None, weights=None, **kw: AutogradRows(
                fam, y, exposure, weights, **kw)
        try:
            return MixedCountRegressor(family, random_effects=spec,
                                       zero_random_effects=self.zero).fit(
                X[~test], y[~test], groups=groups[~test],
                X_zero=None if self.Xz is None else self.Xz[~test])
        finally:
            if self.autograd_rows:
                del fam.rows

    def timed(self):
        """One fit: ``(wall s, CPU s)``."""
        start, cpu0 = time.perf_counter(), time.process_time()
        self.fit()
        return time.perf_counter() - start, time.process_time() - cpu0

    def figures(self, times, cpu):
        X, y, groups, _, test, _ = self.args
        model = self.model
        lpd = model.log_score(X[test], y[test], groups=groups[test],
                              X_zero=None if self.Xz is None else self.Xz[test])
        return {"time_first": self.time_first, "time_median": float(np.median(times)),
                "cpu_median": float(np.median(cpu)),
                "loglik": model.loglik_, "heldout_lpd": float(lpd.sum()),
                "n_test": int(test.sum()), "converged": bool(model.fit_.converged),
                "sds": [float(v) for s in model.sd_.values() for v in s],
                "fixef_zi": [float(getattr(model, "gate_intercept_", np.nan)),
                             *getattr(model, "gate_coef_", [])]}


def run_interleaved(X, y, groups, spec, test, family, rounds, warmup=1, zero=None, Xz=None,
                    autograd_rows=False):
    """``rounds`` rounds of one posheads fit (and one through the autograd rows), then one
    glmmTMB fit (in a fresh R after ``warmup`` untimed fits): all see the same load.
    Medians over the rounds."""
    ours = Posheads(X, y, groups, spec, test, family, zero, Xz)
    slow = Posheads(X, y, groups, spec, test, family, zero, Xz, True) if autograd_rows \
        else None
    mine, peer, before = [], [], []
    for _ in range(rounds):
        mine.append(ours.timed())
        if slow is not None:
            before.append(slow.timed())
        r = run_glmmtmb(X, y, groups, spec, test, family, 1, warmup=warmup, zero=zero,
                        Xz=Xz)
        if r is not None:
            peer.append(r)
    times, cpu = zip(*mine, strict=True)
    theirs = None
    if peer:
        theirs = dict(peer[-1])
        theirs["time_median"] = float(np.median([r["time_median"] for r in peer]))
        theirs["cpu_median"] = float(np.median([r["cpu_median"] for r in peer]))
    autograd = None
    if before:
        autograd = slow.figures(*zip(*before, strict=True))
    return ours.figures(times, cpu), theirs, autograd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["grouseticks", "epilepsy", "simulated",
                                                       "zip_simulated", "zip_covariate"])
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds (one fit of each tool per round)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--autograd-rows", action="store_true",
                        help="also fit with the family's rows by autograd (the closed "
                             "forms' before/after)")
    args = parser.parse_args(argv)
    print(f"# CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; torch threads "
          f"{__import__('torch').get_num_threads()}")
    cases = {
        "grouseticks": (grouseticks, ["negative_binomial"]),
        "epilepsy": (epilepsy, ["poisson", "negative_binomial"]),
        "simulated": (lambda: simulated(args.rows, args.groups), ["negative_binomial"]),
        "zip_simulated": (zip_simulated, ["zero_inflated_poisson"]),
        "zip_covariate": (zip_covariate, ["zero_inflated_poisson"]),
        "zinb_simulated": (zinb_simulated, ["zero_inflated_negative_binomial"]),
    }
    zero_parts = {"zip_simulated": {"g": ["1"]}, "zip_covariate": {"g": ["1"]},
                  "zinb_simulated": {"g": ["1"]}}
    header = ("case", "family", "tool", "fit s (median)", "CPU s (median)", "loglik",
              "held-out lpd", "lpd/row")
    print(" | ".join(header))
    for case in args.cases:
        make, fams = cases[case]
        X, y, groups, spec, *Xz = make()
        Xz = Xz[0] if Xz else None
        test = split(groups)
        for family in fams:
            big = case == "simulated"  # one round; glmmTMB's warm-up would double it
            ours, peer, autograd = run_interleaved(
                X, y, groups, spec, test, family, 1 if big else args.repeats,
                warmup=0 if big else 1, zero=zero_parts.get(case), Xz=Xz,
                autograd_rows=args.autograd_rows)
            tools = [("posheads (softplus)", ours), ("glmmTMB (log)", peer)]
            if args.autograd_rows:
                tools.insert(1, ("posheads, autograd rows", autograd))
            for tool, r in tools:
                if r is None:
                    print(f"{case} | {family} | {tool} | not available")
                    continue
                print(f"{case} | {family} | {tool} | {r['time_median']:.3f} | "
                      f"{r['cpu_median']:.3f} | {r['loglik']:.2f} "
                      f"| {r['heldout_lpd']:.2f} | {r['heldout_lpd'] / r['n_test']:.4f}")
            if peer is not None:
                print(f"#   time ratio posheads/glmmTMB: "
                      f"{ours['time_median'] / peer['time_median']:.2f} (wall), "
                      f"{ours['cpu_median'] / peer['cpu_median']:.2f} (CPU); posheads first fit "
                      f"{ours['time_first']:.3f} s; SDs posheads {np.round(ours['sds'], 3)}, "
                      f"glmmTMB {np.round(peer['sds'], 3)}")
                if autograd is not None:
                    print(f"#   closed-form rows / autograd rows: "
                          f"{ours['cpu_median'] / autograd['cpu_median']:.2f} (CPU); loglik "
                          f"{ours['loglik']:.6f} vs {autograd['loglik']:.6f}")
                if Xz is not None:  # the zero part is a logit in both: comparable
                    print(f"#   zero part (intercept, {', '.join(Xz.columns)}): posheads "
                          f"{np.round(ours['fixef_zi'], 3)}, glmmTMB "
                          f"{np.round(peer['fixef_zi'], 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
