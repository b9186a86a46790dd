"""Count forecasting: the Pyro model, CountForecaster, the seasonal naive and the CLI.

The forecasters live in :mod:`posheads.estimators.forecasting`; the ``likelihood`` section
checks how the forecaster reads its count law (families, ``"auto"``, the comparator).

Fits use a few hundred SVI steps on short simulated series, so the whole file runs in well
under a minute; the statistical checks compare against the simulator's known truth with
tolerances that hold for the fixed seeds by a wide margin.
"""

import argparse

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.contrib.forecast import Forecaster
from pyro.contrib.forecast.util import prefix_condition, reshape_batch
from sklearn.base import clone

from posheads.datasets import make_count_series
from posheads.distributions import SoftplusNegativeBinomial, SoftplusPoisson
from posheads.estimators import PoissonSoftplusRegressor, load
from posheads.estimators.forecasting import (
    CountForecaster,
    SeasonalNaiveForecaster,
    dispersion_index,
)
from posheads.families import (
    DISCRETIZED_LOGISTIC,
    NEGATIVE_BINOMIAL,
    ZERO_INFLATED_POISSON,
    Family,
)
from posheads.models.forecast import CountForecastModel, SoftplusDiscretizedLogistic

from .conftest import DEVICES

FAST = {"num_steps": 150, "num_samples": 200, "random_state": 0}


@pytest.fixture(scope="module")
def series():
    y, X, info = make_count_series(
        140,
        season_lengths=(7,),
        level=3.0,
        trend=0.0,
        covariates=1,
        likelihood="negative_binomial",
        concentration=20.0,
        as_frame=True,
        random_state=1,
    )
    return y, X, info


@pytest.fixture(scope="module")
def fitted(series):
    y, X, _ = series
    return CountForecaster(**FAST).fit(y.iloc[:126], X.iloc[:126])


# ----------------------------------------------------------------- the model
COUNT_LAWS = [
    lambda eta: SoftplusPoisson(eta, exposure=torch.full_like(eta, 3.0)),
    lambda eta: SoftplusNegativeBinomial(
        eta, torch.tensor(4.0), exposure=torch.full_like(eta, 3.0)
    ),
    lambda eta: SoftplusDiscretizedLogistic(
        eta, torch.tensor(0.5), exposure=torch.full_like(eta, 3.0)
    ),
]


@pytest.mark.parametrize("make", COUNT_LAWS)
def test_framework_registrations_reshape_and_condition(make):
    eta = torch.randn(2, 10, 1)
    d = make(eta)
    r = reshape_batch(d, (2, 1, 10, 1))
    assert type(r) is type(d) and r.batch_shape == (2, 1, 10, 1)
    assert torch.equal(r.eta.reshape(-1), eta.reshape(-1))
    c = prefix_condition(d, torch.zeros(2, 7, 1))
    assert c.batch_shape == (2, 3, 1)
    assert torch.equal(c.eta, eta[:, 7:])  # counts are independent given eta: a slice
    value = torch.tensor(2.0)
    assert torch.allclose(c.log_prob(value), d.log_prob(value)[:, 7:])


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial", "discretized_logistic"])
def test_model_forecasts_integer_counts(likelihood):
    y = torch.poisson(torch.full((40, 1), 6.0))
    model = CountForecastModel(likelihood=likelihood, scale=6.0)
    fc = Forecaster(model, y, torch.zeros(40, 0), num_steps=20, log_every=0)
    draws = fc(y, torch.zeros(47, 0), num_samples=50)
    assert draws.shape == (50, 7, 1)
    assert torch.all(draws >= 0) and torch.all(draws == draws.round())


def test_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="likelihood"):
        CountForecastModel(likelihood="gaussian")
    with pytest.raises(ValueError, match="scale"):
        CountForecastModel(scale=0.0)


def test_discretized_logistic_is_a_count_law():
    d = SoftplusDiscretizedLogistic(
        torch.tensor([300.0, 2.0, -40.0], dtype=torch.float64),
        torch.tensor([0.1, 1.0, 1.0], dtype=torch.float64),
    )
    k = torch.arange(0.0, 500.0, dtype=torch.float64).unsqueeze(-1)
    p = d.log_prob(k).exp()
    assert torch.allclose(p.sum(0), torch.ones(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose((p * k).sum(0), d.mean, rtol=1e-8)
    var = (p * k * k).sum(0) - d.mean**2
    assert abs(float(var[0]) - 0.1 * 300 - 1 / 12) < 0.5  # dispersion * mean + rounding
    assert float(d.mean[2]) < 1e-12 and torch.isfinite(d.log_prob(k)).all()


# -------------------------------------------------------------- the estimator
def test_predictions_shapes_types_and_calendar(fitted, series):
    y, X, _ = series
    mean = fitted.predict(14, X.iloc[126:])
    assert isinstance(mean, pd.Series) and mean.index.equals(y.index[126:])
    iv = fitted.predict_interval(14, 0.9, X.iloc[126:])
    assert list(iv.columns) == ["lower", "upper"] and iv.index.equals(y.index[126:])
    assert np.all(iv.lower <= mean) and np.all(mean <= iv.upper)
    paths = fitted.sample_paths(14, 30, X.iloc[126:])
    assert paths.shape == (30, 14) and paths.dtype == np.int64 and paths.min() >= 0


def test_forecast_is_close_to_the_truth(fitted, series):
    y, X, info = series
    mean = fitted.predict(14, X.iloc[126:]).to_numpy()
    truth = info.mean.iloc[126:].to_numpy()
    assert np.mean(np.abs(mean - truth) / truth) < 0.25
    iv = fitted.predict_interval(14, 0.9, X.iloc[126:])
    inside = (y.iloc[126:] >= iv.lower) & (y.iloc[126:] <= iv.upper)
    assert inside.mean() >= 0.7


def test_same_seed_same_paths_and_inputs_untouched(series):
    y, X, _ = series
    y0, X0 = y.copy(), X.copy()
    a = CountForecaster(num_steps=30, num_samples=50, random_state=3).fit(y, X)
    b = CountForecaster(num_steps=30, num_samples=50, random_state=3).fit(y, X)
    future = X.iloc[:5].set_axis(pd.date_range(y.index[-1], periods=6, freq="D")[1:])
    assert np.array_equal(a.sample_paths(5, 20, future), b.sample_paths(5, 20, future))
    assert np.array_equal(a.predict_interval(5, 0.8, future), b.predict_interval(5, 0.8, future))
    pd.testing.assert_series_equal(y, y0)
    pd.testing.assert_frame_equal(X, X0)
    assert len(pyro.get_param_store()) == 0  # fits keep their parameters to themselves


def test_plain_arrays_and_other_likelihoods(series):
    y, _, _ = series
    values = y.to_numpy()[:60]
    for likelihood, trend in [
        ("poisson", True),
        ("discretized_logistic", False),
        ("log_gaussian", False),
    ]:
        est = CountForecaster(
            (7,), likelihood=likelihood, trend=trend, num_steps=40, num_samples=50, random_state=0
        ).fit(values)
        mean = est.predict(7)
        assert isinstance(mean, np.ndarray) and mean.shape == (7,) and np.all(mean > 0)
        assert est.predict_interval(7).shape == (7, 2)


def test_nuts_engine_runs():
    y = np.random.default_rng(0).poisson(5.0, size=20)
    est = CountForecaster(
        (), likelihood="poisson", inference="nuts", num_warmup=10, num_samples=10, random_state=0
    ).fit(y)
    paths = est.sample_paths(4, 10)
    assert paths.shape == (10, 4) and est.losses_ == []
    assert {"bias", "drift_scale"} <= set(est.summary().index)


def test_summary_and_covariate_effect():
    rng = np.random.default_rng(0)
    step = (np.arange(80) >= 50).astype(float)
    y = rng.poisson(20.0 * (1.0 - 0.4 * step))
    est = CountForecaster((), num_steps=300, num_samples=200, random_state=0)
    est.fit(y, pd.DataFrame({"law": step}))
    table = est.summary()
    assert {"bias", "law", "drift_scale", "concentration"} <= set(table.index)
    effect = est.covariate_effect("law")
    assert effect.loc["relative_change", "upper"] < 0  # the step is clearly negative
    assert -0.6 < effect.loc["relative_change", "mean"] < -0.2
    with pytest.raises(ValueError, match="unknown covariate"):
        est.covariate_effect("speed")


def test_sklearn_parameters(fitted):
    params = fitted.get_params()
    assert params["num_steps"] == 150 and params["likelihood"] == "auto"
    assert params["device"] == "auto" and params["dtype"] == "float64"
    # "auto" resolved by the rule (test_auto_likelihood_* checks both of its answers)
    under = dispersion_index(fitted.history_, 7) < 0.5
    expected = DISCRETIZED_LOGISTIC if under else NEGATIVE_BINOMIAL
    assert fitted.likelihood_ == expected.name and fitted.model_.family is expected
    other = clone(fitted).set_params(likelihood="poisson")
    assert other.likelihood == "poisson" and not hasattr(other, "forecaster_")
    assert fitted.season_lengths_ == (7.0,) and fitted.n_features_in_ == 1


BAD_SERIES = [
    (np.array([1.0, 2.0, -1.0, 3.0]), "negative"),
    (np.array([1.0, np.nan, 2.0, 3.0]), "NaN"),
    (np.array([1.0, 2.5, 2.0, 3.0]), "whole numbers"),
    (np.ones((4, 2)), "1-D"),
    (
        pd.Series(
            [1, 2, 3, 4],
            index=pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-04", "2020-01-09"]),
        ),
        "irregular",
    ),
]


@pytest.mark.parametrize(("y", "match"), BAD_SERIES)
def test_bad_series_raise_clear_errors(y, match):
    with pytest.raises(ValueError, match=match):
        CountForecaster(num_steps=5).fit(y)


def test_bad_seasons_raise_clear_errors():
    y = np.arange(30)
    with pytest.raises(ValueError, match="fourier_terms for period 7"):
        CountForecaster((7,), fourier_terms=4, num_steps=5).fit(y)
    with pytest.raises(ValueError, match="periods >= 2"):
        CountForecaster((1,), num_steps=5).fit(y)


def test_bad_covariates_raise_clear_errors(fitted, series):
    y, X, _ = series
    with pytest.raises(ValueError, match="rows"):
        fitted.predict(14, X.iloc[126:136])
    with pytest.raises(ValueError, match="X_future"):
        fitted.predict(14)
    with pytest.raises(ValueError, match="horizon"):
        fitted.predict(0, X.iloc[126:126])
    with pytest.raises(ValueError, match="NaN"):
        CountForecaster(num_steps=5).fit(y, X.assign(x0=np.nan))
    with pytest.raises(ValueError, match="rows"):
        CountForecaster(num_steps=5).fit(y, X.iloc[:10])
    plain = CountForecaster((), num_steps=5).fit(y.to_numpy())
    with pytest.raises(ValueError, match="without covariates"):
        plain.predict(3, np.zeros((3, 1)))


def test_backtest_table_and_seasonal_naive(series):
    y, X, _ = series
    naive = SeasonalNaiveForecaster(random_state=0)
    table = naive.backtest(y, horizon=7, n_windows=3)
    assert list(table.columns) == [
        "train_end",
        "test_start",
        "test_end",
        "n_train",
        "crps",
        "mae",
        "coverage",
    ]
    assert table.n_train.tolist() == [119, 126, 133]
    assert table.test_end.iloc[-1] == y.index[-1]
    assert np.all(table.crps > 0) and np.all(table.coverage.between(0, 1))
    est = CountForecaster(num_steps=60, num_samples=100, random_state=0)
    scores = est.backtest(y, X, horizon=7, n_windows=2)
    assert len(scores) == 2 and not hasattr(est, "forecaster_")  # clones are fitted
    with pytest.raises(ValueError, match="training steps"):
        naive.backtest(y, horizon=50, n_windows=5)


def test_seasonal_naive_repeats_the_last_season():
    y = np.array([1, 5, 2, 6, 1, 5, 2, 6])
    f = SeasonalNaiveForecaster(season_length=4, num_samples=4000, random_state=0).fit(y)
    assert f.predict(6).tolist() == [1, 5, 2, 6, 1, 5]
    assert f.sigma_ == 0.0 and np.all(f.sample_paths(3, 5) == [1, 5, 2])


def test_plot_returns_a_figure(fitted, series):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, X, _ = series
    fig = fitted.plot(14, X.iloc[126:], n_history=28)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 1
    plt.close(fig)


# ------------------------------------------------------------------- the CLI
def _run_cli(argv):
    from posheads.cli.forecast import add_forecast_parser

    parser = argparse.ArgumentParser(prog="posheads")
    add_forecast_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_forecast_and_figure(tmp_path, series):
    y, X, _ = series
    frame = pd.DataFrame(
        {"day": y.index[:126], "n": y.iloc[:126].to_numpy(), "x0": X.x0.iloc[:126].to_numpy()}
    )
    frame.to_csv(tmp_path / "series.csv", index=False)
    pd.DataFrame({"day": y.index[126:], "x0": X.x0.iloc[126:].to_numpy()}).to_csv(
        tmp_path / "future.csv", index=False
    )
    out = tmp_path / "fc.csv"
    status = _run_cli(
        [
            "forecast",
            str(tmp_path / "series.csv"),
            "--date",
            "day",
            "--target",
            "n",
            "--horizon",
            "14",
            "--covariates",
            "x0",
            "--future",
            str(tmp_path / "future.csv"),
            "--steps",
            "40",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["day", "mean", "lower", "upper"] and len(table) == 14
    assert (tmp_path / "fc.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_user_mistakes_are_cli_errors(tmp_path):
    from posheads.cli.io import CLIError

    pd.DataFrame(
        {"day": pd.date_range("2020-01-01", periods=30), "n": np.arange(30), "x": np.ones(30)}
    ).to_csv(tmp_path / "s.csv", index=False)
    base = [
        "forecast",
        str(tmp_path / "s.csv"),
        "--date",
        "day",
        "--horizon",
        "3",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "o.csv"),
        "--quiet",
    ]
    with pytest.raises(CLIError, match="--future"):
        _run_cli([*base, "--target", "n", "--covariates", "x"])
    with pytest.raises(CLIError, match="missing column"):
        _run_cli([*base, "--target", "visits"])
    pd.DataFrame({"day": pd.date_range("2020-01-01", periods=30), "n": -np.arange(30)}).to_csv(
        tmp_path / "neg.csv", index=False
    )
    with pytest.raises(CLIError, match="negative"):
        _run_cli(["forecast", str(tmp_path / "neg.csv"), *base[2:], "--target", "n"])
    assert not (tmp_path / "o.csv").exists()  # nothing half-written


# ------------------------------------------------------- likelihood="auto"
def test_dispersion_index_tells_under_from_over_dispersion():
    rng = np.random.default_rng(0)
    week = 300.0 + 40.0 * np.sin(2 * np.pi * np.arange(364) / 7)
    poisson = rng.poisson(week)
    scheduled = np.round(week + rng.normal(0.0, 5.0, 364))  # sd 5 where a Poisson has 17
    over = rng.negative_binomial(5.0, 5.0 / (5.0 + week))
    assert 0.7 < dispersion_index(poisson, 7) < 1.4
    assert dispersion_index(scheduled, 7) < 0.2
    assert dispersion_index(over, 7) > 5.0
    assert dispersion_index(np.zeros(10)) == np.inf and dispersion_index([3.0], 7) == np.inf


def test_auto_likelihood_takes_the_discretized_logistic_for_scheduled_counts():
    rng = np.random.default_rng(1)
    week = 300.0 + 40.0 * np.sin(2 * np.pi * np.arange(70) / 7)
    y = pd.Series(
        np.round(week + rng.normal(0.0, 5.0, 70)),
        index=pd.date_range("2021-01-04", periods=70, freq="D"),
    )
    est = CountForecaster(num_steps=5, num_samples=10, random_state=0).fit(y)
    assert est.likelihood_ == "discretized_logistic"
    assert est.model_.likelihood == "discretized_logistic"
    forced = clone(est).set_params(likelihood="poisson").fit(y)
    assert forced.likelihood_ == "poisson"


def test_auto_likelihood_takes_the_negative_binomial_for_over_dispersed_counts():
    rng = np.random.default_rng(2)
    week = 30.0 + 10.0 * np.sin(2 * np.pi * np.arange(70) / 7)
    y = pd.Series(
        rng.negative_binomial(2.0, 2.0 / (2.0 + week)),  # variance 1 + mean / 2 times the mean
        index=pd.date_range("2021-01-04", periods=70, freq="D"),
    )
    assert dispersion_index(y.to_numpy(), 7) > 2.0
    est = CountForecaster(num_steps=5, num_samples=10, random_state=0).fit(y)
    assert est.likelihood_ == "negative_binomial" and est.model_.family is NEGATIVE_BINOMIAL


# ------------------------------------------------- likelihood: families, names
SHORT = {"num_steps": 5, "num_samples": 10, "random_state": 0}


def _short_series():
    return np.random.default_rng(0).poisson(8.0, size=30)


def test_likelihood_takes_a_family_object():
    y = _short_series()
    est = CountForecaster((), likelihood=NEGATIVE_BINOMIAL, **SHORT).fit(y)
    assert est.likelihood_ == "negative_binomial" and est.model_.family is NEGATIVE_BINOMIAL
    assert clone(est).likelihood is NEGATIVE_BINOMIAL  # a registered family clones as itself
    # a family of one's own, never registered: the forecaster uses the object itself
    mine = Family("my_counts", SoftplusPoisson, description="Poisson, unregistered")
    own = CountForecaster((), likelihood=mine, **SHORT).fit(y)
    assert own.likelihood_ == "my_counts" and own.model_.family is mine
    assert own.model_.shape_site is None
    assert own.sample_paths(3, 5).shape == (5, 3) and np.all(own.predict(3) > 0)


def test_likelihood_names_take_hyphens():
    y = _short_series()
    est = CountForecaster((), likelihood="negative-binomial", **SHORT).fit(y)
    assert est.likelihood_ == "negative_binomial" and est.model_.family is NEGATIVE_BINOMIAL
    assert est.get_params()["likelihood"] == "negative-binomial"  # stored as given
    logged = CountForecaster((), likelihood="log-gaussian", **SHORT).fit(y)
    assert logged.likelihood_ == "log_gaussian" and "sigma" in logged.summary().index


@pytest.mark.parametrize(
    ("likelihood", "match"),
    [
        ("gaussian", "likelihood must be 'auto', 'log_gaussian' or a family"),
        ("zero_inflated_poisson", "likelihood 'zero_inflated_poisson' has a zero part"),
        (ZERO_INFLATED_POISSON, "likelihood 'zero_inflated_poisson' has a zero part"),
        ("hurdle-negative-binomial", "likelihood 'hurdle_negative_binomial' has a zero part"),
        (3, "likelihood"),
    ],
)
def test_likelihood_refuses_unknown_names_and_families_with_parts(likelihood, match):
    with pytest.raises(ValueError, match=match):
        CountForecaster((), likelihood=likelihood, inference="svi", **SHORT).fit(
            _short_series())


def test_save_stores_a_registered_family_by_name(tmp_path):
    est = CountForecaster((), likelihood=NEGATIVE_BINOMIAL, **SHORT).fit(_short_series())
    est.save(tmp_path / "f")
    back = CountForecaster.load(tmp_path / "f")
    assert back.likelihood == "negative_binomial" and back.model_.family is NEGATIVE_BINOMIAL
    unregistered = Family("my_nb", NEGATIVE_BINOMIAL.distribution,
                          shapes=NEGATIVE_BINOMIAL.shapes)
    est = CountForecaster((), likelihood=unregistered, **SHORT).fit(_short_series())
    with pytest.raises(ValueError, match="unregistered family 'my_nb'"):
        est.save(tmp_path / "g")


def test_import_paths_name_the_same_classes():
    import posheads
    import posheads.estimators as estimators
    from posheads.estimators import forecaster as compat

    for name in ("CountForecaster", "SeasonalNaiveForecaster"):
        cls = getattr(estimators, name)
        assert getattr(posheads, name) is cls and getattr(compat, name) is cls
    assert compat.dispersion_index is dispersion_index


# ------------------------------------------------------------ device, dtype
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", torch.float64])
def test_device_and_dtype(series, device, dtype):
    y, X, _ = series
    est = CountForecaster(
        device=device, dtype=dtype, num_steps=20, num_samples=30, random_state=0
    ).fit(y.iloc[:126], X.iloc[:126])
    assert est._device.type == device
    expected = torch.float32 if dtype == "float32" else torch.float64
    assert est.laplace_.level.dtype == expected
    mean = est.predict(14, X.iloc[126:])
    assert mean.dtype == np.float64 and np.all(np.isfinite(mean))
    assert est.sample_paths(14, 10, X.iloc[126:]).dtype == np.int64
    assert np.isfinite(est.summary().to_numpy()).all()


def test_bad_device_and_dtype_raise_clear_errors(series):
    y, _, _ = series
    with pytest.raises(ValueError, match="device"):
        CountForecaster(device="abacus", num_steps=2).fit(y)
    with pytest.raises(ValueError, match="dtype"):
        CountForecaster(dtype="int8", num_steps=2).fit(y)


# -------------------------------------------------------------- save / load
@pytest.mark.parametrize(
    "options",
    [
        {"num_steps": 40},
        {"num_steps": 40, "level_steps": "jumps"},
        {"num_steps": 40, "inference": "svi"},
        {"likelihood": "log_gaussian", "num_steps": 30, "dtype": "float32"},
        {"inference": "nuts", "likelihood": "poisson", "num_warmup": 10, "num_samples": 20},
    ],
    ids=["laplace", "laplace-jumps", "svi", "log-gaussian", "nuts"],
)
def test_save_load_round_trip(tmp_path, series, options):
    y, X, _ = series
    options = {"num_samples": 60, "random_state": 0, **options}
    est = CountForecaster(**options).fit(y.iloc[:126], X.iloc[:126])
    est.save(tmp_path)
    back = CountForecaster.load(tmp_path)
    again = load(tmp_path)  # the generic loader finds the class too
    future = X.iloc[126:]
    assert back.get_params() == est.get_params()
    pd.testing.assert_series_equal(back.predict(14, future), est.predict(14, future))
    pd.testing.assert_frame_equal(
        back.predict_interval(14, 0.8, future), est.predict_interval(14, 0.8, future)
    )
    assert np.array_equal(again.sample_paths(14, 25, future), est.sample_paths(14, 25, future))
    pd.testing.assert_frame_equal(back.summary(), est.summary())
    assert back.likelihood_ == est.likelihood_ and back.losses_ == est.losses_
    assert list(back.feature_names_in_) == ["x0"]
    assert len(pyro.get_param_store()) == 0


def test_a_forecaster_saved_before_the_softplus_guides_still_loads(tmp_path):
    """A save without the guide's name holds Pyro AutoNormal's parameters (the same
    softplus-mapped values, another name): the loader takes them, and the forecasts agree."""
    import json

    y = np.random.default_rng(0).poisson(8.0, size=60)
    est = CountForecaster((), inference="svi", num_steps=30, num_samples=40,
                          random_state=2).fit(y)
    est.save(tmp_path / "f")
    meta = json.loads((tmp_path / "f" / "estimator.json").read_text())
    assert meta["attributes"].pop("guide") == "softplus_normal"
    (tmp_path / "f" / "estimator.json").write_text(json.dumps(meta))
    blob = torch.load(tmp_path / "f" / "tensors.pt", weights_only=True)
    params = blob["nested"]["posterior"]["params"]
    for name in list(params):  # the names Pyro's AutoNormal gives them
        params[name.replace("SoftplusAutoNormal.", "AutoNormal.")] = params.pop(name)
    torch.save(blob, tmp_path / "f" / "tensors.pt")
    back = CountForecaster.load(tmp_path / "f")
    np.testing.assert_allclose(back.predict(6), est.predict(6), rtol=1e-10)


def test_save_load_plain_array_and_errors(tmp_path):
    y = np.random.default_rng(0).poisson(8.0, size=50)
    est = CountForecaster((), num_steps=20, num_samples=30, random_state=1).fit(y)
    est.save(tmp_path / "f")
    back = CountForecaster.load(tmp_path / "f")
    assert back.series_info_.index is None
    assert np.array_equal(back.predict(5), est.predict(5))
    with pytest.raises(ValueError, match=r"estimator\.json"):
        CountForecaster.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds a CountForecaster, not a"):
        PoissonSoftplusRegressor.load(tmp_path / "f")
