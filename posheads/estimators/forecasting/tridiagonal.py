"""Banded linear algebra of the panel Laplace engine, vectorised over series and grid values.

The Hessian of the negative log joint in a series' level path is tridiagonal in time
(:mod:`.laplace_newton`). Its ``L D L'`` factorisation (:func:`ldl_pivots`) and the sweeps
(:func:`forward_substitute`, :func:`backward_substitute`) run one in-place operation per
time step over every leading dimension at once (grid values, series, right-hand sides), with
no per-series loop and no ``torch.linalg`` call on tiny blocks; :func:`tridiagonal_solve`
composes them, and :func:`feature_products` forms the per-series products ``F' M`` of the
Schur complement over the seasonal and covariate weights.
"""

from __future__ import annotations

import torch

__all__ = ["backward_substitute", "feature_products", "forward_substitute", "ldl_pivots",
           "tridiagonal_solve"]


def ldl_pivots(diag, off):
    """Pivots and multipliers of the ``LDL'`` factorisation of symmetric tridiagonal
    matrices (no pivoting: the systems it is used on are positive definite).

    ``H = L D L'`` with ``D = diag(pivot)`` and ``L`` unit lower bidiagonal, ``L[t, t - 1] =
    ratio[t] = off[t - 1] / pivot[t - 1]``. Time comes first in the outputs, so that each
    step of the loop over time (the only loop: every system at once) reads and writes
    contiguous slices.

    Parameters
    ----------
    diag : Tensor of shape (..., n)
        ``H[t, t]``.
    off : Tensor of shape (..., n - 1)
        ``H[t, t + 1] = H[t + 1, t]``.

    Returns
    -------
    (Tensor of shape (n, ...), Tensor of shape (n, ...))
        ``pivot`` and ``ratio`` (``ratio[0] = 0``), time-major.
    """
    pivot = diag.movedim(-1, 0).clone(memory_format=torch.contiguous_format)
    ratio = torch.zeros_like(pivot)
    e, p, r = off.movedim(-1, 0).unbind(0), pivot.unbind(0), ratio.unbind(0)
    for t in range(1, pivot.shape[0]):
        torch.div(e[t - 1], p[t - 1], out=r[t])
        p[t].addcmul_(r[t], e[t - 1], value=-1.0)
    return pivot, ratio


def forward_substitute(ratio, rhs):
    """``L^-1 rhs`` for the unit bidiagonal ``L`` of :func:`ldl_pivots`.

    Parameters
    ----------
    ratio : Tensor of shape (n, ...)
        Time-major, from :func:`ldl_pivots`.
    rhs : Tensor of shape (n, ..., r)
        Time-major right-hand sides (overwritten: pass a copy you own).

    Returns
    -------
    Tensor of shape (n, ..., r)
        ``rhs`` itself, holding the result.
    """
    y, r = rhs.unbind(0), ratio[..., None].unbind(0)
    for t in range(1, rhs.shape[0]):
        y[t].addcmul_(r[t], y[t - 1], value=-1.0)
    return rhs


def backward_substitute(ratio, rhs):
    """``L'^-1 rhs`` for the unit bidiagonal ``L`` of :func:`ldl_pivots`.

    Parameters
    ----------
    ratio : Tensor of shape (n, ...)
        Time-major, from :func:`ldl_pivots`.
    rhs : Tensor of shape (n, ...)
        Time-major, one right-hand side per system (overwritten).

    Returns
    -------
    Tensor of shape (n, ...)
        ``rhs`` itself, holding the result.
    """
    x, r = rhs.unbind(0), ratio.unbind(0)
    for t in range(rhs.shape[0] - 2, -1, -1):
        x[t].addcmul_(r[t + 1], x[t + 1], value=-1.0)
    return rhs


def tridiagonal_solve(diag, off, rhs):
    """Solve symmetric tridiagonal systems ``H x = rhs`` (Thomas' algorithm).

    :func:`ldl_pivots`, then ``L D L' x = rhs`` by :func:`forward_substitute`, a
    division by the pivots and the backward sweep, every system and right-hand side at
    once.

    Parameters
    ----------
    diag : Tensor of shape (..., n)
        ``H[t, t]``.
    off : Tensor of shape (..., n - 1)
        ``H[t, t + 1] = H[t + 1, t]``.
    rhs : Tensor of shape (..., n, r)

    Returns
    -------
    Tensor of shape (..., n, r)
    """
    pivot, ratio = ldl_pivots(diag, off)
    y = rhs.movedim(-2, 0).clone(memory_format=torch.contiguous_format)
    y = forward_substitute(ratio, y) / pivot[..., None]
    return backward_substitute(ratio[..., None], y).movedim(0, -2)


def feature_products(feats, m):
    """``F' m`` per grid value and series, without copying ``F`` for every grid value.

    Parameters
    ----------
    feats : Tensor of shape (S, T, K)
    m : Tensor of shape (G, S, T, R)

    Returns
    -------
    Tensor of shape (G, S, K, R)
    """
    g, s, t, r = m.shape
    cols = m.permute(1, 2, 0, 3).reshape(s, t, g * r)  # one product per series
    return (feats.transpose(1, 2) @ cols).view(s, feats.shape[-1], g, r).permute(2, 0, 1, 3)
