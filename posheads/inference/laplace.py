"""Laplace approximation: :func:`fit_laplace`.

The posterior of the unconstrained vector ``theta`` is approximated by
``N(theta_hat, H^-1)``, with ``theta_hat`` the mode of the density of ``theta`` (the log
joint *with* the log-Jacobian of the constraining maps, as Stan's ``laplace`` does) and
``H`` the exact Hessian of the negative log joint there. For a
:class:`~posheads.models.glm.SoftplusGLM` ``H`` comes in closed form from
:class:`~posheads.models._loss.GLMLoss` (``X.T W X`` plus the prior precision, with the
observed, not the expected, information); for a general Pyro model from autograd.
Draws are mapped to the constrained sites, so every site of the posterior is a sample.
"""

from __future__ import annotations

import torch

from posheads.models._loss import GLMLoss
from posheads.models.glm import SoftplusGLM
from posheads.posterior import Posterior

from .map import fit_map

__all__ = ["fit_laplace", "gaussian_draws"]


def fit_laplace(model, data, *, num_samples=1000, seed=None, **map_kwargs) -> Posterior:
    """Gaussian approximation at the mode, in unconstrained space, and draws from it.

    Parameters
    ----------
    model : SoftplusGLM or callable
        As in :func:`~posheads.inference.fit_map`.
    data : GLMData or dict
    num_samples : int
        Number of draws.
    seed : int, optional
        Seeds the draws.
    **map_kwargs
        Passed to :func:`~posheads.inference.fit_map` (``max_iter``, ``tol``, ``init``,
        ``verbose``; ``jacobian`` defaults to True here).

    Returns
    -------
    Posterior
        ``method="laplace"``, one chain of ``num_samples`` draws. ``extra`` holds
        ``"map"`` and ``"map_theta"`` (the mode), ``"cov"`` (``H^-1``, shape ``(d, d)``),
        ``"hessian"`` and the fit's ``"n_iter"``, ``"converged"`` and ``"log_joint"``.

    Raises
    ------
    ValueError
        When the Hessian at the mode is not positive definite (e.g. collinear columns
        under a flat prior): the Gaussian does not exist.
    """
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    map_kwargs.setdefault("jacobian", True)
    fit = fit_map(model, data, seed=seed, **map_kwargs)
    theta = fit.extra["theta"]
    H = _hessian(model, fit, theta, map_kwargs["jacobian"])
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("the Hessian of the negative log joint at the mode is not positive "
                         "definite, so there is no Laplace approximation; add a proper "
                         "prior (e.g. a finite coef_scale) or remove collinear columns")
    cov = torch.cholesky_inverse(L)
    draws = gaussian_draws(theta, L, num_samples, seed)
    if isinstance(model, SoftplusGLM):
        values = model.unpack(draws, model.layout(fit.data.X, fit.data.X_zero))
    else:
        values = fit.extra["flat_model"].unpack(draws)
    samples = {k: v.detach()[None] for k, v in values.items()}
    extra = {k: fit.extra[k] for k in ("map", "n_iter", "converged", "log_joint", "jacobian")}
    extra.update(map_theta=theta, cov=cov, hessian=H)
    return Posterior(model, samples, method="laplace", data=fit.data, extra=extra)


def _hessian(model, fit, theta, jacobian):
    if isinstance(model, SoftplusGLM):
        loss = GLMLoss(model, fit.data, jacobian=jacobian, normalize=False, validate=False)
        return loss.hessian(theta, loss.predictors(theta), exact=True)
    flat = fit.extra["flat_model"]
    return torch.autograd.functional.hessian(
        lambda t: -flat.log_joint(t, jacobian=jacobian), theta.detach())


def gaussian_draws(mean, chol_precision, num_samples, seed=None):
    """Draws of ``N(mean, (L L^T)^-1)`` given the Cholesky factor ``L`` of the precision.

    ``theta = mean + L^-T z`` with ``z ~ N(0, I)`` has covariance ``L^-T L^-1 = H^-1``.

    Parameters
    ----------
    mean : Tensor, shape ``(d,)``
    chol_precision : Tensor, shape ``(d, d)``
        Lower-triangular ``L`` with ``L L^T = H``.
    num_samples : int
    seed : int, optional

    Returns
    -------
    Tensor, shape ``(num_samples, d)``
    """
    gen = torch.Generator(device=mean.device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    z = torch.randn(mean.shape[0], num_samples, dtype=mean.dtype, device=mean.device,
                    generator=gen)
    x = torch.linalg.solve_triangular(chol_precision.mT, z, upper=True)
    return mean + x.mT
