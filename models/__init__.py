"""Pyro models built on posheads' softplus distributions and heads (``posheads.models``).

* :mod:`posheads.models.glm` -- :class:`SoftplusGLM`, count GLMs with a softplus link
  (Poisson, negative binomial, zero-inflated Poisson and NB, hurdle Poisson and NB), and
  :class:`GLMData`, the data every engine takes.
"""

from .forecast import CountForecastModel, LogGaussianForecastModel, SoftplusDiscretizedLogistic
from .glm import LIKELIHOODS, GLMData, SoftplusGLM

__all__ = [
    "LIKELIHOODS",
    "CountForecastModel",
    "GLMData",
    "LogGaussianForecastModel",
    "SoftplusDiscretizedLogistic",
    "SoftplusGLM",
]
