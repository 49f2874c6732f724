"""A few real country-capital edits on SmolLM2 through the benchmark script (CI runs 3; the README's figures use 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_rome_countries_few_edits(tmp_path):
    out = tmp_path / "r.json"
    env = {**os.environ, "GOVERN_HOME": str(tmp_path / ".govern"), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "rome_countries.py"), "--n", "3", "--configs", "default",
                        "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "efficacy" in p.stdout  # the table was printed
    r = json.loads(out.read_text())["default"]
    assert r["edits"] == 3
    assert r["efficacy"] == 1.0
    assert r["paraphrase"] >= 0.5
    assert r["specificity"] >= 0.8 and r["probe_specificity"] >= 0.9
    assert abs(r["drawdown"]) < 0.02


def test_gpu_edit_tiny_on_cpu(tmp_path):
    """bench/gpu_edit.py end to end on tiny shapes (CPU): every shape and dtype, a finite and effective ROME update."""
    out = tmp_path / "g.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_edit.py"), "--tiny", "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "finite+eff" in p.stdout  # the table was printed
    rows = json.loads(out.read_text())
    rome = [r for r in rows if r["method"] == "rome"]
    assert {(r["shape"], r["dtype"]) for r in rome} == {("gpt2-xl-tiny", "float32"), ("llama3-8b-tiny", "float16"),
                                                        ("llama3-8b-tiny", "bfloat16")}
    assert all(r["finite_effective"] and r["s_per_edit"] > 0 for r in rome)
    memit = [r for r in rows if r["method"] == "memit"]
    assert memit and all(r["edits"] == 10 for r in memit)  # --tiny caps the batch sizes at 10, once each
