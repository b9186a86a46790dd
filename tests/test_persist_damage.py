"""Damaged model folders: every kind of damage is one ``ValueError`` naming the file and
what is wrong, for library users (``posheads.estimators.load``) as for the command."""

import json
import shutil

import numpy as np
import pytest
import torch

from posheads import BayesianNeuralCountRegressor, PoissonSoftplusRegressor
from posheads.datasets import make_count_regression
from posheads.estimators import load


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, y, _ = make_count_regression(n_samples=80, n_features=3, random_state=3)
    folder = tmp_path_factory.mktemp("persist") / "model"
    est = PoissonSoftplusRegressor(alpha=0.01).fit(X, y)
    est.save(folder)
    return folder, est, X


def _meta(folder):
    return json.loads((folder / "estimator.json").read_text())


def _set_meta(folder, meta):
    (folder / "estimator.json").write_text(json.dumps(meta))


def _blob(folder):
    return torch.load(folder / "tensors.pt", weights_only=True)


def _edit_meta(change):
    def damage(folder):
        meta = _meta(folder)
        change(meta)
        _set_meta(folder, meta)
    return damage


def _edit_blob(change):
    def damage(folder):
        blob = _blob(folder)
        change(blob)
        torch.save(blob, folder / "tensors.pt")
    return damage


def _truncate(name, keep=0.5):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return damage


class Payload:
    """An object that pickles as code to run (it never runs: loading refuses it)."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


DAMAGES = {
    "estimator.json missing": (lambda f: (f / "estimator.json").unlink(),
                               r"estimator\.json missing"),
    "estimator.json empty": (lambda f: (f / "estimator.json").write_text(""),
                             r"estimator\.json is empty"),
    "estimator.json truncated": (_truncate("estimator.json"),
                                 r"estimator\.json is not valid JSON \(truncated"),
    "estimator.json not UTF-8": (lambda f: (f / "estimator.json").write_bytes(b"\xff\xfe{"),
                                 r"estimator\.json is damaged: not UTF-8"),
    "estimator.json a list": (lambda f: (f / "estimator.json").write_text("[1, 2]"),
                              r"estimator\.json holds a JSON list, not an object"),
    "params missing": (_edit_meta(lambda m: m.pop("params")),
                       r"estimator\.json lacks the field 'params'"),
    "params a list": (_edit_meta(lambda m: m.update(params=[])),
                      r"estimator\.json: 'params' must be a JSON object, got list"),
    "unknown parameter": (_edit_meta(lambda m: m["params"].update(colour="red")),
                          r"estimator\.json: unknown parameter\(s\) 'colour' for "
                          "PoissonSoftplusRegressor"),
    "unknown class": (_edit_meta(lambda m: m.update({"class": "load"})),
                      r"unknown estimator class 'load' in .*estimator\.json"),
    "newer format": (_edit_meta(lambda m: m.update(format=2, posheads_version="9.0")),
                     r"estimator\.json was written by a newer posheads \(9\.0, format 2\)"),
    "attribute missing": (_edit_meta(lambda m: m["attributes"].pop("coef_scale")),
                          r"do not make a PoissonSoftplusRegressor \(missing entry "
                          "'coef_scale'\\)"),
    "tensors.pt missing": (lambda f: (f / "tensors.pt").unlink(), r"tensors\.pt missing"),
    "tensors.pt empty": (lambda f: (f / "tensors.pt").write_bytes(b""),
                         r"tensors\.pt is empty"),
    "tensors.pt truncated": (_truncate("tensors.pt"), r"tensors\.pt cannot be read"),
    "tensors.pt garbage": (lambda f: (f / "tensors.pt").write_bytes(b"not a zip" * 20),
                           r"tensors\.pt cannot be read"),
    "tensors.pt a list": (lambda f: torch.save([torch.zeros(2)], f / "tensors.pt"),
                          r"tensors\.pt is not a posheads tensors file"),
    "non-tensor": (_edit_blob(lambda b: b["arrays"].update(coef_=[1.0, 2.0])),
                   r"tensors\.pt: 'coef_' is a list, not a tensor"),
    "wrong shape": (_edit_blob(lambda b: b["arrays"].update(coef_=torch.zeros(7))),
                    r"tensors\.pt: 'arrays/coef_' has shape \(7,\), but estimator\.json "
                    r"records \(3,\)"),
    "NaN values": (_edit_blob(lambda b: b["arrays"]["coef_"].fill_(float("nan"))),
                   r"tensors\.pt: 'arrays/coef_' holds NaN or infinite values"),
    "NaN draws": (_edit_blob(lambda b: b["nested"]["posterior"]["samples"]["coef"]
                             .fill_(float("nan"))),
                  r"'nested/posterior/samples/coef' holds NaN"),
    "pickled code": (lambda f: torch.save({"arrays": {}, "nested": {"x": Payload()}},
                                          f / "tensors.pt"),
                     r"tensors\.pt holds pickled objects other than tensors.*refused"),
    "pickled array": (_edit_blob(lambda b: b["nested"].update(x=np.zeros(2))),
                      r"tensors\.pt holds pickled objects"),
    "draws missing": (_edit_blob(lambda b: b["nested"].pop("posterior")),
                      r"tensors\.pt do not make a PoissonSoftplusRegressor \(missing entry "
                      "'posterior'\\)"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_folder_is_one_value_error(saved, tmp_path, damage, capsys):
    folder, _, _ = saved
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    make, match = DAMAGES[damage]
    make(copy)
    with pytest.raises(ValueError, match=match) as info:
        load(copy)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    assert "pickled code ran" not in capsys.readouterr().out


def test_an_intact_folder_still_loads(saved):
    folder, est, X = saved
    back = load(folder)
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    shapes = _meta(folder)["tensor_shapes"]
    assert shapes["arrays/coef_"] == [3] and shapes["nested/posterior/samples/coef"][-1] == 3


def test_a_folder_saved_without_shapes_loads(saved, tmp_path):
    """Folders written before the shapes were recorded still load."""
    folder, est, X = saved
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    meta = _meta(copy)
    del meta["tensor_shapes"]
    _set_meta(copy, meta)
    np.testing.assert_allclose(load(copy).predict(X), est.predict(X), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:the inference budget is too small")
def test_the_network_is_checked_too(tmp_path):
    X, y, _ = make_count_regression(n_samples=60, n_features=2, random_state=0)
    est = BayesianNeuralCountRegressor((4,), num_steps=5, num_samples=5,
                                       random_state=0).fit(X, y)
    est.save(tmp_path / "b")
    shapes = _meta(tmp_path / "b")["tensor_shapes"]
    name = max(shapes, key=lambda k: len(shapes[k]))  # a weight matrix
    keys = name.split("/")

    def grow(blob):
        parent = blob
        for k in keys[:-1]:
            parent = parent[k]
        parent[keys[-1]] = torch.zeros(*[n + 1 for n in shapes[name]])

    _edit_blob(grow)(tmp_path / "b")
    with pytest.raises(ValueError, match=r"tensors\.pt: '.*' has shape"):
        BayesianNeuralCountRegressor.load(tmp_path / "b")
