"""Constraints whose registered bijection is softplus rather than ``exp``.

``softplus_positive(beta, low)`` is the half line ``(low, inf)``, like
``torch.distributions.constraints.greater_than(low)``, but with a registry key of its
own: ``biject_to`` and ``transform_to`` map it to
:class:`posheads.transforms.SoftplusTransform`, so ``pyro.param``, ``PyroParam``,
``PyroSample`` and every Pyro autoguide use softplus at that site. The constraint is
defined and registered beside its transform in :mod:`posheads.transforms`; importing
this module imports that one, so the registration is always in place.
"""

from __future__ import annotations

from .transforms import SoftplusPositive, softplus_positive

__all__ = ["SoftplusPositive", "softplus_positive"]
