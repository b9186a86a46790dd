"""A softplus GLMM as the engines' model: :class:`BayesianGLMM`.

It implements the engines' :class:`~posheads.models.protocol.PosteriorModel` protocol
around a :class:`~posheads.models.mixed.SoftplusGLMM`: the flat-vector posterior of
:mod:`.mixed_target` (or, for NUTS, its orthogonal coordinates,
:mod:`.mixed_orthogonal`) for NUTS and Laplace, the Pyro model itself for SVI's guide, and
vectorised draws of means, counts and pointwise log-likelihoods for
:class:`~posheads.posterior.Posterior`. The targets and the draws of the linear predictors
are re-exported here.
"""

from __future__ import annotations

import torch

from posheads.models.mixed import MixedData

from .mixed_orthogonal import OrthogonalFixedTarget
from .mixed_target import GLMMTarget, draw_eta, draw_factors, draw_params, draw_parts

__all__ = ["BayesianGLMM", "GLMMTarget", "OrthogonalFixedTarget", "draw_eta", "draw_factors",
           "draw_params", "draw_parts"]


class BayesianGLMM:
    """A :class:`SoftplusGLMM` as the engines' :class:`PosteriorModel`; ``data`` is a
    :class:`MixedData`.

    Calling it runs the Pyro model (for SVI); :meth:`target` is :class:`GLMMTarget`.

    Parameters
    ----------
    glmm : SoftplusGLMM
    orthogonal_fixed : bool
        Give the engines an :class:`OrthogonalFixedTarget` (the fixed effects in the
        basis of the design's QR factor; what NUTS samples) rather than a
        :class:`GLMMTarget`. Draws are of the same sites either way.
    """

    def __init__(self, glmm, orthogonal_fixed: bool = False, centre: str | None = None):
        self.glmm = glmm
        self.orthogonal_fixed = bool(orthogonal_fixed)
        self.centre = centre

    def __repr__(self) -> str:
        return f"BayesianGLMM({self.glmm!r}, orthogonal_fixed={self.orthogonal_fixed})"

    def __call__(self, *args, **kwargs):
        return self.glmm(*args, **kwargs)

    def target(self, data, *, validate=True, seed=None):
        del validate, seed
        if self.orthogonal_fixed:
            return OrthogonalFixedTarget(self.glmm, data, centre=self.centre)
        return GLMMTarget(self.glmm, data)

    def model_kwargs(self, data):
        return data.kwargs()

    def prediction_data(self, X, exposure=None, X_zero=None):
        if not isinstance(X, MixedData) or exposure is not None or X_zero is not None:
            raise ValueError("a GLMM predicts from a MixedData (the estimator builds it)")
        return X

    def _law(self, draws, data):
        eta = draw_eta(draws, data)
        return self.glmm.distribution(eta, draw_params(self.glmm, draws), data,
                                      draw_parts(draws, data))

    def draw_means(self, draws, data):
        return self._law(draws, data).mean

    def draw_predictive(self, draws, data, generator):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._law(draws, data).sample()

    def draw_log_likelihood(self, draws, data):
        return self._law(draws, data).log_prob(data.y)

    def observed(self, data):
        return data.y

    def with_totals(self, totals):
        del totals
        return self
