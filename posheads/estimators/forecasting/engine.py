"""Engines behind :class:`posheads.CountForecaster`: isolation and a quiet NUTS forecaster.

:func:`isolated` runs Pyro code in a parameter store of its own (so two forecasters never
share or overwrite guide parameters, and the caller's store is left as it was), a private
torch random stream (seeded when a seed is given; the caller's stream is restored
afterwards) and Pyro's logger silenced unless asked for.

:class:`NUTSForecaster` is :class:`pyro.contrib.forecast.HMCForecaster` without its
printed summary, with the progress bar under ``verbose``, with posterior draws replayed
for in-sample calls too (``HMCForecaster`` samples the prior there), and with a seeded
choice of draws.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import ExitStack

import pyro
import torch
from pyro import poutine
from pyro.contrib.forecast.util import PrefixConditionMessenger, PrefixReplayMessenger
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_median
from pyro.infer.predictive import _guess_max_plate_nesting
from torch import nn

__all__ = ["NUTSForecaster", "isolated"]


@contextlib.contextmanager
def isolated(seed: int | None, *, params: dict | None = None, verbose: int = 0):
    """A private Pyro parameter store, a private (optionally seeded) RNG, a quiet logger.

    Parameters
    ----------
    seed : int or None
        Seed of the private torch random stream; None draws from the current stream.
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
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with ExitStack() as stack:
        state = stack.enter_context(pyro.get_param_store().scope(params))
        stack.enter_context(torch.random.fork_rng(devices=devices))
        if seed is not None:
            torch.manual_seed(seed)
        if not verbose:
            logger.setLevel(logging.WARNING)
        try:
            yield state
        finally:
            logger.setLevel(level)


class NUTSForecaster(nn.Module):
    """Draw forecasts from a :class:`ForecastingModel` fitted by NUTS.

    Parameters
    ----------
    model : ForecastingModel
    data, covariates : Tensor
        Training counts ``(T, 1)`` and covariates ``(T, n_covariates)``.
    num_warmup, num_samples : int
        NUTS warm-up steps and kept draws (one chain).
    verbose : int
        Show the sampler's progress bar when ``> 0``.
    samples : dict of Tensor, optional
        Posterior draws from an earlier run (a loaded forecaster): no sampling is done, and
        ``num_samples`` must be their number.

    Attributes
    ----------
    samples : dict of Tensor
        The posterior draws by site name, each of shape ``(num_samples,) + site shape``:
        what a saved forecaster stores.
    diagnostics : dict
        The sampler's diagnostics (empty for given ``samples``).
    """

    def __init__(
        self, model, data, covariates, *, num_warmup, num_samples, verbose=0, samples=None
    ):
        super().__init__()
        self.model = model
        self.max_plate_nesting = max(_guess_max_plate_nesting(model, (data, covariates), {}), 1)
        if samples is None:
            kernel = NUTS(
                model,
                max_plate_nesting=self.max_plate_nesting,
                init_strategy=init_to_median,
                target_accept_prob=0.9,
            )
            mcmc = MCMC(
                kernel,
                warmup_steps=num_warmup,
                num_samples=num_samples,
                disable_progbar=not verbose,
            )
            mcmc.run(data, covariates)
            samples, self.diagnostics = mcmc.get_samples(), mcmc.diagnostics()
        else:
            self.diagnostics = {}
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
