"""scikit-learn's common checks for MixedCountRegressor.

A mixed model needs its grouping: ``fit(X, y)`` without ``groups=`` (and without a formula
with bar terms) raises a ``ValueError`` naming ``groups``, by design -- a model with no
grouping factor has no random effect, and the maximum-likelihood engine has no
zero-factor case (that model is a GLM: use the GLM regressors). scikit-learn's checks
fit with ``fit(X, y)`` only, so every check that fits is an expected failure here
(:data:`NEEDS_GROUPS`); the checks that do not fit (parameters, cloning, ``__init__``,
unfitted errors, tags) must pass. :data:`MESSAGE_CHECKS` fail for the same reason by a
different route: they pass bad ``X`` (complex, empty, sparse, one row or one feature)
and match scikit-learn's wording of the error, while the estimator names the missing
``groups`` first.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from posheads.estimators.mixed import MixedCountRegressor

NEEDS_GROUPS = {name: "fit(X, y) needs groups=" for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_regressors_train",
    "check_regressor_data_not_an_array", "check_regressors_no_decision_function",
    "check_supervised_y_2d", "check_regressors_int", "check_non_transformer_estimators_n_iter",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_requires_y_none")}
MESSAGE_CHECKS = {name: "bad X is reported after the missing groups=" for name in (
    "check_complex_data", "check_estimators_empty_data_messages",
    "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_fit2d_1sample", "check_fit2d_1feature")}


@parametrize_with_checks([MixedCountRegressor()],
                         expected_failed_checks=lambda est: {**NEEDS_GROUPS, **MESSAGE_CHECKS})
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_no_groups_is_a_clear_error():
    X, y = np.zeros((10, 1)), np.ones(10)
    with pytest.raises(ValueError, match="groups is required"):
        MixedCountRegressor().fit(X, y)


def test_fit_with_groups_leaves_inputs_and_params_alone():
    """What the skipped checks would test, with groups given: inputs and parameters
    unchanged, fit returns self, refitting is idempotent, clone is unfitted."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    g = rng.integers(0, 6, 120)
    y = rng.poisson(np.logaddexp(0, 1 + X[:, 0] + rng.normal(0, .5, 6)[g])).astype(float)
    copies = X.copy(), y.copy(), g.copy()
    est = MixedCountRegressor(random_effects={"group": ["1"]})
    params = est.get_params()
    assert est.fit(X, y, groups=g) is est
    first = est.predict(X, groups=g)
    for a, b in zip((X, y, g), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    assert est.get_params() == params
    np.testing.assert_allclose(est.fit(X, y, groups=g).predict(X, groups=g), first,
                               rtol=1e-10)
    assert not hasattr(clone(est), "coef_")
