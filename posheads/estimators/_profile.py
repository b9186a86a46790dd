"""One-dimensional profile-likelihood searches: a coarse grid, then golden sections.

The regressors choose a few parameters by profile likelihood over refits -- the softness
``beta="auto"`` of every regressor, the Tweedie ``power="auto"`` -- by the same search:
evaluate the negated maximised log-likelihood on a grid, then refine between the grid
neighbours of the best point, where the profile is taken to be unimodal.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["golden_section", "grid_then_golden"]


def golden_section(f, lo: float, hi: float, tol: float) -> float:
    """The minimiser of a unimodal ``f`` on ``[lo, hi]``, to ``tol``, by golden sections.

    Examples
    --------
    >>> round(golden_section(lambda x: (x - 0.3) ** 2, 0.0, 1.0, tol=1e-6), 4)
    0.3
    """
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def grid_then_golden(f, grid, tol: float) -> float:
    """The minimiser of ``f``: the best point of ``grid``, refined by golden sections
    between its neighbours on the grid.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``, the negated profile log-likelihood.
    grid : array-like of shape (k,)
        Increasing candidate points.
    tol : float
        Width of the final bracket.

    Examples
    --------
    >>> round(grid_then_golden(lambda x: (x - 1.37) ** 2, [1.1, 1.3, 1.5, 1.7], 1e-6), 4)
    1.37
    """
    grid = np.asarray(grid, dtype=np.float64)
    values = [f(x) for x in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    return golden_section(f, float(lo), float(hi), tol=tol)
