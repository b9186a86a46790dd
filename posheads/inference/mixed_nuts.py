"""The NUTS configuration of a softplus GLMM: :func:`glmm_nuts`.

``MixedCountRegressor(inference="nuts")`` and the benchmarks take it from here, so that
both run the same sampler on :class:`~posheads.inference.mixed_bayes.BayesianGLMM`.
"""

from __future__ import annotations

from .nuts import NUTS

__all__ = ["glmm_nuts"]


def glmm_nuts(num_samples: int = 1000, num_warmup: int = 500, num_chains: int = 1) -> NUTS:
    """The NUTS engine for a GLMM posterior.

    Plain NUTS from the prior median with a diagonal mass matrix adapted in warm-up: the
    joint mode of a non-centred hierarchy (small ``z``, large SDs) is a poor metric for
    its posterior, and trees grow deep in it.

    Parameters
    ----------
    num_samples, num_warmup, num_chains : int
        See :class:`~posheads.inference.nuts.NUTS`.

    Returns
    -------
    NUTS
    """
    return NUTS(num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains,
                init="median", dense_mass=False)
