"""Seeding helpers shared by the stochastic engines (NUTS, SVI).

Pyro draws from torch's global random number generator. The engines run their work
inside :func:`seeded`, which seeds a *forked* generator, so a fit is reproducible under
a seed and leaves the caller's generator state untouched. :class:`RandomState` carries a
generator state across calls (one SVI step at a time) for the same guarantee.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["RandomState", "child_seeds", "seeded"]


def _cuda_devices(device: torch.device | None) -> list[int]:
    if device is not None and device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run a block on torch's generator seeded with ``seed``, then restore its state.

    Parameters
    ----------
    seed : int or None
        ``None`` runs the block on the caller's generator, unchanged and unforked, so an
        outer ``pyro.set_rng_seed`` decides the draws.
    device : torch.device, optional
        A CUDA device whose generator is forked and seeded too.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(int(seed))
        yield


def child_seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` independent seeds derived from ``seed`` (``None`` gives ``n`` times ``None``)."""
    if seed is None:
        return [None] * n
    state = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32)
    return [int(s) for s in state]


class RandomState:
    """A torch generator state that survives between calls.

    ``with state:`` runs the block on this state and stores the advanced state on exit;
    the caller's global generator is restored afterwards. A state made from ``seed=None``
    is a no-op that draws from the global generator.

    Parameters
    ----------
    seed : int or None
        Initial seed.
    device : torch.device, optional
        A CUDA device whose generator is carried too.
    """

    def __init__(self, seed: int | None, device: torch.device | None = None):
        self._devices = _cuda_devices(device)
        self._cpu = self._cuda = None
        if seed is not None:
            with torch.random.fork_rng(devices=self._devices):
                torch.manual_seed(int(seed))
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
