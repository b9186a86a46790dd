"""Generalised linear mixed models with a softplus link (``posheads.models.mixed``).

The count part's linear predictor is

    eta = offset + X @ coef + sum_k (Z_k * u_k[codes_k]).sum(-1),

where, for each grouping factor ``k`` with ``G_k`` levels and ``q_k`` random terms (an
intercept and slopes: the columns of ``Z_k``), the group effects are
``u_k[g] ~ N(0, Sigma_k)`` independently over the levels ``g``. The covariance is held by
its Cholesky factor ``Lambda_k = diag(sd_k) @ L_k`` (``L_k`` the Cholesky factor of the
correlation matrix), and the effects are non-centred: ``u_k = z_k @ Lambda_k.T`` with
``z_k ~ N(0, I)``. Factors may be crossed or nested (nesting is expressed by coding the
inner factor's levels uniquely, e.g. ``"site:patient"``). The likelihood is any
:class:`~posheads.families.Family`: the family builds the distribution; each of its shapes
is a parameter shared by all rows and each of its parts (a zero part's logits) has an
intercept of its own, and, given a zero-part design ``X_zero`` (:attr:`MixedData.X_zero`),
coefficients ``{part}_coef`` on its columns: the part's fixed logits are
``{part}_intercept + X_zero @ {part}_coef`` (:func:`part_logits`). A grouping factor may
reach a part instead of ``eta`` (:attr:`RandomEffect.part`, glmmTMB's
``ziformula = ~ x + (1 | g)``): the part's logits then add
``sum_k (Z_k * u_k[codes_k]).sum(-1)`` over those factors, whose effects are independent
of the count part's.

A :class:`SoftplusGLMM` has two faces:

* calling it is a plain Pyro model (sites ``"coef"``, the family's shapes,
  ``"{part}_intercept"``, ``"{part}_coef"`` with a zero-part design, per factor
  ``"{k}_sd"``, ``"{k}_corr_chol"`` when ``q_k > 1`` and ``"{k}_z"`` in
  ``pyro.plate("{k}_groups")``, and ``"obs"`` in ``pyro.plate("data")``),
  so :mod:`posheads.inference`'s NUTS, SVI and Laplace fit it through its Pyro face;
* :meth:`~SoftplusGLMM.layout`, :meth:`~SoftplusGLMM.unpack`, :meth:`~SoftplusGLMM.factors`,
  :meth:`~SoftplusGLMM.row_log_lik` are pure torch functions of a flat vector of the
  fixed parameters, on which the maximum-likelihood engine of
  :mod:`posheads.inference.mixed_ml` integrates the effects out.

In the flat vector the standard deviations are on the log scale (``"{k}_log_sd"``) and the
correlation Cholesky factor is unconstrained (``"{k}_corr"``, ``q (q - 1) / 2`` values, see
:func:`correlation_cholesky`); shapes are mapped to the real line by softplus, parts'
intercepts are logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from posheads import families, ops

__all__ = ["MixedData", "RandomEffect", "SoftplusGLMM", "correlation_cholesky", "part_logits"]


@dataclass(frozen=True)
class RandomEffect:
    """One grouping factor and its random terms.

    Parameters
    ----------
    name : str
        The factor's name (a column of the grouping frame); names its sites.
    terms : tuple of str
        The names of the random terms, ``"1"`` for the intercept.
    Z : Tensor, shape ``(n, q)``
        The random-effects design of each row (a column of ones for the intercept).
    codes : LongTensor, shape ``(n,)``
        The level of each row, ``0 <= codes < n_groups``.
    n_groups : int
        Number of levels ``G``.
    part : str, optional
        The family's part (e.g. ``"gate"``, the zero part's logits) whose linear
        predictor the effects enter; ``None`` (default) for the count predictor ``eta``.
    """

    name: str
    terms: tuple
    Z: torch.Tensor
    codes: torch.Tensor
    n_groups: int
    part: str | None = None

    @property
    def q(self) -> int:
        """Number of random terms."""
        return len(self.terms)


@dataclass(frozen=True)
class MixedData:
    """The data of a :class:`SoftplusGLMM`.

    Parameters
    ----------
    X : Tensor, shape ``(n, p)``
        Fixed-effects design (an intercept is a column of ones).
    effects : tuple of RandomEffect
        One per grouping factor.
    y : Tensor, shape ``(n,)``, optional
        Targets (``None`` to predict).
    exposure : Tensor, shape ``(n,)``, optional
    offset : Tensor, shape ``(n,)``, optional
        Added to ``eta``.
    X_zero : Tensor, shape ``(n, p_zero)``, optional
        The zero part's covariates (without an intercept column: every part has its
        intercept); ``None`` for an intercept-only zero part.
    """

    X: torch.Tensor
    effects: tuple
    y: torch.Tensor | None = None
    exposure: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    X_zero: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Number of rows."""
        return self.X.shape[0]

    def kwargs(self) -> dict:
        """Keyword arguments of the Pyro model (:meth:`SoftplusGLMM.__call__`)."""
        return {"data": self}


def correlation_cholesky(raw: torch.Tensor, q: int) -> torch.Tensor:
    """The Cholesky factor of a ``q x q`` correlation matrix from unconstrained values.

    Row ``i`` of a unit lower-triangular matrix holding ``raw`` below the diagonal is
    divided by its norm, so every row of the result has unit length (a correlation
    matrix's Cholesky factor) and every such factor with a positive diagonal is reached.
    For ``q = 2`` the correlation is ``raw / sqrt(1 + raw**2)``.

    Parameters
    ----------
    raw : Tensor, shape ``(q (q - 1) / 2,)``
    q : int

    Returns
    -------
    Tensor, shape ``(q, q)``
    """
    M = torch.eye(q, dtype=raw.dtype, device=raw.device)
    if q > 1:
        rows, cols = torch.tril_indices(q, q, offset=-1, device=raw.device)
        M = M.index_put((rows, cols), raw)
    return M / M.norm(dim=1, keepdim=True)


def part_logits(intercept: torch.Tensor, coef, X_zero) -> torch.Tensor:
    """A zero part's fixed logits, ``intercept + coef @ X_zero.T``.

    Parameters
    ----------
    intercept : Tensor, shape ``batch_shape`` (or ``batch_shape + (1,)`` to broadcast
        over rows)
    coef : Tensor, shape ``batch_shape + (p_zero,)``, or None
    X_zero : Tensor, shape ``(n, p_zero)``, or None

    Returns
    -------
    Tensor
        ``intercept`` itself without a design, else of shape ``batch_shape + (n,)``.
    """
    if coef is None or X_zero is None:
        return intercept
    return intercept + coef @ X_zero.T


def _cholesky_to_raw(L: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`correlation_cholesky`: divide each row by its diagonal."""
    q = L.shape[0]
    rows, cols = torch.tril_indices(q, q, offset=-1, device=L.device)
    return (L / L.diagonal().unsqueeze(1))[rows, cols]


class SoftplusGLMM:
    """A softplus-link GLMM of any family (see the module docstring).

    Parameters
    ----------
    family : str or Family
    beta, threshold : float
        The softplus link ``softplus_beta``.
    coef_scale : float
        Prior ``coef ~ Normal(0, coef_scale)``, and of a zero part's coefficients
        ``{part}_coef`` (Bayesian engines only).
    sd_scale : float
        Prior ``sd ~ HalfNormal(sd_scale)`` of every random term (Bayesian engines only).
    lkj_concentration : float
        Prior ``L ~ LKJCholesky(q, lkj_concentration)`` of each correlation factor.

    Examples
    --------
    >>> m = SoftplusGLMM("poisson")
    >>> m.family.name
    'poisson'
    """

    def __init__(self, family, *, beta=1.0, threshold=20.0, coef_scale=10.0, sd_scale=2.5,
                 lkj_concentration=1.0):
        self.family = families.get_family(family)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.coef_scale = float(coef_scale)
        self.sd_scale = float(sd_scale)
        self.lkj_concentration = float(lkj_concentration)

    def __repr__(self) -> str:
        return f"SoftplusGLMM({self.family.name!r})"

    # ------------------------------------------------------------ flat parameters
    def check_effects(self, effects) -> None:
        """``ValueError`` naming a factor whose :attr:`RandomEffect.part` the family lacks."""
        parts = [p.name for p in self.family.parts]
        for e in effects:
            if e.part is not None and e.part not in parts:
                raise ValueError(
                    f"random-effect term {e.name!r} reaches the part {e.part!r}, but the "
                    f"family {self.family.name!r} has "
                    + (f"only the parts {parts}" if parts else "no zero part"))

    def layout(self, data: MixedData) -> dict:
        """Name -> shape of each block of the flat fixed-parameter vector, in order."""
        self.check_effects(data.effects)
        out = {"coef": (data.X.shape[1],)}
        for p in self.family.parts:
            out[f"{p.name}_intercept"] = ()
            if data.X_zero is not None:
                out[f"{p.name}_coef"] = (data.X_zero.shape[1],)
        for s in self.family.shapes:
            out[s.name] = ()
        for e in data.effects:
            out[f"{e.name}_log_sd"] = (e.q,)
            if e.q > 1:
                out[f"{e.name}_corr"] = (e.q * (e.q - 1) // 2,)
        return out

    def unpack(self, theta: torch.Tensor, data: MixedData) -> dict:
        """Split the flat vector ``theta`` into its named blocks (views)."""
        out, i = {}, 0
        for name, shape in self.layout(data).items():
            size = int(torch.Size(shape).numel())
            out[name] = theta[i:i + size].reshape(shape)
            i += size
        return out

    def pack(self, params: dict, data: MixedData) -> torch.Tensor:
        """The flat vector of named blocks (the inverse of :meth:`unpack`)."""
        return torch.cat([torch.as_tensor(params[k]).reshape(-1)
                          for k in self.layout(data)])

    def factors(self, params: dict, data: MixedData) -> list:
        """``Lambda_k = diag(sd_k) @ L_k`` of each factor, shapes ``(q_k, q_k)``."""
        out = []
        for e in data.effects:
            sd = params[f"{e.name}_log_sd"].exp()
            raw = params.get(f"{e.name}_corr", sd[:0])
            out.append(sd.unsqueeze(1) * correlation_cholesky(raw, e.q))
        return out

    def fixed_eta(self, params: dict, data: MixedData) -> torch.Tensor:
        """``offset + X @ coef``, shape ``(n,)``."""
        eta = data.X @ params["coef"]
        return eta if data.offset is None else eta + data.offset

    def part_logits(self, params: dict, data: MixedData) -> dict:
        """Each part's fixed logits, ``{part: intercept + X_zero @ coef}`` (the intercept
        alone without a zero-part design; see :func:`part_logits`)."""
        return {p.name: part_logits(params[f"{p.name}_intercept"],
                                    params.get(f"{p.name}_coef"), data.X_zero)
                for p in self.family.parts}

    def distribution(self, eta: torch.Tensor, params: dict, data: MixedData, parts=None):
        """The family's distribution at ``eta`` (any batch shape ending in ``n``).

        ``parts`` maps a part's name to its per-row logits (broadcasting with ``eta``);
        a part it leaves out takes its fixed logits (:meth:`part_logits`).
        """
        shapes = {s.name: ops.softplus(params[s.name])
                  for s in self.family.shapes}
        logits = self.part_logits(params, data)
        logits.update(parts or {})
        return self.family.build(eta, shapes=shapes, parts=logits, beta=self.beta,
                                 threshold=self.threshold, exposure=data.exposure)

    def row_log_lik(self, eta: torch.Tensor, params: dict, data: MixedData,
                    parts=None) -> torch.Tensor:
        """``log p(y_i | eta_i)`` of each row, the batch shape of ``eta`` (``parts`` as
        in :meth:`distribution`)."""
        return self.distribution(eta, params, data, parts).log_prob(data.y)

    # ------------------------------------------------------------ Pyro face
    def __call__(self, data: MixedData):
        """The Pyro model (non-centred group effects); returns ``eta``, shape ``(n,)``."""
        X = data.X
        like = X.new_zeros(())
        coef = pyro.sample("coef", dist.Normal(like, self.coef_scale)
                           .expand([X.shape[1]]).to_event(1))
        params = {"coef": coef}
        for p in self.family.parts:
            params[f"{p.name}_intercept"] = pyro.sample(f"{p.name}_intercept",
                                                        dist.Normal(like, 2.0))
            if data.X_zero is not None:
                params[f"{p.name}_coef"] = pyro.sample(
                    f"{p.name}_coef", dist.Normal(like, self.coef_scale)
                    .expand([data.X_zero.shape[1]]).to_event(1))
        for s in self.family.shapes:
            r = pyro.sample(s.name, s.prior(like))
            # the flat layout holds shapes before softplus
            params[s.name] = ops.softplus_inverse(r)
        eta = self.fixed_eta(params, data)
        self.check_effects(data.effects)
        fixed_parts, parts = self.part_logits(params, data), {}
        for e in data.effects:
            sd = pyro.sample(f"{e.name}_sd", dist.HalfNormal(like + self.sd_scale)
                             .expand([e.q]).to_event(1))
            lam = torch.diag_embed(sd)
            if e.q > 1:
                L = pyro.sample(f"{e.name}_corr_chol",
                                dist.LKJCholesky(e.q, like + self.lkj_concentration))
                lam = sd.unsqueeze(-1) * L
            with pyro.plate(f"{e.name}_groups", e.n_groups):
                z = pyro.sample(f"{e.name}_z", dist.Normal(like, 1.0).expand([e.q])
                                .to_event(1))
            u = z @ lam.transpose(-1, -2)
            term = (e.Z * u[..., e.codes, :]).sum(-1)
            if e.part is None:
                eta = eta + term
            else:
                parts[e.part] = parts.get(e.part, fixed_parts[e.part]) + term
        with pyro.plate("data", data.n):
            pyro.sample("obs", self.distribution(eta, params, data, parts), obs=data.y)
        return eta
