"""The summary table of the mixed-model regressor: :class:`MixedSummaryMixin`.

Maximum likelihood: fixed effects (a zero part's covariates as ``("fixed", "gate:x")``,
the GLMs' names), shapes and variance components with Wald intervals
(SDs on the log scale, correlations on Fisher's z scale); Bayesian engines: posterior
means, SDs and equal-tailed intervals; both with the count-scale intraclass variation of
:mod:`.mixed_icc`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from posheads import ops
from posheads.models.mixed import MixedData, RandomEffect

__all__ = ["MixedSummaryMixin"]


class MixedSummaryMixin:
    """``summary()`` of :class:`~posheads.estimators.mixed.MixedCountRegressor`."""

    # ------------------------------------------------------------ summary
    def summary(self, coverage=0.95) -> pd.DataFrame:
        """Fixed effects, shapes, variance components and the count-scale intraclass
        variation, with standard errors and intervals.

        ML: Wald intervals (SDs on the log scale, correlations on Fisher's z scale).
        Bayesian engines: posterior means, SDs and equal-tailed intervals. Rows
        ``("icc", factor)``: the intraclass correlation on the count scale, and with
        several factors ``("icc share", factor)``, the share of the expected count's
        variance due to the factor (see :mod:`posheads.estimators.mixed_icc`), their
        spread over parameter draws as standard error and interval.

        Returns
        -------
        DataFrame indexed by ``(kind, name)`` with ``estimate, std_error, lower, upper``.
        """
        check_is_fitted(self, "levels_")
        if self.inference != "ml":
            return pd.concat([self._bayes_table(coverage), self._icc_table(coverage)])
        return pd.concat([self._ml_table(coverage), self._icc_table(coverage)])

    def _ml_table(self, coverage) -> pd.DataFrame:
        fit, zq = self.fit_, stats.norm.ppf(0.5 + coverage / 2)
        cov = fit.cov if fit.cov is not None else np.full((len(fit.theta),) * 2, np.nan)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        rows, i = [], 0
        for name, block in self.model_.unpack(torch.as_tensor(fit.theta),
                                              self._layout_data()).items():
            size = block.numel()
            vals, s = fit.theta[i:i + size], se[i:i + size]
            if name == "coef":
                for f, v, e in zip(self.feature_names_, vals, s, strict=True):
                    rows.append(("fixed", f, v, e, v - zq * e, v + zq * e))
            elif name.endswith("_log_sd"):
                factor = name[:-len("_log_sd")]
                for t, v, e in zip(self.random_terms_[factor], vals, s, strict=True):
                    # np.exp: a collapsed SD's huge standard error gives inf, not an error
                    rows.append(("sd", f"{factor}: {t}", math.exp(v), math.exp(v) * e,
                                 float(np.exp(v - zq * e)), float(np.exp(v + zq * e))))
            elif name in self._zero_coef_blocks():  # "{part}_coef": "{part}:{name}"
                part = name[:-len("_coef")]
                for f, v, e in zip(self.zero_coef_names_, vals, s, strict=True):
                    rows.append(("fixed", f"{part}:{f}", v, e, v - zq * e, v + zq * e))
            elif name.endswith("_corr"):
                rows += self._corr_rows(name[:-len("_corr")], i, size, cov, zq)
            elif name in self.model_.family.shape_names:
                # a shape is held as softplus^-1: report it on its own scale (delta method;
                # the interval's ends mapped through the increasing softplus)
                v, e = float(vals[0]), float(s[0])
                sp = [float(ops.softplus(torch.tensor(a))) for a in (v, v - zq * e, v + zq * e)]
                rows.append(("family", name, sp[0], e / (1.0 + math.exp(-v)), sp[1], sp[2]))
            else:  # a zero part's intercept, a logit
                rows.append(("family", f"{name} (logit)", vals[0], s[0], vals[0] - zq * s[0],
                             vals[0] + zq * s[0]))
            i += size
        out = pd.DataFrame(rows, columns=["kind", "name", "estimate", "std_error",
                                          "lower", "upper"])
        return out.set_index(["kind", "name"])

    def _layout_data(self):
        X = torch.zeros(1, len(self.fit_.params["coef"]), dtype=torch.float64)
        effects = tuple(RandomEffect(k, tuple(v), torch.zeros(1, len(v)),
                                     torch.zeros(1, dtype=torch.int64), 1)
                        for k, v in self.random_terms_.items())
        names = getattr(self, "zero_coef_names_", None)
        return MixedData(X, effects, X_zero=None if names is None else
                         torch.zeros(1, len(names), dtype=torch.float64))

    def _zero_coef_blocks(self) -> list:
        """The names ``"{part}_coef"`` of the zero part's coefficient blocks (none
        without zero-part covariates)."""
        if getattr(self, "zero_coef_names_", None) is None:
            return []
        return [f"{p}_coef" for p in self.model_.family.part_names]

    def _corr_rows(self, factor, start, size, cov, zq):
        from posheads.models.mixed import correlation_cholesky

        terms = self.random_terms_[factor]
        q = len(terms)
        raw = torch.as_tensor(self.fit_.theta[start:start + size])

        def fisher_z(r):
            L = correlation_cholesky(r, q)
            C = L @ L.T
            i, j = torch.tril_indices(q, q, offset=-1)
            return torch.atanh(C[i, j].clamp(-1 + 1e-15, 1 - 1e-15))

        J = torch.autograd.functional.jacobian(fisher_z, raw).reshape(-1, size).numpy()
        zval = fisher_z(raw).numpy()
        zse = np.sqrt(np.clip(np.diag(J @ cov[start:start + size, start:start + size] @ J.T),
                              0, None))
        i, j = np.tril_indices(q, -1)
        return [("corr", f"{factor}: {terms[b]}, {terms[a]}", math.tanh(v),
                 (1 - math.tanh(v) ** 2) * e, math.tanh(v - zq * e), math.tanh(v + zq * e))
                for a, b, v, e in zip(i, j, zval, zse, strict=True)]

    # ------------------------------------------------------------ criteria
    def aic(self) -> float:
        """Akaike's criterion ``-2 loglik + 2 k`` (``k`` fixed parameters; ML only)."""
        self._check_ml("aic")
        return -2.0 * self.loglik_ + 2.0 * len(self.fit_.theta)

    def bic(self) -> float:
        """Schwarz's criterion ``-2 loglik + k log(n)`` (ML only)."""
        self._check_ml("bic")
        return -2.0 * self.loglik_ + math.log(self.n_obs_) * len(self.fit_.theta)

    def _check_ml(self, what):
        check_is_fitted(self, "levels_")
        if self.inference != "ml":
            raise ValueError(f"{what} needs a maximum-likelihood fit (inference='ml'), "
                             f"this one is {self.inference!r}")
