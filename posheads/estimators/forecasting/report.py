"""Posterior summaries of a fitted :class:`~posheads.estimators.forecasting.CountForecaster`:
its global parameters and the effect of one covariate on the expected count.

:func:`to_numpy` is how every forecaster output leaves torch: a float64 NumPy array on the
CPU, whatever the device and dtype of the fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from .baseline import derived_seed

__all__ = ["ForecastReportMixin", "to_numpy"]


def _cpu64(t):
    """A float64 CPU copy of a tensor (the estimator's outputs are NumPy, whatever the device)."""
    return t.detach().to(device="cpu", dtype=torch.float64)


def to_numpy(t):
    """A float64 NumPy copy of a tensor, on the CPU."""
    return _cpu64(t).numpy()


class ForecastReportMixin:
    """``summary`` and ``covariate_effect``, from draws of the model's trace."""

    def _posterior_trace(self):
        check_is_fitted(self)
        covariates = self._design(self._covariates_train, 0)
        return self._draw(covariates, self.num_samples, derived_seed(self.random_state, 2))[1]

    def _param_names(self):
        names = []
        for p, k in zip(self.season_lengths_, self.fourier_terms_, strict=True):
            for j in range(1, k + 1):
                names += [f"season{p:g}_cos{j}"] + ([f"season{p:g}_sin{j}"] if 2 * j != p else [])
        features = getattr(self, "feature_names_in_", None)
        if features is None:
            features = [f"x{i}" for i in range(self.n_features_in_)]
        return {"seasonal": names, "weight": list(features)}

    def summary(self, coverage=0.9):
        """Posterior mean, sd and central interval of every global parameter.

        Weights of standardised covariates are per training standard deviation; those of
        0/1 covariates per unit. All are on the scale of the linear predictor ``eta``.

        Returns
        -------
        DataFrame with columns ``mean``, ``sd``, ``lower``, ``upper``
        """
        trace, names = self._posterior_trace(), self._param_names()
        tail = (1 - coverage) / 2
        rows = {}
        for site in (
            "bias",
            "seasonal",
            "weight",
            "drift_scale",
            "slope_scale",
            "concentration",
            "dispersion",
            "sigma",
        ):
            if site not in trace.nodes:
                continue
            draws = to_numpy(trace.nodes[site]["value"].reshape(self.num_samples, -1))
            labels = names.get(site, [site])
            for j in range(draws.shape[1]):
                d = draws[:, j]
                rows[labels[j]] = [d.mean(), d.std(), *np.quantile(d, [tail, 1 - tail])]
        return pd.DataFrame.from_dict(
            rows, orient="index", columns=["mean", "sd", "lower", "upper"]
        )

    def covariate_effect(self, column, coverage=0.9):
        """Posterior effect of one covariate on the expected count, where it is non-zero.

        Compares, over the training steps where the covariate is non-zero, the fitted
        rate ``mu = scale * softplus(eta)`` (the mean of Poisson and negative binomial
        counts) with the counterfactual rate whose ``eta`` lacks that covariate's term.
        Under a softplus link the effect depends on the level, so it is summarised as the
        mean change per step and the relative change of the total
        (``sum(mu) / sum(mu_without) - 1``).

        Parameters
        ----------
        column : str or int
            A name from ``feature_names_in_`` or a column position.
        coverage : float, default=0.9

        Returns
        -------
        DataFrame with rows ``change_per_step``, ``relative_change`` and columns
        ``mean``, ``lower``, ``upper``
        """
        check_is_fitted(self)
        if self._log:
            raise ValueError("covariate_effect needs a count likelihood, not log_gaussian")
        j = self._column_position(column)
        active = self._covariates_train[:, j] != 0
        if not active.any():
            raise ValueError(f"covariate {column!r} is zero at every training step")
        from posheads.ops import softplus

        trace = self._posterior_trace()
        eta = _cpu64(trace.nodes["eta"]["value"].reshape(self.num_samples, -1))[:, active]
        w = _cpu64(trace.nodes["weight"]["value"].reshape(self.num_samples, -1))[:, j : j + 1]
        x = (self._covariates_train[active, j] - self._cov_center[j]) / self._cov_scale[j]
        beta = float(self.beta)
        mu = self.scale_ * softplus(eta, beta=beta)
        mu0 = self.scale_ * softplus(eta - w * torch.as_tensor(x), beta=beta)
        draws = {
            "change_per_step": (mu - mu0).mean(1).numpy(),
            "relative_change": (mu.sum(1) / mu0.sum(1) - 1.0).numpy(),
        }
        tail = (1 - coverage) / 2
        return pd.DataFrame(
            {k: [v.mean(), *np.quantile(v, [tail, 1 - tail])] for k, v in draws.items()},
            index=["mean", "lower", "upper"],
        ).T

    def _column_position(self, column):
        names = getattr(self, "feature_names_in_", None)
        if isinstance(column, (int, np.integer)) and 0 <= column < self.n_features_in_:
            return int(column)
        if names is not None and column in list(names):
            return list(names).index(column)
        raise ValueError(
            f"unknown covariate {column!r}; the forecaster has "
            f"{list(names) if names is not None else self.n_features_in_}"
        )
