"""One SVI step at a time: :class:`SVIState`.

An :class:`SVIState` is a model-guide pair under optimisation: Adam with the global
gradient norm clipped, an optional moving average of the parameters, and a
``ValueError`` naming the step and the site when the loss turns non-finite. It takes one
step on whatever batch it is given; with ``total_size`` it rescales the batch's
log-likelihood to the full data (the basis of the streaming fits and of ``partial_fit``
in the estimators).

Each state keeps its parameters in a parameter store of its own (entered with
``ParamStoreDict.scope`` around every step), so a fit neither reads nor writes the global
parameter store, and two fits of the same model never share a guide's values. A guide
whose parameters live in its own modules (built under Pyro's ``module_local_params``, as
the Bayesian network's are) is optimised through its ``parameters()``.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger

from .common import RandomState, check_real

__all__ = ["DATA_PLATE", "SVIState"]

#: The plate whose sites ``total_size`` rescales.
DATA_PLATE = "data"


class _ScaleToTotal(Messenger):
    """Scale every site in the ``"data"`` plate by ``total_size / rows in the batch``."""

    def __init__(self, total_size: int):
        super().__init__()
        self.total_size = total_size
        self.scaled = False

    def _process_message(self, msg):
        for frame in msg["cond_indep_stack"]:
            if frame.name == DATA_PLATE:
                rows = frame.full_size or frame.size
                msg["scale"] = msg["scale"] * (self.total_size / rows)
                self.scaled = True
                return


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
    betas : (float, float)
        Adam's decay rates of its moment estimates.
    clip_value : float, optional
        Also clamp every gradient element to ``[-clip_value, clip_value]``.
    check_every_step : bool
        Run Pyro's argument checks (support, NaN, weights) on every step. ``False`` runs
        them on the first step only: for data validated already, where the checks of
        every site of every step are a noticeable share of a mini-batch step; a
        non-finite loss still stops the run with its step and site.

    Attributes
    ----------
    losses : list of float
        The loss (negative ELBO) of every step taken.

    Notes
    -----
    :meth:`setup`, :meth:`reduce_loss` and :meth:`reduce_gradients` are the hooks a
    subclass overrides to take the same steps on several workers
    (:class:`~posheads.inference.distributed.DistributedSVIState`).

    Examples
    --------
    >>> state = SVIState(model, AutoNormal(model), seed=0)   # doctest: +SKIP
    >>> for batch in batches:                                # doctest: +SKIP
    ...     state.step(batch, total_size=n_rows)
    """

    def __init__(self, model, guide, *, learning_rate: float = 0.01, gamma: float = 1.0,
                 clip_norm: float | None = 10.0, num_particles: int = 1,
                 average_window: int | None = None, seed: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), clip_value: float | None = None,
                 check_every_step: bool = True):
        self.learning_rate = check_real("learning_rate", learning_rate, 0.0)
        self.clip_norm = check_real("clip_norm", clip_norm, 0.0, optional=True)
        self.gamma = check_real("gamma", gamma, 0.0, 1.0, closed_high=True)
        self.model, self.guide = model, guide
        self.elbo = Trace_ELBO(num_particles=num_particles)
        self.seed = seed
        self.random_state: RandomState | None = None  # made on the first step
        self.optimizer: torch.optim.Optimizer | None = None
        self.param_state: dict | None = None
        self.average_window = average_window
        self.check_every_step = bool(check_every_step)
        self.betas = (float(betas[0]), float(betas[1]))
        self.clip_value = check_real("clip_value", clip_value, 0.0, optional=True)
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

    def setup(self, kwargs) -> None:
        """Create the guide's parameters and the optimiser (on the first step)."""
        with torch.no_grad():
            self.guide(**kwargs)  # creates the guide's parameters
        params = [p for _, p in pyro.get_param_store().named_parameters()]
        if not params and isinstance(self.guide, torch.nn.Module):  # module-local
            params = [p for p in self.guide.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the guide has no parameters to optimise")
        self.optimizer = torch.optim.Adam(params, lr=self.learning_rate, betas=self.betas)

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
                self.setup(kwargs)
            rng = torch.get_rng_state()
            checks = contextlib.nullcontext() if self.check_every_step \
                else pyro.validation_enabled(not self.losses)
            try:
                with checks:
                    loss = self.elbo.differentiable_loss(model, self.guide, **kwargs)
            except ValueError as err:  # e.g. Pyro's validation of a site's value
                raise ValueError(f"SVI failed at step {self.num_steps}: {err}") from err
            value = self.reduce_loss(float(loss.detach()))
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
                    f"{DATA_PLATE!r}"
                )
            self.optimizer.zero_grad()
            loss.backward()
            self.reduce_gradients(self.optimizer.param_groups[0]["params"])
            params = self.optimizer.param_groups[0]["params"]
            if self.clip_value is not None:
                torch.nn.utils.clip_grad_value_(params, self.clip_value)
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
            self.optimizer.step()
            for group in self.optimizer.param_groups:
                group["lr"] *= self.gamma
        self.losses.append(value)
        if self.average_window:
            self._update_average()
        return value

    def reduce_loss(self, value: float) -> float:
        """The loss all workers agree on (one process: its own)."""
        return value

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
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
