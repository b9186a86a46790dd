"""Slow, obviously-correct references and grids for the tests of :mod:`posheads.ops`.

Every reference is the textbook formula evaluated with ``mpmath`` at 50 significant
digits, whose exponent range is unbounded: ``exp(1e308)`` and ``exp(-1e308)`` are
ordinary numbers there, so no branch, threshold or asymptotic form is needed. Results
are rounded to float64 once; the tests then round them to the dtype under test.

Errors are measured in units in the last place (ulp) of the reference in the dtype
under test, with the ulp of a sub-normal number being the sub-normal spacing, so that
results that underflow into the sub-normal range are compared in absolute terms.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
import torch

__all__ = [
    "FLOAT_DTYPES",
    "all_finite",
    "devices",
    "eps",
    "magnitude_grid",
    "mp_log_softplus",
    "mp_nb_log_prob",
    "mp_poisson_log_prob",
    "mp_softplus",
    "mp_softplus_inverse",
    "mpc",
    "reference",
    "ulp",
]

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

# A private mpmath context at 50 digits (the global mpmath.mp is left alone).
mpc = mpmath.mp.clone()
mpc.dps = 50


def devices():
    """``cpu``, and ``cuda`` marked ``pytest.mark.cuda`` (skipped without a CUDA device)."""
    no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    return ["cpu", pytest.param("cuda", marks=(pytest.mark.cuda, no_cuda))]


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def ulp(values, dtype: torch.dtype) -> np.ndarray:
    """Spacing of ``dtype`` at each of ``values`` (float64 array), sub-normals included."""
    fi = torch.finfo(dtype)
    digits = 1 - round(math.log2(fi.eps))  # 53, 24, 11, 8
    min_exp = round(math.log2(fi.tiny)) + 1  # frexp exponent of the smallest normal
    _, e = np.frexp(np.abs(np.asarray(values, dtype=np.float64)))
    return np.ldexp(1.0, np.maximum(e, min_exp) - digits)


def all_finite(dtype: torch.dtype) -> torch.Tensor:
    """Every finite value of a 16-bit dtype, each once (-0 dropped), in increasing order."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    values = values[torch.isfinite(values) & ~((values == 0) & torch.signbit(values))]
    return values.sort().values


def magnitude_grid(dtype: torch.dtype, per_sign: int, beta: float = 1.0) -> torch.Tensor:
    """Finite values of ``dtype``: both signs over the whole range, the switch, and zero.

    Log-spaced magnitudes from the smallest sub-normal to the largest float, both
    signs, zero, the range ends exactly; ``beta * x`` dense in ``[10, 40]`` (where the
    linear switch of every dtype lies) and ``x`` dense in ``[-3, 3]``.
    """
    fi = torch.finfo(dtype)
    lo = math.log10(fi.tiny * fi.eps)  # smallest sub-normal
    with np.errstate(over="ignore"):  # the last point may round past max
        mags = np.logspace(lo, math.log10(fi.max), per_sign)
    ends = [fi.tiny * fi.eps, fi.tiny, fi.eps, 1.0, fi.max]
    switch = np.linspace(10.0, 40.0, 61) / beta
    zero = np.linspace(-3.0, 3.0, 25)
    grid = np.concatenate([mags, -mags, ends, [-v for v in ends], [0.0], switch, zero])
    x = torch.as_tensor(grid, dtype=torch.float64).to(dtype)
    x = x[torch.isfinite(x)]  # a log-spaced point may round up past max
    return x.unique()


def mp_softplus(x: float, beta: float = 1.0):
    b = mpc.mpf(beta)
    return mpc.log1p(mpc.exp(b * mpc.mpf(x))) / b


def mp_log_softplus(x: float, beta: float = 1.0):
    return mpc.log(mp_softplus(x, beta))


def mp_softplus_inverse(y: float, beta: float = 1.0):
    """``s(x) = y`` solved directly: ``exp(beta x) = exp(beta y) - 1``."""
    b = mpc.mpf(beta)
    return mpc.log(mpc.expm1(b * mpc.mpf(y))) / b


def mp_poisson_log_prob(eta, y, beta=1.0, exposure=None, eps=0.0, z_eps=0.0):
    """Poisson ``(log_prob, tol)`` with mean ``mu = exposure * s(eta)``.

    ``tol`` bounds the error of a float evaluation with unit roundoff ``eps``: a sum
    loses ``eps * sum |term|`` however it is arranged, with the terms ``y log(mu)``, ``mu``
    and ``lgamma(y + 1)`` (and ``y`` for the rounding of ``log(mu)`` itself). ``z_eps`` is
    the relative rounding of ``z = beta * eta`` (0 when exact), which moves ``log s`` by
    up to ``z_eps * max(1, -z)`` and the log-likelihood by ``y + mu`` times that. Both are
    computed here, in mpmath, so that a bound near the float range does not overflow.
    """
    y = mpc.mpf(y)
    mu = mp_softplus(eta, beta) * (1 if exposure is None else mpc.mpf(exposure))
    log_mu = mpc.log(mu)
    lgy = mpc.loggamma(y + 1)
    value = y * log_mu - mu - lgy
    scale = y * (abs(log_mu) + 1) + mu + abs(lgy) + abs(value)
    tol = eps * scale + z_eps * _z_condition(eta, beta) * (y + mu)
    return float(value), float(tol)


def mp_nb_log_prob(eta, y, r, beta=1.0, exposure=None, eps=0.0, z_eps=0.0):
    """NB2 ``(log_prob, tol)``: mean ``mu``, variance ``mu + mu^2 / r`` (docs/count-likelihoods.md).

    ``lgamma(y + r) - lgamma(r) - lgamma(y + 1) + r log r + y log mu - (y + r) log(r + mu)``;
    ``tol`` as in :func:`mp_poisson_log_prob`, with the logit ``d = log(mu / r)`` that any
    stable float evaluation forms: its rounding, ``eps (|log mu| + |log r| + 1)``, moves
    the result by ``|dl/dd| <= y + r`` times that.
    """
    y, r = mpc.mpf(y), mpc.mpf(r)
    mu = mp_softplus(eta, beta) * (1 if exposure is None else mpc.mpf(exposure))
    terms = [
        mpc.loggamma(y + r),
        -mpc.loggamma(r),
        -mpc.loggamma(y + 1),
        r * mpc.log(r) + y * mpc.log(mu) - (y + r) * mpc.log(r + mu),
    ]
    value = mpc.fsum(terms)
    logit = abs(mpc.log(mu)) + abs(mpc.log(r)) + 1
    scale = mpc.fsum(abs(t) for t in terms) + (y + r) * logit + abs(value)
    tol = eps * scale + z_eps * _z_condition(eta, beta) * (y + r)
    return float(value), float(tol)


def _z_condition(eta, beta):
    """``max(1, -beta * eta)``: how much a relative rounding of ``z`` moves ``log s``."""
    return max(mpc.mpf(1), -mpc.mpf(beta) * mpc.mpf(eta))


_UNARY = {
    "softplus": mp_softplus,
    "log_softplus": mp_log_softplus,
    "softplus_inverse": mp_softplus_inverse,
}


@functools.cache
def _reference(name: str, points: tuple[float, ...], beta: float) -> np.ndarray:
    fn = _UNARY[name]
    return np.array([float(fn(p, beta)) for p in points])


def reference(name: str, x: torch.Tensor, beta: float = 1.0) -> np.ndarray:
    """``name`` (``"softplus"``, ...) at every element of ``x``, as float64; cached."""
    points = tuple(x.detach().cpu().double().flatten().tolist())
    return _reference(name, points, float(beta))
