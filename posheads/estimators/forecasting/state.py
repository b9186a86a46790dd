"""Saving and loading a fitted :class:`~posheads.estimators.forecasting.CountForecaster`
without pickle: its fitted attributes as plain values and arrays, and the rebuild.

The count law is saved by name (``likelihood_``) and found again with
:func:`posheads.families.get_family`, so a forecaster saves when its family is
registered (given by name or as the object). A forecaster fitted on a long frame also
saves its :class:`~.panel.Panel` (:func:`panel_state`): series ids, lengths, counts and
covariates concatenated, each series' first time stamp and the frequency; a
``hierarchy`` is a parameter, saved with the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from posheads.families import get_family

from .._validation import resolve_device, resolve_dtype
from .engine import NUTSForecaster, isolated
from .laplace_mixin import single_panel
from .panel import Panel, check_hierarchy
from .series import SeriesInfo

__all__ = ["ForecastStateMixin", "panel_from_state", "panel_state"]

# The guide a saved SVI forecaster's parameters belong to: the inference stack's
# mean-field guide. Forecasters saved without this key used Pyro's AutoNormal, whose
# parameters are the same (softplus-mapped scales) under the prefix "AutoNormal.".
_GUIDE = "softplus_normal"
_LEGACY_PREFIX, _PREFIX = "AutoNormal.", "SoftplusAutoNormal."


class ForecastStateMixin:
    """``_get_state`` / ``_set_state`` for :class:`~posheads.estimators._persist.PersistMixin`."""

    def _get_state(self) -> dict:
        """Fitted attributes for :func:`posheads.estimators.save` (plain values and arrays)."""
        info = self.series_info_
        name = info.name
        state = {
            "season_lengths_": list(self.season_lengths_),
            "fourier_terms_": list(self.fourier_terms_),
            "scale_": float(self.scale_),
            "likelihood_": self.likelihood_,
            "likelihood_evidence_": {str(k): float(v) for k, v in
                                     getattr(self, "likelihood_evidence_", {}).items()},
            "n_features_in_": int(self.n_features_in_),
            "losses_": np.asarray(self.losses_, dtype=np.float64),
            "history_": self.history_,
            "covariates_train": self._covariates_train,
            "cov_center": self._cov_center,
            "cov_scale": self._cov_scale,
            "series_name": name
            if isinstance(name, (str, int, float)) or name is None
            else str(name),
            "series_freq": None if info.freq is None else info.freq.freqstr,
        }
        if info.index is not None:
            index = info.index
            state["series_index"] = index.as_unit("ns").asi8  # ns since the epoch, in UTC
            state["series_index_name"] = None if index.name is None else str(index.name)
            state["series_index_unit"] = index.unit
            state["series_index_tz"] = None if index.tz is None else str(index.tz)
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        if self.inference_ == "laplace":
            state["posterior"] = {"laplace": self.laplace_.arrays()}
            state["scales_"] = np.asarray(self.scales_, dtype=np.float64)
            if getattr(self, "is_panel_", False):
                state.update(panel_state(self.panel_))
            return state
        if isinstance(self.forecaster_, NUTSForecaster):
            state["posterior"] = {"samples": dict(self.forecaster_.samples)}
        else:  # the guide's unconstrained parameters; their constraints come from the guide
            state["posterior"] = {"params": dict(self._param_state["params"])}
            state["guide"] = _GUIDE
        return state

    def _set_state(self, state: dict) -> None:
        """Rebuild a fitted forecaster from :meth:`_get_state`'s output, without refitting."""
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        self.season_lengths_ = tuple(float(p) for p in state["season_lengths_"])
        self.fourier_terms_ = tuple(int(k) for k in state["fourier_terms_"])
        self.scale_, self.n_features_in_ = float(state["scale_"]), int(state["n_features_in_"])
        self.likelihood_ = str(state["likelihood_"])
        self.likelihood_evidence_ = {str(k): float(v) for k, v in
                                     state.get("likelihood_evidence_", {}).items()}
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)
        self.losses_ = [float(v) for v in np.asarray(state["losses_"]).ravel()]
        self.history_ = np.asarray(state["history_"], dtype=np.float64)
        self._covariates_train = np.asarray(state["covariates_train"], dtype=np.float64)
        self._cov_center = np.asarray(state["cov_center"], dtype=np.float64)
        self._cov_scale = np.asarray(state["cov_scale"], dtype=np.float64)
        freq = state["series_freq"]
        freq = None if freq is None else pd.tseries.frequencies.to_offset(freq)
        index = None
        if "series_index" in state:
            stamps = np.asarray(state["series_index"], dtype=np.int64).astype("datetime64[ns]")
            index = pd.DatetimeIndex(stamps, name=state["series_index_name"])
            if state["series_index_tz"] is not None:
                index = index.tz_localize("UTC").tz_convert(state["series_index_tz"])
            index = pd.DatetimeIndex(index.as_unit(state["series_index_unit"]), freq=freq)
        self.series_info_ = SeriesInfo(index=index, freq=freq, name=state["series_name"])
        family = None if self._log else get_family(self.likelihood_)
        posterior = state["posterior"]
        self.is_panel_, self._hierarchy = False, {}
        if "laplace" in posterior:
            self.inference_ = "laplace"
            if "panel_ids" in state:  # fitted on a long frame
                panel = panel_from_state(state)
                self.is_panel_ = True
                self._hierarchy = check_hierarchy(self.hierarchy, panel.ids)
            else:
                panel = single_panel(self.history_, self.series_info_, self._covariates_train)
            self._restore_laplace(panel, family, posterior["laplace"], state["scales_"])
            return
        self.inference_ = "nuts" if "samples" in posterior else "svi"
        self.model_ = self._make_model(self.history_, family)
        data = self._tensor(np.log1p(self.history_) if self._log else self.history_)[:, None]
        covariates = self._design(self._covariates_train, 0)
        posterior = state["posterior"]
        if "samples" in posterior:
            samples = {k: v.to(self._device) for k, v in posterior["samples"].items()}
            self._param_state = {"params": {}, "constraints": {}}
            self.forecaster_ = NUTSForecaster(self.model_, data, covariates, samples=samples)
            return
        # A forecaster trained for no steps has the guide's parameters, with their
        # constraints, at their initial values; the saved values then replace them.
        with isolated(None):
            self.forecaster_, param_state, _ = self._svi(data, covariates, 0)
        saved = posterior["params"]
        if state.get("guide") != _GUIDE:  # saved by a version that used Pyro's AutoNormal
            saved = {_PREFIX + k.removeprefix(_LEGACY_PREFIX): v for k, v in saved.items()}
        if set(saved) != set(param_state["params"]):
            raise ValueError(
                "the saved guide parameters do not match the model rebuilt from "
                "the saved parameters"
            )
        param_state["params"] = {k: v.to(self._device) for k, v in saved.items()}
        self._param_state = param_state


def panel_state(panel: Panel) -> dict:
    """A panel as plain values and arrays (the inverse of :func:`panel_from_state`)."""
    ids = [v.item() if isinstance(v, np.generic) else v for v in panel.ids]
    bad = [v for v in ids if not isinstance(v, (str, int, float))]
    if bad:
        raise ValueError(f"cannot save series ids of type {type(bad[0]).__name__} "
                         f"({bad[0]!r}): ids must be strings or numbers")
    firsts = [st[0] for st in panel.stamps]
    state = {
        "panel_ids": ids,
        "panel_lengths": np.array([len(v) for v in panel.values], dtype=np.int64),
        "panel_values": np.concatenate(panel.values).astype(np.float64),
        "panel_covariates": np.concatenate(panel.covariates, axis=0).astype(np.float64),
        "panel_covariate_names": [str(c) for c in panel.covariate_names],
        "panel_freq": None if panel.freq is None else panel.freq.freqstr,
        "panel_tz": None,
    }
    if panel.freq is None:
        state["panel_starts"] = np.array([int(f) for f in firsts], dtype=np.int64)
    else:
        index = pd.DatetimeIndex(firsts)
        state["panel_tz"] = None if index.tz is None else str(index.tz)
        state["panel_starts"] = index.as_unit("ns").asi8  # ns since the epoch, in UTC
    return state


def panel_from_state(state: dict) -> Panel:
    """The :class:`~.panel.Panel` saved by :func:`panel_state`."""
    lengths = np.asarray(state["panel_lengths"], dtype=np.int64)
    cuts = np.cumsum(lengths)[:-1]
    values = np.split(np.asarray(state["panel_values"], dtype=np.float64), cuts)
    names = list(state["panel_covariate_names"])
    covs = np.asarray(state["panel_covariates"], dtype=np.float64).reshape(-1, len(names))
    covariates = np.split(covs, cuts)
    starts = np.asarray(state["panel_starts"], dtype=np.int64)
    freq = state["panel_freq"]
    if freq is None:
        stamps = [pd.Index(np.arange(a, a + n)) for a, n in zip(starts, lengths, strict=True)]
    else:
        freq = pd.tseries.frequencies.to_offset(freq)
        firsts = pd.DatetimeIndex(starts.astype("datetime64[ns]"))
        if state["panel_tz"] is not None:
            firsts = firsts.tz_localize("UTC").tz_convert(state["panel_tz"])
        stamps = [pd.Index(pd.date_range(a, periods=n, freq=freq).to_numpy())
                  for a, n in zip(firsts, lengths, strict=True)]
    if len(values) != len(state["panel_ids"]):
        raise ValueError("the saved panel's ids and lengths do not match")
    return Panel(ids=list(state["panel_ids"]), values=values, stamps=stamps,
                 covariates=covariates, covariate_names=names, freq=freq,
                 origin=min(st[0] for st in stamps))
