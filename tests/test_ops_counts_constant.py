"""The NB2 log-likelihood without its data-only term (``constant=False``), and its eager
paths without a value read back to the host."""

from __future__ import annotations

import mpmath
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

from posheads import ops
from posheads.ops import _compile, count_logprob

F32, F64 = torch.float32, torch.float64
NB = ops.negative_binomial_softplus_log_prob


def _grid(dtype):
    """``eta``, ``y`` and ``r`` over every pairing of a wide grid (float64 values cast)."""
    eta = torch.tensor([-40.0, -5.0, -1.0, 0.0, 0.7, 3.0, 12.0, 60.0], dtype=F64)
    y = torch.tensor([0.0, 1.0, 3.0, 17.0, 250.0, 1e5, 1e7], dtype=F64)
    r = torch.tensor([1e-6, 0.05, 0.8, 4.0, 300.0, 1e6, 1e9], dtype=F64)
    e, c, k = torch.meshgrid(eta, y, r, indexing="ij")
    return e.reshape(-1).to(dtype), c.reshape(-1).to(dtype), k.reshape(-1).to(dtype)


def _scale(eta, y, r):
    """The size of the largest terms of the NB2 log-density (float64): its rounding scale."""
    eta, y, r = (t.double() for t in (eta, y, r))
    d = ops.log_softplus(eta) - torch.log(r)
    return (y * F.softplus(-d, threshold=36.0) + r * F.softplus(d, threshold=36.0)
            + torch.lgamma(y + 1.0) + torch.lgamma(r).abs() + torch.lgamma(y + r).abs())


@pytest.fixture(scope="module")
def nb_reference():
    """The NB2 log-pmf of the float64 grid in 40-digit arithmetic (mpmath)."""
    eta, y, r = _grid(F64)
    out = []
    with mpmath.workdps(40):
        for e, c, k in zip(eta.tolist(), y.tolist(), r.tolist(), strict=True):
            e, c, k = mpmath.mpf(e), mpmath.mpf(c), mpmath.mpf(k)
            mu = mpmath.log1p(mpmath.exp(e))
            out.append(float(mpmath.loggamma(c + k) - mpmath.loggamma(k) - mpmath.loggamma(c + 1)
                             + k * mpmath.log(k / (k + mu)) + c * mpmath.log(mu / (k + mu))))
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("grad", [False, True])
def test_nb_matches_scipy_and_mpmath_with_and_without_the_constant(nb_reference, dtype, grad):
    eta, y, r = _grid(dtype)
    tol = 16 * torch.finfo(dtype).eps * _scale(eta, y, r)
    with ops.use_compile(False):
        e, k = eta.clone().requires_grad_(grad), r.clone().requires_grad_(grad)
        full = NB(e, y, k).detach()
        less = NB(e, y, k, constant=False).detach()
    assert full.dtype == dtype and torch.isfinite(full).all() and torch.isfinite(less).all()
    # extreme concentrations (1e-6 to 1e9), y = 0 and y = 1e7 against mpmath ...
    assert ((full.double() - nb_reference).abs() <= tol).all()
    # ... and SciPy where p = r / (r + mu) is not within 1e-3 of 0 or 1 (there its own
    # log1p(-p) loses digits, which mpmath shows to be SciPy's)
    mu = F.softplus(eta.double())
    p = r.double() / (r.double() + mu)
    want = torch.as_tensor(stats.nbinom.logpmf(y.double().numpy(), r.double().numpy(),
                                               p.numpy()))
    keep = (p > 1e-3) & (p < 1 - 1e-3)
    assert keep.sum() > 50 and ((full.double() - want).abs() <= tol)[keep].all()
    # full = less - lgamma(y + 1), to the rounding of the larger terms
    diff = (less.double() - torch.lgamma(y.double() + 1.0) - full.double()).abs()
    assert (diff <= tol).all()


@pytest.mark.parametrize("dtype", [F32, F64])
def test_nb_without_constant_gradients_match_float64_autograd(dtype):
    eta, y, r = _grid(dtype)
    with ops.use_compile(False):
        e, k = eta.clone().requires_grad_(), r.clone().requires_grad_()
        g = torch.autograd.grad(NB(e, y, k, constant=False).sum(), (e, k))
    e64, k64 = eta.double().requires_grad_(), r.double().requires_grad_()
    logits = torch.log(F.softplus(e64)) - torch.log(k64)
    ref = torch.distributions.NegativeBinomial(k64, logits=logits).log_prob(y.double())
    g_ref = torch.autograd.grad(ref.sum(), (e64, k64))
    eps = torch.finfo(dtype).eps
    for got, want in zip(g, g_ref, strict=True):
        assert got.dtype == dtype and torch.isfinite(got).all()
        tol = 64 * eps * (want.abs() + (y.double() + r.double()) / r.double() + 1.0)
        assert ((got.double() - want).abs() <= tol).all()


def test_nb_without_constant_passes_gradcheck():
    # finite differences of eta, r and y (the y-gradient lacks -digamma(y + 1) too)
    g = torch.Generator().manual_seed(3)
    eta = (torch.randn(12, generator=g, dtype=F64) * 3).requires_grad_()
    r = (torch.rand(12, generator=g, dtype=F64) * 5 + 0.2).requires_grad_()
    y = (torch.rand(12, generator=g, dtype=F64) * 8 + 0.5).requires_grad_()
    with ops.use_compile(False):
        assert torch.autograd.gradcheck(lambda a, b, c: NB(a, c, b, constant=False),
                                        (eta, r, y))
        assert torch.autograd.gradcheck(lambda a, b: NB(a, y.detach(), b, constant=False),
                                        (eta, r))


def test_nb_without_constant_on_the_compiled_path():
    g = torch.Generator().manual_seed(1)
    eta = torch.randn(4096, generator=g) * 3
    y = torch.poisson(F.softplus(eta), generator=g)
    r = torch.rand(4096, generator=g) * 5 + 0.3
    recorded = []
    real_run = _compile.run
    with torch.no_grad():
        with ops.use_compile(False):
            want = NB(eta, y, r, constant=False)
            full = NB(eta, y, r)
        with ops.use_compile(True, min_numel=0), pytest.MonkeyPatch.context() as mp:
            mp.setattr(_compile, "run", lambda name, *a, **k: recorded.append(name) or
                       real_run(name, *a, **k))
            got = NB(eta, y, r, constant=False)
    assert recorded == ["negative_binomial"] and not _compile.failed_devices()
    tol = 16 * torch.finfo(F32).eps * _scale(eta, y, r)
    assert ((got.double() - want.double()).abs() <= tol).all()
    assert ((got - full).double() - torch.lgamma(y.double() + 1.0)).abs().le(tol).all()


class _Ops(TorchDispatchMode):
    """The aten ops called, by name."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("grads", ["none", "eta", "eta_r"])
def test_nb_reads_nothing_back_to_the_host(constant, grads):
    # no .any() / bool() / item() on the forward and the backward of the eager path, on
    # inputs whose softplus underflows (the guarded rows) and on ordinary ones
    eta = torch.tensor([-1e4, -100.0, -3.0, 0.0, 2.0, 40.0])
    y = torch.tensor([0.0, 2.0, 1.0, 5.0, 0.0, 30.0])
    r = torch.full((6,), 1.5)
    e, k = eta.clone().requires_grad_(grads != "none"), r.clone().requires_grad_(grads == "eta_r")
    with ops.use_compile(False), _Ops() as seen:
        out = NB(e, y, k, constant=constant)
        if grads != "none":
            torch.autograd.grad(out.sum(), [t for t in (e, k) if t.requires_grad])
    host = {"_local_scalar_dense", "is_nonzero", "item", "any", "any.default"}
    assert seen.names and not host.intersection(n.split(".")[0] for n in seen.names)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("beta", [1.0, 0.3, 2.5])
def test_guarded_log_softplus_is_exact_above_its_floor_and_tends_to_its_limits(dtype, beta):
    fi = torch.finfo(dtype)
    switch = ops.linear_switch(dtype)
    floor = count_logprob._eta_floor(dtype, beta)
    above = torch.cat([torch.linspace(floor, 5.0, 997, dtype=dtype),
                       torch.tensor([floor, 0.0, 30.0, 1e4, fi.max], dtype=dtype)])
    log_s, dlog = count_logprob._log_softplus_and_slope(above, beta, switch)
    s = F.softplus(above, beta=beta, threshold=switch)
    assert torch.equal(log_s, torch.log(s))  # bit for bit: the old unguarded values
    assert torch.equal(dlog, s.reciprocal() * torch.sigmoid(above * beta if beta != 1 else above))
    below = torch.tensor([floor - 1e-3, floor - 5.0, 2 * floor, -1e20, -fi.max], dtype=dtype)
    log_s, dlog = count_logprob._log_softplus_and_slope(below, beta, switch)
    _, want_log, _, want_dlog = ops.softplus_branches(below, beta, switch)
    assert torch.isfinite(log_s).all() and torch.isfinite(dlog).all()
    torch.testing.assert_close(log_s, want_log, rtol=4 * fi.eps, atol=0.0)
    torch.testing.assert_close(dlog, want_dlog, rtol=4 * fi.eps, atol=0.0)
