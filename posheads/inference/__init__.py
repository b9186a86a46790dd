"""Inference engines: each takes a model and its data and returns a :class:`Posterior`.

Every engine works through the model's
:class:`~posheads.models.protocol.PosteriorModel` methods and its
:class:`~posheads.models.target.Target`, the posterior on one flat vector.

Configurations (each with a ``fit(model, data, seed=, verbose=)`` method):

* :class:`MAP` -- MAP / maximum likelihood (Newton where the target has a Newton loss,
  L-BFGS otherwise); :func:`fit_map`.
* :class:`Laplace` -- a Gaussian at the mode with the exact Hessian, and draws;
  :func:`fit_laplace`.
* :class:`NUTS` -- Pyro's NUTS in the Laplace metric; :func:`fit_nuts`.
* :class:`SVI` -- stochastic variational inference, in memory (:func:`fit_svi`), on
  mini-batches streamed from disk (:func:`fit_svi_stream` with :class:`ArraySource` /
  :class:`ParquetSource`) or data-parallel.

:func:`fit_map_distributed` and :func:`fit_svi_distributed` fit on ``torch.distributed``,
one shard per worker (:mod:`.distributed`). :mod:`.common` holds what the engines share
(seeding, the thread policy, the plateau rule, the guide factory).

The engines are loaded on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib

__all__ = [
    "MAP",
    "NUTS",
    "SVI",
    "ArraySource",
    "FitDiagnostics",
    "Laplace",
    "ParquetSource",
    "SamplerWarning",
    "diagnose",
    "fit_laplace",
    "fit_map",
    "fit_map_distributed",
    "fit_nuts",
    "fit_svi",
    "fit_svi_distributed",
    "fit_svi_stream",
]

_ENGINES = {
    "MAP": ".map",
    "fit_map": ".map",
    "Laplace": ".laplace",
    "fit_laplace": ".laplace",
    "NUTS": ".nuts",
    "fit_nuts": ".nuts",
    "SVI": ".svi",
    "fit_svi": ".svi",
    "fit_svi_stream": ".stream",
    "ArraySource": ".stream",
    "ParquetSource": ".stream",
    "fit_map_distributed": ".distributed",
    "fit_svi_distributed": ".distributed",
    "FitDiagnostics": ".checks",
    "SamplerWarning": ".checks",
    "diagnose": ".checks",
}


def __getattr__(name: str):
    if name in _ENGINES:
        module = importlib.import_module(_ENGINES[name], __name__)
        value = getattr(module, name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
