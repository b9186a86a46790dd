"""The engine an estimator runs: its ``inference`` parameter as a configuration object.

``inference`` is a name (``"map"``, ``"laplace"``, ``"svi"``, ``"nuts"``), whose budget
comes from the estimator's keywords (``max_iter``, ``tol``, ``num_samples``,
``num_warmup``, ``num_chains``, ``num_steps``, ``learning_rate``, ``batch_size``), or a
configuration of :mod:`posheads.inference` (``MAP(...)``, ``Laplace(...)``, ``SVI(...)``,
``NUTS(...)``) that carries its own. A keyword the configuration also sets may not be
changed from its default at the same time: the two would disagree.
"""

from __future__ import annotations

import functools
import inspect

__all__ = ["engine_budget", "inference_config", "is_bayesian"]

# configuration field -> estimator keyword, per engine
_FIELDS = {
    "MAP": {"max_iter": "max_iter", "tol": "tol"},
    "Laplace": {"num_samples": "num_samples", "max_iter": "max_iter", "tol": "tol"},
    "NUTS": {"num_samples": "num_samples", "num_warmup": "num_warmup",
             "num_chains": "num_chains"},
    "SVI": {"num_steps": "num_steps", "learning_rate": "learning_rate",
            "subsample_size": "batch_size", "num_samples": "num_samples"},
}
_NAMES = {"map": "MAP", "laplace": "Laplace", "nuts": "NUTS", "svi": "SVI"}


def inference_config(est):
    """The configuration object that ``est.inference`` means.

    Raises
    ------
    ValueError
        For an object that is not a configuration of :mod:`posheads.inference`, or a
        budget keyword of the estimator changed while a configuration sets it.
    """
    from posheads import inference

    choice = est.inference
    if isinstance(choice, str):
        kind = _NAMES[choice]
        fields = tuple((field, getattr(est, key)) for field, key in _FIELDS[kind].items())
        return _made(kind, fields)
    kind = type(choice).__name__
    if kind not in _FIELDS or not isinstance(choice, getattr(inference, kind)):
        raise ValueError("inference must be 'map', 'laplace', 'svi', 'nuts' or a "
                         "configuration of posheads.inference (MAP, Laplace, SVI, NUTS), "
                         f"got {choice!r}")
    defaults = _defaults(type(est))
    for field, key in _FIELDS[kind].items():
        if getattr(est, key) != defaults[key]:
            raise ValueError(f"{key}={getattr(est, key)!r} and inference={choice!r} both "
                             f"set the budget: pass {field}= to {kind}(...) instead")
    return choice


@functools.lru_cache(maxsize=64)
def _defaults(cls) -> dict:
    """The default of every parameter of ``cls.__init__``."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}


@functools.lru_cache(maxsize=256)
def _made(kind: str, fields: tuple):
    """The configuration ``kind(**fields)``, made (and validated) once per value."""
    from posheads import inference

    return getattr(inference, kind)(**dict(fields))


def is_bayesian(est) -> bool:
    """Whether ``est.inference`` draws from a posterior (anything but MAP)."""
    from posheads.inference import MAP

    return not isinstance(inference_config(est), MAP)


def engine_budget(config) -> dict:
    """The budget of a configuration that :func:`posheads.inference.checks.diagnose`
    judges: NUTS's ``num_warmup`` and ``num_samples``, SVI's ``num_steps`` (MAP and
    Laplace: none)."""
    from posheads import inference

    if isinstance(config, inference.MAP):  # first: a MAP fit loads no sampler's module
        return {}
    if isinstance(config, inference.NUTS):
        return {"num_warmup": config.num_warmup, "num_samples": config.num_samples}
    if isinstance(config, inference.SVI):
        return {"num_steps": config.num_steps}
    return {}
