"""``SoftplusTransform``, its codomain, and the registrations that make Pyro use softplus.

* :class:`SoftplusTransform` maps the real line onto ``(low, inf)`` by
  ``y = low + softplus_beta(x)`` with the guarded ops of :mod:`posheads.ops`.
* :class:`SoftplusPositive` (made by :func:`softplus_positive`) is that half line, with a
  registry key of its own; it is registered below with ``biject_to`` and ``transform_to``
  (one visible block, at the end of this module). :mod:`posheads.constraints` is its
  public face: it imports this module, never the other way round.
* :func:`softplus_for_positive` temporarily maps plain ``constraints.positive`` (and
  every ``greater_than`` / ``greater_than_eq``) to softplus, so Pyro's autoguides and
  ``pyro.param(..., constraint=positive)`` use it, and restores the old mapping on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import Transform

from . import ops

__all__ = ["SoftplusPositive", "SoftplusTransform", "softplus_for_positive", "softplus_positive"]


class SoftplusPositive(constraints._GreaterThan):
    """The half line ``(low, inf)``, mapped to by ``low + softplus_beta(x)``.

    Like ``torch.distributions.constraints.greater_than(low)``, but with a registry key of
    its own: ``biject_to`` and ``transform_to`` map it to :class:`SoftplusTransform`, so
    ``pyro.param``, ``PyroParam``, ``PyroSample`` and every Pyro autoguide use softplus
    at that site.

    Parameters
    ----------
    beta : float
        Softness of the softplus that ``biject_to`` will use.
    low : float or Tensor
        Lower bound (exclusive).

    Examples
    --------
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


class SoftplusTransform(Transform):
    """``y = low + softplus(x, beta, threshold)``, a bijection from reals to ``(low, inf)``.

    The forward and inverse are :func:`posheads.ops.softplus` and
    :func:`posheads.ops.softplus_inverse`; the log-Jacobian ``log sigmoid(beta * x)`` is
    exactly 0 on the linear branch, consistent with the forward.

    Parameters
    ----------
    beta : float
        Softness (``> 0``).
    threshold : float
        Linear-branch threshold, as in :func:`posheads.ops.softplus`.
    low : float or Tensor
        Lower bound of the codomain.
    cache_size : int
        0 or 1, as for every ``torch.distributions.Transform``.

    Examples
    --------
    >>> t = SoftplusTransform(low=1.0)
    >>> t(torch.tensor([0.0]))
    tensor([1.6931])
    >>> t.inv(t(torch.tensor([-3.0])))
    tensor([-3.])
    """

    domain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, low=0.0, cache_size: int = 0):
        ops.check_link_args(beta, threshold)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.low = low
        super().__init__(cache_size=cache_size)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def codomain(self):
        return SoftplusPositive(beta=self.beta, low=self.low)

    def with_cache(self, cache_size: int = 1) -> SoftplusTransform:
        if self._cache_size == cache_size:
            return self
        return SoftplusTransform(self.beta, self.threshold, self.low, cache_size=cache_size)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, SoftplusTransform)
            and self.beta == other.beta
            and self.threshold == other.threshold
            and _same(self.low, other.low)
        )

    def __repr__(self) -> str:
        return f"SoftplusTransform(beta={self.beta}, threshold={self.threshold}, low={self.low})"

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return ops.softplus(x, self.beta, self.threshold) + self.low

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return ops.softplus_inverse(y - self.low, self.beta, self.threshold)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = x * self.beta
        # The forward is exactly x above the switch, so its log-derivative is exactly 0.
        lin = z > ops.linear_switch(x.dtype, self.threshold)
        return torch.where(lin, torch.zeros_like(z), F.logsigmoid(z))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape == b.shape and bool((a == b.to(a.device)).all())
    return a == b


# The types plain `constraints.positive`, `greater_than(...)` and `nonnegative` share.
_HALF_LINES = (type(constraints.positive), type(constraints.nonnegative))


@contextlib.contextmanager
def softplus_for_positive(beta: float = 1.0) -> Iterator[None]:
    """Make ``biject_to`` / ``transform_to`` map half lines to softplus inside the block.

    Covers ``constraints.positive``, ``greater_than(low)``, ``nonnegative`` and
    ``greater_than_eq(low)`` (the latter two as the open half line ``(low, inf)``, which
    is what ``exp`` gives too). The previous registrations are restored on exit, also
    when the block raises.

    Parameters
    ----------
    beta : float
        Softness of the softplus used.

    Examples
    --------
    >>> with softplus_for_positive():
    ...     print(biject_to(constraints.positive))
    SoftplusTransform(beta=1.0, threshold=20.0, low=0.0)
    """
    ops.check_link_args(beta, 20.0)

    def factory(constraint):
        return SoftplusTransform(beta=beta, low=constraint.lower_bound)

    saved = [(reg, key, reg._registry.get(key)) for reg in (biject_to, transform_to)
             for key in _HALF_LINES]
    try:
        for reg, key, _ in saved:
            reg.register(key, factory)
        yield
    finally:
        for reg, key, old in saved:
            if old is None:
                reg._registry.pop(key, None)
            else:
                reg._registry[key] = old


# ---- registrations: softplus_positive(beta, low) -> SoftplusTransform(beta, low) ----
@biject_to.register(SoftplusPositive)
@transform_to.register(SoftplusPositive)
def _softplus_positive_to_softplus(constraint: SoftplusPositive) -> SoftplusTransform:
    return SoftplusTransform(beta=constraint.beta, low=constraint.lower_bound)
