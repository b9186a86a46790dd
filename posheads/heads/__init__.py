"""Output layers: a guarded ``Softplus``, ``PositiveLinear`` and distribution heads.

* :class:`Softplus` is a drop-in for ``torch.nn.Softplus`` (same values and repr), with an
  optional floor ``low`` and an optional learnable, positive ``beta``.
* :class:`PositiveLinear` is ``Linear`` followed by that softplus.
* Distribution heads map features of shape ``(..., in_features)`` to a distribution of
  :mod:`posheads.distributions` with ``batch_shape == (...)``. Like GluonTS'
  ``DistributionOutput`` each head is declarative: it names its raw arguments
  (``raw_names``), its distribution class and a ``domain_map`` that makes raw outputs valid;
  one ``Linear`` called ``proj`` projects the features to all raw arguments at once.
  :class:`FamilyHead` is the head of any :class:`~posheads.families.Family`: the family
  declares the arguments, the distribution and the start, so a new likelihood needs no
  new head (``FamilyHead(in_features, family=my_family)``); ``PoissonHead`` and the other
  count heads are its subclasses for the registered families.

Every layer is an ordinary ``nn.Module`` and also works as ``PyroModule[...]``: a head
built as a ``PyroModule`` builds its ``proj`` as ``PyroModule[nn.Linear]``, so priors go
straight onto ``head.proj.weight`` / ``head.proj.bias`` with ``PyroSample``.

Features are checked before they reach the distribution: a wrong trailing dimension
always raises ``ValueError``; NaN or inf raise ``ValueError`` unless the head was built
with ``validate=False`` (the check costs one reduction, and a device sync on CUDA).
"""

from .activations import PositiveLinear, Softplus
from .base import DistributionHead
from .continuous import GammaHead, LogNormalHead, NormalHead
from .family import (
    FamilyHead,
    GeneralizedPoissonHead,
    HurdleNegativeBinomialHead,
    HurdlePoissonHead,
    NegativeBinomialHead,
    PoissonHead,
    ZeroInflatedNegativeBinomialHead,
    ZeroInflatedPoissonHead,
)

__all__ = [
    "DistributionHead",
    "FamilyHead",
    "GammaHead",
    "GeneralizedPoissonHead",
    "HurdleNegativeBinomialHead",
    "HurdlePoissonHead",
    "LogNormalHead",
    "NegativeBinomialHead",
    "NormalHead",
    "PoissonHead",
    "PositiveLinear",
    "Softplus",
    "ZeroInflatedNegativeBinomialHead",
    "ZeroInflatedPoissonHead",
]
