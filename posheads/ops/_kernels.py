"""The compiled kernels of :mod:`posheads.ops`, as plain torch functions.

Each kernel is traced by ``torch.compile`` (inductor: C++ on the CPU, Triton on CUDA) and
run by :func:`posheads.ops._compile.run`; none is called eagerly by the library. They
live apart from the dispatch so that the numerics (the series, the bit-level log, the
table lookup) read on their own. The derivations are in ``docs/softplus.md`` (the
softplus pieces, the series and the log) and ``docs/count-likelihoods.md`` (the Poisson
and NB2 terms and their derivatives).

Package-internal API: :data:`KERNELS` (kernel name -> function) and
:data:`COUNT_TABLE_SIZE` for the dispatch; the building blocks :func:`log1p_unit`,
:func:`log_normal`, :func:`one_minus_exp`, :func:`lgamma1p_counts`,
:func:`poisson_terms`, :func:`nb_logit` and :func:`sp_pair`, which the tests check
against mpmath and the benchmarks reuse. Nothing here is public.
"""

from __future__ import annotations

import math

import torch

# ----------------------------------------------------------------------------------------
# The kernels. Each is the eager fast path's formula, written so that every branch is
# selected elementwise; ``beta``, ``switch``, ``log_beta`` and ``big`` are Python floats.
# inductor evaluates both sides of every ``where`` for every element, so the cost of a
# kernel is the sum over its branches: each branch below reuses the transcendental
# functions of the others, and the slowest ones in the chain every element waits on
# (log1p, log; lgamma of whole counts) are replaced by arithmetic or a table where that
# keeps the accuracy (per-element costs are in benchmarks/README.md, "Ops").
#
# The ``*_and_grad`` kernels return the value and its derivative in one pass, for a
# forward whose input requires grad: the backward then only multiplies the saved
# derivative by the incoming gradient, in place, instead of recomputing the softplus
# pieces and allocating a new tensor.


def _normal(s):
    """Where ``s`` is a normal float: there ``log(s)`` and ``1 / s`` are accurate."""
    return s >= torch.finfo(s.dtype).tiny


# Terms of the series log1p(u) = 2 atanh(t) = 2 sum_k t**(2k + 1) / (2k + 1), t = u / (2 + u),
# used for 0 <= u <= 1 (t <= 1/3), where the first one left out is below 0.02 ulp:
# t**16 / 17 < 1.4e-9 relative in float32 (eps 1.2e-7), t**34 / 35 < 2e-18 in float64.
_LOG1P_TERMS = {torch.float32: 8, torch.float64: 17}


def log1p_unit(u):
    """``log1p(u)`` for ``0 <= u <= 1``: one division and a short series of multiply-adds.

    Sleef's vectorised ``log1p`` (inductor's) sits in the chain exp -> log1p -> log that
    every element of a softplus-link kernel waits on; this series is cheaper and keeps
    the accuracy (within 1.5 ulps of mpmath in float32 and float64, checked in
    ``tests/test_compiled.py``). The series in ``t**2 <= 1/9`` has positive terms, the
    leading ``2 t`` is added last, and the rounding of ``2 + u`` (exact by Fast2Sum, as
    ``u <= 2``) is corrected to first order: ``t (1 - corr / (2 + u))``, with
    ``1 / (2 + u)`` taken as 0.4 (it lies in [1/3, 1/2]; the correction is below an ulp,
    so 20% of it is far below one).
    """
    d = 2.0 + u
    corr = (2.0 - d) + u  # 2 + u - d exactly
    t = u / d
    t2 = t * t
    terms = _LOG1P_TERMS[u.dtype]
    q = t2 * (1.0 / (2 * terms - 1)) + 1.0 / (2 * terms - 3)
    for k in range(terms - 3, 0, -1):
        q = q * t2 + 1.0 / (2 * k + 1)
    w = 2.0 * t
    return w + (w * (t2 * q) - (0.8 * t) * corr)


# For log_normal, per dtype: the integer type of its bits, the bits of sqrt(1/2) and of
# 1, the mantissa bits, ln 2 split so that k * hi is exact for every exponent k (fdlibm's
# and musl's constants), and the terms of the atanh series, whose first one left out,
# t**(2n) / (2n + 1) with t**2 <= 0.0295, is below 0.05 ulp.
_LOG_CONSTANTS = {
    torch.float32: (torch.int32, 0x3F3504F3, 0x3F800000, 23, 6.9313812256e-01, 9.0580006145e-06, 5),
    torch.float64: (
        torch.int64, 0x3FE6A09E667F3BCD, 0x3FF0000000000000, 52,
        6.93147180369123816490e-01, 1.90821492927058770002e-10, 11,
    ),
}


def log_normal(s):
    """``log(s)`` for a positive *normal* float ``s`` (NaN stays NaN; other values give
    garbage, to be masked out), within 1.5 ulps of mpmath (checked in the tests).

    Sleef's vectorised log is the slowest link at the end of the chain exp -> log1p ->
    log; this one is cheaper there: ``s = 2**k x`` with ``x`` in
    ``[sqrt(1/2), sqrt(2))`` read from the bits (as musl's logf), then
    ``log x = 2 atanh(t)``, ``t = (x - 1) / (x + 1)``, by the series of
    :func:`log1p_unit` (with the same first-order correction of the rounding of
    ``x + 1 = 2 + f``, ``1 / (2 + f)`` in [0.41, 0.59] taken as 1/2), and ``k ln 2`` added
    in two parts. CPU only (inductor's C++ vectorises the bit operations); CUDA keeps its
    own log.
    """
    if s.device.type != "cpu":
        return torch.log(s)
    itype, sqrt_half, one, mantissa, ln2_hi, ln2_lo, terms = _LOG_CONSTANTS[s.dtype]
    bits = s.view(itype) + (one - sqrt_half)
    k = ((bits >> mantissa) - (one >> mantissa)).to(s.dtype)
    x = ((bits & ((1 << mantissa) - 1)) + sqrt_half).view(s.dtype)
    f = x - 1.0  # exact (Sterbenz)
    d = 2.0 + f
    corr = (2.0 - d) + f  # 2 + f - d exactly
    t = f / d
    t2 = t * t
    q = t2 * (1.0 / (2 * terms - 1)) + 1.0 / (2 * terms - 3)
    for j in range(terms - 3, 0, -1):
        q = q * t2 + 1.0 / (2 * j + 1)
    w = 2.0 * t
    # s - s: 0, or NaN for a NaN s, whose bits gave a finite number above
    return k * ln2_hi + (w + (w * (t2 * q) - t * corr + k * ln2_lo)) + (s - s)


def _pieces(x, beta, switch, log_beta):
    """``z = beta x``, ``u = exp(-|z|)``, where ``s`` is a normal float, ``s(x)`` and
    ``log s(x)``, from one exp and one log per element (and an atanh series)."""
    # As in softplus_branches: beta * x overflows to -inf for x < -max / beta when beta > 1
    # (unconditional here, so that beta stays a kernel argument, not a guard).
    z = (x * beta).clamp(min=-torch.finfo(x.dtype).max)
    linear = z > switch  # torch's softplus kernel: linear above the switch
    u = torch.exp(-z.abs())  # in (0, 1]: exp(z) below 0, exp(-z) above; never overflows
    # softplus(z) = max(z, 0) + log1p(exp(-|z|)), whose two terms never cancel
    s = torch.where(linear, x, (torch.clamp(z, min=0.0) + log1p_unit(u)) / beta)
    normal = _normal(s)
    # Where s underflows (z < -87 in float32), log s = z - log(beta) - exp(z) / 2.
    log_s = torch.where(normal, log_normal(s), z - 0.5 * u - log_beta)
    return z, u, normal, s, log_s


def _slopes(z, u, normal, s, beta):
    """``sigmoid(z)`` and ``d log s / dx = sigmoid(z) / s`` from the ``u`` of :func:`_pieces`.

    ``sigmoid(z) = 1 / (1 + u)`` above 0 and ``u / (1 + u)`` below (inductor does not share
    the exp inside ``sigmoid``). ``d log s / dx`` tends to ``beta (1 - exp(z) / 2)`` where
    ``s`` underflows.
    """
    sig = torch.where(z > 0, torch.ones_like(u), u) / (1.0 + u)
    return sig, torch.where(normal, sig / s, beta * (1.0 - 0.5 * u))


def sp_pair(v):
    """``(softplus(v), softplus(-v))`` of the NB logit from one exp and one log1p, as
    ``max(+-v, 0) + log1p(exp(-|v|))``: no overflow, so no linear switch is needed (beyond
    ``|v| = 36`` the log1p is below half an ulp of ``|v|`` in float64, the switch the
    eager path of :mod:`posheads.ops.count_logprob` uses)."""
    tail = log1p_unit(torch.exp(-v.abs()))
    return torch.clamp(v, min=0.0) + tail, torch.clamp(-v, min=0.0) + tail


# Terms of the Taylor series of (1 - exp(-z)) / z = sum_k (-z)**k / (k + 1)! used for
# |z| <= 1/2, where the first one left out is below 0.01 ulp: z**9 / 10! < 6e-10 relative
# in float32 (eps 1.2e-7), z**16 / 17! < 5e-20 in float64 (eps 2.2e-16). Float16 and
# bfloat16 are computed in float32 (see compute_dtype in posheads/ops/_shared.py).
_EXPM1_TERMS = {torch.float32: 9, torch.float64: 16}


def one_minus_exp(z):
    """``-expm1(-z) = 1 - exp(-z)``, accurate for tiny ``z``, from one exp.

    inductor's vectorised C++ ``expm1`` is ``exp(x) - 1``, which cancels for small ``x``
    (it gives ``-expm1(-1e-30) = 0`` in float32). For ``|z| > 1/2``, ``1 - exp(-z)``
    loses at most ``exp(-1/2) / (1 - exp(-1/2)) = 1.6`` ulps to cancellation; for
    ``|z| <= 1/2``, ``z`` times the Taylor series of ``(1 - exp(-z)) / z`` by Horner's
    rule (multiply-adds, which vectorise; its terms shrink by at least half each, so the
    rounding stays below 2 ulps), which is exact down to sub-normal and zero ``z``.
    """
    coefficients = [(-1.0) ** k / math.factorial(k + 1) for k in range(_EXPM1_TERMS[z.dtype])]
    q = z * coefficients[-1] + coefficients[-2]
    for c in reversed(coefficients[:-2]):
        q = q * z + c
    return torch.where(z.abs() > 0.5, 1.0 - torch.exp(-z), z * q)


def _inverse_pieces(y, beta, switch, log_beta):
    """``z = beta y``, ``-expm1(-z)`` and ``s^-1(y)``: one exp and one log per element."""
    z = y * beta
    m = one_minus_exp(z)  # a normal float wherever z is
    # As in the eager softplus_inverse: where beta * y is sub-normal (or zero, for a
    # positive y and beta < 1), take log(beta * y) as log(y) + log(beta): the log of y
    # there, of m elsewhere, so that one log serves both branches. y is scaled by
    # 2**digits there (exactly), which makes a sub-normal y normal for log_normal.
    fi = torch.finfo(z.dtype)
    tiny = z < fi.tiny
    digits = 1 - round(math.log2(fi.eps))  # 24, 53
    arg = torch.where(tiny, y * 2.0**digits, m)
    log_m = log_normal(arg)
    # y <= 0 (reached only through tiny): -inf at 0, NaN below, as torch.log gives
    log_m = torch.where(arg > 0, log_m, torch.where(arg == 0, -math.inf, math.nan))
    log_m = torch.where(tiny, log_m + (log_beta - digits * math.log(2.0)), log_m)
    return z, m, torch.where(z > switch, y, y + log_m / beta)


def _inverse_slope(z, m, switch, big):
    """``d s^-1 / dy = 1 / (1 - exp(-z))``, clamped to stay finite for tiny ``y``."""
    return torch.where(z > switch, torch.ones_like(z), torch.reciprocal(m).clamp(max=big))


def softplus_inverse(y, beta, switch, log_beta, big):
    # big: unused, as in softplus_inverse_and_grad, whose arguments the caller passes
    return _inverse_pieces(y, beta, switch, log_beta)[2]


def softplus_inverse_and_grad(y, beta, switch, log_beta, big):
    z, m, out = _inverse_pieces(y, beta, switch, log_beta)
    return out, _inverse_slope(z, m, switch, big)


def softplus_inverse_grad(y, grad, beta, switch, big):
    z = y * beta
    return grad * _inverse_slope(z, one_minus_exp(z), switch, big)


def log_softplus(x, beta, switch, log_beta):
    return _pieces(x, beta, switch, log_beta)[4]


def log_softplus_and_grad(x, beta, switch, log_beta):
    z, u, normal, s, log_s = _pieces(x, beta, switch, log_beta)
    return log_s, _slopes(z, u, normal, s, beta)[1]


def log_softplus_grad(x, grad, beta, switch):
    z, u, normal, s, _ = _pieces(x, beta, switch, 0.0)  # log s: dead code, dropped
    return grad * _slopes(z, u, normal, s, beta)[1]


def poisson_terms(eta, y, exposure, beta, switch, log_beta):
    """``y log mu - mu`` and its derivative in ``eta``, ``sigmoid(z) (y / s - t)``, written
    as ``y dlog - t sigmoid(z)`` (the ratio ``sigmoid / s`` first: ``y / s`` alone can
    overflow). A kernel that uses one of the two drops the other."""
    z, u, normal, s, log_mu = _pieces(eta, beta, switch, log_beta)
    sig, dlog = _slopes(z, u, normal, s, beta)
    if exposure is not None:
        log_mu = log_mu + torch.log(exposure)
        s = s * exposure
        sig = sig * exposure
    return log_mu * y - s, dlog * y - sig


def poisson(eta, y, exposure, beta, switch, log_beta):
    value = poisson_terms(eta, y, exposure, beta, switch, log_beta)[0]
    return value - torch.lgamma(y + 1.0)


def poisson_and_grad(eta, y, exposure, beta, switch, log_beta):
    value, slope = poisson_terms(eta, y, exposure, beta, switch, log_beta)
    return value - torch.lgamma(y + 1.0), slope


def poisson_grad_eta(eta, y, exposure, grad, beta, switch):
    return poisson_terms(eta, y, exposure, beta, switch, 0.0)[1] * grad


# lgamma(k + 1) of whole counts k below this come from a table; torch and inductor
# evaluate lgamma one element at a time on the CPU, at several times the cost of the
# rest of the Poisson log-probability.
COUNT_TABLE_SIZE = 4096
_HALF_LOG_2PI = 0.9189385332046727


def lgamma1p_counts(y, table, small):
    """``lgamma(y + 1)`` of whole counts ``y >= 0``: the table below its size, above it
    Stirling's series, whose first omitted term there is below ``1e-27``. ``small``:
    every count is below the table's size (the series is then not evaluated at all)."""
    size = table.shape[0]
    # In [0, size) for every float y, NaN and infinities included (the comparisons are
    # false for NaN), so no bounds check is needed: count_table has checked y, but y could
    # change behind the version counter's back (through a numpy view, say).
    index = torch.where((y >= 0.0) & (y < size), y, 0.0).to(torch.int64)
    if small:
        return table[index]
    z = torch.clamp(y, min=float(size)) + 1.0  # finite for the rows the table serves
    w = z.reciprocal()
    w2 = w * w
    series = w * (1.0 / 12.0 - w2 * (1.0 / 360.0 - w2 * (1.0 / 1260.0)))
    stirling = (z - 0.5) * torch.log(z) - z + _HALF_LOG_2PI + series
    return torch.where(y < size, table[index], stirling)


def poisson_counts(eta, y, exposure, beta, switch, log_beta, small, table):
    """:func:`poisson` for whole counts ``y`` (see :func:`posheads.ops._compile.count_table`)."""
    value = poisson_terms(eta, y, exposure, beta, switch, log_beta)[0]
    return value - lgamma1p_counts(y, table, small)


def poisson_counts_and_grad(eta, y, exposure, beta, switch, log_beta, small, table):
    value, slope = poisson_terms(eta, y, exposure, beta, switch, log_beta)
    return value - lgamma1p_counts(y, table, small), slope


def whole_counts(y):
    """Whether every entry of ``y`` is a whole number >= 0, and the largest entry (one
    fused read of ``y``)."""
    return ((y >= 0) & (y == torch.floor(y))).all(), y.amax()


def nb_logit(eta, r, exposure, beta, switch, log_beta):
    """The softplus pieces of ``eta`` and ``d = log(mu) - log(r)``."""
    z, u, normal, s, log_mu = _pieces(eta, beta, switch, log_beta)
    if exposure is not None:
        log_mu = log_mu + torch.log(exposure)
    return (z, u, normal, s), log_mu - torch.log(r)


def negative_binomial(eta, y, r, exposure, beta, switch, log_beta, constant=True):
    # constant: whether to include the data-only -lgamma(y + 1) (a Python bool)
    d = nb_logit(eta, r, exposure, beta, switch, log_beta)[1]
    sp_d, sp_minus_d = sp_pair(d)
    out = y * sp_minus_d + r * sp_d
    out = out + torch.lgamma(y + 1.0) + torch.lgamma(r) if constant else out + torch.lgamma(r)
    return -(out - torch.lgamma(y + r))


def _nb_slope(eta, y, r, exposure, beta, switch, log_beta):
    """``dl/dd = y - (y + r) sigmoid(d)`` (``= y q - r p``, ``p = mu / (r + mu)``), ``d``
    and ``d log s / d eta``."""
    pieces, d = nb_logit(eta, r, exposure, beta, switch, log_beta)
    dl_dd = y - (y + r) * torch.sigmoid(d)
    return dl_dd, d, _slopes(*pieces, beta)[1]


def negative_binomial_grad_eta(eta, y, r, exposure, grad, beta, switch, log_beta):
    dl_dd, _, dlog = _nb_slope(eta, y, r, exposure, beta, switch, log_beta)
    return dl_dd * dlog * grad


def negative_binomial_grad_eta_r(eta, y, r, exposure, grad, beta, switch, log_beta):
    dl_dd, d, dlog = _nb_slope(eta, y, r, exposure, beta, switch, log_beta)
    dr = torch.digamma(y + r) - torch.digamma(r) - sp_pair(d)[0] - dl_dd / r
    return dl_dd * dlog * grad, dr * grad


KERNELS = {
    f.__name__: f
    for f in (
        softplus_inverse,
        softplus_inverse_and_grad,
        softplus_inverse_grad,
        log_softplus,
        log_softplus_and_grad,
        log_softplus_grad,
        poisson,
        poisson_and_grad,
        poisson_counts,
        poisson_counts_and_grad,
        poisson_grad_eta,
        whole_counts,
        negative_binomial,
        negative_binomial_grad_eta,
        negative_binomial_grad_eta_r,
    )
}
