"""Benchmark of ``BayesianNeuralCountRegressor`` against the models a user would otherwise pick.

Five parts, each printed as a Markdown table (all figures from the same run):

``nmes``
    NMES1988, ``visits`` on the 16-column design, ``train_test_split(test_size=0.2,
    random_state=0)``: test mean Poisson deviance, 90% interval coverage and fit time of
    the BNN with default settings, next to scikit-learn's log-link ``PoissonRegressor
    (alpha=0)``, ``HistGradientBoostingRegressor(loss="poisson")`` and the softplus-link
    GLM (``posheads.PoissonSoftplusRegressor(alpha=0)``); also the BNN's variants (Poisson
    head, fully mean-field guide), to show what the defaults buy.
``sim``
    A simulated non-linear count problem with known mean: root mean squared error of the
    predicted mean against the truth, and interval coverage.
``dead``
    ReLU against softplus on the same network and data: the fraction of hidden units
    that never activate on the training rows (ReLU: exactly 0 on every row; softplus:
    below 1e-6 on every row) and of units whose output is constant over the rows; and the
    time per epoch (one full-batch SVI step) and of the activation alone.
``scale``
    Mini-batch SVI on ``--rows`` simulated rows (default 1,000,000): time per epoch and
    peak resident memory (``resource.getrusage(...).ru_maxrss``, in a fresh process).
``throughput``
    Training rows per second of the estimator's mini-batch SVI (default guide, network
    and ``dtype``; Poisson and negative-binomial heads; the one-pass ELBO,
    ``engine="torch"``, and Pyro's ``Trace_ELBO``, ``engine="pyro"``) against a plain-torch loop of
    the same network fitted by maximum likelihood: ``Linear`` layers, softplus, the skip
    term, the softplus-rate Poisson or NB negative log-likelihood, ``torch.optim.Adam``
    with the same batch size and learning rate (and, by default, the same fused Adam
    kernel as the estimator's step: ``--plain-adam default`` for torch's default). Only
    the training epochs are timed (for the estimator, the call to the SVI loop, seen
    through a wrapper); the loops run in turn, ``--repeats`` times, and the table shows
    the medians.

Run: ``python benchmarks/bench_bnn.py [--parts nmes sim dead scale throughput] [--rows N]
[--threads 2] [--throughput-rows N] [--repeats N] [--clock wall|cpu]
[--plain-adam fused|default]``.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import mean_poisson_deviance
from sklearn.model_selection import train_test_split

from posheads.datasets import load_nmes1988, nmes1988_design
from posheads.estimators.bnn import BayesianNeuralCountRegressor
from posheads.inference import svi as svi_engine


def _coverage(interval, y):
    return float(np.mean((interval[:, 0] <= y) & (y <= interval[:, 1])))


def _timed_fit(est, X, y, **kwargs):
    start = time.perf_counter()
    est.fit(X, y, **kwargs)
    return est, time.perf_counter() - start


def _table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    print()


# ------------------------------------------------------------------------------ NMES1988
def nmes(seed: int) -> None:
    from posheads import PoissonSoftplusRegressor

    frame = load_nmes1988(as_frame=True).frame
    X = nmes1988_design(frame).to_numpy(np.float64)
    y = frame["visits"].to_numpy(np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    mean, sd = X_train.mean(0), X_train.std(0)  # the GLM peers see standardised columns

    def std(a):
        return (a - mean) / sd

    rows = []
    peers = [
        ("scikit-learn PoissonRegressor(alpha=0), log link",
         PoissonRegressor(alpha=0, max_iter=1000), True),
        ('HistGradientBoostingRegressor(loss="poisson")',
         HistGradientBoostingRegressor(loss="poisson", random_state=0), False),
        ("posheads PoissonSoftplusRegressor(alpha=0), softplus GLM",
         PoissonSoftplusRegressor(alpha=0), True),
    ]
    for name, est, scaled in peers:
        est, seconds = _timed_fit(est, std(X_train) if scaled else X_train, y_train)
        mu = est.predict(std(X_test) if scaled else X_test)
        rows.append([name, f"{mean_poisson_deviance(y_test, mu):.3f}", "-", f"{seconds:.2f}"])
    variants = [
        ("BayesianNeuralCountRegressor() -- defaults (one-pass ELBO)", {}),
        ('  engine="pyro" (Pyro\'s Trace_ELBO, the path before the one-pass ELBO)',
         {"engine": "pyro"}),
        ('  likelihood="poisson"', {"likelihood": "poisson"}),
        ('  guide="normal" (fully mean-field)', {"guide": "normal"}),
        ('  guide="normal", hidden_layer_sizes=(8,)',
         {"guide": "normal", "hidden_layer_sizes": (8,)}),
    ]
    for name, params in variants:
        est, seconds = _timed_fit(
            BayesianNeuralCountRegressor(random_state=seed, **params), X_train, y_train)
        dev = mean_poisson_deviance(y_test, est.predict(X_test))
        cov = _coverage(est.predict_interval(X_test, coverage=0.9), y_test)
        rows.append([name, f"{dev:.3f}", f"{cov:.3f}", f"{seconds:.1f}"])
    for engine in ("auto", "pyro"):  # the spread over seeds: is a margin luck?
        devs, covs = [], []
        for s in range(5):
            est = BayesianNeuralCountRegressor(random_state=s, engine=engine).fit(X_train,
                                                                                  y_train)
            devs.append(mean_poisson_deviance(y_test, est.predict(X_test)))
            covs.append(_coverage(est.predict_interval(X_test, coverage=0.9), y_test))
        rows.append([f"  engine={engine!r}, random_state=0..4: mean [min, max]",
                     f"{np.mean(devs):.3f} [{min(devs):.3f}, {max(devs):.3f}]",
                     f"{np.mean(covs):.3f} [{min(covs):.3f}, {max(covs):.3f}]", "-"])
    print(f"NMES1988 held-out ({len(y_test)} rows), torch threads {torch.get_num_threads()}")
    _table(["model", "test mean Poisson deviance", "90% interval coverage", "fit s"], rows)


# ------------------------------------------------------------------------- simulation
def simulate(n: int, seed: int, n_features: int = 3):
    """NB counts (concentration 3) of a known, non-linear mean.

    ``mean = softplus(0.5 + 2 sin(2 x0) + x1**2 - 0.5 x2)`` with ``x ~ U(-2, 2)``; extra
    features (``n_features > 3``) are pure noise.
    """
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, n_features))
    mean = np.logaddexp(0, 0.5 + 2 * np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - 0.5 * X[:, 2])
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mean)).astype(np.float64)
    return X.astype(np.float64), y, mean


def sim(seed: int) -> None:
    from posheads import PoissonSoftplusRegressor

    X, y, mean = simulate(4000, seed=1)
    X_train, y_train, X_test, y_test, mean_test = X[:2000], y[:2000], X[2000:], y[2000:], \
        mean[2000:]
    rows = []
    for name, est in [
        ("scikit-learn PoissonRegressor(alpha=0)", PoissonRegressor(alpha=0)),
        ("posheads PoissonSoftplusRegressor(alpha=0)", PoissonSoftplusRegressor(alpha=0)),
        ("BayesianNeuralCountRegressor(hidden_layer_sizes=()) (Bayesian GLM)",
         BayesianNeuralCountRegressor((), random_state=seed)),
        ("BayesianNeuralCountRegressor() -- defaults",
         BayesianNeuralCountRegressor(random_state=seed)),
    ]:
        est, seconds = _timed_fit(est, X_train, y_train)
        rmse = float(np.sqrt(np.mean((est.predict(X_test) - mean_test) ** 2)))
        cov = "-"
        if hasattr(est, "predict_interval") and isinstance(est, BayesianNeuralCountRegressor):
            cov = f"{_coverage(est.predict_interval(X_test, coverage=0.9), y_test):.3f}"
        rows.append([name, f"{rmse:.3f}", cov, f"{seconds:.1f}"])
    print("Simulated non-linear counts (2,000 train / 2,000 test rows, true mean known)")
    _table(["model", "RMSE of the mean vs truth", "90% interval coverage", "fit s"], rows)


# ------------------------------------------------------------------- dead units, timing
def _unit_fractions(est, X, activation: str) -> tuple[float, float]:
    """Fractions of hidden units that are dead, and that are constant, on the rows ``X``.

    Dead: ReLU output exactly 0 on every row; softplus output below 1e-6 on every row.
    Constant: output spread (max - min over the rows) below 1e-6 -- a unit that carries
    no information whatever its level, which is how a softplus unit "dies" (its output
    cannot reach 0, but its weights can shrink to 0).
    """
    layers = est.hidden_activations(X)
    dead = [np.all(h == 0 if activation == "relu" else h < 1e-6, axis=0) for h in layers]
    flat = [np.ptp(h, axis=0) < 1e-6 for h in layers]
    return float(np.mean(np.concatenate(dead))), float(np.mean(np.concatenate(flat)))


def _step_seconds(activation: str, X, y, steps: int) -> float:
    """Seconds per full-batch SVI step (= one epoch) of the default network."""
    est = BayesianNeuralCountRegressor(activation=activation, num_steps=steps, patience=None,
                                       num_samples=1, random_state=0)
    est, seconds = _timed_fit(est, X, y)
    return seconds / est.n_iter_


def _min_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timings: the least disturbed by other work on the host."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def dead(seeds: int) -> None:
    from posheads.heads import Softplus

    frame = load_nmes1988(as_frame=True).frame
    X = nmes1988_design(frame).to_numpy(np.float64)
    y = frame["visits"].to_numpy(np.float64)
    X_sim, y_sim, _ = simulate(4000, seed=2)
    rows = []
    for data_name, (A, b) in [("NMES1988 (4,406 rows)", (X, y)),
                              ("simulated (4,000 rows)", (X_sim, y_sim))]:
        for width, lr in [(32, 0.01), (128, 0.05)]:
            out = {}
            for activation in ("relu", "softplus"):
                out[activation] = np.mean([
                    _unit_fractions(BayesianNeuralCountRegressor(
                        (width,), activation=activation, learning_rate=lr, num_samples=50,
                        random_state=s).fit(A, b), A, activation)
                    for s in range(seeds)], axis=0)
            rows.append([data_name, f"({width},), lr={lr}",
                         f"{out['relu'][0]:.3f}", f"{out['softplus'][0]:.3f}",
                         f"{out['relu'][1]:.3f}", f"{out['softplus'][1]:.3f}"])
    print(f"Hidden units after training, default guide (mean over {seeds} seeds)")
    _table(["data", "network", "ReLU dead", "softplus dead (< 1e-6)", "ReLU constant",
            "softplus constant"], rows)

    timing = []
    for data_name, (A, b) in [("NMES1988", (X, y)), ("simulated", (X_sim, y_sim))]:
        # interleaved, fastest of 5: the host is shared, and the minimum is the least noisy
        relu, soft = np.inf, np.inf
        for _ in range(5):
            relu = min(relu, _step_seconds("relu", A, b, steps=100))
            soft = min(soft, _step_seconds("softplus", A, b, steps=100))
        timing.append([f"{data_name}: SVI epoch (full batch, default network)",
                       f"{relu * 1e3:.2f}", f"{soft * 1e3:.2f}",
                       f"{100 * (soft / relu - 1):+.1f}%"])
    # the activation alone, on one thread (no pool to wake), interleaved, fastest of 10
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    z = torch.randn(4096, 256, requires_grad=True)
    fns = {"torch.relu": torch.relu, "torch.nn.functional.softplus": torch.nn.functional.softplus,
           "posheads.heads.Softplus": Softplus()}
    best = dict.fromkeys(fns, np.inf)
    for _ in range(10):
        for name, fn in fns.items():
            best[name] = min(best[name], _min_time(lambda fn=fn: fn(z).sum().backward(), 5))
    torch.set_num_threads(before)
    for name in ("torch.nn.functional.softplus", "posheads.heads.Softplus"):
        timing.append([f"activation alone, 4096 x 256 float32 fwd + bwd, 1 thread: {name}",
                       f"{best['torch.relu'] * 1e3:.3f}", f"{best[name] * 1e3:.3f}",
                       f"{100 * (best[name] / best['torch.relu'] - 1):+.1f}%"])
    print("Training time, ReLU against softplus (fastest of interleaved repeats)")
    _table(["what", "ReLU ms", "softplus ms", "softplus overhead"], timing)


# ------------------------------------------------------------------------------ scale
def scale(rows: int, epochs: int, batch_size: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    X, y, _ = simulate(rows, seed=3, n_features=10)
    X = X.astype(np.float32)
    after_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps_per_epoch = rows // batch_size
    est = BayesianNeuralCountRegressor(batch_size=batch_size, num_steps=epochs * steps_per_epoch,
                                       learning_rate=0.01, patience=None, dtype="float32",
                                       num_samples=200, random_state=0)
    est, seconds = _timed_fit(est, X, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    X_test, _, mean_test = simulate(20000, seed=4, n_features=10)
    rmse = float(np.sqrt(np.mean((est.predict(X_test) - mean_test) ** 2)))
    print(f"Mini-batch SVI at scale: {rows:,} rows x 10 features, batch {batch_size}, "
          f"float32, {epochs} epoch(s) = {est.n_iter_} steps")
    _table(["rows", "s per epoch", "fit s (incl. 200 posterior draws)", "X MiB",
            "RSS before data MiB", "RSS after data MiB", "peak RSS MiB",
            "RMSE of mean (20k test rows)"],
           [[f"{rows:,}", f"{seconds / epochs:.1f}", f"{seconds:.1f}",
             f"{X.nbytes / 2**20:.0f}", f"{before:.0f}", f"{after_data:.0f}", f"{peak:.0f}",
             f"{rmse:.3f}"]])


# -------------------------------------------------------------------------- throughput
#: The clock of the throughput loops: wall time, or with ``--clock cpu`` this process's
#: CPU time (for one intra-op thread on a shared host: the work done, not the waiting).
_clock = time.perf_counter


@contextlib.contextmanager
def _timed_svi(record: dict):
    """Time each call of the inference stack's SVI loop (and note its thread count) into
    ``record``; the estimator looks ``run_steps`` up when it fits."""
    inner = svi_engine.run_steps

    def timed(*args, **kwargs):
        record["threads"] = torch.get_num_threads()  # the estimator may lower it for small steps
        start = _clock()
        out = inner(*args, **kwargs)
        record["seconds"] = _clock() - start
        return out

    svi_engine.run_steps = timed
    try:
        yield record
    finally:
        svi_engine.run_steps = inner


def _ours_seconds(X, y, likelihood: str, steps: int, batch_size: int,
                  engine: str = "auto") -> tuple[float, int]:
    """Seconds of the estimator's SVI loop alone, and the threads it ran on."""
    est = BayesianNeuralCountRegressor(likelihood=likelihood, batch_size=batch_size,
                                       num_steps=steps, learning_rate=0.01, patience=None,
                                       num_samples=1, random_state=0, engine=engine)
    with _timed_svi({}) as record:
        est.fit(X, y)
    assert est.n_iter_ == steps
    return record["seconds"], record["threads"]


class _PlainNet(torch.nn.Module):
    """The estimator's network as an ordinary module: softplus MLP, skip term, raw outputs."""

    def __init__(self, p: int, width: int, outputs: int):
        super().__init__()
        self.hidden, self.proj = torch.nn.Linear(p, width), torch.nn.Linear(width + p, outputs)

    def forward(self, x):
        h = torch.nn.functional.softplus(self.hidden(x))
        return self.proj(torch.cat([h, x], dim=-1))


def _plain_nll(out, y, likelihood: str):
    """Mean negative log-likelihood with the softplus rate (constant terms dropped)."""
    rate = torch.nn.functional.softplus(out[:, 0])
    if likelihood == "poisson":
        return torch.nn.functional.poisson_nll_loss(rate, y, log_input=False)
    r = torch.nn.functional.softplus(out[:, 1])
    # NB(r, p = rate / (r + rate)): the mean is ``rate``
    logits = torch.log(rate) - torch.log(r)
    nb = torch.distributions.NegativeBinomial(r, logits=logits, validate_args=False)
    return -nb.log_prob(y).mean()


#: The plain loop's Adam: ``fused=True``, the kernel the estimator's SVI step runs (like
#: for like), or with ``--plain-adam default`` torch's default (one tensor at a time on CPU).
_plain_adam = {"fused": True}


def _plain_seconds(X, y, likelihood: str, steps: int, batch_size: int) -> float:
    """Seconds of ``steps`` Adam steps of the plain-torch loop on whole mini-batches."""
    torch.manual_seed(0)
    net = _PlainNet(X.shape[1], 32, 1 if likelihood == "poisson" else 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, **_plain_adam)
    n, done = X.shape[0], 0
    start = _clock()
    while done < steps:
        perm = torch.randperm(n)
        for lo in range(0, n - batch_size + 1, batch_size):
            if done == steps:
                break
            idx = perm[lo:lo + batch_size]
            loss = _plain_nll(net(X[idx]), y[idx], likelihood)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
    return _clock() - start


def throughput(rows: int, epochs: int, batch_size: int, repeats: int) -> None:
    X, y, _ = simulate(rows, seed=5, n_features=10)
    X = X.astype(np.float32)
    Z = torch.as_tensor((X - X.mean(0)) / X.std(0))  # the estimator standardises inside
    t = torch.as_tensor(y, dtype=torch.float32)
    steps = epochs * (rows // batch_size)
    done_rows = steps * batch_size
    table = []
    engines = ("torch", "pyro")
    for likelihood in ("poisson", "negative_binomial"):
        for engine in engines:  # warm-up: first-call costs untimed
            _ours_seconds(X[:2 * batch_size], y[:2 * batch_size], likelihood, 2, batch_size,
                          engine)
        _plain_seconds(Z, t, likelihood, 2, batch_size)
        ours = {engine: [] for engine in engines}
        plain, threads = [], set()
        for _ in range(repeats):  # interleaved: all loops see the same host load
            for engine in engines:
                seconds, used = _ours_seconds(X, y, likelihood, steps, batch_size, engine)
                ours[engine].append(seconds)
                threads.add(used)
            plain.append(_plain_seconds(Z, t, likelihood, steps, batch_size))
        b = done_rows / np.median(plain)
        for engine in engines:
            a = done_rows / np.median(ours[engine])
            table.append([likelihood, engine, f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}",
                          f"{np.median(ours[engine]) / steps * 1e3:.2f}",
                          f"{np.median(plain) / steps * 1e3:.2f}",
                          ", ".join(str(k) for k in sorted(threads))])
    print(f"SVI training throughput: {rows:,} rows x 10 features, batch {batch_size}, float32, "
          f"{epochs} epochs = {steps} steps, network (32,) softplus + skip; torch threads "
          f"{torch.get_num_threads()}; plain loop's Adam {_plain_adam or 'default'}; median of "
          f"{repeats} interleaved repeats")
    _table(["head", "engine", "posheads rows/s (SVI, last_layer guide)",
            "plain torch rows/s (Adam, MLE)", "ratio (posheads / torch)", "posheads ms/step",
            "torch ms/step", "posheads SVI threads"], table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = ["nmes", "sim", "dead", "scale", "throughput"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--throughput-rows", type=int, default=200_000)
    parser.add_argument("--throughput-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="throughput clock; 'cpu' (process time) needs --threads 1")
    parser.add_argument("--plain-adam", choices=["fused", "default"], default="fused",
                        help="the plain loop's torch.optim.Adam: fused=True (the estimator's "
                             "kernel) or torch's default")
    args = parser.parse_args(argv)
    if args.plain_adam == "default":
        _plain_adam.clear()
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu counts the CPU time of all threads: use --threads 1")
        global _clock
        _clock = time.process_time
    torch.set_num_threads(args.threads)
    if "scale" in args.parts and args.parts != ["scale"]:
        # ru_maxrss is the peak of the process and survives exec: measure in a fresh
        # interpreter started before this one has grown
        subprocess.run([sys.executable, __file__, "--parts", "scale", "--rows", str(args.rows),
                        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--threads", str(args.threads)], check=True)
    if "nmes" in args.parts:
        nmes(seed=0)
    if "sim" in args.parts:
        sim(seed=0)
    if "dead" in args.parts:
        dead(args.seeds)
    if "throughput" in args.parts:
        throughput(args.throughput_rows, args.throughput_epochs, args.batch_size, args.repeats)
    if args.parts == ["scale"]:
        scale(args.rows, args.epochs, args.batch_size)


if __name__ == "__main__":
    main()
