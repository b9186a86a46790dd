"""Newton's method for the joint mode of the panel model, a batch of series at a time.

At a grid value ``sigma`` and given the shared means, the negative log joint of
:class:`~posheads.models.forecast_panel.LocalLevelPanel` is a sum over series of a term in
that series' level path ``x`` (``T`` values: the level itself, centred coordinates) and its
own parameters ``theta`` (seasonal and covariate weights, log-shapes, gate logits). Its
Hessian in ``(x, theta)`` is the block matrix ``[[Tri, C], [C^T, B]]``: ``Tri`` is
tridiagonal (the count law's curvature ``W`` in ``eta`` on the diagonal plus the random
walk's precision), ``C`` holds the ``T x P`` cross terms and ``B`` is ``P x P``. A Newton
step eliminates ``x`` by the Schur complement of ``Tri``: with ``Tri = L D L'``
(:func:`ldl_pivots`), one forward sweep of the gradient and the ``P`` cross terms
(:func:`forward_substitute`) gives ``C' Tri^-1 C = Y' D^-1 Y`` as one batched product,
then one ``P x P`` solve and one backward sweep of a single column
(:func:`backward_substitute`) give the step in ``x`` -- every series and grid value of a
batch at once, the only loops being over time. Work and memory are linear in ``T`` and
in the number of series: the series are taken in batches of a bounded size, and only the
iterate is kept for the whole panel. Within a batch, a series whose every grid value has
converged drops out of the later iterations.

Safeguards: ``W`` is clamped at 0 (where a law is not log-concave in ``eta``), so that the
``(x, weight)`` block is positive definite; the Schur complement's eigenvalues are taken
in absolute value and floored, so that a shape or gate where the law is not concave still
gets a descent direction; each series' step is halved until its objective decreases
enough (Armijo); a grid value whose evidence is far below the series' best and no longer
moves stops early (:func:`_evidence`). The derivatives of the count law are element by
element (the law of ``y[t]`` depends on ``eta[t]`` and the series' shapes and gates
only): in closed form where the model has them
(:meth:`~posheads.models.forecast_panel.LocalLevelPanel.likelihood_derivatives`), else
by autograd (:func:`likelihood_derivatives_autograd`); the prior's gradient by autograd,
its curvature in ``x`` in closed form (:func:`walk_hessian`: a random walk, tridiagonal;
for heavy-tailed steps the reweighting curvature where the exact one is not positive, so
that the step stays a descent direction) and in ``theta`` by autograd (separable).

The shared means (``weight_mean``, ``shape_mean``, ``gate_mean``) are updated between
passes over the batches, by Newton on their own terms of the log prior (block coordinate
ascent): each is set by all series together, so a few passes suffice.
"""

from __future__ import annotations

import dataclasses

import torch

from posheads.models.forecast_panel import PanelData, PanelParams

from .tridiagonal import backward_substitute, feature_products, forward_substitute, ldl_pivots

__all__ = ["batch_size", "likelihood_derivatives_autograd", "panel_mode", "subset",
           "subset_params", "walk_hessian"]

# Elements (grid values x series x steps x (parameters + 2)) of the largest tensor of one
# batch: 2**23 doubles are 64 MiB; a Newton step holds a handful of them.
_BATCH_ELEMENTS = 2**23
_MAX_PASSES = 8  # passes over the batches (updates of the shared means)
_SHARED_TOL = 1e-4  # stop the passes when no shared mean moves more than this
_DECREMENT_TOL = 1e-7  # a series has converged when Newton's decrement is below this
_ARMIJO = 1e-4  # sufficient decrease of the line search
_MAX_HALVINGS = 30
_MAX_LOG_STEP = 2.0  # the largest move of a log-shape or gate logit in one step
_OUTWEIGHED = 30.0  # nats of evidence below a series' best grid value: weight < 1e-13
_SLOW_DECREASE = 0.1  # nats an iteration: Newton no longer moves the evidence much


# ------------------------------------------------------------------ panel helpers

def batch_size(n_grid: int, n_steps: int, n_params: int) -> int:
    """Series per batch so that a ``(G, batch, T, P + 2)`` tensor stays near 64 MiB."""
    return max(1, _BATCH_ELEMENTS // max(1, n_grid * n_steps * (n_params + 2)))


def subset(data: PanelData, rows: slice) -> PanelData:
    """The series ``rows`` of a panel."""
    return PanelData(data.y[rows], data.mask[rows], data.features[rows], data.scale[rows])


def subset_params(params: PanelParams, rows: slice) -> PanelParams:
    """The per-series parameters of the series ``rows`` (shared means unchanged)."""
    return dataclasses.replace(params, **{k: getattr(params, k)[:, rows] for k in
                                          ("z", "level0", "weight", "log_shapes", "gates")})


class _State:
    """The iterate in centred coordinates: level path ``x`` (G, S, T), weights ``w``
    (G, S, K), log-shapes then gate logits ``ab`` (G, S, n), and the shared means."""

    def __init__(self, params: PanelParams, sigma):
        level0 = params.level0[..., None]
        self.x = torch.cat([level0, level0 + sigma[..., None] * params.z.cumsum(-1)], -1)
        self.w = params.weight.detach().clone()
        self.ab = torch.cat([params.log_shapes, params.gates], -1).detach().clone()
        self.n_shapes = params.log_shapes.shape[-1]
        self.shared = [params.weight_mean.detach().clone(), params.shape_mean.detach().clone(),
                       params.gate_mean.detach().clone()]

    def params(self, x, w, ab, sigma, shared=None) -> PanelParams:
        """The model's parameters (non-centred ``z``) at ``(x, w, ab)``."""
        wm, sm, gm = self.shared if shared is None else shared
        z = (x[..., 1:] - x[..., :-1]) / sigma[..., None]
        return PanelParams(z=z, level0=x[..., 0], weight=w, log_shapes=ab[..., :self.n_shapes],
                           gates=ab[..., self.n_shapes:], weight_mean=wm, shape_mean=sm,
                           gate_mean=gm)

    def write(self, params: PanelParams, sigma) -> None:
        """Store the iterate into ``params`` (in place)."""
        p = self.params(self.x, self.w, self.ab, sigma)
        for name in ("z", "level0", "weight", "log_shapes", "gates", "weight_mean",
                     "shape_mean", "gate_mean"):
            setattr(params, name, getattr(p, name).detach().contiguous())


def _grad(out, inputs, **kw):
    return torch.autograd.grad(out, inputs, allow_unused=True, materialize_grads=True, **kw)


# ------------------------------------------------------------------ derivatives
def _prior_hessian(model, state, x, w, ab, sigma):
    """Minus the (constant) Hessian of the log prior in ``w`` and ``ab`` (diagonal)."""
    with torch.enable_grad():
        leaves = [v.detach().requires_grad_(True) for v in (x, w, ab)]
        lp = model.log_prior(state.params(*leaves, sigma)).sum()
        _, gw, gab = _grad(lp, leaves, create_graph=True)
        hw = _grad(gw.sum(), leaves[1], retain_graph=True)[0]
        hab = _grad(gab.sum(), leaves[2])[0]
    return -hw, -hab


def walk_hessian(model, x, sigma):
    """The log prior's curvature in the level path: tridiagonal ``(diag (G, S, T), off
    (G, S, T - 1))``.

    Each step ``x[t + 1] - x[t]`` contributes its curvature ``c / sigma**2`` to both levels
    it joins and minus it between them; the first level adds its prior's precision.
    ``c`` (:meth:`~posheads.models.forecast_panel.LocalLevelPanel.innovation_curvature`)
    is 1 for normal steps; for heavy-tailed ones it is the exact curvature at the current
    step where that is positive (Newton's quadratic convergence near the mode) and the
    reweighting weight where it is not (a positive majorizer: the direction stays one of
    descent). ``sigma`` is ``(G, 1)`` or ``(G, S)``.
    """
    inv = 1.0 / sigma[..., None] ** 2
    z = (x[..., 1:] - x[..., :-1]) * inv.sqrt()
    c = model.innovation_curvature(z)
    exact = model.innovation_curvature(z, exact=True)
    c = torch.where(exact > 0, exact, c) * inv
    diag = torch.zeros_like(x)
    diag[..., 1:] += c
    diag[..., :-1] += c
    diag[..., 0] += model.prior_precisions(x.shape[-2])[0]
    return diag, -c


def _gradients(model, state, data, x, w, ab, sigma):
    """Gradient of the log likelihood in ``eta`` and ``ab`` with its second derivatives
    (element by element in time), and the gradient of the log prior."""
    eta = model.eta(x, w, data.features)
    lik = model.likelihood_derivatives(eta, state.params(x, w, ab, sigma), data)
    if lik is None:
        lik = likelihood_derivatives_autograd(model, eta, state.params(x, w, ab, sigma), data)
    with torch.enable_grad():
        leaves = [v.detach().requires_grad_(True) for v in (x, w, ab)]
        lp = model.log_prior(state.params(*leaves, sigma)).sum()
        gpx, gpw, gpab = _grad(lp, leaves)
    return lik, (gpx, gpw, gpab)


def likelihood_derivatives_autograd(model, eta, params: PanelParams, data: PanelData):
    """What :meth:`~posheads.models.forecast_panel.LocalLevelPanel.likelihood_derivatives`
    returns, by autograd (any law): ``1 + n`` backward passes through the law."""
    n = params.log_shapes.shape[-1] + params.gates.shape[-1]
    with torch.enable_grad():
        eta = eta.detach().requires_grad_(True)
        abl = torch.cat([params.log_shapes, params.gates], -1).detach().requires_grad_(True)
        part = dataclasses.replace(params, log_shapes=abl[..., :params.log_shapes.shape[-1]],
                                   gates=abl[..., params.log_shapes.shape[-1]:])
        ll = model.log_likelihood(eta, part, data).sum()
        g_eta, g_ab = _grad(ll, [eta, abl], create_graph=True)
        h_eta = _grad(g_eta.sum(), eta, retain_graph=True)[0]
        cross, h_ab = [], []
        for i in range(n):
            he, ha = _grad(g_ab[..., i].sum(), [eta, abl], retain_graph=True)
            cross.append(he)
            h_ab.append(ha)
    cross = torch.stack(cross, -1) if n else eta.new_zeros((*eta.shape, 0))
    h_ab = torch.stack(h_ab, -2) if n else eta.new_zeros((*abl.shape, 0))
    return g_eta.detach(), g_ab.detach(), h_eta.detach(), cross.detach(), h_ab.detach()


def _newton_step(model, state, data, x, w, ab, sigma, prior):
    """The safeguarded Newton step ``(dx, dw, dab)`` of the negative log joint and the
    directional derivative along it (negative), per ``(G, S)``."""
    pw, pab = prior
    px, poff = walk_hessian(model, x, sigma)  # at the iterate: Student-t steps reweight
    (g_eta, g_ab, h_eta, cross, h_ab), (gpx, gpw, gpab) = _gradients(
        model, state, data, x, w, ab, sigma)
    feats = data.features  # (S, T, K)
    k = feats.shape[-1]
    curv = (-h_eta).clamp_min(0.0)  # (G, S, T): zero where the law is not log-concave
    gx = -(g_eta + gpx)
    # [g_eta | C] with C = [W F | -cross] the cross terms (G, S, T, 1 + P): F' of it gives
    # the weights' gradient and the blocks of B; then the gradient gx takes column 0
    rhs = torch.cat([g_eta[..., None], curv[..., None] * feats, -cross], -1)
    prod = feature_products(feats, rhs)  # (G, S, K, 1 + P)
    gth = torch.cat([-(prod[..., 0] + gpw), -(g_ab + gpab)], -1)
    b_ww = prod[..., 1:k + 1] + torch.diag_embed(pw)
    b_wa = prod[..., k + 1:]
    b_aa = -h_ab + torch.diag_embed(pab)
    b = torch.cat([torch.cat([b_ww, b_wa], -1),
                   torch.cat([b_wa.transpose(-1, -2), b_aa], -1)], -2)
    rhs[..., 0] = gx
    # Tri = L D L': with Y = L^-1 [gx | C], C' Tri^-1 C = Y_c' D^-1 Y_c and
    # C' Tri^-1 gx = Y_c' D^-1 y_0, so only the gradient's column is swept back
    pivot, ratio = ldl_pivots(curv + px, poff)
    y = rhs
    forward_substitute(ratio, y.movedim(-2, 0))  # in place, through the time-major view
    yd = y / pivot.permute(1, 2, 0)[..., None]  # D^-1 Y
    full = yd.transpose(-1, -2) @ y  # (G, S, 1 + P, 1 + P): Y' D^-1 Y
    schur = b - full[..., 1:, 1:]
    r = gth - full[..., 1:, 0]
    cov = _inverse(schur)  # at the mode: the covariance of theta, x integrated out
    dth = (cov @ r[..., None]).squeeze(-1)
    v = yd[..., 0] - (yd[..., 1:] @ dth[..., None]).squeeze(-1)  # D^-1 (y_0 - Y_c dth)
    backward_substitute(ratio, v.movedim(-1, 0))
    dx = v
    slope = -(gx * dx).sum(-1) - (gth * dth).sum(-1)
    logdet = pivot.log().sum(0)  # of the level path's block (G, S)
    return -dx, -dth[..., :k], -dth[..., k:], slope, cov, logdet


def _inverse(h, floor_ratio=None):
    """The inverse of the symmetric ``h`` (..., P, P) with its eigenvalues taken in absolute
    value and floored (a positive definite matrix that Newton's step can use)."""
    if h.shape[-1] == 0:
        return h
    evals, evecs = torch.linalg.eigh(0.5 * (h + h.transpose(-1, -2)))
    evals = evals.abs()
    ratio = torch.finfo(evals.dtype).eps if floor_ratio is None else floor_ratio
    floor = ratio * evals.amax(-1, keepdim=True).clamp_min(1.0)
    inv = torch.where(evals > floor, 1.0 / evals.clamp_min(floor), 0.0 if floor_ratio else
                      1.0 / floor)
    return (evecs * inv[..., None, :]) @ evecs.transpose(-1, -2)


def _objective(model, state, data, x, w, ab, sigma):
    with torch.no_grad():
        try:
            return -model.log_joint(state.params(x, w, ab, sigma), sigma, data)
        except ValueError:  # a trial step outside a law's support: the step is halved
            return x.new_full(x.shape[:-1], torch.inf)


class _Active:
    """The series ``act`` of a batch: their iterate, objective, flags, prior and data.

    The objective of a subset is evaluated afresh: the shared means' log prior is spread
    evenly over the series evaluated together, so its share differs from the batch's.
    """

    def __init__(self, model, state, sigma, act, x, w, ab, f, done, prior, data):
        self.x, self.w, self.ab = x[:, act], w[:, act], ab[:, act]
        self.done = done[:, act]
        self.prior = tuple(p[:, act] for p in prior)
        self.data = PanelData(data.y[act], data.mask[act], data.features[act], data.scale[act])
        self.f = f if act.numel() == f.shape[1] else \
            _objective(model, state, self.data, self.x, self.w, self.ab, sigma)


def _iterate(model, state, part, sigma):
    """One safeguarded Newton iteration on ``part`` (updated in place); returns the
    covariance of the series' parameters at the iterate it started from."""
    x, w, ab, f, done, data = part.x, part.w, part.ab, part.f, part.done, part.data
    dx, dw, dab, slope, cov, logdet = _newton_step(model, state, data, x, w, ab, sigma,
                                                   part.prior)
    start = f
    done = done | (-slope < _DECREMENT_TOL) | ~torch.isfinite(slope)
    if bool(done.all()):
        part.done = done
        part.evidence = _evidence(f, logdet, sigma, x.shape[-1] - 1)
        return cov
    dx, dw, dab = (torch.where(done[..., None], 0.0, d) for d in (dx, dw, dab))
    # a trust region on the log-shapes and gate logits: at most a factor e**2 a step
    # (a full step where the law is flat in a shape could overflow its exp)
    reach = dab.abs().amax(-1) if dab.shape[-1] else torch.zeros_like(f)
    alpha = torch.where(done, 0.0, (_MAX_LOG_STEP / reach.clamp_min(1e-300)).clamp_max(1.0))
    pending = ~done
    for _ in range(_MAX_HALVINGS):
        a3 = alpha[..., None]
        fx, fw, fab = x + a3 * dx, w + a3 * dw, ab + a3 * dab
        fn = _objective(model, state, data, fx, fw, fab, sigma)
        ok = pending & torch.isfinite(fn) & (fn <= f + _ARMIJO * alpha * slope)
        x, w, ab = (torch.where(ok[..., None], new, old)
                    for new, old in ((fx, x), (fw, w), (fab, ab)))
        f = torch.where(ok, fn, f)
        pending &= ~ok
        if not bool(pending.any()):
            break
        alpha = torch.where(pending, alpha / 2, alpha)
    part.x, part.w, part.ab, part.f = x, w, ab, f
    part.done = done | pending  # no decrease along a descent direction: at the mode
    evidence = _evidence(f, logdet, sigma, x.shape[-1] - 1)
    far = evidence < evidence.amax(0, keepdim=True) - _OUTWEIGHED
    part.done |= far & ((start - f) < _SLOW_DECREASE)
    part.evidence = evidence
    return cov


def _evidence(f, logdet, sigma, n_steps: int):
    """The Laplace log evidence of each grid value at the iterate, ``(G, S)``, up to a
    constant per series (no prior over the grid).

    It is ``-f - logdet / 2 - (T - 1) log sigma_g`` (:mod:`.laplace`; the log determinant
    here is the level block's at the iterate). Where a grid value is more than
    ``_OUTWEIGHED`` nats below the series' best and its objective now falls by less than
    ``_SLOW_DECREASE`` an iteration, its posterior weight stays below
    ``exp(-_OUTWEIGHED)`` whatever the iterations left would add: it stops there
    (:func:`_iterate`). This matters with heavy-tailed level steps, whose non-convex log
    density can make Newton crawl (by majorization) at a step size the data rule out. A
    stopped series still informs its grid value's shared means, a little off their mode;
    the other series' modes at that value move with them, by about 1e-3 on the ``eta``
    scale in the tests, where their weight is 1e-3 or less.
    """
    evidence = -f - 0.5 * logdet - n_steps * sigma.log()
    return torch.nan_to_num(evidence, nan=-torch.inf)


def _newton_batch(model, state, data, rows, sigma, max_iter):
    """Newton iterations on the series ``rows`` (shared means fixed); updates ``state``.
    Returns the objective per ``(G, S_batch)``, the iterations run, the series' response
    to the shared means and their Laplace evidence per ``(G, S_batch)`` (:func:`_evidence`,
    at their last iterate)."""
    x, w, ab = state.x[:, rows], state.w[:, rows], state.ab[:, rows]
    prior = _prior_hessian(model, state, x, w, ab, sigma)
    f = _objective(model, state, data, x, w, ab, sigma)
    done = torch.zeros_like(f, dtype=torch.bool)
    cov, compacted = None, False
    evidence = torch.full_like(f, -torch.inf)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        # only the series with a grid value still moving take a step (a converged one
        # would take a zero step): later iterations cost what their few series cost
        act = (~done).any(0).nonzero().squeeze(-1)
        part = _Active(model, state, sigma, act, x, w, ab, f, done, prior, data)
        out = _iterate(model, state, part, sigma)
        if cov is None:
            cov = out.new_zeros((*f.shape, out.shape[-1], out.shape[-1]))
        cov[:, act] = out
        evidence[:, act] = part.evidence
        x[:, act], w[:, act], ab[:, act] = part.x, part.w, part.ab
        done[:, act] = part.done
        if act.numel() == f.shape[1]:
            f = part.f
        else:
            compacted = True
        if bool(done.all()):
            break
    if compacted:  # the whole batch's objective, for the losses
        f = _objective(model, state, data, x, w, ab, sigma)
    state.x[:, rows], state.w[:, rows], state.ab[:, rows] = x, w, ab
    # how the series' parameters answer a move of the shared means (their prior's
    # precision L, for the profile Newton step of the shared means): sum_s L cov_s L
    prec = torch.cat([prior[0], prior[1]], -1)  # (G, S, P)
    response = (prec[..., :, None] * cov * prec[..., None, :]).sum(1)
    return f, it, response, evidence


def _update_shared(model, state, response, rows=slice(None), relevant=None):
    """One Newton step of the shared means on the profile of the log joint (every
    series at its mode given them); returns the largest move at the grid values
    ``relevant`` (``(G,)`` bool; None: all). A grid value whose evidence is more than
    ``_OUTWEIGHED`` nats below the best for every series carries no posterior weight
    (:func:`_evidence`): its means still take the step, but need not settle.

    At the series' modes, the gradient in the shared means is that of their prior terms;
    the profile's curvature is their prior's minus ``response`` (``sum_s L cov_s L``:
    the series' parameters follow the means they are shrunk to).
    """
    level0, ab = state.x[:, rows, 0], state.ab[:, rows]
    with torch.enable_grad():
        shared = [v.detach().requires_grad_(True) for v in state.shared]
        p = PanelParams(z=level0.new_zeros((*level0.shape, 0)), level0=level0,
                        weight=state.w[:, rows], log_shapes=ab[..., :state.n_shapes],
                        gates=ab[..., state.n_shapes:], weight_mean=shared[0],
                        shape_mean=shared[1], gate_mean=shared[2])
        lp = model.log_prior(p).sum()
        grads = _grad(lp, shared, create_graph=True)
        # the shared terms are separable: the diagonal is their Hessian
        hess = [_grad(g.sum(), v, retain_graph=True)[0] for g, v in zip(grads, shared,
                                                                        strict=True)]
    grad = torch.cat([g.detach() for g in grads], -1)  # (G, P)
    curv = torch.diag_embed(-torch.cat([h.detach() for h in hess], -1)) - response
    # a direction no series and no prior informs gets no step (pseudo-inverse)
    step = (_inverse(curv, floor_ratio=1e-10) @ grad[..., None]).squeeze(-1)
    sizes = [v.shape[-1] for v in state.shared]
    state.shared = [v + d for v, d in zip(state.shared, step.split(sizes, -1), strict=True)]
    if relevant is not None:
        step = step[relevant]
    return float(step.abs().max()) if step.numel() else 0.0


# ------------------------------------------------------------------ driver
def panel_mode(model, data: PanelData, params: PanelParams, sigma, *, max_iter: int = 200,
               bar=None) -> list:
    """Set ``params`` (in place) to the joint mode at every grid value, batch by batch.

    Parameters
    ----------
    model : LocalLevelPanel
    data : PanelData
        ``S`` series of ``T`` steps.
    params : PanelParams
        Batch ``(G, S)``: the starting values, replaced by the mode.
    sigma : Tensor of shape (G, 1)
        The level's step at each grid value.
    max_iter : int, default=200
        Newton iterations per batch and pass, at most.
    bar : tqdm progress bar or None
        Advanced by one per batch and pass.

    Returns
    -------
    list of float
        The objective (negative log joint per observation, all grid values) after each pass.
    """
    state = _State(params, sigma)
    g, s, t = state.x.shape
    size = batch_size(g, t, state.w.shape[-1] + state.ab.shape[-1])
    if s > size:  # the shared means first from one batch of series spread over the panel
        sample = slice(0, s, -(-s // size))
        _passes(model, state, subset(data, sample), [sample], sigma, max_iter, bar, sample)
    batches = [slice(lo, min(s, lo + size)) for lo in range(0, s, size)]
    losses = _passes(model, state, data, batches, sigma, max_iter, bar, slice(None))
    state.write(params, sigma)
    return losses


def _passes(model, state, data, batches, sigma, max_iter, bar, rows):
    """Newton on every batch, then a step of the shared means, until they settle."""
    n_obs = float(data.mask.sum().clamp_min(1)) * state.x.shape[0]
    losses = []
    for _ in range(_MAX_PASSES):
        total, response, relevant = 0.0, 0.0, None
        for b in batches:
            part = b if rows == slice(None) else slice(None)
            f, _, resp, evidence = _newton_batch(model, state, subset(data, part), b, sigma,
                                                 max_iter)
            total, response = total + float(f.sum()), response + resp
            here = (evidence >= evidence.amax(0, keepdim=True) - _OUTWEIGHED).any(1)
            relevant = here if relevant is None else relevant | here
            if bar is not None:
                bar.update(1)
        losses.append(total / n_obs)
        if _update_shared(model, state, response, rows, relevant) < _SHARED_TOL:
            break
    return losses
