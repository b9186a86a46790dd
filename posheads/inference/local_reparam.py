"""The local reparameterisation of a Gaussian linear layer (``posheads.inference.local_reparam``).

Given its input ``u``, a linear layer ``u @ W.T + b`` with independent Gaussian weights
``W ~ N(M, V)`` and biases ``b ~ N(m, v)`` has Gaussian outputs of mean ``u @ M.T + m``
and variance ``u**2 @ V.T + v`` (Kingma, Salimans & Welling 2015, "Variational dropout
and the local reparameterization trick"): one normal draw per output and row replaces
a draw per weight. :func:`local_linear` computes that draw with a hand-written backward;
:mod:`~.bnn_elbo` runs the Gaussian layers of a Bayesian count MLP through it.
"""

from __future__ import annotations

import torch

__all__ = ["local_linear"]


def local_linear(u, w_loc, b_loc, w_var, b_var, eps, scale, x=None):
    """One draw of a Gaussian linear layer's outputs, by the local reparameterisation.

    Parameters
    ----------
    u : Tensor, shape ``(n, in)``
        The layer's input (with ``x``: its first ``in - p`` columns).
    w_loc, w_var : Tensor, shape ``(out, in)``
        Means ``M`` and variances ``V`` of the weights (before the column scales).
    b_loc, b_var : Tensor, shape ``(out,)``
        Means and variances of the biases.
    eps : Tensor, shape ``(n, out)``
        Standard normal draws.
    scale : Tensor, shape ``(1, 1)`` or ``(1, in)``
        Column scales ``c`` of the weights: the weights are ``W * c``.
    x : Tensor, shape ``(n, p)``, optional
        The input's last ``p`` columns, data that needs no gradient (a skip connection's
        inputs): the layer reads ``[u, x]`` without that array being built, and its
        backward computes no gradient for ``x``.

    Returns
    -------
    Tensor, shape ``(n, out)``
        ``u @ (M * c).T + m + sqrt(u**2 @ (V * c**2).T + v) * eps``, differentiable in
        every argument but ``eps``.
    """
    if x is not None and x.requires_grad:
        raise ValueError("local_linear: x is data and must not require grad")
    return _LocalLinear.apply(u, w_loc, b_loc, w_var, b_var, eps, scale, x)


class _LocalLinear(torch.autograd.Function):
    """``u @ (M * c).T + m + sqrt(u**2 @ (V * c**2).T + v) * eps`` with a hand-written backward.

    The local reparameterisation of a layer with weights ``N(M, V)`` scaled by the column
    scales ``c`` (shape ``(1, 1)`` or ``(1, in)``) and biases ``N(m, v)`` (``u`` of shape
    ``(n, in)``, ``eps`` ``(n, out)``). With ``r = eps / sd`` and ``g`` the output's
    gradient, twice the variance's gradient is ``d = g * r``; the input receives
    ``g @ (M * c) + u * (d @ (V * c**2))``, ``M`` receives ``(g.T @ u) * c`` and ``V``
    ``(d.T @ u**2) * c**2 / 2``.

    At a few thousand rows the step is bound by passes over ``(n, in)`` arrays and by
    fresh allocations of them, not by arithmetic: ``u**2`` is the only such array the
    forward makes, and the backward writes the input's gradient into its memory (it
    has read ``u**2`` by then), so the whole layer allocates one ``(n, in)`` array where
    autograd's graph of the same expression allocates several. A second backward through
    a retained graph recomputes ``u**2``; a backward that records its own graph
    (``create_graph``) computes out of place. The scales are applied inside, so the graph
    has no nodes for them. A skip connection's data columns ``x`` (the input is ``[u, x]``)
    enter by two more products (``x @ M_x.T`` and ``x**2 @ V_x.T``) instead of a
    concatenated input, and get no gradient.
    """

    @staticmethod
    def forward(ctx, u, w_loc, b_loc, w_var, b_var, eps, scale, x=None):
        c2 = scale * scale
        w_loc_c, w_var_c = w_loc * scale, w_var * c2
        u2 = u * u
        k = u.shape[-1]
        var = torch.addmm(b_var, u2, w_var_c[:, :k].t())
        out = torch.addmm(b_loc, u, w_loc_c[:, :k].t())
        x2 = None
        if x is not None:  # the data columns: two more products, no (n, in) array
            x2 = x * x
            var.addmm_(x2, w_var_c[:, k:].t())
            out.addmm_(x, w_loc_c[:, k:].t())
        sd = var.sqrt_()
        out.addcmul_(sd, eps)
        # the unscaled weights only for a learned scale's gradient
        extra = (w_loc, w_var) if ctx.needs_input_grad[6] else ()
        ctx.save_for_backward(u, w_loc_c, w_var_c, eps.div(sd), scale, c2, *extra)
        ctx.u2 = u2  # not saved through autograd: the backward reuses its memory
        ctx.x, ctx.x2 = x, x2
        return out

    @staticmethod
    def backward(ctx, g):
        u, w_loc_c, w_var_c, r, scale, c2, *unscaled = ctx.saved_tensors
        u2 = ctx.u2 if ctx.u2 is not None else u * u
        ctx.u2 = None
        x, x2 = ctx.x, ctx.x2
        d = g * r  # twice the variance's gradient
        g_wv = torch.mm(d.t(), u2)  # in the scaled variances V * c**2 (times 2)
        g_wl = torch.mm(g.t(), u)  # in the scaled means M * c
        k = u.shape[-1]
        if x is not None:  # the data columns' weights
            g_wv = torch.cat([g_wv, torch.mm(d.t(), x2)], dim=1)
            g_wl = torch.cat([g_wl, torch.mm(g.t(), x)], dim=1)
            w_loc_c, w_var_c = w_loc_c[:, :k], w_var_c[:, :k]
        g_wv.mul_(0.5)
        grad_c = None
        if ctx.needs_input_grad[6]:  # a learned layer scale
            w_loc, w_var = unscaled
            grad_c = torch.addcmul(g_wl * w_loc, g_wv * w_var, scale, value=2.0)
            grad_c = grad_c.sum_to_size(scale.shape)
        grad_u = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: out-of-place, recorded by autograd
                grad_u = torch.addcmul(g @ w_loc_c, u, d @ w_var_c)
            else:  # in u2's memory (read above): u * (d @ V) + g @ M
                grad_u = torch.mm(d, w_var_c, out=u2).mul_(u).addmm_(g, w_loc_c)
        return (grad_u, g_wl.mul_(scale), g.sum(0), g_wv.mul_(c2), d.sum(0).mul_(0.5), None,
                grad_c, None)
