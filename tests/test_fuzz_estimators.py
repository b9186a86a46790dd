"""A fuzzer for the estimators' ``fit`` / ``predict`` / ``predict_interval`` / ``score``.

Hypothesis builds small data sets and breaks them in the ways users do (NaN and inf,
negative, fractional, huge and tiny values, strings and object columns, mismatched
lengths, empty and one-row inputs, constant and duplicated columns, sparse and boolean
matrices, categorical oddities, bad weights and exposures). Every case must end in a
``ValueError`` / ``TypeError`` with a message, or in a correct-looking result (finite,
non-negative predictions of the right shape, ordered intervals, a finite score); and the
caller's objects must be left exactly as they were. The seed is fixed
(``derandomize=True``) and every fit is tiny, so the cases run in a bounded time.
"""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning

from posheads import families
from posheads.estimators import BayesianNeuralCountRegressor, regressor_for
from posheads.inference.checks import SamplerWarning

FAMILIES = ["poisson", "negative_binomial", "zero_inflated_poisson", "hurdle_poisson",
            "generalized_poisson", "gamma", "tweedie"]
FIT_CASES = 500
PREDICT_CASES = 700
# fixed examples, no example database, no deadline (a fit's time varies with the load)
FUZZ = dict(derandomize=True, database=None, deadline=None,
            suppress_health_check=list(HealthCheck))

X_BREAKS = ["none", "nan", "inf", "huge", "tiny", "string", "object_numbers", "sparse_csr",
            "sparse_coo", "bool", "list", "one_d", "three_d", "constant_column", "frame",
            "frame_duplicated", "frame_one_level", "frame_typo", "frame_int_names",
            "frame_category", "empty_columns"]
Y_BREAKS = ["none", "nan", "inf", "negative", "fraction", "huge", "count_limit", "tiny",
            "string", "object", "all_zero", "constant", "short", "two_d", "bool", "list"]
MUST_REFUSE = {"string", "object", "huge", "count_limit", "all_zero", "nan", "inf",
               "negative", "short"}
EXTRA_BREAKS = ["none", "weight_negative", "weight_nan", "weight_zero", "weight_short",
                "exposure_zero", "exposure_nan", "exposure_short", "exposure_scalar"]


def _base(n, p, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = rng.poisson(1.5, size=n).astype(np.float64)
    if n:
        y[0] = max(y[0], 1.0)  # not all zero unless a case asks for it
    return X, y


def _break_X(X, how, seed):
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    i = int(rng.integers(max(n, 1)))
    if how == "nan" and n:
        X = X.copy(); X[i, 0] = np.nan  # noqa: E702
    elif how == "inf" and n:
        X = X.copy(); X[i, -1] = -np.inf  # noqa: E702
    elif how == "huge":
        X = X * 1e300
    elif how == "tiny":
        X = X * 1e-300
    elif how == "string" and n:
        X = X.astype(object); X[i, 0] = "abc"  # noqa: E702
    elif how == "object_numbers":
        X = X.astype(object)
    elif how == "sparse_csr":
        X = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    elif how == "sparse_coo":
        X = sp.coo_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    elif how == "bool":
        X = X > 0
    elif how == "list":
        X = X.tolist()
    elif how == "one_d":
        X = X[:, 0]
    elif how == "three_d":
        X = X[:, :, None]
    elif how == "constant_column":
        X = np.column_stack([X, np.full(n, 2.0)])
    elif how.startswith("frame"):
        X = _frame(X, how, i)
    elif how == "empty_columns":
        X = X[:, :0]
    return X


def _frame(X, how, i):
    n, p = X.shape
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    levels = np.array(["a", "b", "c"])[np.arange(n) % 3]
    if how == "frame_duplicated":
        frame = pd.concat([frame, frame.iloc[:, :1]], axis=1)
    elif how == "frame_one_level":
        frame["g"] = "only"
    elif how == "frame_typo" and n:
        frame["x0"] = frame["x0"].map("{:.3f}".format).astype(object)
        frame.loc[i, "x0"] = "abc"
    elif how == "frame_int_names":
        frame.columns = list(range(p))
    elif how == "frame_category":
        frame["g"] = pd.Categorical(levels, categories=["a", "b", "c", "unused"])
    return frame


def _break_y(y, how, seed, family):
    rng = np.random.default_rng(seed)
    n = len(y)
    i = int(rng.integers(max(n, 1)))
    if families.get_family(family).support == "positive":
        y = y + 0.5
    y = y.copy()
    if how == "nan" and n:
        y[i] = np.nan
    elif how == "inf" and n:
        y[i] = np.inf
    elif how == "negative" and n:
        y[i] = -1.0
    elif how == "fraction" and n:
        y[i] = 1.5
    elif how == "huge" and n:
        y[i] = 1e308
    elif how == "count_limit" and n:
        y[i] = 2.0**53 + 2
    elif how == "tiny" and n:
        y[i] = 1e-300
    elif how == "string":
        y = y.astype(str)
    elif how == "object" and n:
        y = y.astype(object); y[i] = "x"  # noqa: E702
    elif how == "all_zero":
        y = np.zeros(n)
    elif how == "constant":
        y = np.full(n, 2.0)
    elif how == "short":
        y = y[:-1]
    elif how == "two_d":
        y = y[:, None]
    elif how == "bool":
        y = y > 1
    elif how == "list":
        y = y.tolist()
    return y


def _extras(how, n):
    if how.startswith("weight"):
        w = np.ones(n)
        if how == "weight_negative" and n:
            w[0] = -1.0
        elif how == "weight_nan" and n:
            w[0] = np.nan
        elif how == "weight_zero":
            w[:] = 0.0
        elif how == "weight_short":
            w = w[:-1]
        return {"sample_weight": w}
    if how.startswith("exposure"):
        t = np.ones(n)
        if how == "exposure_zero" and n:
            t[0] = 0.0
        elif how == "exposure_nan" and n:
            t[0] = np.nan
        elif how == "exposure_short":
            t = t[:-1]
        elif how == "exposure_scalar":
            t = 2.0
        return {"exposure": t}
    return {}


def _snapshot(objs):
    return copy.deepcopy(objs)


def _same(a, b) -> bool:
    """Whether the caller's object ``a`` still equals its copy ``b`` (values and dtype)."""
    if isinstance(a, pd.DataFrame):
        return a.equals(b) and list(a.columns) == list(b.columns)
    if sp.issparse(a):
        return a.format == b.format and a.dtype == b.dtype and \
            np.array_equal(a.toarray(), b.toarray(), equal_nan=True)
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.kind in "fc":
            return np.array_equal(a, b, equal_nan=True)
        return bool(np.all(a == b)) if a.dtype.kind != "O" else \
            all(x == y or (x != x and y != y) for x, y in zip(a.ravel(), b.ravel(),
                                                            strict=True))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


def _expect_clean_error(err: Exception):
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    text = str(err)
    assert text.strip(), f"{type(err).__name__} without a message"
    # one message, not a dump (scikit-learn's NaN message, with its advice, is ~650)
    assert "Traceback" not in text and len(text) < 1000, text[:1000]


def _check_outputs(est, X, n, extras):
    pred = est.predict(X, **({"exposure": extras["exposure"]} if "exposure" in extras else {}))
    assert pred.shape == (n,) and np.all(np.isfinite(pred)) and np.all(pred >= 0), pred


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is tiny on purpose
    warnings.simplefilter("ignore", SamplerWarning)
    warnings.simplefilter("ignore", DataConversionWarning)  # y of shape (n, 1): raveled
    return ctx


@st.composite
def fit_cases(draw):
    # intact parts weighted up, so that about a third of the fits succeed and are judged
    return {
        "family": draw(st.sampled_from(FAMILIES)),
        "n": draw(st.sampled_from([0, 1, 2, 5, 8, 8])),
        "p": draw(st.integers(1, 3)),
        "seed": draw(st.integers(0, 2**16)),
        "x": draw(st.sampled_from(["none"] * 6 + X_BREAKS)),
        "y": draw(st.sampled_from(["none"] * 12 + Y_BREAKS)),
        "extra": draw(st.sampled_from(["none"] * 12 + EXTRA_BREAKS)),
    }


def fit_case(case):
    """Fit on the broken data of ``case``; judge the outcome and the caller's objects."""
    X0, y0 = _base(case["n"], case["p"], case["seed"])
    X = _break_X(X0, case["x"], case["seed"])
    y = _break_y(y0, case["y"], case["seed"], case["family"])
    extras = _extras(case["extra"], case["n"])
    before = _snapshot((X, y, extras))
    est = regressor_for(case["family"])(max_iter=5)
    # a target that is text, too large or all zero must be refused with a ValueError
    # (when nothing else is wrong): never a TypeError from numpy, never a fit
    must_refuse = case["y"] in MUST_REFUSE and case["x"] == "none" and \
        case["extra"] == "none" and case["n"] > 0 and not (
            case["y"] == "count_limit" and families.get_family(case["family"]).support != "counts")
    ctx = _quiet()
    try:
        try:
            est.fit(X, y, **extras)
        except Exception as err:  # the fuzzer judges every exception
            _expect_clean_error(err)
            assert not must_refuse or isinstance(err, ValueError), repr(err)
        else:
            assert not must_refuse, f"y broken by {case['y']!r} was fitted"
            assert np.all(np.isfinite(est.coef_)) and np.isfinite(est.intercept_)
            _check_outputs(est, X, case["n"], extras)
            score = est.score(X, y)
            assert np.isfinite(score), score
    finally:
        ctx.__exit__(None, None, None)
    for a, b in zip((X, y, *extras.values()), (before[0], before[1], *before[2].values()),
                    strict=True):
        assert _same(a, b), f"the caller's {type(a).__name__} was modified"


def test_fuzz_fit():
    """Broken training data: a clean error, or a fit whose predictions make sense."""
    ran = []

    @settings(max_examples=FIT_CASES, **FUZZ)
    @given(case=fit_cases())
    def run(case):
        ran.append(case)
        fit_case(case)

    run()
    assert len(ran) >= FIT_CASES


_FITTED = {}


def _fitted(family, kind):
    """A fitted estimator per family and input kind (array or frame), made once."""
    key = (family, kind)
    if key not in _FITTED:
        X, y = _base(12, 2, 0)
        if families.get_family(family).support == "positive":
            y = y + 0.5
        data = X if kind == "array" else _frame(X, "frame_category", 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _FITTED[key] = regressor_for(family)(max_iter=20).fit(data, y)
    return _FITTED[key]


@st.composite
def predict_cases(draw):
    return {
        "family": draw(st.sampled_from(FAMILIES)),
        "kind": draw(st.sampled_from(["array", "frame"])),
        "n": draw(st.sampled_from([0, 1, 3, 6])),
        "seed": draw(st.integers(0, 2**16)),
        "x": draw(st.sampled_from([*X_BREAKS, "wrong_width", "unseen_level",
                                   "missing_column", "extra_column"])),
        "extra": draw(st.sampled_from(["none", "exposure_zero", "exposure_nan",
                                       "exposure_short", "exposure_scalar"])),
        "method": draw(st.sampled_from(["predict", "predict", "predict_interval", "score"])),
    }


def _predict_X(case):
    X, _ = _base(case["n"], 2, case["seed"])
    how = case["x"]
    if how == "wrong_width":
        X = np.column_stack([X, X[:, :1]])
    if case["kind"] == "frame" and not how.startswith("frame"):
        frame = _frame(X, "frame_category", 0)
        if how == "unseen_level" and len(frame):
            frame["g"] = frame["g"].astype(object)
            frame.loc[0, "g"] = "zzz"
        elif how == "missing_column":
            frame = frame.drop(columns="g")
        elif how == "extra_column":
            frame["other"] = 1.0
        elif how in ("nan", "inf", "huge", "string") and len(frame):
            frame = frame.astype({"x0": object}) if how == "string" else frame
            frame.loc[0, "x0"] = {"nan": np.nan, "inf": np.inf, "huge": 1e300,
                                  "string": "abc"}[how]
        return frame
    return _break_X(X, how, case["seed"])


def predict_case(case):
    """Predict with a fitted estimator on the broken data of ``case``; judge the outcome."""
    est = _fitted(case["family"], case["kind"])
    X = _predict_X(case)
    n = case["n"]
    extras = _extras(case["extra"], n)
    before = _snapshot((X, extras))
    ctx = _quiet()
    try:
        if case["method"] == "predict":
            _check_outputs(est, X, n, extras)
        elif case["method"] == "predict_interval":
            out = est.predict_interval(X, coverage=0.8, **extras)
            assert out.shape == (n, 2) and np.all(out[:, 0] <= out[:, 1])
            assert np.all(np.isfinite(out)) and np.all(out >= 0)
        else:
            y = np.arange(n, dtype=np.float64) % 3 + 0.5
            score = est.score(X, y)
            assert np.isfinite(score) and score <= 1.0, score
    except AssertionError:
        raise
    except Exception as err:  # the fuzzer judges every exception
        _expect_clean_error(err)
    finally:
        ctx.__exit__(None, None, None)
    assert _same(X, before[0]), "the caller's X was modified"
    for k, v in extras.items():
        assert _same(v, before[1][k]), f"the caller's {k} was modified"


def test_fuzz_predict():
    """Broken prediction data for fitted estimators: a clean error or a sane output."""
    ran = []

    @settings(max_examples=PREDICT_CASES, **FUZZ)
    @given(case=predict_cases())
    def run(case):
        ran.append(case)
        predict_case(case)

    run()
    assert len(ran) >= PREDICT_CASES


@pytest.mark.parametrize("y_how", ["string", "object", "huge", "nan", "negative", "short"])
@pytest.mark.parametrize("x_how", ["none", "frame_typo", "string"])
def test_bnn_refuses_bad_data_cleanly(x_how, y_how):
    X0, y0 = _base(6, 2, 1)
    X, y = _break_X(X0, x_how, 1), _break_y(y0, y_how, 1, "poisson")
    before = _snapshot((X, y))
    with pytest.raises((ValueError, TypeError)) as err:
        BayesianNeuralCountRegressor((2,), num_steps=2).fit(X, y)
    _expect_clean_error(err.value)
    assert _same(X, before[0]) and _same(y, before[1])
