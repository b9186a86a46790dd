"""Pyro models built on posheads' families and heads (``posheads.models``).

* :mod:`posheads.models.glm` -- :class:`SoftplusGLM`, GLMs of any family with a softplus
  link, and :class:`GLMData`, the data they take;
* :mod:`posheads.models.bnn` -- :class:`BayesianCountMLP`, Bayesian neural networks with a
  family's head;
* :mod:`posheads.models.forecast` -- count time-series models for Pyro's forecasting
  framework;
* :mod:`posheads.models.protocol` -- :class:`PosteriorModel`, what the engines ask of a
  model, and :class:`PyroModel`, its implementation for any Pyro model;
* :mod:`posheads.models.target` -- :class:`Target`, a posterior on one flat vector.
"""

import importlib

from .data import GLMData, check_glm_data
from .glm import LIKELIHOODS, SoftplusGLM
from .protocol import PosteriorModel, PyroModel, as_model
from .target import PyroTarget, Target

__all__ = [
    "LIKELIHOODS",
    "CountForecastModel",
    "GLMData",
    "LogGaussianForecastModel",
    "PosteriorModel",
    "PyroModel",
    "PyroTarget",
    "SoftplusGLM",
    "Target",
    "as_model",
    "check_glm_data",
]


def __getattr__(name):
    # the forecasting models, loaded on first use: they import pyro.contrib.forecast
    if name in ("CountForecastModel", "LogGaussianForecastModel"):
        value = getattr(importlib.import_module(".forecast", __name__), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
