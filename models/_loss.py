"""The negative log posterior of a softplus GLM with its exact gradient and Hessian.

:class:`GLMLoss` is to :class:`posheads.models.glm.SoftplusGLM` what scikit-learn's
``LinearModelLoss`` is to its GLMs: the objective a Newton solver drives, written on
the flat unconstrained vector ``theta`` of :meth:`SoftplusGLM.layout`::

    f(theta) = c * (-sum_i w_i l_i(eta_i, g_i, r) - log prior - [log Jacobian])

with ``eta = intercept + X @ coef``, ``g = gate_intercept + X_zero @ gate_coef``,
``r = softplus(u)`` and ``c = 1 / sum(w)`` (``normalize=True``) or 1. Each row's
log-likelihood depends on ``theta`` only through ``(eta_i, g_i, u)``, so with the
per-row first and second derivatives ``a`` and ``h`` the derivatives of ``f`` are
contractions with the design: ``X.T @ a`` and ``X.T @ diag(h) @ X`` (and the cross
blocks). For Poisson the per-row derivatives are in closed form (MATH.md):

    dl/deta   = sigmoid(beta eta) (y / s - t)                      = y rho - t sigma
    d2l/deta2 = beta sigma (1 - sigma)(y / s - t) - y sigma^2 / s^2
              = beta (1 - sigma) dl/deta - y rho^2,      rho = sigma / s = d log s / d eta

The negative binomial's are in closed form too (:mod:`._nb_rows`). For the other
likelihoods they come from autograd on the fused log-probabilities of
:mod:`posheads.distributions`, one backward pass per predictor (a per-row quantity's
second derivatives are the gradient of the sum of its first derivatives), which is
exact and costs O(n) whatever the number of coefficients.

Linear predictors are linear in ``theta``: the line search evaluates
``eta + a * (X @ d)`` without touching ``X`` again.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from posheads import ops

from ._data import check_glm_data, weighted_mean_rate
from ._design import Design
from ._nb_rows import count_levels, nb_pieces, nb_rows, nb_value
from ._priors import SoftplusInverseGamma

__all__ = ["GLMLoss"]

# Designs with fewer entries than this get a column of ones for the intercept (copying
# them costs less than the extra kernels an intercept needs otherwise).
_AUGMENT_ENTRIES = 2**18


class GLMLoss:
    """Objective, gradient and Hessian of a :class:`SoftplusGLM` posterior in ``theta``.

    Parameters
    ----------
    model : SoftplusGLM
    data : GLMData
    jacobian : bool
        Include the log-Jacobian of ``r = softplus(u)`` (the density of ``theta``).
    normalize : bool
        Divide by ``sum(weights)`` (the scale of scikit-learn's objectives and tolerances).
    validate : bool
        Validate ``data`` (an engine that already did may skip it).
    hessian_rows : None, int or "auto"
        Rows the Hessian is computed from: all (``None``, exact), or a fixed, stratified
        random subset of about that many rows, scaled up (a sub-sampled Newton method, Byrd, Chin,
        Neveitt & Nocedal 2011; Roosta-Khorasani & Mahoney 2019). The gradient stays
        exact, so the fixed point is the exact optimum; only the rate of convergence
        changes, from quadratic to fast linear (the solver asks for the exact Hessian
        when that rate is poor, as it is when the subset misses a rare column).
        ``"auto"`` sub-samples ``max(2**17, 1000 p)`` rows of a dense design with at
        least four times as many rows.
    seed : int
        Seeds the choice of the Hessian rows.
    """

    def __init__(self, model, data, *, jacobian=False, normalize=True, validate=True,
                 hessian_rows=None, seed=0):
        data = check_glm_data(data, validate=validate)
        self.model, self.data, self.jacobian = model, data, jacobian
        self.layout = model.layout(data.X, data.X_zero)
        self.slices, i = {}, 0
        for name, shape in self.layout:
            self.slices[name] = slice(i, i + shape.numel())
            i += shape.numel()
        self.dim = i
        self.dtype, self.device = data.X.dtype, data.X.device
        self.X = Design(data.X)
        self.Z = None
        if model.has_gate:
            self.Z = self.X if data.X_zero is None else Design(data.X_zero)
        y, t, w = data.y, data.exposure, data.weights
        self.y, self.t, self.w = y, t, w
        self.wsum = float(w.sum()) if w is not None else float(data.n)
        self.scale = 1.0 / self.wsum if normalize else 1.0
        self.wy = y if w is None else w * y
        self.wt = t if w is None else (w if t is None else w * t)
        self.switch = ops.linear_switch(self.dtype, model.threshold)
        self._set_prior()
        self._offset = None
        self._const = None
        self._levels = count_levels(y, w) if model.likelihood == "negative_binomial" else None
        self.sub = self._subsample(hessian_rows, seed)
        self.augmented = self._augment()

    def _subsample(self, rows, seed):
        """Rows ``(index, Design of X[index], Design of X_zero[index], n / m)`` or None.

        ``index`` is a slice (a systematic sample of the rows).
        """
        n, p = self.data.X.shape
        if rows is None or self.X.sparse or (self.Z is not None and self.Z.sparse):
            return None
        if rows == "auto":
            rows = max(2**17, 1000 * p)
            if n < 4 * rows:
                return None
        stride = n // int(rows)
        if stride < 2:
            return None
        # Systematic sampling: every `stride`-th row from a random start. The rows are a
        # strided view of X, which BLAS reads in place (no copy), and they spread evenly
        # over the data, also when it is sorted.
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        start = int(torch.randint(stride, (1,), generator=gen))
        index = slice(start, None, stride)
        X = self.X.X[index]
        Z = None if self.Z is None else (X if self.Z is self.X else self.Z.X[index])
        rows = X.shape[0]
        DX = Design(X)
        DZ = None if Z is None else (DX if Z is X else Design(Z))
        return index, DX, DZ, n / rows

    # ------------------------------------------------------------ priors
    def _set_prior(self):
        """Gaussian prior precisions and means per coordinate (0 precision: flat)."""
        m, d = self.model, self.data
        self.prec = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        self.loc = torch.zeros_like(self.prec)
        scales = {"intercept": m.intercept_scale, "coef": m.coef_scale,
                  "gate_intercept": m.intercept_scale, "gate_coef": m.gate_coef_scale}
        for name, sl in self.slices.items():
            if name in scales and scales[name] is not None:
                self.prec[sl] = 1.0 / float(scales[name]) ** 2
        # the intercept-only rate: the default prior mean and the start of the intercept
        self.rate = weighted_mean_rate(d.y, d.exposure, d.weights)
        self.rate_eta = _softplus_inverse(float(self.rate), m.beta, m.threshold, self.dtype)
        loc = None
        if "intercept" in self.slices:
            loc = self.rate_eta if m.intercept_loc is None else m._intercept_loc(
                d.y, d.exposure, d.weights, d.X)
            self.loc[self.slices["intercept"]] = loc
        self.priors = m.priors(d, intercept_loc=loc)
        self.conc_prior = self.priors.get("concentration")
        self.has_gaussian_prior = bool(self.prec.any())

    def _concentration_terms(self, u, order):
        """``-log p(r) - [log Jacobian]`` at ``u`` and its first two derivatives in ``u``.

        With ``r = softplus(u)``: ``dr/du = sigma(u)``, ``d2r/du2 = sigma (1 - sigma)`` and
        the log-Jacobian ``log sigma(u)`` has derivatives ``1 - sigma`` and
        ``-sigma (1 - sigma)``. The prior's derivatives in ``r`` are in closed form for the
        default inverse gamma, else from autograd.
        """
        u = u.detach().reshape(())
        r = ops.softplus(u)
        if not float(r) > 0:
            # r underflowed (a line-search trial far out): no density there
            return [torch.full_like(u, math.inf)] * (order + 1)
        lp, d1, d2 = self._prior_in_r(r, order)
        sig = torch.sigmoid(u)
        out = [-lp, -(d1 * sig), -(d2 * sig**2 + d1 * sig * (1.0 - sig))]
        if self.jacobian:
            out = [out[0] - F.logsigmoid(u), out[1] - (1.0 - sig), out[2] + sig * (1.0 - sig)]
        return out[:order + 1]

    def _prior_in_r(self, r, order):
        """``log p(r)`` and its first two derivatives in ``r``."""
        prior = self.conc_prior
        zero = torch.zeros_like(r)
        if isinstance(prior, SoftplusInverseGamma):  # log p = c - (a + 1) log r - b / r
            a, b = prior.concentration, prior.rate
            return (prior.log_prob(r), -(a + 1.0) / r + b / r**2,
                    (a + 1.0) / r**2 - 2.0 * b / r**3)
        with torch.enable_grad():
            r = r.clone().requires_grad_()
            lp = prior.log_prob(r)
            if not lp.requires_grad:  # flat
                return lp.detach(), zero, zero
            (g1,) = torch.autograd.grad(lp, r, create_graph=order >= 2)
            g2 = zero
            if order >= 2 and g1.requires_grad:
                g2 = torch.autograd.grad(g1, r, allow_unused=True)[0]
                g2 = zero if g2 is None else g2.detach()
        return lp.detach(), g1.detach(), g2

    # ------------------------------------------------------------ start
    def init_theta(self) -> torch.Tensor:
        """A starting point: intercept-only fit for the mean, moments for the rest."""
        theta = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        y, w = self.y, self.w
        rate = self.rate
        lik = self.model.likelihood
        if lik != "poisson":
            wn = torch.ones_like(y) if w is None else w
            p0 = float((wn * (y == 0)).sum() / wn.sum())
        if lik in ("zero_inflated_poisson", "zero_inflated_negative_binomial"):
            m = float(rate)
            pi = min(max((p0 - math.exp(-m)) / max(1.0 - math.exp(-m), 1e-12), 0.02), 0.9)
            rate = rate / (1.0 - pi)
            gate = math.log(pi / (1.0 - pi))
        elif lik.startswith("hurdle"):
            pz = min(max(p0, 1e-3), 1.0 - 1e-3)
            gate = math.log(pz / (1.0 - pz))
        if "intercept" in self.slices:
            theta[self.slices["intercept"]] = _softplus_inverse(
                float(rate), self.model.beta, self.model.threshold, self.dtype)
        if "gate_intercept" in self.slices:
            theta[self.slices["gate_intercept"]] = gate
        if "concentration" in self.slices:
            mean = float((wn * y).sum() / wn.sum())
            var = float((wn * (y - mean) ** 2).sum() / wn.sum())
            r0 = mean**2 / (var - mean) if var > mean * 1.01 else 100.0
            r0 = min(max(r0, 0.1), 1e3)  # keeps the start away from the flat ends of r
            theta[self.slices["concentration"]] = r0 + math.log(-math.expm1(-r0))
        return theta

    # ------------------------------------------------------------ predictors
    def predictors(self, theta: torch.Tensor, start: bool = False) -> dict:
        """Linear predictors ``{"eta": (n,), "gate": (n,)}`` at ``theta`` (or along a direction).

        With ``start``, coefficients that are all 0 (the usual starting point) give the
        intercepts without a pass over the design.
        """
        out = {"eta": self._linear(theta, *self._block("eta"), start)}
        if self.Z is not None:
            out["gate"] = self._linear(theta, *self._block("gate"), start)
        return out

    def _linear(self, theta, D, s_int, s_coef, start=False):
        coef = theta[s_coef]
        if start and s_int is not None and not bool(coef.any()):
            return theta[s_int].expand(self.data.n).clone()
        eta = D.matvec(coef)
        return eta if s_int is None else eta + theta[s_int]

    @staticmethod
    def step(P: dict, dP: dict, a: float) -> dict:
        """Predictors at ``theta + a d`` from those at ``theta`` and ``dP`` of ``d``."""
        return {k: torch.add(v, dP[k], alpha=a) for k, v in P.items() if not k.startswith("_")}

    def _u(self, theta):
        s = self.slices.get("concentration")
        return None if s is None else theta[s].reshape(())

    # ------------------------------------------------------------ value
    def value(self, theta: torch.Tensor, P: dict) -> float:
        """``f(theta)`` up to an additive constant, as a Python float (NaN if not finite)."""
        if self._fast:
            total = self._poisson_value(P)
        elif self._nb:
            total = nb_value(self._nb_pieces(theta, P), self.y, self.w, self._levels)
        else:
            total = self._generic_value(theta, P)
        if self.has_gaussian_prior:
            total = total + 0.5 * torch.dot(self.prec, (theta - self.loc) ** 2)
        if self.conc_prior is not None:
            total = total + self._concentration_terms(self._u(theta), 0)[0]
        value = float(total) * self.scale
        if self._fast and not math.isfinite(value) and "_rho" not in P:
            P.pop("_nll")  # retry with the guarded branches (see _poisson_value)
            return self.value(theta, P)
        return value

    @property
    def _fast(self):
        return self.model.likelihood == "poisson"

    @property
    def _nb(self):
        return self.model.likelihood == "negative_binomial"

    @property
    def closed_form(self) -> bool:
        """Whether no derivative needs autograd: Poisson, or NB whose concentration prior
        is the default inverse gamma or flat (another prior's derivatives use autograd)."""
        if self._fast:
            return True
        prior = self.conc_prior
        return self._nb and (prior is None or isinstance(
            prior, (SoftplusInverseGamma, dist.ImproperUniform)))

    def _nb_pieces(self, theta, P):
        """:func:`nb_pieces` at ``theta``, kept in ``P`` for the gradient and Hessian."""
        u = self._u(theta)
        cached = P.get("_nb")
        if cached is None or not bool(cached[0] == u):
            cached = (u.clone(), nb_pieces(P["eta"], u, self.y, self.t, self.model.beta,
                                           self.switch))
            P["_nb"] = cached
        return cached[1]

    def _poisson_value(self, P):
        """``sum w (t s - y log s)`` at the predictors ``P`` (a tensor; no sync).

        Plain ``softplus`` and ``log`` first; where that is not finite (softplus
        underflowed to 0, at ``beta * eta < -745`` in float64) :meth:`value` calls again
        and the guarded branches of :mod:`posheads.ops` keep ``log s`` finite.
        """
        if "_nll" in P:
            return P["_nll"]
        eta, beta = P["eta"], self.model.beta
        if "_s" in P:  # a retry: the guarded branches
            s, log_s, sig, rho = ops._branches(eta, beta, self.switch)
            P["_sig"], P["_rho"] = sig, rho
        else:
            s = F.softplus(eta, beta=beta, threshold=self.switch)
            log_s = torch.log(s)
        nll = (s.sum() if self.wt is None else torch.dot(self.wt, s)) - torch.dot(self.wy, log_s)
        P["_s"], P["_nll"] = s, nll
        return nll

    def _row_log_lik(self, eta, gate, u):
        r = None if u is None else ops.softplus(u)
        d = self.model.count_distribution(eta, r, gate, self.t, validate_args=False)
        ll = d.log_prob(self.y)
        return ll if self.w is None else ll * self.w

    def _generic_value(self, theta, P):
        with torch.no_grad():
            return -self._row_log_lik(P["eta"], P.get("gate"), self._u(theta)).sum()

    # ------------------------------------------------------------ derivatives
    def _poisson_rows(self, P):
        """Weighted ``dl/deta`` per row (closed form); keeps ``sigma`` and ``rho`` in ``P``."""
        if "_a" not in P:
            self._poisson_value(P)  # s (and the guarded pieces where needed)
            eta, s, beta = P["eta"], P["_s"], self.model.beta
            if "_sig" not in P:
                P["_sig"] = torch.sigmoid(eta * beta if beta != 1.0 else eta)
                P["_rho"] = P["_sig"] / s
            sig = P["_sig"]
            P["_q"] = self.wy * P["_rho"]
            P["_a"] = P["_q"] - (sig if self.wt is None else self.wt * sig)
        return P["_a"]

    def _poisson_curvature(self, P, index=None):
        """Weighted ``-d2l/deta2`` per row, of all rows or of ``index`` (closed form)."""
        self._poisson_rows(P)
        q, rho, sig, a = P["_q"], P["_rho"], P["_sig"], P["_a"]
        if index is not None:
            q, rho, sig, a = q[index], rho[index], sig[index], a[index]
        beta = self.model.beta
        return q * rho - (1.0 - sig) * (a * beta if beta != 1.0 else a)

    def _generic_rows(self, theta, P, need_h):
        """Per-row first and (negated) second derivatives by autograd, keyed by predictor."""
        n = self.data.n
        names = ["eta"] + (["gate"] if "gate" in P else [])
        u = self._u(theta)
        with torch.enable_grad():
            leaves = {k: P[k].detach().requires_grad_() for k in names}
            if u is not None:
                names.append("u")
                leaves["u"] = u.detach().expand(n).clone().requires_grad_()
            ll = self._row_log_lik(leaves["eta"], leaves.get("gate"), leaves.get("u"))
            xs = [leaves[k] for k in names]
            first = torch.autograd.grad(ll.sum(), xs, create_graph=need_h)
            a = {k: g.detach() for k, g in zip(names, first, strict=True)}
            if not need_h:
                return a, None
            h = {}
            for i, ki in enumerate(names):
                if not first[i].requires_grad:  # linear in this predictor
                    continue
                sec = torch.autograd.grad(first[i].sum(), xs[i:], retain_graph=True,
                                          allow_unused=True)
                for kj, g in zip(names[i:], sec, strict=True):
                    if g is not None:
                        h[ki, kj] = -g.detach()
        return a, h

    def gradient(self, theta: torch.Tensor, P: dict) -> torch.Tensor:
        """``df / dtheta``, shape ``(d,)``."""
        if self._fast:
            rows = {"eta": self._poisson_rows(P)}
        elif self._nb:
            rows, _ = nb_rows(self._nb_pieces(theta, P), self.y, self.w, self.model.beta, False,
                              self._levels)
        else:
            rows, _ = self._generic_rows(theta, P, need_h=False)
        return self._assemble_gradient(theta, rows)

    def hessian(self, theta: torch.Tensor, P: dict, exact: bool = False) -> torch.Tensor:
        """``d2f / dtheta2``, shape ``(d, d)``.

        Unless ``exact``, an approximation for Newton steps: from the row subset (a large
        dense design) and with float32 Gram products (a float64 design).
        """
        sub = None if exact else self.sub
        if self._fast:
            h = {("eta", "eta"): self._poisson_curvature(P, None if sub is None else sub[0])}
        else:
            if self._nb:
                _, h = nb_rows(self._nb_pieces(theta, P), self.y, self.w, self.model.beta, True,
                                 self._levels)
            else:
                _, h = self._generic_rows(theta, P, need_h=True)
            if sub is not None:
                h = {k: v[sub[0]] for k, v in h.items()}
        # -l is convex in eta for Poisson (MATH.md), so its curvature weights are >= 0
        return self._assemble_hessian(theta, h, sub, nonnegative=self._fast, single=not exact)

    def _whole(self, key, sub=None):
        """The design of ``key`` when its coefficients are all of ``theta``, else None."""
        D, s_int, s_coef = self._block(key, sub)
        whole = s_int is None and s_coef.start == 0 and s_coef.stop == self.dim
        return D if whole else None

    def _assemble_gradient(self, theta, rows):
        sl = self.slices
        D = self._whole("eta") if len(rows) == 1 else None
        if D is not None:  # one augmented design: no assembly
            g = D.rmatvec(rows["eta"]).mul_(-self.scale)
            return g.add_(self.prec * (theta - self.loc), alpha=self.scale) \
                if self.has_gaussian_prior else g
        g = self.prec * (theta - self.loc) if self.has_gaussian_prior else \
            torch.zeros_like(theta)
        for key in ("eta", "gate"):
            if key not in rows:
                continue
            D, s_int, s_coef = self._block(key)
            a = rows[key]
            g[s_coef] -= D.rmatvec(a)
            if s_int is not None:
                g[s_int] -= a.sum()
        if "u" in rows or self.conc_prior is not None:
            su = sl["concentration"]
            if "u" in rows:
                g[su] -= rows["u"].sum()
            g[su] += self._concentration_terms(self._u(theta), 1)[1]
        return g * self.scale

    def _block(self, key, sub=None):
        """``(design, intercept slice or None, coefficient slice)`` of a predictor."""
        if sub is None and key in self.augmented:
            return self.augmented[key]
        if key == "eta":
            D = self.X if sub is None else sub[1]
            return D, self.slices.get("intercept"), self.slices["coef"]
        D = self.Z if sub is None else sub[2]
        return D, self.slices.get("gate_intercept"), self.slices["gate_coef"]

    def _augment(self):
        """``[1, X]`` for a small dense design with an intercept, by predictor.

        The intercept is then one more coefficient (its slice is next to the
        coefficients'), so a Newton step runs fewer, and equally tiny, kernels.
        """
        out, sl = {}, self.slices
        blocks = [("eta", self.X, "intercept", "coef"),
                  ("gate", self.Z, "gate_intercept", "gate_coef")]
        for key, D, s_int, s_coef in blocks:
            if D is None or D.sparse or s_int not in sl:
                continue
            n, p = D.shape
            if n * (p + 1) >= _AUGMENT_ENTRIES:
                continue
            if key == "gate" and D is self.X and "eta" in out:
                A = out["eta"][0]
            else:
                # built as [1, X].T, the layout the Design of a small X keeps and reads
                # (its X is then a view): one copy of X, not two
                At = torch.empty(p + 1, n, dtype=D.dtype, device=D.device)
                At[0] = 1.0
                At[1:] = D.X.t()
                A = Design(At.t())
            out[key] = (A, None, slice(sl[s_int].start, sl[s_coef].stop))
        return out

    def _assemble_hessian(self, theta, h, sub=None, nonnegative=False, single=False):
        # An approximate Hessian (`single`) has its Gram products in float32: relative
        # errors of about 1e-6 (a sub-sample's are a few %) slow Newton's quadratic
        # convergence only to a linear rate of that size, and the solver asks for the
        # exact Hessian when the rate is poor.
        sl = self.slices
        D = self._whole("eta", sub) if len(h) == 1 else None
        if D is not None:  # one augmented design: the Gram matrix is the Hessian
            H = D.gram(h["eta", "eta"], nonnegative=nonnegative, single=single,
                       border=False)[0]
            H.mul_(self.scale * (1.0 if sub is None else sub[3]))
            if self.has_gaussian_prior:
                H.diagonal().add_(self.prec, alpha=self.scale)
            return H
        H = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=self.device)
        for (ki, kj), hij in h.items():
            if "u" in (ki, kj):
                self._put_concentration(H, kj if ki == "u" else ki, hij, sub)
                continue
            Di, si_int, si_coef = self._block(ki, sub)
            Dj, sj_int, sj_coef = self._block(kj, sub)
            block, cj = Di.gram(hij, Dj, nonnegative=nonnegative and ki == kj,
                                single=single)
            ci = cj if ki == kj else (Di.rmatvec(hij) if sj_int is not None else None)
            rows_i, rows_j = (si_int, si_coef, ci), (sj_int, sj_coef, cj)
            total = hij.sum() if si_int is not None and sj_int is not None else None
            _put(H, rows_i, rows_j, block, total)
            if ki != kj:
                _put(H, rows_j, rows_i, block.t(), total)
        if sub is not None:
            H *= sub[3]  # the subset's sums, scaled up to all rows
        if self.has_gaussian_prior:
            H.diagonal().add_(self.prec)
        if self.conc_prior is not None:
            su = sl["concentration"]
            H[su, su] += self._concentration_terms(self._u(theta), 2)[2]
        return H * self.scale

    def _put_concentration(self, H, other, hij, sub):
        su = self.slices["concentration"]
        if other == "u":
            H[su, su] += hij.sum()
            return
        D, s_int, s_coef = self._block(other, sub)
        col = D.rmatvec(hij)
        H[s_coef, su] += col[:, None]
        H[su, s_coef] += col[None, :]
        if s_int is not None:
            H[s_int, su] += hij.sum()
            H[su, s_int] += hij.sum()

    # ------------------------------------------------------------ exact values
    def log_joint(self, theta: torch.Tensor, P: dict | None = None) -> torch.Tensor:
        """The model's log joint at ``theta`` (constants included), reusing predictors ``P``."""
        P = self.predictors(theta) if P is None else P
        m, d = self.model, self.data
        values = m.unpack(theta, self.layout)
        with torch.no_grad():
            if self._fast:
                ll = -self._poisson_value(P) + self._poisson_constant()
            else:
                ll = self._row_log_lik(P["eta"], P.get("gate"), self._u(theta)).sum()
            lp = m.log_prior(values, d, self.priors) + ll
            if self.jacobian and "concentration" in values:
                lp = lp + F.logsigmoid(self._u(theta))
        return lp

    def _poisson_constant(self):
        """``sum w (y log t - lgamma(y + 1))``: the part of the Poisson log-likelihood
        that :meth:`value` leaves out."""
        if self._const is None:
            c = _log_factorial(self.y)
            if self.t is not None:
                c = c - torch.xlogy(self.y, self.t)
            self._const = -(c.sum() if self.w is None else torch.dot(self.w, c))
        return self._const

    def potential_and_grad(self, theta: torch.Tensor):
        """``-log_joint(theta)`` and its gradient (unnormalized when ``normalize=False``)."""
        theta = theta.detach()
        P = self.predictors(theta)
        f = self.value(theta, P) / self.scale
        if self._offset is None:  # the constants that value() leaves out, found once
            self._offset = -float(self.log_joint(theta, P)) - f
        U = torch.as_tensor(f + self._offset, dtype=self.dtype, device=self.device)
        return U, self.gradient(theta, P) / self.scale


def _put(H, rows, cols, block, total):
    """Add the block of ``[1, A].T diag(h) [1, B]`` at ``rows`` x ``cols`` of ``H``.

    ``rows = (intercept slice or None, coef slice, A.T @ h)``, likewise ``cols`` with
    ``B.T @ h``; ``block = A.T diag(h) B`` and ``total = sum(h)``.
    """
    r_int, r_coef, r_col = rows
    c_int, c_coef, c_col = cols
    H[r_coef, c_coef] += block
    if c_int is not None:
        H[r_coef, c_int] += r_col[:, None]
    if r_int is not None:
        H[r_int, c_coef] += c_col[None, :]
        if c_int is not None:
            H[r_int, c_int] += total


def _log_factorial(y: torch.Tensor) -> torch.Tensor:
    """``lgamma(y + 1)`` per row: from a table of ``0..max(y)`` when ``y`` holds whole
    counts no larger than its length (``lgamma`` costs about twenty multiplications, and
    count data repeat a few values), else directly."""
    low, top = (float(v) for v in torch.aminmax(y)) if y.numel() else (0.0, 0.0)
    if low >= 0 and top < y.numel() and torch.equal(y, torch.floor(y)):
        table = torch.lgamma(torch.arange(1.0, top + 2.0, dtype=y.dtype, device=y.device))
        return table.index_select(0, y.long())
    return torch.lgamma(y + 1.0)


def _softplus_inverse(value: float, beta: float, threshold: float, dtype) -> float:
    """:func:`posheads.ops.softplus_inverse` of one positive Python float."""
    z = beta * value
    if z > ops.linear_switch(dtype, threshold):
        return value
    return value + math.log(-math.expm1(-z)) / beta
