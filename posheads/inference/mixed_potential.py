"""The potential of a GLMM posterior and its gradient without an autograd graph over the
data: :class:`GLMMPotential`.

NUTS spends nearly all its time in ``theta -> (U(theta), dU/dtheta)``. Autograd through
:meth:`GLMMTarget.log_joint <posheads.inference.mixed_bayes.GLMMTarget.log_joint>`
records a graph of a few hundred small operations per call and walks it back; on a GLMM of
a few hundred rows that bookkeeping, not the arithmetic, is the cost. Here the chain rule
is written out once:

* the rows: ``l_i(eta_i, parts, shapes)`` and ``a_i = dl_i/deta_i`` (and the rows'
  derivatives in each part's predictor and each unconstrained shape) from the family's
  :meth:`~posheads.families.Family.rows` terms, closed-form for Poisson and NB;
* the linear predictor ``eta = offset + X coef + sum_k (Z_k * u_k[codes_k]).sum(-1)``
  with ``u_k = z_k Lambda_k^T``: ``dl/dcoef = X^T a``, and with
  ``B_k[g] = sum_{i in g} a_i Z_k[i]`` (shape ``(G_k, q_k)``, one ``index_add``),
  ``dl/dz_k = B_k Lambda_k`` and ``dl/dLambda_k = B_k^T z_k``; a factor that reaches a
  zero part enters that part's logits instead, and ``a`` is then the rows' slope in them;
* a zero part's logits ``intercept + X_zero coef_zero`` (+ its factors' terms), with
  ``dl/dcoef_zero = X_zero^T a_zero``, ``a_zero`` the rows' slopes in the logits;
* the ``Normal`` sites on the real line (``coef``, the parts' intercepts and
  coefficients, every ``z_k``):
  ``log p = -((x - m) / s)^2 / 2 - log s - log(2 pi) / 2``;
* the SDs (``HalfNormal`` on ``exp``) and the NB concentration (inverse gamma on
  ``softplus``): their prior, bijection and log-Jacobian in closed form, each checked at
  construction against torch's own at a few points;
* any other site (an LKJ correlation factor, another family's shape: a handful of
  numbers) goes through its bijection, prior and log-Jacobian under autograd, with
  ``dl/dvalue`` handed to the same backward pass: one small graph whatever the number of
  rows or groups.

The value is the same log joint as ``GLMMTarget.log_joint`` (the row terms leave out a
data-only constant, restored from one exact evaluation at the first point where the
likelihood is finite); where the density is zero the potential is ``inf`` with a zero
gradient, which a sampler treats as a divergence.
"""

from __future__ import annotations

import math

import torch

from posheads import ops

__all__ = ["GLMMPotential"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _is_identity(transform) -> bool:
    """``biject_to(real)``: an empty composition."""
    return isinstance(transform, torch.distributions.transforms.ComposeTransform) \
        and not transform.parts


def _half_normal_exp(prior, transform):
    """``HalfNormal(s)`` on ``v = exp(raw)``: ``raw -> (v, lp, dlp/draw, dv/draw)`` with
    ``lp = log p(v) + raw``, or None where the site is not of that form."""
    if not isinstance(prior, torch.distributions.HalfNormal) or prior.scale.dim() != 0:
        return None
    scale = float(prior.scale)
    const = 0.5 * math.log(2.0 / math.pi) - math.log(scale)
    inv_var = 1.0 / scale**2

    def site(raw):
        v = raw.exp()
        v2 = v * v
        lp = const * raw.numel() + (raw - 0.5 * inv_var * v2).sum()
        return v, lp, 1.0 - inv_var * v2, v

    return site


def _inverse_gamma_softplus(prior, transform):
    """``InverseGamma(a, b)`` on ``v = low + softplus_beta(raw)`` (the NB concentration's
    prior), as :func:`_half_normal_exp`, or None."""
    if not isinstance(prior, torch.distributions.InverseGamma) or \
            not hasattr(transform, "beta") or not hasattr(transform, "threshold") or \
            prior.base_dist.concentration.dim() != 0 or prior.base_dist.rate.dim() != 0:
        return None
    a, b = float(prior.base_dist.concentration), float(prior.base_dist.rate)
    const = a * math.log(b) - math.lgamma(a)
    beta = transform.beta

    def site(raw):
        v = transform(raw)
        ladj = transform.log_abs_det_jacobian(raw, v)
        linear = ladj == 0  # past the linear switch (below it logsigmoid < 0)
        dv = torch.where(linear, torch.ones_like(raw), torch.sigmoid(beta * raw))
        dladj = torch.where(linear, torch.zeros_like(raw), beta * torch.sigmoid(-beta * raw))
        inv = 1.0 / v
        lp = (const * raw.numel() - (a + 1.0) * v.log().sum() - b * inv.sum() + ladj.sum())
        return v, lp, (b * inv - (a + 1.0)) * inv * dv + dladj, dv

    return site


def _closed_site(prior, transform, free):
    """A closed form of a site's prior and bijection that reproduces torch's own at a
    few points (1e-12), or None (then autograd differentiates the site)."""
    for make in (_half_normal_exp, _inverse_gamma_softplus):
        site = make(prior, transform)
        if site is None:
            continue
        with torch.no_grad():
            raw = torch.linspace(-3.0, 25.0, 8, dtype=prior.mean.dtype).reshape(-1, 1) \
                .expand(8, free.numel()).reshape((8, *free))
            ok = True
            for r in raw:
                v, lp, _, _ = site(r)
                ref_v = transform(r)
                ref = prior.log_prob(ref_v).sum() + transform.log_abs_det_jacobian(r, ref_v).sum()
                ok &= bool(torch.allclose(v, ref_v, rtol=1e-12, atol=0)) and \
                    abs(float(lp - ref)) <= 1e-12 * max(1.0, abs(float(ref)))
            if ok:
                return site
    return None


class GLMMPotential:
    """``theta -> (U, dU/dtheta)`` of a GLMM posterior (see the module docstring).

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets ``y``.
    sites : list of (str, Distribution, Transform, torch.Size, torch.Size)
        Name, prior, bijection from the real line, constrained shape and unconstrained
        shape of each latent site, in packing order (:attr:`GLMMTarget.sites`).
    reference : Tensor, shape ``(d,)``
        A point where the row terms' left-out constant is measured (any finite one).
    """

    def __init__(self, model, data, sites, reference: torch.Tensor):
        self.model, self.data = model, data
        fam = model.family
        self.terms = fam.rows(data.y, data.exposure, None, beta=model.beta,
                              threshold=model.threshold)
        self.X_t = data.X.T.contiguous()
        self.Xz_t = None if data.X_zero is None else data.X_zero.T.contiguous()
        self.effects = []
        for e in data.effects:
            Z = e.Z.contiguous()
            ones = e.q == 1 and bool((Z == 1).all())
            self.effects.append((e, Z, None if ones else Z[:, 0].contiguous()))
        # Normal sites on the real line; closed-form small sites; autograd small sites
        self.normal, self.closed, self.graph, self.slices = [], [], [], {}
        start = 0
        for name, prior, transform, _, free in sites:
            size = free.numel()
            self.slices[name] = slice(start, start + size)
            start += size
            if isinstance(prior, torch.distributions.Normal) and _is_identity(transform) \
                    and prior.loc.dim() == 0 and prior.scale.dim() == 0:
                loc, scale = float(prior.loc), float(prior.scale)
                const = -size * (math.log(scale) + _HALF_LOG_2PI)
                self.normal.append((name, loc, 1.0 / scale**2, const))
                continue
            site = _closed_site(prior, transform, free)
            if site is not None:
                self.closed.append((name, site, free))
            else:
                self.graph.append((name, prior, transform, free))
        self.dim = start
        self.shape_names = fam.shape_names
        self.part_names = fam.part_names
        self.offset = None
        with torch.no_grad():
            self._calibrate(reference)

    def _calibrate(self, theta) -> bool:
        """Measure the row terms' left-out constant at ``theta``; False where the
        likelihood is not finite there (then the next finite evaluation measures it)."""
        values = self._small_values(theta)[0]
        P, u, _ = self._rows_at(theta, values)
        exact = float(self.terms.log_likelihood(P, u))
        P, u, _ = self._rows_at(theta, values)
        offset = exact + float(self._row_value(P, u))
        if math.isfinite(offset):
            self.offset = offset
        return self.offset is not None

    # ------------------------------------------------------------ pieces
    def _block(self, theta, name):
        return theta[self.slices[name]]

    def _small_values(self, theta):
        """Constrained values of the sites other than the Normal ones, their log prior +
        log-Jacobian, the closed forms' ``(dlp/draw, dv/draw)`` and the autograd
        sites' leaves (their values in the graph when grad mode is on)."""
        values, lp, slopes, leaves = {}, theta.new_zeros(()), {}, []
        for name, site, free in self.closed:
            v, lp_site, dlp, dv = site(self._block(theta, name).reshape(free))
            values[name], lp, slopes[name] = v, lp + lp_site, (dlp, dv)
        for name, prior, transform, free in self.graph:
            raw = self._block(theta, name).detach().reshape(free)
            if torch.is_grad_enabled():
                raw.requires_grad_(True)
            v = transform(raw)
            lp = lp + prior.log_prob(v).sum() + transform.log_abs_det_jacobian(raw, v).sum()
            leaves.append(raw)
            values[name] = v
        return values, lp, slopes, leaves

    def _rows_at(self, theta, values):
        """Predictors ``P`` and shapes ``u`` for the row terms; each factor's
        ``Lambda_k`` and ``z_k``."""
        eta = torch.mv(self.data.X, self._block(theta, "coef"))
        if self.data.offset is not None:
            eta = eta + self.data.offset
        lams, extra = [], {}
        for e, Z, col in self.effects:
            sd = values[f"{e.name}_sd"].detach()
            z = self._block(theta, f"{e.name}_z").reshape(e.n_groups, e.q)
            if e.q == 1:
                lam = sd.reshape(1, 1)
                gathered = (z[:, 0] * sd).index_select(0, e.codes)
                term = gathered if col is None else gathered * col
            else:
                lam = sd.unsqueeze(-1) * values[f"{e.name}_corr_chol"].detach()
                term = (Z * (z @ lam.T).index_select(0, e.codes)).sum(-1)
            if e.part is None:
                eta = eta + term
            else:  # a zero part's effects: onto its logits
                extra[e.part] = term if e.part not in extra else extra[e.part] + term
            lams.append((lam, z))
        n = eta.shape[0]
        P = {"eta": eta}
        for p in self.part_names:
            b = self._block(theta, f"{p}_intercept").reshape(())
            if self.Xz_t is not None:  # the zero part's covariates
                b = b + torch.mv(self.data.X_zero, self._block(theta, f"{p}_coef"))
            P[p] = b + extra[p] if p in extra else b.expand(n)
        u = {s: ops.softplus_inverse(values[s].detach()).reshape(())
             for s in self.shape_names}
        return P, u, lams

    def _row_value(self, P, u):
        """``-sum l`` less the terms' constant; the guarded branches where the plain
        ones are not finite (the family's :meth:`RowTerms.fallback`)."""
        value = self.terms.value(P, u)
        if not math.isfinite(float(value)) and self.terms.fallback(P):
            value = self.terms.value(P, u)
        return value

    # ------------------------------------------------------------ the potential
    def __call__(self, theta: torch.Tensor):
        """``U = -log p(theta)`` (0-d tensor, with the log-Jacobians) and ``dU/dtheta``
        (shape ``(d,)``), both detached."""
        theta = theta.detach()
        with torch.enable_grad():
            values, lp_small, slopes, leaves = self._small_values(theta)
        with torch.no_grad():
            P, u, lams = self._rows_at(theta, values)
            value = self._row_value(P, u)
            if not math.isfinite(float(value)) or \
                    (self.offset is None and not self._calibrate(theta)):
                # a zero density: an infinite potential (a divergence to the sampler)
                return value.new_tensor(math.inf), torch.zeros_like(theta)
            U = value - self.offset - lp_small.detach()
            grad = torch.empty_like(theta)
            rows = self.terms.gradient(P, u)
            a = rows["eta"]
            grad[self.slices["coef"]] = -torch.mv(self.X_t, a)
            for p in self.part_names:
                grad[self.slices[f"{p}_intercept"]] = -rows[p].sum()
                if self.Xz_t is not None:
                    grad[self.slices[f"{p}_coef"]] = -torch.mv(self.Xz_t, rows[p])
            dl = {}  # dl/dv of the small sites' constrained values
            for (e, Z, col), (lam, z) in zip(self.effects, lams, strict=True):
                # the rows' slopes in the predictor the factor reaches
                a_k = a if e.part is None else rows[e.part]
                if e.q == 1:
                    w = a_k if col is None else a_k * col
                    B = a.new_zeros(e.n_groups).index_add_(0, e.codes, w).unsqueeze(1)
                else:
                    B = a.new_zeros(e.n_groups, e.q).index_add_(0, e.codes, a_k.unsqueeze(1) * Z)
                grad[self.slices[f"{e.name}_z"]] = -(B @ lam).reshape(-1)
                S = B.T @ z  # dl/dLambda
                sd = values[f"{e.name}_sd"].detach()
                if e.q == 1:
                    dl[f"{e.name}_sd"] = S.reshape(1)
                else:
                    L = values[f"{e.name}_corr_chol"].detach()
                    dl[f"{e.name}_sd"] = (S * L).sum(1)
                    dl[f"{e.name}_corr_chol"] = S * sd.unsqueeze(-1)
            for s in self.shape_names:
                # u = softplus_inverse(v): du/dv = 1 / sigmoid(u) below its linear switch
                slope = 1.0 if float(u[s]) > 20.0 else 1.0 / torch.sigmoid(u[s])
                dl[s] = rows[s].sum() * slope
            for name, loc, precision, const in self.normal:
                x = self._block(theta, name)
                d = x - loc if loc != 0.0 else x
                U = U - (const - 0.5 * precision * torch.dot(d, d))
                grad[self.slices[name]] += precision * d
            for name, _, free in self.closed:
                dlp, dv = slopes[name]
                g = dlp + dl[name].reshape(free) * dv if name in dl else dlp
                grad[self.slices[name]] = -g.reshape(-1)
        if leaves:
            outs = [lp_small] + [values[name] for name, *_ in self.graph if name in dl]
            seeds = [lp_small.new_ones(())] + [dl[name].reshape(values[name].shape)
                                               for name, *_ in self.graph if name in dl]
            small = torch.autograd.grad(outs, leaves, seeds, allow_unused=True)
            for (name, *_), g in zip(self.graph, small, strict=True):
                grad[self.slices[name]] = 0.0 if g is None else -g.reshape(-1)
        return U, grad
