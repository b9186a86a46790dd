"""posheads: softplus-link models of counts and positive quantities, with torch and Pyro.

The layers, from the bottom up: :mod:`posheads.ops` (stable tensor functions),
:mod:`posheads.transforms` and :mod:`posheads.constraints`, :mod:`posheads.distributions`,
:mod:`posheads.heads`, :mod:`posheads.models`, :mod:`posheads.inference`,
:mod:`posheads.posterior`, :mod:`posheads.estimators`, :mod:`posheads.datasets` and
:mod:`posheads.cli`. Importing ``posheads`` itself is cheap: the estimators are loaded
on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
