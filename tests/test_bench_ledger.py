"""The ledger benchmark on tiny shapes (synthetic edits) and on the tiny Llama (real ROME edits), so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mode", ["synthetic", "rome"])
def test_ledger_bench_runs_and_agrees(mode, tmp_path, tiny_llama_dir):
    log = tmp_path / "ledger.log"
    extra = ["--tiny"] if mode == "synthetic" else ["--rome", "--model", str(tiny_llama_dir), "--steps", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "ledger.py"), "--edits", "10", "--snapshot-every", "3",
                        "--repeat", "1", "--reps", "3", "--log", str(log), *extra],
                       check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    text = log.read_text()
    assert text in p.stdout
    for row in ("bytes on disk per edit", "materialise v10, snapshot cache cold / warm", "switch v10->v9",
                "Llama-3-8B-sized, bytes per edit",
                "same bytes in every mode (low-rank, full copies, snapshots cold and warm): yes"):
        assert row in text, row
    assert ("ROME edits" if mode == "rome" else "synthetic rank-one updates") in text
    assert "234.9 MB" in text  # 2 x 4096 x 14336 x 2 bytes: the 8B full-copy figure is arithmetic
