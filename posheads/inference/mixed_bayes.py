"""The Bayesian face of a softplus GLMM for the engines: :class:`GLMMTarget` and
:class:`BayesianGLMM`.

:class:`~posheads.models.mixed.SoftplusGLMM` is a plain Pyro model, so every engine could
fit it through Pyro's trace-based potential; that costs a trace per evaluation, far more
than the arithmetic of the model. :class:`GLMMTarget` is the same posterior written as
one torch function of a flat vector (the same sites, priors, constraining maps and
non-centred effects as the Pyro model): the Laplace engine differentiates it by autograd,
NUTS takes its potential and gradient with the chain rule written out
(:class:`~posheads.inference.mixed_potential.GLMMPotential`). :class:`BayesianGLMM`
implements the engines'
:class:`~posheads.models.protocol.PosteriorModel` protocol around a ``SoftplusGLMM``: the
target above for NUTS and Laplace, the Pyro model itself for SVI's guide, and vectorised
draws of means, counts and pointwise log-likelihoods for
:class:`~posheads.posterior.Posterior`.

Sites (constrained values, in packing order): ``"coef"`` ``(p,)``, each part's
``"{part}_intercept"`` ``()``, each shape ``()``, and per factor ``k``: ``"{k}_sd"``
``(q,)``, ``"{k}_corr_chol"`` ``(q, q)`` when ``q > 1``, ``"{k}_z"`` ``(G, q)``.
"""

from __future__ import annotations

import math

import pyro
import torch
from torch.distributions import biject_to

from posheads import ops
from posheads.models.mixed import MixedData
from posheads.models.target import Target

from .mixed_potential import GLMMPotential
from .mixed_structure import orthogonal_design

__all__ = ["BayesianGLMM", "GLMMTarget", "OrthogonalFixedTarget", "draw_eta", "draw_factors",
           "draw_params"]


def draw_factors(values: dict, data: MixedData) -> list:
    """``Lambda_k = diag(sd_k) L_k`` of each factor for each draw, shapes ``(S, q, q)``.

    Parameters
    ----------
    values : dict of str to Tensor
        Site values with a leading draw dimension ``S``.
    data : MixedData
    """
    out = []
    for e in data.effects:
        sd = values[f"{e.name}_sd"]
        if e.q > 1:
            out.append(sd.unsqueeze(-1) * values[f"{e.name}_corr_chol"])
        else:
            out.append(torch.diag_embed(sd))
    return out


def draw_params(model, values: dict) -> dict:
    """The model's flat-layout parameters of :meth:`SoftplusGLMM.distribution` for each
    draw: shapes before softplus and parts' intercepts, shaped ``(S, 1)`` to broadcast
    over rows."""
    params = {}
    for p in model.family.parts:
        params[f"{p.name}_intercept"] = values[f"{p.name}_intercept"].unsqueeze(-1)
    for s in model.family.shapes:
        params[s.name] = ops.softplus_inverse(values[s.name]).unsqueeze(-1)
    return params


def draw_eta(values: dict, data: MixedData) -> torch.Tensor:
    """The linear predictor of every row for each draw, shape ``(S, n)``."""
    eta = values["coef"] @ data.X.T
    if data.offset is not None:
        eta = eta + data.offset
    for e, lam in zip(data.effects, draw_factors(values, data), strict=True):
        u = values[f"{e.name}_z"] @ lam.transpose(-1, -2)  # (S, G, q)
        eta = eta + (e.Z * u[..., e.codes, :]).sum(-1)
    return eta


class GLMMTarget(Target):
    """The posterior of a :class:`SoftplusGLMM` given :class:`MixedData` on a flat vector.

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets ``y``.
    """

    def __init__(self, model, data: MixedData):
        if data.y is None:
            raise ValueError("the data hold no targets y to condition on")
        model.family.check_target(data.y.detach().cpu().numpy(), proper=True)
        zero = [e.name for e in data.effects if getattr(e, "part", None) is not None]
        if zero:
            raise ValueError(f"random-effect terms {zero} reach a zero part: the Bayesian "
                             "engines fit group effects of the count part only "
                             "(inference='ml' fits both)")
        self.model, self.data = model, data
        like = data.X.new_zeros(())
        fam = model.family
        # (name, prior, constrained shape); the priors are the Pyro model's own
        sites = [("coef", torch.distributions.Normal(like, model.coef_scale),
                  (data.X.shape[1],))]
        sites += [(f"{p.name}_intercept", torch.distributions.Normal(like, 2.0), ())
                  for p in fam.parts]
        sites += [(s.name, s.prior(like), ()) for s in fam.shapes]
        for e in data.effects:
            sites.append((f"{e.name}_sd", torch.distributions.HalfNormal(
                like + model.sd_scale), (e.q,)))
            if e.q > 1:
                lkj = torch.distributions.LKJCholesky(e.q, like + model.lkj_concentration)
                sites.append((f"{e.name}_corr_chol", lkj, (e.q, e.q)))
            sites.append((f"{e.name}_z", torch.distributions.Normal(like, 1.0),
                          (e.n_groups, e.q)))
        #: (name, prior, bijection, constrained shape, unconstrained shape) per site
        self.sites = []
        for name, prior, shape in sites:
            transform = biject_to(prior.support)
            free = transform.inverse_shape(torch.Size(shape))
            prior._validate_args = False  # values come from the support's bijection
            self.sites.append((name, prior, transform, torch.Size(shape), free))
        self.layout = [(name, shape) for name, _, _, shape, _ in self.sites]
        self._sizes = [free.numel() for *_, free in self.sites]
        self.num_obs = float(data.n)
        self.work_size = int(data.X.numel() + sum(e.Z.numel() for e in data.effects))
        # theta = 0 (unit SDs, identity correlations, shapes softplus(0)) is finite
        self._potential = GLMMPotential(model, data, self.sites, data.X.new_zeros(self.dim))

    @property
    def dim(self) -> int:
        return sum(self._sizes)

    def init(self):
        """Prior medians: coefficients and effects at 0, SDs at ``sd_scale * 0.67``."""
        values = {}
        for name, prior, _, shape, _ in self.sites:
            if name.endswith("_corr_chol"):
                values[name] = torch.eye(shape[0], dtype=self.data.X.dtype)
            elif isinstance(prior, torch.distributions.Normal):
                values[name] = torch.zeros(shape, dtype=self.data.X.dtype)
            else:  # a positive scale: its prior median (HalfNormal: 0.674 sd)
                values[name] = torch.full(shape, _prior_median(prior),
                                          dtype=self.data.X.dtype)
        return self.pack(values)

    def _split(self, theta):
        lead = theta.shape[:-1]
        parts = torch.split(theta, self._sizes, dim=-1)
        return [(site, p.reshape(lead + site[4])) for site, p in zip(self.sites, parts,
                                                                     strict=True)]

    def unpack(self, theta):
        return {site[0]: site[2](raw) for site, raw in self._split(theta)}

    def pack(self, values):
        lead = None
        out = []
        for name, _, transform, shape, _ in self.sites:
            raw = transform.inv(torch.as_tensor(values[name]))
            lead = raw.shape[:raw.dim() - len(transform.inverse_shape(shape))] if lead is None \
                else lead
            out.append(raw.reshape(*lead, -1))
        return torch.cat(out, dim=-1)

    def _constrain(self, theta, jacobian):
        values, log_prior = {}, theta.new_zeros(())
        for (name, prior, transform, _, _), raw in self._split(theta):
            v = transform(raw)
            values[name] = v
            log_prior = log_prior + prior.log_prob(v).sum()
            if jacobian:
                log_prior = log_prior + transform.log_abs_det_jacobian(raw, v).sum()
        return values, log_prior

    def _log_lik(self, values):
        one = {k: v.unsqueeze(0) for k, v in values.items()}
        eta = draw_eta(one, self.data)[0]
        params = {k: v[0] for k, v in draw_params(self.model, one).items()}
        # the targets were checked once, when the target was made: not at every step
        with pyro.validation_enabled(False):
            return self.model.row_log_lik(eta, params, self.data).sum()

    def log_likelihood(self, theta):
        values, _ = self._constrain(theta, False)
        return self._log_lik(values)

    def log_joint(self, theta, jacobian=True):
        values, log_prior = self._constrain(theta, jacobian)
        return log_prior + self._log_lik(values)

    def potential_and_grad(self, theta):
        """``U = -log_joint(theta)`` and ``dU/dtheta`` by
        :class:`~posheads.inference.mixed_potential.GLMMPotential` (no autograd graph
        over the data), detached."""
        return self._potential(theta)


class OrthogonalFixedTarget(GLMMTarget):
    """:class:`GLMMTarget` in the coordinates NUTS samples: the fixed effects in an
    orthogonal basis and, optionally, one intercept factor centred on the intercept.

    * With the thin QR factorisation ``X = Q R`` (intercept first) and ``T = R / sqrt(n)``,
      the sampler's ``coef`` block is ``c = T b`` (``X b = sqrt(n) Q c``). Uncentred or
      collinear covariates (an intercept beside ``log(age)``) make the posterior of ``b``
      a long narrow ridge that a diagonal metric cannot follow; in ``c`` the fixed block's
      curvature is close to a multiple of the identity. The map is linear, its Jacobian
      constant: the potential is ``U(b(c))``, its gradient ``T^{-T} dU/db``.
    * ``centre=k`` (a ``(1|k)`` factor): its block holds the group levels
      ``m_g = (A c)_g + sd_k z_g`` instead of ``z_g``, where ``A c`` (``A = W T^{-1}``,
      shape ``(G, p)``) is the part of ``X b`` carried by the columns constant within each
      group (the intercept, group-level covariates; ``W`` their values per group). Where
      each group's rows pin down its level (several rows, large counts), ``z_g`` and
      those coefficients are tightly coupled given the data and NUTS needs long
      trajectories; ``m_g`` is nearly independent of them (hierarchical centring). The
      Jacobian ``|dz/dm| = sd^{-G}`` adds ``G log sd`` to the potential.

    Priors stay on the original sites, and :meth:`unpack` (hence every draw) gives them
    on the original scale. A rank-deficient design (or ``n <= p``) keeps ``b``, and
    no factor is centred.

    Parameters
    ----------
    model : SoftplusGLMM
    data : MixedData
        With targets ``y``.
    centre : str, optional
        The name of a random-intercept-only factor to centre.
    """

    def __init__(self, model, data: MixedData, centre: str | None = None):
        super().__init__(model, data)
        n, p = data.X.shape
        #: ``T`` (shape ``(p, p)``) and its inverse, or None where ``b`` is kept
        self.basis = None
        orthogonal = orthogonal_design(data.X)
        if orthogonal is not None:
            T = orthogonal[1]
            self.basis = (T, torch.linalg.solve_triangular(
                T, torch.eye(p, dtype=T.dtype, device=T.device), upper=True))
        self._p = p
        self.centre = None
        if centre is not None:
            effect = {e.name: e for e in data.effects}.get(centre)
            if effect is None or effect.q != 1 or not bool((effect.Z == 1).all()):
                raise ValueError(f"centre={centre!r} is not a random-intercept factor")
            if self.basis is not None:
                # the columns of X constant within every group (the intercept, group-level
                # covariates): their part of eta is each group's level, A c
                codes = effect.codes
                first = torch.full((effect.n_groups,), n, dtype=torch.long,
                                   device=codes.device).scatter_reduce(
                    0, codes, torch.arange(n, device=codes.device), reduce="amin"
                ).clamp_(max=n - 1)  # a level without rows: any row (A is only a basis)
                W = data.X.index_select(0, first)  # (G, p): each group's first row
                within = (data.X == W.index_select(0, effect.codes)).all(0)
                A = W * within @ self.basis[1]
                sl = self._potential.slices
                self.centre = (sl[f"{centre}_sd"].start, sl[f"{centre}_z"], A)

    def to_original(self, theta: torch.Tensor) -> torch.Tensor:
        """``(c, ..., m) -> (b, ..., z)`` over the last dimension, shape kept."""
        if self.basis is None:
            return theta
        out = torch.cat([theta[..., :self._p] @ self.basis[1].to(theta).T,
                         theta[..., self._p:]], dim=-1)
        if self.centre is not None:
            i, block, A = self.centre
            level = theta[..., :self._p] @ A.to(theta).T
            out[..., block] = (theta[..., block] - level) * (-theta[..., i:i + 1]).exp()
        return out

    def from_original(self, theta: torch.Tensor) -> torch.Tensor:
        """``(b, ..., z) -> (c, ..., m)``: the inverse of :meth:`to_original`."""
        if self.basis is None:
            return theta
        out = torch.cat([theta[..., :self._p] @ self.basis[0].to(theta).T,
                         theta[..., self._p:]], dim=-1)
        if self.centre is not None:
            i, block, A = self.centre
            level = out[..., :self._p] @ A.to(theta).T
            out[..., block] = level + theta[..., block] * theta[..., i:i + 1].exp()
        return out

    def _log_jacobian(self, theta):
        """``log |d original / d theta|`` less its constant part: ``-G log sd``."""
        if self.centre is None:
            return theta.new_zeros(())
        i, block, _ = self.centre
        return -(block.stop - block.start) * theta[..., i]

    def _split(self, theta):
        return super()._split(self.to_original(theta))

    def pack(self, values):
        return self.from_original(super().pack(values))

    def log_joint(self, theta, jacobian=True):
        out = super().log_joint(theta, jacobian)
        return out + self._log_jacobian(theta) if jacobian else out

    def potential_and_grad(self, theta):
        """``U(original(theta)) - log|J|`` and its gradient by the chain rule."""
        theta = theta.detach()
        original = self.to_original(theta)
        U, g = self._potential(original)
        if self.basis is None:
            return U, g
        grad = g.clone()
        grad[:self._p] = self.basis[1].T.to(g) @ g[:self._p]
        if self.centre is not None:
            i, block, A = self.centre
            inv_sd = math.exp(-float(theta[i]))
            gz = g[block]
            grad[block] = gz * inv_sd
            grad[:self._p] -= inv_sd * (A.T.to(gz) @ gz)
            G = block.stop - block.start
            grad[i] -= torch.dot(gz, original[block]) - G
            U = U + G * theta[i]
        return U, grad

class BayesianGLMM:
    """A :class:`SoftplusGLMM` as the engines' :class:`PosteriorModel`; ``data`` is a
    :class:`MixedData`.

    Calling it runs the Pyro model (for SVI); :meth:`target` is :class:`GLMMTarget`.

    Parameters
    ----------
    glmm : SoftplusGLMM
    orthogonal_fixed : bool
        Give the engines an :class:`OrthogonalFixedTarget` (the fixed effects in the
        basis of the design's QR factor; what NUTS samples) rather than a
        :class:`GLMMTarget`. Draws are of the same sites either way.
    """

    def __init__(self, glmm, orthogonal_fixed: bool = False, centre: str | None = None):
        self.glmm = glmm
        self.orthogonal_fixed = bool(orthogonal_fixed)
        self.centre = centre

    def __repr__(self) -> str:
        return f"BayesianGLMM({self.glmm!r}, orthogonal_fixed={self.orthogonal_fixed})"

    def __call__(self, *args, **kwargs):
        return self.glmm(*args, **kwargs)

    def target(self, data, *, validate=True, seed=None):
        del validate, seed
        if self.orthogonal_fixed:
            return OrthogonalFixedTarget(self.glmm, data, centre=self.centre)
        return GLMMTarget(self.glmm, data)

    def model_kwargs(self, data):
        return data.kwargs()

    def prediction_data(self, X, exposure=None, X_zero=None):
        if not isinstance(X, MixedData) or exposure is not None or X_zero is not None:
            raise ValueError("a GLMM predicts from a MixedData (the estimator builds it)")
        return X

    def _law(self, draws, data):
        eta = draw_eta(draws, data)
        return self.glmm.distribution(eta, draw_params(self.glmm, draws), data)

    def draw_means(self, draws, data):
        return self._law(draws, data).mean

    def draw_predictive(self, draws, data, generator):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._law(draws, data).sample()

    def draw_log_likelihood(self, draws, data):
        return self._law(draws, data).log_prob(data.y)

    def observed(self, data):
        return data.y

    def with_totals(self, totals):
        del totals
        return self


def _prior_median(prior) -> float:
    """The median of a positive scalar prior: its ``icdf`` where it has one, else the
    median of 4,001 draws from a fixed generator (a family's shape prior, e.g. the NB
    concentration's, has no closed-form quantile)."""
    try:
        return float(prior.icdf(prior.mean.new_tensor(0.5)))
    except NotImplementedError:
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)
            draws = prior.sample((4001,)).reshape(4001, -1)[:, 0]
        finally:
            torch.random.set_rng_state(state)
        return float(draws.median())
