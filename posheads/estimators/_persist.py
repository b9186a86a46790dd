"""A safe on-disk format for fitted estimators: JSON for parameters, tensors for the rest.

``save(est, folder)`` writes ``estimator.json`` (class, version, ``get_params()`` and
plain fitted attributes, including nested ones of plain values such as a fitted data
design, and the shape of every tensor) and ``tensors.pt`` (posterior draws and other
arrays) written by ``torch.save`` and read back with ``weights_only=True``, so loading
never runs pickled code. Each file is written under a temporary name and renamed into
place. Pickling the estimator still works for scikit-learn users who want it.

``load(folder)`` checks what it reads: a missing, empty, truncated or damaged file, JSON
of the wrong type, a missing field, an unknown parameter, a tensor of the wrong type or
shape or holding NaN or infinite values, a newer format -- each is one ``ValueError``
naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import numbers
import os
import pickle
import tempfile
import zipfile
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
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        # a mapping of plain values (the forecaster's hierarchy={total: [series, ...]})
        return {k: _jsonable(v) for k, v in value.items()}
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
    blob = {"arrays": arrays, "nested": _to_cpu(nested)}
    meta = {
        "format": _FORMAT,
        "posheads_version": __version__,
        "class": type(est).__name__,
        "module": type(est).__module__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "attributes": plain,
        # read back to tell a tensors.pt of another model (or a damaged one) at load
        "tensor_shapes": {name: list(t.shape) for name, t in _tensors(blob)},
    }
    _write_atomic(folder / "tensors.pt", lambda f: torch.save(blob, f))
    text = json.dumps(meta, indent=2)
    _write_atomic(folder / "estimator.json", lambda f: f.write(text.encode()))


def _write_atomic(path: Path, write) -> None:
    """``write(binary file)`` to a temporary file beside ``path``, then rename it there
    (mode ``0o666 & ~umask``, as ``open`` would make it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(folder):
    """Read an estimator written by :func:`save` (any posheads estimator class).

    Raises
    ------
    ValueError
        One line naming the file and what is wrong: a folder without ``estimator.json``
        or ``tensors.pt``, a file that is empty, truncated or damaged, JSON of the wrong
        type or without a field, an unknown class or parameter, a tensor of the wrong
        type or shape or holding NaN or infinite values, a format newer than this
        posheads reads, or a ``tensors.pt`` holding pickled objects other than tensors.
    """
    folder = Path(folder)
    meta_path = folder / "estimator.json"
    if not meta_path.is_file():
        raise ValueError(f"{folder} holds no saved posheads estimator (estimator.json missing)")
    meta = _read_meta(meta_path)
    cls = _estimator_class(meta, meta_path)
    params = _params(meta, meta_path, cls)
    blob = _read_tensors(folder / "tensors.pt", meta.get("tensor_shapes"))
    try:
        est = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{meta_path}: bad parameters for {cls.__name__}: "
                         f"{_first_line(exc)}") from None
    state = dict(meta["attributes"])
    state.update({k: v.numpy() for k, v in blob["arrays"].items()})
    state.update(blob["nested"])
    try:
        est._set_state(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else _first_line(exc)
        raise ValueError(f"{folder}: estimator.json and tensors.pt do not make a "
                         f"{cls.__name__} ({what})") from None
    return est


def _first_line(exc) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[0].strip() if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_meta(path: Path) -> dict:
    """``estimator.json`` as a dict, checked for its fields and their types."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty")
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is damaged: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (truncated or damaged?): {exc.msg} at "
                         f"line {exc.lineno} column {exc.colno}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a JSON {type(meta).__name__}, not an object")
    fmt = meta.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > _FORMAT:
        raise ValueError(f"{path} was written by a newer posheads "
                         f"({meta.get('posheads_version', '?')}, format {fmt}); posheads "
                         f"{__version__} reads format {_FORMAT}: upgrade posheads")
    if fmt != _FORMAT:
        raise ValueError(f"unsupported format {fmt!r} in {path}")
    for key, kind in (("class", str), ("params", dict), ("attributes", dict)):
        if key not in meta:
            raise ValueError(f"{path} lacks the field {key!r}")
        if not isinstance(meta[key], kind):
            raise ValueError(f"{path}: {key!r} must be a JSON "
                             f"{'string' if kind is str else 'object'}, got "
                             f"{type(meta[key]).__name__}")
    shapes = meta.get("tensor_shapes")
    if shapes is not None and not (isinstance(shapes, dict) and all(
            isinstance(s, list) and all(isinstance(n, int) for n in s)
            for s in shapes.values())):
        raise ValueError(f"{path}: 'tensor_shapes' must map names to lists of integers")
    return meta


def _estimator_class(meta: dict, path: Path):
    import posheads.estimators as estimators

    cls = getattr(estimators, meta["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, PersistMixin)):
        cls = _user_class(meta)
    if cls is None:
        raise ValueError(f"unknown estimator class {meta['class']!r} in {path}")
    return cls


def _params(meta: dict, path: Path, cls) -> dict:
    """The constructor's arguments, after checking their names against its signature."""
    signature = inspect.signature(cls)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(meta["params"]) - set(signature.parameters))
    if unknown and not takes_any:
        raise ValueError(f"{path}: unknown parameter(s) {', '.join(map(repr, unknown))} "
                         f"for {cls.__name__}")
    try:
        return {k: _from_json(v) for k, v in meta["params"].items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a damaged engine configuration in 'params' "
                         f"({_first_line(exc)})") from None


def _read_tensors(path: Path, shapes: dict | None) -> dict:
    """``tensors.pt`` read without unpickling code, checked for its structure, the types,
    finiteness and (where ``estimator.json`` records them) shapes of its tensors."""
    if not path.is_file():
        raise ValueError(f"{path.parent} is not a complete saved estimator (tensors.pt "
                         "missing)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its end is its index
        raise ValueError(f"{path} cannot be read (truncated, or not a tensors file written "
                         "by posheads)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise ValueError(f"{path} holds pickled objects other than tensors and plain "
                             "values: refused (loading never runs pickled code)") from None
        raise ValueError(f"{path} is damaged: {_first_line(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path} cannot be read (truncated, or not a tensors file "
                         f"written by posheads): {_first_line(exc)}") from None
    if not (isinstance(blob, dict) and isinstance(blob.get("arrays"), dict)
            and isinstance(blob.get("nested"), dict)):
        raise ValueError(f"{path} is not a posheads tensors file (expected a dict with "
                         "'arrays' and 'nested' dicts)")
    for name, value in blob["arrays"].items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: {name!r} is a {type(value).__name__}, not a tensor")
    for name, t in _tensors(blob):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: {name!r} holds NaN or infinite values")
        want = (shapes or {}).get(name)
        if want is not None and list(t.shape) != want:
            raise ValueError(f"{path}: {name!r} has shape {tuple(t.shape)}, but "
                             f"estimator.json records {tuple(want)} (a tensors.pt of "
                             "another model?)")
    return blob


def _tensors(obj, prefix=""):
    """``(name, tensor)`` for every tensor in a nested dict or list, names joined by
    ``/`` (``nested/posterior/samples/coef``)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}" if prefix else str(i))


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
