"""Inference engines: each takes a model and its data and returns a :class:`Posterior`.

* :func:`fit_map` -- MAP / maximum likelihood (Newton for the GLMs, L-BFGS otherwise).
* :func:`fit_laplace` -- Gaussian at the mode with the exact Hessian, and draws.
* :func:`fit_nuts` -- Pyro's NUTS.
* :func:`fit_svi` -- stochastic variational inference.
* :func:`fit_svi_stream` with :class:`ArraySource` / :class:`ParquetSource` -- SVI on
  mini-batches streamed from disk (:mod:`.stream`).
* :func:`fit_map_distributed`, :func:`fit_svi_distributed` -- data-parallel fits on
  ``torch.distributed``, one shard per worker (:mod:`.distributed`).

The engines are loaded on first use, so importing this package is cheap and does not
fail while an engine is missing.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ArraySource",
    "ParquetSource",
    "fit_laplace",
    "fit_map",
    "fit_map_distributed",
    "fit_nuts",
    "fit_svi",
    "fit_svi_distributed",
    "fit_svi_stream",
]

_ENGINES = {
    "fit_map": ".map",
    "fit_laplace": ".laplace",
    "fit_nuts": ".nuts",
    "fit_svi": ".svi",
    "fit_svi_stream": ".stream",
    "ArraySource": ".stream",
    "ParquetSource": ".stream",
    "fit_map_distributed": ".distributed",
    "fit_svi_distributed": ".distributed",
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
