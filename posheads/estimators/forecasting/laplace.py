"""The forecaster's default inference: a Laplace approximation with the level's step
integrated over a grid.

For every value ``sigma_g`` of a fixed grid of level steps (and all series at once), the
latent path and the per-series parameters of :class:`~posheads.models.forecast_panel.
LocalLevelPanel` are set to their joint mode by L-BFGS, in the non-centred coordinates
(standard-normal innovations), where the prior is well conditioned. At the mode, the
Hessian of the negative log joint in the level path is tridiagonal in time -- the
random-walk precision ``Q / sigma**2`` plus the diagonal curvature ``W`` of the count law in
``eta`` -- so one forward elimination (O(T), vectorised over series) gives both its log
determinant and the posterior variance of the last level. The Laplace approximation of
the marginal likelihood of ``sigma_g``,

``log p(y | sigma_g) ~ log p(y, mode) - logdet(H_x) / 2 - (T - 1) log sigma_g``,

times a LogNormal prior, weighs the grid values: the posterior over ``sigma`` is a
discrete distribution per series (as INLA integrates its hyperparameters), and a
forecast draw first draws ``sigma``, then the last level from its Gaussian, then the
random walk ahead. Integrating the step keeps it from collapsing, which is what a
mean-field variational guide does to it (the level then stops following the data).
With five series or more, the grid's prior is itself estimated from all series (empirical
Bayes), so that short series borrow their level's volatility from the long ones.

Seasonal and covariate weights, shapes and gates are used at their mode given ``sigma_g``
(their uncertainty is small beside the level's on series of a few seasons or more).
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
    "fit_panel_laplace",
    "forecast_draws",
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
        The objective (negative log joint per observation) at every L-BFGS iteration.
    """

    sigma: torch.Tensor
    log_post: torch.Tensor
    level: torch.Tensor
    last_var: torch.Tensor
    weight: torch.Tensor
    log_shapes: torch.Tensor
    gates: torch.Tensor
    losses: list

    def arrays(self) -> dict:
        """Every tensor as a CPU tensor (what a saved forecaster stores)."""
        return {k: getattr(self, k).detach().cpu()
                for k in ("sigma", "log_post", "level", "last_var", "weight", "log_shapes",
                          "gates")}

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
    """Joint mode of all parameters at every grid value by L-BFGS; the loss per step."""
    tensors = [p.requires_grad_(True) for p in params.tensors()]
    n_obs = float(data.mask.sum().clamp_min(1)) * sigma.shape[0]
    opt = torch.optim.LBFGS(tensors, lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                            tolerance_change=1e-10)
    losses = []
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="laplace", leave=False)

    def closure():
        opt.zero_grad()
        loss = -model.log_joint(params, sigma, data).sum() / n_obs
        loss.backward()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
        return loss

    opt.step(closure)
    if bar is not None:
        bar.close()
    for p in tensors:
        p.requires_grad_(False)
    return losses


def _curvature(model, params, sigma, data):
    """``W``: minus the second derivative of each count's log-likelihood in ``eta``
    (clamped at 0: a law that is not log-concave somewhere adds no information there)."""
    with torch.enable_grad():
        level = model.level(params, sigma)
        eta = model.eta(level, params.weight, data.features).detach().requires_grad_(True)
        ll = model.log_likelihood(eta, params, data).sum()
        (g,) = torch.autograd.grad(ll, eta, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), eta)
    return level.detach(), (-h).clamp_min(0.0)


def tridiagonal_elimination(w, sigma):
    """Forward elimination of ``H = W + Q / sigma**2`` over steps ``1..T-1`` (the first
    level is a parameter): ``(logdet H, 1 / last pivot = Var(last level))``.

    ``Q`` is the random walk's precision with a known start (2 on the diagonal, 1 at the
    end, -1 beside it). Run in float64: the pivots span ``W`` to ``1 / sigma**2``.
    """
    w = w[..., 1:].double()
    inv = (1.0 / sigma.double() ** 2)[:, None].expand_as(w[..., 0])
    n = w.shape[-1]
    logdet = torch.zeros_like(w[..., 0])
    d = None
    for t in range(n):
        a = w[..., t] + (2.0 if t < n - 1 else 1.0) * inv
        d = a if d is None else a - inv**2 / d
        logdet = logdet + d.log()
    return logdet, 1.0 / d


def _pool(log_marginal, log_prior):
    """Per-series log posterior over the grid; the grid's prior estimated from all series
    (empirical Bayes, EM with a pseudo-count of the fixed prior) when there are enough."""
    n_series = log_marginal.shape[1]
    prior = log_prior
    if n_series >= _POOL_MIN_SERIES:
        fixed = log_prior.exp()
        for _ in range(50):
            post = torch.softmax(log_marginal + prior[:, None], dim=0)
            pi = (post.sum(1) + _POOL_SMOOTHING * fixed) / (n_series + _POOL_SMOOTHING)
            prior = pi.log()
    return torch.log_softmax(log_marginal + prior[:, None], dim=0)


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
        L-BFGS iterations (at most).
    verbose : int, default=0
        A progress bar over the iterations when ``> 0``.

    Returns
    -------
    LaplaceFit
    """
    sigma = data.y.new_tensor(np.asarray(sigma_grid, dtype=np.float64))
    with intra_op_threads(data.y.numel() * len(sigma), data.y.device):
        return _fit(model, data, sigma, max_iter, verbose)


def _fit(model, data, sigma, max_iter, verbose):
    params = _starting_params(model, data, len(sigma))
    sig = sigma[:, None]
    losses = _optimise(model, data, params, sig, max_iter, verbose)
    with torch.no_grad():
        joint = model.log_joint(params, sig, data)
    level, w = _curvature(model, params, sig, data)
    logdet, last_var = tridiagonal_elimination(w, sigma)
    n_steps = data.y.shape[-1] - 1
    log_marginal = joint.double() - 0.5 * logdet - n_steps * sigma.double().log()[:, None]
    log_prior = -0.5 * ((sigma.double().log() - _PRIOR_LOC) / _PRIOR_SD) ** 2
    log_prior = torch.log_softmax(log_prior, 0)
    log_post = _pool(log_marginal, log_prior).to(sigma.dtype)
    return LaplaceFit(sigma=sigma, log_post=log_post, level=level,
                      last_var=last_var.to(sigma.dtype), weight=params.weight.detach(),
                      log_shapes=params.log_shapes.detach(), gates=params.gates.detach(),
                      losses=losses)


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
    # which grid value each draw uses, per series
    g = torch.multinomial(fit.log_post.T.exp(), n, replacement=True).T  # (n, S)
    cols = torch.arange(s, device=g.device).expand(n, s)
    sigma = fit.sigma[g]  # (n, S)
    last = fit.level[g, cols, -1] + fit.last_var[g, cols].sqrt() * torch.randn_like(sigma)
    walk = torch.randn(n, s, h, dtype=sigma.dtype, device=sigma.device).cumsum(-1)
    level = last[..., None] + sigma[..., None] * walk
    eta = model.eta(level, fit.weight[g, cols], features)
    d = model.observation(eta, scale, fit.log_shapes[g, cols], fit.gates[g, cols])
    return d.sample(), d.mean.mean(0)
