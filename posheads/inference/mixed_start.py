"""Starting values of the maximum-likelihood GLMM fit (:mod:`.mixed_ml`).

:func:`start_theta` is a cheap start from smoothed rates; :func:`moment_start` improves
it with the GLM that leaves the group effects out and moment estimates of the SDs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize

from .mixed_laplace import row_derivatives

__all__ = ["MOMENT_SD_RANGE", "moment_start", "start_theta"]


def start_theta(model, data) -> torch.Tensor:
    """A start: least squares of ``softplus_inverse`` of smoothed rates on ``X``, the
    family's moment start for shapes and parts' intercepts (a zero part's coefficients
    at 0), and SDs of half the residual spread."""
    from posheads import ops

    fam = model.family
    y = data.y
    t = torch.ones_like(y) if data.exposure is None else data.exposure
    rate = (y + 0.5 * (y.mean() + 0.1)) / t  # shrink towards the mean: no rate of 0
    eta = ops.softplus_inverse(rate, model.beta, model.threshold)
    if data.offset is not None:
        eta = eta - data.offset
    coef = torch.linalg.lstsq(data.X, eta.unsqueeze(1)).solution.squeeze(1)
    spread = float((eta - data.X @ coef).std()) if data.n > 1 else 1.0
    start = fam.start(y, None, data.exposure)
    raw = fam.raw_start(start, beta=model.beta, threshold=model.threshold)
    params = {"coef": coef}
    for p in fam.parts:
        params[f"{p.name}_intercept"] = torch.tensor(raw[p.argument])
        if data.X_zero is not None:  # the GLM of moment_start fits them
            params[f"{p.name}_coef"] = torch.zeros(data.X_zero.shape[1])
    for s in fam.shapes:
        params[s.name] = torch.tensor(raw[s.name])
    sd = max(0.5 * spread, 0.05)
    for e in data.effects:
        params[f"{e.name}_log_sd"] = torch.full((e.q,), math.log(sd))
        if e.q > 1:
            params[f"{e.name}_corr"] = torch.zeros(e.q * (e.q - 1) // 2)
    return model.pack(params, data).to(dtype=data.X.dtype, device=data.X.device)


#: The SDs a moment start may propose (on the ``eta`` scale): below 0.1 the effects would
#: start all but switched off, above 5 the inner problem is far from concave.
MOMENT_SD_RANGE = (0.1, 5.0)


def moment_start(model, data, theta: np.ndarray) -> np.ndarray:
    """A start nearer the estimate: the GLM without group effects, then moment SDs.

    The fixed effects, the family's parts and shapes come from the GLM that leaves the
    group effects out (L-BFGS-B on the rows' log-likelihood alone: no inner solve, a
    fraction of one marginal-likelihood evaluation). Each random term's SD comes from
    one Fisher-scoring step per level at that fit, ``u_g = sum_i d1_i z_i / sum_i w_i
    z_i^2`` (``w = -d2l/deta2``, floored at 0), whose sampling variance is ``1 / sum_i
    w_i z_i^2``: the method of moments gives ``var(u) ~ mean(u_g^2) - mean(1 / sum_i
    w_i z_i^2)``, clipped to :data:`MOMENT_SD_RANGE`. Correlations stay at 0, and so
    do the SDs of effects in a zero part (those of ``theta``). A far-off
    start costs outer iterations, and large SDs make the first inner solves slow (their
    Hessian is not definite).

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets.
    theta : ndarray, shape ``(P,)``
        The start to improve (its SD and correlation blocks are replaced).

    Returns
    -------
    ndarray, shape ``(P,)``
        The new start; ``theta`` itself (a copy) where the GLM fit is not finite.
    """
    layout = model.layout(data)
    free = np.concatenate([np.full(int(np.prod(shape, dtype=int)),
                                   not name.endswith(("_log_sd", "_corr")))
                           for name, shape in layout.items()])
    like = data.X

    def params_of(x, grad=False):
        t = torch.as_tensor(x, dtype=like.dtype, device=like.device).requires_grad_(grad)
        return t, model.unpack(t, data)

    def glm(v):
        x = theta.copy()
        x[free] = v
        t, p = params_of(x, grad=True)
        ll = model.row_log_lik(model.fixed_eta(p, data), p, data).sum()
        if not bool(torch.isfinite(ll)):
            return math.inf, np.zeros_like(v)
        g, = torch.autograd.grad(ll, t)
        return -float(ll.detach()), -g.cpu().numpy().astype(np.float64)[free]

    out = np.array(theta, dtype=np.float64)
    res = optimize.minimize(glm, out[free], jac=True, method="L-BFGS-B",
                            options={"maxiter": 100, "ftol": 1e-8})
    if not (np.isfinite(res.fun) and np.all(np.isfinite(res.x))):
        return out
    out[free] = res.x
    _, p = params_of(out)
    _, d1, d2 = row_derivatives(model, model.fixed_eta(p, data), p, data)
    w = (-d2).clamp(min=0.0)  # a convex row adds no information to the level's effect
    blocks = {}
    for e in data.effects:
        if e.part is not None:  # a zero part's effects keep the start's SDs
            continue
        zeros = torch.zeros(e.n_groups, e.q, dtype=like.dtype, device=like.device)
        score = zeros.index_add(0, e.codes, d1.unsqueeze(1) * e.Z)
        info = zeros.index_add(0, e.codes, w.unsqueeze(1) * e.Z**2)
        seen = info > 1e-12 * float(info.max().clamp(min=1e-300))
        safe = torch.where(seen, info, torch.ones_like(info))
        u2 = torch.where(seen, (score / safe) ** 2 - 1.0 / safe, torch.zeros_like(info))
        var = u2.sum(0) / seen.sum(0).clamp(min=1)
        lo, hi = MOMENT_SD_RANGE
        blocks[f"{e.name}_log_sd"] = 0.5 * var.clamp(min=lo**2, max=hi**2).log()
    params = {k: v.detach() for k, v in p.items()}
    params.update(blocks)
    start = model.pack(params, data).cpu().numpy().astype(np.float64)
    return start if np.all(np.isfinite(start)) else np.array(theta, dtype=np.float64)
