"""The posterior of a softplus GLMM as one torch function: :class:`GLMMTarget`, and the
vectorised draws of its linear predictors (:func:`draw_eta`, :func:`draw_parts`).

:class:`~posheads.models.mixed.SoftplusGLMM` is a plain Pyro model, so every engine could
fit it through Pyro's trace-based potential; that costs a trace per evaluation, far more
than the arithmetic of the model. :class:`GLMMTarget` is the same posterior written as
one torch function of a flat vector (the same sites, priors, constraining maps and
non-centred effects as the Pyro model): the Laplace engine differentiates it by autograd,
NUTS takes its potential and gradient with the chain rule written out
(:class:`~posheads.inference.mixed_potential.GLMMPotential`).

Sites (constrained values, in packing order): ``"coef"`` ``(p,)``, each part's
``"{part}_intercept"`` ``()`` and, with a zero-part design (:attr:`MixedData.X_zero`),
``"{part}_coef"`` ``(p_zero,)``, each shape ``()``, and per factor ``k``: ``"{k}_sd"``
``(q,)``, ``"{k}_corr_chol"`` ``(q, q)`` when ``q > 1``, ``"{k}_z"`` ``(G, q)``. A factor
whose :attr:`~posheads.models.mixed.RandomEffect.part` names a zero part adds its effects
to that part's logits instead of ``eta``.
"""

from __future__ import annotations

import pyro
import torch
from torch.distributions import biject_to

from posheads import ops
from posheads.models.mixed import MixedData, part_logits
from posheads.models.target import Target

from .mixed_potential import GLMMPotential

__all__ = ["GLMMTarget", "draw_eta", "draw_factors", "draw_params", "draw_parts"]


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
    over rows, and a zero part's coefficients ``(S, p_zero)`` where there are any."""
    params = {}
    for p in model.family.parts:
        params[f"{p.name}_intercept"] = values[f"{p.name}_intercept"].unsqueeze(-1)
        if f"{p.name}_coef" in values:
            params[f"{p.name}_coef"] = values[f"{p.name}_coef"]
    for s in model.family.shapes:
        params[s.name] = ops.softplus_inverse(values[s.name]).unsqueeze(-1)
    return params


def _effect_terms(values: dict, data: MixedData):
    """``(effect, (S, n) term)`` of each factor: ``(Z_k * u_k[codes_k]).sum(-1)``."""
    for e, lam in zip(data.effects, draw_factors(values, data), strict=True):
        u = values[f"{e.name}_z"] @ lam.transpose(-1, -2)  # (S, G, q)
        yield e, (e.Z * u[..., e.codes, :]).sum(-1)


def draw_eta(values: dict, data: MixedData) -> torch.Tensor:
    """The count part's linear predictor of every row for each draw, shape ``(S, n)``
    (the factors that reach a zero part are left to :func:`draw_parts`)."""
    eta = values["coef"] @ data.X.T
    if data.offset is not None:
        eta = eta + data.offset
    for e, term in _effect_terms(values, data):
        if e.part is None:
            eta = eta + term
    return eta


def draw_parts(values: dict, data: MixedData) -> dict:
    """The logits of each zero part that has group effects, ``{part: (S, n)}``: the
    part's fixed logits plus its factors' terms (a part without effects is left out: it
    takes its fixed logits, :meth:`SoftplusGLMM.distribution`)."""
    out = {}
    for e, term in _effect_terms(values, data):
        if e.part is not None:
            if e.part not in out:
                out[e.part] = part_logits(values[f"{e.part}_intercept"].unsqueeze(-1),
                                          values.get(f"{e.part}_coef"), data.X_zero)
            out[e.part] = out[e.part] + term
    return out


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
        model.check_effects(data.effects)
        self.model, self.data = model, data
        like = data.X.new_zeros(())
        fam = model.family
        # (name, prior, constrained shape); the priors are the Pyro model's own
        sites = [("coef", torch.distributions.Normal(like, model.coef_scale),
                  (data.X.shape[1],))]
        for p in fam.parts:
            sites.append((f"{p.name}_intercept", torch.distributions.Normal(like, 2.0), ()))
            if data.X_zero is not None:
                sites.append((f"{p.name}_coef", torch.distributions.Normal(
                    like, model.coef_scale), (data.X_zero.shape[1],)))
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
        self.work_size = int(data.X.numel() + sum(e.Z.numel() for e in data.effects)
                             + (0 if data.X_zero is None else data.X_zero.numel()))
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
        parts = {k: v[0] for k, v in draw_parts(one, self.data).items()}
        params = {k: v[0] for k, v in draw_params(self.model, one).items()}
        # the targets were checked once, when the target was made: not at every step
        with pyro.validation_enabled(False):
            return self.model.row_log_lik(eta, params, self.data, parts).sum()

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
