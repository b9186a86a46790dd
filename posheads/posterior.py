"""One posterior type for every engine: :class:`Posterior`.

A :class:`Posterior` holds draws of every latent site with shape
``(num_chains, num_draws, *site_shape)`` (MAP: one chain of one draw; Laplace and SVI:
one chain), the model and its data. It predicts (posterior mean of the mean, predictive
draws, central predictive intervals -- plug-in for MAP), computes pointwise
log-likelihoods, summarises the draws (mean, sd, HDI, r-hat, bulk and tail ESS) and
converts everything to :class:`arviz.InferenceData`, so that ``az.loo``, ``az.waic`` and
``az.compare`` work on any fit.

Everything it computes from the model goes through the
:class:`~posheads.models.protocol.PosteriorModel` methods of ``as_model(model)``
(``draw_means``, ``draw_predictive``, ``draw_log_likelihood``, ``observed``,
``prediction_data``): vectorised closed forms for a
:class:`~posheads.models.glm.SoftplusGLM`; for any other Pyro model ``X`` is a dict of its
keyword arguments and the work goes through traces and ``pyro.infer.Predictive``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from posheads.models.protocol import as_model

if TYPE_CHECKING:  # pandas is imported where a frame is made (summary)
    import pandas as pd

__all__ = ["METHODS", "Posterior", "count_interval"]

METHODS = ("map", "laplace", "svi", "nuts")
_SUMMARY = ["mean", "sd", "hdi_lo", "hdi_hi", "r_hat", "ess_bulk", "ess_tail"]


class Posterior:
    """Draws of a model's latent sites, with prediction and diagnostics.

    Parameters
    ----------
    model : PosteriorModel or callable
        The model the draws belong to, as the user passed it.
    samples : dict of str to Tensor
        Each of shape ``(num_chains, num_draws, *site_shape)``, constrained values.
    method : {"map", "laplace", "svi", "nuts"}
        The engine that made the draws.
    data : GLMData or dict, optional
        The data fitted, the model's own data object (a dict of model keyword arguments
        for a general Pyro model).
    num_chains : int
        Number of chains (the leading dimension of every sample).
    sample_stats : dict of str to Tensor, optional
        Per-draw statistics of shape ``(num_chains, num_draws)``, e.g. ``"diverging"``.
    extra : dict, optional
        Engine-specific results (``"map"``, ``"cov"``, ``"n_iter"``, ``"converged"``, ...).

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> post = Posterior(SoftplusGLM(), {"intercept": torch.zeros(1, 5),
    ...                                  "coef": torch.zeros(1, 5, 2)}, method="svi")
    >>> post.predict_mean(torch.zeros(3, 2)).shape
    torch.Size([3])
    """

    def __init__(self, model, samples, *, method, data=None, num_chains=1, sample_stats=None,
                 extra=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not samples:
            raise ValueError("samples must hold at least one site")
        lead = {tuple(v.shape[:2]) for v in samples.values()}
        if len(lead) != 1 or next(iter(lead))[0] != num_chains:
            raise ValueError("every site must have shape (num_chains, num_draws, ...) with "
                             f"num_chains={num_chains}, got leading shapes {sorted(lead)}")
        self.model, self.method, self.data = model, method, data
        self.samples = dict(samples)
        self.num_chains, self.num_draws = next(iter(lead))
        self.sample_stats = dict(sample_stats or {})
        self.extra = dict(extra or {})

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.samples.items())
        return (f"Posterior(method={self.method!r}, chains={self.num_chains}, "
                f"draws={self.num_draws}, sites=[{sites}])")

    # ------------------------------------------------------------ draws
    @property
    def _ref(self) -> torch.Tensor:
        return next(iter(self.samples.values()))

    def draws(self, flat: bool = True) -> dict:
        """Draws of every site: ``(chains * draws, ...)`` if ``flat`` else as stored."""
        if not flat:
            return dict(self.samples)
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    def point_estimate(self) -> dict:
        """Posterior mean of every site (the estimate itself for MAP)."""
        return {k: v.mean(dim=0) for k, v in self.draws().items()}

    @property
    def _posterior_model(self):
        return as_model(self.model)

    def _tensor(self, x):
        # a dict is a general model's keyword arguments; a sparse design stays sparse
        if x is None or isinstance(x, dict) or (
                isinstance(x, torch.Tensor) and x.layout != torch.strided):
            return x
        ref = self._ref
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x,
                               dtype=ref.dtype, device=ref.device)

    def _prediction_data(self, m, X, exposure, X_zero, offset):
        # a model without offsets (a general Pyro model) is not asked about one
        args = (self._tensor(X), self._tensor(exposure), self._tensor(X_zero))
        if offset is None:
            return m.prediction_data(*args)
        return m.prediction_data(*args, offset=self._tensor(offset))

    def _generator(self, seed):
        gen = torch.Generator(device=self._ref.device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        return gen

    # ------------------------------------------------------------ prediction
    def predict_mean(self, X, exposure=None, X_zero=None, offset=None) -> torch.Tensor:
        """Posterior mean of the expected count of each row.

        Parameters
        ----------
        X : Tensor, shape ``(n, p)``, or dict
            Covariates (a dict of model keyword arguments for a general Pyro model).
        exposure : Tensor, shape ``(n,)``, optional
        X_zero : Tensor, shape ``(n, q)``, optional
        offset : Tensor, shape ``(n,)``, optional
            Added to the count part's linear predictor (a GLM's ``offset``).

        Returns
        -------
        Tensor, shape ``(n,)``
        """
        m = self._posterior_model
        data = self._prediction_data(m, X, exposure, X_zero, offset)
        with torch.no_grad():
            return m.draw_means(self.draws(), data).mean(dim=0)

    def sample_predictive(self, X, n, exposure=None, X_zero=None, seed=None,
                          offset=None) -> torch.Tensor:
        """``n`` draws of the counts of each row from the posterior predictive.

        Each draw takes a posterior draw at random (all the same for MAP: plug-in).

        Parameters
        ----------
        X : Tensor, shape ``(rows, p)``, or dict
        n : int
            Number of predictive draws.
        exposure, X_zero, offset : Tensor, optional
        seed : int, optional

        Returns
        -------
        Tensor, shape ``(n, rows)``
        """
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        gen = self._generator(seed)
        total = self.num_chains * self.num_draws
        idx = torch.randint(total, (n,), generator=gen, device=self._ref.device)
        values = {k: v[idx] for k, v in self.draws().items()}
        m = self._posterior_model
        data = self._prediction_data(m, X, exposure, X_zero, offset)
        with torch.no_grad():
            return m.draw_predictive(values, data, gen)

    def predict_interval(self, X, coverage=0.9, exposure=None, X_zero=None, n_samples=1000,
                         seed=None, offset=None):
        """Central posterior-predictive interval of the counts of each row.

        Parameters
        ----------
        X : Tensor, shape ``(rows, p)``, or dict
        coverage : float
            In (0, 1).
        exposure, X_zero, offset : Tensor, optional
        n_samples : int
            Predictive draws the quantiles are taken from.
        seed : int, optional

        Returns
        -------
        (Tensor, Tensor), each of shape ``(rows,)``
            Lower and upper bounds: whole numbers, see :func:`count_interval`.
        """
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        draws = self.sample_predictive(X, n_samples, exposure, X_zero, seed=seed, offset=offset)
        return count_interval(draws, coverage)

    # ------------------------------------------------------------ likelihood
    def log_likelihood(self, data=None) -> torch.Tensor:
        """Pointwise log-likelihood of ``data`` (default: the fitted data) under each draw.

        Parameters
        ----------
        data : optional
            The model's own data object (a ``GLMData`` for a SoftplusGLM, a dict of
            keyword arguments for a general Pyro model).

        Returns
        -------
        Tensor, shape ``(num_chains, num_draws, n)``
        """
        data = self.data if data is None else data
        if data is None:
            raise ValueError("no data: pass the data to evaluate")
        with torch.no_grad():
            ll = self._posterior_model.draw_log_likelihood(self.draws(), data)
        return ll.reshape(self.num_chains, self.num_draws, -1)

    # ------------------------------------------------------------ reports
    def summary(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """Mean, sd, HDI bounds, r-hat and bulk/tail ESS of every scalar parameter.

        Parameters
        ----------
        hdi_prob : float
            Probability of the highest-density interval ``[hdi_lo, hdi_hi]``.

        Returns
        -------
        pandas.DataFrame
            One row per scalar (``"coef[0]"``, ...), columns
            ``mean, sd, hdi_lo, hdi_hi, r_hat, ess_bulk, ess_tail``. A single chain is
            split in two halves for r-hat and ESS (split r-hat). With fewer than four
            draws (MAP) only ``mean`` is defined; the rest is NaN.
        """
        samples = self._numpy_samples()
        if self.num_chains == 1 and self.num_draws >= 8:
            # ArviZ wants two chains for r-hat; one chain split in halves is split-r-hat.
            half = self.num_draws // 2
            samples = {k: v[0, :2 * half].reshape(2, half, *v.shape[2:])
                       for k, v in samples.items()}
        az = _arviz()
        idata = az.from_dict(posterior=samples, dims=self._dims())
        if self.num_chains * self.num_draws < 4:
            means = idata.posterior.mean(dim=("chain", "draw"))
            rows = {name: float(v) for name, v in _flatten(means).items()}
            import pandas as pd

            frame = pd.DataFrame({"mean": pd.Series(rows)})
            return frame.reindex(columns=_SUMMARY)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = az.summary(idata, hdi_prob=hdi_prob, round_to="none")
        hdi = [c for c in table.columns if c.startswith("hdi_")]
        return table.rename(columns={hdi[0]: "hdi_lo", hdi[1]: "hdi_hi"})[_SUMMARY]

    def to_inference_data(self, predictive: bool = True, seed=None):
        """The draws as :class:`arviz.InferenceData`.

        Groups: ``posterior``; with data, ``log_likelihood`` (pointwise ``"obs"``, for
        ``az.loo``/``az.waic``), ``observed_data`` and, if ``predictive``,
        ``posterior_predictive`` (one count draw per posterior draw); ``sample_stats``
        when the engine recorded any (NUTS: ``diverging``, ...).

        Parameters
        ----------
        predictive : bool
            Draw the posterior predictive.
        seed : int, optional
            Seeds the predictive draws.
        """
        groups = {"posterior": self._numpy_samples(), "dims": self._dims()}
        if self.sample_stats:
            groups["sample_stats"] = {k: _as_numpy(v) for k, v in self.sample_stats.items()}
        if self.data is not None:
            shape = (self.num_chains, self.num_draws, -1)
            groups["log_likelihood"] = {"obs": _as_numpy(self.log_likelihood())}
            groups["observed_data"] = {
                "obs": _as_numpy(self._posterior_model.observed(self.data))}
            if predictive:
                groups["posterior_predictive"] = {
                    "obs": _as_numpy(self._replicate(seed).reshape(shape))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return _arviz().from_dict(**groups)

    def _replicate(self, seed):
        """One predictive draw per posterior draw, for the fitted data."""
        gen = self._generator(seed)
        with torch.no_grad():
            return self._posterior_model.draw_predictive(self.draws(), self.data, gen)

    def _numpy_samples(self):
        return {k: _as_numpy(v) for k, v in self.samples.items()}

    def _dims(self):
        dims = {"obs": ["obs_id"]}
        for name, v in self.samples.items():
            if v.dim() == 3:
                dims[name] = [f"{name}_dim"]
        return dims


# ------------------------------------------------------------------ helpers
def _arviz():
    """arviz, imported on first use: it takes longer to import than a small fit takes, and
    only summaries and conversions need it."""
    with warnings.catch_warnings():
        # ArviZ announces its 1.0 refactor with a FutureWarning at import.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _flatten(dataset) -> dict:
    out = {}
    for name, da in dataset.data_vars.items():
        values = np.atleast_1d(da.values)
        if da.ndim == 0:
            out[name] = values[0]
        else:
            for idx in np.ndindex(*values.shape):
                out[f"{name}[{', '.join(map(str, idx))}]"] = values[idx]
    return out


def count_interval(draws: torch.Tensor, coverage: float):
    """Predictive interval of counts from draws: equal-tailed where the support allows.

    The lower bound is the ``(1 - coverage) / 2`` quantile of the draws. Counts cannot
    fall below 0, so where that quantile sits at the floor (or on a heavy atom) the
    lower tail holds less than its share; the share left over moves to the upper tail,
    whose bound is the ``coverage + P(y < lower)`` quantile. The interval then holds at
    least ``coverage`` of the draws and no more than the discreteness of the counts
    forces; a plain central interval of a count with many zeros holds
    ``1 - (1 - coverage) / 2`` of them (95% for a 90% interval).

    Parameters
    ----------
    draws : Tensor, shape ``(S, rows)``
    coverage : float
        In (0, 1).

    Returns
    -------
    (Tensor, Tensor), each of shape ``(rows,)``
        Inverted-CDF quantiles (``sorted[ceil(p S) - 1]``): values the draws take.
    """
    ordered = torch.sort(draws, dim=0).values
    m = ordered.shape[0]
    lo = ordered[max(math.ceil((1 - coverage) / 2 * m) - 1, 0)]
    below = (ordered < lo).sum(dim=0)
    # ceil((coverage + below / m) m) - 1, in integers except for coverage * m
    rank = (math.ceil(coverage * m - 1e-9) + below - 1).clamp(0, m - 1)
    hi = torch.gather(ordered, 0, rank[None])[0]
    return lo, hi
