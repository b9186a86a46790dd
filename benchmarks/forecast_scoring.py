"""Scores and peer forecasts shared by the forecasting benchmarks.

- :func:`crps_paths`, :func:`pit_coverage`, :func:`score_paths`: CRPS of sample paths
  (the energy form over sorted draws), the randomised-PIT coverage of a central interval
  for discrete forecasts (Czado, Gneiting and Held, 2009, *Biometrics* 65, 1254-1261:
  ``u = F(y - 1) + V (F(y) - F(y - 1))``, ``V ~ Uniform(0, 1)``; the count lies in the
  interval when ``u`` does), and the MAE of the median.
- :func:`statsforecast_scores`: statsforecast's models on the same windows. AutoETS,
  AutoARIMA and SeasonalNaive give a point forecast and intervals; their predictive law is
  taken as the Gaussian with that mean and the standard deviation implied by the 80% and
  95% intervals (the average of ``(hi - lo) / (2 z)`` over the two), sampled, rounded and
  clipped at 0 so that it is scored as count paths like ours; their coverage is that of
  their own 90% interval. Croston, CrostonSBA, TSB, ADIDA and IMAPA give point forecasts
  only (no stochastic model): their CRPS is the absolute error of the point, their
  coverage is missing.
- :func:`markdown`: a GitHub table without the optional ``tabulate``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

__all__ = [
    "INTERMITTENT_MODELS",
    "PROBABILISTIC_MODELS",
    "crps_paths",
    "gaussian_paths",
    "markdown",
    "pit_coverage",
    "score_paths",
    "statsforecast_scores",
]

PROBABILISTIC_MODELS = ("AutoETS", "AutoARIMA", "SeasonalNaive")
INTERMITTENT_MODELS = ("CrostonClassic", "CrostonSBA", "TSB", "ADIDA", "IMAPA")
_LEVELS = (80, 90, 95)


def crps_paths(paths: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CRPS of each column of ``paths`` (draws x steps) at the truth ``y`` (steps,).

    ``E|X - y| - E|X - X'| / 2``, with ``E|X - X'| = 2 / n**2 * sum_i (2 i - n - 1) x_(i)``
    over the sorted draws ``x_(1) <= ... <= x_(n)``.
    """
    x = np.sort(np.asarray(paths, dtype=np.float64), axis=0)
    n = x.shape[0]
    weights = (2.0 * np.arange(1, n + 1) - n - 1.0)[:, None]
    return np.abs(x - y).mean(axis=0) - (weights * x).sum(axis=0) / n**2


def pit_coverage(paths, y, coverage: float, rng) -> np.ndarray:
    """Randomised-PIT coverage (0/1 per step) of the central ``coverage`` interval."""
    below = (paths < y).mean(axis=0)
    at_most = (paths <= y).mean(axis=0)
    u = below + rng.uniform(size=np.shape(y)) * (at_most - below)
    tail = (1.0 - coverage) / 2.0
    return ((u >= tail) & (u <= 1.0 - tail)).astype(np.float64)


def score_paths(paths, y, coverage: float = 0.9, seed: int = 0) -> dict:
    """Mean CRPS, MAE of the median and randomised-PIT coverage of count paths."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.float64)
    median = np.quantile(paths, 0.5, axis=0, method="inverted_cdf")
    return {
        "crps": float(crps_paths(paths, y).mean()),
        "mae": float(np.abs(median - y).mean()),
        "coverage": float(pit_coverage(paths, y, coverage, rng).mean()),
    }


def _gaussian_sd(frame: pd.DataFrame, model: str) -> np.ndarray:
    sds = [
        (frame[f"{model}-hi-{lv}"] - frame[f"{model}-lo-{lv}"]).to_numpy()
        / (2.0 * norm.ppf(0.5 + lv / 200.0))
        for lv in (80, 95)
    ]
    return np.maximum(np.mean(sds, axis=0), 1e-9)  # a zero width (a constant series)


def gaussian_paths(frame: pd.DataFrame, model: str, n: int, rng) -> np.ndarray:
    """Count paths (n, steps) from a statsforecast frame of one series: the Gaussian with
    the model's point forecast as mean and the sd implied by its 80% and 95% intervals,
    rounded and clipped at 0."""
    draws = rng.normal(frame[model].to_numpy(), _gaussian_sd(frame, model),
                       size=(n, len(frame)))
    return np.clip(np.rint(draws), 0, None)


def statsforecast_scores(train: pd.DataFrame, test: pd.DataFrame, *, freq, season_length: int,
                         intermittent: bool, num_samples: int = 500, seed: int = 0,
                         n_jobs: int = 1) -> pd.DataFrame:
    """Forecast ``test``'s steps from ``train`` (long frames) with statsforecast; score them.

    Returns
    -------
    DataFrame with one row per series and model: ``unique_id``, ``forecaster``, ``crps``,
    ``mae``, ``coverage`` (NaN for point forecasts), ``seconds`` (fit + forecast of that
    model over all series, divided by the number of series).
    """
    import time

    from statsforecast import StatsForecast
    from statsforecast import models as sfm

    h = test.groupby("unique_id").size().max()
    groups = [
        [sfm.AutoETS(season_length=season_length), sfm.AutoARIMA(season_length=season_length),
         sfm.SeasonalNaive(season_length=season_length)],
    ]
    if intermittent:
        groups.append([sfm.CrostonClassic(), sfm.CrostonSBA(), sfm.TSB(alpha_d=0.1, alpha_p=0.1),
                       sfm.ADIDA(), sfm.IMAPA()])
    rng = np.random.default_rng(seed)
    truth = {uid: g.y.to_numpy(dtype=np.float64) for uid, g in test.groupby("unique_id")}
    rows = []
    n_series = len(truth)
    for models in groups:
        for model in models:
            name = repr(model)
            start = time.perf_counter()
            sf = StatsForecast(models=[model], freq=freq, n_jobs=n_jobs)
            probabilistic = name in PROBABILISTIC_MODELS
            out = sf.forecast(df=train, h=h, level=list(_LEVELS) if probabilistic else None)
            seconds = (time.perf_counter() - start) / n_series
            for uid, part in out.groupby("unique_id"):
                y = truth[uid]
                point = part[name].to_numpy()
                if probabilistic:
                    paths = gaussian_paths(part, name, num_samples, rng)
                    scores = score_paths(paths, y, 0.9, seed)
                    inside = (y >= part[f"{name}-lo-90"]) & (y <= part[f"{name}-hi-90"])
                    scores["coverage"] = float(np.mean(inside))
                else:
                    err = float(np.abs(point - y).mean())
                    scores = {"crps": err, "mae": err, "coverage": np.nan}
                rows.append({"unique_id": uid, "forecaster": name, **scores, "seconds": seconds})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, digits: dict | None = None) -> str:
    """A GitHub table; ``digits`` maps a column to its decimals (others as ``str``)."""
    digits = digits or {}

    def cell(column, value):
        if column in digits and isinstance(value, (int, float, np.floating)):
            return "–" if np.isnan(value) else f"{value:.{digits[column]}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(cell(c, v) for c, v in row.items()) + " |")
    return "\n".join(lines)
