"""The predictive distribution of a fitted GLM estimator: :class:`PredictiveMixin`.

For a count family the predictive law of each row is summarised by its probabilities of
each count, ``P(y = k | x)`` for ``k = 0, 1, ..., K``; cumulative probabilities, quantiles,
log scores and probability integral transforms follow from them. For a MAP fit this is
the plug-in law at the estimate; for a Bayesian fit the law averaged over the posterior
draws, ``P(y = k | x) = mean_s p(k | x, theta_s)``, computed in log space (log-sum-exp
over the draws) so that tiny probabilities do not underflow before they are averaged.

Everything is read from the model's distribution of each row under each draw
(:meth:`posheads.models.glm.SoftplusGLM.draw_distribution`, batch shape ``(S, n)``),
evaluated on a grid of counts: nothing here names a likelihood. Continuous families
(whose support is not the counts) have no probabilities of counts; their densities still
give a log score and their cumulative distribution a probability integral transform.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ._validation import check_counts, check_sample_weight

__all__ = ["PredictiveMixin", "averaged_log_pmf"]

# Elements of one (counts x draws x rows) block of log-probabilities: bounds the memory
# of a grid evaluation (2**24 float64 values are 128 MiB).
_BLOCK = 2**24
# Without max_count the grid grows until every row's probabilities sum to 1 within this.
_TAIL = 1e-10
# A grid this long without reaching that mass means a law too heavy-tailed to tabulate.
_MAX_GRID = 2**20


def averaged_log_pmf(dist, start: int, stop: int) -> torch.Tensor:
    """``log mean_s P_s(y = k)`` for ``k = start, ..., stop - 1`` and every row.

    Parameters
    ----------
    dist : Distribution
        Count laws with batch shape ``(S, n)``: row ``i`` under draw ``s``.
    start, stop : int
        The counts evaluated, ``range(start, stop)``.

    Returns
    -------
    Tensor, shape ``(stop - start, n)``
        Log-probabilities averaged over the ``S`` draws (log-sum-exp minus ``log S``).
    """
    S, n = dist.batch_shape
    ref = dist.mean
    step = max(1, _BLOCK // max(S * n, 1))
    out = []
    for lo in range(start, stop, step):
        k = torch.arange(lo, min(lo + step, stop), dtype=ref.dtype, device=ref.device)
        lp = dist.log_prob(k[:, None, None])  # (k, S, n)
        out.append(torch.logsumexp(lp, dim=1) - math.log(S))
    if not out:
        return ref.new_zeros((0, n))
    return torch.cat(out, dim=0)


class PredictiveMixin:
    """Probabilities of each count, cumulative probabilities, quantiles and log scores.

    Mixed into :class:`~posheads.estimators.SoftplusGLMRegressor`; it uses the fitted
    ``posterior_`` and reads its inputs through ``_prediction_data`` (so it accepts
    whatever ``predict`` accepts).

    Examples
    --------
    >>> import numpy as np
    >>> from posheads import PoissonSoftplusRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 2))
    >>> y = rng.poisson(np.logaddexp(0, 1 + X @ [0.5, -0.3]))
    >>> est = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    >>> est.predict_pmf(X[:3], max_count=5).shape
    (3, 6)
    """

    # ------------------------------------------------------------ helpers
    def _predictive_distribution(self, X, exposure=None, offset=None, X_zero=None):
        """The law of each row under each posterior draw, batch shape ``(S, n)``."""
        # only the inputs given, so that the keywords are those of _prediction_data
        extra = {k: v for k, v in (("offset", offset), ("X_zero", X_zero)) if v is not None}
        data = self._prediction_data(X, exposure=exposure, **extra)
        post = self.posterior_
        with torch.no_grad():
            return post.model.draw_distribution(post.draws(), data)

    def predicts_counts(self) -> bool:
        """Whether the family's targets are counts, so that :meth:`predict_pmf`,
        :meth:`predict_cdf` and :meth:`predict_quantile` apply.

        Returns
        -------
        bool
            False for a continuous family (a Gamma or Tweedie amount).
        """
        # a family that declares no support is a count family (every family did, once)
        return getattr(self._family, "support", "counts") == "counts"

    def _require_counts(self, what: str) -> None:
        if not self.predicts_counts():
            raise ValueError(
                f"{what} needs a count family; the {self._family.name} family is "
                "continuous (log_score, log_predictive and pit_interval use its density "
                "and distribution function instead)")

    def _grid_log_pmf(self, dist, max_count, tail=_TAIL) -> torch.Tensor:
        """Averaged log-probabilities of ``0..max_count`` (shape ``(K + 1, n)``); without
        ``max_count``, of ``0..K`` for the smallest doubling ``K`` that leaves at most
        ``tail`` of every row's mass above it."""
        if max_count is not None:
            return averaged_log_pmf(dist, 0, int(max_count) + 1)
        # a sum of probabilities is only good to a few ulps of its dtype (float32: 1e-6)
        tail = max(tail, 64 * torch.finfo(dist.mean.dtype).eps)
        stop = self._grid_start(dist)
        parts = [averaged_log_pmf(dist, 0, stop)]
        while True:
            mass = torch.cat(parts).exp().sum(dim=0)
            if bool((mass >= 1.0 - tail).all()):
                return torch.cat(parts)
            if stop >= _MAX_GRID:
                raise ValueError(
                    f"the predictive law puts more than {tail:g} of its mass above "
                    f"{stop - 1} counts for some rows: pass max_count to tabulate a "
                    "truncated range")
            parts.append(averaged_log_pmf(dist, stop, 2 * stop))
            stop *= 2

    @staticmethod
    def _grid_start(dist) -> int:
        """A first guess at the grid's length: 10 predictive standard deviations above the
        largest predictive mean (the law of total variance over the draws)."""
        try:
            mean, var = dist.mean, dist.variance
        except NotImplementedError:  # a law without moments: let the doubling find it
            return 16
        m = mean.mean(dim=0)
        v = var.mean(dim=0) + mean.var(dim=0, unbiased=False)
        guess = float((m + 10.0 * v.sqrt()).max())
        if not math.isfinite(guess):
            return 16
        return int(min(max(math.ceil(guess) + 10, 16), _MAX_GRID))

    def _check_y(self, y, n: int, integer: bool) -> np.ndarray:
        arr = np.asarray(y)
        if arr.ndim != 1:
            raise ValueError(f"y must be 1-dimensional, got shape {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"y has {arr.shape[0]} value(s) but X has {n} row(s)")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"y must hold numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)  # a new array: the caller's y is never touched
        check_counts(arr, integer=integer, why="the predictive law of a count family is "
                     "defined on counts 0, 1, 2, ...")
        return arr

    # ------------------------------------------------------------ public API
    def predict_pmf(self, X, max_count=None, exposure=None, offset=None, X_zero=None):
        """Predictive probability of each count ``0, 1, ..., K`` for each row.

        Plug-in at the estimate for a MAP fit, averaged over the posterior draws for the
        Bayesian engines (as statsmodels' ``predict(which="prob")`` and pscl's
        ``predprob`` do for their fits).

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        max_count : int, optional
            The last count tabulated, ``K``. Default: the smallest ``K`` (found by
            doubling) above which every row has less than ``1e-10`` of its probability.
            With a ``max_count`` the rows sum to ``P(y <= max_count)``, not to 1.
        exposure, offset : array-like of shape (n_samples,), optional
            As in ``predict``.
        X_zero : array-like of shape (n_samples, n_zero_features), optional
            Features of the zero part, as in ``predict``.

        Returns
        -------
        ndarray of shape (n_samples, K + 1)
            ``out[i, k] = P(y_i = k | x_i)``.

        Raises
        ------
        ValueError
            For a continuous family, or a ``max_count`` that is not a non-negative
            integer.
        """
        _check_max_count(max_count)
        self._require_counts("predict_pmf")
        dist = self._predictive_distribution(X, exposure, offset, X_zero)
        with torch.no_grad():
            log_pmf = self._grid_log_pmf(dist, max_count)
        return log_pmf.exp().T.cpu().numpy().astype(np.float64)

    def predict_cdf(self, X, max_count=None, exposure=None, offset=None, X_zero=None):
        """Predictive cumulative probabilities ``P(y <= k | x)`` for ``k = 0, ..., K``.

        Parameters
        ----------
        X, max_count, exposure, offset, X_zero
            As in :meth:`predict_pmf`.

        Returns
        -------
        ndarray of shape (n_samples, K + 1)
            Non-decreasing along each row, at most 1.
        """
        pmf = self.predict_pmf(X, max_count=max_count, exposure=exposure, offset=offset,
                               X_zero=X_zero)
        return np.minimum(np.cumsum(pmf, axis=1), 1.0)

    def predict_quantile(self, X, q, exposure=None, offset=None, X_zero=None):
        """Quantiles of the predictive law: the smallest count ``k`` with
        ``P(y <= k | x) >= q``.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        q : float or array-like of shape (n_q,)
            Probabilities in (0, 1).
        exposure, offset : array-like of shape (n_samples,), optional
            As in ``predict``.
        X_zero : array-like of shape (n_samples, n_zero_features), optional
            Features of the zero part, as in ``predict``.

        Returns
        -------
        ndarray of shape (n_samples,) for a scalar ``q``, else (n_samples, n_q)
            Whole numbers (as floats).
        """
        try:
            qs = np.asarray(q, dtype=np.float64)
        except (TypeError, ValueError):
            qs = None
        if qs is None or qs.ndim > 1 or qs.size == 0:
            raise ValueError(f"q must be a probability or a 1-D array of them, got {q!r}")
        if not np.all((qs > 0) & (qs < 1)):
            raise ValueError(f"q must lie in (0, 1), got {q!r}")
        self._require_counts("predict_quantile")
        dist = self._predictive_distribution(X, exposure, offset, X_zero)
        # enough of the grid that every row reaches the largest q
        tail = min(_TAIL, (1.0 - float(qs.max())) / 4)
        with torch.no_grad():
            cdf = torch.cumsum(self._grid_log_pmf(dist, None, tail=tail).exp(), dim=0)
        cdf = cdf.T.cpu().numpy()  # (n, K + 1)
        # a few ulps of slack: a cumulative sum can fall short of an exact q by rounding
        slack = 8 * np.finfo(np.float64).eps
        if not np.all(cdf[:, -1] >= qs.max() - slack):
            raise ValueError(f"q={float(qs.max())!r} is too close to 1 for the precision of "
                             f"the fit's dtype ({cdf.dtype}): the distribution function "
                             "cannot be resolved that far into the tail")
        out = np.stack([np.argmax(cdf >= qi - slack, axis=1) for qi in np.atleast_1d(qs)],
                       axis=1).astype(np.float64)
        return out[:, 0] if qs.ndim == 0 else out

    def log_score(self, X, y, exposure=None, sample_weight=None, offset=None, X_zero=None):
        """Mean log predictive probability (density, for a continuous family) of ``y``.

        For a Bayesian fit the likelihood is averaged over the draws before the log,
        ``log mean_s p(y_i | x_i, theta_s)``: the log of the posterior predictive, the
        quantity ``elpd`` estimates. Higher is better; on held-out data it is the
        logarithmic scoring rule.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Observed targets: counts for a count family.
        exposure, offset, X_zero
            As in ``predict``.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
            The (weighted) mean over rows.
        """
        per_row = self.log_predictive(X, y, exposure=exposure, offset=offset, X_zero=X_zero)
        w = check_sample_weight(sample_weight, per_row[:, None], dtype=np.float64)
        return float(np.average(per_row, weights=w))

    def log_predictive(self, X, y, exposure=None, offset=None, X_zero=None):
        """Log predictive probability (or density) of each row's target.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Observed targets: counts for a count family, values in the support otherwise.
        exposure, offset, X_zero
            As in ``predict``.

        Returns
        -------
        ndarray of shape (n_samples,)
            ``log mean_s p(y_i | x_i, theta_s)``.
        """
        dist = self._predictive_distribution(X, exposure, offset, X_zero)
        discrete = self.predicts_counts()
        y = self._check_y(y, dist.batch_shape[-1], integer=discrete)
        ref = dist.mean
        yt = torch.as_tensor(y, dtype=ref.dtype, device=ref.device)
        if not discrete and not bool(dist.support.check(yt).all()):
            raise ValueError(f"y has values outside the support of the "
                             f"{self._family.name} family")
        with torch.no_grad():
            lp = dist.log_prob(yt)  # (S, n)
            out = torch.logsumexp(lp, dim=0) - math.log(lp.shape[0])
        return out.cpu().numpy().astype(np.float64)

    def pit_interval(self, X, y, exposure=None, offset=None, X_zero=None):
        """Predictive cumulative probabilities just below and at each observed target.

        For a count ``y`` these are ``P(Y < y | x)`` and ``P(Y <= y | x)``: a uniform
        draw between them is the randomized probability integral transform (Dunn &
        Smyth 1996), uniform on (0, 1) when the model is right. For a continuous family
        both are ``F(y | x)``.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        exposure, offset : array-like of shape (n_samples,), optional
            As in ``predict``.
        X_zero : array-like of shape (n_samples, n_zero_features), optional
            Features of the zero part, as in ``predict``.

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Lower and upper cumulative probabilities, ``0 <= lower <= upper <= 1``.
        """
        dist = self._predictive_distribution(X, exposure, offset, X_zero)
        discrete = self.predicts_counts()
        y = self._check_y(y, dist.batch_shape[-1], integer=discrete)
        if not discrete:
            return self._continuous_pit(dist, y)
        ref = dist.mean
        yt = torch.as_tensor(y, dtype=ref.dtype, device=ref.device)
        lower, at = torch.zeros_like(yt), torch.zeros_like(yt)
        top = int(y.max()) if y.size else 0
        # running sums over blocks of counts: memory of one block, not of a (K, n) table
        step = max(1, _BLOCK // max(y.size, 1))
        with torch.no_grad():
            for start in range(0, top + 1, step):
                stop = min(start + step, top + 1)
                pmf = averaged_log_pmf(dist, start, stop).exp()  # (k, n)
                k = torch.arange(start, stop, dtype=ref.dtype, device=ref.device)[:, None]
                lower += (pmf * (k < yt)).sum(dim=0)
                at += (pmf * (k == yt)).sum(dim=0)
        # P(Y <= y) as P(Y < y) + P(Y = y): never below the lower bound after rounding
        lower = lower.clamp(0.0, 1.0)
        out = torch.stack([lower, (lower + at).clamp(max=1.0)], dim=1)
        return out.cpu().numpy().astype(np.float64)

    def _continuous_pit(self, dist, y):
        ref = dist.mean
        yt = torch.as_tensor(y, dtype=ref.dtype, device=ref.device)
        try:
            with torch.no_grad():
                u = dist.cdf(yt).mean(dim=0)
        except NotImplementedError:
            raise ValueError(f"the {self._family.name} family's distribution has no cdf, "
                             "so its probability integral transform is not available") \
                from None
        u = u.clamp(0.0, 1.0).cpu().numpy().astype(np.float64)
        return np.stack([u, u], axis=1)


def _check_max_count(max_count) -> None:
    if max_count is None:
        return
    if isinstance(max_count, bool) or not isinstance(max_count, numbers.Integral) \
            or max_count < 0:
        raise ValueError(f"max_count must be a non-negative integer, got {max_count!r}")
    if max_count >= _MAX_GRID:
        raise ValueError(f"max_count must be below {_MAX_GRID}, got {max_count}")
