"""Helpers every engine shares: argument checks, seeding, the thread policy, the SVI
plateau rule and the guide factory.

* :func:`check_int`, :func:`check_real` -- argument checks whose ``ValueError`` names the
  argument (the configuration objects use them).
* :func:`seeded`, :class:`RandomState`, :func:`child_seeds` -- reproducible draws that leave
  the caller's random number generators as they were.
* :func:`intra_op_threads` -- run small work on one intra-op thread.
* :class:`Plateau` -- the stopping rule of SVI; :func:`epoch_batches` -- mini-batches of
  row indices, a fresh permutation every epoch.
* :func:`make_guide` with :data:`GUIDES` -- Gaussian guides whose scales are mapped to the
  positive half line by softplus.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from posheads.constraints import softplus_positive

__all__ = [
    "GUIDES",
    "SERIAL_WORK",
    "Plateau",
    "RandomState",
    "SoftplusAutoLowRank",
    "SoftplusAutoMultivariateNormal",
    "SoftplusAutoNormal",
    "check_int",
    "check_real",
    "child_seeds",
    "epoch_batches",
    "intra_op_threads",
    "make_guide",
    "seeded",
]


# ------------------------------------------------------------------ argument checks
def check_int(name: str, value, low: int, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` if it is an integer ``>= low`` (or None when ``optional``).

    Raises
    ------
    ValueError
        Naming ``name``; ``bool`` is not accepted as an integer.
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {low}{extra}, got {value!r}")
    return int(value)


def check_real(name: str, value, low: float, high: float = math.inf, *,
               closed_low: bool = False, closed_high: bool = False,
               optional: bool = False) -> float | None:
    """``value`` as a ``float`` if it is a real number between ``low`` and ``high``
    (excluded unless ``closed_low`` / ``closed_high``), or None when ``optional``.

    Raises
    ------
    ValueError
        Naming ``name``.
    """
    if optional and value is None:
        return None
    inside = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        low < value < high or (closed_low and value == low)
        or (closed_high and value == high))
    if not inside:
        if math.isfinite(high):
            bounds = (f"in {'[' if closed_low else '('}{low:g}, "
                      f"{high:g}{']' if closed_high else ')'}")
        else:
            bounds = f"{'>=' if closed_low else '>'} {low:g}"
        raise ValueError(f"{name} must be {bounds}{' or None' if optional else ''}, "
                         f"got {value!r}")
    return float(value)


# ------------------------------------------------------------------ seeding
def _cuda_devices(device) -> list[int]:
    """The index of a CUDA ``device`` (its current device when unindexed), else none."""
    if device is None:
        return []
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _manual_seed(seed: int, cuda: list[int]) -> None:
    """Seed the CPU generator and the generators of ``cuda`` only (``torch.manual_seed``
    would also reseed every other CUDA device, whose state nobody forked)."""
    torch.default_generator.manual_seed(seed)
    for index in cuda:
        torch.cuda.default_generators[index].manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None, device=None) -> Iterator[None]:
    """Run a block on torch's generators seeded with ``seed``, then restore their state.

    Pyro draws from torch's global generators; the engines run their random work inside
    this block, so a fit is reproducible under a seed and the caller's generators are as
    they were afterwards.

    Parameters
    ----------
    seed : int or None
        ``None`` runs the block on the caller's generators, unseeded and unforked: the
        draws advance the caller's state, so an outer ``pyro.set_rng_seed`` decides them.
    device : torch.device or str, optional
        Where the data live. For a CUDA device its generator (the current device's when
        the index is unset) is forked and seeded with the CPU one; other devices' are
        left alone.
    """
    if seed is None:
        yield
        return
    cuda = _cuda_devices(device)
    with torch.random.fork_rng(devices=cuda):
        _manual_seed(int(seed), cuda)
        yield


def child_seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` independent seeds derived from ``seed`` (``None`` gives ``n`` times ``None``)."""
    if seed is None:
        return [None] * n
    state = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32)
    return [int(s) for s in state]


class RandomState:
    """A generator state carried from one call to the next (one SVI step at a time).

    ``with state:`` runs the block on this state and keeps the advanced state on exit;
    the caller's generators are restored afterwards. A state made with ``seed=None``
    does nothing: the block draws from the caller's generators, as in :func:`seeded`.

    Parameters
    ----------
    seed : int or None
        Initial seed.
    device : torch.device or str, optional
        A CUDA device whose generator is carried too (see :func:`seeded`).
    """

    def __init__(self, seed: int | None, device=None):
        self._devices = _cuda_devices(device)
        self._cpu = self._cuda = None
        if seed is not None:
            with torch.random.fork_rng(devices=self._devices):
                _manual_seed(int(seed), self._devices)
                self._save()
        self._stack: list[contextlib.ExitStack] = []

    def _save(self) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = [torch.cuda.get_rng_state(d) for d in self._devices]

    def __enter__(self) -> RandomState:
        stack = contextlib.ExitStack()
        if self._cpu is not None:
            stack.enter_context(torch.random.fork_rng(devices=self._devices))
            torch.set_rng_state(self._cpu)
            for d, s in zip(self._devices, self._cuda, strict=True):
                torch.cuda.set_rng_state(s, d)
        self._stack.append(stack)
        return self

    def __exit__(self, *exc) -> None:
        if self._cpu is not None:
            self._save()
        self._stack.pop().close()


# ------------------------------------------------------------------ threads
#: Work below this many entries per pass (of the design, for a GLM) runs on one thread.
SERIAL_WORK = 2**18


class intra_op_threads:
    """Run a ``with`` block on one intra-op thread when its work is small; restore after.

    Small work is a few hundred short kernels, each shorter than waking a second thread
    (and far shorter than waiting for one on a busy machine), so one thread is faster.
    (A class rather than a generator: it wraps every small fit, whose overhead counts.)

    Parameters
    ----------
    work_size : int or None
        Numbers one pass of the work reads (a GLM: the entries of its design). ``None``
        (unknown) leaves the setting alone.
    device : torch.device or str, optional
        Where the work runs; on a CUDA device the CPU setting is left alone.
    limit : int
        Work of at least this size keeps every thread.

    Notes
    -----
    ``torch.set_num_threads`` is process-wide: while the block runs it also applies to
    other Python threads using torch.

    Examples
    --------
    >>> with intra_op_threads(1000):
    ...     torch.get_num_threads()
    1
    """

    __slots__ = ("_before", "_serial")

    def __init__(self, work_size: int | None, device=None, *, limit: int = SERIAL_WORK):
        on_cpu = device is None or torch.device(device).type == "cpu"
        self._serial = work_size is not None and on_cpu and work_size < limit
        self._before = None

    def __enter__(self) -> None:
        if self._serial:
            threads = torch.get_num_threads()
            if threads > 1:
                self._before = threads
                torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        if self._before is not None:
            torch.set_num_threads(self._before)
            self._before = None


# ------------------------------------------------------------------ SVI stopping rule
class Plateau:
    """Stop when the smoothed loss has not improved by ``tol`` for ``patience`` steps.

    The smoothed loss is the running mean of the first ``window`` losses, then an
    exponential moving average with weight ``1 / window``. Improvements are counted from
    the end of that first window (the warm-up) on, so one lucky early mini-batch does not
    set a best that later, better-fitted steps cannot beat.

    Parameters
    ----------
    patience : int or None
        Steps without improvement before :meth:`__call__` returns True; ``None`` never
        stops.
    tol : float
        The improvement that counts, in the loss's units.
    window : int, optional
        Default ``patience // 5`` (at least 1), or 100 without ``patience``.

    Examples
    --------
    >>> stop = Plateau(patience=10, tol=0.0)
    >>> [stop(1.0) for _ in range(12)][-1]
    True
    """

    def __init__(self, patience: int | None, tol: float, window: int | None = None):
        self.patience, self.tol = patience, tol
        if window is None:
            window = 100 if patience is None else max(1, patience // 5)
        self.window = int(window)
        self.smooth = self.best = math.inf
        self.steps = self.since = 0

    def __call__(self, loss: float) -> bool:
        """Record the loss of one step; True once the run should stop."""
        self.steps += 1
        weight = 1.0 / min(self.steps, self.window)
        self.smooth = loss if self.steps == 1 else self.smooth + weight * (loss - self.smooth)
        if self.steps < self.window:
            return False
        if self.smooth < self.best - self.tol:
            self.best, self.since = self.smooth, 0
        else:
            self.since += 1
        return self.patience is not None and self.since >= self.patience


def epoch_batches(n: int, batch_size: int | None, seed: int | None,
                  device=None) -> Iterator[torch.Tensor | None]:
    """Endless mini-batches of row indices: slices of a fresh permutation every epoch.

    Parameters
    ----------
    n : int
        Rows of the data.
    batch_size : int or None
        Rows per batch; ``None`` (or ``>= n``) yields ``None`` forever (the full data).
        An epoch ends at its last whole batch, so every batch has ``batch_size`` rows.
    seed : int or None
        Seeds the permutations (``None``: drawn from torch's global generator).
    device : torch.device or str, optional
        Where the indices go (the data's device).

    Yields
    ------
    Tensor of int64, shape ``(batch_size,)``, or None
    """
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    generator = torch.Generator()
    if seed is None:
        generator.manual_seed(int(torch.randint(2**62, ())))
    else:
        generator.manual_seed(int(seed))
    while True:
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


# ------------------------------------------------------------------ guides
class SoftplusAutoNormal(AutoNormal):
    """``AutoNormal`` whose scales are posheads' ``softplus`` of unconstrained parameters."""

    scale_constraint = softplus_positive()


class SoftplusAutoMultivariateNormal(AutoMultivariateNormal):
    """``AutoMultivariateNormal`` with softplus-mapped scales (times a unit Cholesky factor)."""

    scale_constraint = softplus_positive()


class SoftplusAutoLowRank(AutoLowRankMultivariateNormal):
    """``AutoLowRankMultivariateNormal`` with softplus-mapped diagonal scales."""

    scale_constraint = softplus_positive()


#: The guide kinds :func:`make_guide` builds.
GUIDES = ("normal", "multivariate_normal", "lowrank", "last_layer")


def _hidden_sites(model) -> list[str]:
    layers = getattr(model, "hidden", None)
    if layers is None:
        raise ValueError("guide 'last_layer' needs a model with hidden layers "
                         "(model.hidden, as BayesianCountMLP has)")
    return [f"hidden.{i}.{p}" for i in range(len(layers)) for p in ("weight", "bias")]


def make_guide(model, kind, init_loc_fn, rank: int | None = None, init_scale: float = 0.1):
    """A Gaussian guide for ``model`` in the unconstrained space of its latent sites.

    Every Gaussian scale starts at ``init_scale`` and is ``softplus`` of an unconstrained
    parameter (:func:`posheads.constraints.softplus_positive`), so it can neither reach
    zero nor blow up through an ``exp``.

    Parameters
    ----------
    model : callable
        The Pyro model.
    kind : {"normal", "multivariate_normal", "lowrank", "last_layer"} or guide object
        * ``"normal"``: mean-field (:class:`SoftplusAutoNormal`);
        * ``"multivariate_normal"``: full-rank covariance;
        * ``"lowrank"``: low-rank plus diagonal covariance of rank ``rank``;
        * ``"last_layer"``: point estimates (``AutoDelta``) of the ``weight`` and ``bias``
          sites of the model's hidden layers ``model.hidden`` (named
          ``"hidden.{i}.weight"``, as :class:`~posheads.models.bnn.BayesianCountMLP`
          names them) and the mean-field Gaussian over every other site.

        Anything that is not a string is returned unchanged (a guide of your own).
    init_loc_fn : callable
        Pyro's ``init_loc_fn``: the starting location of every site.
    rank : int, optional
        Rank of ``"lowrank"`` (Pyro's default, about ``sqrt(d)``, when None).
    init_scale : float
        Initial scale of every Gaussian.

    Returns
    -------
    AutoGuide

    Raises
    ------
    ValueError
        For an unknown ``kind``, or ``"last_layer"`` for a model without hidden layers.
    """
    if not isinstance(kind, str):
        return kind
    init_scale = float(init_scale)
    if kind == "normal":
        return SoftplusAutoNormal(model, init_loc_fn=init_loc_fn, init_scale=init_scale)
    if kind == "multivariate_normal":
        return SoftplusAutoMultivariateNormal(model, init_loc_fn=init_loc_fn,
                                              init_scale=init_scale)
    if kind == "lowrank":
        return SoftplusAutoLowRank(model, init_loc_fn=init_loc_fn, init_scale=init_scale,
                                   rank=rank)
    if kind != "last_layer":
        raise ValueError(f"guide must be one of {GUIDES} or a guide object, got {kind!r}")
    hidden = _hidden_sites(model)
    guide = AutoGuideList(model)
    if hidden:
        guide.append(AutoDelta(poutine.block(model, expose=hidden), init_loc_fn=init_loc_fn))
    guide.append(SoftplusAutoNormal(poutine.block(model, hide=hidden), init_loc_fn=init_loc_fn,
                                    init_scale=init_scale))
    return guide
