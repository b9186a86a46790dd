"""Simulated count data with a known ground truth: a regression set, a seasonal series and a
panel of smooth and intermittent series.

Each draws every random quantity from one ``numpy.random.default_rng(random_state)`` in a
fixed order, so a given ``random_state`` always gives the same data. Counts are drawn by
the simulator of a family of :mod:`posheads.families` (imported when a simulator runs,
so importing the data sets stays free of torch and Pyro), with count-part mean ``mu``:

* ``"poisson"``: ``y ~ Poisson(mu)``;
* ``"negative_binomial"``: mean ``mu``, concentration ``r``, variance ``mu + mu**2 / r``;
* ``"zero_inflated_poisson"``: ``y = 0`` with probability ``pi = zero_inflation``, else
  ``y ~ Poisson(mu)``, so ``E[y] = (1 - pi) * mu``;
* likewise every other registered family: ``concentration`` is its shape of that name,
  ``zero_inflation`` the probability of its zero part (``P(y = 0)`` for a hurdle).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = ["make_count_regression", "make_count_series", "make_intermittent_panel"]

LINKS = ("softplus", "log")
SEASONALITIES = ("fourier", "periodic")

# numpy's Poisson sampler refuses rates near 2**63; far below that, and far above any count
# a user means to simulate, we stop with a clear message instead.
_MAX_MEAN = 1e15


def _softplus(x):
    """``log(1 + exp(x))`` without overflow: ``logaddexp(0, x)`` is exact for any finite x."""
    return np.logaddexp(0.0, x)


# -- argument checks ------------------------------------------------------------------------
def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_real(value, name: str, low: float, high: float = np.inf, *, open_low: bool = False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value < high
    if not ok:
        bounds = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high < np.inf else "")
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _family(likelihood):
    from posheads.families import available_families, get_family

    try:
        return get_family(likelihood)
    except ValueError:
        names = [f.name for f in available_families()]
        raise ValueError(f"likelihood must be one of {names}, got {likelihood!r}") from None


def _check_noise(likelihood, concentration, zero_inflation):
    family = _family(likelihood)
    concentration = _check_real(concentration, "concentration", 0.0, open_low=True)
    zero_inflation = _check_real(zero_inflation, "zero_inflation", 0.0, 1.0)
    return family, concentration, zero_inflation


# -- sampling -------------------------------------------------------------------------------
def _sample_counts(rng, mu, family, concentration: float, zero_inflation: float):
    """Draw counts of count-part mean ``mu``; return ``(y, E[y])``."""
    if not np.all(np.isfinite(mu)) or np.max(mu, initial=0.0) > _MAX_MEAN:
        raise ValueError(
            f"the simulated mean exceeds {_MAX_MEAN:g}: lower intercept/level, trend or the "
            "coefficient scales (with link='log', the mean is exp of the linear predictor)"
        )
    shapes = {"concentration": concentration} if "concentration" in family.shape_names else {}
    parts = {name: zero_inflation for name in family.part_names}
    return family.simulate(mu, rng, shapes=shapes, parts=parts)


def _inverse_link(eta, link: str):
    if link == "softplus":
        return _softplus(eta)
    with np.errstate(over="ignore"):  # overflow becomes inf, caught by _sample_counts
        return np.exp(eta)


# -- regression -----------------------------------------------------------------------------
def make_count_regression(
    n_samples: int = 1000,
    n_features: int = 5,
    *,
    likelihood: str = "poisson",
    link: str = "softplus",
    concentration: float = 2.0,
    zero_inflation: float = 0.2,
    intercept: float = 1.0,
    coef_scale: float = 1.0,
    random_state=None,
):
    """Simulate a count regression set with known coefficients.

    ``X`` has independent standard normal entries, ``coef ~ Normal(0, coef_scale**2 /
    n_features)`` (so the spread of ``X @ coef`` is about ``coef_scale`` whatever
    ``n_features``), ``eta = intercept + X @ coef``, ``mu = softplus(eta)`` or ``exp(eta)``,
    and ``y`` is drawn from ``likelihood`` with mean ``mu`` (see the module docstring).

    Parameters
    ----------
    n_samples : int, default=1000
        Number of rows, >= 1.
    n_features : int, default=5
        Number of covariates, >= 1.
    likelihood : str, default="poisson"
        A family of :mod:`posheads.families` (``"poisson"``, ``"negative_binomial"``,
        ``"zero_inflated_poisson"``, ...).
    link : {"softplus", "log"}, default="softplus"
        Inverse link from ``eta`` to ``mu``: ``softplus(eta) = log1p(exp(eta))`` or ``exp``.
    concentration : float, default=2.0
        Concentration ``r > 0`` of the negative binomial (variance ``mu + mu**2 / r``;
        larger is closer to Poisson). Used by the families with a concentration.
    zero_inflation : float, default=0.2
        Probability ``pi`` in [0, 1) of the zero part: a structural zero for the
        zero-inflated families, ``P(y = 0)`` for the hurdle families.
    intercept : float, default=1.0
        Intercept of ``eta``.
    coef_scale : float, default=1.0
        Scale (>= 0) of the true coefficients, see above.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,), int64
    info : sklearn.utils.Bunch
        ``coef`` (n_features,), ``intercept`` (float), ``eta`` (n_samples,): the linear
        predictor, ``mu`` (n_samples,): the mean of the count distribution before zero
        inflation, ``mean`` (n_samples,): the true ``E[y | X]`` (``(1 - pi) * mu`` for the
        zero-inflated families, ``mu`` for the Poisson and NB), and the ``likelihood``, ``link``,
        ``concentration`` and ``zero_inflation`` used.

    Examples
    --------
    >>> from posheads.datasets import make_count_regression
    >>> X, y, info = make_count_regression(200, 3, random_state=0)
    >>> X.shape, y.shape, info.coef.shape
    ((200, 3), (200,), (3,))
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_features = _check_int(n_features, "n_features", 1)
    likelihood, concentration, zero_inflation = _check_noise(
        likelihood, concentration, zero_inflation
    )
    link = _check_choice(link, "link", LINKS)
    intercept = _check_real(intercept, "intercept", -np.inf)
    coef_scale = _check_real(coef_scale, "coef_scale", 0.0)

    rng = np.random.default_rng(random_state)
    X = rng.standard_normal((n_samples, n_features))
    coef = rng.normal(0.0, coef_scale / np.sqrt(n_features), size=n_features)
    eta = intercept + X @ coef
    mu = _inverse_link(eta, link)
    y, mean = _sample_counts(rng, mu, likelihood, concentration, zero_inflation)
    info = Bunch(coef=coef, intercept=intercept, eta=eta, mu=mu, mean=mean)
    info.update(likelihood=likelihood.name, link=link)
    info.update(concentration=concentration, zero_inflation=zero_inflation)
    return X, y, info


# -- series ---------------------------------------------------------------------------------
def _check_seasons(season_lengths, seasonality: str) -> tuple[float, ...]:
    try:
        lengths = tuple(season_lengths)
    except TypeError:
        lengths = (season_lengths,)
    for p in lengths:
        _check_real(p, "each of season_lengths", 2.0)
        if seasonality == "periodic" and float(p) != int(p):
            raise ValueError(f"seasonality='periodic' needs whole season_lengths, got {p!r}")
    return tuple(float(p) for p in lengths)


def _seasonal(rng, t, lengths, seasonality: str, fourier_order: int, scale: float):
    """Seasonal components of shape (n_timesteps, n_seasons), each of spread about ``scale``."""
    columns = []
    for p in lengths:
        if seasonality == "fourier":
            k = np.arange(1, max(1, min(fourier_order, int(p // 2))) + 1)
            # a*cos + b*sin has variance (a**2 + b**2) / 2 over a period: sd(a, b) = scale/sqrt(K)
            a, b = rng.normal(0.0, scale / np.sqrt(k.size), size=(2, k.size))
            angle = 2.0 * np.pi * np.outer(t, k) / p
            columns.append(np.cos(angle) @ a + np.sin(angle) @ b)
        else:
            profile = rng.normal(0.0, scale, size=int(p))
            columns.append((profile - profile.mean())[t % int(p)])
    return np.column_stack(columns) if columns else np.zeros((t.size, 0))


def _covariates(rng, covariates, n_timesteps: int):
    """User covariates as (n_timesteps, k) float64, or k simulated stationary AR(1) series."""
    if isinstance(covariates, numbers.Integral) and not isinstance(covariates, bool):
        k = _check_int(covariates, "covariates", 0)
        phi = 0.8  # persistent, like weather or prices; unit stationary variance below
        x = np.empty((n_timesteps, k))
        x[0] = rng.standard_normal(k)
        shocks = rng.standard_normal((n_timesteps, k)) * np.sqrt(1.0 - phi**2)
        for i in range(1, n_timesteps):
            x[i] = phi * x[i - 1] + shocks[i]
        return x, [f"x{j}" for j in range(k)]
    names = list(covariates.columns) if isinstance(covariates, pd.DataFrame) else None
    x = np.asarray(covariates, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] != n_timesteps:
        raise ValueError(
            f"covariates must be an int or an array of shape (n_timesteps={n_timesteps}, "
            f"n_covariates), got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("covariates contain NaN or infinite values")
    return x, names or [f"x{j}" for j in range(x.shape[1])]


def _time_index(start, periods: int, freq: str) -> pd.DatetimeIndex:
    try:
        return pd.date_range(start=start, periods=periods, freq=freq, name="time")
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid start={start!r} or freq={freq!r}: {err}") from err


def make_count_series(
    n_timesteps: int = 730,
    *,
    freq: str = "D",
    start="2000-01-01",
    level: float = 2.0,
    trend: float = 0.0005,
    season_lengths=(7,),
    seasonality: str = "fourier",
    fourier_order: int = 3,
    season_scale: float = 0.5,
    covariates=1,
    coef_scale: float = 0.5,
    likelihood: str = "poisson",
    concentration: float = 5.0,
    zero_inflation: float = 0.2,
    as_frame: bool = False,
    random_state=None,
):
    """Simulate a count time series with level, trend, seasonality and covariates.

    On the scale of the linear predictor, with ``t = 0, 1, ..., n_timesteps - 1``::

        eta[t] = level + trend * t + sum_s seasonal[t, s] + X[t] @ coef
        mu[t]  = softplus(eta[t])

    and ``y[t]`` is drawn from ``likelihood`` with mean ``mu[t]`` (see the module docstring).

    Parameters
    ----------
    n_timesteps : int, default=730
        Length of the series, >= 1.
    freq : str, default="D"
        pandas frequency of the time index (e.g. ``"D"``, ``"h"``, ``"MS"``).
    start : str or datetime-like, default="2000-01-01"
        First time stamp of the index.
    level : float, default=2.0
        Linear predictor at ``t = 0`` without seasonality and covariates.
    trend : float, default=0.0005
        Change of the linear predictor per time step.
    season_lengths : sequence of float, default=(7,)
        Period of each seasonal component in time steps, each >= 2 (``(7,)`` weekly for
        daily data, ``(24, 168)`` daily and weekly for hourly data); empty for none.
    seasonality : {"fourier", "periodic"}, default="fourier"
        ``"fourier"``: a random sum of ``min(fourier_order, period // 2)`` harmonics;
        ``"periodic"``: a free random profile of whole length ``period``, centred to mean 0.
    fourier_order : int, default=3
        Highest harmonic of each Fourier seasonal component, >= 1.
    season_scale : float, default=0.5
        Spread (standard deviation over a period, >= 0) of each seasonal component.
    covariates : int or array-like of shape (n_timesteps, n_covariates), default=1
        Number of simulated covariates (independent stationary Gaussian AR(1) series,
        coefficient 0.8, unit variance), or the covariates themselves.
    coef_scale : float, default=0.5
        The covariate coefficients are ``Normal(0, coef_scale**2 / n_covariates)``.
    likelihood : str, default="poisson"
        A family of :mod:`posheads.families`, as in :func:`make_count_regression`.
    concentration : float, default=5.0
        Concentration ``r > 0``; used by the families with a concentration.
    zero_inflation : float, default=0.2
        Probability in [0, 1) of the zero part; used by the families with one.
    as_frame : bool, default=False
        Return ``y`` as a pandas Series and ``X`` as a DataFrame on the time index (and the
        ``mean``, ``mu`` and ``eta`` of ``info`` as Series).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    y : ndarray of shape (n_timesteps,), int64, or pandas.Series
    X : ndarray of shape (n_timesteps, n_covariates), float64, or pandas.DataFrame
    info : sklearn.utils.Bunch
        ``mean`` (n_timesteps,): the true ``E[y[t]]``; ``mu``: the mean before zero
        inflation; ``eta``: the linear predictor; ``seasonal`` (n_timesteps, n_seasons): each
        seasonal component; ``coef`` (n_covariates,); ``covariate_effect`` ``X @ coef``;
        ``level``, ``trend``, ``season_lengths``, ``likelihood``, ``concentration``,
        ``zero_inflation``; ``index``: the ``DatetimeIndex`` (always given).

    Examples
    --------
    >>> from posheads.datasets import make_count_series
    >>> y, X, info = make_count_series(56, season_lengths=(7,), as_frame=True, random_state=0)
    >>> y.index.freqstr, X.shape
    ('D', (56, 1))
    """
    n_timesteps = _check_int(n_timesteps, "n_timesteps", 1)
    likelihood, concentration, zero_inflation = _check_noise(
        likelihood, concentration, zero_inflation
    )
    seasonality = _check_choice(seasonality, "seasonality", SEASONALITIES)
    lengths = _check_seasons(season_lengths, seasonality)
    fourier_order = _check_int(fourier_order, "fourier_order", 1)
    level = _check_real(level, "level", -np.inf)
    trend = _check_real(trend, "trend", -np.inf)
    season_scale = _check_real(season_scale, "season_scale", 0.0)
    coef_scale = _check_real(coef_scale, "coef_scale", 0.0)
    index = _time_index(start, n_timesteps, freq)

    rng = np.random.default_rng(random_state)
    t = np.arange(n_timesteps)
    seasonal = _seasonal(rng, t, lengths, seasonality, fourier_order, season_scale)
    X, names = _covariates(rng, covariates, n_timesteps)
    coef = rng.normal(0.0, coef_scale / np.sqrt(max(X.shape[1], 1)), size=X.shape[1])
    effect = X @ coef
    eta = level + trend * t + seasonal.sum(axis=1) + effect
    mu = _softplus(eta)
    y, mean = _sample_counts(rng, mu, likelihood, concentration, zero_inflation)

    info = Bunch(mean=mean, mu=mu, eta=eta, seasonal=seasonal, coef=coef)
    info.update(covariate_effect=effect, level=level, trend=trend, season_lengths=lengths)
    info.update(likelihood=likelihood.name, concentration=concentration,
                zero_inflation=zero_inflation)
    info.index = index
    if as_frame:
        for key in ("mean", "mu", "eta"):
            info[key] = pd.Series(info[key], index=index, name=key)
        return (
            pd.Series(y, index=index, name="y"),
            pd.DataFrame(X, index=index, columns=names),
            info,
        )
    return y, X, info


# -- panels ---------------------------------------------------------------------------------
# softplus_inverse(1): the linear predictor at which a series' rate equals its scale
_UNIT_ETA = float(np.log(np.expm1(1.0)))
KINDS = ("smooth", "intermittent")


def _check_range(value, name: str, low: float, high: float = np.inf) -> tuple[float, float]:
    """A ``(low, high)`` pair inside ``[low, high)``, low <= high; a number is ``(v, v)``."""
    pair = (value, value) if isinstance(value, numbers.Real) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    a, b = (_check_real(v, name, low, high) for v in pair)
    if a > b:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return a, b


def _log_uniform(rng, bounds, size):
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size=size))


def make_intermittent_panel(
    n_series: int = 20,
    n_timesteps: int = 365,
    *,
    freq: str = "D",
    start="2000-01-01",
    intermittent_share: float = 0.5,
    season_length: int = 7,
    season_scale: float = 0.3,
    drift_scale: float = 0.01,
    smooth_scale=(5.0, 100.0),
    intermittent_scale=(1.0, 4.0),
    zero_share=(0.5, 0.95),
    concentration=(2.0, 20.0),
    smooth_likelihood: str = "negative_binomial",
    intermittent_likelihood: str = "hurdle_negative_binomial",
    random_state=None,
):
    """Simulate a panel of smooth and intermittent (mostly zero) count series, in long form.

    Series ``i`` has a random-walk level, a periodic season and a count law, on the
    forecaster's scale (``t = 0, ..., n_timesteps - 1``)::

        level[i, t] = sum_{s=1..t} drift_scale * z[i, s],   z ~ Normal(0, 1), level[i, 0] = 0
        eta[i, t]   = softplus_inverse(1) + level[i, t] + season[i, t % season_length]
        mu[i, t]    = scale[i] * softplus(eta[i, t])

    so ``mu`` starts about ``scale[i]`` and the season multiplies it by about
    ``exp(season)``. A *smooth* series draws ``y ~ smooth_likelihood`` with mean ``mu``; an
    *intermittent* one ``y ~ intermittent_likelihood`` with count part of mean ``mu`` and
    zero part ``zero_share[i]`` (for the default hurdle, ``P(y = 0)``: demand occurs on a
    share ``1 - zero_share[i]`` of days, in sizes from a zero-truncated negative binomial).
    Counts are drawn by the simulators of :mod:`posheads.families`.

    Per-series parameters are drawn in this order from one generator: the kinds (a random
    choice of ``round(intermittent_share * n_series)`` intermittent series), then for each
    series its scale (log-uniform in ``smooth_scale`` or ``intermittent_scale``), its
    concentration (log-uniform in ``concentration``), its zero share (uniform in
    ``zero_share``; 0 for smooth series), its season (``season_length`` normal values of
    sd ``season_scale``, centred), its level and its counts.

    Parameters
    ----------
    n_series : int, default=20
        Number of series, >= 1.
    n_timesteps : int, default=365
        Length of every series, >= 1.
    freq : str, default="D"
        pandas frequency of the time stamps.
    start : str or datetime-like, default="2000-01-01"
        First time stamp of every series.
    intermittent_share : float, default=0.5
        Share in [0, 1] of intermittent series.
    season_length : int, default=7
        Period of the season in steps, >= 1 (1: no season).
    season_scale : float, default=0.3
        Standard deviation (>= 0) of the seasonal profile on the scale of ``eta``.
    drift_scale : float, default=0.01
        Standard deviation (>= 0) of the level's steps on the scale of ``eta``.
    smooth_scale, intermittent_scale : (float, float), default=(5, 100) and (1, 4)
        Ranges (> 0) of ``scale``: the typical mean of a smooth series, and the typical mean
        of the count part (the size of a demand) of an intermittent one.
    zero_share : (float, float), default=(0.5, 0.95)
        Range in [0, 1) of the zero-part probability of the intermittent series.
    concentration : (float, float), default=(2, 20)
        Range (> 0) of the negative binomial concentration ``r`` (variance
        ``mu + mu**2 / r``); used by families with a concentration.
    smooth_likelihood : str, default="negative_binomial"
        Family of the smooth series, one without a zero part.
    intermittent_likelihood : str, default="hurdle_negative_binomial"
        Family of the intermittent series, one with a zero part (hurdle or zero-inflated).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    frame : DataFrame of shape (n_series * n_timesteps, 3)
        Columns ``unique_id`` (str, ``"S000"``, ``"S001"``, ...), ``ds`` (time stamp) and
        ``y`` (int64), sorted by ``unique_id`` then ``ds``: the long format of
        statsforecast.
    info : sklearn.utils.Bunch
        ``params``: a DataFrame indexed by ``unique_id`` with columns ``kind``
        (``"smooth"`` or ``"intermittent"``), ``likelihood``, ``scale``,
        ``concentration``, ``zero_share`` and ``drift_scale``; arrays of shape
        (n_series, n_timesteps) in the order of ``params``: ``mean`` (the true ``E[y]``),
        ``mu`` (the count part's mean), ``eta``, ``level``; ``season`` of shape
        (n_series, season_length); ``index``, the ``DatetimeIndex`` of every series;
        ``season_length`` and ``season_scale``.

    Examples
    --------
    >>> from posheads.datasets import make_intermittent_panel
    >>> frame, info = make_intermittent_panel(4, 56, random_state=0)
    >>> frame.shape, list(frame.columns), sorted(info.params.kind.unique())
    ((224, 3), ['unique_id', 'ds', 'y'], ['intermittent', 'smooth'])
    """
    n_series = _check_int(n_series, "n_series", 1)
    n_timesteps = _check_int(n_timesteps, "n_timesteps", 1)
    share = _check_real(intermittent_share, "intermittent_share", 0.0)
    if share > 1.0:
        raise ValueError(f"intermittent_share must be in [0, 1], got {intermittent_share!r}")
    season_length = _check_int(season_length, "season_length", 1)
    season_scale = _check_real(season_scale, "season_scale", 0.0)
    drift_scale = _check_real(drift_scale, "drift_scale", 0.0)
    ranges = {
        "smooth_scale": _check_range(smooth_scale, "smooth_scale", 1e-300),
        "intermittent_scale": _check_range(intermittent_scale, "intermittent_scale", 1e-300),
        "zero_share": _check_range(zero_share, "zero_share", 0.0, 1.0),
        "concentration": _check_range(concentration, "concentration", 1e-300),
    }
    laws = {"smooth": _family(smooth_likelihood), "intermittent": _family(intermittent_likelihood)}
    if laws["smooth"].part_names:
        raise ValueError(
            f"smooth_likelihood must be a family without a zero part, got {laws['smooth'].name!r}"
        )
    if not laws["intermittent"].part_names:
        raise ValueError(
            "intermittent_likelihood must be a family with a zero part (hurdle or zero-"
            f"inflated), got {laws['intermittent'].name!r}"
        )
    index = _time_index(start, n_timesteps, freq)

    rng = np.random.default_rng(random_state)
    n_int = round(share * n_series)
    intermittent = np.zeros(n_series, dtype=bool)
    intermittent[rng.permutation(n_series)[:n_int]] = True
    kinds = np.where(intermittent, "intermittent", "smooth")
    scale = np.where(
        intermittent,
        _log_uniform(rng, ranges["intermittent_scale"], n_series),
        _log_uniform(rng, ranges["smooth_scale"], n_series),
    )
    conc = _log_uniform(rng, ranges["concentration"], n_series)
    gate = np.where(intermittent, rng.uniform(*ranges["zero_share"], size=n_series), 0.0)
    season = rng.normal(0.0, season_scale, size=(n_series, season_length))
    season -= season.mean(axis=1, keepdims=True)
    steps = rng.normal(0.0, drift_scale, size=(n_series, n_timesteps))
    steps[:, 0] = 0.0  # the level starts at 0: the rate starts near the series' scale
    level = np.cumsum(steps, axis=1)
    eta = _UNIT_ETA + level + season[:, np.arange(n_timesteps) % season_length]
    mu = scale[:, None] * _softplus(eta)

    y = np.empty((n_series, n_timesteps), dtype=np.int64)
    mean = np.empty((n_series, n_timesteps))
    for i, kind in enumerate(kinds):
        y[i], mean[i] = _sample_counts(rng, mu[i], laws[kind], conc[i], gate[i])

    width = len(str(n_series - 1))
    ids = [f"S{i:0{width}d}" for i in range(n_series)]
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat(ids, n_timesteps),
            "ds": np.tile(index.to_numpy(), n_series),
            "y": y.ravel(),
        }
    )
    params = pd.DataFrame(
        {
            "kind": kinds,
            "likelihood": [laws[k].name for k in kinds],
            "scale": scale,
            "concentration": conc,
            "zero_share": gate,
            "drift_scale": drift_scale,
        },
        index=pd.Index(ids, name="unique_id"),
    )
    info = Bunch(params=params, mean=mean, mu=mu, eta=eta, level=level, season=season)
    info.update(index=index, season_length=season_length, season_scale=season_scale)
    return frame, info
