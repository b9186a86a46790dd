"""Posterior summaries of a fitted :class:`~posheads.estimators.forecasting.CountForecaster`:
its global parameters, the effect of one covariate on the expected count, the model's
components over the training steps (level, seasons, covariate effects) and their figures
(drawn by :mod:`.plots`).

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

    def _posterior_trace(self, s=0):
        check_is_fitted(self)
        covariates = self._design(self._covariates_train, 0)
        return self._draw(covariates, self.num_samples, derived_seed(self.random_state, 2))[1]

    def _series_position(self, series, *, required=True):
        """Position of ``series`` among the series of the fit (0 after a one-series fit).

        ``None`` after a fit on a long frame is an error when ``required``, else ``None``.
        """
        check_is_fitted(self)
        if not getattr(self, "is_panel_", False):
            if series is not None:
                raise ValueError("series= picks one series of a fit on a long frame; this "
                                 "forecaster was fitted on one series")
            return 0
        ids = list(self.panel_.ids)
        if series is None:
            if required:
                raise ValueError(f"this forecaster was fitted on {len(ids)} series: pass "
                                 f"series=<one of {self.id_col!r}>, e.g. series={ids[0]!r}")
            return None
        matches = [i for i, uid in enumerate(ids) if uid == series]
        if not matches:
            shown = ", ".join(repr(u) for u in ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise ValueError(f"unknown series {series!r}; the fit has {shown}")
        return matches[0]

    def _series_history(self, s):
        """Raw covariates ``(n_s, p)``, count scale, counts and time index of series ``s``."""
        if getattr(self, "inference_", None) == "laplace":
            panel = self.panel_
            stamps = panel.stamps[s]
            index = (pd.DatetimeIndex(stamps) if panel.freq is not None
                     else pd.RangeIndex(len(panel.values[s])))
            return panel.covariates[s], float(self.scales_[s]), panel.values[s], index
        index = self.series_info_.index
        index = pd.RangeIndex(len(self.history_)) if index is None else index
        return self._covariates_train, float(self.scale_), self.history_, index

    def _per_series(self, method, **kwargs):
        """``method(series=uid, **kwargs)`` of every series, stacked under the series' id."""
        ids = list(self.panel_.ids)
        frames = [method(series=uid, **kwargs) for uid in ids]
        return pd.concat(frames, keys=ids, names=[self.id_col, None])

    def _param_names(self):
        names = []
        for p, k in zip(self.season_lengths_, self.fourier_terms_, strict=True):
            for j in range(1, k + 1):
                names += [f"season{p:g}_cos{j}"] + ([f"season{p:g}_sin{j}"] if 2 * j != p else [])
        features = getattr(self, "feature_names_in_", None)
        if features is None:
            features = [f"x{i}" for i in range(self.n_features_in_)]
        return {"seasonal": names, "weight": list(features)}

    def summary(self, coverage=0.9, series=None):
        """Posterior mean, sd and central interval of every global parameter.

        Weights of standardised covariates are per training standard deviation; those of
        0/1 covariates per unit. All are on the scale of the linear predictor ``eta``.

        Parameters
        ----------
        coverage : float, default=0.9
        series : optional
            After a fit on a long frame: the id of one series (default: every series,
            stacked under its id). Not given after a one-series fit.

        Returns
        -------
        DataFrame with columns ``mean``, ``sd``, ``lower``, ``upper``
            Indexed by parameter (by series id and parameter for every series of a panel).
        """
        s = self._series_position(series, required=False)
        if s is None:
            return self._per_series(self.summary, coverage=coverage)
        trace, names = self._posterior_trace(s), self._param_names()
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

    def covariate_effect(self, column, coverage=0.9, series=None):
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
        series : optional
            After a fit on a long frame: the id of one series (default: every series,
            stacked under its id). Not given after a one-series fit.

        Returns
        -------
        DataFrame with rows ``change_per_step``, ``relative_change`` and columns
        ``mean``, ``lower``, ``upper``
        """
        check_is_fitted(self)
        if self._log:
            raise ValueError("covariate_effect needs a count likelihood, not log_gaussian")
        j = self._column_position(column)
        s = self._series_position(series, required=False)
        if s is None:
            return self._per_series(self.covariate_effect, column=column, coverage=coverage)
        covariates, scale = self._series_history(s)[:2]
        active = covariates[:, j] != 0
        if not active.any():
            raise ValueError(f"covariate {column!r} is zero at every training step")
        from posheads.ops import softplus

        trace = self._posterior_trace(s)
        eta = _cpu64(trace.nodes["eta"]["value"].reshape(self.num_samples, -1))[:, active]
        w = _cpu64(trace.nodes["weight"]["value"].reshape(self.num_samples, -1))[:, j : j + 1]
        x = (covariates[active, j] - self._cov_center[j]) / self._cov_scale[j]
        beta = float(self.beta)
        mu = scale * softplus(eta, beta=beta)
        mu0 = scale * softplus(eta - w * torch.as_tensor(x), beta=beta)
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

    # ------------------------------------------------------------ components
    def _component_trace(self, n, s=0):
        if getattr(self, "inference_", None) == "laplace":
            return self._laplace_trace(n, derived_seed(self.random_state, 2), s)
        return self._posterior_trace()

    def _season_blocks(self):
        """``(label, first column, width)`` of each season's Fourier columns."""
        blocks, col = [], 0
        for p, k in zip(self.season_lengths_, self.fourier_terms_, strict=True):
            width = sum(1 if 2 * j == p else 2 for j in range(1, k + 1))
            blocks.append((f"season (period {p:g})", col, width))
            col += width
        return blocks

    def components(self, coverage=0.9, series=None):
        """Posterior of the model's components at every training step of one series.

        The linear predictor is split into its parts, ``eta = level + sum(seasons) +
        sum(covariate effects)``: each season's Fourier terms times their weights, each
        covariate's (standardised) values times its weight, and the level (the random
        walk with the bias) the rest. Seasons and covariate effects are on the scale of
        ``eta`` (0 is no effect; with a softplus link, +0.1 raises the rate by about 10%
        where the rate is near its scale); the level is on the count scale,
        ``scale * softplus(level)``: the expected count without season and covariates.

        Parameters
        ----------
        coverage : float, default=0.9
            Coverage of the central interval (``lower``, ``upper``) of each component.
        series : optional
            After a fit on a long frame, the id of the series (required there).

        Returns
        -------
        DataFrame of shape (n_steps, 3 * n_components)
            Indexed by the training time stamps (or steps); columns ``(component, stat)``
            with ``stat`` in ``mean``, ``lower``, ``upper``; components ``level``, then
            ``season (period P)`` for each season, then one per covariate.

        Raises
        ------
        ValueError
            After a fit on a long frame without ``series``, or with
            ``likelihood="log_gaussian"``.
        """
        check_is_fitted(self)
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        s = self._series_position(series)
        if self._log:
            raise ValueError("components need a count likelihood, not log_gaussian")
        covariates, scale, _, index = self._series_history(s)
        n = self.num_samples
        trace = self._component_trace(n, s)
        nodes = trace.nodes

        def draws(site):
            if site not in nodes:
                return np.zeros((n, 0))
            return to_numpy(nodes[site]["value"]).reshape(n, -1)

        eta = draws("eta")
        if getattr(self, "inference_", None) == "laplace":
            feats = self._features(s, covariates)
        else:
            feats = to_numpy(self._design(covariates, 0))
        seasonal, weight = draws("seasonal"), draws("weight")
        n_seasonal = feats.shape[1] - self.n_features_in_
        parts = {}
        for label, col, width in self._season_blocks():
            parts[label] = seasonal[:, col : col + width] @ feats[:, col : col + width].T
        features = getattr(self, "feature_names_in_", None)
        for j in range(weight.shape[1]):
            name = str(features[j]) if features is not None else f"x{j}"
            parts[name] = weight[:, j : j + 1] * feats[None, :, n_seasonal + j]
        level_eta = eta - sum(parts.values()) if parts else eta
        from posheads.ops import softplus

        level = scale * to_numpy(softplus(torch.as_tensor(level_eta), beta=float(self.beta)))
        tail = (1.0 - coverage) / 2.0
        columns = {}
        for name, value in {"level": level, **parts}.items():
            lo, hi = np.quantile(value, [tail, 1.0 - tail], axis=0)
            columns.update({(name, "mean"): value.mean(0), (name, "lower"): lo,
                            (name, "upper"): hi})
        return pd.DataFrame(columns, index=index)

    def plot_components(self, coverage=0.9, *, title=None, series=None):
        """Draw :meth:`components`: the level over the counts, then each season and
        covariate effect, one panel each on a shared (concise) date axis.

        Parameters
        ----------
        coverage : float, default=0.9
        title : str, default=None
            Figure title (default: the series' name and the count law).
        series : optional
            After a fit on a long frame, the id of the series (required there).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plots import plot_component_frame

        frame = self.components(coverage, series=series)
        observed = self._series_history(self._series_position(series))[2]
        if title is None:
            name = series if series is not None else self.series_info_.name
            title = f"{'series' if name is None else name}: components ({self.likelihood_})"
        return plot_component_frame(frame, observed=observed, title=title)

    def plot_panel(self, horizon, X_future=None, *, level=90, ids=None, truth=None,
                   n_history=None, ncols=3):
        """Small multiples of a fit on a long frame: each series' history and forecast.

        Parameters
        ----------
        horizon : int
        X_future : DataFrame, default=None
            Covariates of the forecast steps (a long frame), when fitted with covariates.
        level : int, default=90
            The interval drawn, in percent.
        ids : sequence, default=None
            The series to draw (default: the first 12).
        truth : DataFrame, default=None
            Held-out counts as a long frame, drawn as dots.
        n_history : int, default=None
            History steps per panel (default: four horizons).
        ncols : int, default=3

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plots import plot_forecasts

        check_is_fitted(self)
        if not getattr(self, "is_panel_", False):
            raise ValueError("plot_panel draws a fit on a long frame; use plot() for one series")
        forecast = self.predict(horizon, X_future, level=[level])
        panel = self.panel_
        history = pd.concat(
            [pd.DataFrame({self.id_col: uid, self.time_col: stamps, self.target_col: values})
             for uid, stamps, values in zip(panel.ids, panel.stamps, panel.values, strict=True)],
            ignore_index=True,
        )
        return plot_forecasts(history, forecast, level=level, ids=ids, truth=truth,
                              n_history=n_history, ncols=ncols, id_col=self.id_col,
                              time_col=self.time_col, target_col=self.target_col)
