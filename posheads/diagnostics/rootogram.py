"""Rootograms: observed against expected frequencies of each count, on a square-root scale.

The expected frequency of count ``k`` is ``sum_i P(y_i = k | x_i)``, the model's
predictive distribution summed over the rows (``model.predict_pmf``); the observed one is
the number of rows with ``y_i = k``. The square root stabilises the variance of the
counts so that deviations in the tail are visible next to those at zero (Tukey 1977;
Kleiber & Zeileis 2016, "Visualizing count data regressions using rootograms",
*The American Statistician* 70, 296-303, whose three styles are drawn here).
"""

from __future__ import annotations

import numbers

import numpy as np

from .checks import check_count_vector, check_predictive_model, new_axes

__all__ = ["STYLES", "draw_rootogram", "rootogram", "rootogram_table"]

STYLES = ("hanging", "standing", "suspended")


def rootogram_table(model, X, y, *, max_count=None, exposure=None, offset=None,
                    X_zero=None):
    """Observed and expected frequencies of the counts ``0..max_count``.

    Parameters
    ----------
    model : fitted posheads GLM estimator of a count family
    X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Observed counts.
    max_count : int, optional
        The last count shown; default ``max(y)``. It may not be below ``max(y)``: the
        rows above it would drop out of the observed frequencies.
    exposure, offset : array-like of shape (n_samples,), optional
    X_zero : array-like of shape (n_samples, n_zero_features), optional
        The model's other inputs, as its ``predict`` takes them.

    Returns
    -------
    pandas.DataFrame
        Index ``count`` (0..max_count), columns ``observed`` and ``expected``.
    """
    import pandas as pd

    check_predictive_model(model)
    y = check_count_vector(y)
    top = int(y.max()) if y.size else 0
    if max_count is None:
        max_count = top
    elif isinstance(max_count, bool) or not isinstance(max_count, numbers.Integral):
        raise ValueError(f"max_count must be a non-negative integer, got {max_count!r}")
    elif max_count < top:
        raise ValueError(f"max_count={max_count} is below the largest observed count "
                         f"{top}: those rows would be left out of the rootogram")
    pmf = model.predict_pmf(X, max_count=int(max_count), exposure=exposure,
                            offset=offset, X_zero=X_zero)
    if pmf.shape[0] != y.size:
        raise ValueError(f"y has {y.size} value(s) but X has {pmf.shape[0]} row(s)")
    observed = np.bincount(y.astype(np.int64), minlength=int(max_count) + 1)
    return pd.DataFrame({"observed": observed.astype(np.float64),
                         "expected": pmf.sum(axis=0)},
                        index=pd.RangeIndex(int(max_count) + 1, name="count"))


def rootogram(model, X, y, *, style="hanging", max_count=None, exposure=None,
              offset=None, X_zero=None, ax=None):
    """Rootogram of a count model (Kleiber & Zeileis 2016).

    * ``"hanging"``: bars of height ``sqrt(observed)`` hang from the curve of
      ``sqrt(expected)``; a bar ending above zero is a count the model over-predicts,
      one ending below zero a count it under-predicts.
    * ``"standing"``: bars ``sqrt(observed)`` stand on zero, the curve over them.
    * ``"suspended"``: bars of the difference ``sqrt(expected) - sqrt(observed)`` hang
      from zero.

    Parameters
    ----------
    model, X, y, max_count, exposure, offset, X_zero
        As in :func:`rootogram_table`.
    style : {"hanging", "standing", "suspended"}
    ax : matplotlib Axes, optional
        Where to draw (a new figure when ``None``).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from posheads import PoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 1))
    >>> y = rng.poisson(np.logaddexp(0, 1 + X[:, 0]))
    >>> est = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    >>> rootogram(est, X, y, style="suspended").get_ylabel()
    'sqrt(expected) - sqrt(observed)'
    """
    _check_style(style)
    table = rootogram_table(model, X, y, max_count=max_count, exposure=exposure,
                            offset=offset, X_zero=X_zero)
    return draw_rootogram(table, style=style, ax=ax)


def _check_style(style):
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def draw_rootogram(table, style="hanging", ax=None):
    """The rootogram of :func:`rootogram` from its :func:`rootogram_table`.

    Parameters
    ----------
    table : pandas.DataFrame
        Index the counts, columns ``observed`` and ``expected``.
    style : {"hanging", "standing", "suspended"}
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    _check_style(style)
    k = table.index.to_numpy()
    obs, exp = np.sqrt(table["observed"].to_numpy()), np.sqrt(table["expected"].to_numpy())
    ax = new_axes(ax)
    bar = {"width": 0.9, "color": "0.75", "edgecolor": "0.3", "lw": 0.5}
    if style == "hanging":
        ax.bar(k, obs, bottom=exp - obs, **bar)
        ax.plot(k, exp, "o-", color="C3", ms=3, lw=1.2, label="expected")
        ax.set_ylabel("sqrt(frequency)")
    elif style == "standing":
        ax.bar(k, obs, **bar)
        ax.plot(k, exp, "o-", color="C3", ms=3, lw=1.2, label="expected")
        ax.set_ylabel("sqrt(frequency)")
    else:
        ax.bar(k, exp - obs, **bar)
        ax.set_ylabel("sqrt(expected) - sqrt(observed)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("count")
    ax.set_title(f"{style} rootogram")
    if style != "suspended":
        ax.legend(loc="upper right", frameon=False)
    return ax
