"""Softplus activations: :class:`Softplus` (a drop-in for ``torch.nn.Softplus``, with a
floor and a learnable softness) and :class:`PositiveLinear`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..transforms import SoftplusTransform
from ._shared import check_low

__all__ = ["PositiveLinear", "Softplus"]


class Softplus(nn.Module):
    """``low + softplus_beta(x)``, a drop-in for ``torch.nn.Softplus``.

    With the defaults it returns torch's values (float32 and below exactly; see
    :mod:`posheads.ops` for a 2e-9 difference in float64 near the threshold). With
    ``learn_beta=True``, ``beta`` is a parameter kept positive by a softplus transform and
    the output is ``softplus(beta * x) / beta`` (the same function, differentiable in
    ``beta``).

    Parameters
    ----------
    beta : float
        Softness, ``> 0`` (initial value when learned).
    threshold : float
        Linear-branch threshold on ``beta * x``.
    low : float
        Floor added to the output, ``>= 0``.
    learn_beta : bool
        Make ``beta`` a learnable parameter (stored unconstrained as ``beta_unconstrained``).

    Shape: input ``(*)``, output ``(*)``.

    Examples
    --------
    >>> Softplus()
    Softplus(beta=1.0, threshold=20.0)
    >>> Softplus(learn_beta=True)(torch.zeros(2)).shape
    torch.Size([2])
    """

    def __init__(self, beta=1.0, threshold=20.0, low=0.0, learn_beta=False):
        super().__init__()
        ops.check_link_args(beta, threshold)
        check_low(low)
        self.threshold, self.low, self.learn_beta = threshold, low, bool(learn_beta)
        self._beta = beta
        if self.learn_beta:
            self._to_beta = SoftplusTransform()
            self.beta_unconstrained = nn.Parameter(self._to_beta.inv(torch.tensor(float(beta))))

    @property
    def beta(self):
        """The softness: a float, or a positive 0-d tensor when learned."""
        return self._to_beta(self.beta_unconstrained) if self.learn_beta else self._beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learn_beta:
            b = self.beta
            out = ops.softplus(x * b, 1.0, self.threshold) / b
        else:  # checked at construction: torch's kernel with the dtype's switch, directly
            out = F.softplus(x, self._beta, ops.linear_switch(x.dtype, self.threshold))
        return out + self.low if self.low else out

    def extra_repr(self) -> str:
        beta = float(self.beta.detach()) if self.learn_beta else self.beta
        text = f"beta={beta}, threshold={self.threshold}"
        text += f", low={self.low}" if self.low else ""
        return text + (", learn_beta=True" if self.learn_beta else "")


class PositiveLinear(nn.Linear):
    """``low + softplus(x W^T + b)``: a ``Linear`` layer with positive outputs.

    Parameters
    ----------
    in_features, out_features : int
        As in ``torch.nn.Linear``.
    bias : bool
        Learn an additive bias.
    beta, threshold, low : float
        As in :class:`Softplus`.
    device, dtype
        As in ``torch.nn.Linear``.

    Shape: input ``(*, in_features)``, output ``(*, out_features)``, all ``>= low``.

    Examples
    --------
    >>> layer = PositiveLinear(3, 2, low=0.1)
    >>> bool((layer(torch.randn(5, 3)) > 0.1).all())
    True
    """

    def __init__(self, in_features, out_features, bias=True, beta=1.0, threshold=20.0,
                 low=0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        ops.check_link_args(beta, threshold)
        check_low(low)
        self.beta, self.threshold, self.low = beta, threshold, low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = ops.softplus(super().forward(x), self.beta, self.threshold)
        return out + self.low if self.low else out

    def extra_repr(self) -> str:
        text = f"{super().extra_repr()}, beta={self.beta}, threshold={self.threshold}"
        return text + (f", low={self.low}" if self.low else "")
