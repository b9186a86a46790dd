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
    def forward(ctx, eta, y, r, exposure, beta, switch, with_grad=False, need_r=False,
                constant=True):
        ctx.save_for_backward(eta, y, r, exposure)
        ctx.beta, ctx.switch, ctx.constant = beta, switch, constant
        ctx.slope = ctx.slope_r = None
        out = _compile.run("negative_binomial", eta, y, r, exposure, beta, switch, math.log(beta),
                           constant)
        if out is not None:
            return out
        if with_grad:
            return _nb_value_and_slopes(ctx, eta, y, r, exposure, beta, switch, need_r, constant)
        log_s = _log_softplus_and_slope(eta, beta, switch, slope=False)[0]
        d = _nb_logit(log_s, r, exposure, inplace=True)
        # -(y softplus(-d) + r softplus(d) + lgamma(y + 1) + lgamma(r) - lgamma(y + r)): the
        # first product has the full broadcast shape, the rest go into it in place.
        out = imul(F.softplus(-d, threshold=_NO_OVERFLOW_SP), y)
        out.add_(imul(F.softplus(d, threshold=_NO_OVERFLOW_SP), r))
        del d
        return _nb_lgamma_terms(out, y, r, constant)

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
            return g_eta, None, g_r, None, None, None, None, None, None
        if not torch.is_grad_enabled() and not needs[1] and not needs[3]:
            # The common cases (gradients for eta, and for r when it is learnt) in fused
            # or in-place passes.
            grads = _nb_fast_grads(eta, y, r, exposure, ctx.beta, ctx.switch, grad, needs[2])
            if grads is not None:
                g_eta, g_r = grads
                g_eta = reduce_to(g_eta, eta.shape) if needs[0] else None
                g_r = None if g_r is None else reduce_to(g_r, r.shape)
                return g_eta, None, g_r, None, None, None, None, None, None
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
            dy = torch.digamma(y + r)
            if ctx.constant:
                dy = dy - torch.digamma(y + 1.0)
            dy = dy - F.softplus(-d, threshold=_NO_OVERFLOW_SP)
            g_y = reduce_to(grad * dy, y.shape)
        if ctx.needs_input_grad[2]:
            dr = torch.digamma(y + r) - torch.digamma(r)
            dr = dr - F.softplus(d, threshold=_NO_OVERFLOW_SP) - dl_dd / r
            g_r = reduce_to(grad * dr, r.shape)
        if exposure is not None and ctx.needs_input_grad[3]:
            g_t = reduce_to(grad * dl_dd / exposure, exposure.shape)
        return g_eta, g_y, g_r, g_t, None, None, None, None, None


# softplus of the NB logit uses torch's kernel with a switch where its linear branch is
# exact in float64 (and hence in float32).
_NO_OVERFLOW_SP = 36.0


def _eta_floor(dtype, beta):
    """The ``eta`` at which :func:`_log_softplus_and_slope` stops: a unit above the ``z`` where
    ``exp(z)`` and ``s = log1p(exp(z)) / beta`` leave the normal floats (``z`` -86 in
    float32, -707 in float64, higher by ``log(beta)`` for ``beta > 1``)."""
    return (math.log(torch.finfo(dtype).tiny) + max(math.log(beta), 0.0) + 1.0) / beta


def _log_softplus_and_slope(eta, beta, switch, slope=True):
    """``(log s, d log s / d eta)`` with ``s = softplus_beta(eta)`` (the second None without
    ``slope``), with no check read back to the host.

    Both are evaluated at ``eta`` clamped to :func:`_eta_floor`, where ``s`` is a normal
    float, so above it they are the plain ``log(s)`` and ``sigmoid(z) / s`` to the bit;
    below it ``log s`` is carried on by the expansion ``log s(z) = z - log(beta) -
    exp(z) / 2 + ...`` as ``log s(zc) + (z - zc)`` (off by less than ``exp(zc) / 2``, below
    1e-37), and ``sigmoid(zc) / s(zc)`` is within that relative error of its limit
    ``beta``. The clamped difference ``z - zc`` saturates at ``-max``, as in
    :func:`~posheads.ops.softplus_branches`.
    """
    eta_c = eta.clamp(min=_eta_floor(eta.dtype, beta))
    s = F.softplus(eta_c, beta=beta, threshold=switch)
    below = torch.sub(eta, eta_c)  # 0 at and above the floor, so log s stays exact there
    if beta != 1.0:
        below = below.mul_(beta).clamp_(min=-torch.finfo(eta.dtype).max)
    log_s = torch.log(s).add_(below)
    if not slope:
        return log_s, None
    return log_s, s.reciprocal_().mul_(torch.sigmoid(eta_c * beta if beta != 1.0 else eta_c))


def _nb_lgamma_terms(out, y, r, constant, y_r=None):
    """``-(out + lgamma(y + 1) + lgamma(r) - lgamma(y + r))`` in place in ``out`` (without
    the data-only ``lgamma(y + 1)`` unless ``constant``; ``y_r``: ``y + r``, a temporary
    used in place)."""
    if constant:
        out.add_(torch.add(y, 1.0).lgamma_())
    y_r = torch.add(y, r) if y_r is None else y_r
    return out.add_(torch.lgamma(r)).sub_(y_r.lgamma_()).neg_()


def _nb_value_and_slopes(ctx, eta, y, r, exposure, beta, switch, need_r, constant):
    """The forward's value, keeping in ``ctx.slope`` (and ``ctx.slope_r`` with ``need_r``)
    the derivatives for ``eta`` (and ``r``) that the backward's in-place passes give, from
    the forward's softplus and logit."""
    log_s, dlog = _log_softplus_and_slope(eta, beta, switch)
    d = _nb_logit(log_s, r, exposure, inplace=True)
    sp_neg = F.softplus(-d, threshold=_NO_OVERFLOW_SP)
    sp_d = F.softplus(d, threshold=_NO_OVERFLOW_SP)
    y_r = torch.add(y, r)  # one sum for digamma, dl/dd and lgamma
    if need_r:  # digamma(y + r) - digamma(r) - softplus(d), then - (dl/dd) / r
        dr = torch.digamma(y_r)
        dr = dr.sub_(torch.digamma(r)) if fits(dr, r) else dr - torch.digamma(r)
        dr = isub(dr, sp_d)
    p = d.sigmoid_()
    del d
    dl_dd = imul(p, y_r).neg_().add_(y)  # y q - r p = y - (y + r) p
    del p
    if need_r:
        ctx.slope_r = isub(dr, dl_dd / r)
    ctx.slope = imul(dlog, dl_dd)
    del dlog, dl_dd
    # -(y softplus(-d) + r softplus(d) + lgamma(y + 1) + lgamma(r) - lgamma(y + r))
    out = imul(sp_neg, y)
    out.add_(imul(sp_d, r))
    return _nb_lgamma_terms(out, y, r, constant, y_r)


def _nb_fast_grads(eta, y, r, exposure, beta, switch, grad, need_r):
    """``(d/d eta, d/d r or None)`` times ``grad``, unreduced."""
    args = (eta, y, r, exposure, grad, beta, switch, math.log(beta))
    if need_r:
        grads = _compile.run("negative_binomial_grad_eta_r", *args)
        return _nb_eta_r_grads(*args[:-1]) if grads is None else grads
    g_eta = _compile.run("negative_binomial_grad_eta", *args)
    if g_eta is None:
        g_eta = _nb_eta_grad(eta, y, r, exposure, beta, switch, grad)
    return g_eta, None


def _nb_eta_r_grads(eta, y, r, exposure, grad, beta, switch):
    """Gradients for ``eta`` and ``r`` in place, at most four full-size tensors alive at once
    (the two results included)."""
    d, dlog = _log_softplus_and_slope(eta, beta, switch)
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
    in-place passes (``sigmoid / s`` as one factor: ``sigmoid(z) * (y - ...)`` alone can
    underflow to 0 where both are tiny)."""
    log_s, dlog = _log_softplus_and_slope(eta, beta, switch)
    p = _nb_logit(log_s, r, exposure, inplace=True).sigmoid_()
    g = imul(p, torch.add(y, r)).neg_().add_(y)  # dl/dd = y q - r p = y - (y + r) p
    return imul(g, dlog).mul_(grad)


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
    *,
    constant: bool = True,
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
    constant : bool, default=True
        Whether to include the data-only term ``-lgamma(y + 1)``. A caller that needs
        only gradients, or that adds the term once per data set, passes False and gets
        the log-likelihood less that constant (its gradient in ``y`` then lacks
        ``-digamma(y + 1)`` too). The value and the gradients for ``eta`` and
        ``total_count`` read nothing back to the host.

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
                                                 with_grad, need_r, bool(constant))
    return out.to(out_dtype)
