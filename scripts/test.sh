#!/usr/bin/env bash
# Set up a fresh machine for development and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
bash scripts/setup_vllm.sh  # .venv-vllm for the vLLM engine's tests (a no-op once made)
exec "${PYTHON:-python3}" -m pytest -q "$@"
