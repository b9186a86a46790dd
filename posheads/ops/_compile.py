"""Dispatch of the compiled (``torch.compile`` / inductor) fast paths of :mod:`posheads.ops`.

Each kernel (:mod:`posheads.ops._kernels`) is one elementwise expression of the formulas
the eager fast path of :mod:`posheads.ops` evaluates in several passes; inductor fuses it
into a single loop (C++ on CPU, Triton on CUDA) that reads each input and writes each
output once. The eager path's guard for extremes (``softplus(x)`` below the smallest
normal float, where ``log s`` needs the asymptotic branch) becomes an elementwise
``where`` with the guarded path's formula, so no reduction or host synchronisation is
needed.

:func:`run` calls a kernel only where compiling pays and is possible, and returns
``None`` otherwise, so that the caller takes its eager path:

* compilation is on (``POSHEADS_COMPILE`` not ``0``; :func:`set_compile`, :func:`use_compile`);
* the tensors are plain CPU or CUDA tensors of float32 or float64 with at least
  ``min_numel`` elements (``2**20`` on CPU, ``2**16`` on CUDA; ``POSHEADS_COMPILE_MIN_NUMEL``):
  below that the one-off cost of compiling a kernel outweighs what it saves;
* a backend exists: a C++ compiler for CPU, Triton for CUDA;
* the caller is not already being traced (``torch.compile``, ``torch.jit``).

A missing backend, or a kernel that fails to compile or run, warns once
(:class:`CompileWarning`) and turns compilation off for that device type (until
``set_compile(True)``); the caller then computes the eager result. Kernels
are compiled with ``dynamic=True``, so a new batch size reuses the compiled code. They
are never differentiated: the callers use them inside ``torch.autograd.Function``
forward and backward passes, and keep the eager guarded path for double backward.
Where an input requires grad, the forward runs a ``*_and_grad`` kernel that also returns
the derivative, which the backward multiplies by the incoming gradient in place.

On the CPU, the kernels use the SIMD width of ATen's own kernels
(``torch.backends.cpu.get_cpu_capability()``: 512 bits for AVX-512, 256 for AVX2), set
as inductor's ``cpp.simdlen``, where inductor can build code of that width; otherwise
inductor's default. With 512-bit kernels the C++ compiler is also told to prefer
512-bit vectors in the loops it vectorises itself (:func:`kernel_options`): inductor
writes some steps (a float's bits read as an integer, the table lookup) as short scalar
loops over a temporary array, which GCC's tuning for Intel CPUs vectorises in 256-bit
halves; an Intel core cannot feed a 512-bit load from two 256-bit stores, so each such
load waits for the stores to reach the cache. AMD's Zen 4 splits a 512-bit load into
two 256-bit halves, each fed from one store: there the flag should change the code but
not the speed (not measured; figures in benchmarks/README.md, "Kernels: vector width").
The C++ settings are applied again around each call, as inductor builds a kernel found
in its on-disk cache on its first call, outside the options given to ``torch.compile``.

Kernels are compiled with ``cpp.dynamic_threads``: the generated C++ loop is then always
parallel, with OpenMP's thread count (``torch.set_num_threads``) read at run time.
Without it inductor chooses serial or parallel code from the size of the first call, and
its cache (in memory and on disk) hands that code to every later size, so a kernel first
compiled on a small tensor would run large ones on one thread.

Package-internal API, used by :mod:`posheads.ops.softplus_family` and
:mod:`posheads.ops.count_logprob`: :func:`run` and :func:`count_table`;
:func:`kernel_options` (inductor's options of every kernel, which the benchmarks reuse;
:data:`KERNEL_OPTIONS` the part that does not depend on the CPU),
:func:`cpu_vector_widths` and :func:`failed_devices`. Public through :mod:`posheads.ops`:
:class:`CompileWarning`, :func:`set_compile` and :func:`use_compile`.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import warnings
import weakref
from collections.abc import Iterator

import torch

from ._kernels import COUNT_TABLE_SIZE, KERNELS

__all__ = [
    "KERNEL_OPTIONS",
    "CompileWarning",
    "compile_settings",
    "count_table",
    "cpu_vector_widths",
    "failed_devices",
    "kernel_options",
    "run",
    "set_compile",
    "use_compile",
]

# Below these sizes the fused kernel saves less than its compile cost on any run short
# enough to care about: on CPU an eager pass over 2**20 elements is short next to a C++
# compilation; on CUDA eager ops are bound by kernel launches, not memory, below about
# 2**16 elements (figures in benchmarks/README.md, "Ops").
_DEFAULT_MIN_NUMEL = {"cpu": 2**20, "cuda": 2**16}
_OFF = {"0", "false", "off", "no"}
# inductor options of every kernel (see the module docstring), and of the kernels that
# look lgamma(y + 1) up in a table: their index is in range by construction (see
# lgamma1p_counts in _kernels), so inductor's bounds check on every element is dropped.
KERNEL_OPTIONS = {"cpp.dynamic_threads": True}
_TABLE_OPTIONS = {**KERNEL_OPTIONS, "assert_indirect_indexing": False}
# Bits per SIMD vector of ATen's CPU kernels, by torch.backends.cpu.get_cpu_capability()
# (which follows ATEN_CPU_CAPABILITY); other capabilities leave inductor's own choice.
_ATEN_BITS = {"AVX512": 512, "AVX2": 256}


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
# by name: (compiled kernel, the C++ build settings of its options)
_cache: dict[str, tuple[object, dict]] = {}
_simdlen: list = []  # [the CPU kernels' vector width], found on the first CPU compile


def cpu_vector_widths() -> dict:
    """Bits per SIMD vector on this CPU: ``"aten"`` (its capability, e.g. ``"AVX512"``,
    and width), ``"inductor_default"`` (inductor's own choice) and ``"kernels"`` (what
    posheads' compiled kernels use, :func:`kernel_options`); ``"march"``: the kernels'
    ``cpp.march`` (None: inductor's default). Imports inductor."""
    from torch._inductor import config, cpu_vec_isa

    capability = torch.backends.cpu.get_cpu_capability()
    with config.patch({"cpp.simdlen": None}):
        default = cpu_vec_isa.pick_vec_isa()
    options = kernel_options()
    with config.patch({"cpp.simdlen": options.get("cpp.simdlen")}):
        used = cpu_vec_isa.pick_vec_isa()
    return {
        "aten": (capability, _ATEN_BITS.get(capability)),
        "inductor_default": (str(default) or "none", default.bit_width() if default else 0),
        "kernels": (str(used) or "none", used.bit_width() if used else 0),
        "march": options.get("cpp.march"),
    }


def _cpu_simdlen() -> int | None:
    """ATen's vector width where inductor can build code for it, else None (inductor's
    default). Inductor picks its width from its own checks of the CPU and the compiler
    (and ``ATEN_CPU_CAPABILITY``), which need not agree with ATen's dispatch; asked for
    a width it cannot build, it would fall back to scalar code, hence the check."""
    if not _simdlen:
        bits = _ATEN_BITS.get(torch.backends.cpu.get_cpu_capability())
        try:
            from torch._inductor import cpu_vec_isa

            valid = {isa.bit_width() for isa in cpu_vec_isa.valid_vec_isa_list()}
        except Exception:  # an inductor without this module: keep its default
            valid = set()
        _simdlen.append(bits if bits in valid else None)
    return _simdlen[0]


def _cpu_march(simdlen: int | None) -> str | None:
    """inductor's ``cpp.march`` for kernels of ``simdlen`` bits: ``-march=native`` (its
    default on x86-64 Linux) plus ``-mprefer-vector-width=512`` where the kernels are
    512 bits wide (see the module docstring), else None (inductor's own choice).

    inductor passes the setting on as ``-march=<value>``, the one way its options add a
    compiler flag. Left alone where it does not apply: a user's own ``cpp.march``
    (``TORCHINDUCTOR_CPP_MARCH``), other systems and CPUs (where inductor may use another
    flag or none), and a compiler other than GCC or clang, the two that take the flag.
    """
    if simdlen != 512 or sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    try:
        from torch._inductor import config
        from torch._inductor.cpp_builder import get_cpp_compiler

        if config.cpp.march is not None:
            return None
        name = os.path.basename(get_cpp_compiler())
    except Exception:  # no compiler, or an inductor without these names: its default
        return None
    if not any(known in name for known in ("g++", "gcc", "clang")):
        return None
    return "native -mprefer-vector-width=512"


def kernel_options(*, tables: bool = False) -> dict:
    """inductor's options of the kernels: :data:`KERNEL_OPTIONS` (and, for kernels that look
    a value up in a table, no bounds check on the index), with ``cpp.simdlen`` set to ATen's
    vector width (:func:`_cpu_simdlen`) and, for 512-bit kernels, ``cpp.march`` asking the
    compiler for 512-bit vectors in its own loops too (:func:`_cpu_march`). Both are the
    C++ backend's settings, which Triton ignores."""
    options = dict(_TABLE_OPTIONS if tables else KERNEL_OPTIONS)
    simdlen = _cpu_simdlen()
    if simdlen is not None:
        options["cpp.simdlen"] = simdlen
    march = _cpu_march(simdlen)
    if march is not None:
        options["cpp.march"] = march
    return options


def compile_settings() -> dict:
    """The current settings: ``enabled`` (bool) and ``min_numel`` (per device type)."""
    return {"enabled": _state["enabled"], "min_numel": dict(_state["min_numel"])}


def failed_devices() -> frozenset[str]:
    """The device types whose kernels failed to build or run (or have no backend) since
    compilation was last (re)enabled: there every op computes eagerly."""
    return frozenset(_state["broken"])


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


def _inductor_config():
    """inductor's config module (imported on first use: importing inductor takes seconds)."""
    from torch._inductor import config

    return config


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


def _broadcast_numel(shapes: list[torch.Size]) -> int | None:
    """The number of elements the shapes broadcast to, None where they do not broadcast
    (the eager path then raises torch's error). Computed here because
    ``torch.broadcast_shapes`` imports sympy on its first call, about a second."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, n in enumerate(shape, ndim - len(shape)):
            if n != 1:
                if out[i] not in (1, n):
                    return None
                out[i] = n
    return math.prod(out)


def _worth_it(tensors: list[torch.Tensor]) -> str | None:
    """The device type to compile for, or None where the eager path should be used."""
    if not _state["enabled"] or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    first = tensors[0]
    device_type = first.device.type
    if device_type not in _DEFAULT_MIN_NUMEL or device_type in _state["broken"]:
        return None
    numel = _broadcast_numel([t.shape for t in tensors])
    if numel is None or numel < _state["min_numel"][device_type]:
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
    entry = _cache.get(name)
    if entry is None:
        options = kernel_options(tables=bool(tables))
        kernel = torch.compile(KERNELS[name], dynamic=True, fullgraph=True, options=options)
        entry = _cache[name] = (kernel, {k: v for k, v in options.items() if k.startswith("cpp.")})
    kernel, build = entry
    shape = tensors[0].shape
    # Shapes are dynamic but ranks are not: contiguous inputs of one shape go in as 1-d
    # views, so that (n,), (n, k) and (b, n, k) batches share one compiled kernel.
    flat = len(shape) != 1 and all(t.shape == shape and t.is_contiguous() for t in tensors)
    if flat:
        args = tuple(a.view(-1) if isinstance(a, torch.Tensor) else a for a in args)
    try:
        # The C++ settings again around the call: a kernel found in inductor's on-disk
        # cache is built when first called, outside the options given to torch.compile.
        with torch.no_grad(), _inductor_config().patch(build):
            out = kernel(*args, *tables)
    except Exception as err:  # a compile or run failure: never worse than eager
        _warn_once(device_type, f"torch.compile failed for posheads kernel {name!r} ({err!r}).")
        return None
    if flat:
        out = tuple(o.view(shape) for o in out) if isinstance(out, tuple) else out.view(shape)
    return out


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
