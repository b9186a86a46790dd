"""A mini-batch's log-likelihood for the one-pass BNN ELBO (``posheads.inference.bnn_likelihood``).

:func:`batch_likelihood` picks, for the head of a
:class:`~posheads.models.bnn.BayesianCountMLP`, how :mod:`~.bnn_elbo` computes the weighted
log-likelihood of a batch, ``sum_i w_i log p(y_i | raw_i)``, as two parts:

* :meth:`BatchLikelihood.row_constants`: the terms that depend on the data alone (for the
  Poisson law ``y log t - lgamma(y + 1)``, for NB2 ``-lgamma(y + 1)``), per row,
  computed once for a data set and gathered with the batch, so a step spends no pass on
  them and the reported ELBO still includes them;
* :meth:`BatchLikelihood.log_lik`: the rest, differentiable in the head's raw outputs.

Their sum is the head's family distribution's ``log_prob`` summed over the batch (tested).
Only the Poisson and NB2 heads with ``low = 0`` (the BNN's) have a faster form; every
other head uses its distribution, exactly as the Pyro model does. The Poisson part is
``y log s - t s`` with ``s = softplus(eta)`` in one autograd node whose backward is the
derivative saved by the forward, ``sigmoid(z) (y / s - t)``; the NB2 part is the fused
log-density of :func:`posheads.ops.negative_binomial_softplus_log_prob` less its
``lgamma(y + 1)`` (``constant=False``), called without building the distribution object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from posheads import families, ops

__all__ = ["BatchLikelihood", "NegativeBinomialBatch", "PoissonBatch", "batch_likelihood"]



def _floor(dtype: torch.dtype) -> float:
    """The ``z`` at which :class:`_PoissonTerm` evaluates ``log s`` for every ``z`` below:
    -80, where ``exp(z) / 2 = 1e-35`` is below every dtype's precision, or a unit above
    ``log`` of the smallest normal float where that is higher (float16), so that ``s``
    is a normal float there."""
    return max(-80.0, math.log(torch.finfo(dtype).tiny) + 1.0)


class BatchLikelihood:
    """The weighted log-likelihood of a batch, from the head's distribution.

    Parameters
    ----------
    head : FamilyHead
        The network's head (its family, link and ``domain_map``).
    """

    def __init__(self, head):
        self.head = head

    def row_constants(self, y: torch.Tensor, exposure: torch.Tensor | None = None):
        """The data-only part of each row's log-likelihood, shape ``(n,)`` (None: none)."""
        del y, exposure
        return None

    def log_lik(self, raw: dict, y, exposure=None, weights=None) -> torch.Tensor:
        """``sum_i w_i log p(y_i | raw_i)`` less the :meth:`row_constants`, shape ``()``.

        Parameters
        ----------
        raw : dict of str to Tensor, each of shape ``(b,)``
            The head's raw outputs.
        y, exposure, weights : Tensor, shape ``(b,)``
        """
        ll = self.head.distribution(raw, exposure).log_prob(y)
        return ll.sum() if weights is None else ll.dot(weights)


class _PoissonTerm(torch.autograd.Function):
    """``sum_i w_i (y_i log s_i - t_i s_i)`` with ``s = softplus_beta(eta)`` (shape ``()``).

    The forward saves the derivative ``w sigmoid(z) (y / s - t) = w (y - t s) sigmoid(z) / s``
    (shape ``(b,)``), and the backward scales it. ``log s`` and ``sigmoid(z) / s`` are
    computed at ``zc = max(z, floor)`` (:func:`_floor`: -80 but for float16), where ``s``
    is a normal float, and carried below by the expansion ``log s(z) = z - log(beta) -
    exp(z) / 2 + ...``: ``log s(z) = log s(zc) + (z - zc)`` to within ``exp(floor) / 2``
    (1e-35), and ``sigmoid(z) / s`` to that relative error; ``s`` itself is taken at ``zc``
    too (off by less than ``exp(floor)``). No select and no check read back to the host.
    """

    @staticmethod
    def forward(ctx, eta, y, exposure, weights, beta, switch):
        z = eta * beta if beta != 1.0 else eta
        zc = z.clamp(min=_floor(z.dtype))
        bs = F.softplus(zc, threshold=switch)  # beta * s at zc
        log_s = torch.log(bs).add_(z).sub_(zc)
        if beta != 1.0:
            log_s.sub_(math.log(beta))
        # s at zc: below the floor it exceeds s(z) by less than exp(floor) (1e-35)
        s = bs if beta == 1.0 else bs / beta
        ts = s if exposure is None else s * exposure
        # d/d eta = sigmoid(z) (y / s - t) = (y - t s) sigmoid(z) / s
        ratio = torch.sigmoid(zc).div_(bs)
        slope = torch.sub(y, ts).mul_(ratio if beta == 1.0 else ratio.mul_(beta))
        rows = torch.mul(y, log_s).sub_(ts)
        if weights is not None:
            slope.mul_(weights)
        ctx.save_for_backward(slope)
        return rows.sum() if weights is None else rows.dot(weights)

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return slope * grad, None, None, None, None, None


class PoissonBatch(BatchLikelihood):
    """The Poisson head's: ``y log t - lgamma(y + 1)`` per row, and :class:`_PoissonTerm`."""

    def row_constants(self, y, exposure=None):
        out = torch.lgamma(y + 1.0).neg_()
        return out if exposure is None else out.add_(torch.xlogy(y, exposure))

    def log_lik(self, raw, y, exposure=None, weights=None):
        head = self.head
        eta = raw["eta"]
        switch = ops.linear_switch(eta.dtype, head.threshold)
        return _PoissonTerm.apply(eta, y.to(eta.dtype), exposure, weights, float(head.beta),
                                  switch)


class NegativeBinomialBatch(BatchLikelihood):
    """The NB2 head's: ``-lgamma(y + 1)`` per row, and the fused log-density of the ops
    layer without it (``constant=False``), without the distribution object."""

    def row_constants(self, y, exposure=None):
        return torch.lgamma(y + 1.0).neg_()

    def log_lik(self, raw, y, exposure=None, weights=None):
        head = self.head
        r = head.domain_map(raw)["concentration"]
        ll = ops.negative_binomial_softplus_log_prob(raw["eta"], y, r, head.beta,
                                                     head.threshold, exposure, constant=False)
        return ll.sum() if weights is None else ll.dot(weights)


# the families whose log-likelihood has a faster form here (at ``low = 0``)
_FAST = {families.POISSON: PoissonBatch,
         families.NEGATIVE_BINOMIAL: NegativeBinomialBatch}


def batch_likelihood(head) -> BatchLikelihood:
    """The :class:`BatchLikelihood` of ``head`` (a :class:`~posheads.heads.FamilyHead`)."""
    kind = _FAST.get(head.family) if float(head.low) == 0.0 else None
    return (kind or BatchLikelihood)(head)
