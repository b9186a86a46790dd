"""Diagnostics of fitted count models: is the predictive distribution right?

* :func:`rootogram` (and its numbers, :func:`rootogram_table`): observed against
  expected frequencies of each count, hanging, standing or suspended;
* :func:`quantile_residuals`, :func:`qq_plot`, :func:`pit_histogram`: randomized
  quantile residuals and probability integral transforms;
* :func:`dispersion_test`: Cameron & Trivedi's test of the Poisson variance;
* :func:`compare_models`: log-likelihood, AIC/BIC, held-out log score and ``elpd_loo``.

Each works on any fitted posheads GLM estimator through its predictive distribution
(``predict_pmf``, ``pit_interval``, ``log_predictive``). The plotting functions import
matplotlib when called, draw on ``ax=`` (a new figure without it) and return the Axes; each
has a ``draw_*`` twin that plots numbers already computed (``rootogram_table``,
``pit_interval``, residuals), so an expensive predictive law is evaluated once.
See ``docs/diagnostics.md``.
"""

from .compare import compare_models, log_likelihood, n_parameters
from .dispersion import DispersionTest, dispersion_test
from .residuals import (
    draw_pit_histogram,
    draw_qq,
    normal_scores,
    pit_bin_heights,
    pit_histogram,
    pit_values,
    qq_plot,
    quantile_residuals,
    randomized_pit,
)
from .rootogram import STYLES, draw_rootogram, rootogram, rootogram_table

__all__ = [
    "STYLES",
    "DispersionTest",
    "compare_models",
    "dispersion_test",
    "draw_pit_histogram",
    "draw_qq",
    "draw_rootogram",
    "log_likelihood",
    "n_parameters",
    "normal_scores",
    "pit_bin_heights",
    "pit_histogram",
    "pit_values",
    "qq_plot",
    "quantile_residuals",
    "randomized_pit",
    "rootogram",
    "rootogram_table",
]
