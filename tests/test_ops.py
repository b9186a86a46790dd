"""Tests of :mod:`posheads.ops`.

What is checked, and against what:

* values against ``mpmath`` at 50 digits (``tests/_reference.py``) on grids that span the
  whole finite range of each dtype, for several ``beta`` and thresholds;
* every finite float16 and bfloat16 value: finite, non-decreasing, within one ulp of a
  float64 evaluation of the textbook formula, and round trips;
* the linear switch: non-decreasing on ulp-dense grids around it, equal to torch's
  softplus except in the documented window, where torch's own softplus drops;
* hypothesis properties over the float32 and float64 ranges;
* the contract of DESIGN.md: finite values and gradients for every finite input,
  argument checks, out-of-domain values, asymptotes, broadcasting, dtypes and devices;
* gradients: ``gradcheck``/``gradgradcheck``, and agreement of the fused log-likelihoods
  with ``torch.distributions`` (values and autograd gradients) and with mpmath.

Errors are measured in ulps of the exact value in the dtype under test. Where a test
allows more, the extra term is the conditioning of the function, written next to it.
"""

from __future__ import annotations

import math
import platform
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from posheads import ops

from ._reference import (
    FLOAT_DTYPES,
    all_finite,
    devices,
    eps,
    magnitude_grid,
    mp_nb_log_prob,
    mp_poisson_log_prob,
    mp_softplus,
    mpc,
    reference,
    ulp,
)

F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
HALF = (F16, BF16)
INT_OF = {F64: torch.int64, F32: torch.int32}

# Allowed error in ulps of the exact value. float64/float32: exp, log1p, log and the
# division by beta are each within 1-2 ulps in glibc, Sleef (CPU vector code) and CUDA's
# libdevice, and the reference is rounded once more. float16/bfloat16 are computed in
# float32 and rounded once: the float32 error is ~2^-13 of their ulp, so the result is
# the correctly rounded value or, next to a rounding midpoint, its neighbour.
ULPS = {F64: 4, F32: 4, F16: 1, BF16: 1}


def compute_dtype(dtype):
    return F32 if dtype in HALF else dtype


def exact_scale(beta):
    """Whether ``beta * x`` is exact (beta a power of two): no rounding of ``z`` to allow for."""
    return math.frexp(beta)[0] == 0.5


def z_rounding(x, beta, dtype):
    """Relative error that rounding ``z = beta * x`` puts into ``softplus``, as float64 array.

    ``z`` is rounded by ``eps/2`` (relative) in the compute dtype, and softplus's
    condition number ``z sigmoid(z) / log1p(exp(z))`` is at most ``max(1, -z)``.
    """
    if exact_scale(beta):
        return np.zeros_like(x)
    with np.errstate(over="ignore"):
        z = beta * x
    # z is clamped at -max (log s saturates there): the bound stays finite.
    return 0.5 * eps(compute_dtype(dtype)) * np.clip(-z, 1.0, torch.finfo(F64).max)


def as_np(t):
    return t.detach().cpu().double().numpy()


def assert_within(got, ref, tol, x, what):
    """``|got - ref| <= tol`` elementwise (NaN fails); reports the worst points."""
    got = as_np(got)
    err = np.abs(got - ref)
    bad = ~(err <= tol)
    if bad.any():
        idx = np.flatnonzero(bad)
        worst = idx[np.argsort(-(err[idx] / tol[idx]))[:5]]
        rows = [
            f"x={x[i]!r} got={got[i]!r} ref={ref[i]!r} err/tol={err[i] / tol[i]:.3g}" for i in worst
        ]
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} points off\n" + "\n".join(rows))


def neighbours(x0, dtype, n):
    """The ``2n`` floats of ``dtype`` nearest to ``x0`` (float32/float64), in increasing order."""
    bits = torch.tensor([x0], dtype=dtype).view(INT_OF[dtype])
    return (bits + torch.arange(-n, n, dtype=INT_OF[dtype])).view(dtype).sort().values


def grad_of(out, x):
    """``d out / d x`` with unit upstream gradients (no ``sum()`` that could overflow)."""
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return g


def assert_saturated(got, in_range, dtype):
    """Where the exact value is below ``-max`` of ``dtype``, ``got`` is ``-max`` or ``-inf``.

    That happens to ``log s(x) ~ beta x`` for beta > 1 and ``x < -max / beta``: float32 and
    float64 saturate at ``-max`` (``beta x`` is clamped), float16 and bfloat16 are
    computed in float32 and round to ``-inf`` when cast back.
    """
    out = as_np(got)[~in_range]
    assert (out <= -torch.finfo(dtype).max).all(), out


def to_dtype_range(ref, dtype):
    """``ref`` rounded to ``dtype``, and where that is finite."""
    rounded = torch.as_tensor(ref).to(dtype)
    return as_np(rounded), torch.isfinite(rounded).numpy()


# ---------------------------------------------------------------------------------------
# Arguments and the switch point
# ---------------------------------------------------------------------------------------

_X = torch.tensor([-1.0, 0.5, 3.0], dtype=F64)
CALLS = {
    "softplus": lambda **kw: ops.softplus(_X, **kw),
    "softplus_inverse": lambda **kw: ops.softplus_inverse(_X.abs(), **kw),
    "log_softplus": lambda **kw: ops.log_softplus(_X, **kw),
    "poisson": lambda **kw: ops.poisson_softplus_log_prob(_X, torch.ones(3), **kw),
    "negative_binomial": lambda **kw: ops.negative_binomial_softplus_log_prob(
        _X, torch.ones(3), 2.0, **kw
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_invalid_beta_raises(name, beta):
    with pytest.raises(ValueError, match="beta"):
        CALLS[name](beta=beta)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("threshold", [0.0, -20.0, math.nan])
def test_invalid_threshold_raises(name, threshold):
    with pytest.raises(ValueError, match="threshold"):
        CALLS[name](threshold=threshold)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_infinite_threshold_is_capped(name):
    assert torch.isfinite(CALLS[name](threshold=math.inf)).all()


def test_linear_switch_values():
    # Raised to where the linear branch is exact, capped where exp(z) would overflow.
    assert ops.linear_switch(F64) == 36.0
    assert ops.linear_switch(F32) == 20.0
    assert ops.linear_switch(F32, 5.0) == 16.0
    assert ops.linear_switch(F16) == ops.linear_switch(BF16) == 20.0
    assert ops.linear_switch(F16, 1.0) == ops.linear_switch(BF16, 1.0) == 8.0
    assert ops.linear_switch(F64, 50.0) == 50.0
    assert ops.linear_switch(F64, 1e6) == 700.0
    for dtype in (F32, F16, BF16):
        assert ops.linear_switch(dtype, 1e6) == 80.0
    for dtype in FLOAT_DTYPES:
        # The linear branch is exact from the switch on: exp(-z) < half an ulp of z.
        z = ops.linear_switch(dtype, 0.5)
        assert math.exp(-z) < 0.5 * eps(dtype) * z / 2


# ---------------------------------------------------------------------------------------
# Values against mpmath over the whole float range
# ---------------------------------------------------------------------------------------

# (dtype, beta, log-spaced points per sign): beta = 1 in every dtype; other betas, on a
# coarser grid, where the op is computed in the input's own dtype.
UNARY_CASES = [(dtype, 1.0, {F64: 150, F32: 100}.get(dtype, 60)) for dtype in FLOAT_DTYPES]
UNARY_CASES += [(dtype, beta, 50) for dtype in (F64, F32) for beta in (0.5, 2.0, 3.0)]
UNARY_IDS = [f"{str(d)[6:]}-beta{b}" for d, b, _ in UNARY_CASES]
# 20 is the default; 5 is below every z_exact (a window where posheads is smooth and
# torch is not); 50 is above every z_exact (the smooth branch runs further).
THRESHOLDS = [20.0, 5.0, 50.0]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize(("dtype", "beta", "per_sign"), UNARY_CASES, ids=UNARY_IDS)
def test_softplus_matches_mpmath(dtype, beta, per_sign, threshold, device):
    x = magnitude_grid(dtype, per_sign, beta)
    ref = reference("softplus", x, beta)
    assert to_dtype_range(ref, dtype)[1].all()  # 0 <= s(x) <= max(x, 0) + log(2) / beta
    got = ops.softplus(x.to(device), beta=beta, threshold=threshold)
    xs = as_np(x)
    tol = ULPS[dtype] * ulp(ref, dtype) + z_rounding(xs, beta, dtype) * np.abs(ref)
    assert_within(got, ref, tol, xs, "softplus")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize(("dtype", "beta", "per_sign"), UNARY_CASES, ids=UNARY_IDS)
def test_log_softplus_matches_mpmath(dtype, beta, per_sign, threshold, device):
    x = magnitude_grid(dtype, per_sign, beta)
    ref = reference("log_softplus", x, beta)
    finite = to_dtype_range(ref, dtype)[1]
    got = ops.log_softplus(x.to(device), beta=beta, threshold=threshold)
    assert_saturated(got, finite, dtype)
    xs = as_np(x)[finite]
    ref = ref[finite]
    # Near the root of log s (s(x) = 1) relative precision is lost: there the error is
    # the relative error of s itself, a few eps of the compute dtype, in absolute terms.
    atol = 4 * eps(compute_dtype(dtype)) + z_rounding(xs, beta, dtype)
    tol = ULPS[dtype] * ulp(ref, dtype) + atol
    assert_within(got[torch.from_numpy(finite).to(device)], ref, tol, xs, "log_softplus")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize(("dtype", "beta", "per_sign"), UNARY_CASES, ids=UNARY_IDS)
def test_softplus_inverse_matches_mpmath(dtype, beta, per_sign, threshold, device):
    y = magnitude_grid(dtype, per_sign, beta)
    y = y[y > 0]
    ref = reference("softplus_inverse", y, beta)
    got = ops.softplus_inverse(y.to(device), beta=beta, threshold=threshold)
    ys = as_np(y)
    # x = y + log(-expm1(-beta y)) / beta: log's absolute error (a few eps) is divided by
    # beta, and near x = 0 the sum cancels, leaving a few eps of y in absolute terms.
    atol = 4 * eps(compute_dtype(dtype)) * (ys + 1.0 / beta)
    tol = ULPS[dtype] * ulp(ref, dtype) + atol
    assert_within(got, ref, tol, ys, "softplus_inverse")


# ---------------------------------------------------------------------------------------
# Every float16 and bfloat16 value
# ---------------------------------------------------------------------------------------


def textbook_softplus(x, beta):
    """float64 ``log(1 + exp(beta x)) / beta`` via ``logaddexp``; 2^-42 of a 16-bit ulp."""
    return torch.logaddexp(beta * x, torch.zeros_like(x)) / beta


def textbook_log_softplus(x, beta):
    """float64 ``log s(x)``; below ``z = -40`` the dropped term ``-exp(z)/2`` is < 3e-18."""
    z = beta * x
    log_l1p = torch.log(torch.logaddexp(z, torch.zeros_like(z)))
    return torch.where(z < -40, z, log_l1p) - math.log(beta)


def textbook_softplus_inverse(y, beta):
    """float64 ``log(expm1(beta y)) / beta``; above ``z = 40`` it is ``y`` to within e^-40."""
    z = beta * y
    return torch.where(z > 40, y, torch.log(torch.expm1(z)) / beta)


def exhaustive(dtype, device, positive=False):
    x = all_finite(dtype)
    if positive:
        x = x[x > 0]
    return x, x.to(device).requires_grad_()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_softplus_every_value(dtype, beta, device):
    x, xd = exhaustive(dtype, device)
    s = ops.softplus(xd, beta=beta)
    g = grad_of(s, xd)
    assert torch.isfinite(s).all() and (s >= 0).all()
    assert (s.diff() >= 0).all()  # x is sorted: s is non-decreasing
    assert torch.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()
    ref = as_np(textbook_softplus(x.double(), beta))
    assert_within(s, ref, ulp(ref, dtype), as_np(x), "softplus")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_log_softplus_every_value(dtype, beta, device):
    x, xd = exhaustive(dtype, device)
    out = ops.log_softplus(xd, beta=beta)
    g = grad_of(out, xd)
    ref, finite = to_dtype_range(textbook_log_softplus(x.double(), beta), dtype)
    # Finite wherever log s is within range: everywhere for beta <= 1; for beta > 1
    # not below x = -max / beta, where log s ~ beta x.
    assert finite.all() or beta > 1
    assert torch.isfinite(out[torch.from_numpy(finite).to(device)]).all()
    assert_saturated(out, finite, dtype)
    assert (out[1:] >= out[:-1]).all()  # not diff(): -inf - -inf is NaN
    assert torch.isfinite(g).all() and (g >= 0).all() and (g <= beta).all()
    ref = as_np(textbook_log_softplus(x.double(), beta))[finite]
    tol = ulp(ref, dtype) + 4 * eps(F32)  # + float32's error where log s ~ 0
    assert_within(out[torch.from_numpy(finite).to(device)], ref, tol, as_np(x)[finite], "log_s")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_softplus_inverse_every_value(dtype, beta, device):
    y, yd = exhaustive(dtype, device, positive=True)
    x = ops.softplus_inverse(yd, beta=beta)
    g = grad_of(x, yd)
    assert torch.isfinite(x).all() and (x.diff() >= 0).all()
    # dx/dy = 1 / sigmoid(beta x) >= 1, clamped to the dtype's max for the tiniest y.
    assert torch.isfinite(g).all() and (g >= 1).all()
    ref = as_np(textbook_softplus_inverse(y.double(), beta))
    ys = as_np(y)
    tol = ulp(ref, dtype) + 4 * eps(F32) * (ys + 1.0 / beta)
    assert_within(x, ref, tol, ys, "softplus_inverse")
    # y -> x -> y: the rounding of x moves s(x) by sigmoid(beta x) * ulp(x).
    back = ops.softplus(x.detach(), beta=beta)
    xs = as_np(x)
    sig = 1.0 / (1.0 + np.exp(-beta * xs))
    assert_within(back, ys, 2 * ulp(ys, dtype) + 2 * sig * ulp(xs, dtype), ys, "y round trip")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_round_trip_every_value(dtype, beta, device):
    x, _ = exhaustive(dtype, device)
    x = x.to(device)
    y = ops.softplus(x, beta=beta)
    # Invertible where y is a normal number: a sub-normal or zero y has lost the bits of x.
    keep = y >= torch.finfo(dtype).tiny
    x, y = x[keep], y[keep]
    back = ops.softplus_inverse(y, beta=beta)
    xs, ys = as_np(x), as_np(y)
    # The rounding of y maps back through dx/dy = 1 / sigmoid(beta x).
    sig = 1.0 / (1.0 + np.exp(-beta * xs))
    tol = 2 * ulp(xs, dtype) + 2 * ulp(ys, dtype) / sig
    assert_within(back, xs, tol, xs, "x round trip")


# ---------------------------------------------------------------------------------------
# The linear switch, and where posheads differs from torch
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("threshold", [1.0, 5.0, 20.0, 30.0, 50.0, 1e3])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.5, 3.0])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_monotone_across_switches(dtype, beta, threshold, device):
    # Dense in ulps around torch's switch, posheads' switch, and the asymptotic switch
    # of log_softplus (z = -20). float16 and bfloat16 are checked at every value above.
    centres = {threshold, ops.linear_switch(dtype, threshold), -20.0}
    x = torch.cat([neighbours(z / beta, dtype, 1500) for z in sorted(centres)]).to(device)
    for fn in (ops.softplus, ops.log_softplus):
        assert (fn(x, beta=beta, threshold=threshold).diff() >= 0).all(), fn.__name__
    y = x[x > 0]
    assert (ops.softplus_inverse(y, beta=beta, threshold=threshold).diff() >= 0).all()


@pytest.mark.parametrize("beta", [0.5, 0.1, 3.0])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_softplus_inverse_at_its_sub_normal_switch(dtype, beta):
    # Where beta * y is sub-normal (or 0), softplus_inverse takes log(beta y) as
    # log(y) + log(beta). Switching formulas can step back by one rounding, once: allow
    # a single drop of one ulp at y = tiny / beta, nothing more, nowhere else.
    y = neighbours(torch.finfo(dtype).tiny / beta, dtype, 3000)
    x = ops.softplus_inverse(y, beta=beta)
    drops = torch.nonzero(x.diff() < 0).flatten()
    assert drops.numel() <= 1
    for i in drops.tolist():
        assert x[i] - x[i + 1] <= ulp([x[i].item()], dtype)[0]
        z = y[i : i + 2] * beta  # rounded as the op rounds it
        assert z[0] < torch.finfo(dtype).tiny <= z[1]


@pytest.mark.parametrize("device", devices())
def test_torch_softplus_drops_at_20_in_float64(device):
    # Documents why posheads moves the switch: torch's float64 softplus is not monotone.
    x = torch.tensor([20.0, math.nextafter(20.0, math.inf)], dtype=F64, device=device)
    theirs = F.softplus(x)
    assert theirs[1] < theirs[0]
    assert math.isclose((theirs[0] - theirs[1]).item(), math.exp(-20.0), rel_tol=1e-3)
    ours = ops.softplus(x)
    assert ours[1] >= ours[0]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_equals_torch_bitwise_at_default_threshold(dtype, device):
    # Where z_exact <= 20 (all but float64) nothing differs from torch's softplus.
    if dtype == F64:
        pytest.skip("float64 differs in the documented window (next test)")
    x = magnitude_grid(dtype, 2000).to(device)
    for beta in (1.0, 0.5, 3.0):
        assert torch.equal(ops.softplus(x, beta=beta), F.softplus(x, beta=beta))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("threshold", [5.0, 20.0, 50.0])
@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_differs_from_torch_only_in_window(dtype, beta, threshold, device):
    switch = ops.linear_switch(dtype, threshold)
    x = all_finite(dtype) if dtype in HALF else magnitude_grid(dtype, 300, beta)
    if dtype in (F64, F32):  # every float in the window's ends
        x = torch.cat(
            [x, neighbours(threshold / beta, dtype, 50), neighbours(switch / beta, dtype, 50)]
        )
    x = x.to(device)
    ours = ops.softplus(x, beta=beta, threshold=threshold)
    theirs = F.softplus(x, beta=beta, threshold=threshold)
    z = x.to(compute_dtype(dtype)) * beta  # as torch's kernel forms it
    window = (z > threshold) & (z <= switch)
    assert window.any() == (threshold < switch)  # the test is not vacuous
    assert torch.equal(ours[~window], theirs[~window])
    # In the window torch returns x and posheads x + log1p(exp(-z)) / beta: the exact
    # difference is in (0, exp(-threshold) / beta], and the smooth value is rounded to
    # the dtype (and through beta * x and / beta when beta is inexact): one ulp of x.
    xw = as_np(x[window])
    diff = as_np(ours[window]) - as_np(theirs[window])
    slack = ulp(xw, dtype)
    assert (diff >= -slack).all() and (diff <= math.exp(-threshold) / beta + slack).all()


@pytest.mark.parametrize(("dtype", "x"), [(F32, 89.0), (F16, 60000.0), (F64, 710.0)])
def test_large_threshold_never_overflows(dtype, x):
    t = torch.tensor([x], dtype=dtype, requires_grad=True)
    ours = ops.softplus(t, threshold=1e6)
    assert ours.item() == x and grad_of(ours, t).item() == 1.0
    if dtype != F16:  # torch's own kernel overflows exp(z) here
        assert torch.isinf(F.softplus(t, threshold=1e6)).all()


# ---------------------------------------------------------------------------------------
# Properties (hypothesis) over the float32 and float64 ranges
# ---------------------------------------------------------------------------------------

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True)
FLOATS = {
    F64: st.floats(allow_nan=False, allow_infinity=False),
    F32: st.floats(allow_nan=False, allow_infinity=False, width=32),
}
POSITIVE = {
    F64: st.floats(min_value=5e-324, allow_infinity=False),
    F32: st.floats(min_value=2.0**-149, allow_infinity=False, width=32),
}
BETAS = st.sampled_from([1.0, 0.5, 2.0, 3.0])
THRESHOLD_DRAWS = st.sampled_from([1.0, 5.0, 20.0, 50.0])
PROP_DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=str)


def values(dtype, strategy=FLOATS):
    return st.lists(strategy[dtype], min_size=1, max_size=40)


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS, threshold=THRESHOLD_DRAWS)
def test_softplus_finite_non_negative_monotone(dtype, data, beta, threshold):
    x = torch.tensor(sorted(data.draw(values(dtype))), dtype=dtype, requires_grad=True)
    s = ops.softplus(x, beta=beta, threshold=threshold)
    g = grad_of(s, x)
    assert torch.isfinite(s).all() and (s >= 0).all() and (s.diff() >= 0).all()
    assert torch.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS, threshold=THRESHOLD_DRAWS)
def test_log_softplus_finite_monotone(dtype, data, beta, threshold):
    # Finite for every finite x in float32 and float64: below x = -max / beta (beta > 1),
    # where log s ~ beta x is out of range, it saturates at -max.
    x = torch.tensor(sorted(data.draw(values(dtype))), dtype=dtype, requires_grad=True)
    out = ops.log_softplus(x, beta=beta, threshold=threshold)
    g = grad_of(out, x)
    assert torch.isfinite(out).all() and (out.diff() >= 0).all()
    assert torch.isfinite(g).all() and (g >= 0).all() and (g <= beta).all()


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS, threshold=THRESHOLD_DRAWS)
def test_softplus_inverse_finite_monotone(dtype, data, beta, threshold):
    y = torch.tensor(sorted(data.draw(values(dtype, POSITIVE))), dtype=dtype, requires_grad=True)
    x = ops.softplus_inverse(y, beta=beta, threshold=threshold)
    g = grad_of(x, y)
    assert torch.isfinite(x).all() and (x.diff() >= 0).all()
    assert torch.isfinite(g).all() and (g >= 1).all()


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS, threshold=THRESHOLD_DRAWS)
def test_round_trip_from_x(dtype, data, beta, threshold):
    x = torch.tensor(data.draw(values(dtype)), dtype=dtype)
    y = ops.softplus(x, beta=beta, threshold=threshold)
    # Invertible while y is a normal number (x > about -708 / beta in float64, -87 / beta
    # in float32); a sub-normal y has lost the low bits of x.
    keep = y >= torch.finfo(dtype).tiny
    x, y = x[keep], y[keep]
    back = ops.softplus_inverse(y, beta=beta, threshold=threshold)
    xs, ys = as_np(x), as_np(y)
    # A few ulps of x, plus the rounding of y mapped back through dx/dy = 1/sigmoid(beta x).
    sig = special.expit(beta * xs)
    tol = 4 * ulp(xs, dtype) + 4 * ulp(ys, dtype) / sig
    assert_within(back, xs, tol, xs, "softplus_inverse(softplus(x))")


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS, threshold=THRESHOLD_DRAWS)
def test_round_trip_from_y(dtype, data, beta, threshold):
    y = torch.tensor(data.draw(values(dtype, POSITIVE)), dtype=dtype)
    x = ops.softplus_inverse(y, beta=beta, threshold=threshold)
    back = ops.softplus(x, beta=beta, threshold=threshold)
    xs, ys = as_np(x), as_np(y)
    # A few ulps of y, plus the rounding of x mapped through dy/dx = sigmoid(beta x): for
    # tiny y that is a relative beta |x| eps, the conditioning of exp at x.
    # expit, not 1 / (1 + exp(-z)): exp(-z) overflows below z = -709 and gave sig = 0.
    sig = special.expit(beta * xs)
    tol = 4 * ulp(ys, dtype) + 4 * sig * ulp(xs, dtype)
    assert_within(back, ys, tol, ys, "softplus(softplus_inverse(y))")


@PROP_DTYPES
@PROPERTIES
@given(data=st.data(), beta=BETAS)
def test_log_softplus_is_log_of_softplus(dtype, data, beta):
    x = torch.tensor(data.draw(values(dtype)), dtype=dtype)
    s = ops.softplus(x, beta=beta)
    keep = s >= torch.finfo(dtype).tiny  # where log(softplus) is itself accurate
    x, s = x[keep], s[keep]
    ref = as_np(torch.log(s))
    tol = 4 * ulp(ref, dtype) + 4 * eps(dtype)  # absolute near log s = 0
    assert_within(ops.log_softplus(x, beta=beta), ref, tol, as_np(x), "log_softplus")


# ---------------------------------------------------------------------------------------
# The contract: finite values and gradients for every finite input, and its edges
# ---------------------------------------------------------------------------------------


def special_values(dtype, positive=False, bound=None):
    """Range ends, sub-normals, both switches and exp's underflow points, in ``dtype``."""
    fi = torch.finfo(dtype)
    mags = [fi.tiny * fi.eps, fi.tiny, fi.eps, 0.5, 1.0, 7.9, 8.1, 15.9, 16.1, 19.9, 20.1]
    mags += [35.9, 36.1, 88.0, 104.0, 700.0, 710.0, 745.0, 1e4, fi.max / 16, fi.max]
    v = torch.tensor(mags, dtype=F64)
    v = torch.cat([v, -v, torch.zeros(1, dtype=F64)]) if not positive else v
    if bound is not None:
        v = v.clamp(-bound, bound)
    v = v.to(dtype)
    return v[torch.isfinite(v)].unique()


UNARY = {"softplus": ops.softplus, "log_softplus": ops.log_softplus}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("name", [*UNARY, "softplus_inverse"])
def test_finite_values_and_gradients(name, dtype, beta, device):
    fi = torch.finfo(dtype)
    if name == "softplus_inverse":
        x = special_values(dtype, positive=True)
        fn = ops.softplus_inverse
    else:
        # float16/bfloat16 with beta > 1: log s(x) ~ beta x is out of their range below
        # x = -max / beta (float32 and float64 saturate at -max there).
        x = special_values(dtype)
        if dtype in HALF:
            x = x[x.double() * beta >= -fi.max]
        fn = UNARY[name]
    x = x.to(device).requires_grad_()
    out = fn(x, beta=beta)
    assert out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all(), out
    assert torch.isfinite(grad_of(out, x)).all()


LOG_PROBS = {
    "poisson": lambda eta, y, t, beta: ops.poisson_softplus_log_prob(eta, y, beta=beta, exposure=t),
    "negative_binomial": lambda eta, y, t, beta: ops.negative_binomial_softplus_log_prob(
        eta,
        y,
        torch.tensor([0.01, 1.0, 1e3], dtype=eta.dtype, device=eta.device)[:, None],
        beta=beta,
        exposure=t,
    ),
}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(LOG_PROBS))
def test_log_probs_finite_values_and_gradients(name, dtype, beta, device):
    fi = torch.finfo(dtype)
    kw = {"dtype": dtype, "device": device}
    every = special_values(dtype)
    # Where log s ~ beta eta - log(beta) is itself within range.
    in_range = every[every.double().abs() * beta + abs(math.log(beta)) <= fi.max]
    cases = [
        # |eta| <= max / 16: y log(mu), mu and all gradients are within range for y <= 5
        # and t <= 3.
        (special_values(dtype, bound=fi.max / 16), [0.0, 1.0, 5.0], 3.0, True),
        # Every finite eta with y = 0 (for beta > 1 that is 0 * log s where beta * eta
        # overflows), and y = 1 where log s is in range. d/dy = log(mu) - digamma(y + 1)
        # is out of float16/bfloat16's range at their -max, so only eta's is checked there.
        (every, [0.0], None, dtype not in HALF),
        (in_range, [0.0, 1.0], None, dtype not in HALF),
    ]
    for eta, counts, t, check_y in cases:
        # y and exposure as large as the result: a gradient summed over the broadcast
        # could overflow by itself (many log(mu) ~ -1e308 added up).
        shape = (len(counts), 3, eta.numel())
        eta = eta.to(device).requires_grad_()
        y = torch.tensor(counts, **kw)[:, None, None].expand(shape).clone().requires_grad_()
        exposure = None if t is None else torch.full(shape, t, **kw).requires_grad_()
        out = LOG_PROBS[name](eta, y, exposure, beta)
        assert out.dtype == dtype and torch.isfinite(out).all()
        inputs = [v for v in (eta, y if check_y else None, exposure) if v is not None]
        grads = torch.autograd.grad(out, inputs, torch.ones_like(out))
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_softplus_inverse_out_of_domain(dtype, beta, device):
    y = torch.tensor([0.0, -0.0, -torch.finfo(dtype).tiny, -1.0, -1e4], dtype=dtype)
    y = y.to(device).requires_grad_()
    x = ops.softplus_inverse(y, beta=beta)
    # torch's conventions, as for torch.log: -inf at zero, NaN below.
    assert torch.equal(x[:2], torch.full_like(x[:2], -math.inf))
    assert torch.isnan(x[2:]).all()
    assert torch.isfinite(grad_of(x, y)[0])  # clamped at +0, like the tiniest y


@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_softplus_inverse_tiny_and_large_asymptotes(dtype, beta):
    y = torch.tensor([1e-300, 1e-100, 1e-30, 1e-20, 1e-12, 1e-45, 1e-38], dtype=F64)
    y = y.to(dtype)
    y = y[y > 0]
    x = ops.softplus_inverse(y, beta=beta)
    # s^-1(y) = log(beta y) / beta + y / 2 + O(y^2): the correction is below 1e-12 here.
    ref = as_np(torch.log(beta * y.double()) / beta)
    assert_within(x, ref, 4 * ulp(ref, dtype) + np.abs(as_np(y)), as_np(y), "tiny y")
    big = torch.tensor([1e4, 1e30, torch.finfo(dtype).max], dtype=dtype)
    assert torch.equal(ops.softplus_inverse(big, beta=beta), big)


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, 3.0])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_log_softplus_tends_to_linear_at_minus_infinity(dtype, beta):
    fi = torch.finfo(dtype)
    x = torch.tensor([-1e2, -1e4, -1e10, -1e30, -fi.max / 4], dtype=F64).to(dtype)
    x = x[torch.isfinite(x)].requires_grad_()
    out = ops.log_softplus(x, beta=beta)
    # log s(x) = beta x - log(beta) - exp(beta x) / 2 + ...: the last term is < e^-50.
    ref = as_np(beta * x.double() - math.log(beta))
    assert_within(out, ref, 2 * ulp(ref, dtype), as_np(x), "log s at -inf")
    assert torch.equal(grad_of(out, x), torch.full_like(x, beta))
    # ... and to log(x) with gradient 1 / x at +inf.
    pos = (-x).detach().requires_grad_()
    out = ops.log_softplus(pos, beta=beta)
    assert torch.allclose(out, torch.log(pos), rtol=2 * eps(dtype), atol=0)
    assert torch.allclose(grad_of(out, pos), 1 / pos, rtol=2 * eps(dtype), atol=0)


@pytest.mark.parametrize("device", devices())
def test_broadcasting_and_gradient_shapes(device):
    kw = {"dtype": F64, "device": device}
    gen = torch.Generator().manual_seed(0)
    eta = torch.randn(3, 1, generator=gen).to(**kw).requires_grad_()
    y = torch.randint(0, 9, (1, 4), generator=gen).to(**kw).requires_grad_()
    t = (torch.rand(4, generator=gen) + 0.5).to(**kw).requires_grad_()
    r = (torch.rand(3, 1, generator=gen) * 5 + 0.2).to(**kw).requires_grad_()
    for name, ours, theirs, inputs in [
        (
            "poisson",
            ops.poisson_softplus_log_prob(eta, y, exposure=t),
            poisson_composition(eta, y, t),
            (eta, y, t),
        ),
        (
            "nb",
            ops.negative_binomial_softplus_log_prob(eta, y, r, exposure=t),
            nb_composition(eta, y, r, t),
            (eta, y, r, t),
        ),
    ]:
        assert ours.shape == (3, 4), name
        torch.testing.assert_close(ours, theirs)
        g_ours = torch.autograd.grad(ours.sum(), inputs)
        g_theirs = torch.autograd.grad(theirs.sum(), inputs)
        for v, a, b in zip(inputs, g_ours, g_theirs, strict=True):
            assert a.shape == v.shape, name
            torch.testing.assert_close(a, b)
    # A 0-dim eta against a batch of counts, and extra leading dimensions.
    eta0 = torch.tensor(0.3, **kw, requires_grad=True)
    out = ops.poisson_softplus_log_prob(eta0, torch.arange(5.0, **kw).expand(2, 5))
    assert grad_of(out, eta0).shape == ()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_dtype_and_device_preserved(dtype, device):
    x = torch.linspace(-3, 3, 7, dtype=dtype, device=device)
    for fn in (ops.softplus, ops.log_softplus):
        out = fn(x)
        assert out.dtype == dtype and out.device == x.device
    out = ops.softplus_inverse(x.abs() + 0.5)
    assert out.dtype == dtype and out.device == x.device
    y = torch.arange(7, device=device)  # integer counts
    for out in (
        ops.poisson_softplus_log_prob(x[:, None], y),
        ops.negative_binomial_softplus_log_prob(x[:, None], y, 2.0),
    ):
        assert out.shape == (7, 7) and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("count_dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_counts_accepted(count_dtype):
    eta = torch.linspace(-4, 6, 11, dtype=F64, requires_grad=True)
    counts = torch.arange(11) % 7
    r = torch.tensor(2.5, dtype=F64)
    for fn, args in [
        (ops.poisson_softplus_log_prob, ()),
        (ops.negative_binomial_softplus_log_prob, (r,)),
    ]:
        as_int = fn(eta, counts.to(count_dtype), *args)
        as_float = fn(eta, counts.to(F64), *args)
        assert as_int.dtype == F64
        assert torch.equal(as_int, as_float)
        assert torch.equal(grad_of(as_int, eta), grad_of(as_float, eta))


def test_integer_input_gives_floating_result():
    # Like torch.log: an integer tensor gives a result in the default floating dtype.
    y = torch.tensor([1, 2, 3])
    for fn in (ops.softplus_inverse, ops.log_softplus):
        out = fn(y)
        assert out.dtype == torch.get_default_dtype()
        torch.testing.assert_close(out, fn(y.to(out.dtype)))


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------

# Moderate points and extreme ones: the asymptotic branch of log s (beta eta < -20),
# both sides of the float64 switch (36 / beta), and far beyond it. Every point is at
# least 0.1 from a switch, so finite differences never straddle one.
ETA = [-50.0, -8.0, -0.3, 0.0, 0.7, 5.0, 14.0, 15.0, 35.5, 36.5, 40.0]
COUNTS = [0.0, 1.0, 3.5, 12.0]
R = [0.3, 2.0, 50.0]
T = [0.5, 2.0, 7.0]


def cycled(values, n):
    return torch.tensor([values[i % len(values)] for i in range(n)], dtype=F64)


def grad_inputs(beta):
    eta = torch.tensor(ETA, dtype=F64) / beta
    n = len(ETA)
    return [v.requires_grad_() for v in (eta, cycled(COUNTS, n), cycled(R, n), cycled(T, n))]


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck])
def test_gradcheck_unary(check, beta):
    eta = grad_inputs(beta)[0]
    assert check(lambda x: ops.softplus(x, beta=beta), (eta,))
    assert check(lambda x: ops.log_softplus(x, beta=beta), (eta,))
    pos = torch.tensor([1e-3, 0.05, 0.7, 3.0, 14.0, 15.0, 35.5, 36.5, 40.0], dtype=F64)
    pos = (pos / beta).requires_grad_()
    assert check(lambda v: ops.softplus_inverse(v, beta=beta), (pos,))


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck])
def test_gradcheck_log_probs(check, beta):
    eta, y, r, t = grad_inputs(beta)

    def poisson(eta, y, t):
        return ops.poisson_softplus_log_prob(eta, y, beta=beta, exposure=t)

    def nb(eta, y, r, t):
        return ops.negative_binomial_softplus_log_prob(eta, y, r, beta=beta, exposure=t)

    assert check(poisson, (eta, y, t))
    assert check(lambda eta, y: ops.poisson_softplus_log_prob(eta, y, beta=beta), (eta, y))
    assert check(nb, (eta, y, r, t))
    assert check(
        lambda eta, r: ops.negative_binomial_softplus_log_prob(eta, 3.0, r, beta=beta), (eta, r)
    )


# ---------------------------------------------------------------------------------------
# Fused log-likelihoods: torch.distributions at moderate values, mpmath at extreme ones
# ---------------------------------------------------------------------------------------


def poisson_composition(eta, y, t=None, beta=1.0):
    mu = F.softplus(eta, beta=beta) * (1.0 if t is None else t)
    return torch.distributions.Poisson(mu, validate_args=False).log_prob(y)


def nb_composition(eta, y, r, t=None, beta=1.0):
    mu = F.softplus(eta, beta=beta) * (1.0 if t is None else t)
    logits = torch.log(mu) - torch.log(r)
    return torch.distributions.NegativeBinomial(r, logits=logits, validate_args=False).log_prob(y)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("with_exposure", [False, True])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_log_probs_match_torch_distributions(beta, with_exposure, device):
    # Moderate values: beta * eta < 20, where torch's softplus is exact too.
    gen = torch.Generator().manual_seed(1)
    n = 64
    kw = {"dtype": F64, "device": device}
    eta = torch.linspace(-6, 7, n, **kw).requires_grad_()
    y = torch.randint(0, 30, (n,), generator=gen).to(**kw).requires_grad_()
    r = (torch.rand(n, generator=gen) * 20 + 0.3).to(**kw).requires_grad_()
    t = (
        (torch.rand(n, generator=gen) * 3 + 0.2).to(**kw).requires_grad_()
        if with_exposure
        else None
    )
    cases = [
        (
            ops.poisson_softplus_log_prob(eta, y, beta=beta, exposure=t),
            poisson_composition(eta, y, t, beta),
            (eta, y),
        ),
        (
            ops.negative_binomial_softplus_log_prob(eta, y, r, beta=beta, exposure=t),
            nb_composition(eta, y, r, t, beta),
            (eta, y, r),
        ),
    ]
    for ours, theirs, inputs in cases:
        inputs = inputs + ((t,) if with_exposure else ())
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        g_ours = torch.autograd.grad(ours.sum(), inputs)
        g_theirs = torch.autograd.grad(theirs.sum(), inputs)
        for a, b in zip(g_ours, g_theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_composition_underflows_where_fused_does_not():
    # Why the fused op exists: torch's softplus underflows to 0 and log(0) = -inf.
    eta = torch.tensor([-800.0], dtype=F64)
    y = torch.tensor([2.0], dtype=F64)
    assert poisson_composition(eta, y).item() == -math.inf
    assert ops.poisson_softplus_log_prob(eta, y).item() == pytest.approx(-1600.0 - math.log(2))


# Log-likelihood grids: eta over the whole range, counts from 0 to 1e6; the
# (beta, exposure, total_count) combinations cycle over the points.
COMBOS = [(1.0, None), (2.5, None), (1.0, 0.3), (0.5, 7.0)]
LP_COUNTS = [0.0, 1.0, 3.0, 17.0, 1000.0, 1e6]
LP_R = [0.05, 1.0, 40.0, 1e6]


def log_prob_grid(dtype):
    fi = torch.finfo(dtype)
    top = math.log10(fi.max)
    with np.errstate(over="ignore"):  # the last point may round past max
        mags = np.logspace(-top, top, 24)
    switch = ops.linear_switch(dtype)
    special = [0.0, -745.0, -700.0, -104.0, -88.0, -50.0, -20.5, -19.5, 0.5, 5.0]
    special += [switch - 0.1, switch + 0.1, 100.0, 710.0, fi.max, -fi.max]
    eta = torch.tensor(np.concatenate([mags, -mags, special]), dtype=F64).to(dtype)
    eta = eta[torch.isfinite(eta)].unique()
    eta, y = torch.meshgrid(eta, torch.tensor(LP_COUNTS, dtype=dtype), indexing="ij")
    return eta.flatten(), y.flatten()


def check_log_prob_against_mpmath(name, dtype, device):
    eta, y = log_prob_grid(dtype)
    r = cycled(LP_R, eta.numel()).to(dtype)
    k = torch.arange(eta.numel()) % len(COMBOS)
    for c, (beta, t) in enumerate(COMBOS):
        sel = k == c
        e, yy, rr = eta[sel], y[sel], r[sel]
        exposure = None if t is None else torch.tensor(t, dtype=dtype, device=device)
        tt = None if t is None else exposure.item()
        # Summing the terms loses 8 eps of their sizes; z = beta * eta rounds by eps / 2.
        kw = {"eps": 8 * eps(dtype), "z_eps": 0.0 if exact_scale(beta) else eps(dtype) / 2}
        pts = zip(e.double().tolist(), yy.double().tolist(), rr.double().tolist(), strict=True)
        if name == "poisson":
            refs = [mp_poisson_log_prob(a, b, beta, tt, **kw) for a, b, _ in pts]
            got = ops.poisson_softplus_log_prob(
                e.to(device), yy.to(device), beta=beta, exposure=exposure
            )
        else:
            refs = [mp_nb_log_prob(a, b, rr_, beta, tt, **kw) for a, b, rr_ in pts]
            got = ops.negative_binomial_softplus_log_prob(
                e.to(device), yy.to(device), rr.to(device), beta=beta, exposure=exposure
            )
        ref, tol = np.array(refs).T
        finite = to_dtype_range(ref, dtype)[1]
        # Where y log(mu) is beyond the range: -max or -inf, never NaN.
        assert_saturated(got, finite, dtype)
        # ... plus a few ulps of the result: the rounding of terms that cancel, and the
        # sub-normal spacing where the log-likelihood is tiny (y = 0, mu ~ 1e-310).
        ref, tol = ref[finite], tol[finite] + ULPS[dtype] * ulp(ref[finite], dtype)
        where = np.stack([as_np(e), as_np(yy), as_np(rr)], axis=1)[finite]
        got = got[torch.from_numpy(finite).to(device)]
        assert_within(got, ref, tol, where, f"{name} beta={beta} t={t}")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_poisson_matches_mpmath(dtype, device):
    check_log_prob_against_mpmath("poisson", dtype, device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_negative_binomial_matches_mpmath(dtype, device):
    check_log_prob_against_mpmath("negative_binomial", dtype, device)


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_log_prob_gradients_match_mpmath_at_extremes(beta):
    # d l / d eta (docs/count-likelihoods.md) in mpmath: Poisson sigmoid(z) (y / s - t); NB
    # r (y - mu) / (mu (r + mu)) * t * sigmoid(z).
    eta = torch.tensor([-700.0, -300.0, -50.0, -20.5, -19.5, 35.5, 36.5, 100.0, 1e10], dtype=F64)
    eta = (eta / beta).requires_grad_()
    y = cycled([0.0, 1.0, 7.0, 1e4], eta.numel())
    r = cycled([0.05, 3.0, 1e5], eta.numel())
    t = cycled([0.3, 2.0], eta.numel())
    g_p = grad_of(ops.poisson_softplus_log_prob(eta, y, beta=beta, exposure=t), eta)
    g_nb = grad_of(ops.negative_binomial_softplus_log_prob(eta, y, r, beta=beta, exposure=t), eta)
    for i, e in enumerate(eta.tolist()):
        z = mpc.mpf(beta) * mpc.mpf(e)
        sig = 1 / (1 + mpc.exp(-z))
        s = mp_softplus(e, beta)
        yy, rr, tt = (mpc.mpf(v[i].item()) for v in (y, r, t))
        mu = tt * s
        p_ref = sig * (yy / s - tt)
        nb_ref = rr * (yy - mu) / (mu * (rr + mu)) * tt * sig
        # Cancellation in y / s - t (y - mu): eps times the size of the two parts. The
        # NB gradient goes through the logit d = log(mu / r), whose absolute rounding,
        # eps (|log mu| + |log r|), is a relative error of exp(d).
        p_tol = 16 * eps(F64) * float(sig * (yy / s + tt))
        logit = 1 + abs(mpc.log(mu)) + abs(mpc.log(rr))
        nb_tol = 16 * eps(F64) * float(rr * (yy + mu) / (mu * (rr + mu)) * tt * sig * logit)
        assert abs(g_p[i].item() - float(p_ref)) <= p_tol, (e, g_p[i].item(), float(p_ref))
        assert abs(g_nb[i].item() - float(nb_ref)) <= nb_tol, (e, g_nb[i].item(), float(nb_ref))


# ----------------------------------------------------------------------------------------
# The compiler flags of the CPU kernels (posheads/ops/_compile.py, kernel_options).


def _prefers_512_here():
    from torch._inductor.cpp_builder import get_cpp_compiler

    name = get_cpp_compiler().rsplit("/", 1)[-1]
    return (sys.platform == "linux" and platform.machine() == "x86_64"
            and any(known in name for known in ("g++", "gcc", "clang")))


@pytest.mark.parametrize("simdlen", [512, 256, None])
def test_kernel_options_ask_for_512_bit_loops_with_512_bit_kernels(simdlen, monkeypatch):
    from torch._inductor import config

    from posheads.ops import _compile

    monkeypatch.setattr(_compile, "_simdlen", [simdlen])
    with config.patch({"cpp.march": None}):
        options = _compile.kernel_options()
    assert options.get("cpp.simdlen") == simdlen
    if simdlen == 512 and _prefers_512_here():
        assert options["cpp.march"] == "native -mprefer-vector-width=512"
    else:
        assert "cpp.march" not in options
    # a user's own setting is left alone
    with config.patch({"cpp.march": "x86-64-v3"}):
        assert "cpp.march" not in _compile.kernel_options(tables=True)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_compiled_bit_level_log_equals_its_eager_evaluation(dtype):
    # The compiler flags change how the kernel's code is vectorised, not what it computes:
    # the compiled bit-level log (posheads.ops._kernels.log_normal, checked against mpmath
    # in tests/test_compiled.py) equals the same formula run eagerly, bit for bit, on
    # every binade of normal floats, with both ends of its mantissa range.
    from posheads.ops import _compile, _kernels

    fi = torch.finfo(dtype)
    s = magnitude_grid(dtype, 2000)
    s = torch.cat([s[torch.isfinite(s) & (s >= fi.tiny)],
                   torch.tensor([fi.tiny, fi.max, 0.7071067811865476, 1.4142135623730951,
                                 1.0, 2.0, 0.5], dtype=dtype)])
    kernel = torch.compile(_kernels.log_normal, dynamic=True, fullgraph=True,
                           options=_compile.kernel_options())
    assert torch.equal(kernel(s), _kernels.log_normal(s))
