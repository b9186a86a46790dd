"""scikit-learn estimators of posheads (also importable from ``posheads`` itself)."""

from ._persist import load
from .bnn import BayesianNeuralCountRegressor
from .forecaster import CountForecaster, SeasonalNaiveForecaster
from .glm import (
    HurdleNegativeBinomialSoftplusRegressor,
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)

__all__ = [
    "BayesianNeuralCountRegressor",
    "CountForecaster",
    "HurdleNegativeBinomialSoftplusRegressor",
    "HurdlePoissonSoftplusRegressor",
    "NegativeBinomialSoftplusRegressor",
    "PoissonSoftplusRegressor",
    "SeasonalNaiveForecaster",
    "ZeroInflatedNegativeBinomialSoftplusRegressor",
    "ZeroInflatedPoissonSoftplusRegressor",
    "load",
]
