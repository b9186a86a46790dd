"""Fused count log-likelihoods of :mod:`posheads.ops`: Poisson and NB2 under a softplus link.

Each is one autograd node with a hand-derived backward that saves only its inputs, a
compiled kernel where it pays (:mod:`posheads.ops._compile`) and an eager path of
in-place passes otherwise. The log-likelihoods and their derivatives are derived in
``docs/count-likelihoods.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _compile
from ._shared import (
    check_link_args,
    fits,
    imul,
    isub,
    prepare,
    reduce_to,
    run_with_grad,
    saved_grad,
    wants_grad,
)
from .softplus_family import (
    linear_switch,
    softplus_and_log,
    softplus_branches,
    softplus_derivatives,
)

__all__ = ["negative_binomial_softplus_log_prob", "poisson_softplus_log_prob"]


class _PoissonSoftplusLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, eta, y, exposure, beta, switch, with_grad):
        ctx.save_for_backward(eta, y, exposure)
        ctx.beta, ctx.switch = beta, switch
        args = (eta, y, exposure, beta, switch, math.log(beta))
        counts = _compile.count_table(y) if y.dtype == eta.dtype else None
        out = None
        if counts is not None:  # lgamma(y + 1) from a table
            table, small = counts
            out = run_with_grad(
                ctx, "poisson_counts", *args, small, with_grad=with_grad, tables=(table,)
            )
        if out is None:
            out = run_with_grad(ctx, "poisson", *args, with_grad=with_grad)
        if out is not None:
            return out
        s = F.softplus(eta, beta=beta, threshold=switch)
        if bool((s < torch.finfo(s.dtype).tiny).any()):  # log s needs the guarded branch
            s, log_s = softplus_branches(eta, beta, switch)[:2]
        else:
            log_s = torch.log(s)
            if with_grad:
                # the derivative now, from this softplus (the backward then needs no second
                # one and no second check): the backward's own passes, on a copy of 1 / s
                ctx.slope = _poisson_slope(torch.reciprocal(s), eta, y, exposure, beta)
        # In place wherever the shapes allow: every full-size temporary raises the peak
        # memory (and costs a pass of page faults on CPU); nothing here is recorded by
        # autograd.
        if exposure is None:
            out = imul(log_s, y).sub_(s)
        else:
            log_mu = (
                log_s.add_(torch.log(exposure))
                if fits(log_s, exposure)
                else log_s + torch.log(exposure)
            )
            out = imul(log_mu, y)
            out.sub_(s.mul_(exposure) if fits(s, exposure) else s * exposure)
        del s, log_s
        return out.sub_(torch.add(y, 1.0).lgamma_())

    @staticmethod
    def backward(ctx, grad):
        eta, y, exposure = ctx.saved_tensors
        if not torch.is_grad_enabled() and not any(ctx.needs_input_grad[1:3]):
            g_eta = saved_grad(ctx, grad)
            if g_eta is None:
                args = (eta, y, exposure, grad, ctx.beta, ctx.switch)
                g_eta = _compile.run("poisson_grad_eta", *args)
            if g_eta is None:
                g_eta = _poisson_eta_grad(eta, y, exposure, ctx.beta, ctx.switch, grad)
            if g_eta is not None:
                return reduce_to(g_eta, eta.shape), None, None, None, None, None
        s, log_s, sig, dlog = softplus_derivatives(
            eta, ctx.beta, ctx.switch, need_log=ctx.needs_input_grad[1]
        )
        t = 1.0 if exposure is None else exposure
        g_eta = g_y = g_t = None
        if ctx.needs_input_grad[0]:
            # d/d eta = sigmoid(z) (y / s - t), with sigmoid(z) / s = dlog kept finite.
            g_eta = reduce_to(grad * (y * dlog - t * sig), eta.shape)
        if ctx.needs_input_grad[1]:
            log_mu = log_s if exposure is None else log_s + torch.log(exposure)
            g_y = reduce_to(grad * (log_mu - torch.digamma(y + 1.0)), y.shape)
        if exposure is not None and ctx.needs_input_grad[2]:
            g_t = reduce_to(grad * (y / exposure - s), exposure.shape)
        return g_eta, g_y, g_t, None, None, None


def _poisson_eta_grad(eta, y, exposure, beta, switch, grad):
    """``grad * sigmoid(z) * (y / s - t)`` in a few in-place passes (None: use the
    guarded path, where ``s`` is not a normal float)."""
    s = F.softplus(eta, beta=beta, threshold=switch)
    if bool((s < torch.finfo(s.dtype).tiny).any()):
        return None
    return _poisson_slope(s.reciprocal_(), eta, y, exposure, beta).mul_(grad)


def _poisson_slope(inv_s, eta, y, exposure, beta):
    """``sigmoid(z) * (y / s - t)`` from ``inv_s = 1 / s`` (a temporary, used in place)."""
    sig = torch.sigmoid(eta * beta if beta != 1.0 else eta)
    # y * (sigmoid / s) - t * sigmoid: the ratio first, as y / s alone can overflow.
    g = imul(inv_s.mul_(sig), y)
    return g.sub_(sig) if exposure is None else g - exposure * sig


def poisson_softplus_log_prob(
    eta: torch.Tensor,
    y: torch.Tensor,
    beta: float = 1.0,
    threshold: float = 20.0,
    exposure: torch.Tensor | None = None,
) -> torch.Tensor:
    """Poisson log-likelihood of counts ``y`` with mean ``exposure * softplus(eta)``.

    ``y log(mu) - mu - lgamma(y + 1)`` with ``log(mu)`` from
    :func:`~posheads.ops.log_softplus`, in one autograd node whose hand-derived backward
    saves only the inputs: ``d/d eta = sigmoid(beta * eta) * (y / s - t)``.

    Parameters
    ----------
    eta : Tensor, shape broadcastable with ``y``
        Linear predictor.
    y : Tensor
        Counts (non-negative; integer or floating dtype). Not validated here: the
        distributions layer does that.
    beta, threshold : float
        As in :func:`~posheads.ops.softplus`.
    exposure : Tensor, optional
        Positive exposure ``t`` multiplying the mean; gradients flow to it too.

    Returns
    -------
    Tensor, shape ``broadcast(eta, y, exposure)``
        Finite for every finite ``eta``, with finite gradients.
    """
    check_link_args(beta, threshold)
    eta_c, (y_c, t_c), out_dtype = prepare(eta, y, exposure)
    switch = linear_switch(out_dtype, threshold)
    with_grad = wants_grad(eta_c, y_c, t_c)
    out = _PoissonSoftplusLogProb.apply(eta_c, y_c, t_c, float(beta), switch, with_grad)
    return out.to(out_dtype)


class _NegativeBinomialSoftplusLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, eta, y, r, exposure, beta, switch, with_grad=False, need_r=False):
        ctx.save_for_backward(eta, y, r, exposure)
        ctx.beta, ctx.switch = beta, switch
        ctx.slope = ctx.slope_r = None
        out = _compile.run("negative_binomial", eta, y, r, exposure, beta, switch, math.log(beta))
        if out is not None:
            return out
        if with_grad:
            out = _nb_value_and_slopes(ctx, eta, y, r, exposure, beta, switch, need_r)
            if out is not None:
                return out
        s, log_s = softplus_and_log(eta, beta, switch)
        del s
        d = _nb_logit(log_s, r, exposure, inplace=True)
        # -(y softplus(-d) + r softplus(d) + lgamma(y + 1) + lgamma(r) - lgamma(y + r)): the
        # first product has the full broadcast shape, the rest go into it in place.
        out = imul(F.softplus(-d, threshold=_NO_OVERFLOW_SP), y)
        out.add_(imul(F.softplus(d, threshold=_NO_OVERFLOW_SP), r))
        del d
        out.add_(torch.add(y, 1.0).lgamma_()).add_(torch.lgamma(r))
        return out.sub_(torch.add(y, r).lgamma_()).neg_()

    @staticmethod
    def backward(ctx, grad):
        eta, y, r, exposure = ctx.saved_tensors
        needs = ctx.needs_input_grad
        slope, slope_r, ctx.slope, ctx.slope_r = ctx.slope, ctx.slope_r, None, None
        if (not torch.is_grad_enabled() and not needs[1] and not needs[3]
                and slope is not None and (slope_r is not None or not needs[2])):
            # the derivatives the forward kept, times grad in place
            g_eta = reduce_to(imul(slope, grad), eta.shape) if needs[0] else None
            g_r = reduce_to(imul(slope_r, grad), r.shape) if needs[2] else None
            return g_eta, None, g_r, None, None, None, None, None
        if not torch.is_grad_enabled() and not needs[1] and not needs[3]:
            # The common cases (gradients for eta, and for r when it is learnt) in fused
            # or in-place passes; None where the guarded path below is needed.
            grads = _nb_fast_grads(eta, y, r, exposure, ctx.beta, ctx.switch, grad, needs[2])
            if grads is not None:
                g_eta, g_r = grads
                g_eta = reduce_to(g_eta, eta.shape) if needs[0] else None
                g_r = None if g_r is None else reduce_to(g_r, r.shape)
                return g_eta, None, g_r, None, None, None, None, None
        _, log_s, _, dlog = softplus_derivatives(eta, ctx.beta, ctx.switch)
        d = _nb_logit(log_s, r, exposure)
        p = torch.sigmoid(d)  # mu / (r + mu)
        q = torch.sigmoid(-d)  # r / (r + mu)
        # dl/dd = r (y - mu) / (r + mu) = y q - r p, with d = log(mu) - log(r).
        dl_dd = y * q - r * p
        g_eta = g_y = g_r = g_t = None
        if ctx.needs_input_grad[0]:
            g_eta = reduce_to(grad * dl_dd * dlog, eta.shape)
        if ctx.needs_input_grad[1]:
            dy = torch.digamma(y + r) - torch.digamma(y + 1.0)
            dy = dy - F.softplus(-d, threshold=_NO_OVERFLOW_SP)
            g_y = reduce_to(grad * dy, y.shape)
        if ctx.needs_input_grad[2]:
            dr = torch.digamma(y + r) - torch.digamma(r)
            dr = dr - F.softplus(d, threshold=_NO_OVERFLOW_SP) - dl_dd / r
            g_r = reduce_to(grad * dr, r.shape)
        if exposure is not None and ctx.needs_input_grad[3]:
            g_t = reduce_to(grad * dl_dd / exposure, exposure.shape)
        return g_eta, g_y, g_r, g_t, None, None, None, None


# softplus of the NB logit uses torch's kernel with a switch where its linear branch is
# exact in float64 (and hence in float32).
_NO_OVERFLOW_SP = 36.0


def _log_softplus_and_slope(eta, beta, switch):
    """``(log s, d log s / d eta)`` with ``s = softplus_beta(eta)``, the second in ``s``'s
    storage; None where ``s`` is not a normal float (the guarded path handles those rows)."""
    s = F.softplus(eta, beta=beta, threshold=switch)
    if bool((s < torch.finfo(s.dtype).tiny).any()):
        return None
    log_s = torch.log(s)
    return log_s, s.reciprocal_().mul_(torch.sigmoid(eta * beta if beta != 1.0 else eta))


def _nb_value_and_slopes(ctx, eta, y, r, exposure, beta, switch, need_r):
    """The forward's value, keeping in ``ctx.slope`` (and ``ctx.slope_r`` with ``need_r``)
    the derivatives for ``eta`` (and ``r``) that the backward's in-place passes give, from
    the forward's softplus and logit; None (nothing kept) where ``s`` is not a normal float.
    """
    pieces = _log_softplus_and_slope(eta, beta, switch)
    if pieces is None:
        return None
    log_s, dlog = pieces
    d = _nb_logit(log_s, r, exposure, inplace=True)
    sp_neg = F.softplus(-d, threshold=_NO_OVERFLOW_SP)
    sp_d = F.softplus(d, threshold=_NO_OVERFLOW_SP)
    if need_r:  # digamma(y + r) - digamma(r) - softplus(d), then - (dl/dd) / r
        dr = torch.add(y, r).digamma_()
        dr = dr.sub_(torch.digamma(r)) if fits(dr, r) else dr - torch.digamma(r)
        dr = isub(dr, sp_d)
    p = d.sigmoid_()
    del d
    dl_dd = imul(p, torch.add(y, r)).neg_().add_(y)  # y q - r p = y - (y + r) p
    del p
    if need_r:
        ctx.slope_r = isub(dr, dl_dd / r)
    ctx.slope = imul(dlog, dl_dd)
    del dlog, dl_dd
    # -(y softplus(-d) + r softplus(d) + lgamma(y + 1) + lgamma(r) - lgamma(y + r))
    out = imul(sp_neg, y)
    out.add_(imul(sp_d, r))
    out.add_(torch.add(y, 1.0).lgamma_()).add_(torch.lgamma(r))
    return out.sub_(torch.add(y, r).lgamma_()).neg_()


def _nb_fast_grads(eta, y, r, exposure, beta, switch, grad, need_r):
    """``(d/d eta, d/d r or None)`` times ``grad``, unreduced; None: use the guarded path."""
    args = (eta, y, r, exposure, grad, beta, switch, math.log(beta))
    if need_r:
        grads = _compile.run("negative_binomial_grad_eta_r", *args)
        return _nb_eta_r_grads(*args[:-1]) if grads is None else grads
    g_eta = _compile.run("negative_binomial_grad_eta", *args)
    if g_eta is None:
        g_eta = _nb_eta_grad(eta, y, r, exposure, beta, switch, grad)
    return None if g_eta is None else (g_eta, None)


def _nb_eta_r_grads(eta, y, r, exposure, grad, beta, switch):
    """Gradients for ``eta`` and ``r`` in place, at most four full-size tensors alive at once
    (the two results included); None where ``s`` is not a normal float."""
    pieces = _log_softplus_and_slope(eta, beta, switch)
    if pieces is None:
        return None
    d, dlog = pieces
    d = _nb_logit(d, r, exposure, inplace=True)
    # dl/dr = digamma(y + r) - digamma(r) - softplus(d) - (dl/dd) / r
    dr = torch.add(y, r).digamma_()
    dr = dr.sub_(torch.digamma(r)) if fits(dr, r) else dr - torch.digamma(r)
    dr = isub(dr, F.softplus(d, threshold=_NO_OVERFLOW_SP))
    p = d.sigmoid_()
    del d
    dl_dd = imul(p, torch.add(y, r)).neg_().add_(y)  # y q - r p = y - (y + r) p
    del p
    dr = isub(dr, dl_dd / r).mul_(grad)
    return imul(dlog, dl_dd).mul_(grad), dr


def _nb_eta_grad(eta, y, r, exposure, beta, switch, grad):
    """``grad * (y - (y + r) p) * sigmoid(z) / s`` with ``p = mu / (r + mu)``, in a few
    in-place passes (None: use the guarded path, where ``s`` is not a normal float)."""
    s = F.softplus(eta, beta=beta, threshold=switch)
    if bool((s < torch.finfo(s.dtype).tiny).any()):
        return None
    p = _nb_logit(torch.log(s), r, exposure, inplace=True).sigmoid_()
    g = imul(p, torch.add(y, r)).neg_().add_(y)  # dl/dd = y q - r p = y - (y + r) p
    # sigmoid / s first: sigmoid(z) * (y - ...) alone can underflow to 0 where both are tiny.
    g.mul_(s.reciprocal_().mul_(torch.sigmoid(eta * beta if beta != 1.0 else eta)))
    return g.mul_(grad)


def _nb_logit(log_s, r, exposure, inplace=False):
    """``d = log(mu) - log(r)``: the logit of ``mu / (r + mu)`` (``inplace``: in ``log_s``,
    a temporary of the caller's, where the shapes allow)."""
    if inplace and fits(log_s, r) and (exposure is None or fits(log_s, exposure)):
        if exposure is not None:
            log_s.add_(torch.log(exposure))
        return log_s.sub_(torch.log(r))
    log_mu = log_s if exposure is None else log_s + torch.log(exposure)
    return log_mu - torch.log(r)


def negative_binomial_softplus_log_prob(
    eta: torch.Tensor,
    y: torch.Tensor,
    total_count: torch.Tensor,
    beta: float = 1.0,
    threshold: float = 20.0,
    exposure: torch.Tensor | None = None,
) -> torch.Tensor:
    """NB2 log-likelihood of counts ``y`` with mean ``mu = exposure * softplus(eta)``.

    The variance is ``mu + mu**2 / total_count``. Written with ``d = log(mu) - log(r)``
    as ``lgamma(y + r) - lgamma(r) - lgamma(y + 1) - y softplus(-d) - r softplus(d)``,
    which stays finite for tiny and huge means alike. One autograd node with a
    hand-derived backward for ``eta``, ``total_count`` (and ``y`` and ``exposure``)
    that saves only its inputs.

    Parameters
    ----------
    eta : Tensor
        Linear predictor.
    y : Tensor
        Counts.
    total_count : Tensor or float
        Concentration ``r > 0`` (the NB2 dispersion is ``1 / r``).
    beta, threshold : float
        As in :func:`~posheads.ops.softplus`.
    exposure : Tensor, optional
        Positive exposure multiplying the mean.

    Returns
    -------
    Tensor, shape ``broadcast(eta, y, total_count, exposure)``
    """
    check_link_args(beta, threshold)
    eta_c, (y_c, r_c, t_c), out_dtype = prepare(eta, y, total_count, exposure)
    switch = linear_switch(out_dtype, threshold)
    # the forward keeps the derivatives for eta and r where only they are wanted
    grad_on = torch.is_grad_enabled() and not y_c.requires_grad and not (
        t_c is not None and t_c.requires_grad)
    need_r = grad_on and r_c.requires_grad
    with_grad = need_r or (grad_on and eta_c.requires_grad)
    out = _NegativeBinomialSoftplusLogProb.apply(eta_c, y_c, r_c, t_c, float(beta), switch,
                                                 with_grad, need_r)
    return out.to(out_dtype)
