"""The count law of :class:`~posheads.estimators.forecasting.CountForecaster`, chosen once.

The forecaster's ``likelihood`` is a family of :mod:`posheads.families` without parts (a
registered name, hyphens allowed, or a :class:`~posheads.families.Family` object),
:data:`AUTO`, or :data:`LOG_GAUSSIAN`: the log-transform comparator, which is a different
model (:class:`~posheads.models.forecast.LogGaussianForecastModel`), not a family.
:func:`check_likelihood` validates the parameter, :func:`choose_family` turns it into the
family fitted to a series (None for the comparator), and :func:`is_log_gaussian` is the one
test of whether the comparator was chosen. Past these functions the forecaster holds a
family and calls its methods; it never compares names.

:data:`AUTO` chooses by :func:`dispersion_index`: Poisson and negative-binomial counts vary
at least as much as their mean, so a clearly under-dispersed series (scheduled events:
flights, trains, shifts) takes :data:`~posheads.families.DISCRETIZED_LOGISTIC`, whose
dispersion is free, and any other series takes
:data:`~posheads.families.NEGATIVE_BINOMIAL`. The generalized Poisson
(``likelihood="generalized_poisson"``) also expresses under-dispersion; on the NYC
departures, once the schedule and the weather are in the model, it fits a dispersion on
the over-dispersed side, a log score 0.34 nats a day below the discretized logistic's
and forecasts no better over the three airports (``benchmarks/README.md``), so
:data:`AUTO` keeps the discretized logistic.

The index is read off the raw series, before the model explains any of it, and near its
threshold it can point the wrong way: the total of the three NYC airports sits at 0.51-0.54
and takes the negative binomial, whose variance cannot fall below the Poisson's, so the
fitted level runs through every count and the forecast's intervals are too wide. With the
Laplace engine :data:`AUTO` therefore also fits the other law (:func:`rival_family`) and
weighs the two by their Laplace evidence (:func:`by_evidence`).
"""

from __future__ import annotations

import numpy as np

from posheads.families import (
    DISCRETIZED_LOGISTIC,
    HURDLE_NEGATIVE_BINOMIAL,
    NEGATIVE_BINOMIAL,
    Family,
    get_family,
)

__all__ = [
    "AUTO",
    "EVIDENCE_MARGIN",
    "INTERMITTENT",
    "LOG_GAUSSIAN",
    "UNDER_DISPERSED",
    "by_evidence",
    "check_likelihood",
    "choose_family",
    "dispersion_index",
    "is_log_gaussian",
    "likelihood_name",
    "rival_family",
]

#: The option that chooses a family by the dispersion of the training series.
AUTO = "auto"
#: The option that fits ``log1p(y)`` with Gaussian noise instead of a count law.
LOG_GAUSSIAN = "log_gaussian"
_OPTIONS = (AUTO, LOG_GAUSSIAN)

#: :data:`AUTO` takes the discretized logistic below this dispersion index. The robust
#: estimate has a sampling error of some 20-30% on a few hundred steps, and lags that cross
#: level shifts inflate it: 0.5 asks for under-dispersion that is clear, not borderline.
UNDER_DISPERSED = 0.5

#: :data:`AUTO` takes the hurdle negative binomial (with the Laplace engine, whose model
#: has a per-series zero part) when at least this share of the training counts are zero:
#: an intermittent series, whose zeros a count law around a level cannot place.
INTERMITTENT = 0.3

#: :data:`AUTO` replaces the dispersion index's choice by the rival law where the rival's
#: Laplace log evidence is higher by more than this: a Bayes factor above ``e**5`` (about
#: 150, "very strong" on Kass and Raftery's scale, 1995). Within it the index's choice
#: stands: on the shipped monthly series the two laws' evidences differ by 0-3 nats.
EVIDENCE_MARGIN = 5.0


def dispersion_index(values, lag=1) -> float:
    """Robust index of dispersion (noise variance / mean) of a count series.

    The noise standard deviation is estimated from the changes over ``lag`` steps (one
    season, so that a stable seasonal pattern cancels), by their median absolute value
    (``1.4826 * MAD`` is a standard deviation for Gaussian changes, and a few holidays or
    storms barely move it), divided by ``sqrt(2)`` since a change is the difference of two
    noisy counts. A Poisson series has an index near 1, an over-dispersed one above 1.

    Parameters
    ----------
    values : ndarray of shape (n_steps,)
        Counts.
    lag : int, default=1
        Season length in steps (1: day-to-day changes).

    Returns
    -------
    float
        ``inf`` for a series without positive mean or too short for one change.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).poisson(50.0, 400)
    >>> 0.7 < dispersion_index(y) < 1.3
    True
    """
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean() if len(values) else 0.0
    if len(values) <= lag or mean <= 0:
        return float("inf")
    change = values[lag:] - values[:-lag]
    sd = 1.4826 * np.median(np.abs(change)) / np.sqrt(2.0)
    return float(sd**2 / mean)


def _option(likelihood) -> str | None:
    """:data:`AUTO` or :data:`LOG_GAUSSIAN` when ``likelihood`` spells one (any case,
    hyphens for underscores, as family names are read), else None."""
    if not isinstance(likelihood, str):
        return None
    key = likelihood.strip().lower().replace("-", "_")
    return key if key in _OPTIONS else None


def is_log_gaussian(likelihood) -> bool:
    """Whether the ``likelihood`` parameter chooses the log-transform comparator."""
    return _option(likelihood) == LOG_GAUSSIAN


def check_likelihood(likelihood, *, parts: bool = False) -> Family | str:
    """Validate the ``likelihood`` parameter of the forecaster.

    Parameters
    ----------
    likelihood : str or Family
        :data:`AUTO`, :data:`LOG_GAUSSIAN`, or a family (without parts unless ``parts``).
    parts : bool, default=False
        Whether families with a zero part are allowed (the Laplace engine's model has a
        per-series gate; the Pyro model of SVI and NUTS has none).

    Returns
    -------
    Family or str
        The family, or the option (:data:`AUTO` or :data:`LOG_GAUSSIAN`) spelled canonically.

    Raises
    ------
    ValueError
        Naming the parameter, for an unknown name or a family with a zero part (the
        forecaster's model has one linear predictor).
    """
    option = _option(likelihood)
    if option is not None:
        return option
    try:
        family = get_family(likelihood)
    except ValueError as exc:
        raise ValueError(
            f"likelihood must be {AUTO!r}, {LOG_GAUSSIAN!r} or a family without a zero "
            f"part; {exc}"
        ) from None
    if family.parts and not parts:
        raise ValueError(
            f"likelihood {family.name!r} has a zero part ({', '.join(family.part_names)}), "
            "which the count forecaster models only with inference='laplace': choose a "
            "family without one"
        )
    return family


def choose_family(likelihood, values, lag: int = 1, *, parts: bool = False) -> Family | None:
    """The family fitted to ``values``: the one named, or :data:`AUTO`'s choice.

    Parameters
    ----------
    likelihood : str or Family
        The forecaster's ``likelihood`` parameter.
    values : ndarray of shape (n_steps,)
        The training counts.
    lag : int, default=1
        The first season's length in steps, for :func:`dispersion_index`.
    parts : bool, default=False
        Whether a family with a zero part may be named or chosen (:data:`INTERMITTENT`).

    Returns
    -------
    Family or None
        None for the log-transform comparator.
    """
    if is_log_gaussian(likelihood):
        return None
    chosen = check_likelihood(likelihood, parts=parts)
    if isinstance(chosen, Family):
        return chosen
    if parts and len(values) and np.mean(np.asarray(values) == 0) >= INTERMITTENT:
        return HURDLE_NEGATIVE_BINOMIAL
    under = dispersion_index(values, lag) < UNDER_DISPERSED
    return DISCRETIZED_LOGISTIC if under else NEGATIVE_BINOMIAL


def rival_family(likelihood, family: Family | None) -> Family | None:
    """The law :data:`AUTO` weighs against its choice ``family`` by evidence, or None.

    The negative binomial and the discretized logistic are each other's rival; a family
    the user named, the hurdle law of an intermittent series and the comparator have none.
    """
    if not (isinstance(likelihood, str) and likelihood == AUTO):
        return None
    if family is NEGATIVE_BINOMIAL:
        return DISCRETIZED_LOGISTIC
    if family is DISCRETIZED_LOGISTIC:
        return NEGATIVE_BINOMIAL
    return None


def by_evidence(family: Family, rival: Family, evidence: dict) -> Family:
    """``rival`` where its log evidence beats ``family``'s by more than
    :data:`EVIDENCE_MARGIN`, else ``family``.

    Parameters
    ----------
    family, rival : Family
    evidence : dict
        Log evidence by family name, for the same series.

    Examples
    --------
    >>> from posheads.families import DISCRETIZED_LOGISTIC as DL, NEGATIVE_BINOMIAL as NB
    >>> by_evidence(NB, DL, {NB.name: -1100.0, DL.name: -1016.0}).name
    'discretized_logistic'
    >>> by_evidence(NB, DL, {NB.name: -100.0, DL.name: -97.0}).name
    'negative_binomial'
    """
    if evidence[rival.name] > evidence[family.name] + EVIDENCE_MARGIN:
        return rival
    return family


def likelihood_name(family: Family | None) -> str:
    """What ``likelihood_`` records: the family's name, or :data:`LOG_GAUSSIAN` for None."""
    return LOG_GAUSSIAN if family is None else family.name
