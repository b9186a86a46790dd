"""Constraints whose registered bijection is softplus rather than ``exp``.

``softplus_positive(beta, low)`` is the half line ``(low, inf)``, like
``torch.distributions.constraints.greater_than(low)``, but with a registry key of its
own: ``biject_to`` and ``transform_to`` map it to
:class:`posheads.transforms.SoftplusTransform`, so ``pyro.param``, ``PyroParam``,
``PyroSample`` and every Pyro autoguide use softplus at that site. The registration
lives in :mod:`posheads.transforms` and runs when this module is imported.
"""

from __future__ import annotations

from torch.distributions import constraints

__all__ = ["SoftplusPositive", "softplus_positive"]


class SoftplusPositive(constraints._GreaterThan):
    """The half line ``(low, inf)``, mapped to by ``low + softplus_beta(x)``.

    Parameters
    ----------
    beta : float
        Softness of the softplus that ``biject_to`` will use.
    low : float or Tensor
        Lower bound (exclusive).

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import biject_to
    >>> biject_to(softplus_positive(beta=2.0))(torch.tensor(0.0))
    tensor(0.3466)
    """

    def __init__(self, beta: float = 1.0, low: float = 0.0):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        super().__init__(low)

    def __repr__(self) -> str:
        return f"SoftplusPositive(beta={self.beta}, low={self.lower_bound})"


def softplus_positive(beta: float = 1.0, low: float = 0.0) -> SoftplusPositive:
    """Return the constraint ``(low, inf)`` whose bijection is ``low + softplus_beta``."""
    return SoftplusPositive(beta=beta, low=low)


# Registers the biject_to / transform_to factories for SoftplusPositive.
from . import transforms as _transforms  # noqa: E402, F401
