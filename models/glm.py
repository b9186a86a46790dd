"""Generalised linear models of counts with a softplus link (``posheads.models.glm``).

The mean of the count part is ``exposure * softplus_beta(intercept + X @ coef)``. Six
likelihoods: ``"poisson"``, ``"negative_binomial"`` (NB2, concentration estimated),
``"zero_inflated_poisson"``, ``"zero_inflated_negative_binomial"``, ``"hurdle_poisson"``
and ``"hurdle_negative_binomial"``; the last four have a zero part with logits
``gate_intercept + X_zero @ gate_coef`` (``X_zero`` defaults to ``X``).

A :class:`SoftplusGLM` has two faces:

* calling it is a plain Pyro model -- latent sites ``"intercept"``, ``"coef"``,
  ``"concentration"``, ``"gate_intercept"``, ``"gate_coef"`` and the observed site
  ``"obs"`` in ``pyro.plate("data")`` -- so ``pyro.infer.Predictive``, Pyro's NUTS,
  SVI and autoguides work on it unchanged;
* :meth:`~SoftplusGLM.layout`, :meth:`~SoftplusGLM.unpack`, :meth:`~SoftplusGLM.log_joint`,
  :meth:`~SoftplusGLM.potential_and_grad` and friends are pure torch functions of one
  flat unconstrained vector ``theta``, for the engines of :mod:`posheads.inference`.

Priors (every one overridable)
------------------------------
* ``coef ~ Normal(0, coef_scale)`` -- the L2 penalty of the MAP estimate; scikit-learn's
  ``alpha`` is ``coef_scale = 1 / sqrt(alpha * sum(weights))``. ``None``: flat.
* ``intercept ~ Normal(intercept_loc, intercept_scale)`` with ``intercept_loc`` by default
  ``softplus_inverse(sum(w y) / sum(w t))``, the intercept of the intercept-only fit;
  ``intercept_scale=None``: flat.
* ``concentration``: ``1 / sqrt(r) ~ HalfNormal(1)`` (an inverse gamma, see
  :mod:`posheads.models._priors`): weakly informative, zero density at ``r -> 0`` where
  the NB likelihood has a ridge, heavy tail towards the Poisson limit ``r -> inf``.
  ``"flat"`` gives maximum likelihood; any distribution over ``r > 0`` may be passed.
* ``gate_intercept ~ Normal(0, intercept_scale)``, ``gate_coef ~ Normal(0, gate_coef_scale)``.

Positive sites are mapped to the real line by softplus (support
:func:`posheads.constraints.softplus_positive`), in the Pyro model and in ``theta`` alike.
Row weights scale each log-likelihood term (``poutine.scale``; rows of weight 0 are masked).
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from posheads import distributions as pd
from posheads import ops
from posheads.transforms import SoftplusTransform

from ._data import GLMData, check_glm_data, weighted_mean_rate
from ._priors import flat, half_normal_inverse_sqrt

__all__ = ["LIKELIHOODS", "GLMData", "SoftplusGLM"]

LIKELIHOODS = (
    "poisson",
    "negative_binomial",
    "zero_inflated_poisson",
    "zero_inflated_negative_binomial",
    "hurdle_poisson",
    "hurdle_negative_binomial",
)
_WITH_CONCENTRATION = ("negative_binomial", "zero_inflated_negative_binomial",
                       "hurdle_negative_binomial")
_WITH_GATE = ("zero_inflated_poisson", "zero_inflated_negative_binomial", "hurdle_poisson",
              "hurdle_negative_binomial")
_DISTRIBUTIONS = {
    "poisson": pd.SoftplusPoisson,
    "negative_binomial": pd.SoftplusNegativeBinomial,
    "zero_inflated_poisson": pd.SoftplusZeroInflatedPoisson,
    "zero_inflated_negative_binomial": pd.SoftplusZeroInflatedNegativeBinomial,
    "hurdle_poisson": pd.SoftplusHurdlePoisson,
    "hurdle_negative_binomial": pd.SoftplusHurdleNegativeBinomial,
}


def _check_scale(name, value):
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{name} must be a number > 0 or None, got {value!r}")


class SoftplusGLM:
    """A softplus-link count GLM: a Pyro model plus fast flat-vector functions.

    Parameters
    ----------
    likelihood : str
        One of :data:`LIKELIHOODS`.
    beta, threshold : float
        Softness and linear-branch threshold of the softplus link (:mod:`posheads.ops`).
    fit_intercept : bool
        Include ``intercept`` (and ``gate_intercept`` for models with a zero part).
    coef_scale : float or None
        Prior sd of the coefficients; ``None`` is flat (no penalty).
    intercept_loc : float or None
        Prior mean of the intercept; ``None`` is ``softplus_inverse`` of the weighted mean
        rate of the data (0 when there are no counts, as for prediction).
    intercept_scale : float or None
        Prior sd of the intercept and of the gate intercept; ``None`` is flat.
    concentration_prior : None, "flat" or Distribution
        Prior of the NB concentration ``r``; ``None`` is ``1 / sqrt(r) ~ HalfNormal(1)``.
        A distribution's ``log_prob`` is evaluated at ``r``; the engines map ``r`` to the
        reals by softplus whatever its support.
    gate_coef_scale : float or None
        Prior sd of the zero-part coefficients; ``None`` is flat.

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
                 concentration_prior=None, gate_coef_scale=1.0):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        ops._check_args(beta, threshold)
        for name, value in [("coef_scale", coef_scale), ("intercept_scale", intercept_scale),
                            ("gate_coef_scale", gate_coef_scale)]:
            _check_scale(name, value)
        if not (concentration_prior is None or concentration_prior == "flat"
                or isinstance(concentration_prior, torch.distributions.Distribution)):
            raise ValueError("concentration_prior must be None, 'flat' or a Distribution, "
                             f"got {concentration_prior!r}")
        self.likelihood = likelihood
        self.beta, self.threshold = float(beta), float(threshold)
        self.fit_intercept = bool(fit_intercept)
        self.coef_scale, self.intercept_scale = coef_scale, intercept_scale
        self.intercept_loc, self.gate_coef_scale = intercept_loc, gate_coef_scale
        self.concentration_prior = concentration_prior
        self.has_concentration = likelihood in _WITH_CONCENTRATION
        self.has_gate = likelihood in _WITH_GATE
        self._to_concentration = SoftplusTransform()
        self._loss_cache = None

    def __repr__(self) -> str:
        return (f"SoftplusGLM({self.likelihood!r}, beta={self.beta}, "
                f"fit_intercept={self.fit_intercept}, coef_scale={self.coef_scale})")

    # ------------------------------------------------------------------ priors
    def _normal(self, loc, scale, shape, like):
        if scale is None:
            return flat(event_shape=shape)
        loc = torch.as_tensor(loc, dtype=like.dtype, device=like.device)
        d = dist.Normal(loc, torch.as_tensor(float(scale), dtype=like.dtype, device=like.device))
        return d.expand(shape).to_event(len(shape)) if shape else d

    def _intercept_loc(self, y, exposure, weights, like):
        if self.intercept_loc is not None:
            return torch.as_tensor(float(self.intercept_loc), dtype=like.dtype, device=like.device)
        if y is None:
            return torch.zeros((), dtype=like.dtype, device=like.device)
        rate = weighted_mean_rate(y.to(like.dtype), exposure, weights)
        return ops.softplus_inverse(rate, self.beta, self.threshold)

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
            loc = intercept_loc
            if loc is None:
                loc = self._intercept_loc(data.y, data.exposure, data.weights, like)
            out["intercept"] = self._normal(loc, self.intercept_scale, (), like)
        out["coef"] = self._normal(0.0, self.coef_scale, (X.shape[1],), like)
        if self.has_concentration:
            out["concentration"] = self._concentration_prior(like)
        if self.has_gate:
            q = (X if data.X_zero is None else data.X_zero).shape[1]
            if self.fit_intercept:
                out["gate_intercept"] = self._normal(0.0, self.intercept_scale, (), like)
            out["gate_coef"] = self._normal(0.0, self.gate_coef_scale, (q,), like)
        return out

    def _concentration_prior(self, like):
        prior = self.concentration_prior
        if prior is None:
            return half_normal_inverse_sqrt(1.0, like=like)
        if isinstance(prior, str):
            from posheads.constraints import softplus_positive

            return flat(softplus_positive())
        return prior

    # -------------------------------------------------------------- Pyro model
    def __call__(self, X, y=None, *, exposure=None, weights=None, X_zero=None,
                 subsample_size=None):
        """Run the model: sample the latent sites and observe (or sample) ``"obs"``.

        Parameters
        ----------
        X : Tensor, shape ``(n, p)``
        y : Tensor, shape ``(n,)``, optional
            Observed counts; sampled when ``None``.
        exposure, weights : Tensor, shape ``(n,)``, optional
        X_zero : Tensor, shape ``(n, q)``, optional
        subsample_size : int, optional
            Rows per mini-batch of ``pyro.plate("data")``.

        Returns
        -------
        Tensor, shape ``(n,)`` or ``(subsample_size,)``
            The mean of ``"obs"`` for the rows used.
        """
        data = GLMData(X=X, y=y, exposure=exposure, weights=weights, X_zero=X_zero)
        values = {name: pyro.sample(name, prior) for name, prior in self.priors(data).items()}
        n = X.shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size, device=X.device) as idx:
            rows = _subset(data, idx, subsample_size is not None and subsample_size < n)
            d = self.distribution(values, rows.X, rows.exposure, rows.X_zero)
            with _weighted(rows.weights):
                pyro.sample("obs", d, obs=rows.y)
        return d.mean

    # ------------------------------------------------------------ distribution
    def distribution(self, values: dict, X, exposure=None, X_zero=None, validate_args=None):
        """The distribution of ``"obs"`` given constrained site values.

        Parameters
        ----------
        values : dict of str to Tensor
            Site values, each with an optional leading draw dimension ``S``.
        X : Tensor, shape ``(n, p)``
        exposure : Tensor, shape ``(n,)``, optional
        X_zero : Tensor, shape ``(n, q)``, optional
        validate_args : bool, optional

        Returns
        -------
        Distribution with ``batch_shape`` ``(n,)`` or ``(S, n)``
        """
        eta = _linear(X, values.get("intercept"), values["coef"])
        r = _per_draw(values["concentration"], eta) if self.has_concentration else None
        gate = None
        if self.has_gate:
            Z = X if X_zero is None else X_zero
            gate = _linear(Z, values.get("gate_intercept"), values["gate_coef"])
        return self.count_distribution(eta, r, gate, exposure, validate_args=validate_args)

    def count_distribution(self, eta, concentration=None, gate_logits=None, exposure=None,
                           validate_args=None):
        """The distribution of ``"obs"`` given the linear predictors.

        Parameters
        ----------
        eta : Tensor, shape ``(..., n)``
            Linear predictor of the count part.
        concentration : Tensor, optional
            NB concentration, broadcastable with ``eta`` (NB and ZINB only).
        gate_logits : Tensor, shape ``(..., n)``, optional
            Logits of the zero part (zero-inflated and hurdle models only).
        exposure : Tensor, shape ``(n,)``, optional
        validate_args : bool, optional

        Returns
        -------
        Distribution
        """
        args = [eta]
        if self.has_concentration:
            args.append(concentration)
        if self.has_gate:
            args.append(gate_logits)
        return _DISTRIBUTIONS[self.likelihood](
            *args, beta=self.beta, threshold=self.threshold, exposure=exposure,
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
        if self.has_concentration:
            out.append(("concentration", torch.Size()))
        if self.has_gate:
            q = (X if X_zero is None else X_zero).shape[1]
            if self.fit_intercept:
                out.append(("gate_intercept", torch.Size()))
            out.append(("gate_coef", torch.Size([q])))
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
        if "concentration" in out:
            out["concentration"] = self._to_concentration(out["concentration"])
        return out

    def pack(self, values: dict, layout) -> torch.Tensor:
        """Inverse of :meth:`unpack`: ``theta`` of shape ``(d,)`` or ``(S, d)``."""
        pieces = []
        for name, shape in layout:
            v = values[name]
            if name == "concentration":
                v = self._to_concentration.inv(v)
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
                               validate_args=False).log_prob(data.y)
        ll = ll.sum() if data.weights is None else torch.dot(ll, data.weights)
        lp = self.log_prior(values, data) + ll
        if jacobian and "concentration" in raw:
            u = raw["concentration"]
            lp = lp + self._to_concentration.log_abs_det_jacobian(u, values["concentration"])
        return lp

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
            from ._loss import GLMLoss

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
                              validate_args=False)
        return d.log_prob(data.y)

    def predict_mean(self, values: dict, X, exposure=None, X_zero=None) -> torch.Tensor:
        """Mean count of each row under each draw, shape ``(S, n)``."""
        return self.distribution(_batched(values), X, exposure, X_zero).mean

    def sample_obs(self, values: dict, X, exposure=None, X_zero=None, generator=None):
        """One count draw per row and per parameter draw, shape ``(S, n)``.

        Parameters
        ----------
        values : dict of str to Tensor
            Constrained draws with a leading dimension ``S``.
        X, exposure, X_zero
            As in :meth:`distribution`.
        generator : torch.Generator, optional
            Seeds the draws (torch's global generator when ``None``).

        Returns
        -------
        Tensor, shape ``(S, n)``
            Integer-valued floats.
        """
        d = self.distribution(_batched(values), X, exposure, X_zero)
        if generator is None:
            return d.sample()
        seed = int(torch.randint(2**62, (1,), generator=generator).item())
        devices = [X.device] if X.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return d.sample()


# ------------------------------------------------------------------ helpers
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

    from ._design import Design

    X = Design(data.X).rows(idx) if data.X.layout != torch.strided else take(data.X)
    Z = data.X_zero
    if Z is not None:
        Z = Design(Z).rows(idx) if Z.layout != torch.strided else take(Z)
    return GLMData(X=X, y=take(data.y), exposure=take(data.exposure),
                   weights=take(data.weights), X_zero=Z)


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

