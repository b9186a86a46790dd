"""Speed and memory of :mod:`posheads.ops` against what a user would otherwise write.

For each op, on ``--n`` elements (10 million by default) of ``--dtype``:

* **forward**: one call under ``torch.no_grad()`` (inference);
* **forward + backward**: one call on leaves that require grad, then
  ``torch.autograd.grad(out, leaves, ones)`` (what ``out.sum().backward()`` does,
  without the reduction);
* **peak memory** of forward + backward above the inputs.

posheads is measured twice: *eager* (``ops.use_compile(False)``) and *compiled* (the
``torch.compile`` kernels of :mod:`posheads.ops._compile`, forced on at every size; the
first call, which compiles, is the warm-up and is reported separately as "first call").
Each is compared with two references measured in the same run:

1. the *composition* a user would write from torch:

   ==================================  =====================================================
   ``softplus``                         ``F.softplus(x)``
   ``softplus_inverse``                 ``y + torch.log(-torch.expm1(-y))``
   ``log_softplus``                     ``torch.log(F.softplus(x))``
   ``poisson_softplus_log_prob``        ``Poisson(F.softplus(eta)).log_prob(y)``
   ``negative_binomial_softplus_...``   ``NegativeBinomial(r, logits=log(F.softplus(eta))
                                        - log(r)).log_prob(y)``
   ==================================  =====================================================

   (distributions built with ``validate_args=False``, as in a training loop);
2. ``x.clone()``, a plain copy of one input (device to device on CUDA): the
   memory-bandwidth floor of any elementwise op, which reads at least one tensor and
   writes a new one. ``y.copy_(x)`` into a tensor allocated once is shown too; on CPU it
   skips the page faults of a fresh allocation, which every op (and ``clone``) pays.

Times are the median of ``--repeat`` runs after one warm-up, with ``time.perf_counter``
on CPU (``--clock cpu``: ``time.process_time``, the process's CPU time, which other work
on a shared machine inflates far less; with ``--threads 1`` it is the op's own work) and
CUDA events (after ``torch.cuda.synchronize()``) on CUDA. Ratios below 1 mean posheads
is faster (or smaller). After the table, the performance targets are checked:
``softplus_inverse`` forward within 1.3x of ``F.softplus``; the Poisson forward + backward
at least 4x faster than its composition; every op's forward within 2x (CPU) or 1.5x (CUDA)
of ``x.clone()``. The table times one op and version after another, so a change in the
machine's load between them moves its ratios; the first two goals are therefore timed
again, compiled, in alternating rounds (the two sides back to back in each round), and
the median of the rounds' ratios is printed too.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated()`` minus the memory allocated
before the call. On CPU, torch's allocations are invisible to ``tracemalloc``, so each
measurement runs in a fresh subprocess (one per op and version) that builds the inputs,
warms the op up on a small tensor, resets the process's resident-set high-water mark
(``echo 5 > /proc/self/clear_refs``; Linux), notes the resident set, runs forward +
backward once at full size and reads the high-water mark (``VmHWM``): the difference is
the memory the op needed beyond its inputs (outputs, saved tensors, gradients and
temporaries). Blocks of this size are ``mmap``-ed by the C allocator and returned to the
system when freed, so the mark follows torch's real peak to within a page. Where
``/proc`` is missing (macOS) the child falls back to ``resource.getrusage().ru_maxrss``,
whose mark cannot be reset: there the figure is a lower bound, since building the inputs
may already have set a higher mark.

Run ``python benchmarks/bench_ops.py --help`` for the options (``--ops`` measures some of
the ops only); the output is a markdown table followed by the machine it ran on: the CPU
model, and the SIMD width of ATen's CPU kernels (``torch.backends.cpu.get_cpu_capability()``),
of inductor's default choice and of posheads' compiled kernels (inductor's
``cpp.simdlen``, set to ATen's width by :func:`posheads.ops._compile.kernel_options`,
and the compiler flags it adds for 512-bit kernels).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py (the script's folder is on sys.path)

from posheads import ops
from posheads.ops import _compile


@dataclass(frozen=True)
class Case:
    """One op: which inputs it takes, which of them get gradients, and the two versions."""

    name: str
    inputs: tuple[str, ...]
    grad_wrt: tuple[str, ...]
    ours: Callable[..., torch.Tensor]
    composition: Callable[..., torch.Tensor]


def _poisson_composition(eta, y):
    rate = F.softplus(eta)
    return torch.distributions.Poisson(rate, validate_args=False).log_prob(y)


def _nb_composition(eta, y, r):
    logits = torch.log(F.softplus(eta)) - torch.log(r)
    nb = torch.distributions.NegativeBinomial(total_count=r, logits=logits, validate_args=False)
    return nb.log_prob(y)


CASES = [
    Case("softplus", ("x",), ("x",), ops.softplus, F.softplus),
    Case(
        "softplus_inverse",
        ("y_pos",),
        ("y_pos",),
        ops.softplus_inverse,
        lambda y: y + torch.log(-torch.expm1(-y)),
    ),
    Case("log_softplus", ("x",), ("x",), ops.log_softplus, lambda x: torch.log(F.softplus(x))),
    Case(
        "poisson_softplus_log_prob",
        ("eta", "counts"),
        ("eta",),
        ops.poisson_softplus_log_prob,
        _poisson_composition,
    ),
    Case(
        "negative_binomial_softplus_log_prob",
        ("eta", "counts", "r"),
        ("eta", "r"),
        ops.negative_binomial_softplus_log_prob,
        _nb_composition,
    ),
]
BY_NAME = {case.name: case for case in CASES}


def make_inputs(names, n, dtype, device, seed=0):
    """Inputs of realistic spread: linear predictors ~ N(0, 3^2), counts drawn from them."""
    gen = torch.Generator().manual_seed(seed)
    eta = torch.randn(n, generator=gen, dtype=dtype) * 3.0
    made = {}
    for name in names:
        if name in ("x", "eta"):
            made[name] = eta
        elif name == "y_pos":  # positive values spanning tiny to large
            made[name] = F.softplus(eta)
        elif name == "counts":
            made[name] = torch.poisson(F.softplus(eta.float()), generator=gen).to(dtype)
        elif name == "r":
            made[name] = torch.rand(n, generator=gen, dtype=dtype) * 5.0 + 0.5
    return {k: v.to(device) for k, v in made.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The CPU clock: time.perf_counter (wall time), or time.process_time (--clock cpu: the CPU
# time of this process's threads, which a busy machine inflates far less; with --threads 1
# it is the work of the op itself).
CLOCK = {"fn": time.perf_counter}


def _time_once(fn, device):
    """Seconds of one ``fn()``: CUDA events on CUDA, ``CLOCK`` elsewhere."""
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = CLOCK["fn"]()
    fn()
    return CLOCK["fn"]() - start


def median_time(fn, repeat, device, first=None):
    """Median time of ``fn()`` over ``repeat`` runs, after one warm-up run (whose time is
    stored in ``first["s"]`` when ``first`` is a dict)."""
    warm = _time_once(fn, device)
    if first is not None:
        first["s"] = warm
    return statistics.median(_time_once(fn, device) for _ in range(repeat))


# The versions measured: posheads eager, posheads compiled, the torch composition.
VARIANTS = ("eager", "compiled", "comp")


def _mode(variant):
    """The compile setting a variant runs under (compiled: at every size)."""
    if variant == "compiled":
        return ops.use_compile(True, min_numel=0)
    return ops.use_compile(False)


def _fn(case, variant):
    return case.composition if variant == "comp" else case.ours


def forward_and_backward(fn, case, inputs):
    """A closure running ``fn`` forward and backward on leaf copies of ``inputs``."""
    leaves = {k: v.detach().clone().requires_grad_(k in case.grad_wrt) for k, v in inputs.items()}
    args = [leaves[k] for k in case.inputs]
    wrt = [leaves[k] for k in case.grad_wrt]
    ones = torch.ones_like(args[0])

    def run():
        out = fn(*args)
        return torch.autograd.grad(out, wrt, ones)

    return run


def forward_only(fn, case, inputs):
    args = [inputs[k] for k in case.inputs]

    def run():
        with torch.no_grad():
            return fn(*args)

    return run


def peak_memory_cuda(fn, case, inputs):
    """Bytes allocated by forward + backward beyond what was allocated before (CUDA)."""
    run = forward_and_backward(fn, case, inputs)
    run()  # one-time allocations (kernels, workspaces) out of the way
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = run()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


def _proc_status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the high-water mark to the current resident set; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_memory_cpu_child(case_name, variant, n, dtype, threads):
    """In a fresh process: peak resident set of forward + backward above the inputs (bytes)."""
    if threads:
        torch.set_num_threads(threads)
    case = BY_NAME[case_name]
    fn = _fn(case, variant)
    device = torch.device("cpu")
    with _mode(variant):
        return _peak_memory_cpu(fn, case, dtype, device, n)


def _peak_memory_cpu(fn, case, dtype, device, n):
    """The measurement of :func:`peak_memory_cpu_child`, under the compile setting in force."""
    forward_and_backward(fn, case, make_inputs(case.inputs, 1024, dtype, device))()  # warm up
    run = forward_and_backward(fn, case, make_inputs(case.inputs, n, dtype, device))
    gc.collect()
    if _reset_peak_rss():
        before = _proc_status_kib("VmRSS")
        result = run()
        peak = _proc_status_kib("VmHWM")
        del result
        return (peak - before) * 1024
    import resource  # no /proc: a mark that cannot be reset (a lower bound, see above)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return (after - before) * scale


def peak_memory_cpu(case, variant, args):
    """Run :func:`peak_memory_cpu_child` in a subprocess; ``None`` where that fails."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_memory-child",
        f"{case.name}:{variant}",
        "--n",
        str(args.n),
        "--dtype",
        args.dtype,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return int(proc.stdout.strip().splitlines()[-1])


def _mib(nbytes):
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.0f}"


def _ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def copy_times(n, dtype, device, repeat):
    """``x.clone()`` and ``y.copy_(x)`` of one tensor of ``n`` elements."""
    x = make_inputs(("x",), n, dtype, device)["x"]
    y = torch.empty_like(x)
    return {
        "clone": median_time(x.clone, repeat, device),
        "copy_": median_time(lambda: y.copy_(x), repeat, device),
    }


def run_benchmark(args):
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    n = args.n
    copies = copy_times(n, dtype, device, args.repeat)
    variants = [v for v in VARIANTS if v != "compiled" or not args.no_compile]

    rows = []
    for case in [c for c in CASES if c.name in args.ops]:
        inputs = make_inputs(case.inputs, n, dtype, device)
        result = {"case": case.name}
        for variant in variants:
            fn = _fn(case, variant)
            first = {}
            with _mode(variant):
                result[f"fwd_{variant}"] = median_time(
                    forward_only(fn, case, inputs), args.repeat, device, first
                )
                result[f"first_{variant}"] = first["s"]
                result[f"fb_{variant}"] = median_time(
                    forward_and_backward(fn, case, inputs), args.repeat, device, first
                )
                result[f"first_{variant}"] += first["s"]
                if args.no_memory:
                    result[f"mem_{variant}"] = None
                elif device.type == "cuda":
                    result[f"mem_{variant}"] = peak_memory_cuda(fn, case, inputs)
                else:
                    result[f"mem_{variant}"] = peak_memory_cpu(case, variant, args)
                # Inside the mode: leaving it re-enables compilation, which forgets failures.
                if variant == "compiled" and device.type in _compile.failed_devices():
                    result["fell_back"] = True  # the compiled figures are eager ones
        rows.append(result)
        del inputs
        gc.collect()
    return copies, rows


def _get(row, key):
    return row.get(key)


def format_table(copies, rows, args):
    ms = 1e3
    clone = copies["clone"]
    lines = [
        f"{args.n:,} {args.dtype} elements on {args.device}; median of {args.repeat} runs; "
        f"copy: x.clone() = {clone * ms:.1f} ms, y.copy_(x) = {copies['copy_'] * ms:.1f} ms",
        "",
        "ms: posheads eager / posheads compiled / torch composition; ratios: eager, compiled.",
        "",
        "| op | fwd ms | fwd ÷ torch | fwd ÷ clone "
        "| fwd+bwd ms | fwd+bwd ÷ torch | fwd+bwd ÷ clone "
        "| peak MiB fwd+bwd | peak ÷ torch | first call s (compiled) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def both(r, key, ref):
        return " / ".join(_ratio(_get(r, f"{key}_{v}"), ref) for v in ("eager", "compiled"))

    def three(r, key, fmt):
        return " / ".join(fmt(_get(r, f"{key}_{v}")) for v in VARIANTS)

    def msf(t):
        return "n/a" if t is None else f"{t * ms:.1f}"

    for r in rows:
        first = _get(r, "first_compiled")
        name = r["case"] + (" (compile fell back)" if r.get("fell_back") else "")
        lines.append(
            f"| {name} "
            f"| {three(r, 'fwd', msf)} "
            f"| {both(r, 'fwd', r['fwd_comp'])} "
            f"| {both(r, 'fwd', clone)} "
            f"| {three(r, 'fb', msf)} "
            f"| {both(r, 'fb', r['fb_comp'])} "
            f"| {both(r, 'fb', clone)} "
            f"| {three(r, 'mem', _mib)} "
            f"| {both(r, 'mem', r['mem_comp'])} "
            f"| {'n/a' if first is None else f'{first:.1f}'} |"
        )
    return "\n".join(lines)


def check_targets(copies, rows, device_type):
    """Lines saying which performance targets are met (best of eager and compiled)."""
    by = {r["case"]: r for r in rows}

    def best(row, key):
        times = [row.get(f"{key}_{v}") for v in ("eager", "compiled")]
        return min(t for t in times if t is not None)

    copy_bound = 1.5 if device_type == "cuda" else 2.0
    lines = ["Targets (best of eager and compiled):"]
    if "softplus_inverse" in by and "softplus" in by:
        inv = best(by["softplus_inverse"], "fwd") / by["softplus"]["fwd_comp"]
        lines.append(f"- softplus_inverse fwd ÷ F.softplus fwd = {inv:.2f} (target <= 1.3): "
                     + ("met" if inv <= 1.3 else "NOT met"))
    if "poisson_softplus_log_prob" in by:
        pois = by["poisson_softplus_log_prob"]
        speedup = pois["fb_comp"] / best(pois, "fb")
        lines.append(f"- Poisson fwd+bwd speed-up over the composition = {speedup:.2f}x "
                     "(target >= 4): " + ("met" if speedup >= 4.0 else "NOT met"))
    for r in rows:
        ratio = best(r, "fwd") / copies["clone"]
        lines.append(
            f"- {r['case']} fwd ÷ x.clone() = {ratio:.2f} (target <= {copy_bound}): "
            + ("met" if ratio <= copy_bound else "NOT met")
        )
    return "\n".join(lines)


def paired_ratio(fn, ref, rounds, device, mode):
    """Median over ``rounds`` of ``time(fn) / time(ref)``, the two timed back to back in
    each round (``fn`` under the compile setting ``mode``): a change in the machine's load
    falls on both, unlike in the table, which times one op and version after another."""
    with mode():
        fn()
    ref()
    ratios = []
    for _ in range(rounds):
        with mode():
            t = _time_once(fn, device)
        ratios.append(t / _time_once(ref, device))
    return statistics.median(ratios)


def interleaved_targets(args):
    """The two ratio goals, timed in alternating rounds: the compiled ``softplus_inverse``
    forward against ``F.softplus``, and the Poisson forward + backward, composition
    against compiled (a speed-up)."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rounds = 2 * args.repeat + 1
    mode = lambda: _mode("compiled")  # noqa: E731
    inv, sp = BY_NAME["softplus_inverse"], BY_NAME["softplus"]
    inputs = make_inputs(("x", "y_pos", "eta", "counts"), args.n, dtype, device)
    inverse = paired_ratio(forward_only(inv.ours, inv, inputs),
                           forward_only(sp.composition, sp, inputs), rounds, device, mode)
    pois = BY_NAME["poisson_softplus_log_prob"]
    speedup = 1.0 / paired_ratio(forward_and_backward(pois.ours, pois, inputs),
                                 forward_and_backward(pois.composition, pois, inputs),
                                 rounds, device, mode)
    return "\n".join([
        f"Targets, compiled, in {rounds} alternating rounds (median of the rounds' ratios):",
        f"- softplus_inverse fwd ÷ F.softplus fwd = {inverse:.2f} (target <= 1.3): "
        + ("met" if inverse <= 1.3 else "NOT met"),
        f"- Poisson fwd+bwd speed-up over the composition = {speedup:.2f}x (target >= 4): "
        + ("met" if speedup >= 4.0 else "NOT met"),
    ])


def vector_widths():
    """The SIMD widths of ATen's CPU kernels, of inductor's default and of posheads' kernels."""
    try:
        widths = _compile.cpu_vector_widths()
    except Exception as err:  # no inductor, or no C++ compiler
        return f"vector widths unknown ({err!r})"
    (cap, aten), (isa, default), (used, ours) = (
        widths["aten"], widths["inductor_default"], widths["kernels"])
    march = widths.get("march")
    flags = f", compiled with -march={march}" if march else ""
    return (f"SIMD: ATen {cap} ({aten or '?'}-bit), inductor default {isa} ({default}-bit), "
            f"posheads kernels {used} ({ours}-bit{flags})")


def machine(args):
    device = torch.device(args.device)
    gpu = f"; GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    # Other work on the machine skews times (ratios less so): say how busy it was.
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    clock = "CUDA events" if device.type == "cuda" else (
        "CPU time (process_time)" if args.clock == "cpu" else "wall time")
    return (
        f"Machine: {cpu_model()} ({platform.machine()}), "
        f"{os.cpu_count()} CPUs{load}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}{gpu}; "
        f"{clock}\n{vector_widths()}"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="elements per tensor")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs (median reported)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled variant (eager only)"
    )
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"],
        help="CPU timing: wall time, or this process's CPU time (steadier on a busy machine)",
    )
    parser.add_argument(
        "--ops", nargs="+", default=[c.name for c in CASES], choices=[c.name for c in CASES],
        metavar="OP", help="the ops to measure (default: all)",
    )
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.clock == "cpu":
        CLOCK["fn"] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        name, variant = args.memory_child.split(":")
        dtype = getattr(torch, args.dtype)
        print(peak_memory_cpu_child(name, variant, args.n, dtype, args.threads))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA device is available")
    copies, rows = run_benchmark(args)
    print(format_table(copies, rows, args))
    print()
    print(check_targets(copies, rows, torch.device(args.device).type))
    print()
    if not args.no_compile:
        print(interleaved_targets(args))
        print()
    print(machine(args))


if __name__ == "__main__":
    main()
