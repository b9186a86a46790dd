"""Failed fits are not results; bad targets are errors; Bayesian fits report on themselves.

Issue #20, library half: string and oversized targets, all-zero and constant targets,
the ConvergenceWarning of an unconverged mode search, a step size that blows SVI up, the
diagnostics after NUTS / SVI (checked against arviz on the same draws), and no
third-party warning escaping a normal fit or prediction.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import d2_tweedie_score

import posheads
from posheads import families
from posheads.estimators import (
    BayesianNeuralCountRegressor,
    GammaSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    TweedieSoftplusRegressor,
    regressor_for,
)
from posheads.inference.checks import (
    SamplerWarning,
    budget_warning,
    diagnose_draws,
    draw_statistics,
)

FAMILIES = ["poisson", "negative_binomial", "generalized_poisson", "zero_inflated_poisson",
            "zero_inflated_negative_binomial", "hurdle_poisson", "hurdle_negative_binomial",
            "gamma", "tweedie"]


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = rng.poisson(np.log1p(np.exp(1.0 + X[:, 0])))
    return X, y.astype(np.float64)


def _target_for(family, y):
    """A valid target of ``family``'s support from counts ``y``."""
    return y + 0.5 if families.get_family(family).support == "positive" else y


# ------------------------------------------------------------------ bad targets
@pytest.mark.parametrize("family", FAMILIES)
def test_string_target_is_a_value_error(family):
    X, y = _data()
    with pytest.raises(ValueError, match="the target must be numbers"):
        regressor_for(family)().fit(X, _target_for(family, y).astype(str))


def test_string_target_is_a_value_error_in_the_bnn():
    X, y = _data()
    with pytest.raises(ValueError, match="the target must be numbers"):
        BayesianNeuralCountRegressor(num_steps=5).fit(X, y.astype(str))
    with pytest.raises(ValueError, match=r"holds 'abc' at position 3"):
        BayesianNeuralCountRegressor(num_steps=5).fit(
            X, np.array([*y[:3], "abc", *y[4:]], dtype=object))


@pytest.mark.parametrize("family", FAMILIES)
def test_values_too_large_to_represent_are_a_value_error(family):
    X, y = _data()
    y = _target_for(family, y)
    y[5] = 1e308
    with pytest.raises(ValueError, match=r"y holds 1e\+308, too large"):
        regressor_for(family)().fit(X, y)


def test_count_limit_is_where_float64_stops_counting():
    # 2**53 + 1 is the first whole number float64 cannot hold
    assert float(2**53) + 1.0 == float(2**53)
    X, y = _data()
    y[0] = 2.0**53 + 2
    with pytest.raises(ValueError, match="too large for a count"):
        NegativeBinomialSoftplusRegressor().fit(X, y)
    y = _data()[1] + 0.5
    y[0] = 1e31
    with pytest.raises(ValueError, match="too large for an amount"):
        GammaSoftplusRegressor().fit(X, y)


@pytest.mark.parametrize("family", ["poisson", "negative_binomial", "hurdle_poisson",
                                    "zero_inflated_poisson", "tweedie"])
def test_all_zero_target_is_a_value_error(family):
    X, _ = _data()
    with pytest.raises(ValueError, match="y is 0 in every row"):
        regressor_for(family)().fit(X, np.zeros(len(X)))


def test_bnn_refuses_all_zero_and_oversized_targets():
    X, y = _data()
    with pytest.raises(ValueError, match="y is 0 in every row"):
        BayesianNeuralCountRegressor(num_steps=5).fit(X, np.zeros(len(X)))
    y = y.copy()
    y[5] = 1e308
    with pytest.raises(ValueError, match=r"y holds 1e\+308, too large"):
        BayesianNeuralCountRegressor(num_steps=5).fit(X, y)


def test_bnn_score_is_finite_for_a_constant_target_and_refuses_text():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deliberately tiny budget
        est = BayesianNeuralCountRegressor((4,), num_steps=20, random_state=0).fit(X, y)
    assert est.score(X, np.full(len(X), 2.0)) == 0.0
    np.testing.assert_allclose(est.score(X, y), d2_tweedie_score(y, est.predict(X), power=1),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="the target must be numbers"):
        est.score(X, y.astype(str))


def test_score_is_finite_for_a_constant_target():
    X, y = _data()
    est = PoissonSoftplusRegressor().fit(X, y)
    # scikit-learn's convention for nothing to explain (r2_score, force_finite=True)
    assert est.score(X, np.full(len(X), 2.0)) == 0.0
    const = PoissonSoftplusRegressor(alpha=1e3).fit(X, np.full(len(X), 3.0))
    assert np.isfinite(const.score(X, np.full(len(X), 3.0)))
    # away from the degenerate case: scikit-learn's D2 of the Poisson deviance
    np.testing.assert_allclose(est.score(X, y), d2_tweedie_score(y, est.predict(X), power=1),
                               rtol=1e-10)


def test_typo_in_a_numeric_column_names_column_and_row():
    X, y = _data()
    frame = pd.DataFrame({"a": [f"{v:.3f}" for v in X[:, 0]], "b": X[:, 1]})
    frame.loc[7, "a"] = "abc"
    with pytest.raises(ValueError, match=r"column 'a' is numeric but row 7 holds 'abc'"):
        PoissonSoftplusRegressor().fit(frame, y)


# ------------------------------------------------------------------ failed fits
def test_unconverged_map_fit_warns_once_at_the_callers_line():
    X, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PoissonSoftplusRegressor(max_iter=1, tol=1e-12).fit(X, y)
    found = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "in 1 iteration(s)" in message and "max |gradient| = " in message
    assert found[0].filename == __file__  # the user's call, not posheads' insides


def test_svi_step_size_that_blows_up_suggests_a_lower_learning_rate():
    X, y = _data()
    est = PoissonSoftplusRegressor(inference="svi", learning_rate=1e6, num_steps=200,
                                   random_state=0)
    with pytest.raises(ValueError, match="lower learning_rate") as err:
        est.fit(X, y)
    assert len(str(err.value)) < 200  # one line, not Pyro's trace dump


def test_map_failure_on_one_row_does_not_mention_laplace():
    X, y = _data()
    est = PoissonSoftplusRegressor(alpha=0.0).fit(X[:1], y[:1] + 1)
    with pytest.raises(ValueError) as err:
        est.summary()
    assert "Laplace" not in str(err.value)


# ------------------------------------------------------------------ diagnostics
def test_map_fit_records_its_convergence():
    X, y = _data()
    est = PoissonSoftplusRegressor().fit(X, y)
    d = est.diagnostics_
    assert d.method == "map" and d.converged and d.ok
    assert d.n_iter == est.n_iter_ and d.grad_max <= est.tol


def test_nuts_with_no_budget_warns_and_reports_a_stuck_chain():
    X, y = _data()
    est = PoissonSoftplusRegressor(inference="nuts", num_warmup=0, num_samples=3,
                                   random_state=0)
    with pytest.warns(SamplerWarning, match="budget is too small") as caught:
        est.fit(X, y)
    assert all(w.filename == __file__ for w in caught if w.category is SamplerWarning)
    draws = est.posterior_.samples["intercept"]
    stuck = bool((draws == draws[:, :1]).all())
    assert (est.diagnostics_.stuck_chains == [0]) == stuck


def test_nuts_diagnostics_match_arviz_on_the_same_draws():
    az = pytest.importorskip("arviz")
    X, y = _data(n=60)
    est = PoissonSoftplusRegressor(inference="nuts", num_warmup=60, num_samples=120,
                                   num_chains=2, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)  # 240 draws: ESS may fall short
        est.fit(X, y)
    post, d = est.posterior_, est.diagnostics_
    ref = az.from_dict(posterior={k: v.numpy() for k, v in post.samples.items()})
    rhat, ess = az.rhat(ref), az.ess(ref, method="tail")
    worst_rhat = max(float(rhat[k].max()) for k in ref.posterior.data_vars)
    worst_tail = min(float(ess[k].min()) for k in ref.posterior.data_vars)
    assert d.r_hat == pytest.approx(worst_rhat, rel=1e-10)
    assert d.ess_tail == pytest.approx(worst_tail, rel=1e-10)
    assert d.divergences == int(post.sample_stats["diverging"].sum())
    table = est.summary()
    assert table.loc["intercept", "r_hat"] == pytest.approx(float(rhat["intercept"]))
    assert any("R-hat max" in line for line in table.attrs["diagnostics"])


def test_sampler_checks_flag_chains_that_disagree():
    # two chains around different centres: R-hat far above 1.01 (arviz's own number)
    rng = np.random.default_rng(0)
    draws = np.stack([rng.normal(0, 1, 200), rng.normal(3, 1, 200)])[:, :, None]
    stats = draw_statistics(draws)
    assert stats["r_hat"][0] > 1.5
    with pytest.warns(SamplerWarning, match="rhat statistic is larger than 1.01"):
        d = diagnose_draws("nuts", {"x": torch.as_tensor(draws)})
    assert not d.ok


def test_svi_that_did_not_plateau_says_so():
    X, y = _data()
    est = PoissonSoftplusRegressor(inference="svi", num_steps=120, num_samples=50,
                                   random_state=0)
    with pytest.warns(SamplerWarning, match="ELBO had not plateaued"):
        est.fit(X, y)
    assert est.diagnostics_.converged is False and est.diagnostics_.n_iter == 120


def test_tiny_budgets_warn_everywhere():
    assert budget_warning(num_warmup=50, num_samples=100, num_steps=100) is None
    assert "num_steps=1" in budget_warning(num_steps=1)
    X, y = _data()
    with pytest.warns(SamplerWarning, match="num_steps=5"):
        BayesianNeuralCountRegressor((4,), num_steps=5, random_state=0).fit(X, y)
    with pytest.warns(SamplerWarning, match="num_steps=5"):
        posheads.CountForecaster(inference="svi", num_steps=5, random_state=0).fit(
            np.random.default_rng(0).poisson(5.0, size=60))


def test_diagnostics_survive_save_and_load(tmp_path):
    X, y = _data()
    est = PoissonSoftplusRegressor().fit(X, y)
    est.save(tmp_path / "m")
    back = posheads.estimators.load(tmp_path / "m")
    assert back.diagnostics_ == est.diagnostics_


# ------------------------------------------------------------- warnings hygiene
def _no_warnings(fn, ours=()):
    """Run ``fn``; no warning may escape but posheads' own ``ours`` (by class)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    assert [f"{w.category.__name__}: {w.message}" for w in caught
            if not issubclass(w.category, ours)] == []


@pytest.mark.parametrize("family", ["poisson", "hurdle_negative_binomial", "gamma",
                                    "tweedie"])
def test_normal_fit_and_predict_warn_nothing(family):
    X, y = _data()
    y = _target_for(family, y)
    frame = pd.DataFrame({"a": X[:, 0], "g": np.where(X[:, 1] > 0, "u", "v")})

    def run():
        for data in (X, sp.csr_matrix(X), frame):
            est = regressor_for(family)().fit(data, y)
            est.predict(data)
            est.predict_interval(data)
            est.score(data, y)

    _no_warnings(run)


def test_bnn_on_a_copy_on_write_frame_warns_nothing():
    X, y = _data()
    with pd.option_context("mode.copy_on_write", True):
        frame = pd.DataFrame(X, columns=["a", "b"])

        def run():
            est = BayesianNeuralCountRegressor((4,), num_steps=150, patience=20,
                                               num_samples=20, random_state=0)
            est.fit(frame, y)
            est.predict(frame)

        _no_warnings(run, ours=SamplerWarning)  # a short run may not plateau: ours to say


def test_tweedie_fits_sparse_without_warnings():
    X, y = _data()
    _no_warnings(lambda: TweedieSoftplusRegressor().fit(sp.csr_matrix(X), y).predict(X))
