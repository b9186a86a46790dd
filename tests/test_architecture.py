"""The layering is checked, not claimed: import-linter contracts and the structure report.

posheads installs ``models/`` and ``datasets/`` as ``posheads.models`` and
``posheads.datasets``; import-linter reads a package from one folder, so the tests lay the
installed package out in a temporary folder (copies of the same source files) and run
``lint-imports`` with the contracts of ``pyproject.toml`` on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _installed_layout(dest: Path) -> Path:
    """``dest/posheads`` holding posheads/, models/ and datasets/ as they are installed."""
    ignore = shutil.ignore_patterns("__pycache__", "data", "*.md", ".gitattributes")
    shutil.copytree(ROOT / "posheads", dest / "posheads", ignore=ignore)
    shutil.copytree(ROOT / "models", dest / "posheads" / "models", ignore=ignore)
    shutil.copytree(ROOT / "datasets", dest / "posheads" / "datasets", ignore=ignore)
    return dest


def _lint(folder: Path) -> subprocess.CompletedProcess:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.fail("lint-imports is missing: install the dev extra (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=folder, env=env, capture_output=True, text=True)


def test_import_linter_contracts_hold(tmp_path):
    proc = _lint(_installed_layout(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 4 kept, 0 broken" in proc.stdout


def test_import_linter_catches_an_upward_import(tmp_path):
    """Not vacuous: an ops module importing the estimators breaks the layers contract."""
    folder = _installed_layout(tmp_path)
    shared = folder / "posheads" / "ops" / "_shared.py"
    shared.write_text(shared.read_text() + "\nimport posheads.estimators  # noqa\n")
    proc = _lint(folder)
    assert proc.returncode != 0
    assert "posheads.ops._shared -> posheads.estimators" in proc.stdout


def test_structure_report_counts_are_zero():
    """No family name lists or family-string branches above the registry, no private
    names imported across modules, no import cycles."""
    sys.path.insert(0, str(ROOT))
    try:
        from tools.structure_report import report
    finally:
        sys.path.remove(str(ROOT))
    found = report()
    for key in ("family name lists", "family-string comparisons outside the registry",
                "cross-module private imports", "import cycles (module-level imports)"):
        assert not found[key], (key, found[key])


def test_every_package_is_installed():
    """The explicit package list of pyproject.toml names every package of the tree."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in ((ROOT / "posheads", "posheads"), (ROOT / "models", "posheads.models"),
                      (ROOT / "datasets", "posheads.datasets")):
        for init in top.rglob("__init__.py"):
            parts = init.parent.relative_to(top).parts
            found.add(".".join([name, *parts]))
    assert found == listed
