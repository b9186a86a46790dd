"""What the heads share: the check of a floor, and the maps between raw outputs and values.

Public names of the package's internal API (used by its sibling modules).
"""

from __future__ import annotations

import math

import torch

from .. import ops

__all__ = ["check_low", "inv_softplus", "positive"]


def check_low(low) -> None:
    """Raise ``ValueError`` unless ``low`` is a finite number ``>= 0``."""
    if not (isinstance(low, (int, float)) and math.isfinite(low) and low >= 0):
        raise ValueError(f"low must be a finite number >= 0, got {low!r}")


def inv_softplus(value: float, low: float = 0.0, beta: float = 1.0) -> float:
    """Raw value whose ``low + softplus`` is ``value`` (kept just above ``low``)."""
    excess = max(value - low, 1e-6 * max(value, 1.0))  # a target at or below the floor
    return float(ops.softplus_inverse(torch.tensor(excess, dtype=torch.float64), beta))


def positive(raw: torch.Tensor) -> torch.Tensor:
    """Softplus for shapes and concentrations; floored at the smallest normal float, never 0."""
    return ops.softplus(raw).clamp(min=torch.finfo(raw.dtype).tiny)
