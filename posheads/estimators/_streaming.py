"""Fitting the GLM estimators on data that arrives in pieces: ``partial_fit`` and
``fit_stream`` (SVI on mini-batches), mixed into
:class:`~posheads.estimators._base.SoftplusGLMRegressor`."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import validate_data

from ._validation import (
    check_exposure,
    check_sample_weight,
    resolve_device,
    resolve_dtype,
    torch_seed,
)


class StreamingMixin:
    """SVI on mini-batches for an estimator with ``_model``, ``_glm_data``,
    ``_coef_scale`` and ``_set_fitted_attributes`` (the GLM base)."""

    def partial_fit(self, X, y, sample_weight=None, exposure=None):
        """One SVI step on a mini-batch, for data that arrives in pieces.

        One call is one stochastic-gradient (Adam) step of size ``learning_rate``, not a
        pass to convergence: the guide starts at the first batch's MAP and then moves a
        little with each batch, so a short stream (or one ordered by the target) leaves it
        near that start. Pass over the data several times, or use :meth:`fit_stream`.

        The batch's log-likelihood is scaled to all rows seen so far, so after a pass
        over a stream the variational posterior reflects every row; the L2 prior has
        precision ``alpha`` times the weight seen so far, as in :meth:`fit`. Uses a
        mean-field Gaussian guide and ``learning_rate``; ``beta="auto"`` is not
        available here (use a fixed ``beta``).

        Returns
        -------
        self : object
        """
        first = not hasattr(self, "_svi_state")
        _refuse_designs(self, X, "partial_fit")
        if first:
            self._validate_params()
            _refuse_searches(self, "partial_fit")
            _forget_design(self)
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc", "coo"],
                             dtype=[np.float64, np.float32], y_numeric=True, reset=first)
        # SVI's posterior needs the family's proper likelihood: whole counts for a count law
        self._family.check_target(y, proper=True,
                                  why="partial_fit (SVI) needs whole-number counts: a "
                                  "proper count likelihood")
        w = check_sample_weight(sample_weight, X, dtype=np.float64)
        t = check_exposure(exposure, X.shape[0], np.float64)
        if first:
            self._device = resolve_device(self.device)
            self._dtype = resolve_dtype(self.dtype)
            self.beta_ = float(self.beta)
            self._weight_seen = 0.0
            self._rows_seen = 0
            model = self._model(self.beta_, w)
            first_data = self._glm_data(X, np.asarray(y, dtype=np.float64), w, t)
            self._svi_state = self._new_svi_state(model, first_data)
        self._weight_seen += float(np.sum(w))
        self._rows_seen += X.shape[0]
        state = self._svi_state
        state.model.coef_scale = self._coef_scale(self._weight_seen)
        data = self._glm_data(X, np.asarray(y, dtype=np.float64), w, t)
        kwargs = {"X": data.X, "y": data.y, "exposure": data.exposure, "weights": data.weights}
        state.step(kwargs, total_size=self._rows_seen)
        self._finish_partial_fit(state, data, kwargs)
        return self

    def _new_svi_state(self, model, first_data):
        """An SVI state whose mean-field guide starts at the MAP of the first batch."""
        from posheads.inference import fit_map
        from posheads.inference.common import make_guide
        from posheads.inference.svi import SVIState, init_at

        # Start the guide at the first batch's MAP: flat priors cannot be sampled for
        # a start, and the MAP is seconds away from where SVI would end up.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = fit_map(model, first_data, max_iter=self.max_iter).extra["map"]
        guide = make_guide(model, "normal", init_at(start), init_scale=0.01)
        return SVIState(model, guide, learning_rate=self.learning_rate,
                        seed=torch_seed(self.random_state))

    def fit_stream(self, source, epochs=1):
        """Fit by SVI on mini-batches streamed from disk, in bounded memory.

        Like :meth:`partial_fit` over ``epochs`` passes of ``source``, but every step's
        log-likelihood is scaled to all ``source.num_rows`` rows from the first step on,
        and the L2 prior has precision ``alpha`` times the total weight (found by one
        pass over the weights), exactly as :meth:`fit` on the same rows would have.

        Parameters
        ----------
        source : posheads.inference.stream.BatchSource
            An :class:`~posheads.inference.stream.ArraySource` (``.npy`` memory maps) or
            :class:`~posheads.inference.stream.ParquetSource`; its ``batch_size`` is the
            mini-batch, its ``block_size`` the rows held in memory.
        epochs : int, default=1
            Passes over the source.

        Returns
        -------
        self : object
            Fitted; a later :meth:`partial_fit` continues from here.
        """
        from posheads.inference.stream import BatchSource
        from posheads.models.glm import GLMData

        self._validate_params()
        if not isinstance(source, BatchSource):
            raise ValueError(f"source must be a BatchSource, got {type(source).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        _refuse_searches(self, "fit_stream")
        _refuse_designs(self, None, "fit_stream")
        for attr in ("_svi_state", "feature_names_in_"):
            self.__dict__.pop(attr, None)
        _forget_design(self)
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self.beta_ = float(self.beta)
        self.n_features_in_ = source.num_features
        totals = source.totals()
        self._weight_seen, self._rows_seen = totals["weights"], totals["rows"]
        model = self._model(self.beta_, np.array([totals["weights"]]))
        family = self._family
        state = data = kwargs = None
        for _ in range(epochs):
            for batch in source:
                # as in partial_fit; a batch's y is one short column, cheap to copy to host
                family.check_target(batch["y"].detach().cpu().numpy(), proper=True,
                                    why="fit_stream (SVI) needs whole-number counts: a "
                                    "proper count likelihood")
                batch = {k: v.to(device=self._device, dtype=self._dtype)
                         for k, v in batch.items()}
                data = GLMData(X=batch["X"], y=batch["y"], exposure=batch.get("exposure"),
                               weights=batch.get("weights"))
                if state is None:
                    state = self._svi_state = self._new_svi_state(model, data)
                kwargs = {"X": data.X, "y": data.y, "exposure": data.exposure,
                          "weights": data.weights}
                state.step(kwargs, total_size=self._rows_seen)
        self._finish_partial_fit(state, data, kwargs)
        return self

    def _finish_partial_fit(self, state, data, kwargs):
        from posheads.posterior import Posterior

        draws = state.sample(self.num_samples, kwargs)
        samples = {k: v[None] for k, v in draws.items()}
        self.posterior_ = Posterior(state.model, samples, method="svi", data=data,
                                    extra={"elbo": list(state.losses)})
        self._set_fitted_attributes()
        self.n_iter_ = state.num_steps


def _refuse_searches(est, method: str) -> None:
    """A stream is seen once, so no parameter can be chosen by a profile over refits:
    refuse ``"auto"`` for each of the estimator's ``searched_parameters``."""
    for name in est.searched_parameters:
        if getattr(est, name) == "auto":
            raise ValueError(f"{method} needs a fixed {name}, not 'auto'")


def _refuse_designs(est, X, what):
    """The streaming fits read numeric batches: no formula, no frame to encode, and (they
    take none) no offset or zero-part design."""
    from .design import needs_encoding

    if est.formula is not None or est.zero_formula is not None:
        raise ValueError(f"{what} reads numeric batches; formula= applies to fit only "
                         "(encode each batch with a fitted DataDesign's transform)")
    if needs_encoding(X):
        raise ValueError(f"{what} reads numeric batches: encode the categorical columns "
                         "first (posheads.estimators.design.DataDesign)")


def _forget_design(est):
    """Drop what a previous ``fit`` learnt of a frame or a zero-part design."""
    for attr in ("design_", "coef_names_", "zero_coef_names_", "n_zero_features_in_"):
        est.__dict__.pop(attr, None)
