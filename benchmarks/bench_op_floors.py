"""Benchmark: how close the fused count log-likelihoods can come to a plain copy.

The op benchmark (``bench_ops.py``) asks every op's forward to take at most twice the
time of ``x.clone()``. This script measures, in one run and against the same clone,
what a compiled forward of each count log-likelihood cannot go below on this machine:

* ``read k, write 1``: a compiled elementwise kernel with the op's inputs and one output
  (``eta + y`` for the Poisson, ``eta + y * r`` for the NB) -- memory traffic and the
  page faults of the fresh output, no arithmetic to speak of;
* ``without lgamma``: the op's compiled kernel with its ``lgamma`` terms left out (the
  softplus pieces, the logs of the rate and the products), so a lower bound for any
  kernel that also has to evaluate or look up those terms;
* ``full op``: ``posheads.ops`` itself (the compiled path, from ``2**20`` elements).

Inputs are those of ``bench_ops.py`` (10M float32, linear predictors ~ N(0, 3^2), counts
drawn from them, ``r`` uniform on [0.5, 5.5]). The time of a clone of 40 MB swings by a
third from one minute to the next on this machine (its page faults), so each kernel is
timed in ``--repeat`` rounds that alternate it with ``x.clone()``, and the figure is the
median of the rounds' ratios.

Usage::

    python benchmarks/bench_op_floors.py [--n 10000000] [--repeat 15] [--device cpu] [--clock cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from bench_ops import CLOCK, _time_once, machine, make_inputs

from posheads import ops
from posheads.ops import _kernels as K
from posheads.ops._compile import kernel_options


def _poisson_without_lgamma(eta, y, beta, switch, log_beta):
    return K.poisson_terms(eta, y, None, beta, switch, log_beta)[0]


def _nb_without_lgamma(eta, y, r, beta, switch, log_beta):
    d = K.nb_logit(eta, r, None, beta, switch, log_beta)[1]
    sp_d, sp_minus_d = K.sp_pair(d)
    return -(y * sp_minus_d + r * sp_d)


def _compile_kernel(fn):
    """``fn`` compiled as posheads compiles its kernels (vector width and compiler flags
    included), with the C++ settings applied around each call too, as
    :func:`posheads.ops._compile.run` does (a kernel from inductor's on-disk cache is built
    on its first call)."""
    from torch._inductor import config

    options = kernel_options()
    kernel = torch.compile(fn, dynamic=True, fullgraph=True, options=options)
    build = {k: v for k, v in options.items() if k.startswith("cpp.")}

    def call(*args):
        with config.patch(build):
            return kernel(*args)

    return call


def rows(n, dtype, device, repeat):
    inputs = make_inputs(("eta", "counts", "r"), n, dtype, device)
    eta, y, r = inputs["eta"], inputs["counts"], inputs["r"]
    switch = ops.linear_switch(dtype)
    link = (1.0, switch, math.log(1.0))
    copy2 = _compile_kernel(lambda a, b: a + b)
    copy3 = _compile_kernel(lambda a, b, c: a + b * c)
    poisson_core = _compile_kernel(_poisson_without_lgamma)
    nb_core = _compile_kernel(_nb_without_lgamma)
    with torch.no_grad():
        cases = {
            "Poisson log-prob": [
                ("read 2, write 1", lambda: copy2(eta, y)),
                ("without lgamma", lambda: poisson_core(eta, y, *link)),
                ("full op", lambda: ops.poisson_softplus_log_prob(eta, y)),
            ],
            "NB log-prob": [
                ("read 3, write 1", lambda: copy3(eta, y, r)),
                ("without lgamma", lambda: nb_core(eta, y, r, *link)),
                ("full op", lambda: ops.negative_binomial_softplus_log_prob(eta, y, r)),
            ],
        }
        out = []
        for op, variants in cases.items():
            for name, fn in variants:
                fn()  # compile, warm up
                ratios = [_time_once(fn, device) / _time_once(eta.clone, device)
                          for _ in range(repeat)]
                out.append((op, name, statistics.median(ratios), min(ratios), max(ratios)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="CPU timing: wall time, or this process's CPU time")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        CLOCK["fn"] = time.process_time
    device = torch.device(args.device)
    out = rows(args.n, torch.float32, device, args.repeat)
    print(f"{args.n:,} float32 elements on {device}; {args.repeat} alternating rounds\n")
    print("| op | kernel | forward ÷ x.clone(), median | range |")
    print("|---|---|---|---|")
    for op, name, ratio, low, high in out:
        print(f"| {op} | {name} | {ratio:.2f} | {low:.2f}-{high:.2f} |")
    print()
    print(machine(args))


if __name__ == "__main__":
    main()
