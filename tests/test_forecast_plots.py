"""The forecasting figures and components: concise date axes, titles, small multiples, and
``CountForecaster.components`` against a simulated series with known parts.

One forecaster is fitted once (module fixture) on ``make_count_series``' simulation: a
weekly season and one covariate of known effect; its components must recover them (up to
the scale of ``eta``, which differs from the simulator's: the forecaster's mean is
``scale * softplus(eta)``, so correlations are checked, and the sum of the parts against the
true mean).
"""

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from posheads.datasets import make_count_series, make_intermittent_panel
from posheads.estimators.forecasting import CountForecaster
from posheads.estimators.forecasting.plots import (
    format_time_axis,
    plot_component_frame,
    plot_forecasts,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted():
    y, X, info = make_count_series(280, level=2.0, trend=0.0, season_scale=0.4, covariates=1,
                                   coef_scale=0.6, likelihood="poisson", as_frame=True,
                                   random_state=3)
    est = CountForecaster(likelihood="poisson", num_samples=200, random_state=0).fit(y, X)
    return est, y, X, info


@pytest.mark.slow
def test_components_recover_the_simulated_parts(fitted):
    est, y, _, info = fitted
    comp = est.components(coverage=0.8)
    names = list(dict.fromkeys(comp.columns.get_level_values(0)))
    assert names == ["level", "season (period 7)", "x0"]
    assert comp.index.equals(y.index)
    for name in names:
        part = comp[name]
        assert (part["lower"] <= part["mean"] + 1e-12).all()
        assert (part["mean"] <= part["upper"] + 1e-12).all()
    season = comp["season (period 7)", "mean"].to_numpy()
    assert np.corrcoef(season, info.seasonal[:, 0])[0, 1] > 0.9
    assert np.corrcoef(comp["x0", "mean"], info.covariate_effect)[0, 1] > 0.95
    # the parts put back together give the expected count: compare with the true mean
    level = comp["level", "mean"].to_numpy()
    eta = np.log(np.expm1(level / est.scales_[0])) + season + comp["x0", "mean"].to_numpy()
    fitted_mean = est.scales_[0] * np.logaddexp(0.0, eta)
    assert np.median(np.abs(fitted_mean / info.mean - 1.0)) < 0.15
    # no trend was simulated: the level stays within 30% of its mean
    assert np.ptp(level) < 0.3 * level.mean()


def test_plot_components_and_plot_have_titles_and_concise_dates(fitted):
    est, y = fitted[:2]
    fig = est.plot_components()
    axes = fig.axes
    assert len(axes) == 3 and "components" in fig.get_suptitle()
    assert [ax.get_title(loc="left") for ax in axes] == ["level", "season (period 7)", "x0"]
    assert isinstance(axes[-1].xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    future = pd.DataFrame({"x0": np.zeros(14)},
                          index=pd.date_range(y.index[-1], periods=15, freq="D")[1:])
    ax = est.plot(14, future).axes[0]
    assert "14-step forecast" in ax.get_title()
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)


def test_format_time_axis_leaves_numbers_alone():
    ax = plt.subplots()[1]
    ax.plot(np.arange(5), np.arange(5))
    before = type(ax.xaxis.get_major_formatter())
    format_time_axis(ax)
    assert type(ax.xaxis.get_major_formatter()) is before


def _forecast_frame(history, h):
    """A forecast frame of the form predict(h, level=[90]) returns: the last value +- 2."""
    rows = []
    for uid, g in history.groupby("unique_id"):
        stamps = pd.date_range(g.ds.iloc[-1], periods=h + 1, freq="D")[1:]
        last = float(g.y.iloc[-1])
        rows.append(pd.DataFrame({"unique_id": uid, "ds": stamps, "mean": last,
                                  "median": last, "lo-90": last - 2, "hi-90": last + 2}))
    return pd.concat(rows, ignore_index=True)


def test_plot_forecasts_small_multiples():
    frame, _ = make_intermittent_panel(5, 60, random_state=1)
    history = frame[frame.ds < frame.ds.max() - pd.Timedelta(days=6)]
    truth = frame[frame.ds >= frame.ds.max() - pd.Timedelta(days=6)]
    forecast = _forecast_frame(history, 7)
    fig = plot_forecasts(history, forecast, level=90, truth=truth, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 6 and len(visible) == 5  # 3 rows of 2, the last panel hidden
    assert [ax.get_title() for ax in visible] == sorted(frame.unique_id.unique())
    # history, interval, mean and held-out truth in each panel
    assert all(len(ax.lines) == 3 and len(ax.collections) == 1 for ax in visible)
    assert isinstance(visible[0].xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    sf_style = forecast.rename(columns={"mean": "AutoETS", "lo-90": "AutoETS-lo-90",
                                        "hi-90": "AutoETS-hi-90"})
    fig = plot_forecasts(history, sf_style, model="AutoETS", ids=["S1"])
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "S1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 80}, r"lacks the column\(s\) \['lo-80', 'hi-80'\]"),
        ({"ids": ["nope"]}, r"series \['nope'\] are not in the forecast frame"),
        ({"ids": []}, "ids is empty"),
    ],
)
def test_plot_forecasts_bad_input(kwargs, message):
    frame, _ = make_intermittent_panel(2, 30, random_state=2)
    with pytest.raises(ValueError, match=message):
        plot_forecasts(frame, _forecast_frame(frame, 5), **kwargs)


def test_plot_component_frame_needs_columns():
    with pytest.raises(ValueError, match="no columns"):
        plot_component_frame(pd.DataFrame(index=pd.RangeIndex(3)))


def test_components_refuses_bad_coverage(fitted):
    with pytest.raises(ValueError, match="coverage must be in"):
        fitted[0].components(coverage=1.5)


@pytest.mark.slow
def test_plot_panel_of_a_long_frame_fit():
    frame, _ = make_intermittent_panel(4, 120, random_state=4)
    est = CountForecaster(num_samples=100, random_state=0).fit(frame)
    fig = est.plot_panel(14, ids=["S0", "S2", "S3"], ncols=3)
    assert [ax.get_title() for ax in fig.axes] == ["S0", "S2", "S3"]
    for ax in fig.axes:
        observed, mean = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
        assert len(observed) == 56 and len(mean) == 14  # four horizons of history
    with pytest.raises(ValueError, match="fitted on 4 series: pass series="):
        est.components()
