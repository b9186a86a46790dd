"""scikit-learn estimators of posheads (also importable from ``posheads`` itself).

:class:`SoftplusGLMRegressor` is the base of the GLM regressors: a regressor for a new
likelihood is a subclass declaring its family (``family = MY_FAMILY``), and
:func:`regressor_for` finds the regressor of a family.
"""

from ._base import SoftplusGLMRegressor, regressor_for
from ._persist import load
from .bnn import BayesianNeuralCountRegressor
from .forecasting import CountForecaster, SeasonalNaiveForecaster
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

__all__ = [
    "BayesianNeuralCountRegressor",
    "CountForecaster",
    "GammaSoftplusRegressor",
    "GeneralizedPoissonSoftplusRegressor",
    "HurdleNegativeBinomialSoftplusRegressor",
    "HurdlePoissonSoftplusRegressor",
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
