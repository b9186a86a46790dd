"""Public softplus-link count regressors: each declares its family, nothing more.

All share :class:`posheads.estimators._base.SoftplusGLMRegressor`'s parameters and
methods; see its ``fit``, ``predict``, ``predict_interval``,
``sample_posterior_predictive``, ``score``, ``summary``, ``to_inference_data``,
``save`` and ``load``.
"""

from __future__ import annotations

from posheads import families

from ._base import SoftplusGLMRegressor

__all__ = [
    "HurdleNegativeBinomialSoftplusRegressor",
    "HurdlePoissonSoftplusRegressor",
    "NegativeBinomialSoftplusRegressor",
    "PoissonSoftplusRegressor",
    "ZeroInflatedNegativeBinomialSoftplusRegressor",
    "ZeroInflatedPoissonSoftplusRegressor",
]

_PARAMS = """
    Parameters
    ----------
    alpha : float, default=1.0
        L2 penalty on the coefficients on scikit-learn's scale (the objective is
        ``sum(w * deviance) / (2 * sum(w)) + alpha / 2 * ||coef||^2``): ``alpha=0`` leaves
        the count part's coefficients unpenalised (maximum likelihood for the Poisson
        regressor). For the Bayesian engines it is a Gaussian prior of precision
        ``alpha * sum(w)``; the intercept is never penalised. The other parameters keep
        weakly informative priors whatever ``alpha``: ``Normal(0, 1)`` on a zero part's
        coefficients, ``1 / sqrt(r) ~ HalfNormal(1)`` on a concentration.
    fit_intercept : bool, default=True
    beta : float or "auto", default=1.0
        Softness of the link ``softplus_beta``. ``"auto"`` chooses it by profile
        likelihood (Wiemann, Kneib & Hambuckers 2024); ``beta_`` holds the value used.
    threshold : float, default=20.0
        Linear-branch threshold of the softplus (see :func:`posheads.ops.softplus`).
    inference : {"map", "laplace", "svi", "nuts"} or configuration, default="map"
        Engine: the MAP estimate by Newton's method (deterministic, fast), a Laplace
        approximation at it, stochastic variational inference, or NUTS. A name takes its
        budget from the keywords below; a configuration of :mod:`posheads.inference`
        (``MAP(...)``, ``Laplace(...)``, ``SVI(...)``, ``NUTS(num_samples=2000)``) carries
        its own, and the keywords it sets must then stay at their defaults.
    max_iter, tol : int, float
        Budget and tolerance of the Newton / L-BFGS solver (also of ``beta="auto"``'s
        search).
    num_samples, num_warmup, num_chains : int
        Posterior draws (Laplace, SVI, NUTS) and NUTS warm-up and chains.
    num_steps, batch_size, learning_rate : int, int or None, float
        SVI steps, mini-batch size (None: all rows) and Adam's learning rate.
    device : str or torch.device, default="auto"
        "auto" is CUDA when available, else CPU.
    dtype : {"float64", "float32"}, default="float64"
    random_state : int, RandomState or None, default=None
    verbose : int, default=0
        Progress bars for SVI and NUTS when > 0.
    warm_start : bool, default=False
        Start the MAP solver from the previous fit.
"""


class PoissonSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Poisson regression with a softplus link: ``E[y] = t * softplus(b0 + X w)``.

    A drop-in for scikit-learn's ``PoissonRegressor`` (same ``alpha`` scale, same D²
    score) whose link is additive for large predictors, and which also takes exposure,
    gives intervals and runs Bayesian engines. Non-integer non-negative targets are
    accepted as a quasi-likelihood, as scikit-learn does.
    """ + _PARAMS + """
    Examples
    --------
    >>> import numpy as np
    >>> from posheads import PoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> y = rng.poisson(np.logaddexp(0, 1 + X @ [0.5, -0.3]))
    >>> PoissonSoftplusRegressor(alpha=0).fit(X, y).coef_.shape
    (2,)
    """

    family = families.POISSON


class NegativeBinomialSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Negative-binomial (NB2) regression with a softplus link.

    Variance ``mu + mu**2 / concentration_``; the concentration is estimated with the
    coefficients (``dispersion_ = 1 / concentration_``), not searched for by hand.
    """ + _PARAMS

    family = families.NEGATIVE_BINOMIAL


class ZeroInflatedPoissonSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Zero-inflated Poisson regression with a softplus link.

    A structural zero with probability ``sigmoid(gate_intercept_ + X @ gate_coef_)``, else
    a Poisson count of mean ``t * softplus(b0 + X w)``. ``predict`` returns the overall
    expected count ``(1 - pi) * mu``. Targets must be whole numbers.
    """ + _PARAMS

    family = families.ZERO_INFLATED_POISSON


class ZeroInflatedNegativeBinomialSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Zero-inflated negative-binomial (NB2) regression with a softplus link.

    A structural zero with probability ``sigmoid(gate_intercept_ + X @ gate_coef_)``, else
    an NB2 count of mean ``t * softplus(b0 + X w)`` and concentration ``concentration_``:
    excess zeros and over-dispersion of the positive counts together. ``predict`` returns
    the overall expected count ``(1 - pi) * mu``. Targets must be whole numbers.
    """ + _PARAMS

    family = families.ZERO_INFLATED_NEGATIVE_BINOMIAL


class HurdlePoissonSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Hurdle Poisson regression with a softplus link.

    Zero with probability ``sigmoid(gate_intercept_ + X @ gate_coef_)``, else a
    zero-truncated Poisson count of rate ``t * softplus(b0 + X w)``. Targets must be
    whole numbers.
    """ + _PARAMS

    family = families.HURDLE_POISSON


class HurdleNegativeBinomialSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Hurdle negative-binomial (NB2) regression with a softplus link.

    Zero with probability ``sigmoid(gate_intercept_ + X @ gate_coef_)``, else a
    zero-truncated NB2 count of mean ``t * softplus(b0 + X w)`` (before truncation) and
    concentration ``concentration_``: the zeros and the over-dispersed positive counts
    have separate models. Targets must be whole numbers.
    """ + _PARAMS

    family = families.HURDLE_NEGATIVE_BINOMIAL
