"""The data of a softplus GLM (:class:`GLMData`) and its validation.

Every engine receives a :class:`GLMData`; :func:`check_glm_data` returns a new, validated
instance whose tensors share the dtype and device of ``X`` (nothing the caller passed is
modified), and raises ``ValueError`` naming the problem for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .design import is_sparse

__all__ = ["GLMData", "check_glm_data", "mean_offset"]


@dataclass
class GLMData:
    """Covariates, counts, exposure, row weights and offset of a GLM.

    Parameters
    ----------
    X : Tensor, shape ``(n, p)``
        Covariates of the count part, dense or torch-sparse.
    y : Tensor, shape ``(n,)``, optional
        Non-negative counts (``None`` for prediction).
    exposure : Tensor, shape ``(n,)``, optional
        Positive exposure ``t`` multiplying the mean; ones when ``None``.
    weights : Tensor, shape ``(n,)``, optional
        Non-negative row weights multiplying each log-likelihood term; ones when ``None``.
    X_zero : Tensor, shape ``(n, q)``, optional
        Covariates of the zero (gate) part of zero-inflated and hurdle models; ``X`` when
        ``None``.
    offset : Tensor, shape ``(n,)``, optional
        A known term added to the count part's linear predictor:
        ``eta = offset + intercept + X @ coef``; zeros when ``None``. Under the softplus
        link it is not a log exposure (see ``docs/formulas.md``).

    Instances are treated as immutable: engines may cache work keyed on the object.
    """

    X: torch.Tensor
    y: torch.Tensor | None = None
    exposure: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    X_zero: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])


def mean_offset(data: GLMData) -> float:
    """The row-weighted mean of ``data.offset`` (0 without one).

    The intercept-only start and the default prior mean of the intercept subtract it, so
    that with an offset they still sit near the intercept-only fit.
    """
    o = data.offset
    if o is None:
        return 0.0
    w = data.weights
    return float(o.mean()) if w is None else float(torch.dot(w.to(o.dtype), o) / w.sum())


def _vector(name, value, n, like):
    if value is None:
        return None
    value = torch.as_tensor(value, device=like.device)
    value = value.to(like.dtype) if value.dtype != like.dtype else value
    if value.dim() != 1 or value.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")
    # as for X: a finite sum proves every entry finite
    if not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def _matrix(name, X):
    if not isinstance(X, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        X = X.to(torch.float64)  # float64 for the solver unless the data says otherwise
    values = X
    if is_sparse(X):
        values = X.coalesce().values() if X.layout == torch.sparse_coo else X.values()
    # A finite sum proves every entry finite in one read of X; only a non-finite sum
    # (a NaN or inf, or an overflow of huge values) needs the element-wise check.
    if not torch.isfinite(values.sum()) and not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def check_glm_data(data: GLMData, *, require_y: bool = True, validate: bool = True) -> GLMData:
    """Validate ``data`` and return a copy whose vectors match ``X``'s dtype and device.

    Parameters
    ----------
    data : GLMData
    require_y : bool
        Raise when ``data.y`` is ``None``.
    validate : bool
        Check values (finite, non-negative counts, positive exposure, ...). ``False`` only
        casts, for the inner loops of engines that validated once already.

    Returns
    -------
    GLMData
    """
    if not isinstance(data, GLMData):
        raise ValueError(f"data must be a GLMData, got {type(data).__name__}")
    if not validate:
        X = data.X if data.X.is_floating_point() else data.X.to(torch.float64)

        def cast(v):
            return None if v is None else torch.as_tensor(v, dtype=X.dtype, device=X.device)

        Z = data.X_zero
        return GLMData(X=X, y=cast(data.y), exposure=cast(data.exposure),
                       weights=cast(data.weights), X_zero=None if Z is None else Z.to(X.dtype),
                       offset=cast(data.offset))
    X = _matrix("X", data.X)
    n = X.shape[0]
    if n == 0:
        raise ValueError("X has no rows")
    if data.y is None and require_y:
        raise ValueError("y is required to fit")
    y = _vector("y", data.y, n, X)
    if y is not None and not bool(y.min() >= 0):
        raise ValueError("y must be non-negative counts")
    t = _vector("exposure", data.exposure, n, X)
    if t is not None and not (t > 0).all():
        raise ValueError("exposure must be positive")
    w = _vector("weights", data.weights, n, X)
    if w is not None and ((w < 0).any() or not (w > 0).any()):
        raise ValueError("weights must be non-negative with at least one positive")
    Z = None
    if data.X_zero is not None:
        Z = _matrix("X_zero", data.X_zero).to(X.dtype)
        if Z.shape[0] != n:
            raise ValueError(f"X_zero must have {n} rows like X, got {Z.shape[0]}")
    o = _vector("offset", data.offset, n, X)
    return GLMData(X=X, y=y, exposure=t, weights=w, X_zero=Z, offset=o)
