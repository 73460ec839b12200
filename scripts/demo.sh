#!/usr/bin/env bash
# Set up .venv (scripts/bootstrap.sh) and run `coinfer demo` on the embedded local testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/bootstrap.sh
.venv/bin/coinfer demo "$@"
