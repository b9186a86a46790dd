"""Laplace approximation: :class:`Laplace` and :func:`fit_laplace`.

The posterior of the unconstrained vector ``theta`` is approximated by
``N(theta_hat, H^-1)``, with ``theta_hat`` the mode of the density of ``theta`` (the log
joint *with* the log-Jacobian of the constraining maps, as Stan's ``laplace`` does) and
``H`` the exact Hessian of the negative log joint there
(:meth:`~posheads.models.target.Target.hessian`: for a
:class:`~posheads.models.glm.SoftplusGLM` in closed form, ``X.T W X`` plus the prior
precision with the observed, not the expected, information; for a general Pyro model by
autograd). Draws are mapped to the constrained sites, so every site of the posterior is a
sample. See ``docs/inference.md``, "The Laplace approximation".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posheads.posterior import Posterior

from .common import check_int, check_real
from .map import MAP

__all__ = ["Laplace", "fit_laplace", "gaussian_draws"]


@dataclass(frozen=True)
class Laplace:
    """Configuration of the Laplace engine.

    Parameters
    ----------
    num_samples : int
        Number of draws.
    max_iter, tol
        Of the mode search (see :class:`~posheads.inference.map.MAP`).

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(100, 2, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1 + X[:, 0]))
    >>> post = Laplace(num_samples=50).fit(SoftplusGLM(), GLMData(X, y), seed=0)
    >>> post.samples["coef"].shape
    torch.Size([1, 50, 2])
    """

    num_samples: int = 1000
    max_iter: int = 100
    tol: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "num_samples", check_int("num_samples", self.num_samples, 1))
        object.__setattr__(self, "max_iter", check_int("max_iter", self.max_iter, 1))
        object.__setattr__(self, "tol", check_real("tol", self.tol, 0.0))

    def fit(self, model, data, *, seed=None, verbose=0, init=None, jacobian=True,
            check_input=True) -> Posterior:
        """The Laplace approximation of ``model``'s posterior; see :func:`fit_laplace`."""
        search = MAP(max_iter=self.max_iter, tol=self.tol)
        target, mode = search.target_and_mode(model, data, seed=seed, verbose=verbose,
                                              init=init, jacobian=jacobian,
                                              check_input=check_input)
        H = target.hessian(mode.theta, jacobian)
        L = _cholesky(H)
        if L is None:
            raise ValueError("the Hessian of the negative log joint at the mode is not "
                             "positive definite, so there is no Laplace approximation; add "
                             "a proper prior (e.g. a finite coef_scale) or remove collinear "
                             "columns")
        draws = gaussian_draws(mode.theta, L, self.num_samples, seed)
        samples = {k: v.detach()[None] for k, v in target.unpack(draws).items()}
        extra = {"map": mode.values, "n_iter": mode.n_iter, "converged": mode.converged,
                 "log_joint": mode.log_joint, "jacobian": jacobian,
                 "map_theta": mode.theta, "cov": torch.cholesky_inverse(L), "hessian": H}
        return Posterior(model, samples, method="laplace", data=target.data, extra=extra)


def fit_laplace(model, data, *, num_samples=1000, seed=None, max_iter=100, tol=1e-8,
                init=None, verbose=0, jacobian=True, check_input=True) -> Posterior:
    """Gaussian approximation at the mode, in unconstrained space, and draws from it.

    Parameters
    ----------
    model : PosteriorModel or callable
        As in :func:`~posheads.inference.fit_map`.
    data : GLMData or dict
    num_samples : int
        Number of draws.
    seed : int, optional
        Seeds the draws (and a general model's starting point).
    max_iter, tol, init, verbose, check_input
        Of the mode search, as in :func:`~posheads.inference.fit_map`.
    jacobian : bool
        Centre the Gaussian at the mode of the density of ``theta`` (the default) or at
        the MAP of the constrained parameters.

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
    config = Laplace(num_samples=num_samples, max_iter=max_iter, tol=tol)
    return config.fit(model, data, seed=seed, verbose=verbose, init=init, jacobian=jacobian,
                      check_input=check_input)


def _cholesky(H: torch.Tensor) -> torch.Tensor | None:
    """The Cholesky factor of ``H``, or None where ``H`` is not positive definite to
    working precision.

    A factorisation can succeed on a singular ``H`` by round-off; its smallest pivot is
    then at the level of that round-off, ``n * eps`` times the largest curvature (times a
    margin of 64).
    """
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0 or not bool(torch.isfinite(L).all()):
        return None
    pivots = L.diagonal() ** 2
    floor = 64 * H.shape[0] * torch.finfo(H.dtype).eps * H.diagonal().abs().max()
    return L if bool(pivots.min() > floor) else None


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
        ``None`` draws a fresh seed from the operating system.

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
