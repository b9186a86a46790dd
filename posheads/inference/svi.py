"""Stochastic variational inference: :class:`SVI`, the one configuration of every SVI fit,
and :func:`fit_svi`.

* Guides (:func:`~posheads.inference.common.make_guide`): mean-field ``"normal"``,
  full-rank ``"multivariate_normal"``, low-rank ``"lowrank"``, or any guide object; their
  scales are softplus-mapped.
* Mini-batches through the model's ``pyro.plate("data", n, subsample_size=...)``, so the
  work per step does not grow with the data.
* Adam with the global gradient norm clipped and an exponentially decaying step size
  (:class:`~posheads.inference.svi_state.SVIState`); a stop when the smoothed ELBO stops
  improving (:class:`~posheads.inference.common.Plateau`); draws from the guide at its
  parameters averaged over the last steps.

The same :class:`SVI` drives the in-memory fit (:meth:`SVI.fit`), the streamed one
(:func:`~posheads.inference.stream.fit_svi_stream`) and the data-parallel ones
(:mod:`posheads.inference.distributed`). See ``docs/inference.md``, "Stochastic
variational inference".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from tqdm.auto import tqdm

from posheads.models.protocol import as_model
from posheads.posterior import Posterior

from .common import GUIDES, Plateau, check_int, check_real, make_guide
from .map import find_mode
from .svi_state import SVIState

__all__ = ["SVI", "SVIState", "fit_svi", "init_at", "run_steps"]

_INITS = ("auto", "map", "median")


def init_at(values: dict | None):
    """A guide's ``init_loc_fn``: constrained ``values`` where given (a mode), the prior
    median elsewhere; the prior median everywhere when ``values`` is None."""
    if values is None:
        return init_to_median
    return init_to_value(values={k: v.detach() for k, v in values.items()},
                         fallback=init_to_median)


@dataclass(frozen=True)
class SVI:
    """Configuration of every SVI fit (in memory, streamed, data-parallel).

    Parameters
    ----------
    num_steps : int
        Largest number of steps (a stream takes ``epochs`` instead).
    learning_rate : float
        Adam's initial step size.
    lr_decay : float
        In (0, 1]: the step size decays exponentially to ``learning_rate * lr_decay`` at
        the last step (1: constant), which damps the jitter of mini-batch gradients.
    guide : str or guide object
        See :func:`~posheads.inference.common.make_guide`.
    num_samples : int
        Draws taken from the fitted guide.
    clip_norm : float or None
        Clip the global gradient norm.
    patience : int or None
        Stop once the loss, smoothed over about ``patience / 5`` steps, has not improved
        by ``tol`` for ``patience`` steps; ``None`` runs every step (streams always do).
    tol : float
        Improvement of the smoothed loss, in nats, that counts (absolute: the accuracy of
        a posterior depends on ELBO differences, not on the size of the ELBO).
    init : {"auto", "map", "median"}
        Guide location at start: the mode of the unconstrained density
        (:func:`~posheads.inference.map.find_mode` with ``jacobian=True``), or the prior
        median. ``"auto"``: the mode where the target has a Newton loss (a few Newton
        steps), the median otherwise.
    rank : int, optional
        Rank of the ``"lowrank"`` guide (Pyro's default: about ``sqrt(d)``).
    num_particles : int
        ELBO particles per step.
    subsample_size : int, optional
        Rows per step of an in-memory fit, passed to the model (which must accept
        ``subsample_size`` and use it in ``pyro.plate("data", n, subsample_size=...)``, as
        SoftplusGLM does); per worker in a data-parallel fit.
    average_window : int, optional
        The draws come from the guide at its parameters averaged over about this many
        final steps (iterate averaging); the plateau rule smooths over as many. Default:
        ``patience // 5``, or 100 without ``patience``.

    Notes
    -----
    With one particle the gradient of a guide scale is skewed, and Adam's normalised
    steps settle a little above the optimum: the guide's sds come out somewhat above the
    Laplace sds (closer with ``num_particles=4``). The means are not affected.

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(200, 2, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1 + X[:, 0]))
    >>> post = SVI(num_steps=200, num_samples=50).fit(SoftplusGLM(), GLMData(X, y),
    ...                                               seed=0, verbose=0)
    >>> post.samples["coef"].shape
    torch.Size([1, 50, 2])
    """

    num_steps: int = 5000
    learning_rate: float = 0.01
    lr_decay: float = 0.1
    guide: object = "normal"
    num_samples: int = 1000
    clip_norm: float | None = 10.0
    patience: int | None = 500
    tol: float = 0.1
    init: str = "auto"
    rank: int | None = None
    num_particles: int = 1
    subsample_size: int | None = None
    average_window: int | None = None

    def __post_init__(self):
        checked = {
            "num_steps": check_int("num_steps", self.num_steps, 1),
            "learning_rate": check_real("learning_rate", self.learning_rate, 0.0),
            "lr_decay": check_real("lr_decay", self.lr_decay, 0.0, 1.0, closed_high=True),
            "num_samples": check_int("num_samples", self.num_samples, 1),
            "clip_norm": check_real("clip_norm", self.clip_norm, 0.0, optional=True),
            "patience": check_int("patience", self.patience, 1, optional=True),
            "tol": check_real("tol", self.tol, 0.0, closed_low=True),
            "rank": check_int("rank", self.rank, 1, optional=True),
            "num_particles": check_int("num_particles", self.num_particles, 1),
            "subsample_size": check_int("subsample_size", self.subsample_size, 1,
                                        optional=True),
            "average_window": check_int("average_window", self.average_window, 1,
                                        optional=True),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if isinstance(self.guide, str) and self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES} or a guide object, "
                             f"got {self.guide!r}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")

    @property
    def window(self) -> int:
        """Steps of the iterate average and of the plateau rule's smoothing."""
        if self.average_window is not None:
            return self.average_window
        return 100 if self.patience is None else max(1, self.patience // 5)

    def starts_at_mode(self, target) -> bool:
        """Whether the guide starts at the mode of ``target`` (see ``init``)."""
        if self.init == "auto":
            return target.newton_loss(True) is not None
        return self.init == "map"

    def fit(self, model, data, *, seed=None, verbose=1) -> Posterior:
        """SVI on data held in memory; see :func:`fit_svi`.

        With ``init="median"`` no target is built: the data go to the model as given
        (and the first step's checks apply); otherwise the target validates them.
        """
        m = as_model(model)
        start = None
        if self.init != "median":
            target = m.target(data, validate=True, seed=seed)
            data = target.data
            if self.starts_at_mode(target):
                start = find_mode(target, jacobian=True).values
        kwargs = m.model_kwargs(data)
        state, converged = self.optimise(m, kwargs, start=start, seed=seed,
                                         verbose=verbose)
        return self.posterior(model, state, kwargs, data=data, converged=converged)

    def optimise(self, fn, kwargs, *, start, seed, verbose, state_class=SVIState,
                 total_size=None):
        """Build the guide and step until ``num_steps`` or the plateau.

        Parameters
        ----------
        fn : callable
            The Pyro model.
        kwargs : dict
            Its keyword arguments (the full data; ``subsample_size`` is added).
        start : dict or None
            Constrained values the guide starts at (see :func:`init_at`).
        seed, verbose
        state_class : type
            :class:`SVIState` or a subclass.
        total_size : int, optional
            Passed to every :meth:`SVIState.step`.

        Returns
        -------
        (SVIState, bool)
            The state and whether the plateau rule stopped the run.
        """
        if self.subsample_size is not None:
            kwargs = {**kwargs, "subsample_size": self.subsample_size}
        guide = make_guide(fn, self.guide, init_at(start), rank=self.rank)
        plateau = Plateau(self.patience, self.tol, self.window)
        state = self.new_state(fn, guide, self.num_steps, seed, state_class)
        converged = run_steps(state, kwargs, self.num_steps, plateau, verbose, total_size)
        return state, converged

    def new_state(self, fn, guide, num_steps, seed, state_class=SVIState) -> SVIState:
        """A fresh :class:`SVIState` whose step size decays over ``num_steps`` steps."""
        return state_class(fn, guide, learning_rate=self.learning_rate,
                           gamma=self.lr_decay ** (1.0 / num_steps), clip_norm=self.clip_norm,
                           num_particles=self.num_particles, average_window=self.window,
                           seed=seed)

    def posterior(self, model, state, kwargs, *, data, converged=None, **extra) -> Posterior:
        """Draws from ``state``'s guide at its averaged parameters, as a Posterior.

        ``extra`` holds ``"elbo"`` (the loss of every step), ``"n_iter"``, ``"guide"``,
        ``"svi_state"`` (which can take further steps), ``"converged"`` unless None, and
        the keyword arguments ``extra``.
        """
        state.use_averaged()
        draws = state.sample(self.num_samples, kwargs)
        samples = {name: v.unsqueeze(0) for name, v in draws.items()}
        info = {"elbo": list(state.losses), "n_iter": state.num_steps, "guide": state.guide,
                "svi_state": state, **extra}
        if converged is not None:
            info["converged"] = converged
        return Posterior(model, samples, method="svi", data=data, num_chains=1, extra=info)


def fit_svi(model, data, *, seed=None, verbose=1, **options) -> Posterior:
    """Fit a variational posterior by SVI with an autoguide.

    Parameters
    ----------
    model : PosteriorModel or callable
        A SoftplusGLM or any Pyro model.
    data : GLMData or dict
        The GLM's data, or the keyword arguments that condition a Pyro model.
    seed : int, optional
        Seed of the fit; the caller's random state is left untouched.
    verbose : int
        0 silences the progress bar.
    **options
        The fields of :class:`SVI` (``guide``, ``num_steps``, ``learning_rate``,
        ``lr_decay``, ``subsample_size``, ``num_samples``, ``clip_norm``, ``patience``,
        ``tol``, ``init``, ``rank``, ``num_particles``, ``average_window``).

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
    """
    return SVI(**options).fit(model, data, seed=seed, verbose=verbose)


def run_steps(state: SVIState, kwargs, num_steps: int, plateau: Plateau, verbose,
              total_size: int | None = None, loss_scale: float = 1.0) -> bool:
    """Step ``state`` until ``num_steps`` or the plateau; True at a plateau.

    Parameters
    ----------
    state : SVIState
    kwargs : dict or iterable of dict
        The model's keyword arguments for every step, or one dict per step (mini-batches
        chosen by the caller); an iterable that runs out ends the run.
    num_steps : int
    plateau : Plateau
        Sees each step's loss times ``loss_scale`` (e.g. per row).
    verbose : int
        0 silences the progress bar.
    total_size : int, optional
        Passed to :meth:`SVIState.step`.
    loss_scale : float
    """
    batches = itertools.repeat(kwargs) if isinstance(kwargs, dict) else iter(kwargs)
    with tqdm(total=num_steps, desc="SVI", disable=not verbose, leave=False) as pbar:
        for i, batch in zip(range(num_steps), batches, strict=False):
            try:
                loss = state.step(batch, total_size=total_size) * loss_scale
            except ValueError as err:
                if not _blew_up(err, i):
                    raise
                lr = state.learning_rate
                # the loss's own message names the site; Pyro's (a trace dump) is left out
                site = str(err).split(": ", 1)[-1] if str(err).startswith("SVI loss") \
                    else "a parameter left its support"
                raise ValueError(
                    f"SVI diverged at step {i + 1} ({site}) with learning_rate={lr:g}; "
                    f"lower learning_rate (e.g. {lr / 10:g})") from None
            pbar.update(1)
            if i % 50 == 0:
                pbar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            if plateau(loss):
                return True
    return False


def _blew_up(err: ValueError, step: int) -> bool:
    """Whether ``err`` from step ``step`` says a value went NaN, infinite or out of its
    support after the parameters moved: a step size too large. At the first step
    nothing has moved yet, so the data or the model are at fault: their own message
    (naming the step and the site) stands."""
    text = str(err)
    return step > 0 and (text.startswith("SVI loss is") or text.startswith("SVI failed"))
