"""posheads: softplus-link models of counts and positive quantities, with torch and Pyro.

The layers, from the bottom up: :mod:`posheads.ops` (stable tensor functions),
:mod:`posheads.transforms` and :mod:`posheads.constraints`, :mod:`posheads.distributions`,
:mod:`posheads.heads`, :mod:`posheads.models`, :mod:`posheads.inference`,
:mod:`posheads.posterior`, :mod:`posheads.estimators`, :mod:`posheads.datasets` and
:mod:`posheads.cli`. Importing ``posheads`` itself is cheap: the estimators (re-exported
here) load on first use.
"""

import importlib

__version__ = "0.1.0"

_ESTIMATORS = (
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
    "TweedieSoftplusRegressor",
    "ZeroInflatedNegativeBinomialSoftplusRegressor",
    "ZeroInflatedPoissonSoftplusRegressor",
)

__all__ = ["SamplerWarning", "__version__", *_ESTIMATORS]


def __getattr__(name):
    # the estimators' public names, loaded on first use (a regressor added to
    # posheads.estimators is found here too)
    if name in _ESTIMATORS or (name[:1].isupper() and name.endswith(("Regressor", "Forecaster"))):
        estimators = importlib.import_module("posheads.estimators")
        if name in estimators.__all__:
            return getattr(estimators, name)
    if name == "SamplerWarning":  # warned after a Bayesian fit whose draws fall short
        return importlib.import_module("posheads.inference.checks").SamplerWarning
    if name == "diagnostics":  # posheads.diagnostics.rootogram(...) after `import posheads`
        return importlib.import_module("posheads.diagnostics")
    raise AttributeError(f"module 'posheads' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
