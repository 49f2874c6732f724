"""One source of truth: MLflow derived from the database by an idempotent reconciler.

* a real SIGKILL right after a committed decision (named kill point), then
  `reconcile` → aliases, run, model version and certificate right; a second
  reconcile changes nothing;
* mlflow.db locked right after a commit: the worker survives, the decision
  stands, the job shows "waiting for MLflow", and reconcile finishes it;
* orphan runs (one left RUNNING), model versions and change files are tagged
  and collected, and nothing a database row names is touched.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from govern.domain import parse_request
from govern.policy import load_policy
from govern.reconcile import WAITING_FOR_MLFLOW, reconcile
from govern.service import Govern
from govern.store import VersionRow
from govern.worker import Worker

REPO = Path(__file__).resolve().parents[2]
FACT = {"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"}


def _admitted(gov: Govern, policy_file: Path) -> str:
    rid = gov.submit([parse_request(FACT)], "alice")[0]
    assert gov.admit(rid, load_policy(policy_file)).value == "admitted"
    return rid


def _mlflow_matches_db(gov: Govern) -> None:
    with gov.store.read() as s:
        m = gov.store.get_model(s, "tiny")
        versions = s.exec(VersionRow.__table__.select()).all()
        prod = gov.store.get_version(s, "tiny", m.production_version or 1)
    assert all(v.mlflow_version for v in versions), versions
    assert gov.registry.aliases("tiny").get("production") == prod.mlflow_version


def test_sigkill_after_commit_then_reconcile(gov, home, policy_file):
    gov.set_single_user(True, actor="admin")  # the CLI's apply acts as 'pipeline' without a token
    rid = _admitted(gov, policy_file)
    env = {**os.environ, "GOVERN_HOME": str(home.root), "PYTHONPATH": str(REPO), "GOVERN_KILL_AT": "decision.after_commit"}
    p = subprocess.run([sys.executable, "-m", "govern.cli", "apply", "--policy", str(policy_file)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stdout + p.stderr  # killed at the named point
    fresh = Govern(home)
    r = fresh.get_request(rid)
    assert r.state == "promoted" and r.mlflow_run_id is None  # the database holds the decision
    with fresh.store.read() as s:
        v2 = fresh.store.get_version(s, "tiny", 2)
    assert v2.mlflow_version is None
    assert fresh.registry.aliases("tiny")["production"] == "1"  # MLflow still shows the old production

    reports = reconcile(fresh)
    _mlflow_matches_db(fresh)
    r = fresh.get_request(rid)
    run = fresh.registry.client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED" and "efficacy" in run.data.metrics
    assert run.data.tags["govern.trail.seq"].isdigit()  # the run anchors the trail's head
    assert reports[0].certificates == [rid]  # the certificate the kill skipped
    assert fresh.certificate_files(rid) is not None
    # idempotent: nothing more to do, no second run or version
    again = reconcile(fresh)[0]
    assert not again.runs and not again.versions and not again.certificates
    assert len(fresh.registry.client.search_model_versions("name='tiny'")) == 2
    assert fresh.audit_verify().ok


def test_mlflow_locked_after_commit_worker_survives(gov, home, policy_file, monkeypatch):
    rid = _admitted(gov, policy_file)
    monkeypatch.setenv("GOVERN_MLFLOW_WAIT_S", "0")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # another process's write lock on mlflow.db, held for the whole job
        c = sqlite3.connect(home.root / "mlflow.db", timeout=30, isolation_level=None)
        c.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(600)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert locked.wait(30)
        w = Worker(Govern(home), "tiny", lease_s=30, poll_s=0.2)
        w.run_until_idle({rid})  # no exception: MLflow cannot fail a committed transition
        r = gov.get_request(rid)
        assert r.state == "promoted", r.error
        job = gov.jobs(rid)[0]
        assert job.state == "done" and job.stage == WAITING_FOR_MLFLOW
        assert "mlflow.pending" in [e.action for e in gov.store.audit_events()]
    finally:
        release.set()
        t.join()
    fresh = Govern(home)
    reconcile(fresh, "tiny")
    _mlflow_matches_db(fresh)
    assert fresh.jobs(rid)[0].stage == "done"
    assert fresh.certificate_files(rid) is not None


def test_orphans_tagged_and_collected(gov, home):
    client = gov.registry.client
    exp = gov.registry.experiment_id
    finished = gov.registry.log_run(name="orphan", tags={"govern.model": "tiny", "govern.kind": "change"},
                                    params={}, metrics={})
    running = client.create_run(exp, tags={"govern.model": "tiny"}).info.run_id  # a killed process's half run
    orphan_mv = client.create_model_version("tiny", source=f"runs:/{finished}/model", run_id=finished)
    stray = home.changes / "change-deadbeef.safetensors"
    stray.write_bytes(b"half")
    leftover = home.changes / "change-x.safetensors.tmp"
    leftover.write_bytes(b"half")
    outside = home.root / "keep-me.safetensors"
    outside.write_bytes(b"mine")
    recorded = home.changes / "change-live.safetensors"  # a change the database names, and its keys sidecar
    recorded.write_bytes(b"change")
    sidecar = home.changes / "change-live.keys.safetensors"
    sidecar.write_bytes(b"keys")
    from govern.store import ChangeRow

    with gov.store.tx() as s:
        s.add(ChangeRow(id="change-live", model="tiny", kind="low_rank", method="memit", digest="0" * 64,
                        path="changes/change-live.safetensors"))
    with gov.store.read() as s:
        v1 = gov.store.get_version(s, "tiny", 1).mlflow_version

    kept = reconcile(gov, "tiny", grace_s=3600)[0]  # all of them are younger than the grace period
    assert not kept.orphan_runs and not kept.orphan_versions and not kept.orphan_files and stray.exists()

    time.sleep(0.05)
    report = reconcile(gov, "tiny", grace_s=0)[0]
    assert set(report.orphan_runs) == {finished, running}
    assert report.orphan_versions == [str(orphan_mv.version)]
    assert set(report.orphan_files) == {stray.name, leftover.name}
    assert not stray.exists() and not leftover.exists() and outside.exists()
    assert recorded.exists() and sidecar.exists()  # a change's sidecar belongs to it
    for rid in (finished, running):
        run = client.get_run(rid)
        assert run.info.lifecycle_stage == "deleted" and "govern.orphan" in run.data.tags
    assert client.get_run(running).info.status == "KILLED"
    assert [str(m.version) for m in client.search_model_versions("name='tiny'")] == [v1]
    assert gov.registry.aliases("tiny")["production"] == v1
    assert not reconcile(gov, "tiny", grace_s=0)[0].orphan_runs  # idempotent
