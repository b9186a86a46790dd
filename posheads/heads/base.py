"""The declarative base of the distribution heads: :class:`DistributionHead`."""

from __future__ import annotations

from typing import ClassVar

import torch
from pyro.nn import PyroModule
from torch import nn

from .. import ops
from ._shared import check_low

__all__ = ["DistributionHead"]


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
        check_low(low)
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
