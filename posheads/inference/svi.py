"""Stochastic variational inference with Pyro's autoguides: :func:`fit_svi` and :class:`SVIState`.

* Guides: mean-field ``AutoNormal`` (``"normal"``), full-rank ``AutoMultivariateNormal``
  (``"multivariate_normal"``), low-rank ``AutoLowRankMultivariateNormal`` (``"lowrank"``),
  or any guide object.
* Mini-batches through the model's ``pyro.plate("data", n, subsample_size=...)``, so the
  work per step does not grow with the data.
* Adam with the global gradient norm clipped; a stop when the smoothed ELBO stops
  improving; a ``ValueError`` naming the step and the site when the loss turns NaN.
* :class:`SVIState` takes one step at a time, on whatever batch it is given (with
  ``total_size`` it rescales the batch's log-likelihood to the full data): the basis of
  ``partial_fit`` in the estimators.

Each :class:`SVIState` keeps its parameters in a parameter store of its own (entered
with ``ParamStoreDict.scope`` around every step), so a fit neither reads nor writes the
global parameter store, and two fits of the same model never share a guide's values.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from ._potential import is_glm
from ._random import RandomState

__all__ = ["SVIState", "fit_svi"]

_GUIDES = {
    "normal": AutoNormal,
    "multivariate_normal": AutoMultivariateNormal,
    "lowrank": AutoLowRankMultivariateNormal,
}
_DATA_PLATE = "data"


class _ScaleToTotal(Messenger):
    """Scale every site in the ``"data"`` plate by ``total_size / rows in the batch``."""

    def __init__(self, total_size: int):
        super().__init__()
        self.total_size = total_size
        self.scaled = False

    def _process_message(self, msg):
        for frame in msg["cond_indep_stack"]:
            if frame.name == _DATA_PLATE:
                rows = frame.full_size or frame.size
                msg["scale"] = msg["scale"] * (self.total_size / rows)
                self.scaled = True
                return


def _model_kwargs(model, data, subsample_size: int | None = None) -> dict:
    """Keyword arguments for ``model(**kwargs)``: a GLMData's fields, or the dict as given."""
    if is_glm(model) and not isinstance(data, dict):
        kwargs = {k: getattr(data, k) for k in ("X", "y", "exposure", "weights", "X_zero")}
    else:
        kwargs = dict(data)
    if subsample_size is not None:
        kwargs["subsample_size"] = subsample_size
    return kwargs


def _nonfinite_site(model, guide, kwargs) -> str | None:
    """Name the first guide parameter or sample site whose value or log-density is not finite."""
    for name, p in pyro.get_param_store().named_parameters():
        if not torch.isfinite(p).all():
            return f"guide parameter '{name}'"
    try:
        guide_tr = poutine.trace(guide).get_trace(**kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**kwargs)
    except Exception:  # the diagnosis must not hide the error it diagnoses
        return None
    for who, tr in (("guide", guide_tr), ("model", model_tr)):
        for name, site in tr.nodes.items():
            if site["type"] != "sample":
                continue
            value = site["value"]
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(
                value
            ).all():
                return f"{who} site '{name}' (its value)"
            if not torch.isfinite(site["fn"].log_prob(value)).all():
                return f"{who} site '{name}'"
    return None


class SVIState:
    """A model-guide pair under optimisation, one step at a time.

    Parameters
    ----------
    model : callable
        A Pyro model.
    guide : callable
        A guide for it (an autoguide or any ``PyroModule``); its parameters are created
        on the first step.
    learning_rate : float
        Adam's initial step size.
    gamma : float
        Factor applied to the step size after every step (1: constant).
    clip_norm : float or None
        Clip the global norm of the gradient to this value (``None``: no clipping).
    num_particles : int
        ELBO particles per step.
    average_window : int, optional
        Also keep an exponential moving average of the parameters over about this many
        steps (iterate averaging, which damps the jitter of stochastic gradients); see
        :meth:`use_averaged`.
    seed : int, optional
        Seed of the random state carried from step to step (``None``: torch's global one).

    Attributes
    ----------
    losses : list of float
        The loss (negative ELBO) of every step taken.

    Examples
    --------
    >>> state = SVIState(model, AutoNormal(model), seed=0)   # doctest: +SKIP
    >>> for batch in batches:                                # doctest: +SKIP
    ...     state.step(batch, total_size=n_rows)
    """

    def __init__(self, model, guide, *, learning_rate: float = 0.01, gamma: float = 1.0,
                 clip_norm: float | None = 10.0, num_particles: int = 1,
                 average_window: int | None = None, seed: int | None = None):
        if not (isinstance(learning_rate, numbers.Real) and learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm!r}")
        self.model, self.guide = model, guide
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.learning_rate, self.clip_norm = float(learning_rate), clip_norm
        self.gamma = float(gamma)
        self.elbo = Trace_ELBO(num_particles=num_particles)
        self.seed = seed
        self.random_state: RandomState | None = None  # made on the first step
        self.optimizer: torch.optim.Optimizer | None = None
        self.param_state: dict | None = None
        self.average_window = average_window
        self._averaged: list[torch.Tensor] | None = None
        self.losses: list[float] = []

    @property
    def num_steps(self) -> int:
        return len(self.losses)

    @contextlib.contextmanager
    def _scope(self, kwargs):
        """This state's own parameter store and random state."""
        if self.random_state is None:
            # Carry the generator of the device the data live on (CUDA draws the
            # mini-batch indices there).
            device = next((v.device for v in kwargs.values() if torch.is_tensor(v)), None)
            self.random_state = RandomState(self.seed, device)
        with pyro.get_param_store().scope(self.param_state) as state, self.random_state:
            self.param_state = state
            yield

    def _setup(self, kwargs) -> None:
        with torch.no_grad():
            self.guide(**kwargs)  # creates the guide's parameters
        params = [p for _, p in pyro.get_param_store().named_parameters()]
        if not params:
            raise ValueError("the guide has no parameters to optimise")
        self.optimizer = torch.optim.Adam(params, lr=self.learning_rate)

    def step(self, kwargs: dict, *, total_size: int | None = None) -> float:
        """Take one gradient step on the model conditioned by ``kwargs``.

        Parameters
        ----------
        kwargs : dict
            Keyword arguments of the model (a mini-batch, or the full data with
            ``subsample_size``).
        total_size : int, optional
            Rows in the full data set when ``kwargs`` holds a batch of it: the sites in
            the model's ``"data"`` plate are scaled by ``total_size / batch rows``.

        Returns
        -------
        float
            The loss (negative ELBO estimate) of this step.

        Raises
        ------
        ValueError
            When the loss is not finite, naming the step and the offending site.
        """
        model = self.model
        scaler = None
        if total_size is not None:
            scaler = _ScaleToTotal(int(total_size))
            model = scaler(self.model)
        with self._scope(kwargs):
            if self.optimizer is None:
                self._setup(kwargs)
            rng = torch.get_rng_state()
            try:
                loss = self.elbo.differentiable_loss(model, self.guide, **kwargs)
            except ValueError as err:  # e.g. Pyro's validation of a site's value
                raise ValueError(f"SVI failed at step {self.num_steps}: {err}") from err
            value = self._reduce_loss(float(loss.detach()))
            if not math.isfinite(value):
                torch.set_rng_state(rng)  # replay the same draws to find the culprit
                site = _nonfinite_site(model, self.guide, kwargs) or "unknown site"
                raise ValueError(
                    f"SVI loss is {value} at step {self.num_steps}: non-finite {site}; "
                    "try a smaller learning_rate or check the data"
                )
            if scaler is not None and not scaler.scaled:
                raise ValueError(
                    f"total_size needs the model's observations in a plate named "
                    f"{_DATA_PLATE!r}"
                )
            self.optimizer.zero_grad()
            loss.backward()
            self._reduce_gradients(self.optimizer.param_groups[0]["params"])
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"],
                                               self.clip_norm)
            self.optimizer.step()
            for group in self.optimizer.param_groups:
                group["lr"] *= self.gamma
        self.losses.append(value)
        if self.average_window:
            self._update_average()
        return value

    def _reduce_loss(self, value: float) -> float:
        """The loss all workers agree on (one process: its own); see the distributed engine."""
        return value

    def _reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Combine the gradients of all workers in place (one process: nothing to do)."""

    @torch.no_grad()
    def _update_average(self) -> None:
        params = self.optimizer.param_groups[0]["params"]
        if self._averaged is None:
            self._averaged = [p.detach().clone() for p in params]
            return
        weight = 1.0 / min(self.num_steps, self.average_window)
        for avg, p in zip(self._averaged, params, strict=True):
            avg.add_(p.detach() - avg, alpha=weight)

    @torch.no_grad()
    def use_averaged(self) -> None:
        """Replace the parameters by their moving average (needs ``average_window``)."""
        if self._averaged is None:
            raise ValueError("no averaged parameters: set average_window and take a step")
        for avg, p in zip(self._averaged, self.optimizer.param_groups[0]["params"],
                          strict=True):
            p.copy_(avg)

    @torch.no_grad()
    def sample(self, num_samples: int, kwargs: dict) -> dict[str, torch.Tensor]:
        """Draw ``num_samples`` from the guide: dict of ``(num_samples, *site_shape)``."""
        draws: dict[str, list[torch.Tensor]] = {}
        with self._scope(kwargs):
            for _ in range(num_samples):
                trace = poutine.trace(self.guide).get_trace(**kwargs)
                for name, site in trace.nodes.items():
                    if (site["type"] == "sample" and not site["is_observed"]
                            and not site["infer"].get("is_auxiliary")):
                        draws.setdefault(name, []).append(site["value"])
        return {name: torch.stack(v) for name, v in draws.items()}


class _Plateau:
    """Stop when the smoothed loss has not improved for ``patience`` steps.

    The smoothed loss is the running mean of the first ``window = patience // 5`` losses,
    then an exponential moving average with weight ``1 / window``; improvements are
    counted from the end of the first window on, so one lucky early mini-batch does not
    set an unbeatable best.
    """

    def __init__(self, patience: int | None, tol: float):
        self.patience, self.tol = patience, tol
        self.window = 100 if patience is None else max(1, patience // 5)
        self.smooth = self.best = math.inf
        self.steps = self.since = 0

    def __call__(self, loss: float) -> bool:
        self.steps += 1
        weight = 1.0 / min(self.steps, self.window)
        self.smooth = loss if self.steps == 1 else self.smooth + weight * (loss - self.smooth)
        if self.steps < self.window:
            return False
        if self.smooth < self.best - self.tol:
            self.best, self.since = self.smooth, 0
        else:
            self.since += 1
        return self.patience is not None and self.since >= self.patience


def _init_loc_fn(model, data, init: str, seed):
    if init == "median":
        return init_to_median
    from .map import fit_map

    # The mode of the unconstrained density (jacobian=True) is where the guide lives.
    values = fit_map(model, data, seed=seed, jacobian=True).extra["map"]
    return init_to_value(values={k: v.detach() for k, v in values.items()},
                         fallback=init_to_median)


def _make_guide(model, guide, init_loc_fn, rank):
    if not isinstance(guide, str):
        return guide
    options = {"init_loc_fn": init_loc_fn}
    if guide == "lowrank" and rank is not None:
        options["rank"] = rank
    return _GUIDES[guide](model, **options)


def fit_svi(
    model,
    data,
    *,
    guide="normal",
    num_steps: int = 5000,
    learning_rate: float = 0.01,
    lr_decay: float = 0.1,
    subsample_size: int | None = None,
    num_samples: int = 1000,
    clip_norm: float | None = 10.0,
    patience: int | None = 500,
    tol: float = 0.1,
    init: str = "auto",
    rank: int | None = None,
    num_particles: int = 1,
    seed: int | None = None,
    verbose: int = 1,
):
    """Fit a variational posterior by SVI with an autoguide.

    Parameters
    ----------
    model : SoftplusGLM or callable
        A SoftplusGLM or any Pyro model.
    data : GLMData or dict
        The GLM's data, or the keyword arguments that condition a Pyro model.
    guide : {"normal", "multivariate_normal", "lowrank"} or guide object
        Mean-field, full-rank or low-rank Gaussian in unconstrained space.
    num_steps : int
        Largest number of steps.
    learning_rate : float
        Adam's initial step size.
    lr_decay : float
        The step size decays exponentially to ``learning_rate * lr_decay`` at
        ``num_steps`` (1: constant), which damps the jitter of mini-batch gradients.
    subsample_size : int, optional
        Rows per step, passed to the model (which must accept ``subsample_size`` and use
        it in ``pyro.plate("data", n, subsample_size=...)``, as SoftplusGLM does).
    num_samples : int
        Draws taken from the fitted guide.
    clip_norm : float or None
        Clip the global gradient norm.
    patience : int or None
        Stop once the loss, smoothed by an exponential moving average over about
        ``patience / 5`` steps, has not improved by ``tol`` for ``patience`` steps.
        ``None`` runs all ``num_steps``. The draws come from the guide at its parameters
        averaged over the same window (100 steps when ``patience`` is ``None``): iterate
        averaging, which removes most of the jitter of stochastic gradients.
    tol : float
        Improvement of the smoothed loss, in nats, that counts (absolute: the accuracy
        of a posterior depends on ELBO differences, not on the size of the ELBO).
    init : {"auto", "map", "median"}
        Guide location at start: the mode of the unconstrained density
        (:func:`~posheads.inference.fit_map` with ``jacobian=True``: Newton for a
        SoftplusGLM, L-BFGS otherwise), or the prior median. ``"auto"``: the mode for a
        SoftplusGLM (a few Newton steps), the median otherwise.
    rank : int, optional
        Rank of the ``"lowrank"`` guide (Pyro's default: about ``sqrt(d)``).
    num_particles : int
        ELBO particles per step.
    seed : int, optional
        Seed of the fit; the caller's random state is left untouched.
    verbose : int
        0 silences the progress bar.

    Returns
    -------
    Posterior
        ``method="svi"``, ``samples[site]`` of shape ``(1, num_samples, *site_shape)``;
        ``extra``: ``"elbo"`` (the loss of every step, a list), ``"n_iter"``,
        ``"converged"`` (stopped by the plateau rule), ``"guide"`` and ``"svi_state"``
        (an :class:`SVIState` that can take further steps).

    Raises
    ------
    ValueError
        For invalid options, or a non-finite loss (naming the step and the site).

    Notes
    -----
    With one particle the gradient of a guide scale is skewed, and Adam's normalised
    steps settle a little above the optimum: on a 300-row Poisson GLM the guide's sds
    came out 10-20% above the Laplace sds, within 5% with ``num_particles=4``. The
    means are not affected.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if patience is not None and not (isinstance(patience, numbers.Integral) and patience >= 1):
        raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
    if init not in ("auto", "map", "median"):
        raise ValueError(f"init must be 'auto', 'map' or 'median', got {init!r}")
    if init == "auto":
        init = "map" if is_glm(model) else "median"
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    if isinstance(guide, str) and guide not in _GUIDES:
        raise ValueError(f"guide must be one of {tuple(_GUIDES)} or a guide object, got {guide!r}")

    kwargs = _model_kwargs(model, data, subsample_size)
    guide = _make_guide(model, guide, _init_loc_fn(model, data, init, seed), rank)
    plateau = _Plateau(patience, tol)
    state = SVIState(model, guide, learning_rate=learning_rate,
                     gamma=lr_decay ** (1.0 / num_steps), clip_norm=clip_norm,
                     num_particles=num_particles, average_window=plateau.window, seed=seed)
    converged = _run(state, kwargs, num_steps, plateau, verbose)
    state.use_averaged()
    sample_kwargs = _model_kwargs(model, data, None)
    draws = state.sample(num_samples, sample_kwargs)
    samples = {name: v.unsqueeze(0) for name, v in draws.items()}
    extra = {"elbo": list(state.losses), "n_iter": state.num_steps, "converged": converged,
             "guide": guide, "svi_state": state}
    from posheads.posterior import Posterior

    return Posterior(model, samples, method="svi", data=data, num_chains=1, extra=extra)


def _run(state: SVIState, kwargs: dict, num_steps: int, plateau: _Plateau, verbose,
         total_size: int | None = None) -> bool:
    """Step ``state`` on ``kwargs`` until ``num_steps`` or the plateau; True at a plateau."""
    with tqdm(total=num_steps, desc="SVI", disable=not verbose, leave=False) as pbar:
        for i in range(num_steps):
            loss = state.step(kwargs, total_size=total_size)
            pbar.update(1)
            if i % 50 == 0:
                pbar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            if plateau(loss):
                return True
    return False
