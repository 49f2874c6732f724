#!/usr/bin/env bash
# One command: set up, then run the governed loop end to end on SmolLM2 (CPU, no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/govern demo "$@"
