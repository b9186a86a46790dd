"""Adam on the one-pass ELBO of a Bayesian count MLP (``posheads.inference.bnn_svi``).

:class:`MeanFieldSVI` takes the steps of :class:`~.bnn_elbo.MeanFieldBNN`'s training with
the interface of :class:`~.svi_state.SVIState`, so :func:`~.svi.run_steps` drives it. The
step keeps its operations few (a step at a batch of a few thousand rows is bound by their
number, not by arithmetic): the gradients of the variational parameters accumulate in
place in one flat buffer, the clip is one norm of that buffer, and Adam is torch's fused
kernel called through its functional form.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adam import adam

from .bnn_elbo import MeanFieldBNN
from .common import check_real

__all__ = ["MeanFieldSVI"]


def _clip_(grad: torch.Tensor, max_norm: float) -> None:
    """Scale ``grad`` (all gradients, flat) in place by ``min(1, max_norm / (norm + 1e-6))``:
    ``torch.nn.utils.clip_grad_norm_``'s rule. The norm is read on the host (the step
    reads its loss there anyway): two operations, and none when nothing is clipped."""
    factor = max_norm / (float(torch.linalg.vector_norm(grad)) + 1e-6)
    if factor < 1.0:
        grad.mul_(factor)


class MeanFieldSVI:
    """Adam on :meth:`MeanFieldBNN.negative_elbo`, one step at a time.

    The interface of :class:`~.svi_state.SVIState` (``step``, ``losses``,
    ``num_steps``), so :func:`~.svi.run_steps` drives it: the same step-size decay,
    global gradient-norm clip and ``ValueError`` at a non-finite loss.

    A step builds no graph for the variational parameters themselves: the network reads
    the sites through fixed leaf tensors that share memory with :attr:`MeanFieldBNN.loc`
    (and with a buffer of the variances), whose gradients accumulate in place in one flat
    buffer, which the closed-form penalty's gradient (:meth:`MeanFieldBNN.closed_form`)
    initialises; the chain rule through the scales is one product. The gradient is the
    one ``negative_elbo(...).backward()`` gives for the same draws (tested), at a fraction
    of the per-step operations. The update is ``torch.optim.Adam``'s (default betas and
    eps, fused kernel where torch has one), called through ``torch.optim.adam.adam``:
    the parameters follow ``torch.optim.Adam`` fed the same gradients (tested).

    Parameters
    ----------
    posterior : MeanFieldBNN
    learning_rate : float
    gamma : float
        Factor applied to the step size after every step.
    clip_norm : float or None
        Clip the global gradient norm to this value.
    seed : int, optional
        Seed of the normal draws (``None``: drawn from torch's global generator).
    """

    def __init__(self, posterior: MeanFieldBNN, *, learning_rate: float = 0.01,
                 gamma: float = 1.0, clip_norm: float | None = 10.0, seed: int | None = None):
        self.posterior = posterior
        self.learning_rate = check_real("learning_rate", learning_rate, 0.0)
        self.gamma = check_real("gamma", gamma, 0.0, 1.0, closed_high=True)
        self.clip_norm = check_real("clip_norm", clip_norm, 0.0, optional=True)
        q = posterior
        self.params = [p for p in (q.loc, q.scale_raw) if p.numel()]
        if any(p.requires_grad for p in q.model.parameters()):
            raise ValueError("MeanFieldSVI fits the variational parameters only: the model "
                             "has trainable parameters of its own")
        device = q.loc.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(torch.randint(2**62, ())) if seed is None else int(seed))
        # torch's Adam (default betas and eps) through its functional form: the same
        # update as ``torch.optim.Adam(params, lr, fused=True)``, without the optimiser
        # object's per-step bookkeeping; one fused kernel where torch has it (CPU and CUDA
        # floating point), else torch's default implementation
        self._fused = all(p.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                      torch.float64) and p.device.type in ("cpu", "cuda")
                          for p in self.params) or None
        self._lr = self.learning_rate
        self._moments = ([torch.zeros_like(p) for p in self.params],
                         [torch.zeros_like(p) for p in self.params])
        # the step counts as torch.optim.Adam keeps them: on the device for the fused
        # kernel, on the host otherwise
        self._adam_steps = [torch.zeros((), dtype=torch.float32, device=p.device)
                            if self._fused else torch.tensor(0.0) for p in self.params]
        # the flat gradient [loc | scale_raw | variances] and the sites' leaf views
        d, g = q.loc.numel(), q.scale_raw.numel()
        self._grad = q.loc.new_zeros(d + 2 * g)
        # its parts, sliced once: the closed-form and total gradients, the variances'
        self._flat_grad, self._loc_grad = self._grad[:d + g], self._grad[:d]
        self._raw_grad, self._var_grad = self._grad[d:d + g], self._grad[d + g:]
        self._grads = [grad for grad in (self._loc_grad, self._raw_grad) if grad.numel()]
        self._var = q.loc.new_zeros(g)
        self._sites = q.site_views(q.loc.detach(), self._var if g else None)
        grads = q.site_views(self._grad[:d], self._grad[d + g:] if g else None)
        for leaf, grad in zip(self._sites, grads, strict=True):
            leaf.requires_grad_()
            leaf.grad = grad
        self._constants = None  # see _row_constants
        self.losses: list[float] = []

    @property
    def num_steps(self) -> int:
        return len(self.losses)

    def _row_constants(self, y, exposure):
        """The likelihood's data-only terms of every row of the data set ``(y, exposure)``
        (shape ``(n,)``, or None), computed once per data set (and again if it changes)
        and then gathered with each batch."""
        versions = (y._version, None if exposure is None else exposure._version)
        cache = self._constants
        if cache is None or cache[0] is not y or cache[1] is not exposure \
                or cache[2] != versions:
            with torch.no_grad():
                rows = self.posterior.likelihood.row_constants(y, exposure)
            cache = self._constants = (y, exposure, versions, rows)
        return cache[3]

    def step(self, kwargs: dict, *, total_size: int | None = None) -> float:
        """One Adam step on the batch in ``kwargs`` (the model's keyword arguments).

        ``kwargs`` holds ``X``, ``y`` and optionally ``exposure``, ``weights`` and
        ``subsample`` (row indices: the step uses those rows, scaled to all of them).

        Returns
        -------
        float
            The loss (negative ELBO estimate) of this step.

        Raises
        ------
        ValueError
            When the loss is not finite, naming the step.
        """
        X, y = kwargs["X"], kwargs["y"]
        exposure, weights = kwargs.get("exposure"), kwargs.get("weights")
        idx = kwargs.get("subsample")
        rows = self._row_constants(y, exposure)
        if idx is not None:
            total_size = X.shape[0] if total_size is None else total_size
            X, y = X.index_select(0, idx), y.index_select(0, idx)
            exposure = None if exposure is None else exposure.index_select(0, idx)
            weights = None if weights is None else weights.index_select(0, idx)
            rows = None if rows is None else rows.index_select(0, idx)
        q, g = self.posterior, self.posterior.scale_raw.numel()
        constant = None if rows is None else q.batch_constant(y, exposure, weights, rows)
        # the closed-form gradient in ``loc`` goes straight into the buffer, where the
        # network's gradient then accumulates
        penalty, _, pen_raw, _, dvar = q.closed_form(q.loc, q.scale_raw, var_out=self._var,
                                                     pen_loc_out=self._loc_grad)
        loss = q.loss_at(penalty, self._sites, X, y, exposure=exposure, weights=weights,
                         total_size=total_size, generator=self.generator, constant=constant)
        value = float(loss.detach())
        if not math.isfinite(value):
            bad = [name for i, name in enumerate(q.sites)
                   if not torch.isfinite(q.site_loc(i)).all()]
            where = f"non-finite parameters of {bad}" if bad else "non-finite log-likelihood"
            raise ValueError(f"SVI loss is {value} at step {self.num_steps}: {where}; try a "
                             "smaller learning_rate or check the data")
        if g:
            self._var_grad.zero_()
        if loss.requires_grad:
            loss.backward()
        with torch.no_grad():
            if g:  # through sd: d loss / d raw = d loss / d var * dvar (+ the KL's)
                if pen_raw is None:
                    torch.mul(self._var_grad, dvar, out=self._raw_grad)
                else:
                    torch.addcmul(pen_raw, self._var_grad, dvar, out=self._raw_grad)
            if self.clip_norm is not None:
                _clip_(self._flat_grad, self.clip_norm)
            # the gradients stay readable as ``.grad`` (set again each step: a caller may
            # have reset them)
            q.loc.grad = self._loc_grad
            if g:
                q.scale_raw.grad = self._raw_grad
            adam(self.params, self._grads, *self._moments, [], self._adam_steps,
                 fused=self._fused, amsgrad=False, beta1=0.9, beta2=0.999, lr=self._lr,
                 weight_decay=0.0, eps=1e-8, maximize=False)
        self._lr *= self.gamma
        self.losses.append(value)
        return value
