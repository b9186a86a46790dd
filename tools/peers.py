"""Peer references for the tests and benchmarks (need the ``dev`` extra: statsmodels).

``statsmodels_softplus_link()`` is a statsmodels ``Link`` for ``mu = softplus(eta)``, so
statsmodels' IRLS can fit the same softplus-link GLM that posheads fits; it is the
independent reference the project's maximum-likelihood fits are checked against.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["statsmodels_softplus_glm", "statsmodels_softplus_link"]


def statsmodels_softplus_link():
    """statsmodels link ``eta = log(expm1(mu))`` with inverse ``mu = softplus(eta)``."""
    from statsmodels.genmod.families.links import Link

    class Softplus(Link):
        def __call__(self, mu):
            return mu + np.log(-np.expm1(-mu))

        def inverse(self, eta):
            return np.logaddexp(0.0, eta)

        def deriv(self, mu):
            return 1.0 / -np.expm1(-mu)

        def deriv2(self, mu):
            e = np.exp(-mu)
            return -e / (1.0 - e) ** 2

        def inverse_deriv(self, eta):
            return special.expit(eta)

        def inverse_deriv2(self, eta):
            s = special.expit(eta)
            return s * (1.0 - s)

    return Softplus()


def statsmodels_softplus_glm(X, y, *, weights=None, tol=1e-12):
    """Fit the Poisson softplus GLM with statsmodels' IRLS; return the results object.

    Parameters
    ----------
    X : ndarray, shape ``(n, p)``
        Features, without a constant column (one is added).
    y : ndarray, shape ``(n,)``
    weights : ndarray, shape ``(n,)``, optional
        Passed to statsmodels as ``freq_weights``. (statsmodels' ``exposure`` is an offset
        inside the link, ``softplus(eta + log t)``, not the multiplicative exposure
        ``t * softplus(eta)`` of posheads, so it is not offered here.)
    """
    import statsmodels.api as sm

    family = sm.families.Poisson(link=statsmodels_softplus_link(), check_link=False)
    model = sm.GLM(y, sm.add_constant(X, has_constant="add"), family=family,
                   freq_weights=weights)
    return model.fit(method="IRLS", tol=tol, maxiter=200)
