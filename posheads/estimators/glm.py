"""Public softplus-link count regressors: each declares its family, nothing more.

All share :class:`posheads.estimators._base.SoftplusGLMRegressor`'s parameters and
methods; see its ``fit``, ``predict``, ``predict_interval``,
``sample_posterior_predictive``, ``score``, ``summary``, ``to_inference_data``,
``save`` and ``load``.
"""

from __future__ import annotations

import inspect
import numbers
from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from posheads import families

from ._base import SoftplusGLMRegressor
from ._inference import inference_config
from ._profile import grid_then_golden

__all__ = [
    "GammaSoftplusRegressor",
    "GeneralizedPoissonSoftplusRegressor",
    "HurdleNegativeBinomialSoftplusRegressor",
    "HurdlePoissonSoftplusRegressor",
    "NegativeBinomialSoftplusRegressor",
    "PoissonSoftplusRegressor",
    "TweedieSoftplusRegressor",
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
    formula : str, optional
        A Wilkinson formula (through formulaic, ``pip install posheads[formula]``):
        ``fit(df)`` then reads a data frame, ``"visits ~ C(health) + bs(income, 4)"``,
        and predictions apply the same design. pscl's ``"y ~ x | z"`` gives the zero
        part of zero-inflated and hurdle models its own right-hand side.
    zero_formula : str, optional
        The zero part's right-hand side, ``"~ z1 + z2"`` (with ``formula``).
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


class GeneralizedPoissonSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Generalized Poisson (Consul) regression with a softplus link: counts below
    or above the Poisson's dispersion.

    Mean ``t * softplus(b0 + X w)`` and variance ``dispersion_`` times the mean, the
    dispersion estimated with the coefficients: below 1 for under-dispersed counts
    (scheduled events), which no Poisson or negative binomial can express. Below 1 the
    law's support is cut where Consul's formula stops being valid and the law is
    renormalised there (:class:`posheads.distributions.SoftplusGeneralizedPoisson`), so
    the mean of rows with small rates can sit below ``t * softplus(b0 + X w)``;
    ``predict`` returns the law's mean. Targets must be whole numbers. Meant for
    under-dispersed counts with means of tens and more: with many means below a few
    counts the cut pins the dispersion near 1 (``docs/count-likelihoods.md``).
    """ + _PARAMS + """
    Examples
    --------
    >>> import numpy as np
    >>> from posheads import GeneralizedPoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2))
    >>> y = np.round(np.logaddexp(0, 3 + X @ [0.5, -0.3]) + rng.normal(size=300)).clip(0)
    >>> est = GeneralizedPoissonSoftplusRegressor(alpha=0).fit(X, y)
    >>> bool(est.dispersion_ < 1)
    True
    """

    family = families.GENERALIZED_POISSON


class GammaSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Gamma regression with a softplus link: positive amounts.

    ``E[y] = t * softplus(b0 + X w)`` (claim severities, durations, costs), variance
    ``E[y]**2 / concentration_`` with the shape estimated with the coefficients
    (``dispersion_ = 1 / concentration_``). Like scikit-learn's ``GammaRegressor`` (same
    ``alpha`` scale, D² on the Gamma deviance) but with an additive link for large
    predictors, exposure, intervals and Bayesian engines. Targets must be ``> 0``. The
    shape's default prior is ``1 / sqrt(concentration) ~ HalfNormal(2)``, a prior on the
    coefficient of variation.
    """ + _PARAMS + """
    Examples
    --------
    >>> import numpy as np
    >>> from posheads import GammaSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> y = rng.gamma(2.0, np.logaddexp(0, 1 + X @ [0.5, -0.3]) / 2.0)
    >>> est = GammaSoftplusRegressor(alpha=0).fit(X, y)
    >>> round(est.concentration_)
    2
    """

    family = families.GAMMA


def _signature_with_power(init):
    """The base's keyword-only signature with ``power`` first: scikit-learn reads the
    parameters of an estimator from the signature of its ``__init__``."""
    signature = inspect.signature(init)
    power = inspect.Parameter("power", inspect.Parameter.KEYWORD_ONLY, default=1.5)
    return signature.replace(parameters=[signature.parameters["self"], power,
                                         *list(signature.parameters.values())[1:]])


class TweedieSoftplusRegressor(SoftplusGLMRegressor):
    __doc__ = """Tweedie (compound Poisson-gamma) regression with a softplus link.

    Non-negative amounts with exact zeros (the pure premium: zero for most policies, an
    amount for the rest): ``E[y] = t * softplus(b0 + X w)``, ``Var[y] = dispersion_ *
    E[y]**power_``, ``P(y = 0) = exp(-E[y]**(2 - p) / (dispersion_ (2 - p)))``.

    For a fixed power the MAP coefficients minimise the Tweedie deviance (plus the
    ``alpha`` penalty), as scikit-learn's ``TweedieRegressor`` does, whatever the
    dispersion; the dispersion is then the maximiser of the exact likelihood (the series
    density of Dunn & Smyth 2005, :class:`posheads.distributions.SoftplusTweedie`),
    found jointly by Newton's method. The Bayesian engines and every density query use
    that likelihood. The dispersion's default prior is ``LogNormal(0, 3)``.

    Parameters
    ----------
    power : float in (1, 2) or "auto", default=1.5
        The Tweedie power ``p``. ``"auto"`` chooses it by profile likelihood (the MAP fit
        at each power on a grid of 1.1, ..., 1.9, then a golden-section search between the
        neighbours of the best, to 0.01); ``power_`` holds the value used. With
        ``beta="auto"`` too, ``beta`` is chosen first, at the power of the previous fit
        (1.5 at the first).
    """ + _PARAMS.split("----------\n", 1)[1] + """
    Examples
    --------
    >>> import numpy as np
    >>> from posheads import TweedieSoftplusRegressor
    >>> from posheads.families import TWEEDIE
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> mu = np.logaddexp(0, X @ [0.5, -0.3])
    >>> y = TWEEDIE.simulate(mu, rng, shapes={"dispersion": 1.0})[0]
    >>> est = TweedieSoftplusRegressor(alpha=0).fit(X, y)
    >>> bool(0.5 < est.dispersion_ < 2.0)
    True
    """

    family = families.TWEEDIE
    searched_parameters: ClassVar[tuple[str, ...]] = ("beta", "power")
    _parameter_constraints: ClassVar[dict] = {
        **SoftplusGLMRegressor._parameter_constraints,
        "power": [Interval(numbers.Real, 1.0, 2.0, closed="neither"), StrOptions({"auto"})],
    }

    def __init__(self, *, power=1.5, **params):
        super().__init__(**params)
        self.power = power

    __init__.__signature__ = _signature_with_power(SoftplusGLMRegressor.__init__)

    @property
    def _family(self) -> families.Family:
        if self.power == "auto":
            return families.tweedie_family(getattr(self, "power_", 1.5))
        return families.tweedie_family(self.power)

    def _fit_engine(self, data, w, beta):
        from posheads.inference import MAP, Laplace

        self.power_ = (self._profile_power(data, w, beta) if self.power == "auto"
                       else float(self.power))
        config = inference_config(self)
        if isinstance(config, MAP) and not isinstance(config, Laplace):
            init = None
            if self.warm_start and hasattr(self, "posterior_"):
                init = {k: v for k, v in self.posterior_.extra["map"].items()
                        if k != "dispersion"}
            return self._deviance_map(config, data, w, beta, init)
        return super()._fit_engine(data, w, beta)

    def _deviance_map(self, config, data, w, beta, init=None):
        """The MAP fit: coefficients minimising the penalised deviance (the law at
        ``phi = 1``), then the dispersion maximising the likelihood times its prior at
        those means (:meth:`~posheads.families.TweedieFamily.profile_dispersion`).

        Returns
        -------
        Posterior
            A ``method="map"`` posterior of the full model (with the dispersion).
        """
        from posheads.inference.common import intra_op_threads
        from posheads.inference.map import Mode, initial_theta, map_posterior, newton_mode
        from posheads.models.glm import SoftplusGLM

        model = self._model(beta, w)
        deviance = SoftplusGLM(model.family.deviance_family, beta=model.beta,
                               threshold=model.threshold, fit_intercept=model.fit_intercept,
                               coef_scale=model.coef_scale, intercept_scale=None)
        # Newton on the deviance's loss directly: find_mode would also evaluate the log
        # joint of the law at phi = 1, a pass of the series that nothing uses
        target = deviance.target(data, validate=False)
        with intra_op_threads(target.work_size):
            loss = target.newton_loss(False)
            theta0 = initial_theta(init, target.init(), target.pack)
            theta, solver = newton_mode(loss, theta0, max_iter=config.max_iter,
                                        tol=config.tol, verbose=self.verbose)
            point = target.unpack(theta)
            data = target.data
            mu = deviance.draw_means(point, data)[0]
            prior = model.priors(data)["dispersion"]
            phi, ll, _ = model.family.profile_dispersion(data.y, mu, data.weights,
                                                         prior=prior, max_iter=self.max_iter)
        values = {**point, "dispersion": phi}
        theta = model.pack(values, model.layout(data.X, data.X_zero))
        log_joint = ll + float(model.log_prior(values, data))
        mode = Mode(theta, values, solver.n_iter, solver.converged, solver.g_max, log_joint,
                    False)
        return map_posterior(model, data, mode)

    def _profile_power(self, data, w, beta):
        """The power of largest maximised log-likelihood (see ``power``)."""
        from posheads.inference import MAP

        config = MAP(max_iter=self.max_iter, tol=self.tol)

        def objective(power):
            self.power_ = float(power)
            post = self._deviance_map(config, data, w, beta)
            return -(post.extra["log_joint"]
                     - float(post.model.log_prior(post.extra["map"], post.data)))

        return round(grid_then_golden(objective, _POWER_GRID, tol=1e-2), 3)


# power="auto": the profile likelihood's grid (the ends of (1, 2) excluded: at p -> 1 the
# law's positive part degenerates to a point mass per event, at p -> 2 its zeros vanish)
_POWER_GRID = np.linspace(1.1, 1.9, 9)
