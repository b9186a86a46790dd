"""Helpers the autograd functions of :mod:`posheads.ops` share.

The package-internal API of the ops layer, used by :mod:`posheads.ops.softplus_family` and
:mod:`posheads.ops.count_logprob`:

* arguments and dtypes: :func:`check_link_args` (public through :mod:`posheads.ops`),
  :func:`compute_dtype`, :func:`prepare`;
* shapes and temporaries: :func:`reduce_to` (a broadcast gradient summed back to its
  input's shape), :func:`fits`, :func:`imul` and :func:`isub` (arithmetic in place in a
  temporary where the shapes allow, so that no extra full-size tensor is made);
* the compiled kernels' derivatives: :func:`wants_grad`, :func:`run_with_grad` and
  :func:`saved_grad` (a forward that computes its derivative too keeps it for the
  backward, which multiplies it by the incoming gradient in place).
"""

from __future__ import annotations

import math

import torch

from . import _compile

__all__ = [
    "check_link_args",
    "compute_dtype",
    "fits",
    "imul",
    "isub",
    "prepare",
    "reduce_to",
    "run_with_grad",
    "saved_grad",
    "wants_grad",
]


def check_link_args(beta: float, threshold: float) -> None:
    """Check the arguments of a softplus link, as every op of :mod:`posheads.ops` does.

    Parameters
    ----------
    beta : float
        Softness; must be a finite number ``> 0``.
    threshold : float
        Linear-switch threshold; must be a number ``> 0``.

    Raises
    ------
    ValueError
        Naming the argument that is out of range (or not a number).
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ValueError(f"threshold must be a number > 0, got {threshold!r}")


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the ops compute in: the promoted floating dtype of ``tensors`` (the
    default dtype where none is floating), with float16 and bfloat16 raised to float32
    so that a result is rounded once, at the end."""
    dtype = torch.get_default_dtype()
    floats = [t.dtype for t in tensors if t is not None and t.is_floating_point()]
    if floats:
        dtype = floats[0]
        for d in floats[1:]:
            dtype = torch.promote_types(dtype, d)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor from ``x``; a Python number takes the floating dtype of ``like``."""
    if isinstance(x, torch.Tensor):
        return x
    if like is not None:
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(x, dtype=dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.get_default_dtype())


def prepare(eta, *others):
    """Cast ``eta`` and the other tensors to one floating compute dtype.

    Returns
    -------
    eta : Tensor
        ``eta`` in the compute dtype (:func:`compute_dtype` of all inputs).
    others : list of Tensor or None
        The other inputs in the compute dtype; a Python number becomes a tensor on
        ``eta``'s device, ``None`` (an absent optional input) stays ``None``.
    out_dtype : torch.dtype
        The dtype of the result: ``eta``'s (its compute dtype if it is an integer
        tensor) promoted with every floating input's.
    """
    eta = _as_tensor(eta)
    others = [None if o is None else _as_tensor(o, like=eta) for o in others]
    compute = compute_dtype(eta, *others)
    out_dtype = eta.dtype if eta.is_floating_point() else compute
    for o in others:
        if o is not None and o.is_floating_point():
            out_dtype = torch.promote_types(out_dtype, o.dtype)
    cast = [None if o is None else o.to(compute) for o in others]
    return eta.to(compute), cast, out_dtype


def reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.dim() - len(shape)
    if extra > 0:
        grad = grad.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    return grad


def fits(a: torch.Tensor, b) -> bool:
    """Whether ``a op= b`` is possible: ``b`` broadcasts into ``a``'s shape."""
    shape = b.shape if isinstance(b, torch.Tensor) else ()
    # by hand, not torch.broadcast_shapes: that imports sympy (about a second) on first use
    lead = a.dim() - len(shape)
    if lead < 0:
        return False
    return all(n == 1 or n == m for n, m in zip(shape, a.shape[lead:], strict=True))


def imul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b``, in place in ``a`` (a temporary) when the shapes allow."""
    return a.mul_(b) if fits(a, b) else a * b


def isub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a - b``, in place in ``a`` (a temporary) when the shapes allow."""
    return a.sub_(b) if fits(a, b) else a - b


def wants_grad(x: torch.Tensor, *others) -> bool:
    """Whether a forward should compute its derivative for ``x`` too: ``x`` requires grad
    under grad mode, and nothing else does (the in-place backward serves ``x`` only)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return False
    return not any(o is not None and o.requires_grad for o in others)


def run_with_grad(ctx, name, *args, with_grad, tables=()):
    """Run the compiled kernel ``name`` (None where it does not run). With ``with_grad``,
    run ``name + "_and_grad"`` and keep the derivative it returns for the backward, in
    ``ctx.slope`` (an intermediate, not an input or output, so not saved for double
    backward, which takes the eager path)."""
    ctx.slope = None
    if not with_grad:
        return _compile.run(name, *args, tables=tables)
    out = _compile.run(name + "_and_grad", *args, tables=tables)
    if out is None:
        return None
    out, ctx.slope = out
    return out


def saved_grad(ctx, grad: torch.Tensor) -> torch.Tensor | None:
    """``grad`` times the derivative the forward kept, in place in it (so no new tensor);
    None where there is none: the forward did not compute it, or a backward with
    ``retain_graph=True`` already consumed it (the kernels then recompute it)."""
    slope, ctx.slope = getattr(ctx, "slope", None), None
    return None if slope is None else imul(slope, grad)
