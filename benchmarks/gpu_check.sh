#!/usr/bin/env bash
# The one-shot GPU check of issue #15 (what it runs and writes: benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh --out DIR             # on a CUDA machine, < 8 min on one H200; appends the
#                                                 # tables to docs/PERFORMANCE.md (--no-docs: not)
#   benchmarks/gpu_check.sh --dry-run --out DIR   # on a CPU, < 60 s: every code path (tests/test_gpu_check.py)
#
# Python: $PYTHON, else .venv/bin/python, else python3. Wheels in .whl/ (gymnasium and its needs, for the
# env tests on an image without them) are installed into /tmp/genie_site first, offline.
# A hard stop at 490 s backs the script's own deadline (460 s), so the whole check ends inside 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/genie_site .whl/*.whl
  export PYTHONPATH="/tmp/genie_site${PYTHONPATH:+:$PYTHONPATH}"
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec timeout --kill-after=10 490 "$PY" benchmarks/gpu_check.py "$@"
