#!/usr/bin/env bash
# Set up .venv (scripts/bootstrap.sh) and run the whole test suite plus the lint gate.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests benchmarks experiments
.venv/bin/python -m pytest -q "$@"
