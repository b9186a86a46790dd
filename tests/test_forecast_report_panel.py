"""``summary``, ``covariate_effect`` and ``components`` of a forecaster fitted on a long frame.

Each series of a panel has its own weights and level path; the per-series reports must be
those of that series (checked against the fitted Laplace state directly) and the stacked
reports the per-series ones under each id.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from posheads import CountForecaster
from posheads.datasets import make_intermittent_panel


@pytest.fixture(scope="module")
def fitted():
    panel, _ = make_intermittent_panel(3, 150, random_state=3)
    rng = np.random.default_rng(3)
    panel["promo"] = (rng.random(len(panel)) < 0.25).astype(float)
    # drop the first 30 days of one series: series of different lengths share the fit
    short = panel["unique_id"] == panel["unique_id"].iloc[-1]
    panel = panel[~short | (panel["ds"] >= panel["ds"].min() + pd.Timedelta(days=30))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = CountForecaster(random_state=0, num_samples=200).fit(panel)
    return fc, panel


def test_summary_of_one_series_is_its_weights(fitted):
    fc, _ = fitted
    for s, uid in enumerate(fc.series_ids_):
        table = fc.summary(series=uid)
        fit = fc.laplace_
        post = fit.log_post[:, s].exp().double().numpy()
        # the posterior mean over the sigma grid of the series' covariate weight
        weight = fit.weight[:, s, -1].double().numpy()
        assert table.loc["promo", "mean"] == pytest.approx((post * weight).sum(), abs=0.05)
    stacked = fc.summary()
    assert list(stacked.index.get_level_values(0).unique()) == list(fc.series_ids_)
    pd.testing.assert_frame_equal(stacked.loc[fc.series_ids_[1]],
                                  fc.summary(series=fc.series_ids_[1]))


def test_covariate_effect_per_series_and_stacked(fitted):
    fc, _ = fitted
    stacked = fc.covariate_effect("promo")
    assert stacked.shape == (2 * len(fc.series_ids_), 3)
    one = fc.covariate_effect("promo", series=fc.series_ids_[0])
    pd.testing.assert_frame_equal(stacked.loc[fc.series_ids_[0]], one)
    assert (one["lower"] <= one["mean"]).all() and (one["mean"] <= one["upper"]).all()


def test_components_follow_the_series_own_steps(fitted):
    fc, panel = fitted
    uid = fc.series_ids_[-1]  # the shortened series
    frame = fc.components(series=uid)
    stamps = pd.DatetimeIndex(panel.loc[panel["unique_id"] == uid, "ds"])
    assert len(frame) == len(stamps) and (frame.index == stamps).all()
    assert np.isfinite(frame.to_numpy()).all()
    assert (frame[("level", "mean")] > 0).all()


def test_panel_reports_name_the_missing_or_unknown_series(fitted):
    fc, _ = fitted
    with pytest.raises(ValueError, match="fitted on 3 series: pass series="):
        fc.components()
    with pytest.raises(ValueError, match="unknown series 'nope'"):
        fc.summary(series="nope")


def test_one_series_fit_refuses_series():
    y = pd.Series(np.random.default_rng(0).poisson(5, 80),
                  index=pd.date_range("2020-01-01", periods=80, freq="D"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = CountForecaster(random_state=0, num_samples=100).fit(y)
    with pytest.raises(ValueError, match="fitted on one series"):
        fc.summary(series="a")
    assert "drift_scale" in fc.summary().index
