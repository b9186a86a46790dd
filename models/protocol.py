"""What the engines and :class:`~posheads.posterior.Posterior` ask of a model.

A model that implements :class:`PosteriorModel` is fitted and used for prediction
through these methods alone; nothing above this layer asks what kind of model it is.
:class:`~posheads.models.glm.SoftplusGLM` implements it with vectorised closed forms;
:class:`PyroModel` implements it for any Pyro model (a callable whose keyword arguments
are its data), through traces and :class:`~pyro.infer.Predictive`. :func:`as_model` wraps
what needs wrapping.

In every method, ``draws`` maps each latent site to its values with a leading draw
dimension ``S`` (shape ``(S, *site_shape)``), and ``data`` is the model's own data object
(a :class:`~posheads.models.data.GLMData` for the GLM, a dict of keyword arguments for a
Pyro model).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from pyro import poutine
from pyro.infer import Predictive

from .target import PyroTarget, Target

__all__ = ["PosteriorModel", "PyroModel", "as_model"]


@runtime_checkable
class PosteriorModel(Protocol):
    """The protocol (see the module docstring)."""

    def target(self, data, *, validate: bool = True, seed: int | None = None) -> Target:
        """The posterior given ``data`` on one flat vector (validating the data)."""

    def model_kwargs(self, data) -> dict:
        """Keyword arguments that run the Pyro model on ``data`` (for SVI)."""

    def prediction_data(self, X, exposure=None, X_zero=None):
        """The data object for predicting at ``X`` (no targets needed)."""

    def draw_means(self, draws: dict, data) -> torch.Tensor:
        """``E[y]`` of each row under each draw, shape ``(S, n)``."""

    def draw_predictive(self, draws: dict, data, generator: torch.Generator) -> torch.Tensor:
        """One target draw per row and per parameter draw, shape ``(S, n)``."""

    def draw_log_likelihood(self, draws: dict, data) -> torch.Tensor:
        """Unweighted log-likelihood of each row under each draw, shape ``(S, n)``."""

    def observed(self, data) -> torch.Tensor:
        """The observed targets of ``data``, shape ``(n,)``."""

    def with_totals(self, totals: dict):
        """The model whose data-dependent priors use ``totals`` of all rows (streaming)."""


def _observed_site(trace):
    """The site named ``"obs"``, else the first observed sample site, of a trace."""
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    named = [s for s in sites if s["name"] == "obs"]
    observed = [s for s in sites if s["is_observed"]]
    if not (named or observed):
        raise ValueError("the model has no site 'obs' and no observed site")
    return (named or observed)[0]


class PyroModel:
    """:class:`PosteriorModel` for any Pyro model; ``data`` is a dict of its keyword arguments.

    Parameters
    ----------
    fn : callable
        The Pyro model. Its observed site is the one named ``"obs"``, else the first
        observed site.
    """

    def __init__(self, fn):
        self.fn = fn

    def __repr__(self) -> str:
        return f"PyroModel({getattr(self.fn, '__name__', self.fn)!r})"

    def __call__(self, *args, **kwargs):
        """Run the Pyro model itself (so the wrapper is a Pyro model too)."""
        return self.fn(*args, **kwargs)

    def target(self, data, *, validate=True, seed=None):
        del validate
        return PyroTarget(self.fn, data, seed=seed)

    def model_kwargs(self, data):
        return dict(data)

    def prediction_data(self, X, exposure=None, X_zero=None):
        if not isinstance(X, dict) or exposure is not None or X_zero is not None:
            raise ValueError("a general Pyro model predicts from a dict of its keyword "
                             "arguments (no exposure or X_zero)")
        return X

    def _traces(self, draws, kwargs):
        S = len(next(iter(draws.values())))
        for i in range(S):
            values = {k: v[i] for k, v in draws.items()}
            yield poutine.trace(poutine.condition(self.fn, values)).get_trace(**kwargs)

    def draw_means(self, draws, data):
        return torch.stack([_observed_site(t)["fn"].mean for t in self._traces(draws, data)])

    def draw_predictive(self, draws, data, generator):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = Predictive(poutine.uncondition(self.fn), posterior_samples=draws)(**data)
        name = _observed_site(poutine.trace(self.fn).get_trace(**data))["name"]
        return out[name].reshape(len(next(iter(draws.values()))), -1)

    def draw_log_likelihood(self, draws, data):
        rows = []
        for t in self._traces(draws, data):
            site = _observed_site(t)
            rows.append(site["fn"].log_prob(site["value"]).reshape(-1))
        return torch.stack(rows)

    def observed(self, data):
        return _observed_site(poutine.trace(self.fn).get_trace(**data))["value"]

    def with_totals(self, totals):
        del totals
        return self


# Whether a type implements the protocol, by type: the runtime check inspects every
# method and would cost more than a small fit's Newton step.
_IMPLEMENTS: dict[type, bool] = {}


def as_model(model) -> PosteriorModel:
    """``model`` itself when it implements :class:`PosteriorModel`, else a :class:`PyroModel`."""
    kind = type(model)
    implements = _IMPLEMENTS.get(kind)
    if implements is None:
        implements = _IMPLEMENTS[kind] = isinstance(model, PosteriorModel)
    if implements:
        return model
    if not callable(model):
        raise ValueError(f"a model must be a Pyro model (a callable), got {kind.__name__}")
    return PyroModel(model)
