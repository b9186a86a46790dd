"""Pyro distributions parameterised by a real linear predictor ``eta`` under a softplus link.

Every distribution here is a :class:`pyro.distributions.TorchDistribution`, so it works in
``pyro.sample``, ``Predictive``, ``.expand`` and ``.to_event``. The mean (or, for the
Normal family, the scale) is ``low + softplus_beta(eta)``, computed with the guarded ops
of :mod:`posheads.ops`; ``beta``, ``threshold`` and ``low`` are Python floats.

Counts: ``SoftplusPoisson``, ``SoftplusNegativeBinomial`` (NB2, variance
``mu + mu**2 / concentration``), ``SoftplusZeroInflatedPoisson``,
``SoftplusZeroInflatedNegativeBinomial``, ``SoftplusHurdlePoisson`` and
``SoftplusHurdleNegativeBinomial``.
Counts of any dispersion (below or above the mean): ``SoftplusDiscretizedLogistic``,
``SoftplusGeneralizedPoisson`` (Consul's, renormalised where under-dispersion cuts its support).
Positive and real values: ``SoftplusGamma``, ``SoftplusLogNormal``, ``SoftplusNormal``.
Non-negative amounts with exact zeros: ``SoftplusTweedie`` (compound Poisson-gamma,
``1 < power < 2``, density by its series: ``tweedie_log_series``).
Priors whose support maps to the reals by softplus: ``SoftplusInverseGamma`` (with
``half_normal_inverse_sqrt``, the default prior of a concentration), ``SoftplusHalfNormal``,
``SoftplusSupported`` (any law over the positive reals);
``flat`` for maximum likelihood at a site.

Bases for new laws: ``SoftplusLinked`` (tensor parameters broadcast together, the link
settings, a generic ``expand``) and ``SoftplusCounts`` (exposure, count support, ``rate``,
and the checks of counts); a count law subclasses the latter and defines
``_count_log_prob``, ``_count_sample`` and ``_count_moments``. ``log1mexp(x, log_x)`` is
``log(1 - exp(-x))``, finite where ``x`` underflows (a zero-truncated law's normaliser).

Where ``low`` and ``exposure`` go
---------------------------------
For counts the mean of the count part is ``rate = exposure * (low + softplus(eta))``:
``low`` is a floor on the rate *per unit of exposure*, so it scales with exposure like the
rest of the rate (a unit observed twice as long has twice the floor). With ``low == 0``
this is ``exposure * softplus(eta)``, and ``log_prob`` is one call of the fused ops
(finite, with finite gradients, for every finite ``eta``). With ``low > 0`` it is computed
from ``log(low + softplus(eta)) = logaddexp(log(low), log_softplus(eta))``, which is finite
too.

Numerical notes
---------------
* Count samples are integer-valued float tensors. ``torch.poisson`` overflows past ``2**63``;
  above a rate of 1e12 a rounded normal draw is used, which at that rate is the Poisson
  law to float precision (skewness ``rate**-0.5 = 1e-6``), and rates are capped at the
  largest float so a sample is never ``inf``.
* Zero-truncated draws are exact: the Poisson by the time of the first event of a Poisson
  process given one occurs, the NB2 by rejection and then, for the rows with ``P(0)`` near
  1, by inverting its CDF with SciPy (on the CPU).
* For the continuous families, a term ``value / mean`` (Gamma) or ``(value - loc)**2 /
  scale**2`` (Normal) is computed in log space and continued linearly past
  ``sqrt(finfo.max)``: there the true log density is below ``-1e19`` in float32 and
  ``-1e154`` in float64, and the continuation keeps ``log_prob`` and its gradient finite
  (with the right sign) instead of ``-inf``/NaN.
"""

from ._base import SoftplusCounts, SoftplusLinked, log1mexp
from .continuous import SoftplusGamma, SoftplusLogNormal, SoftplusNormal
from .counts import (
    SoftplusHurdleNegativeBinomial,
    SoftplusHurdlePoisson,
    SoftplusNegativeBinomial,
    SoftplusPoisson,
    SoftplusZeroInflatedNegativeBinomial,
    SoftplusZeroInflatedPoisson,
)
from .discretized import SoftplusDiscretizedLogistic
from .dispersed import SoftplusGeneralizedPoisson
from .priors import (
    SoftplusHalfNormal,
    SoftplusInverseGamma,
    SoftplusSupported,
    flat,
    half_normal_inverse_sqrt,
)
from .tweedie import SoftplusTweedie, tweedie_log_series

__all__ = [
    "SoftplusCounts",
    "SoftplusDiscretizedLogistic",
    "SoftplusGamma",
    "SoftplusGeneralizedPoisson",
    "SoftplusHalfNormal",
    "SoftplusHurdleNegativeBinomial",
    "SoftplusHurdlePoisson",
    "SoftplusInverseGamma",
    "SoftplusLinked",
    "SoftplusLogNormal",
    "SoftplusNegativeBinomial",
    "SoftplusNormal",
    "SoftplusPoisson",
    "SoftplusSupported",
    "SoftplusTweedie",
    "SoftplusZeroInflatedNegativeBinomial",
    "SoftplusZeroInflatedPoisson",
    "flat",
    "half_normal_inverse_sqrt",
    "log1mexp",
    "tweedie_log_series",
]
