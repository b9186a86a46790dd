"""A flat, unconstrained view of the latent sites of a general Pyro model.

The engines fit :class:`posheads.models.glm.SoftplusGLM` through its own fast functions;
any other Pyro model goes through :class:`FlatModel`, which traces the model once to
find its continuous latent sites, maps each to the real line with ``biject_to`` of its
support (softplus for :func:`posheads.constraints.softplus_positive`) and evaluates the
log joint of one flat vector by conditioning and tracing the model.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

__all__ = ["FlatModel", "latent_sites", "observed_sites"]


def latent_sites(trace) -> list[str]:
    """Names of the latent (non-observed, non-subsample) sample sites of ``trace``."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site)]


def observed_sites(trace) -> list[str]:
    """Names of the observed sample sites of ``trace``."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]]


class FlatModel:
    """Latent sites of ``model(**kwargs)`` packed into one unconstrained vector.

    Parameters
    ----------
    model : callable
        A Pyro model.
    kwargs : dict
        Keyword arguments of the model (its data).
    seed : int, optional
        Seeds the prior draws used for the starting point (``init_to_median``).

    Attributes
    ----------
    theta0 : Tensor, shape ``(d,)``
        Start: the prior median of each site, mapped to the real line.
    sites : list of (str, torch.Size, Transform)
    """

    def __init__(self, model, kwargs: dict, seed: int | None = None):
        if not isinstance(kwargs, dict):
            raise ValueError("for a general Pyro model, data must be a dict of keyword "
                             f"arguments of the model, got {type(kwargs).__name__}")
        self.model, self.kwargs = model, kwargs
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            trace = poutine.trace(InitMessenger(init_to_median)(model)).get_trace(**kwargs)
        names = latent_sites(trace)
        if not names:
            raise ValueError("the model has no latent sample sites to fit")
        self.sites, pieces = [], []
        for name in names:
            site = trace.nodes[name]
            if site["fn"].support.is_discrete:
                raise ValueError(f"site {name!r} is discrete; only continuous latent "
                                 "sites can be fitted")
            transform = biject_to(site["fn"].support)
            value = site["value"].detach()
            self.sites.append((name, value.shape, transform))
            pieces.append(transform.inv(value).reshape(-1))
        self.theta0 = torch.cat(pieces)
        self.num_obs = sum(trace.nodes[n]["value"].numel() for n in observed_sites(trace))

    def layout(self) -> list[tuple[str, torch.Size]]:
        """Site names and constrained shapes, in packing order."""
        return [(name, shape) for name, shape, _ in self.sites]

    def unpack(self, theta: torch.Tensor, with_log_det: bool = False):
        """Constrained values from ``theta`` of shape ``(..., d)``; optionally the log-Jacobian."""
        out, log_det, i = {}, 0.0, 0
        for name, shape, transform in self.sites:
            k = shape.numel()
            raw = theta[..., i:i + k].reshape(theta.shape[:-1] + shape)
            value = transform(raw)
            out[name] = value
            if with_log_det:
                ladj = transform.log_abs_det_jacobian(raw, value)
                log_det = log_det + ladj.reshape(*theta.shape[:-1], -1).sum(-1)
            i += k
        return (out, log_det) if with_log_det else out

    def log_joint(self, theta: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
        """Log joint of the model at unconstrained ``theta`` of shape ``(d,)``."""
        values, log_det = self.unpack(theta, with_log_det=True)
        trace = poutine.trace(poutine.condition(self.model, values)).get_trace(**self.kwargs)
        lp = trace.log_prob_sum()
        return lp + log_det if jacobian else lp
