"""Stable softplus functions and fused count log-likelihoods (pure torch, no Pyro).

The public face of the ops layer: the softplus family lives in
:mod:`posheads.ops.softplus_family`, the fused Poisson and NB2 log-likelihoods in
:mod:`posheads.ops.count_logprob`, the compiled fast path in :mod:`posheads.ops._compile`
(dispatch) and :mod:`posheads.ops._kernels` (the kernels' numerics). The derivations are
in ``docs/softplus.md`` (the softplus family and the kernels' numerics) and
``docs/count-likelihoods.md`` (the log-likelihoods and their derivatives).

Notation: ``s(x) = softplus_beta(x) = log(1 + exp(beta * x)) / beta`` and ``z = beta * x``.

Every function here is finite, with finite gradients, for every finite input of
float16, bfloat16, float32 and float64; reduced-precision inputs are computed in
float32 and rounded once. All functions broadcast like torch.

Where posheads differs from ``torch.nn.functional.softplus``
------------------------------------------------------------
torch switches to the linear branch ``s(x) = x`` wherever ``beta * x > threshold``.
Below the point where ``exp(-z)`` drops under half an ulp of ``z`` the two branches
round to different floats, so the switch is a visible downward step: with the default
threshold 20 in float64, torch's softplus drops by ``exp(-20) = 2.1e-9`` at ``x = 20``
and is not monotone. posheads takes the linear branch only where it is exact in the
dtype of the input, at ``z > max(threshold, z_exact)`` with ``z_exact`` 36 for float64,
16 for float32 and 8 for float16/bfloat16 (see :func:`linear_switch`). The result is
non-decreasing and continuous in every dtype. Values equal torch's everywhere except
for ``threshold < z <= z_exact``, where posheads returns the smooth value and torch
returns ``x``; they differ there by at most ``exp(-threshold) / beta`` (2.1e-9 for
float64 with the default threshold; float32, float16 and bfloat16 with the default
threshold are not affected at all). A threshold above ``z_exact`` changes no value,
and is capped where ``exp(z)`` would overflow, so large thresholds never give ``inf``.

Compiled fast path
------------------
On CUDA tensors and large CPU tensors (``2**16`` and ``2**20`` elements), the forward
passes and the common backward passes run as single fused kernels built by
``torch.compile``: the same formulas, to a few ulps, in one pass over memory. Where the
input requires grad, the forward kernel returns the derivative too, and the backward
multiplies it by the incoming gradient in place (no recomputation, no new tensor).
``POSHEADS_COMPILE=0``, :func:`set_compile` or :func:`use_compile` turn it off; where no
compiler is found, or a kernel fails to build, posheads warns once
(:class:`CompileWarning`) and computes eagerly. Double backward always uses the eager
guarded path.

Building blocks for the layers above
------------------------------------
:func:`check_link_args` checks ``beta`` and ``threshold`` as every op does;
:func:`softplus_branches` returns the guarded ``s``, ``log s``, ``sigmoid(z)`` and
``d log s / dx`` (safe under double backward); :func:`softplus_derivatives` returns the
same for a backward pass, by the plain forms where they are exact.
"""

from __future__ import annotations

from ._compile import CompileWarning, set_compile, use_compile
from ._shared import check_link_args
from .count_logprob import negative_binomial_softplus_log_prob, poisson_softplus_log_prob
from .softplus_family import (
    linear_switch,
    log_softplus,
    softplus,
    softplus_branches,
    softplus_derivatives,
    softplus_inverse,
)

__all__ = [
    "CompileWarning",
    "check_link_args",
    "linear_switch",
    "log_softplus",
    "negative_binomial_softplus_log_prob",
    "poisson_softplus_log_prob",
    "set_compile",
    "softplus",
    "softplus_branches",
    "softplus_derivatives",
    "softplus_inverse",
    "use_compile",
]
