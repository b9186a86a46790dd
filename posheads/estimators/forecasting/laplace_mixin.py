"""The forecaster's Laplace engine, for one series or a long frame of many.

:class:`LaplaceForecastMixin` gives :class:`~.forecaster.CountForecaster` its default
inference (:mod:`.laplace`) over a :class:`~.panel.Panel`: one series is a panel of one, a
long frame (``unique_id, ds, y`` and covariate columns) a panel of many, fitted together in
one vectorised model (:class:`~posheads.models.forecast_panel.LocalLevelPanel`) with
per-series parameters under shared priors. Series of different lengths are left-padded
(and masked) so that every series' forecast starts at the same column; each keeps the
seasonal phase of its own calendar.

For a long frame, ``predict`` returns statsforecast's long frame (``unique_id, ds, mean,
median, lo-90, hi-90, ...``), ``sample_paths`` an array ``(n, n_series, horizon)`` whose
draw index is shared across series (the draws are joint), and ``hierarchy={total: parts}``
adds totals whose draws are the sums of their parts' draws (coherent by construction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from .baseline import derived_seed
from .engine import isolated
from .laplace import LaplaceFit, default_sigma_grid, fit_panel_laplace, forecast_draws
from .likelihood import by_evidence, rival_family
from .panel import (
    Panel,
    check_future,
    check_hierarchy,
    check_panel,
    forecast_frame,
)
from .series import backtest_windows, fourier_features, score_paths

__all__ = ["LaplaceForecastMixin", "single_panel"]

_LAPLACE_ITERATIONS = 200  # Newton iterations (at most, per batch) when num_steps is None
# level_steps="jumps" (see LocalLevelPanel): normal with probability 0.95, five times wider
# otherwise, so that a break in the level (a new law, a lost customer) is one rare step and
# does not inflate every step's size; the forecast's steps are drawn from the same law.
_LEVEL_JUMPS = (0.05, 5.0)
# likelihood="auto" weighs its two laws on at most this many series of a panel (spread over
# it): a law suits a panel as a whole, and the weighing then costs two fits of this size.
_EVIDENCE_SERIES = 20


def single_panel(values, info, covariates) -> Panel:
    """A panel of the one series ``values`` (its ``SeriesInfo`` and raw covariates)."""
    if info.index is None:
        stamps, freq, origin = pd.Index(np.arange(len(values))), None, 0
    else:
        stamps, freq, origin = info.index, info.freq, info.index[0]
    name = 0 if info.name is None else info.name
    names = [f"x{i}" for i in range(covariates.shape[1])]
    return Panel(ids=[name], values=[values], stamps=[stamps], covariates=[covariates],
                 covariate_names=names, freq=freq, origin=origin)


class _Trace:
    """Posterior draws by site name, shaped like a Pyro trace's nodes (for the summaries)."""

    def __init__(self, draws):
        self.nodes = {k: {"value": v} for k, v in draws.items()}


class LaplaceForecastMixin:
    """Fit, forecast and backtest with the Laplace engine (see the module docstring)."""

    # ------------------------------------------------------------- fitting
    def _iterations(self):
        return _LAPLACE_ITERATIONS if self.num_steps is None else int(self.num_steps)

    def _features(self, s, covariates, horizon=0, start=None):
        """Seasonal terms and standardised covariates of series ``s``: its history
        (``start=None``) or the ``horizon`` steps after it (``covariates`` of those)."""
        t = self.panel_.positions(s, horizon)
        if start is not None:
            t = t[-horizon:]
        seasonal = fourier_features(t, self.season_lengths_, self.fourier_terms_)
        scaled = (covariates - self._cov_center) / self._cov_scale
        return np.concatenate([seasonal, scaled], axis=1)

    def _fit_laplace(self, panel: Panel, family):
        """Fit the panel model; sets ``panel_``, ``model_``, ``laplace_``, ``losses_``,
        ``scales_`` and ``likelihood_evidence_``. Returns the family fitted: ``family``, or
        under ``likelihood="auto"`` its rival where the evidence calls for it
        (:func:`.likelihood.by_evidence`)."""
        self.panel_ = panel
        data, self.scales_ = self._panel_data(panel)
        rival = rival_family(self.likelihood, family)
        fits = {}
        if rival is not None:
            family = self._weigh_laws(data, family, rival, fits)
        self.model_, self.laplace_ = fits.get(family.name) or self._laplace(data, family)
        if rival is None:
            self.likelihood_evidence_ = {
                family.name: float(self.laplace_.log_evidence.sum())}
        self.losses_ = list(self.laplace_.losses)
        return family

    def _panel_data(self, panel: Panel):
        """The padded :class:`~posheads.models.forecast_panel.PanelData` of ``panel`` and
        the series' exposures (their mean counts, NumPy)."""
        from posheads.models.forecast_panel import PanelData

        lengths = [len(v) for v in panel.values]
        n_steps = max(lengths)
        k = self._features(0, panel.covariates[0]).shape[1]
        y, mask = np.zeros((len(lengths), n_steps)), np.zeros((len(lengths), n_steps))
        feats = np.zeros((len(lengths), n_steps, k))
        for s, n in enumerate(lengths):  # left-padded: every series ends at the last column
            y[s, n_steps - n:], mask[s, n_steps - n:] = panel.values[s], 1.0
            feats[s, n_steps - n:] = self._features(s, panel.covariates[s])
        scale = np.array([max(v.mean(), 1e-2) if v.any() else 1.0 for v in panel.values])
        return PanelData(self._tensor(y), self._tensor(mask), self._tensor(feats),
                         self._tensor(scale)), scale

    def _panel_model(self, family):
        """The :class:`~posheads.models.forecast_panel.LocalLevelPanel` of ``family``."""
        from posheads.models.forecast_panel import LocalLevelPanel

        from .forecaster import unit_bias

        return LocalLevelPanel(family, bias=unit_bias(self.beta), beta=float(self.beta),
                               level_jumps=self._level_jumps())

    def _laplace(self, data, family):
        """``(model, fit)``: the Laplace fit of ``family`` to ``data``."""
        model = self._panel_model(family)
        with isolated(derived_seed(self.random_state), verbose=self.verbose):
            fit = fit_panel_laplace(model, data, default_sigma_grid(),
                                    max_iter=self._iterations(), verbose=self.verbose)
        return model, fit

    def _weigh_laws(self, data, family, rival, fits):
        """The law of ``family`` and ``rival`` that the evidence prefers; sets
        ``likelihood_evidence_``. A panel of more than ``_EVIDENCE_SERIES`` series is
        weighed on that many, spread over it; a smaller one's fits are kept in ``fits``."""
        from .laplace_newton import subset

        n_series = data.y.shape[0]
        sample = data
        if n_series > _EVIDENCE_SERIES:
            rows = np.unique(np.linspace(0, n_series - 1, _EVIDENCE_SERIES).round())
            sample = subset(data, torch.as_tensor(rows, dtype=torch.long,
                                                  device=data.y.device))
        evidence = {}
        for law in (family, rival):
            model, fit = self._laplace(sample, law)
            evidence[law.name] = float(fit.log_evidence.sum())
            if sample is data:
                fits[law.name] = (model, fit)
        self.likelihood_evidence_ = evidence
        return by_evidence(family, rival, evidence)

    def _level_jumps(self):
        """``LocalLevelPanel``'s ``level_jumps`` for ``level_steps``."""
        return _LEVEL_JUMPS if getattr(self, "level_steps", "normal") == "jumps" else None

    def _restore_laplace(self, panel, family, arrays, scales):
        """Rebuild a fitted Laplace engine from saved arrays, without refitting."""
        self.panel_, self.scales_ = panel, np.asarray(scales, dtype=np.float64)
        self.model_ = self._panel_model(family)
        self.laplace_ = LaplaceFit.from_arrays(arrays, self._tensor(np.zeros(1)))

    # ------------------------------------------------------------ forecasts
    def _laplace_draws(self, horizon, future, n, seed):
        """Joint draws ``(n, S, h)`` and means ``(S, h)`` (NumPy) of every series."""
        feats = np.stack([self._features(s, future[s], horizon, start=True)
                          for s in range(len(self.panel_.ids))])
        with isolated(seed), torch.no_grad():
            paths, mean = forecast_draws(self.model_, self.laplace_,
                                         self._tensor(self.scales_), self._tensor(feats), n)
        return paths.cpu().double().numpy(), mean.cpu().double().numpy()

    def _posterior_trace(self, s=0):
        """Draws by site name of series ``s`` for ``summary`` and ``covariate_effect``."""
        check_is_fitted(self)
        if self.inference_ != "laplace":
            return super()._posterior_trace()
        return self._laplace_trace(self.num_samples, derived_seed(self.random_state, 2), s)

    def _laplace_trace(self, n, seed, s=0):
        """In-sample posterior draws of series ``s``, by site name (for ``summary``)."""
        fit, rng = self.laplace_, np.random.default_rng(seed)
        post = fit.log_post[:, s].exp().cpu().double().numpy()
        g = torch.as_tensor(rng.choice(len(post), size=n, p=post / post.sum()))
        n_s = len(self.panel_.values[s])  # the series' steps: the last n_s columns
        feats = self._tensor(self._features(s, self.panel_.covariates[s]))
        weight, level = fit.weight[g, s], fit.level[g, s, -n_s:]
        eta = level + weight @ feats.T if feats.shape[1] else level
        n_seasonal = feats.shape[1] - self.n_features_in_
        draws = {"bias": level[:, :1], "eta": eta, "seasonal": weight[:, :n_seasonal],
                 "weight": weight[:, n_seasonal:], "drift_scale": fit.sigma[g, None]}
        for i, shape in enumerate(self.model_.family.shapes):
            draws[shape.name] = fit.log_shapes[g, s, i, None].exp()
        return _Trace({k: v for k, v in draws.items() if v.shape[-1]})

    # ---------------------------------------------------------- long frames
    def _fit_frame(self, df, family_for):
        """``fit`` on a long frame: validation, seasons, covariates, the Laplace fit."""
        if self.inference != "laplace":
            raise ValueError(f"a long frame of series is fitted with inference='laplace', "
                             f"not {self.inference!r}")
        probe = check_panel(df, self.id_col, self.time_col, self.target_col)
        longest = max(range(len(probe.ids)), key=lambda s: len(probe.values[s]))
        info = type(self)._info_of(probe, longest)
        self._set_seasons(info, len(probe.values[longest]))
        season = int(np.ceil(max(self.season_lengths_, default=1)))
        panel = check_panel(df, self.id_col, self.time_col, self.target_col,
                            min_length=max(3, season))
        self._hierarchy = check_hierarchy(self.hierarchy, panel.ids)
        pooled = np.concatenate(panel.covariates, axis=0)
        self._covariates_train, self.n_features_in_ = pooled, pooled.shape[1]
        binary = np.all((pooled == 0) | (pooled == 1), axis=0)
        sd = pooled.std(axis=0)
        self._cov_center = np.where(binary, 0.0, pooled.mean(axis=0))
        self._cov_scale = np.where(binary | (sd == 0), 1.0, sd)  # a constant column stays put
        if panel.covariate_names:
            self.feature_names_in_ = np.asarray(panel.covariate_names, dtype=object)
        self.series_info_, self.history_ = info, panel.values[longest]
        values = np.concatenate(panel.values)
        family = family_for(values)
        self.inference_ = "laplace"
        return self._fit_laplace(panel, family)

    @staticmethod
    def _info_of(panel, s):
        from .series import SeriesInfo

        stamps = panel.stamps[s]
        index = pd.DatetimeIndex(stamps, freq=panel.freq) if panel.freq is not None else None
        return SeriesInfo(index=index, freq=panel.freq, name=panel.ids[s])

    @property
    def _is_panel(self):
        return getattr(self, "is_panel_", False)

    def _panel_draws(self, horizon, X_future, n, seed_offset=1):
        check_is_fitted(self)
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        future = check_future(X_future, self.panel_, horizon, self.id_col, self.time_col)
        paths, mean = self._laplace_draws(horizon, future, int(n),
                                          derived_seed(self.random_state, seed_offset))
        ids = list(self.panel_.ids)
        stamps = [self.panel_.future_stamps(s, horizon) for s in range(len(ids))]
        for total, parts in self._hierarchy.items():  # coherent: sums of the parts' draws
            ids.append(total)
            stamps.append(stamps[parts[0]])
            paths = np.concatenate([paths, paths[:, parts].sum(1, keepdims=True)], axis=1)
            mean = np.concatenate([mean, mean[parts].sum(0, keepdims=True)], axis=0)
        return ids, stamps, paths, mean

    def _predict_frame(self, horizon, X_future, level):
        ids, stamps, paths, mean = self._panel_draws(horizon, X_future, self.num_samples)
        return forecast_frame(ids, stamps, mean, paths, level, self.id_col, self.time_col)

    @property
    def series_ids_(self):
        """The ids of the rows of ``sample_paths`` on a long frame (series, then totals)."""
        check_is_fitted(self)
        return list(self.panel_.ids) + list(self._hierarchy)

    def _backtest_frame(self, df, horizon, n_windows, stride, coverage):
        """Rolling-origin backtest of every series of a long frame (one refit a window)."""
        panel = check_panel(df, self.id_col, self.time_col, self.target_col)
        ends_by = {}
        for s, name in enumerate(panel.ids):
            ends_by[name] = backtest_windows(len(panel.values[s]), horizon, n_windows, stride,
                                             self._min_train())
        rows = []
        for i in range(n_windows):
            cut = {name: panel.stamps[s][ends_by[name][i]] for s, name in enumerate(panel.ids)}
            keep = df[self.time_col].to_numpy() < df[self.id_col].map(cut).to_numpy()
            train = df[keep]
            covs = [c for c in panel.covariate_names]
            test = df[~keep]
            est = clone(self).set_params(hierarchy=None)
            est.fit(train)
            x_future = None
            if covs:
                x_future = test.groupby(self.id_col, sort=False).head(horizon)
                x_future = x_future[[self.id_col, self.time_col, *covs]]
            ids, _, paths, _ = est._panel_draws(horizon, x_future, self.num_samples)
            for s, name in enumerate(panel.ids):
                t1 = ends_by[name][i]
                truth = panel.values[s][t1:t1 + horizon]
                scores = score_paths(paths[:, ids.index(name)], truth, coverage)
                rows.append({self.id_col: name, "window": i,
                             "train_end": panel.stamps[s][t1 - 1],
                             "test_start": panel.stamps[s][t1], "n_train": t1, **scores})
        return pd.DataFrame(rows)
