"""The forecaster's use of the inference stack: isolation, SVI, NUTS, and replaying draws.

* :func:`isolated` runs Pyro code in a parameter store of its own (so two forecasters
  never share or overwrite guide parameters, and the caller's store is left as it was),
  on torch's generators seeded by :func:`posheads.inference.common.seeded`, with Pyro's
  logger silenced unless asked for.
* :func:`fit_guide` fits the guide of a forecasting model by the inference stack's SVI
  (:class:`~posheads.inference.svi.SVIState`, its guide factory and plateau rule);
  :func:`sample_posterior` draws its posterior with the stack's NUTS.
* :class:`NUTSForecaster` forecasts from posterior draws, as
  :class:`pyro.contrib.forecast.HMCForecaster` does, with the draws replayed for
  in-sample calls too (``HMCForecaster`` samples the prior there) and a seeded choice of
  draws.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import ExitStack

import pyro
import torch
from pyro import poutine
from pyro.contrib.forecast.util import PrefixConditionMessenger, PrefixReplayMessenger
from pyro.infer.predictive import _guess_max_plate_nesting
from torch import nn

from posheads.inference.common import Plateau, make_guide, seeded
from posheads.inference.svi import SVIState, run_steps

__all__ = ["NUTSForecaster", "fit_guide", "init_to_mean", "isolated", "sample_posterior"]

# The step size decays tenfold over an SVI run; every gradient element is clamped to
# +-10; Adam forgets its second moments over about 100 steps (the gradients of a random
# walk change scale as the level settles, faster than Adam's default 1000 steps follow).
_LR_DECAY = 0.1
_CLIP_VALUE = 10.0
_BETAS = (0.9, 0.99)


@contextlib.contextmanager
def isolated(seed: int | None, *, params: dict | None = None, verbose: int = 0):
    """A private Pyro parameter store, seeded generators, a quiet logger.

    Parameters
    ----------
    seed : int or None
        Seed of torch's generators for the block (:func:`~posheads.inference.common.seeded`:
        restored afterwards); None draws from the caller's generators.
    params : dict, optional
        A parameter-store state yielded by an earlier call, to work with its parameters
        again; None starts an empty store.
    verbose : int
        Leave Pyro's logger as it is when ``> 0``.

    Yields
    ------
    dict
        The parameter-store state (filled in when the block ends).
    """
    logger = logging.getLogger("pyro")
    level = logger.level
    with ExitStack() as stack:
        state = stack.enter_context(pyro.get_param_store().scope(params))
        stack.enter_context(seeded(seed))
        if not verbose:
            logger.setLevel(logging.WARNING)
        try:
            yield state
        finally:
            logger.setLevel(level)


def init_to_mean(site):
    """Start a guide at prior means (zero innovations), as a fresh tensor.

    The prior of the innovations has an expanded (stride-0) mean; an optimiser cannot
    update a parameter that shares memory, hence the copy.
    """
    from pyro.infer.autoguide import init_to_mean as prior_mean

    return prior_mean(site).clone()


def fit_guide(model, data, covariates, *, init_loc_fn, num_steps, learning_rate,
              verbose=0, guide=None):
    """Fit a mean-field guide of a forecasting model by SVI, in a parameter store of its own.

    Parameters
    ----------
    model : ForecastingModel
    data, covariates : Tensor
        Shapes ``(T, 1)`` and ``(T, n_covariates)``.
    init_loc_fn : callable
        Where the guide starts.
    num_steps : int
        SVI steps (0: the guide is only built, its parameters at their start).
    learning_rate : float
        Adam's initial step size, decayed tenfold over the run.
    verbose : int
        A progress bar when ``> 0``.
    guide : AutoGuide, optional
        A guide to fit instead of the stack's softplus-scaled mean-field one.

    Returns
    -------
    (AutoGuide, dict, list of float)
        The guide, the parameter-store state holding its parameters (enter it with
        ``pyro.get_param_store().scope(state)`` or :func:`isolated`), and the loss of every
        step per observed value.
    """
    if guide is None:
        guide = make_guide(model, "normal", init_loc_fn, init_scale=0.1)
    kwargs = {"data": data, "covariates": covariates}
    if not num_steps:
        with pyro.get_param_store().scope() as params, torch.no_grad():
            guide(**kwargs)  # creates the parameters at their start
        return guide, params, []
    state = SVIState(model, guide, learning_rate=learning_rate,
                     gamma=_LR_DECAY ** (1.0 / num_steps), clip_norm=None, clip_value=_CLIP_VALUE,
                     betas=_BETAS)
    run_steps(state, kwargs, num_steps, Plateau(None, 0.0), verbose,
              loss_scale=1.0 / data.numel())
    return guide, state.param_state, [v / data.numel() for v in state.losses]


def sample_posterior(model, data, covariates, *, num_warmup, num_samples, seed=None,
                     verbose=0):
    """Posterior draws of a forecasting model by the stack's NUTS, from the prior median
    with an adapted diagonal metric.

    Returns
    -------
    dict of Tensor
        Draws by site name, each of shape ``(num_samples,) + site shape``.
    """
    from posheads.inference import NUTS

    nuts = NUTS(num_samples=num_samples, num_warmup=num_warmup, init="median",
                dense_mass=False, target_accept_prob=0.9)
    post = nuts.fit(model, {"data": data, "covariates": covariates}, seed=seed,
                    verbose=verbose)
    return {k: v[0] for k, v in post.samples.items()}


class NUTSForecaster(nn.Module):
    """Draw forecasts from a :class:`ForecastingModel` fitted by NUTS.

    Parameters
    ----------
    model : ForecastingModel
    data, covariates : Tensor
        Training counts ``(T, 1)`` and covariates ``(T, n_covariates)``.
    samples : dict of Tensor
        Posterior draws by site name, each of shape ``(num_samples,) + site shape``
        (:func:`sample_posterior`, or a loaded forecaster's).

    Attributes
    ----------
    samples : dict of Tensor
        The posterior draws: what a saved forecaster stores.
    """

    def __init__(self, model, data, covariates, *, samples):
        super().__init__()
        self.model = model
        self.max_plate_nesting = max(_guess_max_plate_nesting(model, (data, covariates), {}), 1)
        self.samples = samples
        with poutine.trace() as tr, pyro.plate("particles", 1, dim=-self.max_plate_nesting - 1):
            model(data, covariates)
        self._trace = tr.trace
        for name in list(self._trace.nodes):
            if name not in self.samples:
                del self._trace.nodes[name]
        self._num_draws = len(next(iter(samples.values())))

    def forward(self, data, covariates, num_samples):
        """Forecast draws for steps ``[T, covariates.size(-2))`` given ``data`` (``T`` steps).

        With ``covariates`` as long as ``data``, the model is replayed in-sample.
        """
        index = torch.randint(self._num_draws, (num_samples,))
        for name, node in self._trace.nodes.items():
            draw = self.samples[name][index]
            shape = (num_samples,) + (1,) * (node["value"].dim() - draw.dim()) + draw.shape[1:]
            node["value"] = draw.reshape(shape)
        dim = -1 - self.max_plate_nesting
        with torch.no_grad(), ExitStack() as stack:
            if data.size(-2) < covariates.size(-2):
                stack.enter_context(PrefixReplayMessenger(self._trace))
                stack.enter_context(PrefixConditionMessenger(self.model._prefix_condition_data))
            else:
                stack.enter_context(poutine.replay(trace=self._trace))
            with pyro.plate("particles", num_samples, dim=dim):
                return self.model(data, covariates)
