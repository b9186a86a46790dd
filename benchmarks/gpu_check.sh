#!/usr/bin/env bash
# GPU check: the CUDA tests and the op benchmark on CUDA, in one go (a few minutes).
#
# Usage (from anywhere, with posheads installed in the active environment):
#     bash benchmarks/gpu_check.sh            # or PYTHON=/path/to/python bash ...
#
# Runs every test whose id names CUDA (the `cuda`-marked tests and the tests parametrised
# over devices by tests/conftest.py DEVICES or tests/_reference.py devices()), with
# compiled kernels (Triton) included, then benchmarks/bench_ops.py on 10M float32
# elements on the GPU, which prints the times, the ratios to a device-to-device copy and
# the targets. Exits non-zero when CUDA is missing, a test fails or the benchmark fails.
set -euo pipefail

PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False)" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

echo "== CUDA tests =="
# -k cuda: test ids containing 'cuda' (device parameters and CUDA-only tests); -rs lists
# what was skipped, so a silently skipped CUDA test shows up.
"$PYTHON" -m pytest -q -rs -p no:cacheprovider -k cuda tests

echo "== op benchmark (CUDA) =="
# Peak memory on CUDA is read from the allocator, so it costs little.
"$PYTHON" benchmarks/bench_ops.py --device cuda --n 10000000 --repeat 20
