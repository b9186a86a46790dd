"""Tests of posheads.datasets: the shipped CSV files, their loaders and checksums, and the
simulators (reproducible, validated, and recovering their own parameters in a quick fit).

Recovery tolerances are four standard errors of the fitted parameter (from the Fisher
information at the estimate), so a correct simulator fails with probability about 6e-5 per
parameter; the seeds are fixed, so the tests are deterministic.
"""

import hashlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, gammaln
from sklearn.linear_model import PoissonRegressor
from sklearn.utils import Bunch

from posheads import datasets as ds

_base = ds._base  # the private module holding DATA_DIR and CHECKSUMS

N_SE = 4.0  # tolerance of every recovery check, in standard errors

# loader, keyword arguments, rows, numpy feature columns, target name, file
LOADERS = [
    (ds.load_biochemists, {}, 915, 5, "art", "biochemists.csv"),
    (ds.load_nmes1988, {}, 4406, 16, "visits", "nmes1988.csv"),
    (ds.load_seatbelts, {}, 192, 3, "VanKilled", "seatbelts.csv"),
    (ds.load_seatbelts, {"target": "DriversKilled"}, 192, 3, "DriversKilled", "seatbelts.csv"),
    (ds.load_nyc_departures, {"freq": "D"}, 1095, 12, "departures", "nyc_departures_daily.csv"),
    (
        ds.load_nyc_departures,
        {"freq": "D", "origin": "LGA"},
        365,
        10,
        "departures",
        "nyc_departures_daily.csv",
    ),
    (ds.load_nyc_departures, {"freq": "h"}, 26280, 11, "departures", "nyc_departures_hourly.csv"),
    (ds.load_grouseticks, {}, 403, 5, "TICKS", "grouseticks.csv"),
    (ds.load_epilepsy, {}, 236, 6, "y", "epilepsy.csv"),
    (
        ds.load_nyc_departures,
        {"freq": "h", "origin": "JFK"},
        8760,
        9,
        "departures",
        "nyc_departures_hourly.csv",
    ),
]
LOADER_IDS = [f"{f.__name__}-{'-'.join(map(str, kw.values()))}" for f, kw, *_ in LOADERS]


# -- the shipped files ---------------------------------------------------------------------
def test_list_datasets(capsys):
    shipped = ds.list_datasets()
    assert list(shipped) == [
        "biochemists",
        "nmes1988",
        "seatbelts",
        "nyc_departures_daily",
        "nyc_departures_hourly",
        "grouseticks",
        "epilepsy",
    ]
    assert all(isinstance(text, str) and text for text in shipped.values())
    assert capsys.readouterr().out == ""
    ds.list_datasets(verbose=True)
    assert len(capsys.readouterr().out.strip().splitlines()) == len(shipped)


def test_public_api():
    assert ds.__doc__
    for name in ds.__all__:
        assert getattr(ds, name).__doc__, name


def test_does_not_import_pyro():
    code = "import sys, posheads.datasets; sys.exit('pyro' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("filename", sorted(_base.CHECKSUMS))
def test_files_match_checksums_and_readme(filename):
    payload = (_base.get_data_dir() / filename).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    assert digest == _base.CHECKSUMS[filename]
    assert b"\r" not in payload and payload.endswith(b"\n")
    readme = _base._README.read_text(encoding="utf-8")
    assert re.search(rf"\| {re.escape(filename)} \|.*\| {digest} \|", readme)


def test_every_data_file_has_a_checksum():
    shipped = {path.name for path in _base.get_data_dir().glob("*.csv")}
    assert shipped == set(_base.CHECKSUMS)


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A copy of the data folder that the loaders read instead of the real one."""
    copy = tmp_path / "data"
    shutil.copytree(_base.get_data_dir(), copy)
    monkeypatch.setattr(_base, "DATA_DIR", copy)
    return copy


def test_corrupted_file_is_detected(data_copy):
    path = data_copy / "biochemists.csv"
    payload = bytearray(path.read_bytes())
    payload[-3] = ord("9") if payload[-3] != ord("9") else ord("8")  # one digit of one count
    path.write_bytes(bytes(payload))
    actual = hashlib.sha256(payload).hexdigest()
    expected = _base.CHECKSUMS["biochemists.csv"]
    with pytest.raises(ds.ChecksumError, match=rf"biochemists\.csv.*{actual}.*{expected}"):
        ds.load_biochemists()
    assert ds.load_seatbelts().data.shape == (192, 3)  # the other copies still load


def test_missing_file_is_detected(data_copy):
    (data_copy / "nmes1988.csv").unlink()
    expected = _base.CHECKSUMS["nmes1988.csv"]
    with pytest.raises(FileNotFoundError, match=rf"nmes1988\.csv.*{expected}"):
        ds.load_nmes1988()


# -- loaders -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("loader", "kwargs", "n", "p", "target", "filename"), LOADERS, ids=LOADER_IDS
)
def test_numpy_output(loader, kwargs, n, p, target, filename):
    bunch = loader(**kwargs)
    assert isinstance(bunch, Bunch)
    assert bunch.data.shape == (n, p) and bunch.data.dtype == np.float64
    assert bunch.target.shape == (n,) and bunch.target.dtype == np.int64
    assert np.all(bunch.target >= 0)
    assert len(bunch.feature_names) == p and bunch.target_names == [target]
    assert bunch.frame is None
    assert filename in bunch.DESCR and "Citation" in bunch.DESCR
    X, y = loader(return_X_y=True, **kwargs)
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


@pytest.mark.parametrize(
    ("loader", "kwargs", "n", "p", "target", "filename"), LOADERS, ids=LOADER_IDS
)
def test_frame_output(loader, kwargs, n, p, target, filename):
    bunch = loader(as_frame=True, **kwargs)
    data, y, frame = bunch.data, bunch.target, bunch.frame
    assert isinstance(data, pd.DataFrame) and isinstance(y, pd.Series)
    assert y.name == target and pd.api.types.is_integer_dtype(y) and not y.isna().any()
    assert (y >= 0).all() and len(data) == len(frame) == n
    assert list(data.columns) == bunch.feature_names and target not in bunch.feature_names
    assert set(bunch.feature_names) | {target} <= set(frame.columns)
    for column in data.columns:  # numbers or categoricals, never loose strings
        dtype = data[column].dtype
        assert isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(dtype)
    levels = [len(data[c].cat.categories) for c in data.select_dtypes("category")]
    assert data.shape[1] - len(levels) + sum(n_levels - 1 for n_levels in levels) == p
    X, y2 = loader(as_frame=True, return_X_y=True, **kwargs)
    pd.testing.assert_frame_equal(X, data)
    pd.testing.assert_series_equal(y2, y)


def test_biochemists_categories():
    frame = ds.load_biochemists(as_frame=True).frame
    assert list(frame.columns) == ["art", "fem", "mar", "kid5", "phd", "ment"]
    assert list(frame["fem"].cat.categories) == ["Men", "Women"]
    assert list(frame["mar"].cat.categories) == ["Single", "Married"]
    bunch = ds.load_biochemists()
    assert bunch.feature_names == ["fem_Women", "mar_Married", "kid5", "phd", "ment"]
    np.testing.assert_array_equal(bunch.data[:, 0], (frame["fem"] == "Women").to_numpy())


def test_nmes1988_design():
    bunch = ds.load_nmes1988(as_frame=True)
    before = bunch.frame.copy()
    X = ds.nmes1988_design(bunch.frame)
    pd.testing.assert_frame_equal(bunch.frame, before)  # input untouched
    assert X.shape == (4406, 16) and (X.dtypes == np.float64).all()
    assert {"health_poor", "health_excellent", "region_northeast", "adl_limited"} <= set(X)
    assert not {"visits", "nvisits", "ovisits", "novisits", "emergency", "hospital"} & set(X)
    np.testing.assert_array_equal(X.to_numpy(), ds.load_nmes1988().data)
    pd.testing.assert_frame_equal(ds.nmes1988_design(bunch.data), X)
    Z = ds.nmes1988_design(bunch.frame, standardize=True)
    np.testing.assert_allclose(Z.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(ddof=0), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="lacks the NMES1988 columns"):
        ds.nmes1988_design(bunch.frame.drop(columns="region"))


def test_grouped_data_sets_have_their_documented_groups():
    ticks = ds.load_grouseticks(as_frame=True).frame
    assert ticks["BROOD"].nunique() == 118 and ticks["LOCATION"].nunique() == 63
    # broods are nested in locations: every brood was sampled at one location
    assert (ticks.groupby("BROOD")["LOCATION"].nunique() == 1).all()
    epil = ds.load_epilepsy(as_frame=True).frame
    assert epil["subject"].nunique() == 59
    periods = epil.groupby("subject")["period"].apply(lambda p: sorted(p.tolist()))
    assert all(p == [1, 2, 3, 4] for p in periods)
    # treatment and baseline are patient-level: constant within each subject
    assert (epil.groupby("subject")[["trt", "base"]].nunique(dropna=False) == 1).all().all()


def test_seatbelts_time_index():
    bunch = ds.load_seatbelts(as_frame=True)
    index = bunch.frame.index
    assert isinstance(index, pd.DatetimeIndex) and index.freqstr == "MS"
    assert index[0] == pd.Timestamp("1969-01-01") and index[-1] == pd.Timestamp("1984-12-01")
    assert bunch.data["law"].idxmax() == pd.Timestamp("1983-02-01")
    assert ds.load_seatbelts().index.equals(index)
    assert bunch.target.between(2, 17).all()
    assert ds.load_seatbelts(target="DriversKilled", as_frame=True).target.min() == 60
    with pytest.raises(ValueError, match="target must be one of"):
        ds.load_seatbelts(target="kms")


def test_nyc_daily_and_hourly_agree():
    daily = ds.load_nyc_departures("D", "EWR", as_frame=True)
    hourly = ds.load_nyc_departures("h", "EWR", as_frame=True)
    assert daily.frame.index.freqstr == "D" and hourly.frame.index.freqstr == "h"
    assert str(hourly.frame.index.tz) == "America/New_York"
    assert hourly.frame.index.is_unique and hourly.frame.index.is_monotonic_increasing
    per_day = hourly.target.groupby(hourly.frame.index.tz_localize(None).normalize()).sum()
    np.testing.assert_array_equal(per_day.to_numpy(), daily.target.to_numpy())
    day_lengths = hourly.frame.index.tz_localize(None).normalize().value_counts()
    assert day_lengths[pd.Timestamp("2013-03-10")] == 23
    assert day_lengths[pd.Timestamp("2013-11-03")] == 25
    assert daily.data["holiday"].sum() == 10 and hourly.data["holiday"].sum() == 240
    total = ds.load_nyc_departures("h", return_X_y=True)[1].sum()
    assert total == ds.load_nyc_departures("D", return_X_y=True)[1].sum() == 328521


def test_nyc_all_origins():
    bunch = ds.load_nyc_departures("D", as_frame=True)
    origin = bunch.data["origin"]
    assert list(origin.cat.categories) == ["EWR", "JFK", "LGA"]
    assert origin.value_counts().eq(365).all()
    jfk = ds.load_nyc_departures("D", "JFK", as_frame=True)
    np.testing.assert_array_equal(bunch.target[origin == "JFK"].to_numpy(), jfk.target)
    names = ds.load_nyc_departures("D").feature_names
    assert names[:3] == ["origin_JFK", "origin_LGA", "holiday"]


def test_nyc_fill_missing():
    raw = ds.load_nyc_departures("h", as_frame=True).data
    filled = ds.load_nyc_departures("h", as_frame=True, fill_missing=True).data
    weather = raw.columns.drop(["origin", "holiday"])
    assert raw[weather].isna().any().all() and not filled[weather].isna().any().any()
    known = raw[weather].notna()
    pd.testing.assert_frame_equal(filled[weather][known], raw[weather][known])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"freq": "W"}, "freq must be"), ({"freq": "D", "origin": "BOS"}, "origin must be")],
)
def test_nyc_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds.load_nyc_departures(**kwargs)


# -- simulators ----------------------------------------------------------------------------
LIKELIHOODS = ["poisson", "negative_binomial", "zero_inflated_poisson"]


def count_variance(info):
    """Variance of each simulated count, from the true parameters."""
    mu, r, pi = info.mu, info.concentration, info.zero_inflation
    if info.likelihood == "negative_binomial":
        return mu + mu**2 / r
    if info.likelihood == "zero_inflated_poisson":
        return (1 - pi) * mu * (1 + pi * mu)
    return mu


def fit_softplus_poisson(X, y, offset=0.0, n_iter=100):
    """Poisson regression with mean softplus(offset + X @ beta) by Fisher scoring.

    Returns the estimate and its standard errors (inverse Fisher information).
    """
    beta = np.linalg.lstsq(X, np.log(np.expm1(y + 0.5)) - offset, rcond=None)[0]
    for _ in range(n_iter):
        eta = offset + X @ beta
        mu, slope = np.logaddexp(0.0, eta), expit(eta)  # d mu / d eta = sigmoid(eta)
        fisher = X.T @ (X * (slope**2 / mu)[:, None])
        step = np.linalg.solve(fisher, X.T @ ((y - mu) * slope / mu))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta, np.sqrt(np.diag(np.linalg.inv(fisher)))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_regression_shapes_and_reproducibility(likelihood):
    X, y, info = ds.make_count_regression(300, 4, likelihood=likelihood, random_state=3)
    assert X.shape == (300, 4) and X.dtype == np.float64
    assert y.shape == (300,) and y.dtype == np.int64 and np.all(y >= 0)
    assert info.coef.shape == (4,) and info.mean.shape == info.mu.shape == (300,)
    np.testing.assert_allclose(info.mu, np.logaddexp(0.0, info.intercept + X @ info.coef))
    X2, y2, info2 = ds.make_count_regression(300, 4, likelihood=likelihood, random_state=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(info.coef, info2.coef)
    _, y3, _ = ds.make_count_regression(300, 4, likelihood=likelihood, random_state=4)
    assert not np.array_equal(y, y3)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("link", ["softplus", "log"])
def test_regression_mean_matches_sample_mean(likelihood, link):
    _, y, info = ds.make_count_regression(
        20000, 3, likelihood=likelihood, link=link, random_state=11
    )
    se = np.sqrt(count_variance(info).sum()) / y.size
    assert abs(y.mean() - info.mean.mean()) < N_SE * se


def test_regression_log_link_recovered_by_poisson_glm():
    X, y, info = ds.make_count_regression(
        5000, 4, link="log", intercept=1.0, coef_scale=1.0, random_state=0
    )
    glm = PoissonRegressor(alpha=0.0, tol=1e-10, max_iter=1000).fit(X, y)
    X1 = np.column_stack([np.ones(len(X)), X])
    mu = glm.predict(X)
    se = np.sqrt(np.diag(np.linalg.inv(X1.T @ (X1 * mu[:, None]))))
    estimate = np.r_[glm.intercept_, glm.coef_]
    truth = np.r_[info.intercept, info.coef]
    assert np.all(np.abs(estimate - truth) < N_SE * se)


def test_regression_softplus_link_recovered():
    X, y, info = ds.make_count_regression(
        5000, 4, link="softplus", intercept=2.0, coef_scale=2.0, random_state=1
    )
    X1 = np.column_stack([np.ones(len(X)), X])
    estimate, se = fit_softplus_poisson(X1, y)
    truth = np.r_[info.intercept, info.coef]
    assert np.all(np.abs(estimate - truth) < N_SE * se)


def test_negative_binomial_concentration_recovered():
    _, y, info = ds.make_count_regression(
        20000, 2, likelihood="negative_binomial", concentration=3.0, intercept=2.0, random_state=2
    )
    mu = info.mu

    def nll(log_r):  # negative binomial log-likelihood at the true means
        r = np.exp(log_r)
        return -np.sum(
            gammaln(y + r) - gammaln(r) + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu))
        )

    log_r = minimize_scalar(nll, bounds=(-3.0, 5.0), method="bounded").x
    h = 1e-3  # observed information of log r by central differences
    curvature = (nll(log_r + h) - 2 * nll(log_r) + nll(log_r - h)) / h**2
    assert abs(log_r - np.log(3.0)) < N_SE / np.sqrt(curvature)


def test_zero_inflation_recovered():
    _, y, info = ds.make_count_regression(
        20000, 2, likelihood="zero_inflated_poisson", zero_inflation=0.3, random_state=5
    )
    p_zero = 0.3 + 0.7 * np.exp(-info.mu)
    se = np.sqrt(np.sum(p_zero * (1 - p_zero))) / y.size
    assert abs(np.mean(y == 0) - p_zero.mean()) < N_SE * se
    np.testing.assert_allclose(info.mean, 0.7 * info.mu)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 0}, "n_samples must be an integer >= 1"),
        ({"n_samples": -5}, "n_samples must be an integer >= 1"),
        ({"n_samples": 10.0}, "n_samples must be an integer"),
        ({"n_samples": True}, "n_samples must be an integer"),
        ({"n_features": 0}, "n_features must be an integer >= 1"),
        ({"likelihood": "gaussian"}, "likelihood must be one of"),
        ({"link": "identity"}, "link must be one of"),
        ({"concentration": 0.0}, "concentration must be a finite number > 0"),
        ({"concentration": np.nan}, "concentration must be a finite number"),
        ({"zero_inflation": 1.0}, "zero_inflation must be a finite number >= 0.0 and < 1.0"),
        ({"zero_inflation": -0.1}, "zero_inflation must be"),
        ({"coef_scale": -1.0}, "coef_scale must be"),
        ({"intercept": np.inf}, "intercept must be a finite number"),
        ({"link": "log", "intercept": 800.0}, "simulated mean exceeds"),
    ],
)
def test_regression_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds.make_count_regression(**kwargs)


def test_series_components_and_index():
    y, X, info = ds.make_count_series(
        400,
        freq="h",
        start="2024-01-01",
        season_lengths=(24, 168),
        covariates=2,
        as_frame=True,
        random_state=7,
    )
    assert isinstance(y, pd.Series) and y.index.freqstr == "h" and y.dtype == np.int64
    assert X.shape == (400, 2) and X.index.equals(y.index) and info.index.equals(y.index)
    assert info.seasonal.shape == (400, 2) and info.coef.shape == (2,)
    t = np.arange(400)
    eta = info.level + info.trend * t + info.seasonal.sum(axis=1) + X.to_numpy() @ info.coef
    np.testing.assert_allclose(info.eta, eta)
    np.testing.assert_allclose(info.mean, np.logaddexp(0.0, eta))
    np.testing.assert_allclose(info.seasonal[24:, 0], info.seasonal[:-24, 0], atol=1e-12)
    y2, X2, _ = ds.make_count_series(
        400, freq="h", season_lengths=(24, 168), covariates=2, random_state=7
    )
    np.testing.assert_array_equal(y2, y.to_numpy())
    np.testing.assert_array_equal(X2, X.to_numpy())


def test_series_periodic_and_given_covariates():
    given = pd.DataFrame({"price": np.linspace(-1, 1, 70), "promo": np.tile([0, 1], 35)})
    _, X, info = ds.make_count_series(
        70,
        season_lengths=[7],
        seasonality="periodic",
        covariates=given,
        likelihood="zero_inflated_poisson",
        as_frame=True,
        random_state=0,
    )
    assert list(X.columns) == ["price", "promo"]
    np.testing.assert_array_equal(X.to_numpy(), given.to_numpy())
    profile = info.seasonal[:7, 0]
    np.testing.assert_allclose(info.seasonal[:, 0], np.tile(profile, 10))
    assert abs(profile.mean()) < 1e-12
    np.testing.assert_allclose(info.mean, (1 - info.zero_inflation) * info.mu)
    _, X0, info0 = ds.make_count_series(30, season_lengths=(), covariates=0, random_state=0)
    assert X0.shape == (30, 0) and info0.seasonal.shape == (30, 0)


def test_series_level_trend_and_coef_recovered():
    n = 3000
    y, X, info = ds.make_count_series(
        n,
        level=1.5,
        trend=3e-4,
        season_lengths=(7, 30.5),
        covariates=2,
        coef_scale=1.0,
        random_state=8,
    )
    design = np.column_stack([np.ones(n), np.arange(n), X])
    estimate, se = fit_softplus_poisson(design, y, offset=info.seasonal.sum(axis=1))
    truth = np.r_[info.level, info.trend, info.coef]
    assert np.all(np.abs(estimate - truth) < N_SE * se)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_timesteps": 0}, "n_timesteps must be an integer >= 1"),
        ({"season_lengths": (1,)}, "each of season_lengths must be a finite number >= 2"),
        ({"seasonality": "spline"}, "seasonality must be one of"),
        ({"seasonality": "periodic", "season_lengths": (7.5,)}, "needs whole season_lengths"),
        ({"fourier_order": 0}, "fourier_order must be an integer >= 1"),
        ({"covariates": -1}, "covariates must be an integer >= 0"),
        ({"covariates": np.ones((5, 2))}, r"shape \(n_timesteps=730"),
        ({"n_timesteps": 3, "covariates": [[1.0], [np.nan], [0.0]]}, "NaN or infinite"),
        ({"likelihood": "binomial"}, "likelihood must be one of"),
        ({"freq": "not-a-freq"}, "invalid start"),
        ({"season_scale": -0.5}, "season_scale must be"),
    ],
)
def test_series_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds.make_count_series(**kwargs)


# -- the intermittent panel ------------------------------------------------------------------
def nb_zero_and_moments(mu, r):
    """``P(0)``, mean and variance of a negative binomial of mean ``mu``, concentration ``r``
    (scipy's ``nbinom(n=r, p=r / (r + mu))``: an independent reference for the families)."""
    from scipy.stats import nbinom

    law = nbinom(r, r / (r + mu))
    return law.pmf(0), law.mean(), law.var()


def test_intermittent_panel_frame_and_components():
    frame, info = ds.make_intermittent_panel(
        12, 90, start="2024-03-01", intermittent_share=0.25, random_state=5
    )
    assert list(frame.columns) == ["unique_id", "ds", "y"] and frame.y.dtype == np.int64
    assert not frame.duplicated(["unique_id", "ds"]).any() and (frame.y >= 0).all()
    assert frame.equals(frame.sort_values(["unique_id", "ds"], ignore_index=True))
    assert list(info.params.index) == sorted(frame.unique_id.unique())
    assert (info.params.kind == "intermittent").sum() == 3  # round(0.25 * 12)
    assert (info.params.zero_share[info.params.kind == "smooth"] == 0).all()
    assert frame.ds.iloc[:90].tolist() == list(info.index) and info.index.freqstr == "D"
    t = np.arange(90)
    eta = np.log(np.expm1(1.0)) + info.level + info.season[:, t % 7]
    np.testing.assert_allclose(info.eta, eta)
    scale = info.params.scale.to_numpy()[:, None]
    np.testing.assert_allclose(info.mu, scale * np.logaddexp(0.0, eta))
    np.testing.assert_allclose(info.season.mean(axis=1), 0.0, atol=1e-12)
    assert np.all(info.level[:, 0] == 0)
    again, _ = ds.make_intermittent_panel(
        12, 90, start="2024-03-01", intermittent_share=0.25, random_state=5
    )
    assert frame.equals(again)


def test_intermittent_panel_matches_its_laws():
    """Zero shares and totals of each kind within 4 standard errors of the true laws."""
    frame, info = ds.make_intermittent_panel(40, 400, random_state=11)
    y = frame.y.to_numpy().reshape(40, 400)
    p = info.params
    r = p.concentration.to_numpy()[:, None]
    nb_zero, nb_mean, nb_var = nb_zero_and_moments(info.mu, r)
    gate = p.zero_share.to_numpy()[:, None]
    # a hurdle: zero with probability gate, else a zero-truncated negative binomial
    size_mean = nb_mean / (1 - nb_zero)
    size_square = (nb_var + nb_mean**2) / (1 - nb_zero)
    hurdle_mean = (1 - gate) * size_mean
    hurdle_var = (1 - gate) * size_square - hurdle_mean**2
    smooth = (p.kind == "smooth").to_numpy()
    zero_prob = np.where(smooth[:, None], nb_zero, gate)
    mean = np.where(smooth[:, None], nb_mean, hurdle_mean)
    var = np.where(smooth[:, None], nb_var, hurdle_var)
    np.testing.assert_allclose(info.mean, mean, rtol=1e-9)
    for rows in (smooth, ~smooth):
        zeros, expected = (y[rows] == 0).sum(), zero_prob[rows].sum()
        assert abs(zeros - expected) < N_SE * np.sqrt((zero_prob * (1 - zero_prob))[rows].sum())
        assert abs(y[rows].sum() - mean[rows].sum()) < N_SE * np.sqrt(var[rows].sum())
    assert 0.5 <= gate[~smooth].min() and gate[~smooth].max() < 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_series": 0}, "n_series must be an integer >= 1"),
        ({"intermittent_share": 1.5}, "intermittent_share must be"),
        ({"zero_share": (0.9, 0.5)}, "low <= high"),
        ({"zero_share": (0.5, 1.0)}, "zero_share must be a finite number"),
        ({"smooth_scale": (1, 2, 3)}, "a number or a"),
        ({"smooth_likelihood": "zero_inflated_poisson"}, "without a zero part"),
        ({"intermittent_likelihood": "poisson"}, "with a zero part"),
        ({"season_length": 0}, "season_length must be an integer >= 1"),
        ({"freq": "not-a-freq"}, "invalid start"),
    ],
)
def test_intermittent_panel_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds.make_intermittent_panel(**kwargs)
