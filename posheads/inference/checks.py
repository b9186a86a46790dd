"""Checks of a finished fit: :func:`diagnose` and :class:`FitDiagnostics`, the warning
class :class:`SamplerWarning`, and :func:`user_stacklevel`.

After every Bayesian fit the estimators call :func:`diagnose` on its
:class:`~posheads.posterior.Posterior` and keep the result as ``diagnostics_``. It
reports, in the terms of arviz and PyMC (Vehtari et al. 2021, "Rank-normalization,
folding, and localization: an improved R-hat", Bayesian Analysis 16(2)):

* NUTS: the number of divergent transitions after warm-up, the rank-normalised split
  R-hat (with two chains or more) and the bulk and tail effective sample sizes, through
  ``arviz.rhat`` and ``arviz.ess`` (arviz is imported inside the function that needs
  it); a chain whose draws never move ("stuck");
* SVI: whether the smoothed ELBO stopped improving (the plateau rule) before the step
  budget ran out;
* every engine: budgets too small to mean anything (``num_warmup < 50``,
  ``num_samples < 100``, ``num_steps < 100``).

Each shortfall is one :class:`SamplerWarning` (a ``UserWarning``) whose message says what
to change. The thresholds are the module constants below: R-hat above ``1.01``, a bulk or
tail ESS below ``400`` in all (the floor the paper above recommends), any divergence.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass, field

import torch

__all__ = [
    "ESS_MIN",
    "MAX_COORDINATES",
    "MIN_DRAWS",
    "MIN_STEPS",
    "MIN_WARMUP",
    "RHAT_MAX",
    "FitDiagnostics",
    "SamplerWarning",
    "budget_warning",
    "diagnose",
    "diagnose_draws",
    "draw_statistics",
    "user_stacklevel",
    "warn",
]

RHAT_MAX = 1.01  # arviz / PyMC: R-hat above this flags chains that have not mixed
ESS_MIN = 400  # bulk and tail ESS in all (Vehtari et al. 2021, section 4)
MIN_WARMUP = 50  # NUTS warm-up steps below this adapt nothing
MIN_DRAWS = 100  # draws below this make ESS and intervals meaningless
MIN_STEPS = 100  # SVI steps below this leave the guide near its start
# R-hat and ESS cost a few ms per coordinate: a posterior with more coordinates (a
# network's weights) is checked on this many, evenly spaced.
MAX_COORDINATES = 256


class SamplerWarning(UserWarning):
    """A Bayesian fit whose draws should not be trusted as they are: divergences, R-hat
    above 1.01, too few effective draws, a stuck chain, an ELBO still falling, or a
    budget too small to tell."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside posheads.

    Call it in the function that calls :func:`warnings.warn`: level 1 is that function,
    and every enclosing posheads frame (the estimators' ``fit``, the engines, the
    ``posheads.models`` package) adds one.
    """
    inside = _posheads_dirs()
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _posheads_dirs() -> tuple[str, ...]:
    dirs = []
    for name in ("posheads", "posheads.models", "posheads.datasets"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    return tuple(dirs)


def warn(message: str, category=SamplerWarning) -> None:
    """Warn with ``message``, pointing at the caller's own code (see :func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())


@dataclass
class FitDiagnostics:
    """What a fit says about itself (the ``diagnostics_`` of a fitted estimator).

    Attributes
    ----------
    method : str
        ``"map"``, ``"laplace"``, ``"svi"`` or ``"nuts"``.
    num_chains, num_draws : int
        Shape of the draws (``1, 1`` for a MAP fit).
    converged : bool or None
        MAP / Laplace: the mode search met its tolerance; SVI: the ELBO plateaued.
    n_iter : int or None
        Newton / L-BFGS iterations, or SVI steps taken.
    grad_max : float or None
        MAP / Laplace: ``max |gradient|`` at the end.
    divergences : int or None
        NUTS: divergent transitions after warm-up (all chains).
    r_hat : float or None
        NUTS: the largest rank-normalised split R-hat (NaN with one chain).
    ess_bulk, ess_tail : float or None
        NUTS: the smallest bulk and tail effective sample sizes (all chains together).
    stuck_chains : list of int
        Chains whose draws are all equal.
    messages : list of str
        The shortfalls found (each was warned as a :class:`SamplerWarning`).
    """

    method: str
    num_chains: int = 1
    num_draws: int = 1
    converged: bool | None = None
    n_iter: int | None = None
    grad_max: float | None = None
    divergences: int | None = None
    r_hat: float | None = None
    ess_bulk: float | None = None
    ess_tail: float | None = None
    stuck_chains: list = field(default_factory=list)
    messages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no shortfall was found."""
        return not self.messages

    def to_dict(self) -> dict:
        """The diagnostics as JSON-ready values (NaN kept as ``float('nan')``)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    def lines(self) -> list[str]:
        """One human-readable line per number measured (for printed summaries)."""
        out = [f"engine {self.method}: {self.num_chains} chain(s) x {self.num_draws} draw(s)"]
        if self.method in ("map", "laplace") and self.n_iter is not None:
            state = "converged" if self.converged else "NOT converged"
            out.append(f"mode search {state} after {self.n_iter} iteration(s), "
                       f"max |gradient| {_fmt(self.grad_max)}")
        if self.method == "svi":
            state = "plateaued" if self.converged else "still improving (no plateau)"
            out.append(f"ELBO {state} after {self.n_iter} step(s)")
        if self.divergences is not None:
            out.append(f"divergences {self.divergences}")
        if self.ess_bulk is not None:
            out.append(f"R-hat max {_fmt(self.r_hat)}, ESS bulk min {_fmt(self.ess_bulk)}, "
                       f"ESS tail min {_fmt(self.ess_tail)}")
        if self.stuck_chains:
            out.append(f"stuck chain(s): {self.stuck_chains}")
        return out + [f"warning: {m}" for m in self.messages]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def budget_warning(**budget) -> str | None:
    """The message for a budget too small to mean anything, or None.

    Parameters
    ----------
    **budget
        Any of ``num_warmup``, ``num_samples`` (NUTS draws per chain) and ``num_steps``
        (SVI), with their values; None values are skipped.
    """
    floors = {"num_warmup": MIN_WARMUP, "num_samples": MIN_DRAWS, "num_steps": MIN_STEPS}
    small = [f"{k}={v}" for k, v in budget.items()
             if v is not None and k in floors and v < floors[k]]
    if not small:
        return None
    wanted = ", ".join(f"{k} >= {floors[k]}" for k in budget if k in floors)
    return (f"the inference budget is too small to trust ({', '.join(small)}): the draws "
            f"are barely past their start; use {wanted}")


def diagnose(posterior, *, budget: dict | None = None, emit: bool = True,
             plateau: bool = True) -> FitDiagnostics:
    """The diagnostics of a fitted posterior, warning once per shortfall.

    Parameters
    ----------
    posterior : Posterior
        From any engine; ``sample_stats["diverging"]`` of shape ``(chains, draws)`` is
        read where present, ``extra["converged"]``, ``"n_iter"`` and ``"grad_max"`` too.
    budget : dict, optional
        The engine's budget (``num_warmup``, ``num_samples``, ``num_steps``), for
        :func:`budget_warning`.
    emit : bool
        Warn with :class:`SamplerWarning` for each shortfall (``False``: only record).
    plateau : bool
        SVI ran a plateau rule (``patience`` set): a run that ended without a plateau
        is warned about.

    Returns
    -------
    FitDiagnostics
    """
    return diagnose_draws(posterior.method, posterior.samples,
                          sample_stats=posterior.sample_stats, extra=posterior.extra,
                          budget=budget, emit=emit, plateau=plateau)


def diagnose_draws(method: str, samples: dict, *, sample_stats=None, extra=None,
                   budget: dict | None = None, emit: bool = True,
                   plateau: bool = True) -> FitDiagnostics:
    """:func:`diagnose` for draws held outside a :class:`~posheads.posterior.Posterior`.

    Parameters
    ----------
    method : str
    samples : dict of str to Tensor
        Each of shape ``(num_chains, num_draws, *site_shape)``.
    sample_stats : dict of str to Tensor, optional
        ``"diverging"`` of shape ``(num_chains, num_draws)``.
    extra : dict, optional
        ``"converged"``, ``"n_iter"``, ``"grad_max"``.
    budget, emit, plateau
        As in :func:`diagnose`.
    """
    extra = extra or {}
    lead = next(iter(samples.values())).shape[:2]
    d = FitDiagnostics(method=method, num_chains=int(lead[0]), num_draws=int(lead[1]))
    if "converged" in extra:
        d.converged = bool(extra["converged"])
    if "n_iter" in extra:
        d.n_iter = int(extra["n_iter"])
    if "grad_max" in extra:
        d.grad_max = float(extra["grad_max"])
    message = budget_warning(**(budget or {}))
    if message:
        d.messages.append(message)
    if method == "svi" and plateau and d.converged is False and not message:
        d.messages.append(f"the ELBO had not plateaued when SVI stopped after {d.n_iter} "
                          "step(s): the variational posterior may not be fitted yet; "
                          "increase num_steps (or lower learning_rate)")
    if method == "nuts":
        _sampler_checks(samples, sample_stats or {}, d)
    if emit:
        for m in d.messages:
            warnings.warn(m, SamplerWarning, stacklevel=user_stacklevel())
    return d


def _sampler_checks(samples: dict, sample_stats: dict, d: FitDiagnostics) -> None:
    diverging = sample_stats.get("diverging")
    if diverging is not None:
        d.divergences = int(torch.as_tensor(diverging).sum())
        if d.divergences:
            d.messages.append(
                f"there were {d.divergences} divergence(s) after tuning: the draws may miss "
                "part of the posterior; increase num_warmup or target_accept_prob, or "
                "reparameterise")
    flat = _flat_draws(samples)
    moving = (flat.max(dim=1).values - flat.min(dim=1).values).amax(dim=-1) > 0
    d.stuck_chains = [int(c) for c in torch.nonzero(~moving).flatten()]
    if d.stuck_chains and d.num_draws > 1:
        d.messages.append(f"chain(s) {d.stuck_chains} never moved (all draws equal): the "
                          "sampler is stuck; increase num_warmup, check the model's scale")
    stats = draw_statistics(flat)
    d.r_hat = _worst(stats["r_hat"], max)
    d.ess_bulk = _worst(stats["ess_bulk"], min)
    d.ess_tail = _worst(stats["ess_tail"], min)
    if d.num_chains > 1 and d.r_hat is not None and not d.r_hat <= RHAT_MAX:
        d.messages.append(f"the rhat statistic is larger than {RHAT_MAX} for some parameters "
                          f"(max {_fmt(d.r_hat)}): the chains have not mixed; run longer "
                          "(num_warmup, num_samples)")
    low = [f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in
           (("ess_bulk", d.ess_bulk), ("ess_tail", d.ess_tail))
           if v is not None and not v >= ESS_MIN]
    if low and not d.stuck_chains:
        d.messages.append(f"the effective sample size is smaller than {ESS_MIN} for some "
                          f"parameters ({', '.join(low)}): intervals and tail quantiles are "
                          "unreliable; increase num_samples")


def _worst(values, pick):
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return float("nan") if len(values) else None
    return pick(finite)


def _flat_draws(samples: dict) -> torch.Tensor:
    """Every site's draws as one ``(chains, draws, k)`` float64 tensor on the CPU."""
    parts = [v.detach().reshape(v.shape[0], v.shape[1], -1) for v in samples.values()]
    return torch.cat([p.to("cpu", torch.float64) for p in parts], dim=-1)


def draw_statistics(draws) -> dict:
    """Rank-normalised split R-hat and bulk / tail ESS of every coordinate.

    Parameters
    ----------
    draws : Tensor or ndarray, shape ``(chains, draws, k)``
        At most :data:`MAX_COORDINATES` coordinates are measured (evenly spaced).

    Returns
    -------
    dict of str to ndarray of shape (k',)
        ``"r_hat"`` (NaN with one chain), ``"ess_bulk"``, ``"ess_tail"`` and ``"index"``,
        the coordinates measured. NaN where there are too few draws.
    """
    import numpy as np

    x = np.asarray(torch.as_tensor(draws).detach().cpu().double())
    k = x.shape[-1]
    index = np.arange(k) if k <= MAX_COORDINATES else \
        np.unique(np.linspace(0, k - 1, MAX_COORDINATES).round().astype(int))
    x = x[..., index]
    out = {"index": index}
    if x.shape[1] < 4:  # arviz needs four draws; fewer mean nothing
        nan = np.full(index.size, np.nan)
        return {**out, "r_hat": nan, "ess_bulk": nan, "ess_tail": nan}
    import arviz as az

    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)  # arviz logs a shape note for short chains
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant draws: arviz divides by zero
            ds = az.convert_to_dataset({"p": x})
            out["ess_bulk"] = np.asarray(az.ess(ds, method="bulk")["p"].values, float)
            out["ess_tail"] = np.asarray(az.ess(ds, method="tail")["p"].values, float)
            out["r_hat"] = np.asarray(az.rhat(ds)["p"].values, float) if x.shape[0] > 1 \
                else np.full(index.size, np.nan)
    finally:
        logger.setLevel(level)
    return out
