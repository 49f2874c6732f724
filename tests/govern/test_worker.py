"""The worker under failure: a SIGKILL mid-edit loses nothing and never leaks a half-applied change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import TEST_POLICY
from govern.domain import parse_request
from govern.policy import load_policy
from govern.store import ChangeRow, VersionRow
from govern.worker import Worker

REPO = Path(__file__).resolve().parents[2]
# a long optimisation (no early stop) so the kill lands inside the edit
SLOW = TEST_POLICY.replace("rome: {stats_tokens: 2000, context_prefixes: 2, steps: 8}",
                           "rome: {stats_tokens: 2000, context_prefixes: 32, steps: 500, early_stop_nll: 0.0}")


def test_sigkill_mid_edit_then_reclaimed(gov, home, tmp_path):
    assert SLOW != TEST_POLICY
    policy_path = tmp_path / "slow.yaml"
    policy_path.write_text(SLOW)
    rid = gov.submit([parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"})],
                     "alice")[0]
    assert gov.admit(rid, load_policy(policy_path)).value == "admitted"
    base = {k: v.detach().clone() for k, v in gov.materialise("tiny").model.state_dict().items()}

    env = {**os.environ, "GOVERN_HOME": str(home.root), "PYTHONPATH": str(REPO)}
    gov.set_single_user(True, actor="admin")  # `govern worker` needs the service role, or single-user mode
    proc = subprocess.Popen([sys.executable, "-m", "govern.cli", "worker", "--model", "tiny", "--lease", "3"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = gov.jobs(rid)[0]
            if job.state == "running" and job.stage == "optimise":
                break
            assert proc.poll() is None, "worker exited early"
            assert job.state != "done", "the job finished before the kill; make it slower"
            time.sleep(0.2)
        else:
            raise AssertionError(f"worker never reached the optimisation: {gov.jobs(rid)[0]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    # nothing of the half-done edit is visible
    r = gov.get_request(rid)
    assert r.state == "applying" and r.candidate_version is None
    m, versions = gov.history("tiny")
    assert m.production_version == 1 and len(versions) == 1
    with gov.store.read() as s:
        assert s.exec(ChangeRow.__table__.select()).all() == []
        assert len(s.exec(VersionRow.__table__.select()).all()) == 1
    now = gov.materialise("tiny").model.state_dict()
    assert all(torch.equal(now[k], base[k]) for k in base)
    assert gov.audit_verify().ok

    # a new worker waits out the dead one's lease, claims the job again and finishes it
    fast = tmp_path / "fast.yaml"
    fast.write_text(TEST_POLICY)
    with gov.store.tx() as s:  # finish quicker: the retry uses the policy stored at admission, shortened here
        req = gov.store.get_request(s, rid)
        req.policy = load_policy(fast).model_dump_json()
        s.add(req)
    Worker(gov, "tiny", lease_s=3, poll_s=0.2).run_until_idle({rid})
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    job = gov.jobs(rid)[0]
    assert job.state == "done" and job.attempts == 2
    acts = [e.action for e in gov.store.audit_events()]
    assert "job.lease_expired" in acts and "request.requeue" in acts
    assert acts.count("request.claim") == 2 and acts.count("request.applied") == 1
    prod = gov.materialise("tiny")
    assert len(prod.changes) == 1
    assert gov.audit_verify().ok


def test_apply_waits_for_a_running_worker(gov, home, policy_file):
    """`govern apply` hands the jobs to a live `govern worker` and reports its outcome."""
    import io

    from rich.console import Console

    from govern.pipeline import run_pipeline
    from govern.worker import live_workers

    env = {**os.environ, "GOVERN_HOME": str(home.root), "PYTHONPATH": str(REPO)}
    gov.set_single_user(True, actor="admin")  # `govern worker` needs the service role, or single-user mode
    proc = subprocess.Popen([sys.executable, "-m", "govern.cli", "worker", "--model", "tiny", "--lease", "5"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not live_workers(gov, "tiny") and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.2)
        rid = gov.submit([parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is",
                                         "target": " Paris"})], "alice")[0]
        out = io.StringIO()
        assert run_pipeline(gov, policy_file, None, actor="p", model=None, device="cpu",
                            console=Console(file=out, width=200)) == 0
        assert "a worker serves tiny" in out.getvalue()
        assert gov.get_request(rid).state == "promoted"
        claim = next(e for e in gov.store.audit_events() if e.action == "request.claim")
        assert claim.actor.startswith("worker-") and str(proc.pid) in claim.actor
    finally:
        proc.terminate()
        proc.wait(timeout=30)
