"""The forecaster's default inference: a Laplace approximation with the level's step
integrated over a grid.

For every value ``sigma_g`` of a fixed grid of level steps (and all series at once), the
latent path and the per-series parameters of :class:`~posheads.models.forecast_panel.
LocalLevelPanel` are set to their joint mode by Newton's method, a batch of series at a
time (:mod:`.laplace_newton`: the Hessian is tridiagonal in the level path, so a step costs
``O(T)`` per series and memory stays linear in series x steps). At the mode, the
Hessian of the negative log joint in the level path is tridiagonal in time -- the
random-walk precision ``Q / sigma**2`` plus the diagonal curvature ``W`` of the count law in
``eta`` -- so one forward elimination (O(T), vectorised over series) gives both its log
determinant and the posterior variance of the last level. The Laplace approximation of
the marginal likelihood of ``sigma_g``,

``log p(y | sigma_g) ~ log p(y, mode) - logdet(H_x) / 2 - (T - 1) log sigma_g``,

times a LogNormal prior, weighs the grid values: the posterior over ``sigma`` is a
discrete distribution per series (as INLA integrates its hyperparameters), and a
forecast draw first draws ``sigma``, then the last level from its Gaussian, then the
random walk ahead, its steps from the model's law. With heavy-tailed steps
(``LocalLevelPanel(level_jumps=...)``) each step's precision in ``Q`` is its reweighting
curvature at the mode times ``1 / sigma**2`` (:meth:`~posheads.models.forecast_panel.
LocalLevelPanel.innovation_curvature`: the Gaussian of the steps' scale mixture at the
mixing variances' conditional mode; a break in the level adds little precision), in the
evidence and in the covariance of the last level and the weights alike. Integrating
the step keeps it from collapsing, which is what a mean-field variational guide does to
it (the level then stops following the data).
With five series or more, the grid's prior is itself estimated from all series (empirical
Bayes), so that short series borrow their level's volatility from the long ones.

The last level and the seasonal and covariate weights are drawn jointly from their
Gaussian given ``sigma_g`` (:func:`state_covariance`: the Schur complement of the Hessian
of the level path and the weights, one more forward sweep); shapes and gates are used at
their mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from posheads.inference.common import intra_op_threads
from posheads.models.forecast_panel import LocalLevelPanel, PanelData, PanelParams

__all__ = [
    "LaplaceFit",
    "default_sigma_grid",
    "draw_states",
    "fit_panel_laplace",
    "forecast_draws",
    "state_cholesky",
    "state_covariance",
    "tridiagonal_elimination",
]

_PRIOR_LOC, _PRIOR_SD = math.log(0.03), 1.5  # LogNormal prior of the level's step (eta scale)
_POOL_MIN_SERIES = 5  # estimate the grid's prior from the panel from this many series on
_POOL_SMOOTHING = 1.0  # pseudo-series of the fixed prior in the estimated one


def default_sigma_grid(n: int = 10, low: float = 0.002, high: float = 0.6) -> np.ndarray:
    """Log-spaced values of the level's per-step standard deviation (``eta`` scale)."""
    return np.geomspace(low, high, n)


@dataclass
class LaplaceFit:
    """What the Laplace inference keeps, batch ``(G, S)``: grid values by series.

    Attributes
    ----------
    sigma : Tensor (G,)
        The grid of level steps.
    log_post : Tensor (G, S)
        Log posterior probability of each grid value, per series (normalised over G).
    level : Tensor (G, S, T)
        The mode of the level path.
    last_var : Tensor (G, S)
        Posterior variance of the last level.
    weight, log_shapes, gates : Tensor (G, S, ...)
        Per-series parameters at their mode.
    losses : list of float
        The objective (negative log joint per observation) after each pass of Newton's
        method over the series.
    state_cov : Tensor (G, S, 1 + K, 1 + K) or None
        Joint posterior covariance of the last level and the weights (None: weights at
        their mode, the last level with variance ``last_var``).
    log_evidence : Tensor (S,) or None
        Each series' Laplace log evidence, ``log sum_g p(y | sigma_g) p(sigma_g)`` under the
        grid's prior (the estimated one where it is pooled), up to a constant that depends
        on the data only: what compares count laws fitted to the same series.
    """

    sigma: torch.Tensor
    log_post: torch.Tensor
    level: torch.Tensor
    last_var: torch.Tensor
    weight: torch.Tensor
    log_shapes: torch.Tensor
    gates: torch.Tensor
    losses: list
    state_cov: torch.Tensor | None = None
    log_evidence: torch.Tensor | None = None

    def arrays(self) -> dict:
        """Every tensor as a CPU tensor (what a saved forecaster stores)."""
        keys = ("sigma", "log_post", "level", "last_var", "weight", "log_shapes", "gates",
                "state_cov", "log_evidence")
        return {k: getattr(self, k).detach().cpu() for k in keys
                if getattr(self, k) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict, like: torch.Tensor) -> LaplaceFit:
        """Rebuild from :meth:`arrays` with the dtype and device of ``like``."""
        t = {k: torch.as_tensor(v).to(like) for k, v in arrays.items()}
        return cls(**t, losses=[])


def _starting_params(model: LocalLevelPanel, data: PanelData, n_grid: int) -> PanelParams:
    """Starting values: zero innovations, the first level at the first season's rate,
    shapes and gates at the family's moment start on the pooled counts."""
    from posheads.ops import softplus_inverse

    y, mask = data.y, data.mask
    s, t = y.shape
    like = y
    # the rate of the first observed stretch (a few steps) sets the first level
    first = mask.cumsum(-1) <= 8
    w = mask * first
    rate = (y * w).sum(-1) / w.sum(-1).clamp_min(1) / data.scale
    rate = rate.clamp(0.05, 20.0)
    level0 = softplus_inverse(rate, beta=model.beta).expand(n_grid, s).clone()
    observed = y[mask > 0].detach()
    start = model.family.start(observed)
    shapes = [math.log(float(start.shapes.get(sh.name, sh.default))) for sh in model.family.shapes]
    gates = [math.log(p / (1 - p)) for p in
             (float(start.parts.get(pt.name, pt.default)) for pt in model.family.parts)]
    k = data.features.shape[-1]
    return PanelParams(
        z=like.new_zeros(n_grid, s, t - 1),
        level0=level0,
        weight=like.new_zeros(n_grid, s, k),
        log_shapes=like.new_tensor(shapes).reshape(1, 1, -1).repeat(n_grid, s, 1),
        gates=like.new_tensor(gates).reshape(1, 1, -1).repeat(n_grid, s, 1),
        weight_mean=like.new_zeros(n_grid, k),
        shape_mean=like.new_tensor(shapes).reshape(1, -1).repeat(n_grid, 1),
        gate_mean=like.new_tensor(gates).reshape(1, -1).repeat(n_grid, 1),
    )


def _optimise(model, data, params, sigma, max_iter, verbose):
    """Joint mode of all parameters at every grid value by Newton's method, a batch of
    series at a time (:mod:`.laplace_newton`); the objective after each pass."""
    from .laplace_newton import panel_mode

    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(desc="laplace", leave=False)
    try:
        return panel_mode(model, data, params, sigma, max_iter=max_iter, bar=bar)
    finally:
        if bar is not None:
            bar.close()


def _curvature(model, params, sigma, data):
    """``W``: minus the second derivative of each count's log-likelihood in ``eta``
    (clamped at 0: a law that is not log-concave somewhere adds no information there),
    with the log-likelihood of each series, a batch of series at a time."""
    from .laplace_newton import (
        batch_size,
        likelihood_derivatives_autograd,
        subset,
        subset_params,
    )

    level = model.level(params, sigma).detach()
    g, s, t = level.shape
    w, ll = torch.empty_like(level), level.new_empty(g, s)
    size = batch_size(g, t, params.weight.shape[-1] + 2)
    for lo in range(0, s, size):
        rows = slice(lo, lo + size)
        part, sub = subset_params(params, rows), subset(data, rows)
        eta = model.eta(level[:, rows], part.weight, data.features[rows]).detach()
        derivatives = model.likelihood_derivatives(eta, part, sub)
        if derivatives is None:  # no closed form: autograd
            derivatives = likelihood_derivatives_autograd(model, eta, part, sub)
        with torch.no_grad():
            lik = model.log_likelihood(eta, part, sub)
        w[:, rows], ll[:, rows] = (-derivatives[2]).clamp_min(0.0), lik.sum(-1)
    return level, w, ll


def tridiagonal_elimination(w, sigma, walk=None):
    """Forward elimination of ``H = W + Q / sigma**2`` over steps ``1..T-1`` (the first
    level is a parameter): ``(logdet H, 1 / last pivot = Var(last level))``.

    ``Q`` is the random walk's precision with a known start: each step ``x[t + 1] - x[t]``
    adds its curvature ``walk[t]`` (1 for every step where ``walk`` is None: 2 on the
    diagonal, 1 at the end, -1 beside it) to both levels and minus it between them. Run in
    float64: the pivots span ``W`` to ``1 / sigma**2``.

    Parameters
    ----------
    w : Tensor (G, S, T)
    sigma : Tensor (G,)
    walk : Tensor (G, S, T - 1) or None
        Curvature of each standardised step (``innovation_curvature``).
    """
    w = w[..., 1:].double()
    inv = (1.0 / sigma.double() ** 2)[:, None, None]
    c = inv.expand_as(w) if walk is None else walk.double() * inv  # step t: x[t] - x[t-1]
    n = w.shape[-1]
    logdet = torch.zeros_like(w[..., 0])
    d = None
    for t in range(n):
        a = w[..., t] + c[..., t] + (c[..., t + 1] if t < n - 1 else 0.0)
        d = a if d is None else a - c[..., t] ** 2 / d
        logdet = logdet + d.log()
    return logdet, 1.0 / d


def state_covariance(model: LocalLevelPanel, w, features, sigma, walk=None):
    """Joint Laplace covariance of the last level and the weights, per grid value and series.

    The Hessian of the negative log joint in the level path ``x_0..x_{T-1}`` and the
    weights ``b`` is ``[[A, B], [B', C]]``: ``A = W + Q / sigma**2`` (``Q`` weighted by
    ``walk`` as in :func:`tridiagonal_elimination`) plus the first level's
    prior precision at ``x_0`` (tridiagonal), ``B[t] = W[t] f[t]`` and
    ``C = sum_t W[t] f[t] f[t]' + P`` (``P`` the weights' prior precision). One forward
    sweep of the ``LDL'`` factorisation of ``A`` gives ``Y = L^-1 B``, so
    ``B' A^-1 B = sum_t y_t y_t' / d_t``, ``(A^-1 B)_last = y_last / d_last`` and
    ``(A^-1)_last,last = 1 / d_last`` (a batch of series at a time, so that the ``(T, K)``
    arrays stay bounded; :mod:`.laplace_newton`'s helpers). With the Schur
    complement ``S = C - B' A^-1 B`` and ``r = (A^-1 B)_last``:
    ``Cov(b) = S^-1``, ``Cov(x_last, b) = -S^-1 r``, ``Var(x_last) = 1 / d_last + r' S^-1 r``.

    Parameters
    ----------
    model : LocalLevelPanel
    w : Tensor (G, S, T)
        Curvature of each count's log-likelihood in ``eta`` (0 on padding).
    features : Tensor (S, T, K)
    sigma : Tensor (G,)
    walk : Tensor (G, S, T - 1) or None
        Curvature of each standardised step (None: 1, normal steps).

    Returns
    -------
    Tensor (G, S, 1 + K, 1 + K)
        Covariance of ``(x_last, b)``, in float64.
    """
    from .laplace_newton import batch_size

    w, f = w.double(), features.double()
    n_grid, n_series, n_steps = w.shape
    k = f.shape[-1]
    level0_prec, weight_prec = model.prior_precisions(n_series)
    c_mat = w.new_empty(n_grid, n_series, k, k)
    y, d = w.new_empty(n_grid, n_series, k), w.new_empty(n_grid, n_series)
    size = batch_size(n_grid, n_steps, k)
    inv = (1.0 / sigma.double() ** 2)[:, None, None]
    prec = inv.expand(n_grid, n_series, n_steps - 1) if walk is None else walk.double() * inv
    for lo in range(0, n_series, size):  # batches of series: memory bounded
        rows = slice(lo, lo + size)
        c_mat[:, rows], y[:, rows], d[:, rows] = _schur_last(
            w[:, rows], f[rows], prec[:, rows], level0_prec, weight_prec)
    r = y / d[..., None]
    eye = torch.eye(k, dtype=w.dtype, device=w.device)
    cov_b = torch.linalg.solve(c_mat, eye.expand_as(c_mat))
    cov_b = 0.5 * (cov_b + cov_b.transpose(-1, -2))
    cross = -(cov_b @ r[..., None])[..., 0]  # (G, S, K)
    var_x = 1.0 / d + (r * (cov_b @ r[..., None])[..., 0]).sum(-1)
    out = w.new_zeros(n_grid, n_series, 1 + k, 1 + k)
    out[..., 0, 0] = var_x
    out[..., 0, 1:] = cross
    out[..., 1:, 0] = cross
    out[..., 1:, 1:] = cov_b
    return out


def _schur_last(w, f, prec, level0_prec, weight_prec):
    """For :func:`state_covariance`, a batch of series: ``S = C - B' A^-1 B``, the last row
    of ``L^-1 B`` and the last pivot of ``A = L D L'`` (``prec``: each step's precision)."""
    from .tridiagonal import feature_products, forward_substitute, ldl_pivots

    k = f.shape[-1]
    diag = w.clone()
    diag[..., 1:] += prec  # the walk's terms touching x_t
    diag[..., :-1] += prec
    diag[..., 0] += level0_prec
    pivot, ratio = ldl_pivots(diag, -prec)
    b = w[..., None] * f  # (G, S, T, K)
    # F' W F first: b is then overwritten by L^-1 B (through the time-major view)
    c_mat = feature_products(f, b) + weight_prec * torch.eye(k, dtype=w.dtype, device=w.device)
    forward_substitute(ratio, b.movedim(-2, 0))
    c_mat = c_mat - (b / pivot.permute(1, 2, 0)[..., None]).transpose(-1, -2) @ b
    return c_mat, b[..., -1, :], pivot[-1]


def state_cholesky(cov):
    """Lower Cholesky factor of covariances ``(..., m, m)``, in float64, with a jitter of
    ``1e-10`` times the largest variance (a covariance is positive semi-definite up to
    rounding)."""
    cov = cov.double()
    scale = cov.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    factor, _ = torch.linalg.cholesky_ex(cov + 1e-10 * scale[..., None, None] * eye)
    return factor


def _pool(log_marginal, log_prior):
    """Per-series log posterior over the grid ``(G, S)`` and log evidence ``(S,)``; the
    grid's prior estimated from all series (empirical Bayes, EM with a pseudo-count of the
    fixed prior) when there are enough."""
    n_series = log_marginal.shape[1]
    prior = log_prior
    if n_series >= _POOL_MIN_SERIES:
        fixed = log_prior.exp()
        for _ in range(50):
            post = torch.softmax(log_marginal + prior[:, None], dim=0)
            pi = (post.sum(1) + _POOL_SMOOTHING * fixed) / (n_series + _POOL_SMOOTHING)
            prior = pi.log()
    joint = log_marginal + prior[:, None]
    evidence = torch.logsumexp(joint, dim=0)
    return joint - evidence, evidence


def fit_panel_laplace(model: LocalLevelPanel, data: PanelData, sigma_grid, *, max_iter: int = 500,
                verbose: int = 0) -> LaplaceFit:
    """Fit the panel model at every grid value and weigh the values by their evidence.

    Parameters
    ----------
    model : LocalLevelPanel
    data : PanelData
        ``S`` series of ``T`` steps.
    sigma_grid : array-like of shape (G,)
        Values of the level's per-step standard deviation.
    max_iter : int, default=500
        Newton iterations per batch of series (at most).
    verbose : int, default=0
        A progress bar over the iterations when ``> 0``.

    Returns
    -------
    LaplaceFit
    """
    from .laplace_newton import batch_size

    sigma = data.y.new_tensor(np.asarray(sigma_grid, dtype=np.float64))
    n_series, n_steps = data.y.shape
    n_params = data.features.shape[-1] + 2
    # Most of the work is loops over time on one step's slice of a batch (grid values x
    # series x parameters): small kernels, run on one thread where that slice is small
    # (a second thread would cost more to wake than it saves; see intra_op_threads).
    size = min(n_series, batch_size(len(sigma), n_steps, n_params))
    with intra_op_threads(len(sigma) * size * (n_params + 2), data.y.device):
        return _fit(model, data, sigma, max_iter, verbose)


def _fit(model, data, sigma, max_iter, verbose):
    params = _starting_params(model, data, len(sigma))
    sig = sigma[:, None]
    losses = _optimise(model, data, params, sig, max_iter, verbose)
    level, w, ll = _curvature(model, params, sig, data)
    with torch.no_grad():
        joint = ll + model.log_prior(params)
    walk = model.innovation_curvature(params.z.detach())  # reweighting weights: positive
    logdet, last_var = tridiagonal_elimination(w, sigma, walk)
    n_steps = data.y.shape[-1] - 1
    log_marginal = joint.double() - 0.5 * logdet - n_steps * sigma.double().log()[:, None]
    log_prior = -0.5 * ((sigma.double().log() - _PRIOR_LOC) / _PRIOR_SD) ** 2
    log_prior = torch.log_softmax(log_prior, 0)
    log_post, log_evidence = _pool(log_marginal, log_prior)
    state_cov = state_covariance(model, w, data.features, sigma, walk).to(sigma.dtype)
    return LaplaceFit(sigma=sigma, log_post=log_post.to(sigma.dtype), level=level,
                      last_var=last_var.to(sigma.dtype), weight=params.weight.detach(),
                      log_shapes=model.floored(params.log_shapes.detach()),
                      gates=params.gates.detach(),
                      losses=losses, state_cov=state_cov, log_evidence=log_evidence)


def draw_states(fit: LaplaceFit, n: int):
    """Draws of the grid value, the last level and the weights, per series.

    Parameters
    ----------
    fit : LaplaceFit
    n : int
        Number of draws (uses torch's global generator).

    Returns
    -------
    (Tensor (n, S), Tensor (n, S), Tensor (n, S), Tensor (n, S, K))
        The grid index, the level's step, the last level and the weights of each draw:
        the last level and the weights jointly Gaussian given the grid value
        (``fit.state_cov``), or the weights at their mode where it is None.
    """
    s = fit.level.shape[1]
    # which grid value each draw uses, per series
    g = torch.multinomial(fit.log_post.T.exp(), n, replacement=True).T  # (n, S)
    cols = torch.arange(s, device=g.device).expand(n, s)
    sigma = fit.sigma[g]  # (n, S)
    last, weight = fit.level[g, cols, -1], fit.weight[g, cols]
    if fit.state_cov is None:
        last = last + fit.last_var[g, cols].sqrt() * torch.randn_like(sigma)
        return g, sigma, last, weight
    chol = state_cholesky(fit.state_cov)  # (G, S, 1 + K, 1 + K)
    noise = torch.randn(n, s, chol.shape[-1], dtype=chol.dtype, device=chol.device)
    delta = torch.zeros_like(noise)
    for i in range(chol.shape[0]):  # one grid value at a time: no (n, S, m, m) array
        here = (g == i)[..., None]
        delta = torch.where(here, torch.einsum("sij,nsj->nsi", chol[i], noise), delta)
    delta = delta.to(sigma.dtype)
    return g, sigma, last + delta[..., 0], weight + delta[..., 1:]


def forecast_draws(model: LocalLevelPanel, fit: LaplaceFit, scale, features, n: int):
    """Joint draws of the counts ahead, for all series (draws shared across series).

    Parameters
    ----------
    model : LocalLevelPanel
    fit : LaplaceFit
    scale : Tensor (S,)
    features : Tensor (S, h, K)
        Seasonal terms and standardised covariates of the forecast steps.
    n : int
        Number of draws (uses torch's global generator: seed it around the call).

    Returns
    -------
    (Tensor (n, S, h), Tensor (S, h))
        Count draws and the predictive mean (the count law's mean averaged over draws).
    """
    s, h = features.shape[0], features.shape[1]
    g, sigma, last, weight = draw_states(fit, n)
    cols = torch.arange(s, device=g.device).expand(n, s)
    walk = model.innovations((n, s, h), sigma).cumsum(-1)  # steps from the model's law
    level = last[..., None] + sigma[..., None] * walk
    eta = model.eta(level, weight, features)
    d = model.observation(eta, scale, fit.log_shapes[g, cols], fit.gates[g, cols])
    return d.sample(), d.mean.mean(0)
