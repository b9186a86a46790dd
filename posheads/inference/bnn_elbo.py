"""The ELBO of a Bayesian count MLP in one batched pass (``posheads.inference.bnn_elbo``).

:class:`MeanFieldBNN` is a mean-field variational posterior over the latent sites of a
:class:`~posheads.models.bnn.BayesianCountMLP`: a Gaussian per weight in the site's
unconstrained space (scales ``softplus``-mapped, as :func:`~.common.make_guide`'s guides
store them), or a point estimate for the sites named in ``point_sites`` (the hidden
layers, for the ``"last_layer"`` guide). Its :meth:`~MeanFieldBNN.negative_elbo` is the
loss Pyro's ``Trace_ELBO`` estimates for the same model and the same variational
parameters, computed without tracing a site:

* the network runs once on the batch, each Gaussian layer by the *local
  reparameterisation trick* (:func:`~.local_reparam.local_linear`; Kingma, Salimans &
  Welling 2015): given its input ``u``, a layer's output
  ``u @ W.T + b`` under independent Gaussian weights is Gaussian with mean
  ``u @ M.T + m`` and variance ``u**2 @ (S**2).T + s**2``, so one normal draw per output
  replaces a draw per weight. Each row's outputs have exactly the distribution they have
  when the weights themselves are drawn; only the correlation *between* rows is lost,
  which the expected log-likelihood (a sum over rows) does not see;
* the likelihood is the head's family log-density (:mod:`~.bnn_likelihood`: for the
  Poisson and NB2 heads its fused form without a distribution object, the data-only
  terms computed once per data set; for any other head its family distribution, the
  same code the Pyro model calls);
* a Gaussian site under a Gaussian prior contributes its KL divergence in closed form;
  a point site its log prior; any other Gaussian site (a learned layer scale under its
  half-normal prior) a one-draw Monte Carlo ``log q - log p``.

Both estimators are unbiased for the same ELBO and its gradient (the tests compare them
in expectation); this one has lower variance and costs about one plain forward pass.
:class:`~.bnn_svi.MeanFieldSVI` takes Adam steps on it with the interface of
:class:`~.svi_state.SVIState` (so :func:`~.svi.run_steps` drives it), and
:meth:`MeanFieldBNN.forward` is the same posterior as a Pyro guide, for Pyro's general
path and for the comparison.

At the default batch of a few thousand rows a step is bound by the number of operations,
not by arithmetic, so the step keeps them few: the closed-form terms and their gradient
are computed without a graph (:meth:`MeanFieldBNN.closed_form`), the network reads the
sites through leaf tensors that share memory with the flat parameters and accumulate
their gradients in place in one flat buffer (no slicing nodes, no ``zero_grad``), the
clip is one norm of that buffer, fixed layer scales are computed once, and Adam is
torch's fused kernel called through its functional form.
:meth:`MeanFieldBNN.negative_elbo` stays an ordinary differentiable function of the
parameters (one custom node for the closed-form terms), and the tests check that a step
uses exactly its gradient.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints, transform_to

from posheads.constraints import softplus_positive
from posheads.ops import softplus

from .bnn_likelihood import batch_likelihood
from .common import check_real
from .local_reparam import local_linear

__all__ = ["MeanFieldBNN"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _base_constraint(c):
    """The constraint of one element (``independent`` unwrapped)."""
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    return c


def _normal_prior(fn):
    """``(loc, scale)`` of a (possibly ``to_event``) Normal prior, else ``None``."""
    base = fn.base_dist if isinstance(fn, dist.Independent) else fn
    if type(base) is dist.Normal:
        return base.loc.detach(), base.scale.detach()
    return None


class _Globals(torch.autograd.Function):
    """The flat variational parameters -> every site's tensor, and the closed-form part
    of ``log q - log p``, as one node of the graph.

    Inputs ``loc`` ``(d,)`` and ``scale_raw`` ``(d_gauss,)`` of a :class:`MeanFieldBNN`
    ``q``. Outputs: the penalty (shape ``()``: the constant, the points' ``-log p`` under
    Gaussian priors, the Gaussians' KL to Gaussian priors), then the unconstrained value
    of every site in ``q.order``, then the variance of every Gaussian site in that order.
    The penalty's gradient is written out (for ``z = loc - m`` and ``sd = f(raw)``:
    ``z / s**2`` in ``loc``, ``(sd / s**2 - 1 / sd) f'(raw)`` in ``raw``), and the
    sites' gradients are put back in place by one ``cat``: a step's graph is a few nodes
    whatever the number of sites, where slicing the vectors took a node per site and
    per operation.
    """

    @staticmethod
    def forward(ctx, loc, scale_raw, q):
        ctx.set_materialize_grads(False)
        penalty, pen_loc, pen_raw, var, dvar = q.closed_form(loc, scale_raw)
        ctx.save_for_backward(pen_loc, pen_raw, dvar)
        ctx.sizes, ctx.var_sizes = q.sizes, q.var_sizes
        out = [penalty, *q.site_views(loc.clone(), var)]
        return tuple(out)

    @staticmethod
    def backward(ctx, g_pen, *grads):
        pen_loc, pen_raw, dvar = ctx.saved_tensors
        n = len(ctx.sizes)

        def flat(parts, sizes, like):
            if all(g is None for g in parts):
                return torch.zeros_like(like)
            return torch.cat([like.new_zeros(k) if g is None else g.reshape(-1)
                              for g, k in zip(parts, sizes, strict=True)])

        grad_loc = flat(grads[:n], ctx.sizes, pen_loc)
        grad_raw = None
        if dvar is not None:
            grad_raw = flat(grads[n:], ctx.var_sizes, dvar).mul_(dvar)
        if g_pen is not None:
            grad_loc = torch.addcmul(grad_loc, pen_loc, g_pen)
            if grad_raw is not None and pen_raw is not None:
                grad_raw = torch.addcmul(grad_raw, pen_raw, g_pen)
        return grad_loc, grad_raw, None


class MeanFieldBNN(torch.nn.Module):
    """Mean-field Gaussian (or point) posterior of a Bayesian count MLP's latent sites.

    Parameters
    ----------
    model : BayesianCountMLP
        The network, with its priors final (after ``init_from_targets``) and on the
        device and dtype of the fit.
    point_sites : iterable of str, default=()
        Sites estimated by a point (Pyro's ``AutoDelta``); a layer's weight and bias
        must both be points or both Gaussian.
    init_loc_fn : callable, optional
        Pyro's ``init_loc_fn`` (a site dict -> its starting value); default the prior mean.
    init_scale : float, default=0.1
        Starting standard deviation of every Gaussian.

    Attributes
    ----------
    sites : tuple of str
        The latent sites, in the model's order.
    loc : Parameter, shape ``(d,)``
        Unconstrained locations (or point values) of all sites, flat: the point sites,
        then the Gaussian sites (see :meth:`site_loc`). One flat vector keeps the number
        of tensors a step touches (the penalty, Adam, the gradient clip) small.
    scale_raw : Parameter, shape ``(d_gauss,)``
        ``softplus``-inverse of the Gaussian sites' standard deviations, flat.

    Examples
    --------
    >>> net = BayesianCountMLP(3, (8,), likelihood="poisson")      # doctest: +SKIP
    >>> q = MeanFieldBNN(net, point_sites=["hidden.0.weight", "hidden.0.bias"])  # doctest: +SKIP
    >>> loss = q.negative_elbo(X, y)                                # doctest: +SKIP
    """

    def __init__(self, model, point_sites=(), *, init_loc_fn=None, init_scale: float = 0.1):
        super().__init__()
        init_scale = check_real("init_scale", init_scale, 0.0)
        self.model = model
        ref = next(iter(model.buffers()))
        with torch.no_grad():  # one row through the model: its global sites and priors
            trace = poutine.trace(model).get_trace(ref.new_zeros(1, model.in_features))
        nodes = [(name, site) for name, site in trace.nodes.items()
                 if site["type"] == "sample" and not site["cond_indep_stack"]
                 and not site_is_subsample(site)]
        self.sites = tuple(name for name, _ in nodes)
        point = set(point_sites)
        unknown = point - set(self.sites)
        if unknown:
            raise ValueError(f"point_sites names no site of the model: {sorted(unknown)}")
        self.point = tuple(name in point for name in self.sites)
        for name in self.sites:
            if name.endswith(".weight") and (name in point) != (
                    name[:-len("weight")] + "bias" in point):
                raise ValueError(f"{name} and its bias must both be points or both Gaussian")
        self.priors = [site["fn"] for _, site in nodes]
        self.event_dims = [fn.event_dim for fn in self.priors]
        self.supports = [fn.support for fn in self.priors]
        self.real = [_base_constraint(c) is constraints.real for c in self.supports]
        self.shapes = [tuple(site["value"].shape) for _, site in nodes]
        normal = [_normal_prior(fn) if real else None
                  for fn, real in zip(self.priors, self.real, strict=True)]
        # storage order: points under a Gaussian prior, other points, Gaussians under a
        # Gaussian prior (closed-form KL), other Gaussians (one Monte Carlo draw)
        self.kind = [2 * (not pt) + (prior is None) for pt, prior in
                     zip(self.point, normal, strict=True)]
        self.order = sorted(range(len(self.sites)), key=lambda i: self.kind[i])
        sizes = [math.prod(self.shapes[i]) for i in self.order]
        self.sizes = sizes
        self.loc_at, self.scale_at = {}, {}
        counts, start, gauss = [0, 0, 0, 0], 0, 0
        for i, size in zip(self.order, sizes, strict=True):
            self.loc_at[i] = (start, size)
            start += size
            counts[self.kind[i]] += size
            if not self.point[i]:
                self.scale_at[i] = (gauss, size)
                gauss += size
        self.counts = counts
        self.order_shapes = [self.shapes[i] for i in self.order]
        gauss_order = [i for i in self.order if not self.point[i]]
        self.var_sizes = [self.scale_at[i][1] for i in gauss_order]
        self.var_shapes = [self.shapes[i] for i in gauss_order]
        # the Gaussian priors, flat: (loc, 1 / scale) of the points', (loc, 1 / scale^2) of
        # the Gaussians'; and the parameter-free part of the penalty (log-normalisers of
        # the points' priors, KL constants), summed once
        # the Gaussian priors of the points and of the Gaussians, flat over ``loc``:
        # location and precision 1 / s^2 (0 for the other sites), and the parameter-free
        # part of the penalty (log-normalisers of the points' priors, KL constants)
        prior_loc, precision, constant = [], [], 0.0
        for i in self.order:
            if normal[i] is None:
                prior_loc.append(ref.new_zeros(math.prod(self.shapes[i])))
                precision.append(ref.new_zeros(math.prod(self.shapes[i])))
                continue
            m, sd = (t.detach().expand(self.shapes[i]).reshape(-1) for t in normal[i])
            constant += float((sd.log() + (_HALF_LOG_2PI if self.kind[i] == 0 else -0.5)).sum())
            prior_loc.append(m)
            precision.append(sd.reciprocal() ** 2)
        self.register_buffer("prior_loc", torch.cat(prior_loc).to(ref))
        self.register_buffer("prior_precision", torch.cat(precision).to(ref))
        # the Gaussians under a Gaussian prior come first in ``scale_raw``
        start = counts[0] + counts[1]
        self.register_buffer("gauss_precision", self.prior_precision[start:start + counts[2]])
        self.constant = constant
        self.scale_map = transform_to(softplus_positive())
        self.scale_beta = float(self.scale_map.beta)
        self.scale_threshold = float(self.scale_map.threshold)
        assert self.scale_map.low == 0  # closed_form maps the scales by softplus alone
        raw_scale = float(self.scale_map.inv(torch.tensor(init_scale, dtype=torch.float64)))
        locs = []
        for i in self.order:
            site = nodes[i][1]
            value = site["fn"].mean if init_loc_fn is None else init_loc_fn(site)
            value = value.detach().expand(self.shapes[i])
            locs.append(biject_to(site["fn"].support).inv(value).reshape(-1))
        self.loc = torch.nn.Parameter(torch.cat(locs).detach().clone())
        self.scale_raw = torch.nn.Parameter(self.loc.new_full((gauss,), raw_scale))
        self.index = {name: i for i, name in enumerate(self.sites)}
        self._scale_cache = None
        self.likelihood = batch_likelihood(model.head)

    # ------------------------------------------------------------ the posterior
    def constrained(self, i: int, u: torch.Tensor) -> torch.Tensor:
        """Site ``i``'s value for the unconstrained value ``u``."""
        return u if self.real[i] else biject_to(self.supports[i])(u)

    def site_loc(self, i: int) -> torch.Tensor:
        """Unconstrained location of site ``i`` (a view of :attr:`loc`)."""
        start, size = self.loc_at[i]
        return self.loc[start:start + size].view(self.shapes[i])

    def site_scale(self, i: int) -> torch.Tensor:
        """Standard deviation of the Gaussian site ``i``."""
        start, size = self.scale_at[i]
        return self.scale_map(self.scale_raw[start:start + size]).view(self.shapes[i])

    def median(self) -> dict[str, torch.Tensor]:
        """Each site's median (its point value, or the transformed Gaussian's location)."""
        return {name: self.constrained(i, self.site_loc(i).detach().clone())
                for i, name in enumerate(self.sites)}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
        """Draws of every site, ``site -> (num_samples, *site_shape)`` (constrained)."""
        out = {}
        for i, name in enumerate(self.sites):
            loc = self.site_loc(i)
            if self.point[i]:
                u = loc.expand(num_samples, *loc.shape).clone()
            else:
                eps = torch.randn((num_samples, *loc.shape), generator=generator,
                                  dtype=loc.dtype, device=loc.device)
                u = loc + self.site_scale(i) * eps
            out[name] = self.constrained(i, u)
        return out

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """This posterior as a Pyro guide of ``model`` (the arguments are ignored)."""
        values = {}
        for i, name in enumerate(self.sites):
            loc, k = self.site_loc(i), self.event_dims[i]
            if self.point[i]:
                fn = dist.Delta(self.constrained(i, loc), event_dim=k)
            else:
                fn = dist.Normal(loc, self.site_scale(i)).to_event(k)
                if not self.real[i]:
                    fn = dist.TransformedDistribution(fn, biject_to(self.supports[i]))
            values[name] = pyro.sample(name, fn)
        return values

    # ---------------------------------------------------------------- the ELBO
    @torch.no_grad()
    def closed_form(self, loc: torch.Tensor, scale_raw: torch.Tensor, var_out=None,
                    pen_loc_out=None):
        """The closed-form part of ``log q - log p`` and its gradient (no graph).

        Parameters
        ----------
        loc, scale_raw : Tensor, shapes ``(d,)`` and ``(d_gauss,)``
            Values of :attr:`loc` and :attr:`scale_raw`.
        var_out : Tensor, shape ``(d_gauss,)``, optional
            Where to write the variances.
        pen_loc_out : Tensor, shape ``(d,)``, optional
            Where to write ``pen_loc``.

        Returns
        -------
        penalty : Tensor, shape ``()``
            The constant, the points' ``-log p`` under Gaussian priors and the
            Gaussians' KL to Gaussian priors.
        pen_loc : Tensor, shape ``(d,)``
            Its gradient in ``loc``: ``(loc - m) / s**2``.
        pen_raw : Tensor, shape ``(d_gauss,)``, or None
            Its gradient in ``scale_raw``: ``(sd / s**2 - 1 / sd) sd'`` (None without a
            Gaussian under a Gaussian prior).
        var, dvar : Tensor, shape ``(d_gauss,)``, or None
            The Gaussians' variances ``sd**2`` and their derivatives ``2 sd sd'``.
        """
        z = loc - self.prior_loc
        pen_loc = torch.mul(z, self.prior_precision, out=pen_loc_out)
        penalty = torch.add(z.dot(pen_loc), self.constant, alpha=2.0).mul_(0.5)
        if not scale_raw.numel():
            return penalty, pen_loc, None, None, None
        sd = softplus(scale_raw, self.scale_beta, self.scale_threshold)  # low is 0
        var = torch.mul(sd, sd, out=var_out) if var_out is not None else sd * sd
        # d softplus_beta(x) / dx = sigmoid(beta x) (exactly 1 on the linear branch, where
        # this differs from it by less than 1e-8)
        dsd = torch.sigmoid(scale_raw if self.scale_beta == 1.0 else scale_raw * self.scale_beta)
        dvar = sd.mul(dsd).mul_(2.0)
        n_gn, pen_raw = self.counts[2], None
        if n_gn:
            # KL(N(loc, sd) || N(m, s)) = ((loc - m)^2 + sd^2) / 2s^2 - log sd + [...]
            w, sd_g = self.gauss_precision, sd[:n_gn]
            penalty = penalty.add_(var[:n_gn].dot(w), alpha=0.5).sub_(sd_g.log().sum())
            grad = (sd_g * w).sub_(sd_g.reciprocal()).mul_(dsd[:n_gn])
            if n_gn == scale_raw.numel():
                pen_raw = grad
            else:
                pen_raw = torch.zeros_like(scale_raw)
                pen_raw[:n_gn] = grad
        return penalty, pen_loc, pen_raw, var, dvar

    def site_views(self, loc: torch.Tensor, var: torch.Tensor | None) -> list[torch.Tensor]:
        """Views of flat ``loc`` and ``var`` as the sites' tensors: every site's location in
        :attr:`order`, then every Gaussian site's variance in that order."""
        out = [u.view(shape) for u, shape in zip(loc.split(self.sizes), self.order_shapes,
                                                  strict=True)]
        if var is not None:
            out += [v.view(shape) for v, shape in zip(var.split(self.var_sizes),
                                                      self.var_shapes, strict=True)]
        return out

    def negative_elbo(self, X, y, *, exposure=None, weights=None, total_size=None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """One-draw estimate of the negative ELBO on a batch (what ``Trace_ELBO`` returns).

        Parameters
        ----------
        X : Tensor, shape ``(b, in_features)``
        y : Tensor, shape ``(b,)``
        exposure, weights : Tensor, shape ``(b,)``, optional
        total_size : int, optional
            Rows of the full data when ``X`` is a batch of it: the batch's
            log-likelihood is scaled by ``total_size / b``.
        generator : torch.Generator, optional
            Source of the normal draws.

        Returns
        -------
        Tensor, shape ``()``
        """
        outs = _Globals.apply(self.loc, self.scale_raw, self)
        return self.loss_at(outs[0], outs[1:], X, y, exposure=exposure, weights=weights,
                            total_size=total_size, generator=generator)

    def _column_scales(self, values: dict) -> list[torch.Tensor]:
        """The layers' weight scales: of the drawn ``layer_scale``, or of the fixed one
        (computed once, and again only if the model's buffer changes)."""
        model = self.model
        if "layer_scale" in values:
            return model.column_scales(values["layer_scale"])
        tau = model.layer_scale_value({})
        cache = self._scale_cache
        if cache is None or cache[0] is not tau or cache[1] != tau._version:
            cache = self._scale_cache = (tau, tau._version, model.column_scales(tau))
        return cache[2]

    def loss_at(self, penalty, sites, X, y, *, exposure=None, weights=None, total_size=None,
                generator=None, constant=None) -> torch.Tensor:
        """:meth:`negative_elbo` for given site tensors (see :meth:`site_views`) and
        closed-form penalty: the other sites' ``log q - log p`` (a log prior, or one
        reparameterised draw) and the network's expected log-likelihood. ``constant``
        (shape ``()``, optional) is the batch's weighted sum of the likelihood's
        :meth:`~.bnn_likelihood.BatchLikelihood.row_constants`, when the caller has them
        (computed here otherwise)."""
        n = len(self.order)
        site_vars = iter(sites[n:])
        values, loc_of, var_of = {}, {}, {}
        for i, u in zip(self.order, sites[:n], strict=True):
            name, kind = self.sites[i], self.kind[i]
            if kind == 0:
                values[name] = u
            elif kind == 1:
                x = values[name] = self.constrained(i, u)
                penalty = penalty - self.priors[i].log_prob(x).sum()
            elif kind == 2:
                loc_of[name], var_of[name] = u, next(site_vars)
            else:  # one reparameterised draw: log q(x) - log p(x), Jacobian of biject_to
                sd_i = next(site_vars).sqrt()
                eps = torch.randn(u.shape, generator=generator, dtype=u.dtype,
                                  device=u.device)
                t = biject_to(self.supports[i])
                draw = u + sd_i * eps
                x = t(draw)
                log_q = (-0.5 * eps * eps - sd_i.log() - _HALF_LOG_2PI).sum() \
                    - t.log_abs_det_jacobian(draw, x).sum()
                penalty = penalty + log_q - self.priors[i].log_prob(x).sum()
                values[name] = x

        def linear(prefix, u, scale, x):
            w, b = f"{prefix}.weight", f"{prefix}.bias"
            if w not in loc_of:
                if x is not None:
                    u = torch.cat([u, x], dim=-1)
                return torch.nn.functional.linear(u, values[w] * scale, values[b])
            eps = torch.randn((u.shape[0], loc_of[b].shape[0]), generator=generator,
                              dtype=u.dtype, device=u.device)
            return local_linear(u, loc_of[w], loc_of[b], var_of[w], var_of[b], eps, scale, x)

        model = self.model
        raw = model.propagate(X, linear, scales=self._column_scales(values))[1]
        log_lik = self.likelihood.log_lik(raw, y, exposure, weights)
        if constant is None:
            constant = self.batch_constant(y, exposure, weights)
        if constant is not None:
            log_lik = log_lik + constant
        factor = 1.0 if total_size is None else total_size / X.shape[0]
        return torch.sub(penalty, log_lik, alpha=factor)

    def batch_constant(self, y, exposure=None, weights=None, rows=None):
        """The weighted sum of the likelihood's data-only terms over a batch, shape ``()``
        (None where it has none); ``rows`` holds them per row when already computed."""
        if rows is None:
            with torch.no_grad():
                rows = self.likelihood.row_constants(y, exposure)
        if rows is None:
            return None
        return rows.sum() if weights is None else rows.dot(weights)
