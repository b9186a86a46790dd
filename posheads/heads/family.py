"""The head of any family (:class:`FamilyHead`) and its subclasses for the registered
count families."""

from __future__ import annotations

from typing import ClassVar

from .. import families as F
from ._shared import positive
from .base import DistributionHead

__all__ = [
    "FamilyHead",
    "GeneralizedPoissonHead",
    "HurdleNegativeBinomialHead",
    "HurdlePoissonHead",
    "NegativeBinomialHead",
    "PoissonHead",
    "ZeroInflatedNegativeBinomialHead",
    "ZeroInflatedPoissonHead",
]


class FamilyHead(DistributionHead):
    """Features -> the distribution of a :class:`~posheads.families.Family`.

    Raw outputs: the family's arguments (``"eta"``, its shapes, the logits of its parts).
    Shapes are mapped to the positive half line by softplus (floored at the smallest
    normal float, never 0); ``eta`` and logits are used as they are. Before training the
    biases sit at the family's default shapes and part probabilities;
    :meth:`init_from_targets` moves them to the family's moment-based start.

    Parameters
    ----------
    in_features : int
    family : str or Family, optional
        The likelihood; subclasses fix it (``PoissonHead``, ...).
    beta, threshold, low, target_mean, validate
        As in :class:`DistributionHead`; ``forward(h, exposure=None)`` accepts a positive
        exposure broadcastable to ``h.shape[:-1]`` when the family takes one.

    Examples
    --------
    >>> head = FamilyHead(4, family="negative_binomial")
    >>> head.raw_names
    ('eta', 'concentration')
    >>> head(torch.randn(2, 4)).batch_shape
    torch.Size([2])
    """

    family: ClassVar[F.Family | None] = None

    def __init__(self, in_features, *, family=None, beta=1.0, threshold=20.0, low=0.0,
                 target_mean=None, validate=True):
        if family is None and type(self).family is None:
            raise ValueError("FamilyHead needs a family, e.g. FamilyHead(p, family='poisson')")
        self.family = F.get_family(type(self).family if family is None else family)
        super().__init__(in_features, beta=beta, threshold=threshold, low=low,
                         target_mean=target_mean, validate=validate)

    @property
    def raw_names(self) -> tuple[str, ...]:
        return self.family.argument_names

    @property
    def distribution_class(self) -> type:
        return self.family.distribution

    @property
    def takes_exposure(self) -> bool:
        return self.family.takes_exposure

    @property
    def _default_raw(self) -> dict[str, float]:
        defaults = F.Start(1.0, {s.name: s.default for s in self.family.shapes},
                           {p.name: p.default for p in self.family.parts})
        raw = self.family.raw_start(defaults)
        del raw["eta"]  # the linear layer's own initialisation
        return raw

    def domain_map(self, raw):
        out = dict(raw)
        for name in self.family.shape_names:
            out[name] = positive(raw[name])
        return out

    def distribution(self, raw, exposure=None):
        args = self.domain_map(raw)
        if exposure is not None:
            exposure = self._check_exposure(exposure, raw["eta"])
        # validate=False also skips the distribution's argument checks: the fast path
        return self.family.build_from_arguments(
            args, beta=self.beta, threshold=self.threshold, low=self.low, exposure=exposure,
            validate_args=None if self.validate else False)

    def _init_raw(self, y, exposure):
        start = self.family.start(y, exposure=exposure)
        return self.family.raw_start(start, beta=self.beta, threshold=self.threshold,
                                     low=self.low)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, family={self.family.name}"
        return text + (f", low={self.low}" if self.low else "")


class PoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusPoisson`. Raw outputs: ``eta``.

    Examples
    --------
    >>> head = PoissonHead(4, target_mean=3.0)
    >>> head(torch.randn(10, 4)).mean.detach()[:2]
    tensor([3., 3.])
    """

    family = F.POISSON


class NegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusNegativeBinomial`.

    Raw outputs: ``eta`` and ``concentration`` (mapped by softplus). The concentration
    starts at 1, or at the family's method-of-moments start.

    Examples
    --------
    >>> head = NegativeBinomialHead(4)
    >>> sorted(head.parameters_from(torch.randn(2, 4)))
    ['concentration', 'eta']
    """

    family = F.NEGATIVE_BINOMIAL


class ZeroInflatedPoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusZeroInflatedPoisson`.

    Raw outputs: ``eta`` and ``gate_logits``. The gate starts at 0.1, or at the share of
    zeros beyond the Poisson's.

    Examples
    --------
    >>> head = ZeroInflatedPoissonHead(2).init_from_targets(torch.tensor([0.0, 0.0, 3.0, 5.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    2.0
    """

    family = F.ZERO_INFLATED_POISSON


class ZeroInflatedNegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusZeroInflatedNegativeBinomial`.

    Raw outputs: ``eta``, ``concentration`` (softplus) and ``gate_logits``.

    Examples
    --------
    >>> head = ZeroInflatedNegativeBinomialHead(3)
    >>> head(torch.randn(5, 3)).batch_shape
    torch.Size([5])
    """

    family = F.ZERO_INFLATED_NEGATIVE_BINOMIAL


class HurdlePoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusHurdlePoisson`.

    Raw outputs: ``eta`` and ``gate_logits`` (the logit of ``P(y = 0)``). Initialised from
    the share of zeros and the mean of the positive targets.

    Examples
    --------
    >>> head = HurdlePoissonHead(2).init_from_targets(torch.tensor([0.0, 2.0, 4.0, 0.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    1.5
    """

    family = F.HURDLE_POISSON


class HurdleNegativeBinomialHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusHurdleNegativeBinomial`.

    Raw outputs: ``eta``, ``concentration`` (softplus) and ``gate_logits`` (the logit of
    ``P(y = 0)``).

    Examples
    --------
    >>> head = HurdleNegativeBinomialHead(2).init_from_targets(torch.tensor([0.0, 2.0, 4.0, 0.0]))
    >>> round(float(head(torch.zeros(2)).mean.detach()), 4)
    1.5
    """

    family = F.HURDLE_NEGATIVE_BINOMIAL


class GeneralizedPoissonHead(FamilyHead):
    """Features -> :class:`~posheads.distributions.SoftplusGeneralizedPoisson`.

    Raw outputs: ``eta`` and ``dispersion`` (``Var / mean``, mapped by softplus): a count
    head for under-dispersed targets as well as over-dispersed ones. The dispersion
    starts at 1 (Poisson), or at the targets' variance-to-mean ratio.

    Examples
    --------
    >>> head = GeneralizedPoissonHead(3).init_from_targets(torch.tensor([9.0, 10.0, 11.0]))
    >>> 0.66 < float(head(torch.zeros(3)).variance.detach()) < 0.68  # Var / mean of y
    True
    """

    family = F.GENERALIZED_POISSON
