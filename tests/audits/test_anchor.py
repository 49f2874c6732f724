"""The trail's head anchored outside the database: truncation, emptying and appended forgeries are caught.

Each tamper case below verified as ok before anchoring (the chain alone cannot
see the end of the trail move); each must now fail and say why.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from audits.trail import Anchor, check_anchors, make_event, read_export, render_jsonl, verify_events
from audits.trail.export import make_footer

REPO = Path(__file__).resolve().parents[2]


def _chain(n: int) -> list:
    events, prev = [], None
    for i in range(n):
        prev = make_event(prev, ts="2026-12-01T00:00:00+00:00", actor="a", action="x", subject=str(i), payload={"i": i})
        events.append(prev)
    return events


# -- the pure check ---------------------------------------------------------------------------
def test_check_anchors_cases():
    ev = _chain(5)
    head = Anchor(seq=5, head_hash=ev[-1].hash, count=5, where="the head file", complete=True)
    assert check_anchors(ev, [head]) is None
    assert check_anchors(ev, []) is None
    cut = check_anchors(ev[:3], [head])
    assert cut is not None and not cut.ok and cut.first_bad_seq == 4 and "cut off the end" in (cut.reason or "")
    empty = check_anchors([], [head])
    assert empty is not None and "emptied" in (empty.reason or "")
    forged = [*ev, make_event(ev[-1], ts="2026-12-01T00:00:00+00:00", actor="mallory", action="x", subject="s",
                              payload={})]
    appended = check_anchors(forged, [head])
    assert appended is not None and appended.first_bad_seq == 6 and "appended outside govern" in (appended.reason or "")
    # an incomplete source (MLflow tags lag) never flags the tail, but still catches truncation and rewrites
    lagging = Anchor(seq=3, head_hash=ev[2].hash, count=3, where="MLflow run r")
    assert check_anchors(ev, [lagging]) is None
    assert check_anchors(ev[:2], [lagging]) is not None
    rewritten = [*_chain(5)[:2], make_event(_chain(5)[1], ts="2026-12-01T00:00:00+00:00", actor="m", action="x",
                                            subject="z", payload={})]
    bad = check_anchors(rewritten, [lagging])
    assert bad is not None and bad.first_bad_seq == 3 and "rewritten" in (bad.reason or "")


# -- the live trail of a real home -----------------------------------------------------------------
def _db(gov) -> sqlite3.Connection:
    return sqlite3.connect(gov.home.root / "govern.db")


def _forge_after_head(gov) -> None:
    head = gov.store.audit_events()[-1]
    ev = make_event(head, ts=head.ts, actor="mallory", action="request.approve", subject="req-x", payload={})
    with _db(gov) as c:
        c.execute("INSERT INTO audit_events (seq, ts, actor, action, subject, payload, prev_hash, hash) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (ev.seq, ev.ts, ev.actor, ev.action, ev.subject, json.dumps(ev.payload), ev.prev_hash, ev.hash))


def test_live_trail_truncated_emptied_or_appended_fails(gov):
    for i in range(3):
        gov.note("alice", "user.signed_in", f"s{i}", {"i": i})
    assert gov.audit_verify().ok
    n = len(gov.store.audit_events())
    assert json.loads((gov.home.root / "trail.head").read_text())["seq"] == n

    with _db(gov) as c:  # cut the tail: the chain that is left is still a valid chain
        c.execute("DELETE FROM audit_events WHERE seq = ?", (n,))
    assert verify_events(gov.store.audit_events()).ok  # what the old check saw
    res = gov.audit_verify()
    assert not res.ok and res.first_bad_seq == n and "cut off the end" in (res.reason or "")

    with _db(gov) as c:
        c.execute("DELETE FROM audit_events")
    res = gov.audit_verify()
    assert not res.ok and "emptied" in (res.reason or "")


def test_forged_event_appended_after_head_fails(gov):
    gov.note("alice", "user.signed_in", "s", {})
    _forge_after_head(gov)
    assert verify_events(gov.store.audit_events()).ok
    res = gov.audit_verify()
    assert not res.ok and "appended outside govern" in (res.reason or "")


def test_mlflow_anchor_catches_truncation_without_the_head_file(gov):
    from govern.reconcile import reconcile

    gov.note("alice", "user.signed_in", "s", {})
    reconcile(gov, "tiny")  # tags the registered model with the head
    n = len(gov.store.audit_events())
    (gov.home.root / "trail.head").unlink()  # the attacker removes the file too
    with _db(gov) as c:
        c.execute("DELETE FROM audit_events WHERE seq >= ?", (n - 1,))
    res = gov.audit_verify()
    assert not res.ok and "MLflow" in (res.reason or "")


def test_export_with_events_the_database_lacks_is_refused(gov, tmp_path):
    gov.note("alice", "user.signed_in", "s", {})
    out = tmp_path / "trail.jsonl"
    gov.audit_export(out, "jsonl")
    assert gov.audit_verify(out).ok
    events, _ = read_export(out)
    forged = make_event(events[-1], ts=events[-1].ts, actor="mallory", action="request.approve", subject="x", payload={})
    events.append(forged)  # re-sealed: the file on its own verifies
    out.write_text(render_jsonl(events, make_footer(events, exported_at=events[-1].ts)))
    from audits.trail import verify_export

    assert verify_export(out).ok
    res = gov.audit_verify(out)
    assert not res.ok and res.first_bad_seq == forged.seq and "not in the database" in (res.reason or "")


def test_cli_verify_exits_1_on_a_truncated_trail(gov):
    gov.set_single_user(True, actor="admin")  # `audit verify` needs an auditor: --as is trusted in single-user mode
    gov.note("alice", "user.signed_in", "s", {})
    n = len(gov.store.audit_events())
    with _db(gov) as c:
        c.execute("DELETE FROM audit_events WHERE seq = ?", (n,))
    env = {**os.environ, "GOVERN_HOME": str(gov.home.root), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "govern.cli", "audit", "verify", "--as", "admin"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "cut off the end" in p.stderr and "Traceback" not in p.stderr
