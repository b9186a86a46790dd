"""The families the tests parametrise over: those posheads registers itself.

The registry grows while the suite is collected: :func:`posheads.families.tweedie_family`
registers the Tweedie law at each new power, and several test modules call it at import
time. Parametrising over :func:`~posheads.families.available_families` would then give
different test ids when a file runs alone and when the whole suite runs. These are the
families that :mod:`posheads.families` exports as module constants and registers on
import, in registration order, whatever else has been registered since.
"""

from __future__ import annotations

from posheads import families

__all__ = ["BUILT_IN", "BUILT_IN_NAMES", "INTEGER_ONLY_CHECKS"]

_EXPORTED = [getattr(families, name) for name in families.__all__]

BUILT_IN = tuple(f for f in families.available_families()
                 if any(f is exported for exported in _EXPORTED))
BUILT_IN_NAMES = tuple(f.name for f in BUILT_IN)


# scikit-learn's common checks that feed real-valued targets (e.g. 0.37): a law of whole
# numbers rejects them with a ValueError by design.
INTEGER_ONLY_CHECKS = {
    "check_regressors_train": "real-valued y; this likelihood needs counts",
    "check_regressor_data_not_an_array": "real-valued y; needs counts",
    "check_regressors_no_decision_function": "real-valued y; needs counts",
    "check_fit_idempotent": "real-valued y; needs counts",
    "check_fit_check_is_fitted": "real-valued y; needs counts",
    "check_n_features_in": "real-valued y; needs counts",
    "check_n_features_in_after_fitting": "real-valued y; needs counts",
}
