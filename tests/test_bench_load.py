"""bench/load.py on small numbers (so it cannot rot): every request stored once, the table, exit 0; each backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_load_bench_runs_and_stores_every_request_once(backend, tmp_path, tiny_llama_dir):
    if backend == "postgresql":
        from conftest import postgres_base_url

        postgres_base_url()  # skips (or fails in CI) without a server
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--requests", "24", "--procs", "4",
                        "--events", "300", "--cli-requests", "1", "--backends", backend, "--model", str(tiny_llama_dir)],
                       check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "PROBLEM" not in out, out
    for row in ("submit, 4 processes at once, a call per request (24)", "submit, in-process, a call per request (24)",
                "submit, in-process, one call (24)", "admit, in-process, a call per request (24, old path)",
                "admit_many, in-process (24)", "submit + admit, CLI (1)", "export, JSON Lines, streamed",
                "verify the export, streamed", "verify the live trail, streamed", "old path: _verify_export_reference"):
        assert re.search(rf"^{backend}\s+{re.escape(row)}", out, re.M), row
    assert "stored once" in out and "FAILED" not in out
    # the export holds the whole chain: 24 concurrent + 1 CLI + 2 x 24 in-process submissions, as many admissions,
    # the model's events, 300 appended
    count = int(re.search(r"export, JSON Lines, streamed \(([\d,]+) events", out).group(1).replace(",", ""))
    assert count >= 24 + 1 + 48 + 48 + 300
