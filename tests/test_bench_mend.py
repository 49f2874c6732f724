"""The MEND cost benchmark on the tiny Llama, so it cannot rot; and its parameter count against a hand count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.mend_cost import hypernet_parameters  # noqa: E402  (bench/ is a folder of scripts, not a package on the path)


def test_hypernet_count_for_smollm2_shapes():
    # SmolLM2-135M: hidden 576, MLP 1536; last 3 blocks x (gate, up: (1536, 576); down: (576, 1536))
    shapes = [(1536, 576), (1536, 576), (576, 1536)] * 3
    d, r = 576 + 1536, 1920
    layer = 2 * d * r + d  # low-rank factors and bias of one residual layer
    by_hand = 2 * (layer + 2 * 6 * d) + 2 * (layer + 2 * 3 * d) + 9  # two shapes (6 and 3 weights), 9 step sizes
    assert hypernet_parameters(shapes) == by_hand == 32_524_809
    assert hypernet_parameters([(8, 4)]) == 2 * (2 * 12 * 12 + 12 + 2 * 12) + 1  # rank capped at the width


def test_mend_cost_bench_runs(tmp_path, tiny_llama_dir):
    log = tmp_path / "mend.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "mend_cost.py"), "--config-only", str(tiny_llama_dir),
                        "--repeats", "1", "--log", str(log)],
                       check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    text = log.read_text()
    assert text.split("\n", 1)[1] in p.stdout
    for row in ("MEND hypernetwork", "MEND training step, batch 1 (measured)", "ROME edit, identity covariance",
                "MEND edit / ROME edit", "MEND training, EasyEdit's max_iters 100,000"):
        assert row in text, row
