"""Input checks shared by the diagnostics: a fitted model that has a predictive law, and
the axes to draw on (matplotlib is imported only when a new figure is needed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_count_vector", "check_predictive_model", "new_axes"]

_NEEDED = ("pit_interval", "predict_pmf", "log_predictive")


def check_predictive_model(model) -> None:
    """Check that ``model`` is a fitted estimator with a predictive distribution.

    Raises
    ------
    TypeError
        When ``model`` lacks the predictive methods (``predict_pmf``, ``pit_interval``,
        ``log_predictive``) of posheads' GLM estimators.
    sklearn.exceptions.NotFittedError
        When it has not been fitted.
    """
    missing = [m for m in _NEEDED if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"{type(model).__name__} has no predictive distribution (missing "
                        f"{', '.join(missing)}): pass a fitted posheads GLM estimator")
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)


def check_count_vector(y) -> np.ndarray:
    """``y`` as a new float64 array of counts.

    Raises
    ------
    ValueError
        When ``y`` is not 1-D, not numeric, not finite, negative or not whole numbers.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-dimensional, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"y must hold counts, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)  # a copy: the caller's y is never touched
    if not np.all(np.isfinite(arr)):
        raise ValueError("y contains NaN or infinity: counts must be finite")
    if np.any(arr < 0) or np.any(arr != np.floor(arr)):
        raise ValueError("y must hold counts 0, 1, 2, ...: found negative or fractional "
                         "values")
    return arr


def new_axes(ax=None):
    """``ax`` itself, or the axes of a new figure when it is ``None``."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6.0, 4.0))
    return ax
