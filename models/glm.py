"""Generalised linear models with a softplus link (``posheads.models.glm``).

The mean of the count part is ``exposure * softplus_beta(intercept + X @ coef)``, and the
likelihood is any :class:`~posheads.families.Family` (``"poisson"``,
``"negative_binomial"``, the zero-inflated and hurdle families, or one of your own). A
family's shapes (the NB concentration) are latent sites of their own; each of its parts
(the zero part of the zero-inflated and hurdle families, ``"gate"``) is a second linear
predictor ``gate_intercept + X_zero @ gate_coef`` (``X_zero`` defaults to ``X``). A known
``offset`` adds to the count part's predictor: ``eta = offset + intercept + X @ coef``.

A :class:`SoftplusGLM` has three faces:

* calling it is a plain Pyro model -- latent sites ``"intercept"``, ``"coef"``, the
  family's shapes, ``"gate_intercept"``, ``"gate_coef"`` and the observed site ``"obs"``
  in ``pyro.plate("data")`` -- so ``pyro.infer.Predictive``, Pyro's NUTS, SVI and
  autoguides work on it unchanged;
* :meth:`~SoftplusGLM.layout`, :meth:`~SoftplusGLM.unpack`, :meth:`~SoftplusGLM.log_joint`,
  :meth:`~SoftplusGLM.potential_and_grad` and friends are pure torch functions of one
  flat unconstrained vector ``theta``;
* it implements :class:`~posheads.models.protocol.PosteriorModel`, the protocol through
  which :mod:`posheads.inference` fits it (Newton with closed-form Hessians,
  :mod:`.glm_loss`) and :class:`~posheads.posterior.Posterior` predicts with it.

Priors (every one overridable)
------------------------------
* ``coef ~ Normal(0, coef_scale)`` -- the L2 penalty of the MAP estimate; scikit-learn's
  ``alpha`` is ``coef_scale = 1 / sqrt(alpha * sum(weights))``. ``None``: flat.
* ``intercept ~ Normal(intercept_loc, intercept_scale)`` with ``intercept_loc`` by default
  ``softplus_inverse(sum(w y) / sum(w t))``, the intercept of the intercept-only fit;
  ``intercept_scale=None``: flat.
* each shape: the family's default prior (for the NB concentration ``1 / sqrt(r) ~
  HalfNormal(1)``, see :func:`posheads.distributions.half_normal_inverse_sqrt`), ``"flat"``
  for maximum likelihood, or any distribution over the positive reals
  (``shape_priors={"concentration": ...}``; ``concentration_prior`` is a shortcut).
* ``{part}_intercept ~ Normal(0, intercept_scale)``, ``{part}_coef ~ Normal(0, gate_coef_scale)``.

In ``theta`` shapes are mapped to the real line by softplus. The default priors have the
support :func:`posheads.constraints.softplus_positive`, so Pyro's autoguides and NUTS map
them by softplus too; a prior you pass keeps its own support there (``exp`` for plain
``constraints.positive``).
Row weights scale each log-likelihood term (``poutine.scale``; rows of weight 0 are masked).
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from posheads import distributions as pd
from posheads import families, ops
from posheads.constraints import softplus_positive
from posheads.transforms import SoftplusTransform

from .data import GLMData, check_glm_data, mean_offset
from .design import Design
from .glm_target import GLMTarget

__all__ = ["LIKELIHOODS", "GLMData", "GLMTarget", "SoftplusGLM"]

#: Names of the families registered when this module was imported (use
#: :func:`posheads.families.available_families` for the current ones).
LIKELIHOODS = tuple(f.name for f in families.available_families())


def _check_scale(name, value):
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{name} must be a number > 0 or None, got {value!r}")


def _check_shape_prior(name, prior):
    if not (prior is None or prior == "flat"
            or isinstance(prior, torch.distributions.Distribution)):
        raise ValueError(f"{name} must be None, 'flat' or a Distribution, got {prior!r}")


class SoftplusGLM:
    """A softplus-link GLM of any family: a Pyro model plus fast flat-vector functions.

    Parameters
    ----------
    likelihood : str or Family
        The family (``posheads.families.get_family`` resolves names and aliases).
    beta, threshold : float
        Softness and linear-branch threshold of the softplus link (:mod:`posheads.ops`).
    fit_intercept : bool
        Include ``intercept`` (and an intercept for each part).
    coef_scale : float or None
        Prior sd of the coefficients; ``None`` is flat (no penalty).
    intercept_loc : float or None
        Prior mean of the intercept; ``None`` is ``softplus_inverse`` of the weighted mean
        rate of the data (0 when there are no counts, as for prediction).
    intercept_scale : float or None
        Prior sd of the intercept and of the parts' intercepts; ``None`` is flat.
    concentration_prior : None, "flat" or Distribution
        Prior of the shape ``"concentration"`` (same as ``shape_priors={"concentration":
        ...}``).
    gate_coef_scale : float or None
        Prior sd of the parts' coefficients; ``None`` is flat.
    shape_priors : dict, optional
        Prior of each shape by name: ``None`` (the family's default), ``"flat"`` or a
        distribution whose ``log_prob`` is evaluated at the (positive) shape.

    Examples
    --------
    >>> import torch
    >>> from pyro.infer import Predictive
    >>> glm = SoftplusGLM("poisson")
    >>> X = torch.randn(20, 3, dtype=torch.float64)
    >>> draws = Predictive(glm, num_samples=4)(X)
    >>> draws["obs"].shape
    torch.Size([4, 20])
    """

    def __init__(self, likelihood="poisson", *, beta=1.0, threshold=20.0, fit_intercept=True,
                 coef_scale=1.0, intercept_loc=None, intercept_scale=5.0,
                 concentration_prior=None, gate_coef_scale=1.0, shape_priors=None):
        self.family = families.get_family(likelihood)
        ops.check_link_args(beta, threshold)
        for name, value in [("coef_scale", coef_scale), ("intercept_scale", intercept_scale),
                            ("gate_coef_scale", gate_coef_scale)]:
            _check_scale(name, value)
        _check_shape_prior("concentration_prior", concentration_prior)
        shape_priors = dict(shape_priors or {})
        for name, prior in shape_priors.items():
            self.family.shape(name)  # an unknown name raises
            _check_shape_prior(f"shape_priors[{name!r}]", prior)
        if concentration_prior is not None and "concentration" in self.family.shape_names:
            shape_priors.setdefault("concentration", concentration_prior)
        self.beta, self.threshold = float(beta), float(threshold)
        self.fit_intercept = bool(fit_intercept)
        self.coef_scale, self.intercept_scale = coef_scale, intercept_scale
        self.intercept_loc, self.gate_coef_scale = intercept_loc, gate_coef_scale
        self.concentration_prior = concentration_prior
        self.shape_priors = shape_priors
        self._to_shape = SoftplusTransform()
        self._loss_cache = None

    @property
    def likelihood(self) -> str:
        """The family's name."""
        return self.family.name

    @property
    def has_concentration(self) -> bool:
        return "concentration" in self.family.shape_names

    @property
    def has_gate(self) -> bool:
        return bool(self.family.parts)

    def __repr__(self) -> str:
        return (f"SoftplusGLM({self.likelihood!r}, beta={self.beta}, "
                f"fit_intercept={self.fit_intercept}, coef_scale={self.coef_scale})")

    # ------------------------------------------------------------------ priors
    def _normal(self, loc, scale, shape, like):
        if scale is None:
            return pd.flat(event_shape=shape)
        loc = torch.as_tensor(loc, dtype=like.dtype, device=like.device)
        d = dist.Normal(loc, torch.as_tensor(float(scale), dtype=like.dtype, device=like.device))
        return d.expand(shape).to_event(len(shape)) if shape else d

    def intercept_location(self, data: GLMData) -> torch.Tensor:
        """The intercept's prior mean: ``intercept_loc``, or ``softplus_inverse`` of the
        weighted mean rate of ``data`` less its mean offset (0 without targets)."""
        like = data.X
        if self.intercept_loc is not None:
            return torch.as_tensor(float(self.intercept_loc), dtype=like.dtype, device=like.device)
        if data.y is None:
            return torch.zeros((), dtype=like.dtype, device=like.device)
        rate = families.weighted_mean_rate(data.y.to(like.dtype), data.exposure, data.weights)
        return ops.softplus_inverse(rate, self.beta, self.threshold) - mean_offset(data)

    def _shape_prior(self, shape, like):
        prior = self.shape_priors.get(shape.name)
        if prior is None:
            return shape.prior(like)
        if isinstance(prior, str):
            return pd.flat(softplus_positive())
        return prior

    def priors(self, data: GLMData, *, intercept_loc=None) -> dict:
        """The prior distribution of every latent site, for ``data``'s dtype and device.

        Parameters
        ----------
        data : GLMData
        intercept_loc : Tensor, optional
            The intercept's prior mean when already computed from ``data``.

        Returns
        -------
        dict of str to Distribution
            In :meth:`layout` order.
        """
        X, like = data.X, data.X
        out = {}
        if self.fit_intercept:
            loc = self.intercept_location(data) if intercept_loc is None else intercept_loc
            out["intercept"] = self._normal(loc, self.intercept_scale, (), like)
        out["coef"] = self._normal(0.0, self.coef_scale, (X.shape[1],), like)
        for shape in self.family.shapes:
            out[shape.name] = self._shape_prior(shape, like)
        q = (X if data.X_zero is None else data.X_zero).shape[1]
        for part in self.family.parts:
            if self.fit_intercept:
                out[f"{part.name}_intercept"] = self._normal(0.0, self.intercept_scale, (), like)
            out[f"{part.name}_coef"] = self._normal(0.0, self.gate_coef_scale, (q,), like)
        return out

    # -------------------------------------------------------------- Pyro model
    def __call__(self, X, y=None, *, exposure=None, weights=None, X_zero=None,
                 offset=None, subsample_size=None):
        """Run the model: sample the latent sites and observe (or sample) ``"obs"``.

        Parameters
        ----------
        X : Tensor, shape ``(n, p)``
        y : Tensor, shape ``(n,)``, optional
            Observed counts; sampled when ``None``.
        exposure, weights, offset : Tensor, shape ``(n,)``, optional
        X_zero : Tensor, shape ``(n, q)``, optional
        subsample_size : int, optional
            Rows per mini-batch of ``pyro.plate("data")``.

        Returns
        -------
        Tensor, shape ``(n,)`` or ``(subsample_size,)``
            The mean of ``"obs"`` for the rows used.
        """
        data = GLMData(X=X, y=y, exposure=exposure, weights=weights, X_zero=X_zero,
                       offset=offset)
        values = {name: pyro.sample(name, prior) for name, prior in self.priors(data).items()}
        n = X.shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size, device=X.device) as idx:
            rows = _subset(data, idx, subsample_size is not None and subsample_size < n)
            d = self.distribution(values, rows.X, rows.exposure, rows.X_zero,
                                  offset=rows.offset)
            with _weighted(rows.weights):
                pyro.sample("obs", d, obs=rows.y)
        return d.mean

    # ------------------------------------------------------------ distribution
    def predictors(self, values: dict, X, X_zero=None, offset=None) -> tuple:
        """Linear predictors at constrained site values.

        ``offset`` (shape ``(n,)``) adds to the count part's predictor only.

        Returns
        -------
        (Tensor, dict)
            ``eta`` of shape ``(n,)`` or ``(S, n)``, and the logits of each part by name.
        """
        eta = _linear(X, values.get("intercept"), values["coef"])
        if offset is not None:
            eta = eta + offset
        Z = X if X_zero is None else X_zero
        parts = {p.name: _linear(Z, values.get(f"{p.name}_intercept"), values[f"{p.name}_coef"])
                 for p in self.family.parts}
        return eta, parts

    def distribution(self, values: dict, X, exposure=None, X_zero=None, validate_args=None,
                     offset=None):
        """The distribution of ``"obs"`` given constrained site values.

        Parameters
        ----------
        values : dict of str to Tensor
            Site values, each with an optional leading draw dimension ``S``.
        X : Tensor, shape ``(n, p)``
        exposure : Tensor, shape ``(n,)``, optional
        X_zero : Tensor, shape ``(n, q)``, optional
        validate_args : bool, optional
        offset : Tensor, shape ``(n,)``, optional

        Returns
        -------
        Distribution with ``batch_shape`` ``(n,)`` or ``(S, n)``
        """
        eta, parts = self.predictors(values, X, X_zero, offset)
        shapes = {name: _per_draw(values[name], eta) for name in self.family.shape_names}
        return self.predictor_distribution(eta, shapes, parts, exposure, validate_args)

    def predictor_distribution(self, eta, shapes=None, parts=None, exposure=None,
                               validate_args=None):
        """The distribution of ``"obs"`` given the linear predictors.

        Parameters
        ----------
        eta : Tensor, shape ``(..., n)``
            Linear predictor of the count part.
        shapes : dict of str to Tensor
            The family's shapes, broadcastable with ``eta``.
        parts : dict of str to Tensor
            Logits of each part, shape ``(..., n)``.
        exposure : Tensor, shape ``(n,)``, optional
        validate_args : bool, optional

        Returns
        -------
        Distribution
        """
        return self.family.build(eta, shapes=shapes, parts=parts, beta=self.beta,
                                 threshold=self.threshold, exposure=exposure,
                                 validate_args=validate_args)

    # -------------------------------------------------------- flat parameters
    def layout(self, X, X_zero=None) -> list[tuple[str, torch.Size]]:
        """Latent sites and their shapes, in the packing order of ``theta``.

        Parameters
        ----------
        X : Tensor, shape ``(n, p)``
        X_zero : Tensor, shape ``(n, q)``, optional

        Returns
        -------
        list of (str, torch.Size)
        """
        out = []
        if self.fit_intercept:
            out.append(("intercept", torch.Size()))
        out.append(("coef", torch.Size([X.shape[1]])))
        out += [(name, torch.Size()) for name in self.family.shape_names]
        q = (X if X_zero is None else X_zero).shape[1]
        for part in self.family.parts:
            if self.fit_intercept:
                out.append((f"{part.name}_intercept", torch.Size()))
            out.append((f"{part.name}_coef", torch.Size([q])))
        return out

    def split(self, theta, layout) -> dict:
        """Unconstrained pieces of ``theta`` (shape ``(..., d)``), one per site."""
        out, i = {}, 0
        for name, shape in layout:
            k = shape.numel()
            piece = theta[..., i:i + k]
            out[name] = piece.reshape(theta.shape[:-1] + shape)
            i += k
        return out

    def unpack(self, theta, layout) -> dict:
        """Constrained site values from ``theta`` of shape ``(d,)`` or ``(S, d)``."""
        out = self.split(theta, layout)
        for name in self.family.shape_names:
            out[name] = self._to_shape(out[name])
        return out

    def pack(self, values: dict, layout) -> torch.Tensor:
        """Inverse of :meth:`unpack`: ``theta`` of shape ``(d,)`` or ``(S, d)``."""
        pieces = []
        shapes = set(self.family.shape_names)
        for name, shape in layout:
            v = values[name]
            if name in shapes:
                v = self._to_shape.inv(v)
            pieces.append(v.reshape(*v.shape[:v.dim() - len(shape)], shape.numel()))
        return torch.cat(pieces, dim=-1)

    # ------------------------------------------------------------ densities
    def log_prior(self, values: dict, data: GLMData, priors: dict | None = None):
        """Sum of the prior log densities at constrained ``values`` (no Jacobian).

        ``priors`` may pass :meth:`priors` of ``data`` when already built.
        """
        total = 0.0
        for name, prior in (self.priors(data) if priors is None else priors).items():
            if not isinstance(prior, dist.ImproperUniform):  # a flat prior's density is 1
                total = total + prior.log_prob(values[name])
        return total

    def log_jacobian(self, raw: dict, values: dict):
        """``log |d constrained / d theta|`` of the shapes (softplus), at raw and
        constrained values."""
        total = 0.0
        for name in self.family.shape_names:
            total = total + self._to_shape.log_abs_det_jacobian(raw[name], values[name])
        return total

    def log_joint(self, theta, data: GLMData, *, jacobian: bool = True) -> torch.Tensor:
        """Log prior + weighted log-likelihood (+ log-Jacobian) at unconstrained ``theta``.

        Parameters
        ----------
        theta : Tensor, shape ``(d,)``
        data : GLMData
        jacobian : bool
            Add ``log |d constrained / d theta|`` (the density of ``theta`` itself); without
            it the maximum is the MAP of the constrained parameters.

        Returns
        -------
        Tensor, shape ``()``
            Differentiable in ``theta`` by autograd.
        """
        data = check_glm_data(data, validate=False)
        layout = self.layout(data.X, data.X_zero)
        raw = self.split(theta, layout)
        values = self.unpack(theta, layout)
        ll = self.distribution(values, data.X, data.exposure, data.X_zero,
                               validate_args=False, offset=data.offset).log_prob(data.y)
        ll = ll.sum() if data.weights is None else torch.dot(ll, data.weights)
        lp = self.log_prior(values, data) + ll
        return lp + self.log_jacobian(raw, values) if jacobian else lp

    def potential_and_grad(self, theta, data: GLMData):
        """``U = -log_joint(theta)`` and ``dU / dtheta`` (closed form for Poisson and NB).

        Parameters
        ----------
        theta : Tensor, shape ``(d,)``
        data : GLMData
            Cached by identity: pass the same object on repeated calls.

        Returns
        -------
        (Tensor of shape (), Tensor of shape (d,))
        """
        cache = self._loss_cache
        if cache is None or cache[0] is not data:
            from .glm_loss import GLMLoss

            cache = (data, GLMLoss(self, data, jacobian=True, normalize=False))
            self._loss_cache = cache
        return cache[1].potential_and_grad(theta)

    def pointwise_log_likelihood(self, values: dict, data: GLMData) -> torch.Tensor:
        """Unweighted log-likelihood of each row under each draw.

        Parameters
        ----------
        values : dict of str to Tensor
            Constrained draws with a leading dimension ``S``.
        data : GLMData

        Returns
        -------
        Tensor, shape ``(S, n)``
        """
        data = check_glm_data(data, validate=False)
        d = self.distribution(_batched(values), data.X, data.exposure, data.X_zero,
                              validate_args=False, offset=data.offset)
        return d.log_prob(data.y)

    def predict_mean(self, values: dict, X, exposure=None, X_zero=None,
                     offset=None) -> torch.Tensor:
        """Mean count of each row under each draw, shape ``(S, n)``."""
        return self.distribution(_batched(values), X, exposure, X_zero, offset=offset).mean

    def sample_obs(self, values: dict, X, exposure=None, X_zero=None, generator=None,
                   offset=None):
        """One count draw per row and per parameter draw, shape ``(S, n)``.

        Parameters
        ----------
        values : dict of str to Tensor
            Constrained draws with a leading dimension ``S``.
        X, exposure, X_zero
            As in :meth:`distribution`.
        generator : torch.Generator, optional
            Seeds the draws (torch's global generator when ``None``).
        offset : Tensor, shape ``(n,)``, optional

        Returns
        -------
        Tensor, shape ``(S, n)``
            Integer-valued floats.
        """
        d = self.distribution(_batched(values), X, exposure, X_zero, offset=offset)
        if generator is None:
            return d.sample()
        seed = int(torch.randint(2**62, (1,), generator=generator).item())
        devices = [X.device] if X.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return d.sample()

    # ------------------------------------------------- the PosteriorModel protocol
    def target(self, data, *, validate=True, seed=None) -> GLMTarget:
        """The posterior given ``data`` (a :class:`GLMData` or a dict of its fields)."""
        del seed  # nothing random: the start is the intercept-only fit
        return GLMTarget(self, check_glm_data(_as_data(data), validate=validate))

    def model_kwargs(self, data) -> dict:
        data = _as_data(data)
        return {k: getattr(data, k)
                for k in ("X", "y", "exposure", "weights", "X_zero", "offset")}

    def prediction_data(self, X, exposure=None, X_zero=None, offset=None) -> GLMData:
        return GLMData(X=X, exposure=exposure, X_zero=X_zero, offset=offset)

    def draw_distribution(self, draws, data, validate_args=False):
        """The distribution of each row's target under each draw: ``batch_shape (S, n)``.

        The predictive queries (probabilities of each count, quantiles, log scores) average
        this over the draws.
        """
        data = _as_data(data)
        return self.distribution(_batched(draws), data.X, data.exposure, data.X_zero,
                                 validate_args=validate_args, offset=data.offset)

    def draw_means(self, draws, data):
        data = _as_data(data)
        return self.predict_mean(draws, data.X, data.exposure, data.X_zero, data.offset)

    def draw_predictive(self, draws, data, generator):
        data = _as_data(data)
        return self.sample_obs(draws, data.X, data.exposure, data.X_zero, generator=generator,
                               offset=data.offset)

    def draw_log_likelihood(self, draws, data):
        return self.pointwise_log_likelihood(draws, _as_data(data))

    def observed(self, data):
        return _as_data(data).y

    def with_totals(self, totals: dict) -> SoftplusGLM:
        """This model with the default intercept prior mean taken from ``totals`` of all
        rows (``"y"``, ``"exposure"``: weighted sums; ``"exposure_unweighted"``) rather
        than from the data it is called with, which on a mini-batch or a shard would
        change from call to call. Unchanged when that prior does not depend on the data."""
        if self.intercept_loc is not None or not self.fit_intercept \
                or self.intercept_scale is None:
            return self
        import copy

        rate = (totals["y"] / totals["exposure"] if totals["y"] > 0
                else 0.5 / totals["exposure_unweighted"])
        out = copy.copy(self)
        out.intercept_loc = float(ops.softplus_inverse(
            torch.tensor(rate, dtype=torch.float64), self.beta, self.threshold))
        out._loss_cache = None
        return out


# ------------------------------------------------------------------ helpers
def _as_data(data) -> GLMData:
    """A :class:`GLMData` from itself or from a dict of its fields."""
    return GLMData(**data) if isinstance(data, dict) else data


def _linear(X, intercept, coef):
    """``intercept + X @ coef`` for ``coef`` of shape ``(p,)`` or ``(S, p)``."""
    if coef.dim() == 1:
        eta = X @ coef
        return eta if intercept is None else eta + intercept
    eta = (X @ coef.t()).t()
    return eta if intercept is None else eta + intercept[..., None]


def _per_draw(value, eta):
    """A per-draw scalar ``(S,)`` as ``(S, 1)`` so it broadcasts against ``(S, n)``."""
    return value[..., None] if eta.dim() == 2 and value.dim() == 1 else value


def _batched(values):
    """Draws with a leading dimension: a single draw (``coef`` 1-D) gets ``S = 1``."""
    if values["coef"].dim() >= 2:
        return values
    return {k: v.unsqueeze(0) for k, v in values.items()}


def _subset(data, idx, subsample):
    if not subsample:
        return data

    def take(v):
        return None if v is None else v.index_select(0, idx)

    X = Design(data.X).rows(idx) if data.X.layout != torch.strided else take(data.X)
    Z = data.X_zero
    if Z is not None:
        Z = Design(Z).rows(idx) if Z.layout != torch.strided else take(Z)
    return GLMData(X=X, y=take(data.y), exposure=take(data.exposure),
                   weights=take(data.weights), X_zero=Z, offset=take(data.offset))


@contextlib.contextmanager
def _weighted(weights):
    """Scale the log-likelihood of each row by its weight; rows of weight 0 are masked."""
    if weights is None:
        yield
        return
    positive = weights > 0
    # poutine.scale insists on positive scales: zero-weight rows are masked instead.
    scale = torch.where(positive, weights, torch.ones_like(weights))
    with poutine.mask(mask=positive), poutine.scale(scale=scale):
        yield
