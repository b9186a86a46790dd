"""The estimators' ``score``: D², the fraction of the family's deviance explained.

One function for every estimator (the GLM regressors and the Bayesian network), so a
constant target or a column vector is handled the same way everywhere.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import column_or_1d

from ._validation import check_sample_weight, numeric_target

__all__ = ["d2_score"]


def d2_score(family, y, mu, sample_weight=None) -> float:
    """D² of the predicted means ``mu`` for the counts ``y`` under ``family``'s deviance.

    Parameters
    ----------
    family : posheads.families.Family
        Its :meth:`~posheads.families.Family.unit_deviance` is the deviance (the Poisson's
        for count families, as ``PoissonRegressor.score``).
    y : array-like of shape (n,)
        Targets; a column vector is raveled with scikit-learn's warning, text refused.
    mu : ndarray of shape (n,)
        Predicted means.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
        ``1 - D(y, mu) / D(y, ybar)``; for a constant ``y`` (nothing to explain), as
        scikit-learn's ``r2_score(force_finite=True)``: 1 for a perfect fit, else 0 --
        never ``-inf`` or NaN.
    """
    y = column_or_1d(np.asarray(numeric_target(y), dtype=np.float64), warn=True)
    if y.shape[0] != mu.shape[0]:
        raise ValueError(f"X has {mu.shape[0]} rows but y has {y.shape[0]}")
    family.check_target(y)
    w = check_sample_weight(sample_weight, mu[:, None], dtype=np.float64)
    y_bar = np.average(y, weights=w)
    dev = np.sum(w * family.unit_deviance(y, mu))
    dev_null = np.sum(w * family.unit_deviance(y, np.full_like(y, y_bar)))
    if not dev_null > 0 or np.ptp(y[w > 0]) == 0:
        return 1.0 if dev <= 0 else 0.0
    return float(1.0 - dev / dev_null)
