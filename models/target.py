"""A model's posterior as a density on one flat vector: :class:`Target`.

Every engine of :mod:`posheads.inference` works on ``theta``, one flat unconstrained
vector of shape ``(d,)``: each latent site is mapped to the real line by ``biject_to`` of
its support (softplus for :func:`posheads.constraints.softplus_positive`) and the pieces
are concatenated in :attr:`Target.layout` order. A target says how to go between
``theta`` and the sites, and evaluates the log joint, its gradient and its Hessian. What a
model offers beyond that is optional: a loss with Newton's structure
(:meth:`Target.newton_loss`) where the model has one.

* :class:`~posheads.models.glm.SoftplusGLM` makes a target with closed-form gradients and
  Hessians (:class:`~posheads.models.glm_loss.GLMLoss`);
* :class:`PyroTarget` is the target of any Pyro model, conditioned by keyword arguments,
  through Pyro's own potential (:func:`pyro.infer.mcmc.util.initialize_model`: discrete
  latent sites are enumerated out) and autograd.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = ["LikelihoodTarget", "PyroTarget", "Target"]


class Target:
    """The posterior of a model given its data, on one flat unconstrained vector.

    Subclasses set :attr:`layout` and :attr:`data` and implement :meth:`unpack`,
    :meth:`pack`, :meth:`log_joint` and :meth:`init`; the rest has generic defaults.

    Attributes
    ----------
    layout : list of (str, torch.Size)
        Latent sites and their constrained shapes, in packing order.
    data : object
        The data the target conditions on, validated (what ``Posterior.data`` keeps).
    num_obs : float
        The size of the data in the objective's units (sum of row weights, or number of
        observed values): engines divide by it so that tolerances are scale-free.
    work_size : int or None
        Entries of the design the potential reads per evaluation (None: unknown); the
        engines' thread policy runs small ones on one thread.
    """

    layout: list
    data: object = None
    num_obs: float = 1.0
    work_size: int | None = None

    @property
    def dim(self) -> int:
        return sum(shape.numel() for _, shape in self.layout)

    def init(self) -> torch.Tensor:
        """A finite starting point, shape ``(d,)``."""
        raise NotImplementedError

    def unpack(self, theta: torch.Tensor) -> dict:
        """Constrained site values from ``theta`` of shape ``(..., d)``."""
        raise NotImplementedError

    def pack(self, values: dict) -> torch.Tensor:
        """Inverse of :meth:`unpack`."""
        raise NotImplementedError

    def log_joint(self, theta: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
        """Log prior + log-likelihood at ``theta`` (``(d,)``), differentiable by autograd.

        With ``jacobian`` the log-Jacobian of the constraining maps is added: the density
        of ``theta`` itself (whose mode the Laplace approximation and NUTS use); without
        it the maximum is the MAP of the constrained parameters.
        """
        raise NotImplementedError

    def log_likelihood(self, theta: torch.Tensor) -> torch.Tensor:
        """The log-likelihood of the observed data alone at ``theta`` (``(d,)``): no
        priors and no log-Jacobian (which is part of the prior density of ``theta``)."""
        raise NotImplementedError

    def likelihood(self) -> Target:
        """The target of the likelihood alone: the same layout, data and start, with
        :meth:`log_joint` equal to :meth:`log_likelihood` whatever ``jacobian`` says.

        A sum over shards of the data counts the priors once when one shard keeps its
        full target and the others use this one (the data-parallel fits).
        """
        return LikelihoodTarget(self)

    def potential_and_grad(self, theta: torch.Tensor):
        """``U = -log_joint(theta)`` (with the Jacobian) and ``dU/dtheta``, detached."""
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            u = -self.log_joint(th, jacobian=True)
            (g,) = torch.autograd.grad(u, th)
        return u.detach(), g

    def hessian(self, theta: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
        """The Hessian of ``-log_joint`` at ``theta``, shape ``(d, d)`` (autograd)."""
        return torch.autograd.functional.hessian(
            lambda t: -self.log_joint(t, jacobian=jacobian), theta.detach())

    def newton_loss(self, jacobian: bool = False):
        """A loss with the Newton solver's interface (see :mod:`posheads.inference`), or
        None when the model has no such structure (then engines use L-BFGS)."""
        del jacobian
        return None


class LikelihoodTarget(Target):
    """``base`` with its priors left out (see :meth:`Target.likelihood`)."""

    def __init__(self, base: Target):
        self.base = base
        self.layout, self.data = base.layout, base.data
        self.num_obs, self.work_size = base.num_obs, base.work_size

    def init(self):
        return self.base.init()

    def unpack(self, theta):
        return self.base.unpack(theta)

    def pack(self, values):
        return self.base.pack(values)

    def log_joint(self, theta, jacobian=True):
        del jacobian  # the log-Jacobian belongs to the prior density of theta
        return self.base.log_likelihood(theta)

    def log_likelihood(self, theta):
        return self.base.log_likelihood(theta)

    def likelihood(self):
        return self


def observed_sites(trace) -> list[str]:
    """Names of the observed sample sites of ``trace``."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]]


class PyroTarget(Target):
    """The posterior of any Pyro model conditioned by keyword arguments.

    Parameters
    ----------
    model : callable
        A Pyro model.
    kwargs : dict
        Its keyword arguments (the data, observed sites given).
    seed : int, optional
        Seeds the prior draws of the starting point (the median of each site's prior).

    Sites are packed in sorted name order; Pyro's potential enumerates discrete latent
    sites out.
    """

    def __init__(self, model, kwargs: dict, seed: int | None = None):
        from pyro.infer.autoguide.initialization import init_to_median
        from pyro.infer.mcmc.util import initialize_model

        if not isinstance(kwargs, dict):
            raise ValueError("for a general Pyro model, data must be a dict of keyword "
                             f"arguments of the model, got {type(kwargs).__name__}")
        self.model, self.data = model, kwargs
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            trace = poutine.trace(model).get_trace(**kwargs)
            latent = [n for n, s in trace.nodes.items() if s["type"] == "sample"
                      and not s["is_observed"] and not site_is_subsample(s)]
            if not latent:
                raise ValueError("the model has no latent sample sites to fit")
            init, self._potential, self._transforms, _ = initialize_model(
                model, model_kwargs=kwargs, init_strategy=init_to_median)
        self._names = sorted(init)
        self.layout = [(n, self._transforms[n].inv(init[n]).shape) for n in self._names]
        self._raw_shapes = [init[n].shape for n in self._names]
        self._init = torch.cat([init[n].detach().reshape(-1) for n in self._names])
        self.num_obs = float(max(sum(trace.nodes[n]["value"].numel()
                                     for n in observed_sites(trace)), 1))

    def init(self):
        return self._init.clone()

    def _split(self, theta):
        sizes = [s.numel() for s in self._raw_shapes]
        parts = torch.split(theta, sizes, dim=-1)
        lead = theta.shape[:-1]
        return {n: p.reshape(lead + s)
                for n, p, s in zip(self._names, parts, self._raw_shapes, strict=True)}

    def unpack(self, theta):
        return {n: self._transforms[n].inv(v) for n, v in self._split(theta).items()}

    def pack(self, values):
        return torch.cat([self._transforms[n](values[n]).reshape(-1) for n in self._names])

    def log_likelihood(self, theta):
        """The observed sites' log density (scaled and masked as the model says) at the
        latent values of ``theta``, by a trace of the conditioned model."""
        values = self.unpack(theta)
        trace = poutine.trace(poutine.condition(self.model, values)).get_trace(**self.data)
        # conditioning marks the latent sites observed too: keep the data's sites only
        return trace.log_prob_sum(
            site_filter=lambda name, site: site["is_observed"] and name not in values)

    def log_joint(self, theta, jacobian=True):
        raw = self._split(theta)
        lp = -self._potential(raw)  # Pyro's potential includes the Jacobian
        if not jacobian:
            for n, u in raw.items():
                inv = self._transforms[n].inv
                lp = lp - inv.log_abs_det_jacobian(u, inv(u)).sum()
        return lp
