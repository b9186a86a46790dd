"""The softplus family of :mod:`posheads.ops`: ``softplus``, its inverse and its log.

:func:`softplus`, :func:`softplus_inverse` and :func:`log_softplus` (the last two with
autograd functions that use the compiled kernels where they pay), :func:`linear_switch`,
and the guarded pieces of ``s(x)`` and ``log s(x)`` and their derivatives that the count
log-likelihoods of :mod:`posheads.ops.count_logprob` and the layers above reuse:
:func:`softplus_branches`, :func:`softplus_and_log` and :func:`softplus_derivatives`.
The numerical contract is documented in :mod:`posheads.ops`; the derivations are in
``docs/softplus.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _compile
from ._shared import check_link_args, compute_dtype, run_with_grad, saved_grad, wants_grad

__all__ = [
    "linear_switch",
    "log_softplus",
    "softplus",
    "softplus_and_log",
    "softplus_branches",
    "softplus_derivatives",
    "softplus_inverse",
]

# z beyond which log1p(exp(z)) rounds to z, as exp(-z) is below half an ulp of z (33.3 in
# float64, 14.7 in float32, 6.3 in float16 and 4.2 in bfloat16), rounded up with a margin.
_EXACT = {torch.float64: 36.0, torch.float32: 16.0, torch.float16: 8.0, torch.bfloat16: 8.0}
# Cap of the switch: exp(z) is finite below it in the dtype the kernel computes in
# (float16 and bfloat16 are computed in float32).
_NO_OVERFLOW = {torch.float64: 700.0}
_DEFAULT_NO_OVERFLOW = 80.0
# Below z = -20 the two-term expansion log s = z - log(beta) - exp(z)/2 is exact to
# working precision (the next term, 5 exp(2z)/24, is < 1e-18), and it keeps log s
# finite where exp(z) underflows.
_ASYMPTOTIC = -20.0


def linear_switch(dtype: torch.dtype, threshold: float = 20.0) -> float:
    """Return the ``z = beta * x`` above which softplus is computed as ``x``.

    Parameters
    ----------
    dtype : torch.dtype
        Floating dtype of the input.
    threshold : float
        The requested threshold (as in ``torch.nn.functional.softplus``).

    Returns
    -------
    float
        ``threshold`` raised to the point where the linear branch is exact in
        ``dtype`` and capped where ``exp(z)`` would overflow.
    """
    exact = _EXACT.get(dtype, 16.0)
    return min(max(float(threshold), exact), _NO_OVERFLOW.get(dtype, _DEFAULT_NO_OVERFLOW))


def softplus_branches(x: torch.Tensor, beta: float, switch: float):
    """Pieces of the softplus family shared by forward and backward passes.

    Every branch is evaluated on an input masked into its own safe range, so that
    autograd through these expressions (double backward) never meets ``inf * 0``.

    Parameters
    ----------
    x : Tensor, shape ``(...)``
        Input, in the floating dtype to compute in.
    beta : float
        Softness, ``> 0``.
    switch : float
        ``z = beta * x`` above which the linear branch is used: a value of
        :func:`linear_switch`.

    Returns
    -------
    s, log_s, sig, dlog : Tensor, shape ``(...)``
        ``s(x)``, ``log s(x)``, ``s'(x) = sigmoid(z)`` and ``d log s / dx``.
    """
    z = x * beta if beta != 1.0 else x
    if beta > 1.0:
        # beta * x overflows to -inf for a finite x < -max / beta; unclamped, log s would
        # be -inf there and y * log s = 0 * -inf = NaN in the log-likelihoods at y = 0.
        # Clamped, log s saturates at -max. (beta <= 1 cannot overflow.)
        z = z.clamp(min=-torch.finfo(z.dtype).max)
    lin = z > switch
    zc = torch.where(lin, torch.zeros_like(z), z)  # z <= switch: exp(zc) is finite
    u = torch.exp(zc)
    l1p = torch.log1p(u)  # beta * s on the smooth branch, > 0 unless u underflows
    tiny = zc < _ASYMPTOTIC
    l1p_safe = torch.where(tiny, torch.ones_like(l1p), l1p)
    x_safe = torch.where(lin, x, torch.ones_like(x))  # x > 0 on the linear branch
    log_beta = math.log(beta)

    s = torch.where(lin, x, l1p / beta if beta != 1.0 else l1p)
    log_s_smooth = torch.where(tiny, zc - 0.5 * u, torch.log(l1p_safe)) - log_beta
    log_s = torch.where(lin, torch.log(x_safe), log_s_smooth)
    sig_smooth = torch.sigmoid(zc)
    sig = torch.where(lin, torch.ones_like(x), sig_smooth)
    # d log s / dx = beta * sigmoid(z) / log1p(exp(z)) -> beta * (1 - exp(z)/2) as z -> -inf
    rho = torch.where(tiny, 1.0 - 0.5 * u, sig_smooth / l1p_safe)
    dlog = torch.where(lin, 1.0 / x_safe, beta * rho)
    return s, log_s, sig, dlog


def softplus_and_log(x: torch.Tensor, beta: float, switch: float):
    """``s(x)`` and ``log s(x)`` in a few kernels, as in the plain composition.

    ``log(softplus(x))`` is accurate wherever ``softplus(x)`` is a normal float; only
    where ``exp(beta * x)`` has underflowed below that (``x`` below about -87 in float32,
    -708 in float64) does it need the asymptotic branch of :func:`softplus_branches`.
    Not safe for double backward (use :func:`softplus_branches` under ``create_graph``).

    Parameters
    ----------
    x : Tensor, shape ``(...)``
    beta, switch : float
        As in :func:`softplus_branches`.

    Returns
    -------
    s, log_s : Tensor, shape ``(...)``
    """
    s = F.softplus(x, beta=beta, threshold=switch)
    if bool((s < torch.finfo(s.dtype).tiny).any()):
        return softplus_branches(x, beta, switch)[:2]
    return s, torch.log(s)


def softplus_derivatives(x: torch.Tensor, beta: float, switch: float, need_log: bool = True):
    """``s``, ``log s`` (or None), ``sigmoid(beta * x)`` and ``d log s / dx`` for a backward.

    Under ``create_graph`` (double backward) every branch must be safe to differentiate,
    so :func:`softplus_branches` is used; otherwise the plain forms, which are exact
    wherever ``s`` is a normal float (on the linear branch ``sigmoid`` differs from the
    exact 1 by less than ``exp(-16)``, an ulp in float32).

    Parameters
    ----------
    x : Tensor, shape ``(...)``
    beta, switch : float
        As in :func:`softplus_branches`.
    need_log : bool
        Whether ``log s`` is needed; without it the plain path returns None in its place
        (the guarded path always returns it).

    Returns
    -------
    s, log_s, sig, dlog : Tensor, shape ``(...)``
        ``log_s`` may be None (see ``need_log``).
    """
    if torch.is_grad_enabled():
        return softplus_branches(x, beta, switch)
    s = F.softplus(x, beta=beta, threshold=switch)
    if bool((s < torch.finfo(s.dtype).tiny).any()):
        return softplus_branches(x, beta, switch)
    sig = torch.sigmoid(x * beta if beta != 1.0 else x)
    return s, torch.log(s) if need_log else None, sig, sig / s


def softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    """Softplus ``log(1 + exp(beta * x)) / beta``, continuous and non-decreasing.

    Parameters
    ----------
    x : Tensor, shape ``(...)``
        Input.
    beta : float
        Softness, ``> 0``; larger is closer to ReLU.
    threshold : float
        ``beta * x`` above which the linear branch ``x`` may be used, as in
        ``torch.nn.functional.softplus``; it is raised to where that branch is exact
        in the dtype (see :mod:`posheads.ops` for where this differs from torch).

    Returns
    -------
    Tensor, shape ``(...)``
        Positive values, same dtype and device as ``x``.

    Examples
    --------
    >>> softplus(torch.tensor([-800.0, 0.0, 800.0], dtype=torch.float64))
    tensor([0.0000, 0.6931, 800.0000], dtype=torch.float64)
    """
    check_link_args(beta, threshold)
    return F.softplus(x, beta=beta, threshold=linear_switch(x.dtype, threshold))


class _SoftplusInverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, beta, switch, big, with_grad):
        ctx.save_for_backward(y)
        ctx.beta, ctx.switch, ctx.big = beta, switch, big
        args = (y, beta, switch, math.log(beta), big)
        out = run_with_grad(ctx, "softplus_inverse", *args, with_grad=with_grad)
        return _inverse_value(y, beta, switch) if out is None else out

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if not torch.is_grad_enabled():  # not under create_graph: nothing to differentiate
            g = saved_grad(ctx, grad)
            if g is None:
                g = _compile.run("softplus_inverse_grad", y, grad, ctx.beta, ctx.switch, ctx.big)
            if g is not None:
                return g, None, None, None, None
        d = _inverse_grad(y, ctx.beta, ctx.switch, ctx.big)
        return grad * d, None, None, None, None


def _inverse_value(y, beta, switch):
    z = y * beta if beta != 1.0 else y
    # -expm1(-z) is z for tiny z (no cancellation) and 1 for large z (no overflow).
    smooth = torch.log(-torch.expm1(-z))
    if beta != 1.0:
        # For the tiniest y, beta * y is sub-normal (rounded coarsely) or, for beta < 1,
        # zero, which would give -inf for a positive y. There -expm1(-z) = beta * y to
        # working precision: take its log as log(y) + log(beta). (y <= 0 still gives -inf
        # / NaN.)
        tiny = torch.finfo(z.dtype).tiny
        smooth = torch.where(z < tiny, torch.log(y) + math.log(beta), smooth)
        smooth = smooth / beta
    return torch.where(z > switch, y, y + smooth)


def _inverse_grad(y, beta, switch, big):
    z = y * beta if beta != 1.0 else y
    lin = z > switch
    z_safe = torch.where(lin, torch.ones_like(z), z)
    # d/dy = 1 / sigmoid(beta * s^-1(y)) = 1 / (1 - exp(-z)); it exceeds the largest
    # float only for tiny y, where it is clamped to stay finite. ``big`` is the largest
    # float of the *input* dtype, not of the compute dtype: a float16 (bfloat16) gradient
    # clamped at float32's max would be inf once cast back, for sub-normal y.
    d = torch.reciprocal(-torch.expm1(-z_safe)).clamp(max=big)
    return torch.where(lin, torch.ones_like(y), d)


def softplus_inverse(y: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    """Inverse of :func:`softplus`: ``y + log(-expm1(-beta * y)) / beta``.

    Exact to a few ulps for round trips on both sides of the linear switch. Tends to
    ``log(beta * y) / beta`` for tiny ``y`` and to ``y`` for large ``y``.

    Parameters
    ----------
    y : Tensor, shape ``(...)``
        Positive values. Out of domain, torch's conventions: ``-inf`` at ``y = 0``,
        NaN for ``y < 0``.
    beta, threshold : float
        As in :func:`softplus`.

    Returns
    -------
    Tensor, shape ``(...)``

    Examples
    --------
    >>> softplus_inverse(torch.tensor([1e-30, 0.6931471805599453, 100.0], dtype=torch.float64))
    tensor([-69.0776,   0.0000, 100.0000], dtype=torch.float64)
    """
    check_link_args(beta, threshold)
    compute = compute_dtype(y)
    # An integer y gives a floating result (as torch.log does): casting back to its
    # dtype would truncate it.
    dtype = y.dtype if y.is_floating_point() else compute
    switch = linear_switch(dtype, threshold)
    big = torch.finfo(dtype).max
    y_c = y.to(compute)
    out = _SoftplusInverse.apply(y_c, float(beta), switch, big, wants_grad(y_c))
    return out.to(dtype)


class _LogSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta, switch, with_grad):
        ctx.save_for_backward(x)
        ctx.beta, ctx.switch = beta, switch
        args = (x, beta, switch, math.log(beta))
        out = run_with_grad(ctx, "log_softplus", *args, with_grad=with_grad)
        return softplus_and_log(x, beta, switch)[1] if out is None else out

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if not torch.is_grad_enabled():
            g = saved_grad(ctx, grad)
            if g is None:
                g = _compile.run("log_softplus_grad", x, grad, ctx.beta, ctx.switch)
            if g is not None:
                return g, None, None, None
        dlog = softplus_derivatives(x, ctx.beta, ctx.switch, need_log=False)[3]
        return grad * dlog, None, None, None


def log_softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    """``log(softplus(x))``, which tends to ``x - log(beta)`` instead of ``-inf``.

    Parameters
    ----------
    x : Tensor, shape ``(...)``
    beta, threshold : float
        As in :func:`softplus`.

    Returns
    -------
    Tensor, shape ``(...)``
        Finite for every finite ``x``; the gradient tends to ``beta`` as ``x -> -inf``.

    Examples
    --------
    >>> log_softplus(torch.tensor([-1000.0, 0.0]))
    tensor([-1000.0000,    -0.3665])
    """
    check_link_args(beta, threshold)
    compute = compute_dtype(x)
    # An integer x gives a floating result, as in softplus_inverse.
    dtype = x.dtype if x.is_floating_point() else compute
    x_c = x.to(compute)
    out = _LogSoftplus.apply(x_c, float(beta), linear_switch(dtype, threshold), wants_grad(x_c))
    return out.to(dtype)
