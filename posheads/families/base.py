"""The declaration of a likelihood: :class:`Family`, its :class:`Shape` and :class:`Part`.

A family states, once, everything the layers above need to use a likelihood under a
softplus link: its name and aliases, the distribution class, its extra parameters -- global
positive *shapes* (a concentration, a dispersion) with their default priors, and further
linear predictors (*parts*: the logits of a zero part) -- whether targets must be whole
numbers, a moment-based start, its per-row derivatives (closed form where the family
supplies them, autograd otherwise) and a simulator. The GLM, the heads, the Bayesian
neural network, the forecaster, the estimators, the simulators of
:mod:`posheads.datasets` and the command line ask a family; none of them names a
likelihood.

Every distribution of a family takes the count part's linear predictor ``eta`` first,
then its shapes and the logits of its parts as keywords, and ``beta``, ``threshold``,
``low``, ``exposure`` and ``validate_args``, as the classes of
:mod:`posheads.distributions` do. Shapes are positive and mapped to the real line by
softplus (:func:`posheads.constraints.softplus_positive`) wherever they are estimated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution

from ..constraints import softplus_positive
from .start import clip, softplus_inverse_scalar, weighted_mean_rate

__all__ = ["Family", "Part", "Shape", "Start"]


@dataclass(frozen=True)
class Shape:
    """A positive scalar parameter of a family, shared by all rows.

    Parameters
    ----------
    name : str
        The distribution's keyword, and the name of the site that estimates it.
    default : float
        Its value when there are no data to start from (a head before training).
    bounds : (float, float)
        Moment-based starting values are clipped to this range: the data only suggest a
        start, and the ends of the range are where the likelihood is flat.
    prior : callable
        ``prior(like) -> Distribution`` over the positive reals, with the dtype and device
        of the tensor ``like``: the default prior of the site.
    description : str
        One line for documentation and error messages.
    """

    name: str
    default: float
    bounds: tuple[float, float]
    prior: Callable[[torch.Tensor], Distribution]
    description: str = ""

    @property
    def constraint(self):
        """The support, mapped to the reals by softplus."""
        return softplus_positive()


@dataclass(frozen=True)
class Part:
    """A second linear predictor of a family: the logits of its zero part.

    Parameters
    ----------
    name : str
        Its sites are ``{name}_intercept`` and ``{name}_coef``; its per-row derivatives
        are keyed by ``name``.
    argument : str
        The distribution's keyword for the logits.
    default : float
        Its probability ``sigmoid(logits)`` when there are no data to start from.
    bounds : (float, float)
        Moment-based starting probabilities are clipped to this range.
    """

    name: str
    argument: str
    default: float
    bounds: tuple[float, float]


@dataclass
class Start:
    """Moment-based starting values of a family's parameters.

    Attributes
    ----------
    rate : float
        Mean of the count part per unit of exposure (``softplus(eta)`` at the start).
    shapes : dict of str to float
        Starting value of every shape.
    parts : dict of str to float
        Starting probability of every part (``sigmoid`` of its logits).
    """

    rate: float
    shapes: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)


# What a family's targets may be (Family.support).
_SUPPORTS = frozenset({"counts", "positive", "nonnegative"})


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class Family:
    """One likelihood under a softplus link, declared once.

    Parameters
    ----------
    name : str
        The canonical name (``"negative_binomial"``); ``get_family`` also takes it with
        hyphens (``"negative-binomial"``) and any of ``aliases``.
    distribution : type
        Its distribution class (see the module docstring for the constructor it needs).
    shapes : tuple of Shape
        Global positive parameters, in the order of the distribution's arguments.
    parts : tuple of Part
        Linear predictors besides ``eta``.
    integer : bool
        Targets must be whole numbers. ``False`` for the Poisson and the negative
        binomial, whose MAP fits accept non-negative real targets as a quasi-likelihood.
    takes_exposure : bool
        The distribution takes an ``exposure`` multiplying its mean.
    support : {"counts", "positive", "nonnegative"}
        What a target may be: counts ``0, 1, 2, ...`` (real values ``>= 0`` where
        ``integer`` is False), positive reals (a Gamma amount) or non-negative reals (a
        Tweedie amount with exact zeros); :meth:`check_target` enforces it.
    aliases : tuple of str
        Other names ``get_family`` accepts.
    description : str
        One line, for listings and help texts.

    Examples
    --------
    >>> from posheads.families import get_family
    >>> nb = get_family("negative-binomial")
    >>> nb.argument_names
    ('eta', 'concentration')
    >>> nb.build(torch.zeros(3), shapes={"concentration": torch.tensor(2.0)}).mean
    tensor([0.6931, 0.6931, 0.6931])
    """

    def __init__(self, name: str, distribution: type, *, shapes: tuple[Shape, ...] = (),
                 parts: tuple[Part, ...] = (), integer: bool = True,
                 takes_exposure: bool = True, aliases: tuple[str, ...] = (),
                 description: str = "", support: str = "counts"):
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"a family's name must be an identifier, got {name!r}")
        if support not in _SUPPORTS:
            raise ValueError(f"support must be one of {sorted(_SUPPORTS)}, got {support!r}")
        self.support = support
        self.name, self.distribution = name, distribution
        self.shapes, self.parts = tuple(shapes), tuple(parts)
        self.integer, self.takes_exposure = bool(integer), bool(takes_exposure)
        self.aliases, self.description = tuple(aliases), description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __reduce__(self):
        # A registered family pickles (and deep-copies) as a reference to the registry,
        # so an estimator holding one compares equal to itself after clone().
        from .registry import registered

        if registered(self):
            from .registry import get_family

            return get_family, (self.name,)
        return super().__reduce__()

    # ------------------------------------------------------------ declaration
    @property
    def shape_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.shapes)

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The distribution's arguments: ``"eta"``, the shapes, the parts' logits."""
        return ("eta", *self.shape_names, *(p.argument for p in self.parts))

    @property
    def canonical(self) -> Family:
        """The family a regressor declares for this one: itself, or for one member of a
        collection fixed by a parameter (the Tweedie law at one power) the collection's
        registered representative."""
        return self

    @property
    def fixed_arguments(self) -> dict:
        """Keywords of the distribution that the family fixes (the Tweedie power)."""
        return {}

    def shape(self, name: str) -> Shape:
        """The shape called ``name``."""
        for s in self.shapes:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no shape {name!r}")

    # ------------------------------------------------------------ distribution
    def build(self, eta, *, shapes=None, parts=None, beta=1.0, threshold=20.0, low=0.0,
              exposure=None, validate_args=None) -> Distribution:
        """The family's distribution at linear predictor ``eta``.

        Parameters
        ----------
        eta : Tensor, shape ``batch_shape``
        shapes : dict of str to Tensor
            Every shape, broadcastable with ``eta``.
        parts : dict of str to Tensor
            The logits of every part, keyed by part name.
        beta, threshold, low : float
            The softplus link (see :mod:`posheads.ops`) and the floor of the mean.
        exposure : Tensor, optional
        validate_args : bool, optional

        Returns
        -------
        Distribution with ``batch_shape`` that of ``eta`` (broadcast with the rest)
        """
        shapes, parts = shapes or {}, parts or {}
        kwargs = {}
        try:
            for s in self.shapes:
                kwargs[s.name] = shapes[s.name]
            for p in self.parts:
                kwargs[p.argument] = parts[p.name]
        except KeyError as err:
            raise ValueError(f"the {self.name} family needs {err.args[0]!r}") from None
        if exposure is not None:
            if not self.takes_exposure:
                raise ValueError(f"the {self.name} family takes no exposure")
            kwargs["exposure"] = exposure
        return self.distribution(eta, **kwargs, **self.fixed_arguments, beta=beta,
                                 threshold=threshold, low=low, validate_args=validate_args)

    def build_from_arguments(self, arguments: dict, **link) -> Distribution:
        """:meth:`build` from a dict keyed by :attr:`argument_names` (a head's outputs)."""
        shapes = {s.name: arguments[s.name] for s in self.shapes}
        parts = {p.name: arguments[p.argument] for p in self.parts}
        return self.build(arguments["eta"], shapes=shapes, parts=parts, **link)

    # ------------------------------------------------------------ targets
    def check_target(self, y, *, proper: bool = False, name: str = "y", why: str = ""):
        """Raise ``ValueError`` when the array ``y`` holds values outside the support.

        Parameters
        ----------
        y : ndarray, shape ``(n,)``
            Numeric targets (never modified).
        proper : bool
            The fit needs the family's proper likelihood (a Bayesian engine): count
            targets must then be whole numbers even where ``integer`` is False, since real
            targets are only a quasi-likelihood of a count law's MAP fit.
        name : str
            The array's name in messages.
        why : str
            What needs whole numbers, for the message (default: the likelihood).

        Returns
        -------
        ndarray
            ``y`` itself.
        """
        import numpy as np

        if not np.all(np.isfinite(y)):
            raise ValueError(f"Input {name} contains NaN or infinity: targets must be finite.")
        what = "counts" if self.support == "counts" else f"{self.name} amounts"
        if self.support == "positive" and np.any(y <= 0):
            raise ValueError(f"Some value(s) of {name} are out of the valid range of the loss: "
                             f"{what} must be > 0, and there are values <= 0.")
        if np.any(y < 0):
            raise ValueError(f"Some value(s) of {name} are out of the valid range of the loss: "
                             f"{what} must be >= 0, and there are negative values.")
        whole = self.support == "counts" and (self.integer or proper)
        if whole and np.any(y != np.floor(y)):
            raise ValueError(
                f"Some value(s) of {name} are not whole numbers: "
                f"{why or 'this likelihood models counts 0, 1, 2, ...'} (round them, or fit "
                "PoissonSoftplusRegressor with inference='map', which accepts non-negative "
                "real targets as a quasi-likelihood).")
        return y

    def unit_deviance(self, y, mu):
        """The unit deviance ``d(y, mu)`` behind the D² score (the Poisson's here).

        ``d = 2 (y log(y / mu) - (y - mu))`` with ``0 log 0 = 0``; ``mu`` is floored at the
        smallest float, so a predicted zero mean gives a large, finite deviance.

        Parameters
        ----------
        y, mu : ndarray, shape ``(n,)``

        Returns
        -------
        ndarray, shape ``(n,)``
        """
        import numpy as np

        mu = np.maximum(mu, np.finfo(np.float64).tiny)
        ratio = np.where(y > 0, y / mu, 1.0)
        return 2.0 * (np.where(y > 0, y * np.log(ratio), 0.0) - (y - mu))

    # ------------------------------------------------------------ starting values
    def start(self, y, weights=None, exposure=None) -> Start:
        """Moment-based starting values from targets.

        Parameters
        ----------
        y : Tensor, shape ``(n,)``
        weights, exposure : Tensor, shape ``(n,)``, optional

        Returns
        -------
        Start
        """
        rate = float(weighted_mean_rate(y, exposure, weights))
        return Start(rate, self.shape_starts(y, weights), {})

    def shape_starts(self, y, weights=None) -> dict[str, float]:
        """Starting value of each shape from the targets (the defaults, unless overridden)."""
        del y, weights
        return {s.name: s.default for s in self.shapes}

    def raw_start(self, start: Start, *, beta=1.0, threshold=20.0, low=0.0,
                  exposure_scale=1.0) -> dict[str, float]:
        """A start as unconstrained values keyed by :attr:`argument_names`.

        ``eta`` inverts ``low + softplus_beta`` at ``rate / exposure_scale`` (kept just
        above the floor), each shape inverts softplus and each part is a logit.
        """
        excess = start.rate / exposure_scale - low
        excess = max(excess, 1e-6 * max(start.rate / exposure_scale, 1.0))
        raw = {"eta": softplus_inverse_scalar(excess, beta, threshold)}
        for s in self.shapes:
            raw[s.name] = softplus_inverse_scalar(start.shapes[s.name])
        for p in self.parts:
            raw[p.argument] = _logit(start.parts[p.name])
        return raw

    # ------------------------------------------------------------ derivatives
    def rows(self, y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        """Per-row log-likelihood terms on fixed data (:class:`~posheads.families.RowTerms`).

        Autograd derivatives here; families with closed forms override this.
        """
        from .rows import AutogradRows

        return AutogradRows(self, y, exposure, weights, beta=beta, threshold=threshold)

    # ------------------------------------------------------------ simulation
    def simulate(self, mean, rng, shapes=None, parts=None):
        """Draw targets whose count part has mean ``mean`` (softplus link, ``beta = 1``).

        Parameters
        ----------
        mean : array-like, shape ``(n,)``
            Mean of the count part (before any zero part), ``> 0``.
        rng : numpy.random.Generator
            The only source of randomness: the same generator state gives the same draws.
        shapes : dict of str to float
            Every shape (defaults where missing).
        parts : dict of str to float
            The probability of every part (defaults where missing).

        Returns
        -------
        y : ndarray of int64 (float64 for a family of amounts), shape ``(n,)``
        expected : ndarray of float64, shape ``(n,)``
            ``E[y]`` of each row, zero part included.
        """
        import numpy as np

        from .. import ops

        seed = int(rng.integers(2**63 - 1))
        mu = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        eta = ops.softplus_inverse(mu.clamp(min=torch.finfo(mu.dtype).tiny))
        shapes = {s.name: torch.tensor(float((shapes or {}).get(s.name, s.default)),
                                       dtype=torch.float64) for s in self.shapes}
        given = parts or {}
        logits = {p.name: torch.tensor(_logit(clip(float(given.get(p.name, p.default)),
                                                   (1e-300, 1.0 - 1e-16))),
                                       dtype=torch.float64) for p in self.parts}
        d = self.build(eta, shapes=shapes, parts=logits)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            y = d.sample()
        kind = np.int64 if self.support == "counts" else np.float64
        return y.numpy().astype(kind), d.mean.numpy().astype(np.float64)
