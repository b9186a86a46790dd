"""The ELBO of a Bayesian count MLP in one batched pass (``posheads.inference.bnn_elbo``).

:class:`MeanFieldBNN` is a mean-field variational posterior over the latent sites of a
:class:`~posheads.models.bnn.BayesianCountMLP`: a Gaussian per weight in the site's
unconstrained space (scales ``softplus``-mapped, as :func:`~.common.make_guide`'s guides
store them), or a point estimate for the sites named in ``point_sites`` (the hidden
layers, for the ``"last_layer"`` guide). Its :meth:`~MeanFieldBNN.negative_elbo` is the
loss Pyro's ``Trace_ELBO`` estimates for the same model and the same variational
parameters, computed without tracing a site:

* the network runs once on the batch, each Gaussian layer by the *local
  reparameterisation trick* (Kingma, Salimans & Welling 2015, "Variational dropout and
  the local reparameterization trick"): given its input ``u``, a layer's output
  ``u @ W.T + b`` under independent Gaussian weights is Gaussian with mean
  ``u @ M.T + m`` and variance ``u**2 @ (S**2).T + s**2``, so one normal draw per output
  replaces a draw per weight. Each row's outputs have exactly the distribution they have
  when the weights themselves are drawn; only the correlation *between* rows is lost,
  which the expected log-likelihood (a sum over rows) does not see;
* the likelihood is the head's family distribution (``model.head.distribution``), the
  same code the Pyro model calls;
* a Gaussian site under a Gaussian prior contributes its KL divergence in closed form;
  a point site its log prior; any other Gaussian site (a learned layer scale under its
  half-normal prior) a one-draw Monte Carlo ``log q - log p``.

Both estimators are unbiased for the same ELBO and its gradient (the tests compare them
in expectation); this one has lower variance and costs about one plain forward pass.
:class:`MeanFieldSVI` takes Adam steps on it with the interface of
:class:`~.svi_state.SVIState` (so :func:`~.svi.run_steps` drives it), and
:meth:`MeanFieldBNN.forward` is the same posterior as a Pyro guide, for Pyro's general
path and for the comparison.
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

from .common import check_real

__all__ = ["MeanFieldBNN", "MeanFieldSVI"]

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


class _LocalLinear(torch.autograd.Function):
    """``u @ M.T + m + sqrt(u**2 @ V.T + v) * eps`` with a hand-written backward.

    The local reparameterisation of a layer with weights ``N(M, V)`` and biases
    ``N(m, v)`` (``u`` of shape ``(n, in)``, ``eps`` ``(n, out)``). With ``r = eps / sd``
    and ``g`` the output's gradient, the variance receives ``g * r / 2``, and the input
    ``g @ M + 2 u * ((g * r / 2) @ V)``: one fused pass over ``u`` where autograd takes
    several.
    """

    @staticmethod
    def forward(ctx, u, w_loc, b_loc, w_var, b_var, eps):
        u2 = u * u
        sd = torch.addmm(b_var, u2, w_var.t()).sqrt_()
        out = torch.addmm(b_loc, u, w_loc.t()).addcmul_(sd, eps)
        ctx.save_for_backward(u, u2, w_loc, w_var, eps.div(sd))
        return out

    @staticmethod
    def backward(ctx, g):
        u, u2, w_loc, w_var, r = ctx.saved_tensors
        half_dvar = g * r  # twice the variance's gradient
        grad_u = None
        if ctx.needs_input_grad[0]:
            grad_u = torch.addcmul(g @ w_loc, u, half_dvar @ w_var)
        half_dvar = half_dvar * 0.5
        return (grad_u, g.t() @ u, g.sum(0), half_dvar.t() @ u2, half_dvar.sum(0), None)


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
        # the Gaussian priors, flat: (loc, 1 / scale) of the points', (loc, 1 / scale^2) of
        # the Gaussians'; and the parameter-free part of the penalty (log-normalisers of
        # the points' priors, KL constants), summed once
        flat = {0: ([], []), 2: ([], [])}
        constant = 0.0
        for i in self.order:
            if normal[i] is None:
                continue
            m, sd = (t.detach().expand(self.shapes[i]).reshape(-1) for t in normal[i])
            k = self.kind[i]
            constant += float((sd.log() + (_HALF_LOG_2PI if k == 0 else -0.5)).sum())
            flat[k][0].append(m)
            flat[k][1].append(sd.reciprocal() if k == 0 else sd.reciprocal() ** 2)
        for k, name in ((0, "point"), (2, "gauss")):
            ms, ws = flat[k]
            self.register_buffer(f"{name}_prior_loc", torch.cat(ms) if ms else ref.new_zeros(0))
            self.register_buffer(f"{name}_prior_weight",
                                 torch.cat(ws) if ws else ref.new_zeros(0))
        self.constant = constant
        self.scale_map = transform_to(softplus_positive())
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
    def _global_terms(self, generator):
        """Per-site values (or moments) for the network, and ``log q - log p`` of the
        weights: KL in closed form, log prior of points, one draw for the rest."""
        n_pn, n_po, n_gn, _ = self.counts
        loc = self.loc
        penalty = self.constant
        if n_pn:  # - log N(loc; m, s) = (loc - m)^2 / 2s^2 + [log s + log(2 pi) / 2]
            z = (loc[:n_pn] - self.point_prior_loc) * self.point_prior_weight
            penalty = penalty + 0.5 * (z * z).sum()
        var = None
        if self.scale_raw.numel():
            sd = self.scale_map(self.scale_raw)
            var = sd * sd
            if n_gn:
                # KL(N(loc, sd) || N(m, s)) = ((loc - m)^2 + sd^2) / 2s^2 - log sd + [...]
                z = loc[n_pn + n_po:n_pn + n_po + n_gn] - self.gauss_prior_loc
                penalty = penalty + 0.5 * ((z * z + var[:n_gn]) * self.gauss_prior_weight
                                           ).sum() - sd[:n_gn].log().sum()
        locs = loc.split(self.sizes)
        var_parts = var.split([self.scale_at[i][1] for i in self.order
                               if not self.point[i]]) if var is not None else ()
        values, loc_of, var_of = {}, {}, {}
        gauss = iter(var_parts)
        for i, flat in zip(self.order, locs, strict=True):
            name, kind, u = self.sites[i], self.kind[i], flat.view(self.shapes[i])
            if kind == 0:
                values[name] = u
            elif kind == 1:
                x = values[name] = self.constrained(i, u)
                penalty = penalty - self.priors[i].log_prob(x).sum()
            elif kind == 2:
                loc_of[name], var_of[name] = u, next(gauss).view(self.shapes[i])
            else:  # one reparameterised draw: log q(x) - log p(x), Jacobian of biject_to
                sd_i = next(gauss).sqrt().view(self.shapes[i])
                eps = torch.randn(u.shape, generator=generator, dtype=u.dtype,
                                  device=u.device)
                t = biject_to(self.supports[i])
                draw = u + sd_i * eps
                x = t(draw)
                log_q = (-0.5 * eps * eps - sd_i.log() - _HALF_LOG_2PI).sum() \
                    - t.log_abs_det_jacobian(draw, x).sum()
                penalty = penalty + log_q - self.priors[i].log_prob(x).sum()
                values[name] = x
        return values, loc_of, var_of, penalty

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
        values, loc_of, var_of, penalty = self._global_terms(generator)

        def linear(prefix, u, scale):
            w, b = f"{prefix}.weight", f"{prefix}.bias"
            if w not in loc_of:
                return torch.nn.functional.linear(u, values[w] * scale, values[b])
            eps = torch.randn((u.shape[0], loc_of[b].shape[0]), generator=generator,
                              dtype=u.dtype, device=u.device)
            return _LocalLinear.apply(u, loc_of[w] * scale, loc_of[b],
                                      var_of[w] * (scale * scale), var_of[b], eps)

        model = self.model
        tau = values.get("layer_scale", None)
        if tau is None:
            tau = model.layer_scale_value({})
        raw = model.propagate(X, linear, tau)[1]
        log_lik = model.head.distribution(raw, exposure).log_prob(y)
        if weights is not None:
            log_lik = log_lik * weights
        rows = X.shape[0]
        factor = 1.0 if total_size is None else total_size / rows
        return penalty - factor * log_lik.sum()


class MeanFieldSVI:
    """Adam on :meth:`MeanFieldBNN.negative_elbo`, one step at a time.

    The interface of :class:`~.svi_state.SVIState` (``step``, ``losses``,
    ``num_steps``), so :func:`~.svi.run_steps` drives it: the same step-size decay,
    global gradient-norm clip and ``ValueError`` at a non-finite loss.

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
        self.params = [p for p in posterior.parameters() if p.numel()]
        device = self.params[0].device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(torch.randint(2**62, ())) if seed is None else int(seed))
        # one fused kernel per tensor where torch has it (CPU and CUDA floating point)
        fused = all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                    and p.device.type in ("cpu", "cuda") for p in self.params)
        self.optimizer = torch.optim.Adam(self.params, lr=self.learning_rate,
                                          fused=fused or None)
        self.losses: list[float] = []

    @property
    def num_steps(self) -> int:
        return len(self.losses)

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
        if idx is not None:
            total_size = X.shape[0] if total_size is None else total_size
            X, y = X.index_select(0, idx), y.index_select(0, idx)
            exposure = None if exposure is None else exposure.index_select(0, idx)
            weights = None if weights is None else weights.index_select(0, idx)
        loss = self.posterior.negative_elbo(X, y, exposure=exposure, weights=weights,
                                            total_size=total_size, generator=self.generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            q = self.posterior
            bad = [name for i, name in enumerate(q.sites)
                   if not torch.isfinite(q.site_loc(i)).all()]
            where = f"non-finite parameters of {bad}" if bad else "non-finite log-likelihood"
            raise ValueError(f"SVI loss is {value} at step {self.num_steps}: {where}; try a "
                             "smaller learning_rate or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.optimizer.step()
        for group in self.optimizer.param_groups:
            group["lr"] *= self.gamma
        self.losses.append(value)
        return value
