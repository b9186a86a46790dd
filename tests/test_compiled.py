"""Tests of the compiled fast path of :mod:`posheads.ops` (``ops._compile``, ``ops._kernels``).

* compiled and eager results agree, forward and backward, in float32 and float64, on
  inputs that reach every branch (the linear switch, the asymptote where ``softplus``
  underflows, sub-normal inputs of ``softplus_inverse``, both sides of the switch of
  its ``1 - exp(-z)`` between a Taylor series and ``exp``): the value without grad, the
  value and gradient of a forward that computes its derivative too, and the gradient
  of a second backward (``retain_graph``), which recomputes it;
* the arithmetic stand-ins for inductor's vectorised functions (``1 - exp(-z)`` by a
  Taylor series near 0, ``log1p`` on ``[0, 1]``, ``log`` of normal floats) against mpmath;
* the switches: ``set_compile`` / ``use_compile``, ``POSHEADS_COMPILE=0``, the size
  threshold (tiny tensors stay eager), and double backward stays eager;
* a kernel that fails to compile warns once and gives the eager result;
* a new batch size (or rank) reuses the compiled kernel.

Compiling costs seconds per kernel, so all compiled results are computed once per device
and dtype by a module-scoped fixture, on small tensors with the size threshold set to 0.

Agreement is measured against the size of the terms each result is made of, not the
result itself: where terms cancel (``y log mu - mu`` near its maximum, ``y - (y + r) p``
for ``mu`` near ``y``) both paths carry the rounding of the terms, a few ulps of the
largest, and differ by that much.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from posheads import ops
from posheads.ops import _compile, _kernels

from ._reference import devices, mpc, ulp

# Importing inductor's C++ backend touches a deprecated torch.jit API.
pytestmark = pytest.mark.filterwarnings("ignore:.*script_method.*:DeprecationWarning")

F64, F32 = torch.float64, torch.float32
# Allowed difference, in ulps of the largest term: each path rounds every term once or
# twice (exp, log1p, log, lgamma, digamma are within 1-2 ulps in Sleef, glibc and CUDA's
# libdevice), and the two paths round them differently.
ULPS = 8


def _inputs(dtype, device, n=512):
    """Linear predictors over every branch, counts drawn from them, and positive values."""
    gen = torch.Generator().manual_seed(0)
    eta = torch.randn(n, generator=gen, dtype=F64) * 20.0
    # The linear switch of each dtype, the underflow of softplus, huge values.
    edges = [-1e4, -800.0, -200.0, -100.0, -87.0, -20.0, 0.0, 8.0, 16.0, 16.5, 36.0, 37.0, 1e4]
    eta[: len(edges)] = torch.tensor(edges, dtype=F64)
    mu = F.softplus(eta).clamp(max=1e6)
    y = torch.poisson(mu, generator=gen)
    r = torch.rand(n, generator=gen, dtype=F64) * 10.0 + 0.1
    t = torch.rand(n, generator=gen, dtype=F64) * 3.0 + 0.2
    # Positive values from sub-normal to large, for softplus_inverse.
    y_pos = torch.exp(torch.linspace(-740.0, 25.0, n, dtype=F64)).to(dtype).clamp(min=1e-45)
    # Its branches at z = beta y (beta 1 and 2.5): the switch of 1 - exp(-z) at |z| = 1/2,
    # the smallest normal z, the linear switch.
    tiny = torch.finfo(dtype).tiny
    edges = torch.tensor([0.5, 0.2, tiny, tiny / 2.5, 16.0, 6.4, 36.0, 14.4], dtype=dtype)
    edges = torch.cat([edges, torch.nextafter(edges, edges * 2), torch.nextafter(edges, edges * 0)])
    edges = torch.cat([edges, torch.linspace(0.15, 0.6, 64, dtype=dtype)])
    y_pos[: len(edges)] = edges
    made = {"eta": eta, "y": y, "r": r, "t": t}
    made = {k: v.to(dtype) for k, v in made.items()}
    made["y_pos"] = y_pos
    return {k: v.to(device) for k, v in made.items()}


def _run_ops(inp):
    """Values and gradients of every compiled op (the names are the fixture's keys).

    ``name``: value and gradients of a forward on leaves that require grad (the
    ``*_and_grad`` kernels, whose derivative the backward multiplies in place);
    ``name/no_grad``: the value under ``torch.no_grad()``; ``name/again``: the gradients
    of a second backward through the same graph, which recomputes them.
    """
    eta, y, r, t = inp["eta"], inp["y"], inp["r"], inp["t"]
    calls = {
        "softplus_inverse": (ops.softplus_inverse, (inp["y_pos"],)),
        "softplus_inverse_beta": (lambda v: ops.softplus_inverse(v, beta=2.5), (inp["y_pos"],)),
        "log_softplus": (ops.log_softplus, (eta,)),
        "poisson": (lambda e: ops.poisson_softplus_log_prob(e, y), (eta,)),
        # counts all below the lgamma table's size, and non-whole "counts" (no table)
        "poisson_small": (lambda e: ops.poisson_softplus_log_prob(e, y.clamp(max=100)), (eta,)),
        "poisson_quasi": (lambda e: ops.poisson_softplus_log_prob(e, y + 0.5), (eta,)),
        "poisson_exposure": (lambda e: ops.poisson_softplus_log_prob(e, y, exposure=t), (eta,)),
        # exposure requires grad too: no derivative from the forward, the eager backward
        "poisson_eta_t": (
            lambda e, tt: ops.poisson_softplus_log_prob(e, y, exposure=tt),
            (eta, t),
        ),
        "nb": (lambda e: ops.negative_binomial_softplus_log_prob(e, y, r), (eta,)),
        "nb_eta_r": (lambda e, rr: ops.negative_binomial_softplus_log_prob(e, y, rr), (eta, r)),
    }
    out = {}
    for name, (fn, args) in calls.items():
        leaves = [a.detach().clone().requires_grad_() for a in args]
        value = fn(*leaves)
        ones = torch.ones_like(value)
        grads = torch.autograd.grad(value, leaves, ones, retain_graph=True)
        out[name] = (value.detach(), *grads)
        out[name + "/again"] = torch.autograd.grad(value, leaves, ones)
        with torch.no_grad():
            out[name + "/no_grad"] = (fn(*args),)
    return out


def _scales(inp):
    """The size of the largest terms in each value and gradient of :func:`_run_ops` (float64)."""
    c = {k: v.double().cpu() for k, v in inp.items()}
    eta, y, r, t, y_pos = c["eta"], c["y"], c["r"], c["t"], c["y_pos"]
    s = F.softplus(eta, threshold=36.0)
    log_s = ops.log_softplus(eta).abs()
    dlog = torch.sigmoid(eta) / s.clamp(min=1e-300)
    d = ops.log_softplus(eta) - torch.log(r)
    lg = torch.lgamma(y + 1.0).abs() + torch.lgamma(r).abs() + torch.lgamma(y + r).abs()
    nb_value = y * F.softplus(-d, threshold=36.0) + r * F.softplus(d, threshold=36.0) + lg
    nb_grad = (2 * y + r) * dlog.clamp(max=1.0)
    dr = torch.digamma(y + r).abs() + torch.digamma(r).abs() + F.softplus(d) + (2 * y + r) / r
    inv_grad = 1.0 / -torch.expm1(-y_pos)
    inv_grad_beta = 1.0 / -torch.expm1(-2.5 * y_pos)
    return {
        # softplus_inverse(y) = y + log(1 - exp(-y)): both terms.
        "softplus_inverse": (y_pos + torch.log(-torch.expm1(-y_pos)).abs(), inv_grad),
        "softplus_inverse_beta": (
            y_pos + torch.log(-torch.expm1(-2.5 * y_pos)).abs() / 2.5,
            inv_grad_beta,
        ),
        # log is ill-conditioned near s = 1: an ulp of s is an ulp of 1 in log s.
        "log_softplus": (log_s + 1.0, dlog),
        "poisson": (y * log_s + s + torch.lgamma(y + 1.0), y * dlog + 1.0),
        "poisson_small": (
            y.clamp(max=100) * log_s + s + torch.lgamma(y.clamp(max=100) + 1.0),
            y.clamp(max=100) * dlog + 1.0,
        ),
        "poisson_quasi": ((y + 0.5) * log_s + s + torch.lgamma(y + 1.5), (y + 0.5) * dlog + 1.0),
        "poisson_exposure": (
            y * (log_s + torch.log(t).abs()) + s * t + torch.lgamma(y + 1.0),
            y * dlog + t,
        ),
        "poisson_eta_t": (
            y * (log_s + torch.log(t).abs()) + s * t + torch.lgamma(y + 1.0),
            y * dlog + t,
            y / t + s,
        ),
        "nb": (nb_value, nb_grad),
        "nb_eta_r": (nb_value, nb_grad, dr),
    }


@pytest.fixture(scope="module", params=devices())
def results(request):
    """``{dtype: (inputs, compiled results, eager results)}`` for one device."""
    device = request.param
    out = {}
    for dtype in (F32, F64):
        inp = _inputs(dtype, device)
        with ops.use_compile(True, min_numel=0):
            compiled = _run_ops(inp)
        with ops.use_compile(False):
            eager = _run_ops(inp)
        out[dtype] = (inp, compiled, eager)
    return out


@pytest.mark.parametrize("dtype", [F32, F64])
def test_compiled_matches_eager(results, dtype):
    inp, compiled, eager = results[dtype]
    scales = _scales(inp)
    eps = torch.finfo(dtype).eps
    for name, expected in eager.items():
        op, _, variant = name.partition("/")
        scale_of = {"": scales[op], "no_grad": scales[op][:1], "again": scales[op][1:]}[variant]
        for i, (got, want, scale) in enumerate(
            zip(compiled[name], expected, scale_of, strict=True)
        ):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.isfinite(got).all(), (name, i)
            # Exact where it must be: the linear branch returns its input.
            err = (got - want).double().abs().cpu()
            tol = ULPS * eps * scale + torch.finfo(dtype).tiny
            worst = int((err / tol).argmax())
            assert (err <= tol).all(), (name, i, worst, got[worst].item(), want[worst].item())


def test_compiled_kernels_were_used(results):
    # The fixture above compiled every kernel (a silent fall back would make the
    # agreement test vacuous).
    assert set(_compile._cache) == set(_kernels.KERNELS)
    assert not _compile.failed_devices()


def test_linear_branch_exact(results):
    inp, compiled, _ = results[F32]
    eta = inp["eta"]
    big = eta > 20.0
    assert big.any()
    torch.testing.assert_close(compiled["log_softplus"][0][big], torch.log(eta[big]))
    y_pos = inp["y_pos"]
    assert torch.equal(compiled["softplus_inverse"][0][y_pos > 16], y_pos[y_pos > 16])


# ---------------------------------------------------------------------------------------
# When the compiled path is (not) taken
# ---------------------------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch):
    """Replace every compiled kernel by its eager formula, recording which ran."""
    calls = []

    def fake_compile(fn, **kwargs):
        def run(*args):
            calls.append(fn.__name__)
            return fn(*args)

        return run

    monkeypatch.setattr(_compile, "_cache", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    yield calls


def _all_ops(n, requires_grad=True):
    eta = torch.linspace(-5, 5, n, dtype=F64).requires_grad_(requires_grad)
    y = torch.ones(n, dtype=F64)
    outs = [
        ops.softplus_inverse(eta.exp()),
        ops.log_softplus(eta),
        ops.poisson_softplus_log_prob(eta, y),
        ops.negative_binomial_softplus_log_prob(eta, y, 2.0),
    ]
    if requires_grad:
        torch.autograd.grad(sum(o.sum() for o in outs), eta)
    return outs


def test_tiny_tensors_stay_eager(recorded):
    assert _compile.compile_settings()["min_numel"]["cpu"] >= 2**20
    with ops.use_compile(True):
        _all_ops(1000)
    assert recorded == []


def test_threshold_selects_compiled_path(recorded):
    with ops.use_compile(True, min_numel=1000):
        _all_ops(999)
        assert recorded == []
        _all_ops(1000)
    # The inputs require grad: the forwards compute the derivative too, and the backwards
    # multiply it by the incoming gradient (the NB log-prob still has its own backward).
    assert set(recorded) == {
        "softplus_inverse_and_grad",
        "log_softplus_and_grad",
        "whole_counts",  # the counts are checked once, then lgamma(y + 1) is looked up
        "poisson_counts_and_grad",
        "negative_binomial",
        "negative_binomial_grad_eta",
    }
    recorded.clear()
    with ops.use_compile(True, min_numel=1000), torch.no_grad():
        _all_ops(1000, requires_grad=False)
    assert set(recorded) == {
        "softplus_inverse",
        "log_softplus",
        "whole_counts",
        "poisson_counts",
        "negative_binomial",
    }


def test_kernels_are_compiled_parallel(monkeypatch):
    # Without dynamic_threads, inductor would make a kernel first compiled on a small
    # tensor serial, and its cache would hand that serial code to every later size.
    seen = {}

    def spy_compile(fn, **kwargs):
        seen[fn.__name__] = kwargs
        return fn

    monkeypatch.setattr(_compile, "_cache", {})
    monkeypatch.setattr(torch, "compile", spy_compile)
    with ops.use_compile(True, min_numel=0):
        ops.log_softplus(torch.zeros(10))
    assert seen["log_softplus"]["options"]["cpp.dynamic_threads"] is True


@pytest.mark.parametrize("dtype", [F32, F64])
def test_one_minus_exp_matches_mpmath(dtype):
    """``1 - exp(-z)`` of the softplus_inverse kernels (a Taylor series for ``|z| <= 1/2``,
    ``exp`` beyond) against mpmath: within 3 ulps on both sides of the switch, down to
    sub-normal and zero ``z``, and for negative ``z`` (out of the domain of
    ``softplus_inverse``, reached by its gradient)."""
    tiny = torch.finfo(dtype).tiny
    half = torch.tensor([0.5, -0.5], dtype=dtype)
    z = torch.cat(
        [
            torch.linspace(-0.7, 0.7, 4001, dtype=dtype),
            half,
            torch.nextafter(half, half * 2),
            torch.nextafter(half, half * 0),
            torch.logspace(math.log10(tiny) - 5, 0, 500, dtype=F64).to(dtype),
            torch.tensor([0.0, tiny, 2 * tiny, 20.0, 80.0, -20.0, -80.0], dtype=dtype),
        ]
    )
    got = _kernels.one_minus_exp(z)
    want = [float(-mpc.expm1(-mpc.mpf(float(v)))) for v in z]
    want_t = torch.tensor(want, dtype=F64).to(dtype)
    err = (got.double() - want_t.double()).abs().numpy()
    assert (err <= 3 * ulp(want, dtype)).all(), z[int(err.argmax())].item()


@pytest.mark.parametrize("dtype", [F32, F64])
def test_log1p_series_matches_mpmath(dtype):
    """``log1p(u)`` for ``0 <= u <= 1`` of the softplus kernels (an atanh series in place of
    Sleef's log1p) against mpmath: within 1.5 ulps, down to sub-normal and zero ``u``."""
    tiny = torch.finfo(dtype).tiny
    u = torch.cat(
        [
            torch.linspace(0.0, 1.0, 4001, dtype=dtype),
            torch.logspace(math.log10(tiny) - 5, 0, 500, dtype=F64).to(dtype),
            torch.tensor([tiny, 1.0, 1.0 - torch.finfo(dtype).eps / 2], dtype=dtype),
        ]
    )
    got = _kernels.log1p_unit(u)
    want = [float(mpc.log1p(mpc.mpf(float(v)))) for v in u]
    err = (got.double() - torch.tensor(want, dtype=F64)).abs().numpy()
    # a sub-normal result is compared in absolute terms (ulp of the sub-normal spacing)
    assert (err <= 1.5 * ulp(want, dtype)).all(), u[int(err.argmax())].item()


@pytest.mark.parametrize("dtype", [F32, F64])
def test_log_of_normal_floats_matches_mpmath(dtype):
    """The CPU kernels' ``log`` of normal floats (exponent and mantissa from the bits, an
    atanh series) against mpmath: within 1.5 ulps from the smallest normal float to the
    largest, near 1 (where the result is tiny) and at powers of two; NaN stays NaN."""
    fi = torch.finfo(dtype)
    s = torch.cat(
        [
            torch.logspace(math.log10(fi.tiny), math.log10(fi.max), 4001, dtype=F64).to(dtype),
            torch.linspace(0.5, 2.0, 4001, dtype=dtype),
            torch.tensor([2.0**k for k in range(-30, 31)], dtype=dtype),
            torch.tensor([fi.tiny, fi.max, 1.0 - fi.eps / 2, 1.0 + fi.eps], dtype=dtype),
            torch.tensor([0.7071067811865476, 1.4142135623730951], dtype=dtype),
        ]
    )
    s = s[torch.isfinite(s)]
    got = _kernels.log_normal(s)
    want = [float(mpc.log(mpc.mpf(float(v)))) for v in s]
    err = (got.double() - torch.tensor(want, dtype=F64)).abs().numpy()
    assert (err <= 1.5 * ulp(want, dtype)).all(), s[int(err.argmax())].item()
    assert _kernels.log_normal(torch.tensor([math.nan], dtype=dtype)).isnan().all()


def test_off_switch(recorded):
    with ops.use_compile(False, min_numel=0):
        _all_ops(1000)
        assert not _compile.compile_settings()["enabled"]
    assert recorded == []
    previous = ops.set_compile(False, min_numel=0)
    try:
        _all_ops(1000)
    finally:
        ops.set_compile(**previous)
    assert recorded == []
    assert _compile.compile_settings() == previous


@pytest.mark.parametrize("value, enabled", [("0", False), ("off", False), ("1", True)])
def test_environment_variable(monkeypatch, value, enabled):
    monkeypatch.setenv("POSHEADS_COMPILE", value)
    monkeypatch.setenv("POSHEADS_COMPILE_MIN_NUMEL", "123")
    settings = _compile._settings_from_env()
    assert settings == {"enabled": enabled, "min_numel": {"cpu": 123, "cuda": 123}}


def test_double_backward_uses_eager_path(recorded):
    eta = torch.linspace(-5, 5, 100, dtype=F64, requires_grad=True)
    y = torch.ones(100, dtype=F64)
    with ops.use_compile(True, min_numel=0):
        out = ops.poisson_softplus_log_prob(eta, y).sum()
        (g,) = torch.autograd.grad(out, eta, create_graph=True)
        recorded.clear()
        (gg,) = torch.autograd.grad(g.sum(), eta)
    assert recorded == []
    assert torch.isfinite(gg).all()


def test_compile_failure_warns_once_and_falls_back(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(_compile, "_cache", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    with ops.use_compile(True, min_numel=0):
        with pytest.warns(ops.CompileWarning, match="no compiler here"):
            got = _all_ops(100)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = _all_ops(100)
        assert "cpu" in _compile.failed_devices()
    assert not _compile.failed_devices()  # re-enabling forgets the failure
    with ops.use_compile(False):
        want = _all_ops(100)
    for a, b, c in zip(got, again, want, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_missing_compiler_warns_once(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_compile, "_backend_ok", {})
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    x = torch.linspace(-5, 5, 100, dtype=F64)
    with ops.use_compile(True, min_numel=0):
        with pytest.warns(ops.CompileWarning, match="no C\\+\\+ compiler"):
            got = ops.log_softplus(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ops.log_softplus(x)
    assert torch.equal(got, torch.log(F.softplus(x)))


def test_subclasses_and_other_dtypes_stay_eager():
    x = torch.zeros(4)
    with ops.use_compile(True, min_numel=0):
        assert _compile._worth_it([x]) == "cpu"
        assert _compile._worth_it([x.half()]) is None
        assert _compile._worth_it([x.to("meta")]) is None
        assert _compile._worth_it([torch.nn.Parameter(x)]) is None
    with ops.use_compile(True):
        assert _compile._worth_it([x]) is None


def test_new_batch_size_does_not_recompile(results):
    # After the fixture compiled log_softplus, other sizes and ranks reuse its kernel.
    from torch._dynamo.utils import counters

    device = results[F32][0]["eta"].device
    with ops.use_compile(True, min_numel=0):
        ops.log_softplus(torch.randn(300, device=device))
        before = counters["stats"]["unique_graphs"]
        for shape in [(301,), (1000,), (7, 11), (2, 3, 50)]:
            out = ops.log_softplus(torch.randn(shape, device=device))
            assert out.shape == shape
    assert counters["stats"]["unique_graphs"] == before


# ---------------------------------------------------------------------------------------
# The in-place eager backward of the NB log-likelihood for eta and r
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("r_shape", [(64,), (1,), ()])
def test_nb_eta_and_r_gradients_match_composition(r_shape):
    gen = torch.Generator().manual_seed(3)
    eta = torch.linspace(-6, 7, 64, dtype=F64, requires_grad=True)
    y = torch.randint(0, 30, (64,), generator=gen).to(F64)
    r = (torch.rand(r_shape, generator=gen, dtype=F64) * 20 + 0.3).requires_grad_()
    with ops.use_compile(False):
        ours = ops.negative_binomial_softplus_log_prob(eta, y, r)
    logits = torch.log(F.softplus(eta)) - torch.log(r)
    theirs = torch.distributions.NegativeBinomial(r, logits=logits).log_prob(y)
    g_ours = torch.autograd.grad(ours.sum(), (eta, r))
    g_theirs = torch.autograd.grad(theirs.sum(), (eta, r))
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert math.isfinite(ours.sum().item())


def test_count_lgamma_table_and_series_match_lgamma():
    """The table's entries and Stirling's series beyond it: lgamma(y + 1) to an ulp or two."""
    y = torch.tensor([0.0, 1.0, 2.0, 4095.0, 4096.0, 4097.0, 1e6, 1e12, 2.0**52], dtype=F64)
    table = torch.lgamma(torch.arange(_kernels.COUNT_TABLE_SIZE, dtype=F64) + 1.0)
    ref = torch.lgamma(y + 1.0)
    for small in (False, True):
        got = _kernels.lgamma1p_counts(y[:4] if small else y, table, small)
        want = ref[:4] if small else ref
        tol = 2 * torch.finfo(F64).eps * want.abs().clamp(min=1.0)
        assert ((got - want).abs() <= tol).all()


def test_count_check_is_remembered_until_y_changes(monkeypatch):
    y = torch.poisson(torch.full((2000,), 3.0, dtype=F64))
    calls = []
    real_run = _compile.run
    monkeypatch.setattr(_compile, "run", lambda name, *a, **k: calls.append(name) or real_run(
        name, *a, **k))
    with ops.use_compile(True, min_numel=0):
        assert _compile.count_table(y) is not None
        assert _compile.count_table(y) is not None
        assert calls.count("whole_counts") == 1
        y[0] = 0.5  # modified in place: checked again, and no longer whole counts
        assert _compile.count_table(y) is None
        assert calls.count("whole_counts") == 2


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("beta", [1.0, 0.3, 2.5])
def test_softplus_inverse_out_of_domain_and_extremes_match_eager(dtype, beta):
    # The compiled kernel's own log (of y scaled by 2**digits where beta * y is below the
    # smallest normal float) keeps torch's conventions: -inf at 0, NaN below 0 and at NaN.
    fi = torch.finfo(dtype)
    y = torch.tensor(
        [0.0, -0.0, -1.0, -fi.tiny, math.nan, math.inf, fi.tiny * fi.eps, fi.tiny, 1e-30],
        dtype=dtype,
    )
    with ops.use_compile(True, min_numel=0):
        got = ops.softplus_inverse(y, beta=beta)
    with ops.use_compile(False):
        want = ops.softplus_inverse(y, beta=beta)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=8 * fi.eps, atol=0.0)
