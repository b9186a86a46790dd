"""Maximum likelihood for softplus GLMMs: the outer optimisation of the marginal likelihood.

:func:`fit_mixed_ml` maximises the Laplace (or adaptive Gauss-Hermite) marginal
log-likelihood of :mod:`.mixed_laplace` over the fixed parameters -- fixed effects, log
standard deviations, unconstrained correlation factors, the family's shapes and parts --
with scipy's L-BFGS-B on an orthogonalised fixed-effects design (:class:`_Reparam`),
from the GLM without group effects and moment SDs (:func:`moment_start`); each
evaluation solves for the mode of the effects (warm-started from the previous one, its
effects ``u = Lambda z`` kept under the new SDs) and differentiates through it. Log
standard deviations are kept in ``[log_sd_bounds]``: a variance component at the
boundary (a true SD of 0) ends at the lower bound with a flat likelihood, and is reported
in :attr:`MixedFit.singular`.

The covariance of the estimates is the inverse of the numerical Hessian of the negated
objective (forward differences of its exact gradient).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize
from sklearn.exceptions import ConvergenceWarning

from .common import intra_op_threads
from .mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik, row_derivatives
from .mixed_start import MOMENT_SD_RANGE, moment_start, start_theta
from .mixed_structure import orthogonal_design

__all__ = ["MOMENT_SD_RANGE", "MixedFit", "fit_mixed_ml", "moment_start", "start_theta"]

#: A standard deviation below this (on the ``eta`` scale, relative to 1) counts as
#: collapsed: lme4 uses the same 1e-4 for its ``isSingular`` check.
SINGULAR_SD = 1e-4
# A term's own share of its correlation factor, sqrt(1 - R^2) of its regression on the
# earlier terms, below this (|correlation| above 0.999 for two terms): on the boundary.
SINGULAR_L = math.sqrt(1.0 - 0.999**2)


@dataclass
class MixedFit:
    """The result of :func:`fit_mixed_ml`.

    Attributes
    ----------
    theta : ndarray, shape ``(P,)``
        The estimate, flat (see :meth:`SoftplusGLMM.layout`).
    params : dict of str to ndarray
        Its named blocks.
    cov : ndarray, shape ``(P, P)`` or None
        Covariance of ``theta`` (inverse observed information); ``None`` if not computed.
    log_lik : float
        The maximised marginal log-likelihood.
    z : Tensor, shape ``(R,)``
        The conditional modes of the non-centred effects.
    modes : list of ndarray, shapes ``(G_k, q_k)``
        The conditional modes of the effects ``u_k``.
    mode_cov : list of ndarray or None
        With one factor, the conditional covariance of each group's effect, ``(G, q, q)``
        (``Lambda H_g^{-1} Lambda'``); ``None`` with several.
    converged : bool
    n_iter : int
    singular : list of str
        The random terms whose share of the covariance factor collapsed to 0 (lme4's
        rule): an SD, or a diagonal entry of ``Lambda_k = diag(sd_k) L_k``, below
        ``SINGULAR_SD`` -- a variance at 0 -- or a diagonal entry of ``L_k`` below
        ``SINGULAR_L`` -- a correlation at +-1 (|r| > 0.999 for two terms: the term is
        then a multiple of the others).
    n_quadrature : int
    """

    theta: np.ndarray
    params: dict
    cov: np.ndarray | None
    log_lik: float
    z: torch.Tensor
    modes: list
    mode_cov: list | None
    converged: bool
    n_iter: int
    singular: list = field(default_factory=list)
    n_quadrature: int = 1


def _bounds(model, data, log_sd_bounds):
    out = []
    for name, shape in model.layout(data).items():
        size = int(np.prod(shape, dtype=int))
        b = log_sd_bounds if name.endswith("_log_sd") else (None, None)
        out += [b] * size
    return out


class _Objective:
    """``-log p(y | theta)`` and its gradient as float64 numpy, with a warm-started mode."""

    def __init__(self, model, data, structure, n_quadrature):
        self.model, self.data, self.structure = model, data, structure
        self.n_quadrature = n_quadrature
        self.z, self.lams = None, None
        self.last = None
        self.like = data.X

    def tensor(self, theta):
        return torch.as_tensor(np.asarray(theta), dtype=self.like.dtype,
                               device=self.like.device)

    def mode(self, theta):
        with torch.no_grad():
            lams = self.model.factors(self.model.unpack(theta.detach(), self.data), self.data)
        z, ok = inner_mode(self.model, theta, self.data, self.structure, self.warm(lams))
        if not ok:  # a wild trial point: start again from 0
            z, ok = inner_mode(self.model, theta, self.data, self.structure, None)
        if ok:
            self.z, self.lams = z, lams
        return z

    def warm(self, lams):
        """The last mode as a start at the factors ``lams``, its effects kept
        (:meth:`EffectsStructure.rescale`)."""
        if self.z is None:
            return None
        z = self.structure.rescale(self.z, self.lams, lams)
        return z if bool(torch.isfinite(z).all()) else self.z

    def __call__(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        # L-BFGS-B ends on a point it evaluated last; asked again there (the gradient at
        # the estimate), answer from the record: the mode in self.z is already that one's
        if self.last is not None and np.array_equal(theta, self.last[0]):
            return self.last[1], self.last[2].copy()
        v, g = self._evaluate(theta)
        self.last = (theta.copy(), v, g)
        return v, g.copy()

    def _evaluate(self, theta):
        th = self.tensor(theta).requires_grad_(True)
        try:
            z = self.mode(th)
            value = marginal_log_lik(self.model, th, self.data, self.structure, z,
                                     self.n_quadrature)
            grad, = torch.autograd.grad(value, th)
        except FloatingPointError:
            return math.inf, np.zeros_like(theta)
        v = -float(value.detach())
        if not math.isfinite(v):
            return math.inf, np.zeros_like(theta)
        return v, -grad.detach().cpu().numpy().astype(np.float64)


def _numerical_cov(objective, theta, grad):
    """Inverse of the Hessian of the negated objective by forward differences of its exact
    gradient from the estimate (``P`` evaluations; the step ``1e-5`` relative leaves a
    truncation error of about ``1e-5`` relative, below what a standard error needs)."""
    P = len(theta)
    H = np.empty((P, P))
    for i in range(P):
        h = 1e-5 * max(1.0, abs(theta[i]))
        up = theta.copy()
        up[i] += h
        H[i] = (objective(up)[1] - grad) / h
    H = 0.5 * (H + H.T)
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(H)


def fit_mixed_ml(model, data, *, n_quadrature: int = 1, theta0=None, max_iter: int = 500,
                 tol: float = 1e-9, compute_cov: bool = True,
                 log_sd_bounds=(-12.0, 8.0), dense_limit: int = 8000) -> MixedFit:
    """Fit a :class:`~posheads.models.mixed.SoftplusGLMM` by maximum marginal likelihood.

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets.
    n_quadrature : int, default=1
        1: the Laplace approximation; more: adaptive Gauss-Hermite quadrature with that
        many nodes per group (a single random intercept only).
    theta0 : Tensor, shape ``(P,)``, optional
        Start, used as given (default: :func:`start_theta` improved by
        :func:`moment_start`).
    max_iter, tol : int, float
        L-BFGS-B's iteration budget and its relative tolerance on the objective.
    compute_cov : bool
        Compute the covariance of the estimates (``P`` extra evaluations).
    log_sd_bounds : (float, float)
        Bounds of the log standard deviations.
    dense_limit : int
        With several groupings, the largest number of effects of the groupings other
        than the largest one (their Schur complement is dense; a count and a zero-part
        factor on one grouping are one block per level; see :mod:`.mixed_structure`).

    Returns
    -------
    MixedFit
    """
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    # numpy/scipy's BLAS only ever sees P-sized vectors here (L-BFGS-B, the P x P
    # covariance): waking its threads costs more than the work (torch keeps its own pool)
    with intra_op_threads(data.n * len(model.layout(data)), data.X.device), \
            threadpool_limits(1, user_api="blas"):
        return _maximise(model, data, n_quadrature, theta0, max_iter, tol, compute_cov,
                         log_sd_bounds, dense_limit)


class _Reparam:
    """The fixed effects of an orthogonal design: ``X = Q T`` (thin QR, ``Q`` scaled by
    ``sqrt(n)``), so the optimiser sees ``c = T b`` with ``X b = Q c``. Uncentred or
    collinear covariates make the likelihood a long, narrow ridge in ``b`` on which L-BFGS
    crawls; in ``c`` the fixed-effect block of the information is about ``I`` times the
    rows' curvature. Rank-deficient ``X`` is left as it is."""

    def __init__(self, model, data):
        self.p, self.T = data.X.shape[1], None
        self.data = data
        basis = orthogonal_design(data.X)
        if basis is None:
            return
        Q, T = basis
        self.T = T.cpu().numpy().astype(np.float64)
        self.data = dataclasses.replace(data, X=Q)

    def forward(self, theta: np.ndarray) -> np.ndarray:
        """``b -> c`` in the flat vector (``coef`` is its first block)."""
        if self.T is None:
            return theta
        out = theta.copy()
        out[:self.p] = self.T @ theta[:self.p]
        return out

    def backward(self, theta: np.ndarray, cov=None):
        """``c -> b``, and the covariance mapped with it."""
        if self.T is None:
            return theta, cov
        M = np.eye(len(theta))
        M[:self.p, :self.p] = np.linalg.inv(self.T)
        return M @ theta, None if cov is None else M @ cov @ M.T


def _maximise(model, data, n_quadrature, theta0, max_iter, tol, compute_cov, log_sd_bounds,
              dense_limit):
    if int(n_quadrature) != n_quadrature or n_quadrature < 1:
        raise ValueError(f"n_quadrature must be an integer >= 1, got {n_quadrature!r}")
    structure = EffectsStructure(data.effects, dense_limit=dense_limit)
    if n_quadrature > 1 and (len(data.effects) != 1 or data.effects[0].q != 1):
        raise ValueError("n_quadrature > 1 (adaptive Gauss-Hermite quadrature) needs a "
                         "single grouping factor with a random intercept only")
    given = theta0 is not None
    theta0 = theta0 if given else start_theta(model, data)
    reparam = _Reparam(model, data)
    original, data = data, reparam.data
    objective = _Objective(model, data, structure, int(n_quadrature))
    x0 = reparam.forward(theta0.detach().cpu().numpy().astype(np.float64))
    if not given:
        x0 = moment_start(model, data, x0)
    bounds = _bounds(model, data, log_sd_bounds)
    x0 = np.clip(x0, [b[0] if b[0] is not None else -np.inf for b in bounds],
                 [b[1] if b[1] is not None else np.inf for b in bounds])
    res = optimize.minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-5,
                                     "maxcor": 20})
    if not res.success:
        warnings.warn(f"the mixed-model fit did not converge: {res.message}",
                      ConvergenceWarning, stacklevel=2)
    _, grad = objective(res.x)  # the gradient at the estimate; leaves the mode there
    z = objective.z
    cov = _numerical_cov(objective, res.x, grad) if compute_cov else None
    z = z if z is not None else objective.mode(objective.tensor(res.x))
    theta, cov = reparam.backward(res.x, cov)
    data = original
    th = objective.tensor(theta)
    params_t = model.unpack(th, data)
    params = {k: v.detach().cpu().numpy() for k, v in params_t.items()}
    lams = model.factors(params_t, data)
    modes = [(zk @ lam.T).detach().cpu().numpy()
             for zk, lam in zip(structure.split(z), lams, strict=True)]
    mode_cov = None
    if len(structure.effects) == 1 and structure.n_channels == 1:
        A = structure.rows(lams)
        eta = model.fixed_eta(params_t, data) + structure.eta(A, z)
        _, _, d2 = row_derivatives(model, eta, params_t, data)
        Hinv = torch.linalg.inv(structure.hessian(A, -d2))
        lam = lams[0]
        mode_cov = [(lam @ Hinv @ lam.T).detach().cpu().numpy()]
    singular = [e.name + f"[{t}]" for e, lam in zip(data.effects, lams, strict=True)
                for t, v, d in zip(e.terms, params[f"{e.name}_log_sd"],
                                   lam.diagonal().detach().cpu().tolist(), strict=True)
                if v <= log_sd_bounds[0] + 1e-6 or math.exp(v) < SINGULAR_SD
                or abs(d) < SINGULAR_SD or abs(d) < SINGULAR_L * math.exp(v)]
    return MixedFit(theta=theta, params=params, cov=cov, log_lik=-float(res.fun),
                    z=z, modes=modes,
                    mode_cov=mode_cov, converged=bool(res.success), n_iter=int(res.nit),
                    singular=singular, n_quadrature=int(n_quadrature))
