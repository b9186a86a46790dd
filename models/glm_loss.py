"""The negative log posterior of a softplus GLM with its exact gradient and Hessian.

:class:`GLMLoss` is to :class:`posheads.models.glm.SoftplusGLM` what scikit-learn's
``LinearModelLoss`` is to its GLMs: the objective a Newton solver drives, written on
the flat unconstrained vector ``theta`` of :meth:`SoftplusGLM.layout`::

    f(theta) = c * (-sum_i w_i l_i(eta_i, g_i, u) - log prior - [log Jacobian])

with ``eta = intercept + X @ coef``, one more predictor ``g = {part}_intercept +
X_zero @ {part}_coef`` per part of the family, the family's shapes ``r = softplus(u)``
and ``c = 1 / sum(w)`` (``normalize=True``) or 1. Each row's log-likelihood depends on
``theta`` only through its predictors and the shapes (an offset ``o`` adds to ``eta``
before the rows see it: ``eta = o + intercept + X @ coef``), so with the per-row first and
second derivatives ``a`` and ``h`` -- the family's :class:`~posheads.families.RowTerms`,
closed form where the family has them, autograd otherwise -- the derivatives of ``f`` are
contractions with the design: ``X.T @ a`` and ``X.T @ diag(h) @ X`` (and the cross
blocks). See ``docs/inference.md``.

Linear predictors are linear in ``theta``: the line search evaluates
``eta + a * (X @ d)`` without touching ``X`` again.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from posheads import ops
from posheads.distributions import SoftplusInverseGamma
from posheads.families import weighted_mean_rate
from posheads.families.start import softplus_inverse_scalar

from .data import check_glm_data, mean_offset
from .design import Design

__all__ = ["GLMLoss", "OffsetRows"]

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
        Include the log-Jacobian of each shape's ``r = softplus(u)`` (the density of
        ``theta``).
    normalize : bool
        Divide by ``sum(weights)`` (the scale of scikit-learn's objectives and tolerances).
    validate : bool
        Validate ``data`` (an engine that already did may skip it).
    hessian_rows : None, int or "auto"
        Rows the Hessian is computed from: all (``None``, exact), or a fixed systematic
        sample of about that many rows (every k-th row from a random start), scaled up (a
        sub-sampled Newton method, Byrd, Chin, Neveitt & Nocedal 2011; Roosta-Khorasani &
        Mahoney 2019). The gradient stays exact, so the fixed point is the exact optimum;
        only the rate of convergence changes, from quadratic to fast linear (the solver
        asks for the exact Hessian when that rate is poor, as it is when the subset misses
        a rare column). ``"auto"`` sub-samples ``max(2**17, 1000 p)`` rows of a dense
        design with at least four times as many rows.
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
        family = model.family
        self.parts, self.shapes = family.part_names, family.shape_names
        self.X = Design(data.X)
        self.Z = None
        if self.parts:
            self.Z = self.X if data.X_zero is None else Design(data.X_zero)
        y, t, w = data.y, data.exposure, data.weights
        self.y, self.t, self.w = y, t, w
        self.wsum = float(w.sum()) if w is not None else float(data.n)
        self.scale = 1.0 / self.wsum if normalize else 1.0
        self.rows = family.rows(y, t, w, beta=model.beta, threshold=model.threshold)
        if data.offset is not None:
            self.rows = OffsetRows(self.rows, data.offset)
        self._set_prior()
        self._offset = None
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
        scales = {"intercept": m.intercept_scale, "coef": m.coef_scale}
        for part in self.parts:
            scales[f"{part}_intercept"] = m.intercept_scale
            scales[f"{part}_coef"] = m.gate_coef_scale
        for name, sl in self.slices.items():
            if name in scales and scales[name] is not None:
                self.prec[sl] = 1.0 / float(scales[name]) ** 2
        # the intercept-only rate: the default prior mean
        self.rate = weighted_mean_rate(d.y, d.exposure, d.weights)
        loc = None
        if "intercept" in self.slices:
            if m.intercept_loc is None:
                loc = softplus_inverse_scalar(float(self.rate), m.beta, m.threshold) \
                    - mean_offset(d)
            else:
                loc = m.intercept_location(d)
            self.loc[self.slices["intercept"]] = loc
        self.priors = m.priors(d, intercept_loc=loc)
        self.shape_priors = {name: self.priors[name] for name in self.shapes}
        self.has_gaussian_prior = bool(self.prec.any())

    def _shape_terms(self, name, u, order):
        """``-log p(r) - [log Jacobian]`` of shape ``name`` at ``u`` and its first two
        derivatives in ``u``.

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
        lp, d1, d2 = _prior_in_r(self.shape_priors[name], r, order)
        sig = torch.sigmoid(u)
        out = [-lp, -(d1 * sig), -(d2 * sig**2 + d1 * sig * (1.0 - sig))]
        if self.jacobian:
            out = [out[0] - F.logsigmoid(u), out[1] - (1.0 - sig), out[2] + sig * (1.0 - sig)]
        return out[:order + 1]

    # ------------------------------------------------------------ start
    def init_theta(self) -> torch.Tensor:
        """A starting point: the family's moment-based start (intercept-only fit)."""
        theta = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        family, m = self.model.family, self.model
        start = family.start(self.y, self.w, self.t)
        raw = family.raw_start(start, beta=m.beta, threshold=m.threshold)
        if "intercept" in self.slices:
            theta[self.slices["intercept"]] = raw["eta"] - mean_offset(self.data)
        for name in self.shapes:
            theta[self.slices[name]] = raw[name]
        for part in family.parts:
            if f"{part.name}_intercept" in self.slices:
                theta[self.slices[f"{part.name}_intercept"]] = raw[part.argument]
        return theta

    # ------------------------------------------------------------ predictors
    def predictors(self, theta: torch.Tensor, start: bool = False) -> dict:
        """Linear predictors ``{"eta": (n,), part: (n,)}`` at ``theta`` (or along a direction).

        With ``start``, coefficients that are all 0 (the usual starting point) give the
        intercepts without a pass over the design.
        """
        return {key: self._linear(theta, *self._block(key), start)
                for key in ("eta", *self.parts)}

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

    def _u(self, theta) -> dict:
        """The unconstrained shapes at ``theta``, 0-d each, by name."""
        return {name: theta[self.slices[name]].reshape(()) for name in self.shapes}

    # ------------------------------------------------------------ value
    def value(self, theta: torch.Tensor, P: dict) -> float:
        """``f(theta)`` up to an additive constant, as a Python float (NaN if not finite)."""
        u = self._u(theta)
        total = self.rows.value(P, u)
        if self.has_gaussian_prior:
            total = total + 0.5 * torch.dot(self.prec, (theta - self.loc) ** 2)
        for name in self.shapes:
            total = total + self._shape_terms(name, u[name], 0)[0]
        value = float(total) * self.scale
        if not math.isfinite(value) and self.rows.fallback(P):
            return self.value(theta, P)  # the guarded branches of the family's rows
        return value

    @property
    def closed_form(self) -> bool:
        """Whether no derivative needs autograd: the family's rows are in closed form and
        every shape prior is the default inverse gamma or flat (another prior's
        derivatives use autograd)."""
        return self.rows.closed_form and all(
            isinstance(prior, (SoftplusInverseGamma, dist.ImproperUniform))
            for prior in self.shape_priors.values())

    @property
    def inference_mode_safe(self) -> bool:
        """Whether a solver may run in ``torch.inference_mode()``: no derivative needs
        autograd, and no design is sparse (torch cannot convert sparse layouts of
        inference tensors)."""
        sparse = self.X.sparse or (self.Z is not None and self.Z.sparse)
        return self.closed_form and not sparse

    # ------------------------------------------------------------ derivatives
    def gradient(self, theta: torch.Tensor, P: dict) -> torch.Tensor:
        """``df / dtheta``, shape ``(d,)``."""
        return self._assemble_gradient(theta, self.rows.gradient(P, self._u(theta)))

    def hessian(self, theta: torch.Tensor, P: dict, exact: bool = False) -> torch.Tensor:
        """``d2f / dtheta2``, shape ``(d, d)``.

        Unless ``exact``, an approximation for Newton steps: from the row subset (a large
        dense design) and with float32 Gram products (a float64 design).
        """
        sub = None if exact else self.sub
        h = self.rows.curvature(P, self._u(theta), None if sub is None else sub[0])
        # where -l is convex in eta (Poisson), its curvature weights are >= 0
        return self._assemble_hessian(theta, h, sub, nonnegative=self.rows.convex,
                                      single=not exact)

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
        for key in ("eta", *self.parts):
            if key not in rows:
                continue
            D, s_int, s_coef = self._block(key)
            a = rows[key]
            g[s_coef] -= D.rmatvec(a)
            if s_int is not None:
                g[s_int] -= a.sum()
        u = self._u(theta)
        for name in self.shapes:
            su = sl[name]
            if name in rows:
                g[su] -= rows[name].sum()
            g[su] += self._shape_terms(name, u[name], 1)[1]
        return g * self.scale

    def _block(self, key, sub=None):
        """``(design, intercept slice or None, coefficient slice)`` of a predictor."""
        if sub is None and key in self.augmented:
            return self.augmented[key]
        if key == "eta":
            D = self.X if sub is None else sub[1]
            return D, self.slices.get("intercept"), self.slices["coef"]
        D = self.Z if sub is None else sub[2]
        return D, self.slices.get(f"{key}_intercept"), self.slices[f"{key}_coef"]

    def _augment(self, force=False):
        """``[1, X]`` for a small dense design with an intercept (any size with
        ``force``), by predictor.

        The intercept is then one more coefficient (its slice is next to the
        coefficients'), so a Newton step runs fewer, and equally tiny, kernels.
        """
        out, sl = {}, self.slices
        blocks = [("eta", self.X, "intercept", "coef")]
        blocks += [(key, self.Z, f"{key}_intercept", f"{key}_coef") for key in self.parts]
        for key, D, s_int, s_coef in blocks:
            if D is None or D.sparse or s_int not in sl:
                continue
            n, p = D.shape
            if n * (p + 1) >= _AUGMENT_ENTRIES and not force:
                continue
            if key != "eta" and D is self.X and "eta" in out:
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
        shapes = set(self.shapes)
        for (ki, kj), hij in h.items():
            if ki in shapes or kj in shapes:
                self._put_shape(H, (ki, kj), hij, sub)
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
        u = self._u(theta)
        for name in self.shapes:
            su = sl[name]
            H[su, su] += self._shape_terms(name, u[name], 2)[2]
        return H * self.scale

    def _put_shape(self, H, key, hij, sub):
        """Add a curvature block that involves a shape: with another shape (a scalar
        entry, both orders) or with a predictor (a row and a column)."""
        ki, kj = key
        shapes = set(self.shapes)
        if ki in shapes and kj in shapes:
            si, sj = self.slices[ki], self.slices[kj]
            total = hij.sum()
            H[si, sj] += total
            if ki != kj:
                H[sj, si] += total
            return
        shape, other = (ki, kj) if ki in shapes else (kj, ki)
        su = self.slices[shape]
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
        u = self._u(theta)
        with torch.no_grad():
            lp = m.log_prior(values, d, self.priors) + self.rows.log_likelihood(P, u)
            if self.jacobian:
                for name in self.shapes:
                    lp = lp + F.logsigmoid(u[name])
        return lp

    def potential_and_grad(self, theta: torch.Tensor):
        """``-log_joint(theta)`` and its gradient (unnormalized when ``normalize=False``)."""
        theta = theta.detach()
        P = self.predictors(theta)
        f = self.value(theta, P) / self.scale
        if not math.isfinite(f):  # zero density (a count past a cut support): no offset
            exact = -float(self.log_joint(theta, P))  # from, and none cached
            return (torch.as_tensor(exact, dtype=self.dtype, device=self.device),
                    self.gradient(theta, P) / self.scale)
        if self._offset is None:  # the constants that value() leaves out, found once
            self._offset = -float(self.log_joint(theta, P)) - f
        U = torch.as_tensor(f + self._offset, dtype=self.dtype, device=self.device)
        return U, self.gradient(theta, P) / self.scale

    def in_dtype(self, dtype: torch.dtype) -> GLMLoss:
        """This objective, unnormalized, on a copy of its data in ``dtype``.

        For a sampler that evaluates the potential thousands of times on a large dense
        design: in float32 a pass over the rows costs about half as much. The copy of the
        design is ``[1, X]`` stored column by column (``X.T`` contiguous, the intercept
        as its first row), so ``eta = [1, X] @ theta`` and ``X.T @ a`` each read it once,
        in order. Priors and start are this objective's. ``self`` when nothing would
        change (same dtype) or the design is sparse.
        """
        d = self.data
        if dtype == self.dtype or self.X.sparse or (self.Z is not None and self.Z.sparse):
            return self
        data = type(d)(X=d.X.to(dtype), y=d.y, exposure=d.exposure, weights=d.weights,
                       X_zero=None if d.X_zero is None else d.X_zero.to(dtype),
                       offset=d.offset)
        out = GLMLoss(self.model, data, jacobian=self.jacobian, normalize=False,
                      validate=False)
        out.augmented = out._augment(force=True)
        return out


class OffsetRows:
    """A family's row terms with a known offset added to the count predictor ``eta``.

    The solver's predictors stay linear in ``theta`` (its line search relies on it); the
    rows see ``eta + offset``. The shifted predictors are kept in ``P["_offset"]``, where
    the family's rows cache their own work, so a new ``P`` starts afresh.
    """

    def __init__(self, rows, offset):
        self.inner, self.offset = rows, offset
        self.keys, self.closed_form, self.convex = rows.keys, rows.closed_form, rows.convex

    def _shifted(self, P):
        inner = P.get("_offset")
        if inner is None:
            inner = {k: v for k, v in P.items() if not k.startswith("_")}
            inner["eta"] = P["eta"] + self.offset
            P["_offset"] = inner
        return inner

    def value(self, P, u):
        return self.inner.value(self._shifted(P), u)

    def log_likelihood(self, P, u):
        return self.inner.log_likelihood(self._shifted(P), u)

    def gradient(self, P, u):
        return self.inner.gradient(self._shifted(P), u)

    def curvature(self, P, u, index=None):
        return self.inner.curvature(self._shifted(P), u, index)

    def fallback(self, P) -> bool:
        return self.inner.fallback(self._shifted(P))


def _prior_in_r(prior, r, order):
    """``log p(r)`` and its first two derivatives in ``r``."""
    zero = torch.zeros_like(r)
    x = float(r)
    if (isinstance(prior, SoftplusInverseGamma) and prior.concentration.numel() == 1
            and 1e-50 < x < 1e50):
        # log p = a log b - lgamma(a) - (a + 1) log r - b / r, in Python floats: a 0-d
        # log_prob through torch.distributions costs more than a small model's rows.
        # Outside [1e-50, 1e50] (a line search far from the mode) powers of r would
        # overflow a Python float: the tensor path below gives inf/0 there instead.
        a, b = float(prior.concentration), float(prior.rate)
        lp = a * math.log(b) - math.lgamma(a) - (a + 1.0) * math.log(x) - b / x
        return (r.new_tensor(lp), r.new_tensor(-(a + 1.0) / x + b / x**2),
                r.new_tensor((a + 1.0) / x**2 - 2.0 * b / x**3))
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
