"""Data frames, formulas, zero-part designs and offsets (``posheads.estimators.design``).

The references are independent of the code under test: a one-hot design built by hand
with pandas, maximum-likelihood fits by scipy's optimiser on likelihoods written here in
numpy, and simulations with a known answer.
"""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

from posheads import (
    BayesianNeuralCountRegressor,
    HurdlePoissonSoftplusRegressor,
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)
from posheads.datasets import load_nmes1988
from posheads.estimators import load
from posheads.estimators.design import ColumnSchema, DataDesign, FrameEncoder

NMES_FORMULA = "visits ~ C(health) + chronic + age + gender + insurance + school"


@pytest.fixture(scope="module")
def nmes():
    return load_nmes1988(as_frame=True).frame


def _by_hand(frame):
    """The treatment-coded design of NMES_FORMULA, written out column by column (the
    loader's categories keep R's level order: average, poor, excellent)."""
    return pd.DataFrame({
        "health[poor]": (frame["health"] == "poor").astype(float),
        "health[excellent]": (frame["health"] == "excellent").astype(float),
        "chronic": frame["chronic"].astype(float),
        "age": frame["age"].astype(float),
        "gender[male]": (frame["gender"] == "male").astype(float),
        "insurance[yes]": (frame["insurance"] == "yes").astype(float),
        "school": frame["school"].astype(float),
    }).to_numpy()


# ----------------------------------------------------------------- the acceptance test
def test_formula_fit_on_nmes_matches_hand_built_design(nmes):
    before = nmes.copy(deep=True)
    est = NegativeBinomialSoftplusRegressor(alpha=0, formula=NMES_FORMULA).fit(nmes)
    ref = NegativeBinomialSoftplusRegressor(alpha=0).fit(_by_hand(nmes), nmes["visits"])
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    assert est.intercept_ == pytest.approx(ref.intercept_, rel=1e-6)
    assert est.concentration_ == pytest.approx(ref.concentration_, rel=1e-6)
    assert est.coef_names_[:2] == ["C(health)[poor]", "C(health)[excellent]"]
    assert list(est.feature_names_in_) == ["health", "chronic", "age", "gender", "school",
                                           "insurance"]  # the frame's order
    np.testing.assert_allclose(est.predict(nmes.iloc[:20]), ref.predict(_by_hand(nmes)[:20]),
                               rtol=1e-6)
    pd.testing.assert_frame_equal(nmes, before)  # the caller's frame is untouched


def test_frame_with_categorical_columns_matches_the_formula(nmes):
    cols = ["health", "chronic", "age", "gender", "insurance", "school"]
    X = nmes[cols].assign(health=nmes["health"].astype(str))  # strings and categoricals
    est = NegativeBinomialSoftplusRegressor(alpha=0).fit(X, nmes["visits"])
    ref = NegativeBinomialSoftplusRegressor(alpha=0).fit(_by_hand(nmes), nmes["visits"])
    np.testing.assert_allclose(est.coef_[2:], ref.coef_[2:], rtol=1e-6, atol=1e-8)
    # a column of strings takes its levels in sorted order: excellent before poor
    assert est.coef_names_ == ["health[excellent]", "health[poor]", "chronic", "age",
                               "gender[male]", "insurance[yes]", "school"]
    np.testing.assert_allclose(est.coef_[[1, 0]], ref.coef_[:2], rtol=1e-6)
    table = est.summary()
    assert "health[poor]" in table.index and "gender[male]" in table.index


def test_reference_level_and_booleans():
    frame = pd.DataFrame({"g": pd.Categorical(["b", "a", "c", "a"], categories=["c", "a", "b"]),
                          "flag": [True, False, True, False], "x": [1.0, 2.0, 3.0, 4.0]})
    enc = FrameEncoder.fit(frame)
    assert enc.column_names == ["g[a]", "g[b]", "flag[True]", "x"]  # a categorical's order
    np.testing.assert_array_equal(enc.transform(frame), [[0, 1, 1, 1], [1, 0, 0, 2],
                                                         [0, 0, 1, 3], [1, 0, 0, 4]])


def test_stateful_transforms_are_reapplied_not_refitted(nmes):
    est = PoissonSoftplusRegressor(
        alpha=0, formula="visits ~ C(health) + center(age) + bs(income, 4)").fit(nmes)
    full = est.predict(nmes)
    # centring and spline knots refitted on 30 rows would change these predictions
    np.testing.assert_allclose(est.predict(nmes.iloc[100:130]), full[100:130], rtol=1e-12)
    assert est.coef_names_[-4:] == [f"bs(income, 4)[{j}]" for j in range(1, 5)]


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("formula, match", [
    ("visits ~ C(health) + nope", "names column.*'nope'"),
    ("missing ~ age", "response of the formula names column.*'missing'"),
    ("~ age", "no response and no y"),
    ("visits ~ age - 1", "removes an intercept"),
    ("visits ~ age | chronic | school", "at most two"),
])
def test_formula_errors_name_the_problem(nmes, formula, match):
    with pytest.raises(ValueError, match=match):
        ZeroInflatedPoissonSoftplusRegressor(formula=formula).fit(nmes)


def test_more_formula_errors(nmes):
    one = nmes.assign(const="a")
    with pytest.raises(ValueError, match="'const' is a factor with one level"):
        PoissonSoftplusRegressor(formula="visits ~ const + age").fit(one)
    with pytest.raises(ValueError, match="do not pass y"):
        PoissonSoftplusRegressor(formula="visits ~ age").fit(nmes, nmes["visits"])
    with pytest.raises(ValueError, match="has no zero part"):
        PoissonSoftplusRegressor(formula="visits ~ age | chronic").fit(nmes)
    with pytest.raises(ValueError, match="given twice"):
        ZeroInflatedPoissonSoftplusRegressor(formula="visits ~ age | chronic",
                                             zero_formula="~ school").fit(nmes)
    with pytest.raises(ValueError, match="needs formula"):
        ZeroInflatedPoissonSoftplusRegressor(zero_formula="~ school").fit(
            nmes[["age"]], nmes["visits"])
    est = PoissonSoftplusRegressor(formula="~ age").fit(nmes, nmes["visits"])  # y apart
    assert est.coef_names_ == ["age"]


@pytest.mark.parametrize("formula", [None, "visits ~ health + age"])
def test_bad_values_at_predict_name_column_and_row(nmes, formula):
    X = nmes[["health", "age", "visits"]]
    est = PoissonSoftplusRegressor(formula=formula)
    if formula is None:
        est.fit(X[["health", "age"]], X["visits"])
        X = X[["health", "age"]]
    else:
        est.fit(X)
    unseen = X.iloc[:5].copy()
    unseen["health"] = unseen["health"].astype(str)
    unseen.iloc[3, 0] = "awful"
    with pytest.raises(ValueError, match=r"column 'health' has the level 'awful' at row 3"):
        est.predict(unseen)
    text = X.iloc[:5].astype({"age": object})
    text.iloc[2, 1] = "old"
    with pytest.raises(ValueError, match=r"column 'age' is numeric but row 2 holds 'old'"):
        est.predict(text)
    missing = X.iloc[:5].copy()
    missing.iloc[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"column 'age' has a missing value at row 4"):
        est.predict(missing)
    with pytest.raises(ValueError, match="lacks the column"):
        est.predict(X.iloc[:5].drop(columns="age"))


def test_fit_errors_on_frames(nmes):
    bad = nmes[["health", "age"]].astype({"age": object}).copy()
    bad.iloc[7, 1] = "unknown"
    with pytest.raises(ValueError, match=r"column 'age' is numeric but row 7 holds 'unknown'"):
        PoissonSoftplusRegressor().fit(bad, nmes["visits"])
    one = nmes[["health"]].assign(g="x")
    with pytest.raises(ValueError, match="'g' is a factor with one level"):
        PoissonSoftplusRegressor().fit(one, nmes["visits"])
    arr = np.array([[1.0, "2"], [3.0, "n/a"]], dtype=object)
    with pytest.raises(ValueError, match=r"column 'X\[:, 1\]' is numeric but row 1"):
        PoissonSoftplusRegressor().fit(arr, [1, 2])


# ----------------------------------------------------------------- zero part
def _zip_data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    mu = np.logaddexp(0, 1.0 + 0.8 * x)
    pi = special.expit(-0.5 + 1.2 * z)
    y = np.where(rng.random(n) < pi, 0, rng.poisson(mu))
    return pd.DataFrame({"y": y, "x": x, "z": z})


def _zip_nll(theta, x, z, y):
    """The ZIP negative log-likelihood plus the estimators' Normal(0, 1) prior on the
    zero part's coefficient (their intercepts are flat)."""
    b0, b1, g0, g1 = theta
    mu = np.logaddexp(0, b0 + b1 * x)
    logit = g0 + g1 * z
    log_pi, log_1mpi = -np.logaddexp(0, -logit), -np.logaddexp(0, logit)
    zero = np.logaddexp(log_pi, log_1mpi - mu)
    pos = log_1mpi + y * np.log(mu) - mu - special.gammaln(y + 1)
    return -np.sum(np.where(y == 0, zero, pos)) + 0.5 * g1**2


def test_zero_part_design_matches_scipy_mle():
    df = _zip_data()
    ref = optimize.minimize(_zip_nll, np.zeros(4), args=(df.x.to_numpy(), df.z.to_numpy(),
                                                         df.y.to_numpy()),
                            method="BFGS", options={"gtol": 1e-8})
    pipe = ZeroInflatedPoissonSoftplusRegressor(alpha=0, formula="y ~ x | z").fit(df)
    named = ZeroInflatedPoissonSoftplusRegressor(alpha=0, formula="y ~ x",
                                                 zero_formula="~ z").fit(df)
    arrays = ZeroInflatedPoissonSoftplusRegressor(alpha=0).fit(
        df[["x"]].to_numpy(), df.y, X_zero=df[["z"]].to_numpy())
    for est in (pipe, named, arrays):
        np.testing.assert_allclose([est.intercept_, est.coef_[0], est.gate_intercept_,
                                    est.gate_coef_[0]], ref.x, rtol=1e-5, atol=1e-6)
    assert pipe.zero_coef_names_ == ["z"] and arrays.zero_coef_names_ == ["z0"]
    np.testing.assert_allclose(pipe.predict(df.iloc[:10]),
                               arrays.predict(df[["x"]].to_numpy()[:10],
                                              X_zero=df[["z"]].to_numpy()[:10]), rtol=1e-10)
    assert "gate:z" in pipe.summary().index
    with pytest.raises(ValueError, match="fitted with X_zero"):
        arrays.predict(df[["x"]].to_numpy()[:10])
    with pytest.raises(ValueError, match="do not pass X_zero"):
        pipe.predict(df.iloc[:10], X_zero=df[["z"]].iloc[:10])


def test_zero_part_frame_and_hurdle():
    df = _zip_data(n=600, seed=1).assign(g=lambda d: np.where(d.z > 0, "hi", "lo"))
    est = HurdlePoissonSoftplusRegressor(alpha=0).fit(df[["x"]], df.y, X_zero=df[["g"]])
    assert est.zero_coef_names_ == ["g[lo]"]
    assert est.predict(df[["x"]].iloc[:4], X_zero=df[["g"]].iloc[:4]).shape == (4,)


# ----------------------------------------------------------------- offsets
def _poisson_offset_nll(theta, X, y, o):
    eta = o + theta[0] + X @ theta[1:]
    mu = np.logaddexp(0, eta)
    sig = special.expit(eta)
    g = sig * (1 - y / mu)
    return np.sum(mu - y * np.log(mu)), np.concatenate([[g.sum()], X.T @ g])


def test_offset_matches_scipy_mle():
    rng = np.random.default_rng(3)
    n = 2000
    X = rng.normal(size=(n, 2))
    o = rng.uniform(-1, 2, size=n)
    y = rng.poisson(np.logaddexp(0, o + 0.5 + X @ [0.7, -0.4]))
    o_before = o.copy()
    ref = optimize.minimize(_poisson_offset_nll, np.zeros(3), args=(X, y, o), jac=True,
                            method="BFGS", options={"gtol": 1e-10})
    est = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y, offset=o)
    np.testing.assert_allclose([est.intercept_, *est.coef_], ref.x, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(o, o_before)
    mean = est.predict(X[:5], offset=o[:5])
    np.testing.assert_allclose(mean, np.logaddexp(0, o[:5] + ref.x[0] + X[:5] @ ref.x[1:]),
                               rtol=1e-6)
    # an offset is not an exposure under the softplus link
    assert not np.allclose(mean, est.predict(X[:5]) * np.exp(o[:5]))
    with pytest.raises(ValueError, match="offset must have shape"):
        est.predict(X[:5], offset=o[:4])
    with pytest.raises(ValueError, match="offset"):
        est.predict(X[:2], offset=[0.0, np.inf])


def test_offset_with_nb_and_intervals(nmes):
    o = np.log(nmes["age"].to_numpy())
    est = NegativeBinomialSoftplusRegressor(alpha=0, formula="visits ~ health + chronic")
    est.fit(nmes, offset=o)
    shifted = NegativeBinomialSoftplusRegressor(alpha=0, formula="visits ~ health + chronic")
    shifted.fit(nmes, offset=o + 1.0)  # a constant in the offset moves only the intercept
    np.testing.assert_allclose(shifted.coef_, est.coef_, rtol=1e-6, atol=1e-8)
    assert shifted.intercept_ == pytest.approx(est.intercept_ - 1.0, abs=1e-6)
    lo_hi = est.predict_interval(nmes.iloc[:5], offset=o[:5])
    assert lo_hi.shape == (5, 2) and np.all(lo_hi[:, 0] <= lo_hi[:, 1])


# ----------------------------------------------------------------- persistence, BNN
def test_formula_design_saved_in_json(nmes, tmp_path):
    est = ZeroInflatedPoissonSoftplusRegressor(
        alpha=0, formula="visits ~ C(health, contr.treatment('poor')) + center(age) "
                         "+ poly(income, 2) | chronic + gender").fit(nmes)
    est.save(tmp_path)
    meta = json.loads((tmp_path / "estimator.json").read_text())
    assert meta["attributes"]["design_"]["formula"].startswith("visits ~")
    back = load(tmp_path)
    np.testing.assert_allclose(back.predict(nmes.iloc[:50]), est.predict(nmes.iloc[:50]),
                               rtol=1e-12)
    assert back.coef_names_ == est.coef_names_
    schema = ColumnSchema.from_dict(meta["attributes"]["design_"]["count"]["schema"])
    assert schema.levels["health"] == ["average", "poor", "excellent"]


def test_design_round_trip_without_estimator(nmes):
    design, X, Z, y = DataDesign.fit(nmes, formula="visits ~ C(region) + bs(age, 3) | school")
    again = DataDesign.from_dict(json.loads(json.dumps(design.to_dict())))
    X2, Z2 = again.transform(nmes.iloc[::7])
    np.testing.assert_allclose(X2, X[::7], rtol=1e-12)
    np.testing.assert_allclose(Z2, Z[::7], rtol=1e-12)
    np.testing.assert_array_equal(again.response_of(nmes.iloc[:3]), y[:3])


SPLINE_FORMULA = "visits ~ C(health) + chronic + age + bs(income, 4)"


def _spline_by_hand(frame):
    """SPLINE_FORMULA's design with scipy's B-splines: R's ``bs(x, 4)`` is the cubic basis
    on the knots (min, median, max), its first function dropped."""
    from scipy.interpolate import BSpline

    x = frame["income"].to_numpy(dtype=float)
    knots = np.r_[[x.min()] * 4, np.median(x), [x.max()] * 4]
    spline = BSpline.design_matrix(x, knots, 3).toarray()[:, 1:]
    return np.column_stack([_by_hand(frame)[:, :4], spline])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_formula_design_is_one_contiguous_array_of_the_dtype(nmes, dtype):
    design, X, _, y = DataDesign.fit(nmes, formula=SPLINE_FORMULA, dtype=dtype)
    assert X.dtype == dtype and X.flags.c_contiguous and X.shape == (len(nmes), 8)
    np.testing.assert_allclose(X, _spline_by_hand(nmes),
                               rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-7)
    assert y.dtype == np.float64  # the response keeps full precision
    X2, _ = design.transform(nmes.iloc[::5], dtype=dtype)  # the training state, again
    assert X2.dtype == dtype and X2.flags.c_contiguous
    np.testing.assert_array_equal(X2, X[::5])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_and_predict_share_the_formula_design(nmes, dtype):
    """The engine reads the design formulaic's columns were written into, not a copy."""
    import torch

    est = NegativeBinomialSoftplusRegressor(alpha=0, formula=SPLINE_FORMULA,
                                            dtype=dtype).fit(nmes)
    ref = NegativeBinomialSoftplusRegressor(alpha=0, dtype=dtype).fit(
        _spline_by_hand(nmes).astype(dtype), nmes["visits"])
    X = est.posterior_.data.X
    assert X.dtype == getattr(torch, dtype) and X.is_contiguous() and X.shape[1] == 8
    rtol = 1e-6 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=rtol, atol=rtol)
    data = est._prediction_data(nmes.iloc[:30])
    assert data.X.dtype == X.dtype and data.X.is_contiguous()
    np.testing.assert_allclose(est.predict(nmes.iloc[:30]),
                               ref.predict(_spline_by_hand(nmes)[:30].astype(dtype)),
                               rtol=rtol)


def test_formulaic_registry_is_left_alone(nmes):
    from formulaic.materializers import FormulaMaterializer, PandasMaterializer

    design, *_ = DataDesign.fit(nmes.iloc[:200], formula=SPLINE_FORMULA)
    assert FormulaMaterializer.for_materializer("pandas") is PandasMaterializer
    assert design.count.spec.materializer == "pandas"  # a saved state needs formulaic only
    assert design.count.spec.materializer_params in (None, {})


def test_bnn_takes_frames(nmes, tmp_path):
    X = nmes[["health", "chronic", "gender"]].iloc[:400]
    est = BayesianNeuralCountRegressor(hidden_layer_sizes=(4,), num_steps=30,
                                       num_samples=20, random_state=0)
    est.fit(X, nmes["visits"].iloc[:400])
    assert est.x_mean_.shape == (4,) and est.n_features_in_ == 3
    est.save(tmp_path)
    np.testing.assert_allclose(load(tmp_path).predict(X.iloc[:5]), est.predict(X.iloc[:5]))
    with pytest.raises(ValueError, match="level 'awful'"):
        est.predict(X.iloc[:2].assign(health="awful"))


def test_formulaic_is_optional_and_lazy(monkeypatch, nmes):
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] == "formulaic"]:
        monkeypatch.delitem(sys.modules, name)
    PoissonSoftplusRegressor().fit(np.ones((4, 1)), [1, 2, 0, 1])  # no formula: no import
    PoissonSoftplusRegressor().fit(nmes[["health", "age"]], nmes["visits"])  # frames neither
    assert "formulaic" not in sys.modules
    monkeypatch.setitem(sys.modules, "formulaic", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"posheads\[formula\]"):
        PoissonSoftplusRegressor(formula="visits ~ age").fit(nmes)


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial",
                                        "zero_inflated_poisson"])
def test_offset_in_the_newton_loss_matches_autograd(likelihood):
    """The closed-form rows see ``eta + offset`` exactly as the model's distribution does."""
    import torch

    from posheads.models.glm import GLMData, SoftplusGLM
    from posheads.models.glm_loss import GLMLoss

    gen = torch.Generator().manual_seed(0)
    n, f64 = 60, torch.float64
    X = torch.randn(n, 2, generator=gen, dtype=f64)
    data = GLMData(X, torch.poisson(torch.full((n,), 2.0, dtype=f64), generator=gen),
                   offset=torch.randn(n, generator=gen, dtype=f64),
                   X_zero=torch.randn(n, 1, generator=gen, dtype=f64))
    model = SoftplusGLM(likelihood)
    loss = GLMLoss(model, data, jacobian=True, normalize=False)
    theta = 0.3 * torch.randn(loss.dim, generator=gen, dtype=f64)
    U, grad = loss.potential_and_grad(theta)
    H = loss.hessian(theta, loss.predictors(theta), exact=True)

    def potential(th):
        return -model.log_joint(th, data)

    torch.testing.assert_close(U, potential(theta))
    torch.testing.assert_close(grad, torch.autograd.functional.jacobian(potential, theta))
    torch.testing.assert_close(H, torch.autograd.functional.hessian(potential, theta))
