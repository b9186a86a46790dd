"""Wald, likelihood-ratio and Vuong tests of MAP fits, and the checks that guard them.

The estimators' methods (:class:`~posheads.estimators._inference_table.InferenceTableMixin`)
gather estimates, covariances and log-likelihoods; the statistics are computed here from
plain arrays:

* Wald: ``W = (R b - r)^T (R V R^T)^-1 (R b - r) ~ chi2(q)`` for ``q`` restrictions;
* likelihood ratio: ``2 (l_big - l_small) ~ chi2(k_big - k_small)`` for nested fits
  (Wilks 1938);
* Vuong (1989): with ``m_i = l1_i - l2_i`` the rows' log-likelihood ratios,
  ``V = (sum m - c) / (sd(m) sqrt(n))`` is standard normal when the two models are
  equally close to the truth; ``c = 0`` (raw), ``k1 - k2`` (AIC) or
  ``(k1 - k2) log(n) / 2`` (BIC), the corrections of R's ``pscl::vuong``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "HypothesisTestResult",
    "check_nested",
    "check_same_data",
    "chi2_sf",
    "contrast_matrix",
    "likelihood_ratio",
    "normal_sf",
    "vuong",
    "wald",
]


@dataclass(frozen=True)
class HypothesisTestResult:
    """The outcome of a chi-square test.

    Attributes
    ----------
    statistic : float
    df : int
        Degrees of freedom of the chi-square reference.
    p_value : float
    test : str
        ``"wald"`` or ``"likelihood-ratio"``.
    """

    statistic: float
    df: int
    p_value: float
    test: str


def chi2_sf(x: float, df: float) -> float:
    """``P(chi2(df) > x)``, the regularised upper incomplete gamma ``Q(df/2, x/2)``."""
    if x <= 0:
        return 1.0
    a = torch.tensor(df / 2.0, dtype=torch.float64)
    return float(torch.special.gammaincc(a, torch.tensor(x / 2.0, dtype=torch.float64)))


def normal_sf(z) -> np.ndarray:
    """``P(Z > z)`` for a standard normal ``Z``, elementwise (nan stays nan)."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    return (0.5 * torch.special.erfc(z / math.sqrt(2.0))).numpy()


def contrast_matrix(hypothesis, labels: list) -> np.ndarray:
    """The contrast matrix ``R`` of shape ``(q, k)`` that ``hypothesis`` means.

    Parameters
    ----------
    hypothesis : str, sequence of str, or array-like of shape (q, k) or (k,)
        Labels whose parameters are tested, or ``R`` itself.
    labels : list of str
        The ``k`` parameters, in order.

    Raises
    ------
    ValueError
        For an unknown label, a repeated one, or a matrix of the wrong width.
    """
    k = len(labels)
    if isinstance(hypothesis, str):
        hypothesis = [hypothesis]
    numeric = isinstance(hypothesis, np.ndarray) and hypothesis.dtype.kind not in "OUS"
    items = None if numeric else list(hypothesis)
    if items is not None and items and all(isinstance(h, str) for h in items):
        unknown = [h for h in items if h not in labels]
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; the parameters are {labels}")
        if len(set(items)) != len(items):
            raise ValueError(f"a parameter is named twice in {items}")
        R = np.zeros((len(items), k))
        for row, h in enumerate(items):
            R[row, labels.index(h)] = 1.0
        return R
    try:
        R = np.array(hypothesis, dtype=np.float64)  # a copy: the caller's is never touched
    except (TypeError, ValueError) as exc:
        raise TypeError("hypothesis must be parameter labels or a numeric contrast "
                        f"matrix, got {hypothesis!r}") from exc
    R = R[None, :] if R.ndim == 1 else R
    if R.ndim != 2 or R.shape[1] != k or R.shape[0] == 0:
        raise ValueError(f"a contrast matrix must have shape (q, {k}) -- one column per "
                         f"parameter {labels} -- got shape {np.shape(hypothesis)}")
    if not np.isfinite(R).all():
        raise ValueError("the contrast matrix contains NaN or infinite values")
    return R


def wald(estimate, cov, R, value=None) -> HypothesisTestResult:
    """The Wald test of ``R b = value`` given estimates ``b (k,)`` and their covariance."""
    q = R.shape[0]
    r = np.zeros(q) if value is None else np.array(value, dtype=np.float64).reshape(-1)
    if r.shape != (q,):
        raise ValueError(f"value must have one entry per restriction, shape ({q},), got "
                         f"shape {np.shape(value)}")
    diff = R @ estimate - r
    middle = R @ cov @ R.T
    if np.linalg.matrix_rank(middle) < q:
        raise ValueError("the restrictions are linearly dependent (R V R^T is singular)")
    stat = float(diff @ np.linalg.solve(middle, diff))
    return HypothesisTestResult(stat, q, chi2_sf(stat, q), "wald")


def likelihood_ratio(ll_big: float, ll_small: float, df: int) -> HypothesisTestResult:
    """The likelihood-ratio test of a model with ``df`` fewer parameters."""
    stat = 2.0 * (ll_big - ll_small)
    return HypothesisTestResult(stat, int(df), chi2_sf(stat, df), "likelihood-ratio")


def _equal_or_both_none(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b.to(a.device, a.dtype)))


def check_same_data(a, b) -> None:
    """Raise ``ValueError`` unless fits ``a`` and ``b`` (:class:`MapFit`) saw the same
    rows: the same counts, exposures, weights and offsets."""
    if a.data.n != b.data.n:
        raise ValueError(f"the models were fitted on different data: {a.data.n} and "
                         f"{b.data.n} rows")
    for name in ("y", "exposure", "weights", "offset"):
        if not _equal_or_both_none(getattr(a.data, name, None), getattr(b.data, name, None)):
            raise ValueError(f"the models were fitted on different data: their {name} "
                             "differ")


def _columns_within(small, big) -> bool:
    """Whether every column of ``small`` is a column of ``big`` (dense or sparse)."""
    if small is big:
        return True
    S = small.to_dense() if small.layout != torch.strided else small
    B = big.to_dense() if big.layout != torch.strided else big
    B = B.to(S.device, S.dtype)
    return all(bool((B == S[:, [j]]).all(dim=0).any()) for j in range(S.shape[1]))


def check_nested(big, small, k_big: int, k_small: int) -> None:
    """Raise ``ValueError`` unless ``small`` is nested in ``big`` (both :class:`MapFit`,
    with ``k_big`` and ``k_small`` parameters).

    Nested here: the same family, link and data; every design column of the smaller fit
    (count part and zero parts) is one of the bigger fit's; an intercept only where the
    bigger fit has one; fewer parameters.
    """
    check_same_data(big, small)
    if big.model.family is not small.model.family:
        raise ValueError("the models are not nested: their families differ "
                         f"({big.model.family.name} and {small.model.family.name}); "
                         "compare them with vuong_test")
    if (big.model.beta, big.model.threshold) != (small.model.beta, small.model.threshold):
        raise ValueError("the models are not nested: their softplus links differ (beta "
                         f"{big.model.beta} and {small.model.beta})")
    if k_small >= k_big:
        raise ValueError(f"the models are not nested: smaller_model has {k_small} "
                         f"parameters, this model {k_big} (call lr_test on the bigger one)")
    if small.model.fit_intercept and not big.model.fit_intercept:
        raise ValueError("the models are not nested: the smaller one has an intercept")
    designs = [("X", big.data.X, small.data.X)]
    if big.model.family.part_names:
        designs.append(("X_zero", big.data.X if big.data.X_zero is None else big.data.X_zero,
                        small.data.X if small.data.X_zero is None else small.data.X_zero))
    for name, B, S in designs:
        if not _columns_within(S, B):
            raise ValueError(f"the models are not nested: a column of the smaller model's "
                             f"{name} is not a column of the bigger model's")


def vuong(ll1: torch.Tensor, ll2: torch.Tensor, weights, k1: int, k2: int):
    """Vuong's statistic with its raw, AIC and BIC corrections.

    Parameters
    ----------
    ll1, ll2 : Tensor, shape ``(n,)``
        Each row's log-likelihood under the two models.
    weights : Tensor, shape ``(n,)``, optional
        Frequency weights (a weight of 2 is a repeated row).
    k1, k2 : int
        Numbers of parameters.

    Returns
    -------
    pandas.DataFrame
        Rows ``raw``, ``aic``, ``bic``; columns ``statistic``, ``p_value``,
        ``preferred``.
    """
    import pandas as pd

    m = (ll1 - ll2).detach().cpu().numpy().astype(np.float64)
    w = np.ones_like(m) if weights is None else weights.detach().cpu().numpy().astype(
        np.float64)
    if not np.isfinite(m).all():
        raise ValueError("a row's log-likelihood is not finite under one of the models")
    n = w.sum()
    mean = np.dot(w, m) / n
    sd = math.sqrt(np.dot(w, (m - mean) ** 2) / (n - 1.0))  # as R's sd(): n - 1
    if not sd > 0:
        raise ValueError("the two models give every row the same log-likelihood ratio; "
                         "Vuong's statistic is undefined")
    corrections = {"raw": 0.0, "aic": float(k1 - k2), "bic": (k1 - k2) * math.log(n) / 2.0}
    rows = {}
    for name, c in corrections.items():
        stat = (n * mean - c) / (sd * math.sqrt(n))
        rows[name] = {"statistic": stat, "p_value": float(normal_sf(abs(stat))),
                      "preferred": "self" if stat > 0 else "other"}
    return pd.DataFrame.from_dict(rows, orient="index")
