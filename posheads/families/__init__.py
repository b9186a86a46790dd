"""Families: one declarative object per likelihood (``posheads.families``).

A :class:`Family` states what every layer above needs to use a likelihood under a softplus
link -- its distribution, its shapes (positive parameters shared by all rows) and parts
(further linear predictors), whether targets are whole numbers, a moment-based start,
per-row derivatives and a simulator. :func:`get_family` is the one place where a user's
string becomes a likelihood; past it, code calls methods of the family object.

Registered families: ``poisson``, ``negative_binomial``, ``zero_inflated_poisson``,
``zero_inflated_negative_binomial``, ``hurdle_poisson``, ``hurdle_negative_binomial`` and
``discretized_logistic`` and ``generalized_poisson`` (counts of any dispersion, below or
above the mean); for amounts ``gamma`` and ``tweedie_1_5`` (alias ``tweedie``), the
Tweedie law at other powers as :func:`tweedie_family` makes it.

Adding a likelihood takes a distribution (in :mod:`posheads.distributions` or your own), a
family object and, for scikit-learn users, an estimator class::

    from posheads.families import Family, Shape
    GEOMETRIC = Family("geometric", MyGeometric, description="geometric counts")
    class GeometricSoftplusRegressor(SoftplusGLMRegressor):
        family = GEOMETRIC

``register_family(GEOMETRIC)`` makes its name known to :func:`get_family` (and to the
estimators' and the command line's string options).
"""

from .amounts import (
    GAMMA,
    GAMMA_SHAPE,
    TWEEDIE,
    TWEEDIE_DISPERSION,
    GammaFamily,
    TweedieFamily,
    tweedie_family,
)
from .base import Family, Part, Shape, Start
from .counts import (
    CONCENTRATION,
    DISCRETIZED_LOGISTIC,
    DISPERSION,
    HURDLE_GATE,
    HURDLE_NEGATIVE_BINOMIAL,
    HURDLE_POISSON,
    NEGATIVE_BINOMIAL,
    POISSON,
    ZERO_INFLATED_GATE,
    ZERO_INFLATED_NEGATIVE_BINOMIAL,
    ZERO_INFLATED_POISSON,
    CountFamily,
    GatedFamily,
    HurdleFamily,
    ZeroInflatedFamily,
)
from .dispersed import GENERALIZED_POISSON, GP_DISPERSION, GeneralizedPoissonFamily
from .registry import (
    available_families,
    get_family,
    register_family,
    registered,
    unregister_family,
)
from .rows import AutogradRows, RowTerms
from .start import weighted_mean_rate

__all__ = [
    "CONCENTRATION",
    "DISCRETIZED_LOGISTIC",
    "DISPERSION",
    "GAMMA",
    "GAMMA_SHAPE",
    "GENERALIZED_POISSON",
    "GP_DISPERSION",
    "HURDLE_GATE",
    "HURDLE_NEGATIVE_BINOMIAL",
    "HURDLE_POISSON",
    "NEGATIVE_BINOMIAL",
    "POISSON",
    "TWEEDIE",
    "TWEEDIE_DISPERSION",
    "ZERO_INFLATED_GATE",
    "ZERO_INFLATED_NEGATIVE_BINOMIAL",
    "ZERO_INFLATED_POISSON",
    "AutogradRows",
    "CountFamily",
    "Family",
    "GammaFamily",
    "GatedFamily",
    "GeneralizedPoissonFamily",
    "HurdleFamily",
    "Part",
    "RowTerms",
    "Shape",
    "Start",
    "TweedieFamily",
    "ZeroInflatedFamily",
    "available_families",
    "get_family",
    "register_family",
    "registered",
    "tweedie_family",
    "unregister_family",
    "weighted_mean_rate",
]

for _family in (POISSON, NEGATIVE_BINOMIAL, ZERO_INFLATED_POISSON,
                ZERO_INFLATED_NEGATIVE_BINOMIAL, HURDLE_POISSON, HURDLE_NEGATIVE_BINOMIAL,
                DISCRETIZED_LOGISTIC, GENERALIZED_POISSON, GAMMA, TWEEDIE):
    register_family(_family)
del _family
