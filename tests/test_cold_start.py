"""Time to first result: what a MAP fit and the command's help import, and the helpers
that keep them cheap.

``posheads --help`` and ``posheads COMMAND --help`` run in a fresh process and may load
none of numpy, pandas, scipy, scikit-learn, torch, Pyro, arviz or matplotlib (argparse
alone prints them).

A MAP fit (fit, predict, score) runs in a fresh process, and the modules it leaves in
``sys.modules`` are compared with those that numpy, torch, Pyro and scikit-learn import
on their own (a second fresh process): none of the heavy modules that only other paths
need may be added. (``pyro.infer.mcmc`` and ``pandas`` are not on the list: ``import
pyro`` itself imports ``pyro.infer`` and with it MCMC, and scikit-learn imports pandas
where it is installed; they are in the baseline process too.) Timings are in
``benchmarks/bench_cold_start.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from posheads.ops import _compile, _shared

# Loaded only by the paths that need them: arviz (to_inference_data, summaries),
# matplotlib (plots), statsmodels (tests, benchmarks), sympy and inductor (torch's
# symbolic shapes and compiler: never for a small fit), Pyro's forecasting, posheads'
# samplers, BNN, forecasters and diagnostics.
HEAVY = (
    "arviz",
    "matplotlib",
    "pandas",
    "pyro.contrib.forecast",
    "posheads.diagnostics",
    "posheads.estimators.bnn",
    "posheads.estimators.forecasting",
    "posheads.inference.nuts",
    "posheads.inference.svi",
    "posheads.models.forecast",
    "statsmodels",
    "sympy",
    "torch._dynamo",
    "torch._inductor",
)

_BASELINE = "import numpy, torch, pyro, sklearn.linear_model"
_MAP_FIT = """
import numpy as np
from posheads import PoissonSoftplusRegressor
rng = np.random.default_rng(0)
X = rng.standard_normal((500, 4))
y = rng.poisson(np.logaddexp(0.0, 0.5 + X @ [0.3, -0.2, 0.1, 0.0])).astype(float)
est = PoissonSoftplusRegressor().fit(X, y)
est.predict(X)
est.score(X, y)
assert est.n_iter_ > 0
"""


_PRINT = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"


def _modules_after(*steps: str) -> list[set[str]]:
    """The names in ``sys.modules`` after each of ``steps``, run in turn in one fresh
    interpreter."""
    probe = "".join(step + _PRINT for step in steps)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()[-len(steps):]
    return [set(json.loads(line)) for line in lines]


@pytest.fixture(scope="module")
def loaded():
    (baseline,) = _modules_after(_BASELINE)
    fit, then_nuts = _modules_after(_MAP_FIT, "import posheads.inference.nuts")
    return {"baseline": baseline, "fit": fit, "then_nuts": then_nuts}


def test_map_fit_imports_no_heavy_module(loaded):
    added = loaded["fit"] - loaded["baseline"]
    assert "posheads.inference.map" in added  # the probe ran a MAP fit
    assert sorted(m for m in HEAVY if m in added) == []


# ``posheads --help`` and each command's help: argparse alone, no data or model stack.
HELP_HEAVY = ("arviz", "matplotlib", "numpy", "pandas", "pyro", "pyro.infer", "scipy",
              "sklearn", "torch")
_HELP = """
import contextlib, io
from posheads.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    assert main({argv!r}) == 0
assert "usage: posheads" in out.getvalue()
"""
_COMMANDS = ("demo", "fit", "predict", "diagnose", "datasets", "forecast")


def test_help_imports_no_heavy_module():
    """``posheads --help`` and ``posheads COMMAND --help`` (the family choices of ``fit``
    and ``forecast`` included) load none of the data or model stack."""
    steps = [_HELP.format(argv=["--help"])]
    steps += [_HELP.format(argv=[command, "--help"]) for command in _COMMANDS]
    for argv, modules in zip(["--help", *_COMMANDS], _modules_after(*steps), strict=True):
        assert sorted(m for m in HELP_HEAVY if m in modules) == [], argv


def test_help_leaves_family_choices_unread(monkeypatch):
    """The help of ``fit`` and ``forecast`` names the family options by a metavar and
    never reads the registry (reading it imports torch and Pyro); not vacuous: argparse's
    own formatter reads it."""
    import argparse

    from posheads.cli import build_parser
    from posheads.cli.choices import FamilyChoices

    reads = []
    monkeypatch.setattr(FamilyChoices, "_load", lambda self: reads.append(self) or ["x"])
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("fit", "forecast"):
        sub = subparsers.choices[name]
        assert "--model MODEL" in sub.format_help() or "LIKELIHOOD" in sub.format_help()
        assert reads == [], name
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.format_help()
        assert len(reads) == 1, name
        reads.clear()


def test_the_probe_sees_a_heavy_import(loaded):
    """Not vacuous: the same comparison flags a module that a Bayesian path imports."""
    assert "posheads.inference.nuts" in loaded["then_nuts"] - loaded["baseline"]


@pytest.mark.parametrize(
    "shapes",
    [[(3,)], [(2, 3), (3,)], [(4, 1), (1, 5)], [(2, 1, 3), (4, 1), ()], [(0, 3), (1, 3)],
     [(1,), (7,)], [(2, 3), (4,)], [(5, 2), (2, 5)]],
)
def test_broadcast_numel_matches_torch(shapes):
    """The broadcast size computed by hand (torch.broadcast_shapes imports sympy)."""
    sizes = [torch.Size(s) for s in shapes]
    try:
        expected = torch.broadcast_shapes(*sizes).numel()
    except RuntimeError:
        expected = None
    assert _compile._broadcast_numel(sizes) == expected


@pytest.mark.parametrize(
    "a, b", [((2, 3), (3,)), ((2, 3), (1, 3)), ((2, 3), (2, 1)), ((2, 3), ()), ((3,), (2, 3)),
             ((2, 3), (4,)), ((2, 1), (2, 3)), ((0, 3), (1, 3)), ((4, 2, 3), (2, 1))],
)
def test_fits_matches_torch(a, b):
    """``a op= b`` is possible exactly where b broadcasts to a's shape (torch's rule)."""
    try:
        expected = torch.broadcast_shapes(torch.Size(a), torch.Size(b)) == torch.Size(a)
    except RuntimeError:
        expected = False
    assert _shared.fits(torch.zeros(a), torch.zeros(b)) is expected


_ATEN_BITS = {"AVX512": 512, "AVX2": 256}


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in _ATEN_BITS,
                    reason="ATen uses no x86 vector extension here")
def test_cpu_kernels_use_aten_vector_width():
    """The compiled CPU kernels are built for the SIMD width of ATen's own kernels."""
    from torch._inductor import config, cpu_vec_isa

    bits = _ATEN_BITS[torch.backends.cpu.get_cpu_capability()]
    if bits not in {isa.bit_width() for isa in cpu_vec_isa.valid_vec_isa_list()}:
        pytest.skip(f"inductor cannot build {bits}-bit code here")
    options = _compile.kernel_options()
    assert options["cpp.simdlen"] == bits
    assert _compile.kernel_options(tables=True)["cpp.simdlen"] == bits
    with config.patch(options):
        assert cpu_vec_isa.pick_vec_isa().bit_width() == bits
