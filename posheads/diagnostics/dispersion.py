"""A test of the Poisson variance against over-dispersion (Cameron & Trivedi 1990).

Under a Poisson model ``Var(y) = mu``. Against the alternative
``Var(y) = mu + a * g(mu)`` -- ``g(mu) = mu**2`` for the NB2 form of the negative
binomial, ``g(mu) = mu`` for NB1 -- Cameron & Trivedi (1990, "Regression-based tests for
overdispersion in the Poisson model", *J. Econometrics* 46, 347-364) estimate ``a`` by the
auxiliary least-squares regression, without intercept,

    ((y - mu)**2 - y) / mu = a * g(mu) / mu + error,

and test ``a = 0`` with its t statistic (asymptotically standard normal under the null).
``mu`` are the fitted means of the model under test, usually a Poisson fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_count_vector

__all__ = ["ALTERNATIVES", "DispersionTest", "dispersion_test"]

ALTERNATIVES = ("nb2", "nb1")


@dataclass(frozen=True)
class DispersionTest:
    """The result of :func:`dispersion_test`.

    Attributes
    ----------
    statistic : float
        The t statistic of ``a``; standard normal under the Poisson null.
    pvalue : float
        One-sided, against over-dispersion (``a > 0``).
    dispersion : float
        The estimate of ``a`` (NB2: ``1 / concentration``; NB1: ``variance / mean - 1``).
    alternative : str
        ``"nb2"`` or ``"nb1"``.
    """

    statistic: float
    pvalue: float
    dispersion: float
    alternative: str


def dispersion_test(model, X, y, *, alternative="nb2", exposure=None, offset=None,
                    X_zero=None) -> DispersionTest:
    """Cameron & Trivedi's regression test of ``Var(y) = mu`` against over-dispersion.

    Parameters
    ----------
    model : fitted estimator
        Its ``predict(X)`` gives the means ``mu`` (positive) of the rows.
    X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Observed counts.
    alternative : {"nb2", "nb1"}
        ``Var(y) = mu + a mu**2`` or ``Var(y) = mu (1 + a)``.
    exposure, offset : array-like of shape (n_samples,), optional
    X_zero : array-like of shape (n_samples, n_zero_features), optional
        Passed to ``model.predict`` when given.

    Returns
    -------
    DispersionTest

    Examples
    --------
    >>> import numpy as np
    >>> from posheads import PoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 1))
    >>> mu = np.logaddexp(0, 1 + X[:, 0])
    >>> y = rng.negative_binomial(1.0, 1.0 / (1.0 + mu))
    >>> est = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    >>> dispersion_test(est, X, y).pvalue < 1e-6
    True
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    y = check_count_vector(y)
    given = {k: v for k, v in (("exposure", exposure), ("offset", offset),
                               ("X_zero", X_zero)) if v is not None}
    mu = np.asarray(model.predict(X, **given), dtype=np.float64)
    if mu.shape != y.shape:
        raise ValueError(f"y has {y.size} value(s) but X has {mu.size} row(s)")
    if y.size < 2:
        raise ValueError("the dispersion test needs at least 2 rows")
    if not np.all(np.isfinite(mu) & (mu > 0)):
        raise ValueError("the model's predicted means must be positive and finite")
    z = ((y - mu) ** 2 - y) / mu
    g = mu if alternative == "nb2" else np.ones_like(mu)  # the regressor g(mu) / mu
    gg = float(g @ g)
    a = float(g @ z) / gg
    resid = z - a * g
    se = np.sqrt(float(resid @ resid) / (y.size - 1) / gg)
    t = a / se if se > 0 else np.inf * np.sign(a)
    from scipy.special import ndtr

    return DispersionTest(statistic=float(t), pvalue=float(ndtr(-t)), dispersion=a,
                          alternative=alternative)
