"""Inference tables of MAP fits: covariance matrices, information criteria and tests.

:class:`InferenceTableMixin` gives the GLM estimators ``covariance_matrix(kind=...)``
(model-based, heteroscedasticity-robust ``HC0``/``HC1``/``HC3`` and cluster-robust, see
:mod:`posheads.estimators._covariance`), ``loglik_``, ``aic()``, ``bic()``,
``wald_test``, ``lr_test`` and ``vuong_test`` (the statistics in
:mod:`posheads.estimators._hypothesis_tests`). Estimates and covariances are reported on
the natural scale, labelled as the rows of ``summary()``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ._covariance import MapFit, map_fit, natural_scale, theta_covariance

__all__ = ["InferenceTableMixin"]


class InferenceTableMixin:
    """Covariance matrices, information criteria and tests of a fitted GLM estimator.

    Mixed into :class:`~posheads.estimators._base.SoftplusGLMRegressor`; needs its
    ``posterior_``. See the module docstring for what is computed.
    """

    def _fitted_log_likelihood(self) -> float:
        """``sum_i w_i log p(y_i | mode)`` of a MAP fit (nan for a Bayesian one).

        The mode search already evaluated the log joint there; the log prior (and the
        log-Jacobian of a ``jacobian=True`` mode) is subtracted, which costs no pass over
        the likelihood.
        """
        post = self.posterior_
        if post.method != "map" or post.data is None or "log_joint" not in post.extra:
            return math.nan
        model, data = post.model, post.data
        theta = post.extra["theta"]
        layout = model.layout(data.X, data.X_zero)
        values = model.unpack(theta, layout)
        with torch.no_grad():
            out = float(post.extra["log_joint"]) - float(model.log_prior(values, data))
            if post.extra.get("jacobian", False):
                out -= float(model.log_jacobian(model.split(theta, layout), values))
        return out

    def covariance_matrix(self, kind="model", groups=None, shapes="joint"):
        """Covariance matrix of the estimates of a MAP fit.

        Parameters
        ----------
        kind : {"model", "HC0", "HC1", "HC3", "cluster"}, default="model"
            ``"model"``: the inverse of the observed (penalised) information at the mode,
            ``H^-1`` -- the covariance of the Laplace approximation, and statsmodels'
            ``GLM.fit(method="newton")`` covariance. ``"HC0"``: the sandwich
            ``H^-1 M H^-1``, ``M = sum_i w_i s_i s_i^T`` over the per-row scores;
            ``"HC1"``: HC0 times ``n / (n - k)``; ``"HC3"``: each row's ``w_i s_i s_i^T``
            divided by ``(1 - h_i)^2``, ``h_i`` its leverage; ``"cluster"``: ``M`` from
            the sums of ``w_i s_i`` within each cluster, times
            ``G / (G - 1) * (n - 1) / (n - k)`` (statsmodels' and Stata's factor).
            ``n`` is the sum of the weights, ``k`` the parameters covered, ``G`` the
            number of clusters.
        groups : array-like of shape (n_samples,), optional
            The cluster of each training row (``kind="cluster"``).
        shapes : {"joint", "fixed"}, default="joint"
            ``"fixed"`` treats the family's shapes (the NB concentration) as known: the
            covariance of the other parameters given them (a GLM with a fixed dispersion,
            statsmodels' ``NegativeBinomial(alpha=1 / concentration_)`` family), shapes
            left out. ``"joint"`` covers every parameter.

        Returns
        -------
        pandas.DataFrame of shape (k, k)
            Labelled by parameter as the rows of ``summary()``. A shape is on its natural
            scale (the delta method through ``r = softplus(u)``).

        Notes
        -----
        With a prior (``alpha > 0``, the weak default priors on shapes and zero-part
        coefficients) ``H`` is the Hessian of the penalised objective and the scores are
        those of the likelihood alone, as in glum: the sandwich then describes the spread
        of the penalised estimator, not of a maximum-likelihood one.
        """
        import pandas as pd

        fit = map_fit(self, "covariance_matrix")
        cov, keep = theta_covariance(fit, kind, groups, shapes)
        _, diag = natural_scale(fit)
        j = diag[keep]
        cov = cov * j[:, None] * j[None, :]
        labels = [fit.labels[i] for i in keep.tolist()]
        return pd.DataFrame(cov.cpu().numpy().astype(np.float64), index=labels,
                            columns=labels)

    def _n_parameters(self) -> int:
        return int(sum(v[0, 0].numel() for v in self.posterior_.samples.values()))

    def _check_loglik(self, what):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if not math.isfinite(getattr(self, "loglik_", math.nan)):
            raise ValueError(f"{what} needs the maximised log-likelihood of a MAP fit "
                             f"(inference='map'); this is a {self.posterior_.method!r} fit")

    def aic(self) -> float:
        """Akaike's information criterion ``-2 loglik_ + 2 k`` (``k`` parameters, shapes
        and zero parts included). Lower is better."""
        self._check_loglik("aic()")
        return -2.0 * self.loglik_ + 2.0 * self._n_parameters()

    def bic(self) -> float:
        """Schwarz's criterion ``-2 loglik_ + k log n`` (``n`` the sum of the weights)."""
        self._check_loglik("bic()")
        fit = map_fit(self, "bic()")
        return -2.0 * self.loglik_ + self._n_parameters() * math.log(fit.n_obs)

    def wald_test(self, hypothesis, value=None, kind="model", groups=None, shapes="joint"):
        """Wald test of linear restrictions ``R b = value`` on the estimates ``b``.

        Parameters
        ----------
        hypothesis : str, sequence of str, or array-like of shape (q, k) or (k,)
            Parameter labels (as in ``summary()``) that are all 0 under the null, or a
            contrast matrix ``R`` over the ``k`` parameters of
            ``covariance_matrix(shapes=shapes)``, in its order.
        value : array-like of shape (q,), optional
            The restricted values (zeros by default).
        kind, groups, shapes
            The covariance used, as in :meth:`covariance_matrix`.

        Returns
        -------
        HypothesisTestResult
            ``W = (R b - value)^T (R V R^T)^-1 (R b - value)``, chi-square with ``q``
            degrees of freedom under the null.
        """
        from ._hypothesis_tests import contrast_matrix, wald

        fit = map_fit(self, "wald_test")
        cov, keep = theta_covariance(fit, kind, groups, shapes)
        est, diag = natural_scale(fit)
        j = diag[keep]
        cov = (cov * j[:, None] * j[None, :]).cpu().numpy().astype(np.float64)
        labels = [fit.labels[i] for i in keep.tolist()]
        R = contrast_matrix(hypothesis, labels)
        return wald(est[keep].cpu().numpy().astype(np.float64), cov, R, value)

    def lr_test(self, smaller_model):
        """Likelihood-ratio test of ``smaller_model`` nested in this model.

        Both are MAP fits of the same family, link and data, and every parameter of
        ``smaller_model`` is one of this model's (its columns a subset of this model's
        columns). ``2 (loglik_ - smaller_model.loglik_)`` is chi-square with the
        difference in parameters as degrees of freedom under the smaller model.

        Returns
        -------
        HypothesisTestResult

        Raises
        ------
        ValueError
            For fits on different data, of different families or links, or not nested.
        """
        from ._hypothesis_tests import check_nested, likelihood_ratio

        _check_estimator(smaller_model, "smaller_model")
        self._check_loglik("lr_test")
        smaller_model._check_loglik("lr_test")
        big, small = map_fit(self, "lr_test"), map_fit(smaller_model, "lr_test")
        if self.alpha > 0 or smaller_model.alpha > 0:
            warnings.warn("lr_test compares penalised fits (alpha > 0): the chi-square "
                          "reference holds for maximum-likelihood fits (alpha=0)",
                          UserWarning, stacklevel=2)
        k_big, k_small = self._n_parameters(), smaller_model._n_parameters()
        check_nested(big, small, k_big, k_small)
        return likelihood_ratio(self.loglik_, smaller_model.loglik_, k_big - k_small)

    def vuong_test(self, other_model):
        """Vuong's test of two non-nested models of the same data (e.g. Poisson against
        zero-inflated Poisson), with the AIC and BIC corrections R's ``pscl::vuong``
        reports.

        Returns
        -------
        pandas.DataFrame
            Rows ``raw``, ``aic``, ``bic``; columns ``statistic`` (positive favours this
            model), ``p_value`` (one-sided, in the direction of the sign) and
            ``preferred`` (``"self"`` or ``"other"``).
        """
        from ._hypothesis_tests import check_same_data, vuong

        _check_estimator(other_model, "other_model")
        a, b = map_fit(self, "vuong_test"), map_fit(other_model, "vuong_test")
        check_same_data(a, b)
        return vuong(_pointwise(a), _pointwise(b), a.data.weights,
                     self._n_parameters(), other_model._n_parameters())


def _check_estimator(other, name):
    if not isinstance(other, InferenceTableMixin) or not hasattr(other, "posterior_"):
        raise TypeError(f"{name} must be a fitted posheads GLM regressor, got "
                        f"{type(other).__name__}")


def _pointwise(fit: MapFit) -> torch.Tensor:
    """Each training row's log-likelihood at the mode, ``(n,)`` (unweighted)."""
    values = fit.model.unpack(fit.theta, fit.layout)
    with torch.no_grad():
        return fit.model.pointwise_log_likelihood(values, fit.data)[0]
