#!/usr/bin/env bash
# Set up .venv for coinfer on a fresh machine. Idempotent: re-running only installs what is missing.
# torch==2.13.0 is installed *before* the package: on these machines that pin is a CPU build on
# local disk, while an unpinned "torch" requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e '.[test,llm]'
