"""Output layers: a guarded ``Softplus``, ``PositiveLinear`` and distribution heads.

* :class:`Softplus` is a drop-in for ``torch.nn.Softplus`` (same values and repr), with an
  optional floor ``low`` and an optional learnable, positive ``beta``.
* :class:`PositiveLinear` is ``Linear`` followed by that softplus.
* Distribution heads map features of shape ``(..., in_features)`` to a distribution of
  :mod:`posheads.distributions` with ``batch_shape == (...)``. Like GluonTS'
  ``DistributionOutput`` each head is declarative: it names its raw arguments
  (``raw_names``), its distribution class and a ``domain_map`` that makes raw outputs valid;
  one ``Linear`` called ``proj`` projects the features to all raw arguments at once.
  :class:`FamilyHead` is the head of any :class:`~posheads.families.Family`: the family
  declares the arguments, the distribution and the start, so a new likelihood needs no
  new head (``FamilyHead(in_features, family=my_family)``); ``PoissonHead`` and the other
  count heads are its subclasses for the registered families.

Every layer is an ordinary ``nn.Module`` and also works as ``PyroModule[...]``: a head
built as a ``PyroModule`` builds its ``proj`` as ``PyroModule[nn.Linear]``, so priors go
straight onto ``head.proj.weight`` / ``head.proj.bias`` with ``PyroSample``.

Features are checked before they reach the distribution: a wrong trailing dimension
always raises ``ValueError``; NaN or inf raise ``ValueError`` unless the head was built
with ``validate=False`` (the check costs one reduction, and a device sync on CUDA).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.nn import PyroModule
from torch import nn

from . import distributions as D
from . import families as F
from . import ops
from .transforms import SoftplusTransform

__all__ = [
    "DistributionHead",
    "FamilyHead",
    "GammaHead",
    "HurdleNegativeBinomialHead",
    "HurdlePoissonHead",
    "LogNormalHead",
    "NegativeBinomialHead",
    "NormalHead",
    "PoissonHead",
    "PositiveLinear",
    "Softplus",
    "ZeroInflatedNegativeBinomialHead",
    "ZeroInflatedPoissonHead",
]

# Moment-based starting values of the continuous heads are clamped to this range: the
# data only suggest a start.
_CONCENTRATION_RANGE = (0.1, 100.0)
_DEFAULT_CONCENTRATION = 1.0


def _check_low(low) -> None:
    if not (isinstance(low, (int, float)) and math.isfinite(low) and low >= 0):
        raise ValueError(f"low must be a finite number >= 0, got {low!r}")


def _inv_softplus(value: float, low: float = 0.0, beta: float = 1.0) -> float:
    """Raw value whose ``low + softplus`` is ``value`` (kept just above ``low``)."""
    excess = max(value - low, 1e-6 * max(value, 1.0))  # a target at or below the floor
    return float(ops.softplus_inverse(torch.tensor(excess, dtype=torch.float64), beta))


def _clip(x: float, bounds) -> float:
    return min(max(x, bounds[0]), bounds[1])


def _positive(raw: torch.Tensor) -> torch.Tensor:
    """Softplus for concentrations; floored at the smallest normal float, never 0."""
    return ops.softplus(raw).clamp(min=torch.finfo(raw.dtype).tiny)


# Raw starting bias of a continuous head's concentration: 1.
_CONCENTRATION_START = {"concentration": _inv_softplus(_DEFAULT_CONCENTRATION)}


# ---------------------------------------------------------------- activations
class Softplus(nn.Module):
    """``low + softplus_beta(x)``, a drop-in for ``torch.nn.Softplus``.

    With the defaults it returns torch's values (float32 and below exactly; see
    :mod:`posheads.ops` for a 2e-9 difference in float64 near the threshold). With
    ``learn_beta=True``, ``beta`` is a parameter kept positive by a softplus transform and
    the output is ``softplus(beta * x) / beta`` (the same function, differentiable in
    ``beta``).

    Parameters
    ----------
    beta : float
        Softness, ``> 0`` (initial value when learned).
    threshold : float
        Linear-branch threshold on ``beta * x``.
    low : float
        Floor added to the output, ``>= 0``.
    learn_beta : bool
        Make ``beta`` a learnable parameter (stored unconstrained as ``beta_unconstrained``).

    Shape: input ``(*)``, output ``(*)``.

    Examples
    --------
    >>> Softplus()
    Softplus(beta=1.0, threshold=20.0)
    >>> Softplus(learn_beta=True)(torch.zeros(2)).shape
    torch.Size([2])
    """

    def __init__(self, beta=1.0, threshold=20.0, low=0.0, learn_beta=False):
        super().__init__()
        ops.check_link_args(beta, threshold)
        _check_low(low)
        self.threshold, self.low, self.learn_beta = threshold, low, bool(learn_beta)
        self._beta = beta
        if self.learn_beta:
            self._to_beta = SoftplusTransform()
            self.beta_unconstrained = nn.Parameter(self._to_beta.inv(torch.tensor(float(beta))))

    @property
    def beta(self):
        """The softness: a float, or a positive 0-d tensor when learned."""
        return self._to_beta(self.beta_unconstrained) if self.learn_beta else self._beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learn_beta:
            b = self.beta
            out = ops.softplus(x * b, 1.0, self.threshold) / b
        else:
            out = ops.softplus(x, self.beta, self.threshold)
        return out + self.low if self.low else out

    def extra_repr(self) -> str:
        beta = float(self.beta.detach()) if self.learn_beta else self.beta
        text = f"beta={beta}, threshold={self.threshold}"
        text += f", low={self.low}" if self.low else ""
        return text + (", learn_beta=True" if self.learn_beta else "")


class PositiveLinear(nn.Linear):
    """``low + softplus(x W^T + b)``: a ``Linear`` layer with positive outputs.

    Parameters
    ----------
    in_features, out_features : int
        As in ``torch.nn.Linear``.
    bias : bool
        Learn an additive bias.
    beta, threshold, low : float
        As in :class:`Softplus`.
    device, dtype
        As in ``torch.nn.Linear``.

    Shape: input ``(*, in_features)``, output ``(*, out_features)``, all ``>= low``.

    Examples
    --------
    >>> layer = PositiveLinear(3, 2, low=0.1)
    >>> bool((layer(torch.randn(5, 3)) > 0.1).all())
    True
    """

    def __init__(self, in_features, out_features, bias=True, beta=1.0, threshold=20.0,
                 low=0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        ops.check_link_args(beta, threshold)
        _check_low(low)
        self.beta, self.threshold, self.low = beta, threshold, low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = ops.softplus(super().forward(x), self.beta, self.threshold)
        return out + self.low if self.low else out

    def extra_repr(self) -> str:
        text = f"{super().extra_repr()}, beta={self.beta}, threshold={self.threshold}"
        return text + (f", low={self.low}" if self.low else "")


# ---------------------------------------------------------------- distribution heads
class DistributionHead(nn.Module):
    """Base of the distribution heads: features ``(..., in_features)`` -> distribution.

    Subclasses declare ``raw_names`` (one output of ``proj`` each), ``distribution_class``,
    ``domain_map`` (raw outputs -> distribution arguments) and ``_init_raw`` (starting
    values of the biases from targets); :class:`FamilyHead` takes all of them from a
    family.

    Parameters
    ----------
    in_features : int
        Size of the last dimension of the features.
    beta, threshold, low : float
        Link settings passed to the distribution (``low`` floors its mean, or its scale).
    target_mean : float, optional
        Initialise so that the initial mean is this value (see :meth:`init_from_targets`).
    validate : bool
        Raise ``ValueError`` on NaN/inf features (and bad exposures). ``False`` skips these
        checks and builds distributions with ``validate_args=False``; the check of the
        trailing dimension is always on.
    """

    raw_names: tuple[str, ...] = ()
    distribution_class: ClassVar[type | None] = None
    takes_exposure = False
    _default_raw: ClassVar[dict[str, float]] = {}

    def __init__(self, in_features, *, beta=1.0, threshold=20.0, low=0.0, target_mean=None,
                 validate=True):
        super().__init__()
        if not self.raw_names:
            raise TypeError("DistributionHead is a base class: use e.g. PoissonHead")
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        ops.check_link_args(beta, threshold)
        _check_low(low)
        self.in_features, self.validate = in_features, bool(validate)
        self.beta, self.threshold, self.low = float(beta), float(threshold), float(low)
        # as a PyroModule the projection must be one too, so PyroSample priors can go on it
        linear = PyroModule[nn.Linear] if isinstance(self, PyroModule) else nn.Linear
        self.proj = linear(in_features, len(self.raw_names))
        self._set_biases(self._default_raw, zero_weights=False)
        if target_mean is not None:
            self.init_from_targets(torch.tensor([float(target_mean)]))

    def domain_map(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map raw outputs (shape ``(...)`` each) to the distribution's arguments."""
        return dict(raw)

    def parameters_from(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs of ``proj``: a dict ``{name: Tensor of shape (...)}``."""
        self._check_features(h)
        out = self.proj(h)
        return {name: out[..., i] for i, name in enumerate(self.raw_names)}

    def distribution(self, raw: dict[str, torch.Tensor], exposure=None):
        """The distribution for raw outputs ``raw`` (and an optional exposure)."""
        kwargs = self.domain_map(raw)
        if exposure is not None:
            kwargs["exposure"] = self._check_exposure(exposure, raw[self.raw_names[0]])
        # validate=False also skips the distribution's argument checks: the fast path
        return self.distribution_class(**kwargs, beta=self.beta, threshold=self.threshold,
                                       low=self.low, validate_args=None if self.validate else False)

    def forward(self, h: torch.Tensor, exposure=None):
        """Distribution with ``batch_shape == h.shape[:-1]``."""
        return self.distribution(self.parameters_from(h), exposure)

    def init_from_targets(self, y, exposure=None):
        """Set the biases from rough moment estimates on training targets ``y``.

        The mean parameter's bias is set through ``softplus_inverse`` so that the initial
        mean equals the training mean (per unit exposure for counts); shape parameters
        start from clamped method-of-moments values where ``y`` has at least two values.
        The weight rows of the initialised outputs are set to zero, so the initial
        prediction is exactly this for every input; gradients still reach them.

        Parameters
        ----------
        y : array-like, shape ``(n,)``
            Training targets.
        exposure : array-like, shape ``(n,)``, optional
            Exposures of the targets (count heads only).

        Returns
        -------
        self
        """
        y = torch.as_tensor(y, dtype=torch.float64).detach().flatten()
        if y.numel() == 0 or not torch.isfinite(y).all():
            raise ValueError("init_from_targets needs a non-empty array of finite targets")
        if exposure is not None and not self.takes_exposure:
            raise ValueError(f"{type(self).__name__} takes no exposure")
        if exposure is not None:
            exposure = torch.as_tensor(exposure, dtype=torch.float64).flatten()
            if not bool((torch.isfinite(exposure) & (exposure > 0)).all()):
                raise ValueError("exposure must be finite and > 0")
        self._set_biases(self._init_raw(y, exposure))
        return self

    def _init_raw(self, y: torch.Tensor, exposure) -> dict[str, float]:
        """Raw starting biases from float64 targets ``y`` (and exposures, for counts)."""
        raise NotImplementedError

    def _set_biases(self, raw: dict[str, float], zero_weights: bool = True) -> None:
        with torch.no_grad():
            for name, value in raw.items():
                i = self.raw_names.index(name)
                self.proj.bias[i] = value
                if zero_weights:
                    self.proj.weight[i].zero_()

    def _check_features(self, h) -> None:
        name = type(self).__name__
        if not isinstance(h, torch.Tensor) or h.dim() == 0 or h.shape[-1] != self.in_features:
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(
                f"{name} expects features of shape (..., in_features={self.in_features}), "
                f"got {shape}")
        if self.validate and not bool(torch.isfinite(h).all()):
            bad = int((~torch.isfinite(h)).sum())
            raise ValueError(
                f"{name}: features contain NaN or inf ({bad} of {h.numel()} values); "
                "check the inputs and the layers before the head (validate=False skips this)")

    def _check_exposure(self, exposure, like):
        if not self.takes_exposure:
            raise ValueError(f"{type(self).__name__} takes no exposure")
        exposure = torch.as_tensor(exposure, dtype=like.dtype, device=like.device)
        if self.validate and not bool((torch.isfinite(exposure) & (exposure > 0)).all()):
            raise ValueError(f"{type(self).__name__}: exposure must be finite and > 0")
        return exposure

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, distribution={self.distribution_class.__name__}"
        return text + (f", low={self.low}" if self.low else "")


def _moments(y: torch.Tensor):
    """Mean and (population) variance of ``y``; the variance is None for fewer than 2."""
    mean = float(y.mean())
    return mean, (float(y.var(unbiased=False)) if y.numel() > 1 else None)


class FamilyHead(DistributionHead):
    """Features -> the distribution of a :class:`~posheads.families.Family`.

    Raw outputs: the family's arguments (``"eta"``, its shapes, the logits of its parts).
    Shapes are mapped to the positive half line by softplus (floored at the smallest
    normal float, never 0); ``eta`` and logits are used as they are. Before training the
    biases sit at the family's default shapes and part probabilities;
    :meth:`init_from_targets` moves them to the family's moment-based start.

    Parameters
    ----------
    in_features : int
    family : str or Family, optional
        The likelihood; subclasses fix it (``PoissonHead``, ...).
    beta, threshold, low, target_mean, validate
        As in :class:`DistributionHead`; ``forward(h, exposure=None)`` accepts a positive
        exposure broadcastable to ``h.shape[:-1]`` when the family takes one.

    Examples
    --------
    >>> head = FamilyHead(4, family="negative_binomial")
    >>> head.raw_names
    ('eta', 'concentration')
    >>> head(torch.randn(2, 4)).batch_shape
    torch.Size([2])
    """

    family: ClassVar[F.Family | None] = None

    def __init__(self, in_features, *, family=None, beta=1.0, threshold=20.0, low=0.0,
                 target_mean=None, validate=True):
        if family is None and type(self).family is None:
            raise ValueError("FamilyHead needs a family, e.g. FamilyHead(p, family='poisson')")
        self.family = F.get_family(type(self).family if family is None else family)
        super().__init__(in_features, beta=beta, threshold=threshold, low=low,
                         target_mean=target_mean, validate=validate)

    @property
    def raw_names(self) -> tuple[str, ...]:
        return self.family.argument_names

    @property
    def distribution_class(self) -> type:
        return self.family.distribution

    @property
    def takes_exposure(self) -> bool:
        return self.family.takes_exposure

    @property
    def _default_raw(self) -> dict[str, float]:
        defaults = F.Start(1.0, {s.name: s.default for s in self.family.shapes},
                           {p.name: p.default for p in self.family.parts})
        raw = self.family.raw_start(defaults)
        del raw["eta"]  # the linear layer's own initialisation
        return raw

    def domain_map(self, raw):
        out = dict(raw)
        for name in self.family.shape_names:
            out[name] = _positive(raw[name])
        return out

    def distribution(self, raw, exposure=None):
        args = self.domain_map(raw)
        if exposure is not None:
            exposure = self._check_exposure(exposure, raw["eta"])
        # validate=False also skips the distribution's argument checks: the fast path
        return self.family.build_from_arguments(
            args, beta=self.beta, threshold=self.threshold, low=self.low, exposure=exposure,
            validate_args=None if self.validate else False)

    def _init_raw(self, y, exposure):
        start = self.family.start(y, exposure=exposure)
        return self.family.raw_start(start, beta=self.beta, threshold=self.threshold,
                                     low=self.low)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, family={self.family.name}"
        return text + (f", low={self.low}" if self.low else "")


class PoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusPoisson`. Raw outputs: ``eta``.

    Examples
    --------
    >>> head = PoissonHead(4, target_mean=3.0)
    >>> head(torch.randn(10, 4)).mean.detach()[:2]
    tensor([3., 3.])
    """

    family = F.POISSON


class NegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusNegativeBinomial`.

    Raw outputs: ``eta`` and ``concentration`` (mapped by softplus). The concentration
    starts at 1, or at the family's method-of-moments start.

    Examples
    --------
    >>> head = NegativeBinomialHead(4)
    >>> sorted(head.parameters_from(torch.randn(2, 4)))
    ['concentration', 'eta']
    """

    family = F.NEGATIVE_BINOMIAL


class ZeroInflatedPoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusZeroInflatedPoisson`.

    Raw outputs: ``eta`` and ``gate_logits``. The gate starts at 0.1, or at the share of
    zeros beyond the Poisson's.

    Examples
    --------
    >>> head = ZeroInflatedPoissonHead(2).init_from_targets(torch.tensor([0.0, 0.0, 3.0, 5.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    2.0
    """

    family = F.ZERO_INFLATED_POISSON


class ZeroInflatedNegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusZeroInflatedNegativeBinomial`.

    Raw outputs: ``eta``, ``concentration`` (softplus) and ``gate_logits``.

    Examples
    --------
    >>> head = ZeroInflatedNegativeBinomialHead(3)
    >>> head(torch.randn(5, 3)).batch_shape
    torch.Size([5])
    """

    family = F.ZERO_INFLATED_NEGATIVE_BINOMIAL


class HurdlePoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusHurdlePoisson`.

    Raw outputs: ``eta`` and ``gate_logits`` (the logit of ``P(y = 0)``). Initialised from
    the share of zeros and the mean of the positive targets.

    Examples
    --------
    >>> head = HurdlePoissonHead(2).init_from_targets(torch.tensor([0.0, 2.0, 4.0, 0.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    1.5
    """

    family = F.HURDLE_POISSON


class HurdleNegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusHurdleNegativeBinomial`.

    Raw outputs: ``eta``, ``concentration`` (softplus) and ``gate_logits`` (the logit of
    ``P(y = 0)``).

    Examples
    --------
    >>> head = HurdleNegativeBinomialHead(2).init_from_targets(torch.tensor([0.0, 2.0, 4.0, 0.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    1.5
    """

    family = F.HURDLE_NEGATIVE_BINOMIAL


class GammaHead(DistributionHead):
    """Features -> :class:`~posheads.distributions.SoftplusGamma` (positive targets).

    Raw outputs: ``eta`` (the mean's predictor) and ``concentration`` (softplus), which
    starts at 1 or at ``mean**2 / var`` clamped to [0.1, 100].

    Examples
    --------
    >>> head = GammaHead(3, target_mean=2.0)
    >>> head(torch.randn(4, 3)).mean.detach()
    tensor([2., 2., 2., 2.])
    """

    raw_names = ("eta", "concentration")
    distribution_class = D.SoftplusGamma
    _default_raw: ClassVar[dict[str, float]] = _CONCENTRATION_START

    def domain_map(self, raw):
        return {"eta": raw["eta"], "concentration": _positive(raw["concentration"])}

    def _init_raw(self, y, exposure):
        mean, var = _moments(y)
        raw = {"eta": _inv_softplus(mean, self.low, self.beta)}
        if var is not None and var > 0:
            raw["concentration"] = _inv_softplus(_clip(mean**2 / var, _CONCENTRATION_RANGE))
        return raw


class NormalHead(DistributionHead):
    """Features -> :class:`~posheads.distributions.SoftplusNormal`.

    Raw outputs: ``loc`` and ``scale_eta`` (scale ``low + softplus(scale_eta)``).

    Examples
    --------
    >>> head = NormalHead(3).init_from_targets(torch.tensor([1.0, 3.0]))
    >>> head(torch.randn(2, 3)).scale.detach()
    tensor([1., 1.])
    """

    raw_names = ("loc", "scale_eta")
    distribution_class = D.SoftplusNormal

    def _init_raw(self, y, exposure):
        mean, var = _moments(y)
        raw = {"loc": mean}
        if var is not None and var > 0:
            raw["scale_eta"] = _inv_softplus(math.sqrt(var), self.low, self.beta)
        return raw


class LogNormalHead(NormalHead):
    """Features -> :class:`~posheads.distributions.SoftplusLogNormal` (positive targets).

    Raw outputs: ``loc`` and ``scale_eta`` of ``log(y)``; initialised from the moments of
    ``log(y)``.

    Examples
    --------
    >>> head = LogNormalHead(3)
    >>> bool((head(torch.randn(4, 3)).sample() > 0).all())
    True
    """

    distribution_class = D.SoftplusLogNormal

    def _init_raw(self, y, exposure):
        if not bool((y > 0).all()):
            raise ValueError("LogNormalHead needs positive targets")
        return super()._init_raw(torch.log(y), exposure)
