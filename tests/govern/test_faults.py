"""Faults wait, then resume; or fail with one line and change nothing.

Real subprocesses, a real SQLite write lock, real SIGKILLs at named points
(`govern.faults`); a full disk is modelled by the ``GOVERN_FAULT_ENOSPC``
point (mounting a small tmpfs needs privileges CI may not have).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from govern.domain import parse_request
from govern.errors import DatabaseBusy, IntegrityError
from govern.policy import load_policy
from govern.service import Govern
from govern.store import ChangeRow, ModelRow

REPO = Path(__file__).resolve().parents[2]
FACT = {"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"}


def _env(home, **extra: str) -> dict[str, str]:
    return {**os.environ, "GOVERN_HOME": str(home.root), "PYTHONPATH": str(REPO), **extra}


def _cli(home, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "govern.cli", *args], env=_env(home, **env), capture_output=True,
                          text=True, timeout=timeout)


def _hold_write_lock(db: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another connection's write lock on `db`, for `seconds` or until the returned event is set."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(seconds)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=hold)
    t.start()
    assert locked.wait(30)
    return t, release


def test_kill_point_fires_only_when_armed():
    code = "from govern import faults; faults.point('tx.after_commit'); print('alive')"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and "alive" in quiet.stdout
    armed = subprocess.run([sys.executable, "-c", code], env={**env, "GOVERN_KILL_AT": "tx.after_commit"},
                           capture_output=True, text=True, timeout=120)
    assert armed.returncode == -9 and "alive" not in armed.stdout
    second = subprocess.run([sys.executable, "-c", code], env={**env, "GOVERN_KILL_AT": "tx.after_commit#2"},
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0  # only the 2nd hit kills
    typo = subprocess.run([sys.executable, "-c", "from govern import faults; faults.point('tx.aftr')"],
                          env={**env, "GOVERN_KILL_AT": "x"}, capture_output=True, text=True, timeout=120)
    assert typo.returncode != 0 and "unknown fault point" in typo.stderr


def test_write_lock_waits_then_proceeds(gov, monkeypatch, capsys):
    monkeypatch.setenv("GOVERN_DB_WAIT_S", "60")
    before = len(gov.store.audit_events())
    t, _ = _hold_write_lock(gov.home.root / "govern.db", 7.0)  # past SQLite's 5 s busy timeout
    started = time.monotonic()
    gov.note("alice", "user.signed_in", "s", {})
    waited = time.monotonic() - started
    t.join()
    assert waited >= 5.0 and len(gov.store.audit_events()) == before + 1
    assert "waiting for the database" in capsys.readouterr().err


def test_write_lock_past_the_limit_is_one_line_and_writes_nothing(gov, monkeypatch):
    monkeypatch.setenv("GOVERN_DB_WAIT_S", "1")
    gov.set_single_user(True, actor="admin")  # the CLI trusts --as (no token needed for this test)
    before = len(gov.store.audit_events())
    t, release = _hold_write_lock(gov.home.root / "govern.db", 900.0)  # held until the CLI gave up
    try:
        with pytest.raises(DatabaseBusy, match="GOVERN_DB_WAIT_S"):
            gov.note("alice", "user.signed_in", "s", {})
        p = _cli(gov.home, "submit", "edit", "--subject", "Zorblat", "--prompt", "The capital of Zorblat is",
                 "--target", " Paris", "--as", "alice", GOVERN_DB_WAIT_S="1")
    finally:
        release.set()
        t.join()
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: the database stayed locked") and "Traceback" not in p.stderr
    assert len(gov.store.audit_events()) == before and gov.list_requests() == []


def test_full_disk_while_committing_is_one_line_and_writes_nothing(gov):
    gov.set_single_user(True, actor="admin")
    p = _cli(gov.home, "submit", "edit", "--subject", "Zorblat", "--prompt", "The capital of Zorblat is",
             "--target", " Paris", "--as", "alice", GOVERN_FAULT_ENOSPC="tx.before_commit")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip().splitlines()[-1]]
    assert "no space left on device" in p.stderr
    assert gov.list_requests() == []


def test_full_disk_writing_the_change_fails_the_request_cleanly(gov, policy_file, monkeypatch):
    from govern.worker import Worker

    rid = gov.submit([parse_request(FACT)], "alice")[0]
    gov.admit(rid, load_policy(policy_file))
    monkeypatch.setenv("GOVERN_FAULT_ENOSPC", "change.save")
    Worker(gov, "tiny", lease_s=30, poll_s=0.2).run_until_idle({rid})
    r = gov.get_request(rid)
    assert r.state == "failed" and r.error is not None and "no space left on device" in r.error
    assert "\n" not in r.error and "Traceback" not in r.error
    assert list(gov.home.changes.iterdir()) == []  # nothing half-written
    with gov.store.read() as s:
        assert s.exec(ChangeRow.__table__.select()).all() == []


def test_killed_apply_is_taken_over_by_the_next_apply(gov, home, policy_file):
    from rich.console import Console

    from govern.pipeline import run_pipeline, unfinished_requests

    gov.set_single_user(True, actor="admin")
    rid = gov.submit([parse_request(FACT)], "alice")[0]
    p = _cli(home, "apply", "--policy", str(policy_file), GOVERN_KILL_AT="worker.after_claim")
    assert p.returncode == -9, p.stderr
    assert gov.get_request(rid).state == "applying"
    assert unfinished_requests(gov, "tiny") == [rid]  # its worker's process is gone
    out = io.StringIO()
    code = run_pipeline(gov, policy_file, None, actor="p", model=None, device="cpu", console=Console(file=out, width=200))
    assert "taking over 1 request" in out.getvalue()
    assert code == 0 and gov.get_request(rid).state == "promoted", out.getvalue()
    acts = [e for e in gov.store.audit_events() if e.action == "job.lease_expired"]
    assert acts and acts[-1].payload["why"] == "its worker's process is gone"


def test_four_concurrent_model_adds_on_a_fresh_home(tmp_path, tiny_llama_dir):
    from govern.home import Home

    home = Home(tmp_path / "fresh")

    def four(*args: str) -> list[tuple[int, str]]:
        procs = [subprocess.Popen([sys.executable, "-m", "govern.cli", *(a.format(i=i) for a in args)],
                                  env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        return [(p.wait(timeout=900), p.stderr.read() if p.stderr else "") for p in procs]

    # first use: four processes create the database and the MLflow store at once (a home with no users may
    # switch single-user mode on), then four register models at once
    results = four("auth", "single-user", "on", "--as", "admin")
    assert all(rc == 0 for rc, _ in results), results
    results = four("model", "add", "m{i}", str(tiny_llama_dir), "--as", "admin")
    assert all(rc == 0 for rc, _ in results), results
    gov = Govern(home)
    assert sorted(m.name for m in gov.list_models()) == ["m0", "m1", "m2", "m3"]
    assert gov.audit_verify().ok
    assert len(gov.registry.client.search_registered_models()) == 4


def test_every_checkpoint_file_is_pinned(gov):
    base = gov.home.models / "tiny" / "base"
    (base / "generation_config.json").write_text(json.dumps({"max_new_tokens": 1, "do_sample": True}))
    with pytest.raises(IntegrityError, match=r"generation_config\.json"):
        gov.materialise("tiny")
    (base / "generation_config.json").unlink()
    gov.materialise("tiny")
    with gov.store.read() as s:
        pinned = json.loads(gov.store.get_model(s, "tiny").files)
    assert set(pinned) == {p.name for p in base.iterdir()}  # every file, whatever its name


def test_fault_bench_short_run(tmp_path):
    """bench/faults.py, one trial per phase: every count zero after recovery."""
    p = subprocess.run([sys.executable, str(REPO / "bench" / "faults.py"), "--trials", "6", "--seed", "1",
                        "--work", str(tmp_path / "w")], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "| all | 6 |" in p.stdout


def _promoted(gov, policy_file) -> str:
    from govern.worker import Worker

    rid = gov.submit([parse_request(FACT)], "alice")[0]
    assert gov.admit(rid, load_policy(policy_file)).value == "admitted"
    Worker(gov, "tiny").run_until_idle({rid})
    assert gov.get_request(rid).state == "promoted", gov.get_request(rid).error
    return rid


def test_a_self_consistently_rewritten_change_file_is_not_served(gov, home, policy_file):
    """issue 12: the new weights x3 and the file's own hashes recomputed — `govern ask` served it (exit 0). Now every
    load checks the file against the database's digest: ask refuses in one line; rolling the change back (which
    needs no byte of it) still works and gives the base weights."""
    from editors.changes import LowRankUpdate, load_change

    rid = _promoted(gov, policy_file)
    gov.set_single_user(True, actor="admin")
    (ref,) = gov.version("tiny").changes
    change = load_change(ref.path, ref.digest)
    name, (a, b) = next(iter(change.factors.items()))
    LowRankUpdate(change.method, change.tensors, {name: (a * 3, b)}, change.meta).save(ref.path)
    assert load_change(ref.path).digest != ref.digest  # self-consistent: only the database's digest tells
    p = _cli(home, "ask", "The capital of Zorblat is")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "does not match the digest recorded" in p.stderr, p.stderr
    p = _cli(home, "rollback", rid, "--reason", "tampered", "--as", "ops")
    assert p.returncode == 0, p.stderr
    assert gov.get_request(rid).state == "rolled_back" and not gov.version("tiny").changes


def test_a_copied_home_reads_its_own_files(gov, home, policy_file, tmp_path):
    """issue 12: paths in the database were absolute, so a copied home read the original's files."""
    import shutil

    from govern.home import Home

    _promoted(gov, policy_file)
    with gov.store.read() as s:
        stored = [r.path for r in s.exec(select(ModelRow)).all()] + [r.path for r in s.exec(select(ChangeRow)).all()]
    assert stored and not any(Path(p).is_absolute() for p in stored), stored
    copy = tmp_path / "copy"
    shutil.copytree(home.root, copy)
    home.root.rename(tmp_path / "original-moved-away")  # the copy cannot fall back on the original's files
    other = Govern(Home(copy))
    version, _text = other.ask("tiny", "The capital of Zorblat is", 2)
    assert version == other.version("tiny").number and len(other.version("tiny").changes) == 1
    assert all(str(copy) in c.path for c in other.version("tiny").changes)
