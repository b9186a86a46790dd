"""The regressors of positive amounts: GammaSoftplusRegressor and TweedieSoftplusRegressor.

API conformance (scikit-learn's checks), the peers (scikit-learn's D², statsmodels through
the fits of ``test_amounts.py``), the engines, the power chosen by profile likelihood,
persistence, invariances and bad input.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import d2_tweedie_score
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from posheads import GammaSoftplusRegressor, PoissonSoftplusRegressor, TweedieSoftplusRegressor
from posheads.estimators import load, regressor_for
from posheads.families import GAMMA, TWEEDIE, tweedie_family


@parametrize_with_checks([GammaSoftplusRegressor(), TweedieSoftplusRegressor()])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _data(family, n=600, seed=0, **shapes):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0.0, 1.0 + X @ np.array([0.7, -0.4]))
    return X, family.simulate(mu, rng, shapes=shapes)[0]


GAMMA_DATA = _data(GAMMA, concentration=2.0)
TWEEDIE_DATA = _data(tweedie_family(1.4), dispersion=1.0)


@pytest.mark.parametrize(("cls", "data", "power"), [
    (GammaSoftplusRegressor, GAMMA_DATA, 2.0), (TweedieSoftplusRegressor, TWEEDIE_DATA, 1.5)])
def test_score_is_scikit_learns_d2(cls, data, power):
    X, y = data
    est = cls(alpha=1e-3).fit(X, y)
    assert est.score(X, y) == pytest.approx(d2_tweedie_score(y, est.predict(X), power=power),
                                            rel=1e-12)
    assert est.score(X, y) > 0.1


@pytest.mark.parametrize("inference", ["map", "laplace", "svi", "nuts"])
@pytest.mark.parametrize(("cls", "data"), [(GammaSoftplusRegressor, GAMMA_DATA),
                                           (TweedieSoftplusRegressor, TWEEDIE_DATA)])
def test_every_engine_fits_and_gives_intervals(cls, data, inference):
    X, y = data[0][:200], data[1][:200]
    params = {"power": 1.4} if cls is TweedieSoftplusRegressor else {}
    est = cls(alpha=0, inference=inference, num_samples=100, num_warmup=60, num_steps=100,
              learning_rate=0.05, random_state=0, **params).fit(X, y)
    assert np.allclose(est.coef_, [0.7, -0.4], atol=0.35)
    shape = est.concentration_ if cls is GammaSoftplusRegressor else est.dispersion_
    assert shape == pytest.approx(2.0 if cls is GammaSoftplusRegressor else 1.0, rel=0.35)
    lo, hi = est.predict_interval(X, coverage=0.9).T
    assert (lo <= hi).all() and (lo >= 0).all()
    assert 0.8 < np.mean((y >= lo) & (y <= hi)) < 0.98


def test_gamma_regressor_reports_the_dispersion_and_amount_scale_effects():
    X, y = GAMMA_DATA
    est = GammaSoftplusRegressor(alpha=0).fit(X, y)
    assert est.dispersion_ == pytest.approx(1 / est.concentration_)
    table = est.summary()
    assert {"intercept", "x0", "x1", "concentration"} <= set(table.index)
    # the average marginal effect of x0 on E[y]: mean of sigmoid(eta) * coef
    eta = est.intercept_ + X @ est.coef_
    ame = np.mean(1 / (1 + np.exp(-eta))) * est.coef_[0]
    assert table.loc["x0", "ame"] == pytest.approx(ame, rel=0.02)


def test_exposure_multiplies_the_mean():
    X, y = GAMMA_DATA
    t = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    est = GammaSoftplusRegressor(alpha=0).fit(X, y * t, exposure=t)
    np.testing.assert_allclose(est.predict(X, exposure=t), t * est.predict(X), rtol=1e-12)
    ref = GammaSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0.15)


@pytest.mark.parametrize(("cls", "data"), [(GammaSoftplusRegressor, GAMMA_DATA),
                                           (TweedieSoftplusRegressor, TWEEDIE_DATA)])
def test_weights_are_repeated_rows(cls, data):
    X, y = data[0][:150], data[1][:150]
    w = np.ones(len(y))
    w[:10] = 2.0
    doubled = cls(alpha=0.01, tol=1e-10).fit(X, y, sample_weight=w)
    repeated = cls(alpha=0.01, tol=1e-10).fit(np.r_[X, X[:10]], np.r_[y, y[:10]])
    np.testing.assert_allclose(doubled.coef_, repeated.coef_, rtol=1e-7, atol=1e-10)
    w[:10] = 0.0
    zero = cls(alpha=0.01, tol=1e-10).fit(X, y, sample_weight=w)
    dropped = cls(alpha=0.01, tol=1e-10).fit(X[10:], y[10:])
    np.testing.assert_allclose(zero.coef_, dropped.coef_, rtol=1e-7, atol=1e-10)


def test_streaming_fits_refuse_a_searched_power_and_take_amounts():
    from posheads.inference.stream import ArraySource

    X, y = _data(TWEEDIE, n=300, seed=3)
    with pytest.raises(ValueError, match="partial_fit needs a fixed power"):
        TweedieSoftplusRegressor(power="auto").partial_fit(X, y)
    with pytest.raises(ValueError, match="fit_stream needs a fixed power"):
        TweedieSoftplusRegressor(power="auto").fit_stream(ArraySource(X, y, batch_size=100))
    est = TweedieSoftplusRegressor(power=1.5, num_steps=5, random_state=0).partial_fit(X, y)
    assert np.isfinite(est.coef_).all()
    with pytest.raises(ValueError, match="must be > 0"):
        GammaSoftplusRegressor().partial_fit(X, np.where(y > 0, y, 0.0))


def test_power_auto_finds_the_simulated_power():
    X, y = _data(tweedie_family(1.3), n=1500, seed=5, dispersion=0.7)
    est = TweedieSoftplusRegressor(alpha=0, power="auto").fit(X, y)
    assert est.power_ == pytest.approx(1.3, abs=0.08)
    assert est.get_params()["power"] == "auto"
    fixed = TweedieSoftplusRegressor(alpha=0, power=est.power_).fit(X, y)
    np.testing.assert_allclose(fixed.coef_, est.coef_, rtol=1e-8)
    assert est.posterior_.model.family is tweedie_family(est.power_)


@pytest.mark.parametrize(("est", "data"), [
    (GammaSoftplusRegressor(alpha=0.1), GAMMA_DATA),
    (TweedieSoftplusRegressor(alpha=0.1, power=1.35), TWEEDIE_DATA),
    (TweedieSoftplusRegressor(alpha=0.1, power=1.25, inference="laplace", num_samples=50,
                              random_state=0), TWEEDIE_DATA)])
def test_save_and_load_round_trip(tmp_path, est, data):
    X, y = data
    est = clone(est).fit(X, y)
    est.save(tmp_path / "amounts")
    back = load(tmp_path / "amounts")
    assert type(back) is type(est) and back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    assert back.score(X, y) == pytest.approx(est.score(X, y), rel=1e-12)


def test_regressor_for_finds_the_amount_regressors():
    assert regressor_for("gamma") is GammaSoftplusRegressor
    assert regressor_for(TWEEDIE) is TweedieSoftplusRegressor
    assert regressor_for(tweedie_family(1.7)) is TweedieSoftplusRegressor
    assert regressor_for("poisson") is PoissonSoftplusRegressor


def test_bad_input_is_named():
    X, y = GAMMA_DATA
    with pytest.raises(ValueError, match="gamma amounts must be > 0"):
        GammaSoftplusRegressor().fit(X, np.r_[0.0, y[1:]])
    with pytest.raises(ValueError, match="amounts must be >= 0"):
        TweedieSoftplusRegressor().fit(X, np.r_[-1.0, y[1:]])
    with pytest.raises(ValueError, match="NaN"):
        TweedieSoftplusRegressor().fit(X, np.r_[np.nan, y[1:]])
    for power in (1.0, 2.0, "1.5"):
        with pytest.raises(InvalidParameterError, match="power"):
            TweedieSoftplusRegressor(power=power).fit(X, y)
    est = GammaSoftplusRegressor().fit(X, y)
    with pytest.raises(ValueError, match="must be > 0"):
        est.score(X, np.r_[0.0, y[1:]])
    y_before = y.copy()
    TweedieSoftplusRegressor().fit(X, y)
    np.testing.assert_array_equal(y, y_before)


def test_tweedie_map_minimises_sklearns_penalised_deviance():
    """The coefficients solve d/dcoef [sum w d / (2 sum w) + alpha / 2 |coef|^2] = 0, with
    d the Tweedie deviance (scikit-learn's objective, whatever the dispersion)."""
    X, y = TWEEDIE_DATA
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    alpha, p = 0.05, 1.4
    est = TweedieSoftplusRegressor(alpha=alpha, power=p, tol=1e-10).fit(X, y,
                                                                       sample_weight=w)
    eta = est.intercept_ + X @ est.coef_
    mu, sig = np.logaddexp(0, eta), 1 / (1 + np.exp(-eta))
    r = w * (mu - y) * mu**-p * sig / w.sum()
    np.testing.assert_allclose(r.sum(), 0, atol=1e-9)
    np.testing.assert_allclose(X.T @ r + alpha * est.coef_, 0, atol=1e-9)


def test_tweedie_map_is_the_joint_maximum_without_a_penalty():
    """At alpha=0 the two-step MAP (deviance, then the dispersion's profile) is the joint
    maximum over coefficients and dispersion that Newton finds on the full likelihood."""
    from posheads.inference import fit_map

    X, y = TWEEDIE_DATA
    est = TweedieSoftplusRegressor(alpha=0, power=1.4, tol=1e-10).fit(X, y)
    model = est.posterior_.model
    joint = fit_map(model, est.posterior_.data, tol=1e-10).point_estimate()
    np.testing.assert_allclose(est.coef_, joint["coef"].numpy(), rtol=1e-8)
    assert est.dispersion_ == pytest.approx(float(joint["dispersion"]), rel=1e-8)
    assert est.loglik_ == pytest.approx(float(
        model.pointwise_log_likelihood(joint, est.posterior_.data).sum()), rel=1e-10)


def test_tweedie_summary_and_zero_probability():
    X, y = TWEEDIE_DATA
    est = TweedieSoftplusRegressor(alpha=0, power=1.4).fit(X, y)
    table = est.summary()
    assert {"intercept", "x0", "x1", "dispersion"} <= set(table.index)
    assert table.loc["dispersion", "estimate"] == pytest.approx(est.dispersion_)
    assert table.loc["dispersion", "lower"] < est.dispersion_ < table.loc["dispersion", "upper"]
    # the fitted law's P(y = 0), averaged over rows, is close to the share of zeros
    mu = est.predict(X)
    p0 = np.exp(-mu ** 0.6 / (est.dispersion_ * 0.6))
    assert p0.mean() == pytest.approx(np.mean(y == 0), abs=0.03)
