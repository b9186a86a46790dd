"""Randomized quantile residuals, probability integral transforms and their plots.

For a continuous predictive law the probability integral transform ``u = F(y | x)`` is
uniform on (0, 1) when the model is right. For counts ``F`` jumps, so Dunn & Smyth (1996,
*J. Comput. Graph. Stat.* 5, 236-244) draw ``u`` uniformly between ``F(y - 1 | x)`` and
``F(y | x)``: again exactly uniform under the model, and ``Phi^{-1}(u)`` (the randomized
quantile residual) is standard normal. The PIT histogram uses the non-randomized form of
Czado, Gneiting & Held (2009, *Biometrics* 65, 1254-1261): the expected histogram of the
randomized transform, so it has no noise of its own. All of them are functions of the
model's predictive distribution (``model.pit_interval``), plug-in for MAP fits and averaged
over the draws for Bayesian ones.
"""

from __future__ import annotations

import numpy as np

from .checks import check_predictive_model, new_axes

__all__ = [
    "draw_pit_histogram",
    "draw_qq",
    "normal_scores",
    "pit_bin_heights",
    "pit_histogram",
    "pit_values",
    "qq_plot",
    "quantile_residuals",
    "randomized_pit",
]

# Phi^{-1} of u within [tiny, 1 - eps/2]: residuals stay finite (|r| <= about 8.3 on the
# upper side) where F(y) rounds to 1 in float64.
_U_LOW = np.finfo(np.float64).tiny
_U_HIGH = 1.0 - np.finfo(np.float64).eps / 2


def _random_state(random_state):
    from sklearn.utils import check_random_state

    return check_random_state(random_state)


def pit_values(model, X, y, *, exposure=None, offset=None, X_zero=None,
               random_state=None):
    """Randomized probability integral transforms of the targets.

    Parameters
    ----------
    model : fitted posheads GLM estimator
    X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    exposure, offset : array-like of shape (n_samples,), optional
    X_zero : array-like of shape (n_samples, n_zero_features), optional
        The model's other inputs, as its ``predict`` takes them.
    random_state : int, RandomState or None
        Seeds the uniform draws (needed only where the law has atoms).

    Returns
    -------
    ndarray of shape (n_samples,)
        ``u_i`` uniform between ``P(Y < y_i)`` and ``P(Y <= y_i)``; i.i.d. uniform on
        (0, 1) under a correctly specified model.
    """
    check_predictive_model(model)
    bounds = model.pit_interval(X, y, exposure=exposure, offset=offset, X_zero=X_zero)
    return randomized_pit(bounds, random_state)


def randomized_pit(bounds, random_state=None):
    """A uniform draw between each row's ``P(Y < y)`` and ``P(Y <= y)``.

    Parameters
    ----------
    bounds : ndarray of shape (n_samples, 2)
        What ``model.pit_interval`` returns.
    random_state : int, RandomState or None

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.ndim != 2 or bounds.shape[1] != 2:
        raise ValueError(f"bounds must have shape (n_samples, 2), got {bounds.shape}")
    v = _random_state(random_state).uniform(size=bounds.shape[0])
    return bounds[:, 0] + v * (bounds[:, 1] - bounds[:, 0])


def normal_scores(u):
    """``Phi^{-1}(u)``, with ``u`` clipped to ``[tiny, 1 - eps/2]`` so that it is finite."""
    from scipy.special import ndtri

    return ndtri(np.clip(u, _U_LOW, _U_HIGH))


def quantile_residuals(model, X, y, *, exposure=None, offset=None, X_zero=None,
               random_state=None):
    """Randomized quantile residuals (Dunn & Smyth 1996): ``Phi^{-1}`` of the
    randomized PIT.

    Parameters
    ----------
    model, X, y, exposure, offset, X_zero, random_state
        As in :func:`pit_values`.

    Returns
    -------
    ndarray of shape (n_samples,)
        Standard normal under a correctly specified model; clipped to about
        ``[-37.5, 8.3]`` where float64 cannot resolve the tail probability.

    Examples
    --------
    >>> import numpy as np
    >>> from posheads import PoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 1))
    >>> y = rng.poisson(np.logaddexp(0, 1 + X[:, 0]))
    >>> est = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    >>> quantile_residuals(est, X, y, random_state=0).shape
    (200,)
    """
    u = pit_values(model, X, y, exposure=exposure, offset=offset, X_zero=X_zero,
                   random_state=random_state)
    return normal_scores(u)


def qq_plot(model, X, y, *, exposure=None, offset=None, X_zero=None,
            random_state=None, ax=None):
    """Normal Q-Q plot of the randomized quantile residuals.

    Points on the diagonal mean a predictive law that matches the data; an S shape, too
    little (or too much) dispersion; an offset, a biased mean.

    Parameters
    ----------
    model, X, y, exposure, offset, X_zero, random_state
        As in :func:`quantile_residuals`.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when ``None``).

    Returns
    -------
    matplotlib Axes
    """
    r = quantile_residuals(model, X, y, exposure=exposure, offset=offset, X_zero=X_zero,
                           random_state=random_state)
    return draw_qq(r, ax=ax)


def draw_qq(residuals, ax=None):
    """The Q-Q plot of :func:`qq_plot` from residuals already computed.

    Parameters
    ----------
    residuals : array-like of shape (n_samples,)
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    from scipy.special import ndtri

    r = np.sort(np.asarray(residuals, dtype=np.float64))
    n = r.size
    if n == 0:
        raise ValueError("residuals is empty")
    theory = ndtri((np.arange(1, n + 1) - 0.5) / n)
    ax = new_axes(ax)
    ax.plot(theory, r, ".", ms=3, alpha=0.6, label="residuals")
    lim = [min(theory[0], r[0]), max(theory[-1], r[-1])]
    ax.plot(lim, lim, "k--", lw=1, label="N(0, 1)")
    ax.set_xlabel("theoretical quantiles N(0, 1)")
    ax.set_ylabel("randomized quantile residuals")
    ax.set_title("Q-Q plot of quantile residuals")
    ax.legend(loc="upper left", frameon=False)
    return ax


def pit_histogram(model, X, y, *, bins=10, exposure=None, offset=None, X_zero=None,
                  ax=None):
    """Histogram of the (non-randomized) probability integral transform.

    Each row contributes the distribution of its randomized PIT, uniform on
    ``[P(Y < y), P(Y <= y)]``, spread over the bins (Czado, Gneiting & Held 2009). A flat
    histogram at density 1 means a calibrated model; a U shape, an under-dispersed
    predictive law; a hump, an over-dispersed one.

    Parameters
    ----------
    model, X, y, exposure, offset, X_zero
        As in :func:`pit_values`.
    bins : int
        Number of equal bins on [0, 1].
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    _check_bins(bins)
    check_predictive_model(model)
    bounds = model.pit_interval(X, y, exposure=exposure, offset=offset, X_zero=X_zero)
    return draw_pit_histogram(bounds, bins=bins, ax=ax)


def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def draw_pit_histogram(bounds, bins=10, ax=None):
    """The PIT histogram of :func:`pit_histogram` from ``model.pit_interval`` output.

    Parameters
    ----------
    bounds : ndarray of shape (n_samples, 2)
    bins : int
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    _check_bins(bins)
    heights = pit_bin_heights(bounds, bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ax = new_axes(ax)
    ax.bar(edges[:-1], heights, width=1.0 / bins, align="edge", color="0.75",
           edgecolor="0.3")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability integral transform")
    ax.set_ylabel("density")
    ax.set_title("PIT histogram")
    return ax


def pit_bin_heights(bounds, bins: int):
    """Density of the non-randomized PIT in ``bins`` equal bins of [0, 1].

    Parameters
    ----------
    bounds : ndarray of shape (n_samples, 2)
        ``P(Y < y_i)`` and ``P(Y <= y_i)`` per row (``pit_interval``).
    bins : int

    Returns
    -------
    ndarray of shape (bins,)
        Heights whose mean is 1.
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    lo, hi = bounds[:, 0:1], bounds[:, 1:2]
    edges = np.linspace(0.0, 1.0, bins + 1)[None, :]
    width = hi - lo
    # the distribution function of U ~ Uniform(lo, hi) at each edge (a step where lo == hi)
    safe = np.where(width > 0, width, 1.0)
    ramp = np.clip((edges - lo) / safe, 0.0, 1.0)
    cdf = np.where(width > 0, ramp, (edges >= hi).astype(np.float64))
    cdf[:, -1] = 1.0  # every transform lies in [0, 1]
    return np.diff(cdf, axis=1).mean(axis=0) * bins
