"""The scikit-learn estimators: API conformance, peers, invariances and bad input."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import d2_tweedie_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from posheads import (
    HurdleNegativeBinomialSoftplusRegressor,
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)
from posheads.datasets import load_nmes1988, make_count_regression, nmes1988_design
from posheads.estimators import load
from tools.peers import statsmodels_softplus_glm

from ._families import INTEGER_ONLY_CHECKS

ALL = [PoissonSoftplusRegressor, NegativeBinomialSoftplusRegressor,
       ZeroInflatedPoissonSoftplusRegressor, ZeroInflatedNegativeBinomialSoftplusRegressor,
       HurdlePoissonSoftplusRegressor, HurdleNegativeBinomialSoftplusRegressor]

# scikit-learn's common checks fit regressors to real-valued targets (e.g. 0.37). A
# zero-inflated or hurdle likelihood splits the data into "zero" and "a count 1, 2, ...",
# which a value such as 0.37 is neither, so these estimators reject it with a
# ValueError by design; INTEGER_ONLY_CHECKS are the checks that feed such targets.


# partial_fit runs SVI, whose posterior needs a proper count likelihood, so it rejects
# real-valued targets for every estimator (fit with inference="map" accepts them).
_PARTIAL_FIT = {"check_n_features_in_after_fitting": "partial_fit needs whole-number counts"}


def _expected_failures(est):
    return INTEGER_ONLY_CHECKS if est._family.integer else _PARTIAL_FIT


@parametrize_with_checks([cls() for cls in ALL], expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def nmes():
    bunch = load_nmes1988(as_frame=True)
    X = nmes1988_design(bunch.frame, standardize=True)
    return X, bunch.target.to_numpy(np.float64)


def test_poisson_ml_equals_statsmodels_softplus_glm(nmes):
    X, y = nmes
    est = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y)
    ref = statsmodels_softplus_glm(X.to_numpy(), y).params
    ours = np.r_[est.intercept_, est.coef_]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)
    # In-sample D2 of the softplus link beats the log link's 0.128 with the same features.
    assert est.score(X, y) > 0.135


def test_penalised_fit_is_the_minimum_of_sklearns_objective():
    X, y, _ = make_count_regression(n_samples=400, n_features=4, random_state=0)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    alpha = 0.05
    est = PoissonSoftplusRegressor(alpha=alpha, tol=1e-10).fit(X, y, sample_weight=w)
    eta = est.intercept_ + X @ est.coef_
    mu, sig = np.logaddexp(0, eta), 1 / (1 + np.exp(-eta))
    # d/d theta of sum w d / (2 sum w) + alpha/2 |coef|^2 with d = 2 (y log(y/mu) - y + mu)
    r = w * sig * (1 - y / mu) / w.sum()
    np.testing.assert_allclose(r.sum(), 0, atol=1e-9)
    np.testing.assert_allclose(X.T @ r + alpha * est.coef_, 0, atol=1e-9)


def test_score_is_d2(nmes):
    X, y = nmes
    est = PoissonSoftplusRegressor(alpha=1e-3).fit(X, y)
    assert est.score(X, y) == pytest.approx(d2_tweedie_score(y, est.predict(X), power=1),
                                            rel=1e-12)


@pytest.mark.parametrize("cls", [PoissonSoftplusRegressor, NegativeBinomialSoftplusRegressor])
def test_weight_invariances(cls):
    X, y, _ = make_count_regression(n_samples=120, n_features=3, random_state=2)
    base = cls(alpha=0.01, tol=1e-10).fit(X, y)
    ones = cls(alpha=0.01, tol=1e-10).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(ones.coef_, base.coef_, rtol=1e-8)
    w = np.ones(len(y))
    w[:10] = 2.0
    doubled = cls(alpha=0.01, tol=1e-10).fit(X, y, sample_weight=w)
    repeated = cls(alpha=0.01, tol=1e-10).fit(np.r_[X, X[:10]], np.r_[y, y[:10]])
    # alpha is scaled by the sum of weights, equal in both fits (130)
    np.testing.assert_allclose(doubled.coef_, repeated.coef_, rtol=1e-6, atol=1e-8)
    w = np.ones(len(y))
    w[:10] = 0.0
    zero = cls(alpha=0.01, tol=1e-10).fit(X, y, sample_weight=w)
    dropped = cls(alpha=0.01, tol=1e-10).fit(X[10:], y[10:])
    np.testing.assert_allclose(zero.coef_, dropped.coef_, rtol=1e-6, atol=1e-8)


def test_exposure_multiplies_the_mean_and_is_recovered():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 2))
    t = rng.uniform(0.5, 5.0, size=3000)
    mu = t * np.logaddexp(0, 0.5 + X @ [0.8, -0.4])
    y = rng.poisson(mu)
    est = PoissonSoftplusRegressor(alpha=0).fit(X, y, exposure=t)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_], [0.5, 0.8, -0.4], atol=0.08)
    np.testing.assert_allclose(est.predict(X[:5], exposure=2 * t[:5]),
                               2 * est.predict(X[:5], exposure=t[:5]), rtol=1e-12)


def test_sparse_equals_dense():
    X, y, _ = make_count_regression(n_samples=300, n_features=6, random_state=4)
    X[np.abs(X) < 0.8] = 0.0
    dense = PoissonSoftplusRegressor(alpha=0.01, tol=1e-10).fit(X, y)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        sparse = PoissonSoftplusRegressor(alpha=0.01, tol=1e-10).fit(fmt(X), y)
        np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sparse.predict(fmt(X)), dense.predict(X), rtol=1e-10)


def test_pandas_feature_names_flow_to_summary(nmes):
    X, y = nmes
    est = NegativeBinomialSoftplusRegressor(alpha=0).fit(X, y)
    assert list(est.feature_names_in_) == list(X.columns)
    table = est.summary()
    assert {"chronic", "concentration", "intercept"} <= set(table.index)
    row = table.loc["chronic"]
    assert row["lower"] < row["estimate"] < row["upper"]
    # The average marginal effect on the count scale is close to the coefficient where
    # the predictor is large (sigmoid(eta) -> 1), as it is for most NMES rows.
    assert row["ame"] == pytest.approx(row["estimate"], rel=0.05)
    assert 1.0 < est.concentration_ < 1.5


def test_ecosystem_pipeline_gridsearch_cross_val_clone():
    X, y, _ = make_count_regression(n_samples=240, n_features=3, random_state=5)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(
        g=np.random.default_rng(0).choice(["u", "v", "w"], size=len(y)))
    pre = ColumnTransformer([("num", StandardScaler(), ["a", "b", "c"]),
                             ("cat", OneHotEncoder(drop="first"), ["g"])])
    pipe = make_pipeline(pre, PoissonSoftplusRegressor())
    search = GridSearchCV(pipe, {"poissonsoftplusregressor__alpha": [1e-3, 1.0],
                                 "poissonsoftplusregressor__beta": [0.5, 1.0, 2.0]}, cv=3)
    search.fit(frame, y)
    assert search.best_params_["poissonsoftplusregressor__alpha"] == 1e-3
    scores = cross_val_score(pipe, frame, y, cv=3, scoring="neg_mean_poisson_deviance")
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)
    est = PoissonSoftplusRegressor(alpha=0.3, beta=2.0)
    assert clone(est).get_params() == est.get_params()


@pytest.mark.parametrize(
    ("X", "y", "kwargs", "match"),
    [
        ([[1.0], [2.0]], [1.0, -1.0], {}, "negative"),
        ([[1.0], [2.0]], [1.0, np.nan], {}, "NaN"),
        ([[1.0], [2.0]], [1.0, np.inf], {}, "NaN|infinity"),
        ([[1.0], [np.nan]], [1.0, 2.0], {}, "NaN"),
        ([[1.0], [np.inf]], [1.0, 2.0], {}, "infinity"),
        ([[1.0], [2.0], [3.0]], [1.0, 2.0], {}, "inconsistent numbers of samples"),
        (np.empty((0, 2)), [], {}, "0 sample"),
        ([[1.0], [2.0]], [1.0, 2.0], {"exposure": [1.0, 0.0]}, "exposure must be > 0"),
        ([[1.0], [2.0]], [1.0, 2.0], {"exposure": [1.0]}, "exposure has 1 entries"),
        ([[1.0], [2.0]], [1.0, 2.0], {"sample_weight": [1.0, -1.0]}, "[Nn]egative"),
    ],
)
def test_bad_input_raises_clear_error(X, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoissonSoftplusRegressor().fit(X, y, **kwargs)


def test_non_integer_counts_rejected_where_needed():
    X, y = np.array([[0.0], [1.0], [2.0]]), np.array([0.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="whole numbers"):
        ZeroInflatedPoissonSoftplusRegressor().fit(X, y)
    PoissonSoftplusRegressor().fit(X, y)  # a quasi-likelihood, as scikit-learn's


def test_caller_arrays_are_not_modified():
    X, y, _ = make_count_regression(n_samples=80, n_features=2, random_state=6)
    w, t = np.linspace(0.5, 1.5, 80), np.linspace(1, 2, 80)
    copies = [a.copy() for a in (X, y, w, t)]
    est = NegativeBinomialSoftplusRegressor().fit(X, y, sample_weight=w, exposure=t)
    est.predict(X, exposure=t)
    est.predict_interval(X, exposure=t)
    for a, b in zip((X, y, w, t), copies, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", ALL)
def test_save_load_and_pickle_round_trip(cls, tmp_path):
    X, y, _ = make_count_regression(n_samples=150, n_features=3, random_state=7)
    est = cls(alpha=0.01, random_state=0).fit(X, y)
    est.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is cls and back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    np.testing.assert_array_equal(back.predict_interval(X), est.predict_interval(X))
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=1e-12)


def test_load_rejects_non_model_folder(tmp_path):
    with pytest.raises(ValueError, match=r"estimator\.json"):
        load(tmp_path)


def test_beta_auto_recovers_the_softness():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(4000, 2))
    beta = 3.0
    y = rng.poisson(np.logaddexp(0, beta * (0.3 + X @ [1.0, -0.8])) / beta)
    est = PoissonSoftplusRegressor(alpha=0, beta="auto").fit(X, y)
    assert 2.0 < est.beta_ < 4.5
    fixed = PoissonSoftplusRegressor(alpha=0, beta=1.0).fit(X, y)
    assert est.score(X, y) > fixed.score(X, y)


def test_warm_start_converges_at_once():
    X, y, _ = make_count_regression(n_samples=500, n_features=4, random_state=9)
    est = PoissonSoftplusRegressor(alpha=0.01, warm_start=True, tol=1e-8).fit(X, y)
    first = est.n_iter_
    est.fit(X, y)
    assert first >= 3 and est.n_iter_ <= 1


def test_non_convergence_warns_and_keeps_a_real_fit():
    X, y, _ = make_count_regression(n_samples=500, n_features=4, random_state=10)
    with pytest.warns(ConvergenceWarning):
        est = PoissonSoftplusRegressor(alpha=0, max_iter=1).fit(X, y)
    assert np.any(est.coef_ != 0)


def test_negative_binomial_recovers_dispersion():
    X, y, info = make_count_regression(n_samples=4000, n_features=3,
                                       likelihood="negative_binomial", concentration=2.0,
                                       random_state=11)
    est = NegativeBinomialSoftplusRegressor(alpha=0).fit(X, y)
    assert est.dispersion_ == pytest.approx(0.5, rel=0.15)
    np.testing.assert_allclose(est.coef_, info["coef"], atol=0.12)


def test_zero_inflated_and_hurdle_fit_counts():
    X, y, info = make_count_regression(n_samples=4000, n_features=2,
                                       likelihood="zero_inflated_poisson", zero_inflation=0.3,
                                       random_state=12)
    zip_ = ZeroInflatedPoissonSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(zip_.coef_, info["coef"], atol=0.15)
    gate = 1 / (1 + np.exp(-zip_.gate_intercept_))
    assert gate == pytest.approx(0.3, abs=0.05)
    hurdle = HurdlePoissonSoftplusRegressor(alpha=0).fit(X, y)
    # The hurdle's zero probability matches the observed fraction of zeros.
    p0 = 1 / (1 + np.exp(-(hurdle.gate_intercept_ + X @ hurdle.gate_coef_)))
    assert p0.mean() == pytest.approx(np.mean(y == 0), abs=0.01)
    assert zip_.predict(X).mean() == pytest.approx(y.mean(), rel=0.05)


def test_hurdle_negative_binomial_recovers_its_parameters():
    # simulated here with numpy alone: a logistic zero part, and NB2 draws (numpy's
    # parameterisation: n = r, p = r / (r + mu)) redrawn until positive
    rng = np.random.default_rng(21)
    n, r = 6000, 1.5
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0.0, 1.5 + X @ [0.8, -0.5])
    p_zero = 1 / (1 + np.exp(-(-0.4 + X @ [0.6, 0.0])))
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    while (redo := y == 0).any():
        y[redo] = rng.negative_binomial(r, r / (r + mu[redo]))
    y[rng.random(n) < p_zero] = 0.0
    est = HurdleNegativeBinomialSoftplusRegressor(alpha=0, inference="laplace").fit(X, y)
    table = est.summary()
    truth = [1.5, 0.8, -0.5, r, -0.4, 0.6, 0.0]
    z = (table["estimate"].to_numpy() - truth) / table["std_err"].to_numpy()
    assert list(table.index) == ["intercept", "x0", "x1", "concentration", "gate_intercept",
                                 "gate:x0", "gate:x1"]
    # every estimate within 3.5 Laplace standard errors of the truth (seven at once)
    assert np.abs(z).max() < 3.5, dict(zip(table.index, z.round(2), strict=True))
    assert est.predict(X).mean() == pytest.approx(y.mean(), rel=0.03)


def test_zero_inflated_negative_binomial_recovers_gate_and_dispersion():
    # intercept 2.5: few NB zeros, so the structural zeros are told apart from them
    X, y, info = make_count_regression(n_samples=6000, n_features=2,
                                       likelihood="zero_inflated_negative_binomial",
                                       concentration=2.0, zero_inflation=0.25,
                                       intercept=2.5, random_state=13)
    est = ZeroInflatedNegativeBinomialSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(est.coef_, info["coef"], atol=0.15)
    assert est.concentration_ == pytest.approx(2.0, rel=0.2)
    gate = 1 / (1 + np.exp(-(est.gate_intercept_ + X @ est.gate_coef_)))
    assert gate.mean() == pytest.approx(0.25, abs=0.04)
    assert est.predict(X).mean() == pytest.approx(info["mean"].mean(), rel=0.05)


def test_laplace_intervals_cover(nmes):
    X, y = nmes
    est = NegativeBinomialSoftplusRegressor(alpha=0, inference="laplace", num_samples=400,
                                            random_state=0).fit(X, y)
    lo, hi = est.predict_interval(X, coverage=0.9).T
    # Integer end points make a count interval conservative: it holds at least 90% of
    # each row's predictive mass, more where a single count (often 0) is a big step.
    assert 0.88 < np.mean((y >= lo) & (y <= hi)) < 0.97
    idata = est.to_inference_data()
    assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())


def test_partial_fit_streams_to_the_full_fit():
    X, y, _ = make_count_regression(n_samples=3000, n_features=3, random_state=13)
    est = PoissonSoftplusRegressor(alpha=0, learning_rate=0.01, num_samples=50, random_state=0)
    for _ in range(2):
        for i in range(0, len(y), 300):
            est.partial_fit(X[i:i + 300], y[i:i + 300])
    full = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(est.coef_, full.coef_, atol=0.1)
    assert est.n_iter_ == 20


# ------------------------------------------------------------------ configurations
def test_inference_accepts_a_configuration_object():
    from posheads.inference import MAP, NUTS, SVI, Laplace

    X, y, _ = make_count_regression(300, 2, random_state=3)
    by_name = PoissonSoftplusRegressor(inference="laplace", num_samples=200,
                                       random_state=0).fit(X, y)
    by_config = PoissonSoftplusRegressor(inference=Laplace(num_samples=200, tol=1e-6),
                                         random_state=0).fit(X, y)
    np.testing.assert_array_equal(by_config.coef_, by_name.coef_)
    assert by_config.posterior_.num_draws == 200
    est = PoissonSoftplusRegressor(inference=NUTS(num_samples=30, num_warmup=20),
                                   random_state=0).fit(X, y)
    assert est.posterior_.method == "nuts" and est.posterior_.num_draws == 30
    est = PoissonSoftplusRegressor(inference=SVI(num_steps=50, num_samples=20),
                                   random_state=0).fit(X, y)
    assert est.posterior_.method == "svi" and est.n_iter_ == 50
    tight = PoissonSoftplusRegressor(alpha=0, inference=MAP(tol=1e-12)).fit(X, y)
    assert tight.posterior_.extra["grad_max"] <= 1e-12
    assert clone(by_config).get_params()["inference"] == Laplace(num_samples=200, tol=1e-6)


def test_a_configuration_and_a_budget_keyword_may_not_disagree():
    from posheads.inference import NUTS

    X, y, _ = make_count_regression(50, 2, random_state=3)
    with pytest.raises(ValueError, match=r"num_warmup=10 and inference=NUTS.*num_warmup="):
        PoissonSoftplusRegressor(inference=NUTS(), num_warmup=10).fit(X, y)
    with pytest.raises(ValueError, match=r"configuration of posheads\.inference"):
        PoissonSoftplusRegressor(inference=PoissonSoftplusRegressor()).fit(X, y)


def test_an_estimator_with_a_configuration_saves_and_loads(tmp_path):
    from posheads.inference import NUTS

    X, y, _ = make_count_regression(200, 2, random_state=3)
    est = PoissonSoftplusRegressor(inference=NUTS(num_samples=20, num_warmup=20),
                                   random_state=0).fit(X, y)
    est.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.inference == NUTS(num_samples=20, num_warmup=20)
    np.testing.assert_allclose(back.predict(X[:4]), est.predict(X[:4]))
