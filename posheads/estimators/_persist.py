"""A safe on-disk format for fitted estimators: JSON for parameters, tensors for the rest.

``save(est, folder)`` writes ``estimator.json`` (class, version, ``get_params()`` and
plain fitted attributes, including nested ones of plain values such as a fitted data
design) and ``tensors.pt`` (posterior draws and other arrays) written by
``torch.save`` and read back with ``weights_only=True``, so loading never runs pickled
code. Pickling the estimator still works for scikit-learn users who want it.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path

import numpy as np
import torch

from .. import __version__

__all__ = ["PersistMixin", "load", "save"]

_FORMAT = 1


def _jsonable(value):
    from posheads.families import Family, registered

    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, Family):
        # a registered family is stored by its name, which get_family resolves on load
        if not registered(value):
            raise ValueError(f"cannot save the unregistered family {value.name!r}: register "
                             "it with posheads.families.register_family, or pass its name")
        return value.name
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("posheads.inference"):
        # an engine configuration (inference=NUTS(...)): its name and its fields
        fields = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"configuration": type(value).__name__, "fields": fields}
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _from_json(value):
    """A parameter value read back: an engine configuration is rebuilt from its fields."""
    if isinstance(value, dict) and set(value) == {"configuration", "fields"}:
        from posheads import inference

        return getattr(inference, value["configuration"])(**value["fields"])
    return value


def save(est, folder) -> None:
    """Write a fitted estimator to ``folder`` (created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = est.get_params(deep=False)
    if not isinstance(params.get("random_state"), (numbers.Integral, type(None))):
        params["random_state"] = None  # a RandomState object is not data; record "unseeded"
    state = est._get_state()
    plain = {k: _jsonable(v) for k, v in state.items() if not isinstance(v, (np.ndarray, dict))}
    arrays = {k: torch.as_tensor(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    nested = {k: v for k, v in state.items() if isinstance(v, dict) and _holds_arrays(v)}
    # a dict of plain values (a fitted design) is JSON, readable without torch
    plain.update({k: v for k, v in state.items()
                  if isinstance(v, dict) and not _holds_arrays(v)})
    meta = {
        "format": _FORMAT,
        "posheads_version": __version__,
        "class": type(est).__name__,
        "module": type(est).__module__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "attributes": plain,
    }
    (folder / "estimator.json").write_text(json.dumps(meta, indent=2))
    torch.save({"arrays": arrays, "nested": _to_cpu(nested)}, folder / "tensors.pt")


def load(folder):
    """Read an estimator written by :func:`save` (any posheads estimator class)."""
    import posheads.estimators as estimators

    folder = Path(folder)
    meta_path = folder / "estimator.json"
    if not meta_path.is_file():
        raise ValueError(f"{folder} holds no saved posheads estimator (estimator.json missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != _FORMAT:
        raise ValueError(f"unsupported format {meta.get('format')!r} in {meta_path}")
    cls = getattr(estimators, meta["class"], None) or _user_class(meta)
    if cls is None:
        raise ValueError(f"unknown estimator class {meta['class']!r} in {meta_path}")
    blob = torch.load(folder / "tensors.pt", map_location="cpu", weights_only=True)
    est = cls(**{k: _from_json(v) for k, v in meta["params"].items()})
    state = dict(meta["attributes"])
    state.update({k: v.numpy() for k, v in blob["arrays"].items()})
    state.update(blob["nested"])
    est._set_state(state)
    return est


def _user_class(meta):
    """An estimator class defined outside posheads (a regressor for a family of one's own),
    found by its module and name; only subclasses of posheads' estimators qualify."""
    import importlib

    module = meta.get("module")
    if not isinstance(module, str) or module.startswith("posheads"):
        return None
    try:
        cls = getattr(importlib.import_module(module), meta["class"], None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, PersistMixin) else None


def _holds_arrays(obj) -> bool:
    """Whether a nested value holds a tensor or an array anywhere (then: tensors.pt)."""
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return True
    if isinstance(obj, dict):
        return any(_holds_arrays(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_arrays(v) for v in obj)
    return False


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_cpu(v) for v in obj]
    return obj


class PersistMixin:
    """``save(path)`` and ``load(path)`` in the safe format, for estimators that implement
    ``_get_state()`` and ``_set_state(state)``."""

    def save(self, path) -> None:
        """Write the fitted estimator to the folder ``path`` (JSON + tensors, no pickle)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        save(self, path)

    @classmethod
    def load(cls, path):
        """Read an estimator written by :meth:`save`."""
        est = load(path)
        if not isinstance(est, cls):
            raise ValueError(f"{path} holds a {type(est).__name__}, not a {cls.__name__}")
        return est
