"""scikit-learn estimators of posheads (also importable from ``posheads`` itself)."""

from ._persist import load
from .glm import (
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)

__all__ = [
    "HurdlePoissonSoftplusRegressor",
    "NegativeBinomialSoftplusRegressor",
    "PoissonSoftplusRegressor",
    "ZeroInflatedPoissonSoftplusRegressor",
    "load",
]
