"""The ``posheads demo`` subcommand: log link vs softplus link vs negative binomial vs Bayes
on NMES1988.

A held-out split (``train_test_split(test_size=0.2, random_state=0)``) of the 4,406 rows;
features are the 16 one-hot/numeric columns of :func:`posheads.datasets.nmes1988_design`,
standardised inside each pipeline. Prints a table and writes a two-panel PNG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .io import atomic_file, check_device, check_output
from .options import add_common_options

__all__ = ["add_demo_parser", "cmd_demo", "run_demo"]

_BAYES = "posheads NB, softplus, NUTS"


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_demo` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compare count models on NMES1988 (no data needed)",
        description="Fit scikit-learn's log-link PoissonRegressor and posheads' softplus "
                    "models on a held-out split of NMES1988 (4,406 US elderly, physician "
                    "visits); print test deviance, D2, 90% interval coverage and fit time, "
                    "and write a figure.",
        epilog="example:\n  posheads demo --out demo/",
    )
    p.add_argument("--out", default="posheads-demo", help="folder for the figure")
    p.add_argument("--fast", action="store_true",
                   help="small sampler budgets (for tests; figures are less exact)")
    add_common_options(p)
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``posheads demo``; return the exit status."""
    return run_demo(out=args.out, fast=args.fast, seed=args.seed, device=args.device,
                    quiet=args.quiet)



def _poisson_deviance(y, mu):
    """Mean Poisson deviance; a mean that is exactly 0 is clipped, as the deviance needs mu > 0."""
    import numpy as np
    from sklearn.metrics import mean_poisson_deviance

    return mean_poisson_deviance(y, np.maximum(mu, 1e-12))


def _d2(y, mu):
    """Fraction of Poisson deviance explained, with the same clip as the deviance."""
    import numpy as np
    from sklearn.metrics import d2_tweedie_score

    return d2_tweedie_score(y, np.maximum(mu, 1e-12), power=1)


def _models(fast: bool, seed: int, device: str, quiet: bool):
    """The four pipelines the demo compares, by the name printed in the table."""
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..estimators import NegativeBinomialSoftplusRegressor, PoissonSoftplusRegressor

    warmup, draws = (100, 200) if fast else (500, 1000)
    common = dict(alpha=0.0, device=device, random_state=seed)
    return {
        "scikit-learn Poisson, log link": make_pipeline(
            StandardScaler(), PoissonRegressor(alpha=0.0, max_iter=1000)),
        "posheads Poisson, softplus": make_pipeline(
            StandardScaler(), PoissonSoftplusRegressor(**common)),
        "posheads NB, softplus": make_pipeline(
            StandardScaler(), NegativeBinomialSoftplusRegressor(**common)),
        # The Bayesian fit: exact posterior draws by NUTS (one chain, whitened by the
        # Laplace covariance at the mode), with its progress bar unless --quiet.
        _BAYES: make_pipeline(
            StandardScaler(), NegativeBinomialSoftplusRegressor(
                inference="nuts", num_warmup=warmup, num_samples=draws, num_chains=1,
                verbose=0 if quiet else 1, **common)),
    }


def _interval(name, model, X, mu, coverage=0.9):
    """Predictive interval: the estimator's own, or the plug-in Poisson one for scikit-learn."""
    from scipy import stats

    est = model[-1]
    if hasattr(est, "predict_interval"):
        Xs = model[:-1].transform(X)
        b = est.predict_interval(Xs, coverage=coverage)
        return b[:, 0], b[:, 1]
    a = (1 - coverage) / 2
    return stats.poisson.ppf(a, mu), stats.poisson.ppf(1 - a, mu)


def run_demo(out: str, fast: bool, seed: int, device: str, quiet: bool) -> int:
    """Fit, compare and plot; print the table and the figure's path.

    Parameters
    ----------
    out : str
        Folder for the figure ``nmes1988_demo.png``.
    fast : bool
        Small NUTS budgets, for tests.
    seed : int
        Random seed of every fit.
    device : str
        Device of the posheads fits (``auto``, ``cpu`` or ``cuda``).
    quiet : bool
        Print only the table and the figure's path.

    Returns
    -------
    int
        The exit status, 0.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from ..datasets import load_nmes1988, nmes1988_design

    check_device(device)
    check_output(out, folder=True)  # before minutes of fitting, not after
    bunch = load_nmes1988(as_frame=True)
    X = nmes1988_design(bunch.frame).to_numpy(np.float64)
    y = bunch.target.to_numpy(np.float64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0)
    if not quiet:
        print(f"NMES1988: {len(y)} people, office visits; train {len(y_tr)}, test {len(y_te)}, "
              f"{X.shape[1]} features\n")
    from .. import inference, posterior  # noqa: F401  (loading Pyro is not fit time)

    rows, preds = [], {}
    for name, model in _models(fast, seed, device, quiet).items():
        t0 = time.perf_counter()
        model.fit(X_tr, y_tr)
        elapsed = time.perf_counter() - t0
        mu = model.predict(X_te)
        lo, hi = _interval(name, model, X_te, mu)
        preds[name] = (mu, lo, hi, model)
        cover = np.mean((y_te >= lo) & (y_te <= hi))
        rows.append((name, _poisson_deviance(y_te, mu), _d2(y_te, mu), cover, elapsed))
    print(f"{'model':<30} {'test deviance':>13} {'D2':>7} {'90% cover':>9} {'fit s':>7}")
    for name, dev, d2, cover, sec in rows:
        print(f"{name:<30} {dev:13.3f} {d2:7.3f} {cover:9.1%} {sec:7.2f}")
    path = Path(out) / "nmes1988_demo.png"
    _figure(path, y_te, preds)
    print(f"\nfigure: {path}")
    return 0


def _figure(path: Path, y, preds):
    """Observed vs predicted for the Bayesian fit, and a hanging rootogram of two fits."""
    import matplotlib
    import numpy as np
    from scipy import stats

    matplotlib.use("Agg")  # no display needed: the figure goes to a file
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    name = _BAYES
    mu, lo, hi, _ = preds[name]
    order = np.argsort(mu)
    idx = np.arange(len(mu))
    ax1.fill_between(idx, lo[order], hi[order], color="tab:blue", alpha=0.25,
                     label="90% predictive interval", step="mid")
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(y))
    ax1.scatter(idx, y[order] + jitter, s=3, color="k", alpha=0.4, label="observed")
    ax1.plot(idx, mu[order], color="tab:blue", label="predicted mean")
    ax1.set(xlabel="test rows, by predicted mean", ylabel="office visits", ylim=(-1, 40),
            title=f"Observed vs predicted ({name})")
    ax1.legend(loc="upper left")

    ks = np.arange(0, 31)
    observed = np.array([(y == k).sum() for k in ks])
    width = 0.4
    for shift, key, color in [(-0.2, "posheads Poisson, softplus", "tab:orange"),
                              (0.2, "posheads NB, softplus", "tab:blue")]:
        m = preds[key][0]
        est = preds[key][3][-1]
        if hasattr(est, "concentration_"):
            r = est.concentration_
            pmf = stats.nbinom.pmf(ks[:, None], r, r / (r + m[None, :]))
        else:
            pmf = stats.poisson.pmf(ks[:, None], m[None, :])
        expected = pmf.sum(axis=1)
        # Hanging rootogram: bars of sqrt(observed) hang from the curve sqrt(expected).
        top = np.sqrt(expected)
        ax2.bar(ks + shift, np.sqrt(observed), bottom=top - np.sqrt(observed), width=width,
                color=color, alpha=0.5, label=key)
        ax2.plot(ks + shift, top, "o-", color=color, ms=3)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set(xlabel="visits", ylabel="sqrt(frequency)",
            title="Hanging rootogram (bars below 0: model misses)")
    ax2.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
