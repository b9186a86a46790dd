"""Figures of forecasts: a readable date axis, small multiples, and model components.

- :func:`format_time_axis` puts matplotlib's concise date labels on a time axis (one short
  label per tick, the year or month written once in the offset), so that tick labels
  never overlap whatever the span.
- :func:`draw_forecast` draws one series: the end of its history, the mean forecast, its
  central interval and optionally the held-out truth.
- :func:`plot_forecasts` draws small multiples, one panel per series, from long frames:
  the history (``unique_id, ds, y``) and a forecast frame as
  :meth:`~posheads.estimators.forecasting.CountForecaster.predict` returns it with
  ``level=`` (``mean``, ``lo-L``, ``hi-L``; statsforecast's frames work too, by naming
  the model's column).
- :func:`plot_component_frame` draws the components of a fitted model (level, seasons,
  covariate effects; see ``CountForecaster.components``), one panel each, on a shared
  time axis.

matplotlib is imported inside each function.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["draw_forecast", "format_time_axis", "plot_component_frame", "plot_forecasts"]


def format_time_axis(ax) -> None:
    """Concise date ticks on the x axis of ``ax`` when it shows time stamps.

    Parameters
    ----------
    ax : matplotlib Axes
        Left unchanged when its x axis holds plain numbers (steps without a calendar).
    """
    import matplotlib.dates as mdates

    # matplotlib's (and pandas') date converters install an AutoDateFormatter: only then
    # does the axis hold dates
    formatter = ax.xaxis.get_major_formatter()
    if not isinstance(formatter, mdates.AutoDateFormatter | mdates.ConciseDateFormatter):
        return
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def draw_forecast(ax, t_hist, history, t_future, mean, lower, upper, *, coverage=0.9,
                  truth=None, title=None, ylabel=None, legend=True) -> None:
    """Draw one series' history, mean forecast and central interval on ``ax``.

    Parameters
    ----------
    ax : matplotlib Axes
    t_hist, history : array-like of shape (n_history,)
        Time stamps (or steps) and counts of the history shown.
    t_future, mean, lower, upper : array-like of shape (horizon,)
        Time stamps of the forecast steps, the mean forecast and the interval's bounds.
    coverage : float, default=0.9
        The interval's coverage, for the legend.
    truth : array-like of shape (horizon,), default=None
        Held-out counts of the forecast steps, drawn as dots.
    title, ylabel : str, default=None
    legend : bool, default=True
    """
    ax.plot(t_hist, history, color="0.2", lw=1, label="observed")
    ax.fill_between(t_future, lower, upper, color="C0", alpha=0.25, lw=0,
                    label=f"{coverage:.0%} interval")
    ax.plot(t_future, mean, color="C0", lw=1.5, label="forecast mean")
    if truth is not None:
        ax.plot(t_future, truth, ".", color="C3", ms=4, label="held out")
    if title is not None:
        ax.set_title(title)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if legend:
        ax.legend(loc="best", frameon=False, fontsize="small")
    format_time_axis(ax)


def _check_columns(frame, columns, what):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {list(frame.columns)}")


def plot_forecasts(history: pd.DataFrame, forecast: pd.DataFrame, *, level=90, ids=None,
                   truth: pd.DataFrame | None = None, n_history=None, ncols=3, model="mean",
                   id_col="unique_id", time_col="ds", target_col="y", sharey=False,
                   panel_size=(4.0, 2.6)):
    """Small multiples: one panel per series with its history, forecast and interval.

    Parameters
    ----------
    history : DataFrame
        Long frame with ``id_col``, ``time_col`` and ``target_col``.
    forecast : DataFrame
        Long frame with ``id_col``, ``time_col``, the point column ``model`` and
        ``{model}-lo-{level}``, ``{model}-hi-{level}`` (for ``model="mean"``: ``lo-{level}``
        and ``hi-{level}``, as ``CountForecaster.predict(h, level=[...])`` writes them).
    level : int, default=90
        The interval drawn, in percent.
    ids : sequence, default=None
        The series to draw, in order (default: every series of ``forecast``, at most 12).
    truth : DataFrame, default=None
        Long frame of held-out counts (same columns as ``history``), drawn as dots.
    n_history : int, default=None
        History steps shown per series (default: four horizons).
    ncols : int, default=3
    model : str, default="mean"
        The point forecast's column.
    id_col, time_col, target_col : str
    sharey : bool, default=False
    panel_size : (float, float), default=(4.0, 2.6)
        Width and height of one panel, inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    prefix = "" if model == "mean" else f"{model}-"
    lo, hi = f"{prefix}lo-{level:g}", f"{prefix}hi-{level:g}"
    _check_columns(history, [id_col, time_col, target_col], "history")
    _check_columns(forecast, [id_col, time_col, model, lo, hi], "forecast")
    if ids is None:
        ids = list(pd.unique(forecast[id_col]))[:12]
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty: name at least one series to draw")
    unknown = [i for i in ids if not (forecast[id_col] == i).any()]
    if unknown:
        raise ValueError(f"series {unknown} are not in the forecast frame")
    ncols = max(1, min(int(ncols), len(ids)))
    nrows = math.ceil(len(ids) / ncols)
    fig, axes = plt.subplots(nrows, ncols, sharey=sharey, squeeze=False,
                             figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    for k, (ax, uid) in enumerate(zip(axes.flat, ids, strict=False)):
        fut = forecast[forecast[id_col] == uid]
        past = history[history[id_col] == uid]
        keep = 4 * len(fut) if n_history is None else int(n_history)
        past = past.iloc[-keep:]
        held = None
        if truth is not None:
            held = truth[truth[id_col] == uid].set_index(time_col)[target_col]
            held = held.reindex(fut[time_col]).to_numpy(dtype=np.float64)
        draw_forecast(ax, past[time_col], past[target_col], fut[time_col], fut[model],
                      fut[lo], fut[hi], coverage=level / 100, truth=held, title=str(uid),
                      legend=k == 0)
    for ax in list(axes.flat)[len(ids):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_component_frame(components: pd.DataFrame, *, observed=None, title=None,
                         panel_height=2.0, width=9.0):
    """One panel per component of a fitted model, on a shared time axis.

    Parameters
    ----------
    components : DataFrame
        Indexed by time (or step); columns ``(component, stat)`` with ``stat`` in
        ``mean``, ``lower``, ``upper`` (see ``CountForecaster.components``). A component
        named ``"level"`` is drawn on the count scale over ``observed``.
    observed : array-like of shape (n_steps,), default=None
        The training counts, drawn under the level.
    title : str, default=None
        Title of the figure.
    panel_height, width : float
        Inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(components.columns.get_level_values(0)))
    if not names:
        raise ValueError("components has no columns")
    fig, axes = plt.subplots(len(names), 1, sharex=True, squeeze=False,
                             figsize=(width, panel_height * len(names)))
    t = components.index
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = components[name]
        if name == "level" and observed is not None:
            ax.plot(t, np.asarray(observed), color="0.6", lw=0.8, label="observed")
        ax.fill_between(t, part["lower"], part["upper"], color="C0", alpha=0.25, lw=0)
        ax.plot(t, part["mean"], color="C0", lw=1.2, label=name)
        if name != "level":
            ax.axhline(0.0, color="0.5", lw=0.6, ls=":")
        ax.set_title(name, loc="left", fontsize="medium")
        format_time_axis(ax)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
