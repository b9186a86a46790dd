"""scikit-learn estimators of posheads (also importable from ``posheads`` itself).

:class:`SoftplusGLMRegressor` is the base of the GLM regressors: a regressor for a new
likelihood is a subclass declaring its family (``family = MY_FAMILY``), and
:func:`regressor_for` finds the regressor of a family.
"""

import importlib

from ._base import SoftplusGLMRegressor, regressor_for
from ._persist import load
from .glm import (
    GammaSoftplusRegressor,
    GeneralizedPoissonSoftplusRegressor,
    HurdleNegativeBinomialSoftplusRegressor,
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    TweedieSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)
from .mixed import MixedCountRegressor

__all__ = [
    "BayesianNeuralCountRegressor",
    "CountForecaster",
    "GammaSoftplusRegressor",
    "GeneralizedPoissonSoftplusRegressor",
    "HurdleNegativeBinomialSoftplusRegressor",
    "HurdlePoissonSoftplusRegressor",
    "MixedCountRegressor",
    "NegativeBinomialSoftplusRegressor",
    "PoissonSoftplusRegressor",
    "SeasonalNaiveForecaster",
    "SoftplusGLMRegressor",
    "TweedieSoftplusRegressor",
    "ZeroInflatedNegativeBinomialSoftplusRegressor",
    "ZeroInflatedPoissonSoftplusRegressor",
    "load",
    "regressor_for",
]

# loaded on first use: the BNN and the forecasters pull in Pyro's SVI and forecasting
# modules, which a GLM fit does not need
_LAZY = {
    "BayesianNeuralCountRegressor": ".bnn",
    "CountForecaster": ".forecasting",
    "SeasonalNaiveForecaster": ".forecasting",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
