"""bench/switch.py runs and reports bit-identical weights (on the tiny Llama; the README quotes SmolLM2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_switch_benchmark_prints_its_table(tiny_llama_dir):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "switch.py"), "--model", str(tiny_llama_dir), "--layer", "1",
                        "--switches", "4", "--reloads", "2"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| ModelHost.switch (revert/apply) | 4 |" in p.stdout and "| reload from disk + materialise | 2 |" in p.stdout
    assert "bit-identical to a reload: True" in p.stdout
