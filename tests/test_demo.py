"""The README's main job, end to end on the real SmolLM2 (slow: about two minutes on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from govern.home import Home
    from govern.service import Govern

    env = {**os.environ, "GOVERN_HOME": str(tmp_path / ".govern"), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "govern.cli", "demo"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "equal=True" in out and "equal=False" not in out
    assert "chain ok=True" in out and "verify ok=True" in out
    assert "identical=True" in out

    gov = Govern(Home(tmp_path / ".govern" / "demo"))
    states = sorted(r.state for r in gov.list_requests())
    assert states == ["promoted", "promoted", "rolled_back"], states
    m, versions = gov.history("smollm2")
    assert m.production_version == 3 and len(versions) == 4
    # the promoted edits answer with the new targets; the rolled-back one answers as before
    for r in gov.list_requests():
        fact, old = r.request().facts[0], r.resolved_facts["target_old"][0]
        _, text = gov.ask(None, fact.prompt, max_new_tokens=4)
        if r.state == "promoted":
            assert text.startswith(fact.target), (fact.prompt, text)
        else:
            assert text.startswith(old), (fact.prompt, text)
    assert gov.audit_verify().ok
