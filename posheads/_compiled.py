"""Compiled (``torch.compile`` / inductor) kernels of the fast paths of :mod:`posheads.ops`.

Each kernel is one elementwise expression of the formulas the eager fast path of
:mod:`posheads.ops` evaluates in several passes; inductor fuses it into a single loop
(C++ on CPU, Triton on CUDA) that reads each input and writes each output once. The
eager path's guard for extremes (``softplus(x)`` below the smallest normal float, where
``log s`` needs the asymptotic branch) becomes an elementwise ``where`` with the guarded
path's formula, so no reduction or host synchronisation is needed.

:func:`run` calls a kernel only where compiling pays and is possible, and returns
``None`` otherwise, so that the caller takes its eager path:

* compilation is on (``POSHEADS_COMPILE`` not ``0``; :func:`set_compile`, :func:`use_compile`);
* the tensors are plain CPU or CUDA tensors of float32 or float64 with at least
  ``min_numel`` elements (``2**20`` on CPU, ``2**16`` on CUDA; ``POSHEADS_COMPILE_MIN_NUMEL``):
  below that the one-off compile cost (seconds per kernel) outweighs what it saves;
* a backend exists: a C++ compiler for CPU, Triton for CUDA;
* the caller is not already being traced (``torch.compile``, ``torch.jit``).

A missing backend, or a kernel that fails to compile or run, warns once
(:class:`CompileWarning`) and turns compilation off for that device type (until
``set_compile(True)``); the caller then computes the eager result. Kernels
are compiled with ``dynamic=True``, so a new batch size reuses the compiled code. They
are never differentiated: the callers use them inside ``torch.autograd.Function``
forward and backward passes, and keep the eager guarded path for double backward.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Iterator

import torch

__all__ = ["CompileWarning", "compile_settings", "run", "set_compile", "use_compile"]

# Below these sizes the fused kernel saves less than its compile cost on any run short
# enough to care about: eager CPU ops cost ~1 ms per pass at 2**20 elements, against
# seconds of C++ compilation; on CUDA eager is launch-bound below ~2**16 elements.
_DEFAULT_MIN_NUMEL = {"cpu": 2**20, "cuda": 2**16}
_OFF = {"0", "false", "off", "no"}
# Linear switch of the softplus of the NB logit, as ops._NO_OVERFLOW_SP (ops imports this
# module, not the other way round).
_SP_SWITCH = 36.0


class CompileWarning(UserWarning):
    """A compiled kernel could not be built or run; posheads computes eagerly instead."""


def _settings_from_env() -> dict:
    """``enabled`` from ``POSHEADS_COMPILE``, ``min_numel`` from ``POSHEADS_COMPILE_MIN_NUMEL``."""
    value = os.environ.get("POSHEADS_COMPILE_MIN_NUMEL")
    min_numel = dict(_DEFAULT_MIN_NUMEL)
    if value is not None:
        min_numel = dict.fromkeys(_DEFAULT_MIN_NUMEL, int(value))
    enabled = os.environ.get("POSHEADS_COMPILE", "1").strip().lower() not in _OFF
    return {"enabled": enabled, "min_numel": min_numel}


_state = {**_settings_from_env(), "broken": set()}  # broken: device types that failed
_backend_ok: dict[str, bool] = {}
_kernels: dict[str, object] = {}


def compile_settings() -> dict:
    """The current settings: ``enabled`` (bool) and ``min_numel`` (per device type)."""
    return {"enabled": _state["enabled"], "min_numel": dict(_state["min_numel"])}


def set_compile(enabled: bool = True, *, min_numel: int | dict | None = None) -> dict:
    """Turn the compiled fast path on or off for the whole process.

    Parameters
    ----------
    enabled : bool
        ``False`` makes every op use its eager path. ``True`` (re)enables compilation
        where it pays, and forgets earlier compile failures.
    min_numel : int or dict, optional
        Smallest number of elements that uses a compiled kernel: one number for every
        device type, or a dict such as ``{"cpu": 2**20, "cuda": 2**16}``. ``None``
        keeps the current sizes.

    Returns
    -------
    dict
        The previous settings, which ``set_compile(**previous)`` restores.
    """
    previous = compile_settings()
    _state["enabled"] = bool(enabled)
    if min_numel is not None:
        if isinstance(min_numel, dict):
            _state["min_numel"].update(min_numel)
        else:
            _state["min_numel"] = dict.fromkeys(_DEFAULT_MIN_NUMEL, int(min_numel))
    if enabled:
        _state["broken"].clear()
    return previous


@contextlib.contextmanager
def use_compile(enabled: bool = True, *, min_numel: int | dict | None = None) -> Iterator[None]:
    """Context manager form of :func:`set_compile`; restores the settings on exit.

    Examples
    --------
    >>> from posheads import ops
    >>> with ops.use_compile(False):
    ...     out = ops.softplus_inverse(torch.ones(3))
    """
    previous = set_compile(enabled, min_numel=min_numel)
    try:
        yield
    finally:
        set_compile(**previous)


def _warn_once(device_type: str, message: str) -> None:
    if device_type not in _state["broken"]:
        _state["broken"].add(device_type)
        warnings.warn(message + " posheads computes eagerly instead.", CompileWarning, stacklevel=4)


def _backend_available(device_type: str) -> bool:
    """Whether inductor can build kernels for ``device_type`` (checked once per process)."""
    if device_type not in _backend_ok:
        ok, why = False, ""
        try:
            if not torch._dynamo.is_dynamo_supported():
                why = "torch.compile is not supported on this Python or platform."
            elif device_type == "cpu":
                from torch._inductor.cpp_builder import get_cpp_compiler

                get_cpp_compiler()  # raises where no C++ compiler is found
                ok = True
            else:
                from torch.utils._triton import has_triton

                ok = has_triton()
                why = "" if ok else "Triton is not installed or does not support this GPU."
        except Exception as err:  # no compiler, or a torch build without inductor
            why = f"no {device_type} compiler for torch.compile ({err!r})."
        _backend_ok[device_type] = ok
        if not ok:
            _warn_once(device_type, why)
    return _backend_ok[device_type]


def _worth_it(tensors: list[torch.Tensor]) -> str | None:
    """The device type to compile for, or None where the eager path should be used."""
    if not _state["enabled"] or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    first = tensors[0]
    device_type = first.device.type
    if device_type not in _DEFAULT_MIN_NUMEL or device_type in _state["broken"]:
        return None
    numel = torch.broadcast_shapes(*(t.shape for t in tensors)).numel()
    if numel < _state["min_numel"][device_type]:
        return None
    for t in tensors:
        # Subclasses (fake, functorch-batched, user types) and other devices stay eager.
        if type(t) is not torch.Tensor or t.device != first.device:
            return None
        if t.dtype not in (torch.float32, torch.float64):
            return None
    if not _backend_available(device_type):
        return None
    return device_type


def run(name: str, *args, tables: tuple = ()):
    """``KERNELS[name](*args, *tables)`` compiled where it pays, else ``None`` (use eager).

    ``args`` are tensors, ``None`` (an absent optional tensor) and Python numbers;
    ``tables`` are small lookup tensors on the same device, passed last and left out of
    the size test and the flattening.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    device_type = _worth_it(tensors)
    if device_type is None:
        return None
    kernel = _kernels.get(name)
    if kernel is None:
        kernel = _kernels[name] = torch.compile(KERNELS[name], dynamic=True, fullgraph=True)
    shape = tensors[0].shape
    # Shapes are dynamic but ranks are not: contiguous inputs of one shape go in as 1-d
    # views, so that (n,), (n, k) and (b, n, k) batches share one compiled kernel.
    flat = len(shape) != 1 and all(t.shape == shape and t.is_contiguous() for t in tensors)
    if flat:
        args = tuple(a.view(-1) if isinstance(a, torch.Tensor) else a for a in args)
    try:
        with torch.no_grad():
            out = kernel(*args, *tables)
    except Exception as err:  # a compile or run failure: never worse than eager
        _warn_once(device_type, f"torch.compile failed for posheads kernel {name!r} ({err!r}).")
        return None
    if flat:
        out = tuple(o.view(shape) for o in out) if isinstance(out, tuple) else out.view(shape)
    return out


# ----------------------------------------------------------------------------------------
# The kernels. Each is the eager fast path's formula, written so that every branch is
# selected elementwise; ``beta``, ``switch``, ``log_beta`` and ``big`` are Python floats.


def _softplus(x, beta, switch):
    # As in ops._branches: beta * x overflows to -inf for x < -max / beta when beta > 1
    # (unconditional here, so that beta stays a kernel argument, not a guard).
    z = (x * beta).clamp(min=-torch.finfo(x.dtype).max)
    # torch's softplus kernel: linear above the switch, where exp(z) may overflow.
    return z, torch.where(z > switch, x, torch.log1p(torch.exp(z)) / beta)


def _normal(s):
    """Where ``s`` is a normal float: there ``log(s)`` and ``1 / s`` are accurate."""
    return s >= torch.finfo(s.dtype).tiny


def _log_s(x, beta, switch, log_beta):
    z, s = _softplus(x, beta, switch)
    # Where s underflows (z < -87 in float32), log s = z - log(beta) - exp(z) / 2.
    return z, s, torch.where(_normal(s), torch.log(s), z - 0.5 * torch.exp(z) - log_beta)


def _dlog(z, s, beta):
    """``d log s / dx = sigmoid(z) / s``, tending to ``beta (1 - exp(z) / 2)`` as s underflows."""
    return torch.where(
        _normal(s), s.reciprocal() * torch.sigmoid(z), beta * (1.0 - 0.5 * torch.exp(z))
    )


def _sp(v):
    """softplus of the NB logit, linear where that is exact in float64 (ops._NO_OVERFLOW_SP)."""
    return torch.where(v > _SP_SWITCH, v, torch.log1p(torch.exp(v)))


def _one_minus_exp(z):
    """``-expm1(-z) = 1 - exp(-z)`` for ``z >= 0``, accurate for tiny ``z``.

    inductor's vectorised C++ ``expm1`` is ``exp(x) - 1``, which cancels for small ``x``
    (``-expm1(-1e-30)`` came out as 0 in float32), so use ``2 t / (1 + t)`` with
    ``t = tanh(z / 2)`` (no cancellation, no overflow). Below the smallest normal float
    ``z / 2`` would round; there ``1 - exp(-z) = z`` exactly.
    """
    t = torch.tanh(0.5 * z)
    return torch.where(z < torch.finfo(z.dtype).tiny, z, 2.0 * t / (1.0 + t))


def softplus_inverse(y, beta, switch, log_beta):
    z = y * beta
    # As in ops._softplus_inverse_value: where beta * y is sub-normal (or zero, for a
    # positive y and beta < 1), take log(beta * y) as log(y) + log(beta).
    tiny = torch.finfo(z.dtype).tiny
    smooth = torch.where(z < tiny, torch.log(y) + log_beta, torch.log(_one_minus_exp(z)))
    return torch.where(z > switch, y, y + smooth / beta)


def softplus_inverse_grad(y, grad, beta, switch, big):
    z = y * beta
    d = torch.reciprocal(_one_minus_exp(z)).clamp(max=big)
    return grad * torch.where(z > switch, torch.ones_like(y), d)


def log_softplus(x, beta, switch, log_beta):
    return _log_s(x, beta, switch, log_beta)[2]


def log_softplus_grad(x, grad, beta, switch):
    z, s = _softplus(x, beta, switch)
    return grad * _dlog(z, s, beta)


def poisson(eta, y, exposure, beta, switch, log_beta):
    _, s, log_mu = _log_s(eta, beta, switch, log_beta)
    if exposure is not None:
        log_mu = log_mu + torch.log(exposure)
        s = s * exposure
    return log_mu * y - s - torch.lgamma(y + 1.0)


# lgamma(k + 1) of whole counts k below this come from a table; torch and inductor
# evaluate lgamma one element at a time on the CPU, at several times the cost of the
# rest of the Poisson log-probability.
COUNT_TABLE_SIZE = 4096
_HALF_LOG_2PI = 0.9189385332046727


def _lgamma1p_counts(y, table, small):
    """``lgamma(y + 1)`` of whole counts ``y >= 0``: the table below its size, above it
    Stirling's series, whose first omitted term there is below ``1e-27``. ``small``:
    every count is below the table's size (the series is then not evaluated at all)."""
    size = table.shape[0]
    index = torch.clamp(y, max=float(size - 1)).to(torch.int64)
    if small:
        return table[index]
    z = torch.clamp(y, min=float(size)) + 1.0  # finite for the rows the table serves
    w = z.reciprocal()
    w2 = w * w
    series = w * (1.0 / 12.0 - w2 * (1.0 / 360.0 - w2 * (1.0 / 1260.0)))
    stirling = (z - 0.5) * torch.log(z) - z + _HALF_LOG_2PI + series
    return torch.where(y < size, table[index], stirling)


def poisson_counts(eta, y, exposure, beta, switch, log_beta, small, table):
    """:func:`poisson` for whole counts ``y`` (see :func:`count_table`)."""
    _, s, log_mu = _log_s(eta, beta, switch, log_beta)
    if exposure is not None:
        log_mu = log_mu + torch.log(exposure)
        s = s * exposure
    return log_mu * y - s - _lgamma1p_counts(y, table, small)


_tables: dict = {}
# [weakref to the last y checked, its version, whole counts?, all below the table size?]
_last_counts: list = [None, -1, False, False]


def count_table(y: torch.Tensor) -> tuple[torch.Tensor, bool] | None:
    """``(table, small)`` when ``y`` holds whole counts and the compiled path would run on
    the CPU, else None: the ``lgamma(k + 1)`` table for ``y``'s dtype, and whether every
    count is below its size.

    The check is one fused read of ``y``, remembered for the last ``y`` seen (until it
    is modified): a training loop passes the same counts at every step.
    """
    # the cheap tests first: this runs on every Poisson log-prob, most of them small
    if (not _state["enabled"] or y.device.type != "cpu"
            or y.numel() < _state["min_numel"]["cpu"]
            or y.dtype not in (torch.float32, torch.float64)):
        return None
    ref, version, whole, small = _last_counts
    if ref is None or ref() is not y or version != y._version:
        result = run("whole_counts", y)
        if result is None:
            return None
        whole, small = bool(result[0]), bool(result[1] < COUNT_TABLE_SIZE)
        _last_counts[:] = [weakref.ref(y), y._version, whole, small]
    if not whole:
        return None
    key = (y.dtype, y.device)
    if key not in _tables:
        k = torch.arange(COUNT_TABLE_SIZE, dtype=torch.float64)
        _tables[key] = torch.lgamma(k + 1.0).to(dtype=y.dtype, device=y.device)
    return _tables[key], small


def whole_counts(y):
    """Whether every entry of ``y`` is a whole number >= 0, and the largest entry (one
    fused read of ``y``)."""
    return ((y >= 0) & (y == torch.floor(y))).all(), y.amax()


def poisson_grad_eta(eta, y, exposure, grad, beta, switch):
    # One exp for softplus, sigmoid and the tail branch (inductor does not share the one
    # inside sigmoid): sigmoid(z) = e / (1 + e), and 1 on the linear branch, where the
    # eager sigmoid differs from 1 by less than an ulp.
    z = (eta * beta).clamp(min=-torch.finfo(eta.dtype).max)
    linear = z > switch
    e = torch.exp(torch.clamp(z, max=switch))
    s = torch.where(linear, eta, torch.log1p(e) / beta)
    sig = torch.where(linear, torch.ones_like(e), e / (1.0 + e))
    dlog = torch.where(_normal(s), sig / s, beta * (1.0 - 0.5 * e))
    g = dlog * y
    g = g - sig if exposure is None else g - exposure * sig
    return g * grad


def _nb_logit(eta, r, exposure, beta, switch, log_beta):
    z, s, d = _log_s(eta, beta, switch, log_beta)
    if exposure is not None:
        d = d + torch.log(exposure)
    return z, s, d - torch.log(r)


def negative_binomial(eta, y, r, exposure, beta, switch, log_beta):
    d = _nb_logit(eta, r, exposure, beta, switch, log_beta)[2]
    out = y * _sp(-d) + r * _sp(d) + torch.lgamma(y + 1.0) + torch.lgamma(r)
    return -(out - torch.lgamma(y + r))


def negative_binomial_grad_eta(eta, y, r, exposure, grad, beta, switch, log_beta):
    z, s, d = _nb_logit(eta, r, exposure, beta, switch, log_beta)
    dl_dd = y - (y + r) * torch.sigmoid(d)  # = y q - r p, p = mu / (r + mu)
    return dl_dd * _dlog(z, s, beta) * grad


def negative_binomial_grad_eta_r(eta, y, r, exposure, grad, beta, switch, log_beta):
    z, s, d = _nb_logit(eta, r, exposure, beta, switch, log_beta)
    dl_dd = y - (y + r) * torch.sigmoid(d)
    g_eta = dl_dd * _dlog(z, s, beta) * grad
    dr = torch.digamma(y + r) - torch.digamma(r) - _sp(d) - dl_dd / r
    return g_eta, dr * grad


KERNELS = {
    f.__name__: f
    for f in (
        softplus_inverse,
        softplus_inverse_grad,
        log_softplus,
        log_softplus_grad,
        poisson,
        poisson_counts,
        poisson_grad_eta,
        whole_counts,
        negative_binomial,
        negative_binomial_grad_eta,
        negative_binomial_grad_eta_r,
    )
}
