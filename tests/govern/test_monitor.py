"""Validity windows, cascading rollback, monitoring and certificates on the tiny model (real SQLite + MLflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from govern.errors import ConflictError
from govern.monitor import check_model, parse_every
from govern.policy import load_policy
from govern.store import now
from test_loop import actions, apply, state_dict, submit


def promoted(gov, policy_file, **kw) -> str:
    rid = submit(gov, **kw)
    assert apply(gov, policy_file) == 0
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    return rid


def test_expired_change_is_rolled_back_on_time_and_not_before(gov, policy_file):
    until = now() + timedelta(hours=1)
    rid = promoted(gov, policy_file, valid_until=until.isoformat())
    policy = load_policy(policy_file)
    base = state_dict(gov.materialise("tiny", 1))

    early = check_model(gov, policy, "tiny", at=until - timedelta(seconds=1))
    assert early.actions == [] and gov.get_request(rid).state == "promoted"

    late = check_model(gov, policy, "tiny", at=until + timedelta(seconds=1))
    assert gov.get_request(rid).state == "rolled_back"
    assert late.production_before == 2 and late.production_after == 1
    assert late.actions and late.actions[0].startswith(f"expired: rolled back {rid}")
    ev = [e for e in gov.store.audit_events() if e.action == "model.rolled_back"][-1]
    assert ev.actor == "monitor" and "valid_until" in ev.payload["reason"] and all(t["equal"] for t in ev.payload["tensors"])
    after = state_dict(gov.materialise("tiny"))
    assert all(torch.equal(base[k], after[k]) for k in base)
    assert gov.audit_verify().ok


def test_expired_change_below_a_newer_one_cascades_and_the_newer_one_is_rebuilt(gov, policy_file):
    until = now() + timedelta(hours=1)
    old = promoted(gov, policy_file, valid_until=until.isoformat())
    new = promoted(gov, policy_file, subject="Quenfar", prompt="The capital of Quenfar is", target=" Rome",
                   paraphrases=[], neighbors=[])
    assert gov.history("tiny")[0].production_version == 3

    check = check_model(gov, load_policy(policy_file), "tiny", at=until + timedelta(seconds=1))
    assert gov.get_request(old).state == "rolled_back"
    assert gov.get_request(new).state == "admitted"  # taken off and re-queued
    assert f"re-queued {new}" in check.actions[0]
    m, versions = gov.history("tiny")
    assert m.production_version == 1
    assert {v.number: v.status for v, _ in versions} == {1: "production", 2: "rolled_back", 3: "rebased"}

    # the worker rebuilds the newer change on the new production: it passes the canary again
    assert apply(gov, policy_file) == 0
    r = gov.get_request(new)
    assert r.state == "promoted", r.error
    m, versions = gov.history("tiny")
    v = next(v for v, _ in versions if v.number == m.production_version)
    assert v.parent == 1 and v.change_ids == [r.change_id]
    assert [e for e in gov.request_events(new) if e.action == "request.rebase"]
    assert gov.audit_verify().ok


def test_rolling_back_a_change_under_another_canaries_the_version_without_it_before_production_moves(gov, policy_file):
    from govern.worker import Worker

    first = promoted(gov, policy_file)
    second = promoted(gov, policy_file, subject="Quenfar", prompt="The capital of Quenfar is", target=" Rome",
                      paraphrases=[], neighbors=[])
    before = gov.history("tiny")[0].production_version
    res = gov.rollback(first, "carol", "wrong")
    assert res.job_id is not None and res.to_version is None and gov.get_request(first).state == "rolling_back"
    assert gov.history("tiny")[0].production_version == before  # nothing moves before the canary
    with pytest.raises(ConflictError, match="already being rolled back"):
        gov.rollback(first, "carol", "again", cascade=True)
    Worker(gov, "tiny").run_until_idle({first})
    assert gov.get_request(first).state == "rolled_back" and gov.get_request(second).state == "promoted"
    m, versions = gov.history("tiny")
    prod = next(v for v, _ in versions if v.number == m.production_version)
    assert prod.change_ids == [gov.get_request(second).change_id] and prod.parent == before


def test_change_valid_later_waits_approved_then_monitor_promotes_it(gov, policy_file):
    start = now() + timedelta(hours=2)
    rid = submit(gov, valid_from=start.isoformat())
    apply(gov, policy_file)
    r = gov.get_request(rid)
    assert r.state == "approved" and gov.history("tiny")[0].production_version == 1
    assert "promotion.deferred" in actions(gov)
    policy = load_policy(policy_file)
    assert check_model(gov, policy, "tiny", at=start - timedelta(minutes=1)).actions == []
    check = check_model(gov, policy, "tiny", at=start + timedelta(minutes=1))
    assert gov.get_request(rid).state == "promoted"
    assert check.actions == [f"valid from now: promoted {rid} to v2"]


def test_request_already_expired_is_denied_at_admission(gov, policy_file):
    rid = submit(gov, valid_until=(now() - timedelta(minutes=1)).isoformat(),
                 valid_from=(now() - timedelta(hours=1)).isoformat())
    apply(gov, policy_file)
    r = gov.get_request(rid)
    assert r.state == "rejected" and "already passed" in r.error


def test_monitor_check_is_audited_and_triggers_hold_on_an_unchanged_model(gov, tmp_path):
    pol = tmp_path / "p.yaml"
    from conftest import TEST_POLICY

    pol.write_text(TEST_POLICY + "rollback_triggers:\n  - {metric: probe_specificity, op: \">=\", threshold: 1.0}\n"
                   "  - {metric: retention, compare: non_inferior, margin: 0.01}\n")
    check = check_model(gov, load_policy(pol), "tiny")
    # identical models: the binary trigger is shown; the continuous one has no spread to test (not a breach)
    assert not check.breached and [t["result"] for t in check.triggers] == ["pass", "insufficient"]
    assert check.metrics["probe_specificity"] == 1.0 and check.metrics["retention"] == 0.0
    ev = [e for e in gov.store.audit_events() if e.action == "monitor.check"]
    assert len(ev) == 1 and ev[0].payload["breached"] is False and ev[0].subject == "tiny"


def test_monitor_rolls_back_a_breaching_change(gov, tmp_path):
    """Drift forced in: a destructive change admitted under a permissive policy is found and rolled back."""
    from conftest import TEST_POLICY

    permissive = tmp_path / "permissive.yaml"
    permissive.write_text(TEST_POLICY.replace(
        "  rome: {stats_tokens: 2000, context_prefixes: 2, steps: 8}",
        "  rome: {covariance: identity, clamp_norm_factor: 100, weight_decay: 0, kl_factor: 0, lr: 5, steps: 20,"
        " early_stop_nll: 0, context_prefixes: 2}").replace(
        "  max_active_edits_per_model: 5", "  max_active_edits_per_model: 5\n  allow_identity_covariance: true"))
    rid = promoted(gov, permissive)
    assert gov.get_request(rid).report().metrics["probe_specificity"] < 1.0  # it really moved the probes

    monitor_policy = tmp_path / "monitor.yaml"
    monitor_policy.write_text(TEST_POLICY + "rollback_triggers:\n  - {metric: probe_specificity, op: \">=\", threshold: 1.0}\n")
    check = check_model(gov, load_policy(monitor_policy), "tiny")
    assert gov.get_request(rid).state == "rolled_back"
    assert check.actions == [f"breach: rolled back {rid} (v2 -> v1)"]
    assert check.breached is False and check.production_after == 1  # the re-check after the rollback holds
    checks = [e for e in gov.store.audit_events() if e.action == "monitor.check"]
    assert [c.payload["breached"] for c in checks] == [True, False]
    assert "probe_specificity" in checks[0].payload["triggers"][0]["why"]
    rolled = [e for e in gov.store.audit_events() if e.action == "model.rolled_back"][-1]
    assert rolled.actor == "monitor" and rolled.payload["reason"].startswith("rollback trigger breached: probe_specificity")
    assert gov.audit_verify().ok


def test_certificate_issued_at_each_decision_verifiable_and_in_mlflow(gov, policy_file):
    from audits.certificate import verify_digest

    rid = promoted(gov, policy_file)
    folder = gov.home.root / "certificates" / rid
    cert = json.loads((folder / "certificate.json").read_text())
    assert cert["state"] == "promoted" and verify_digest(cert)
    for key in ("F1_target_and_evidence", "F2_time_window", "F3_method_and_constraints", "F4_verification",
                "F5_regression", "F6_rollback_point_and_impact", "F7_audit"):
        assert key in cert
    assert cert["F6_rollback_point_and_impact"]["parent_version"] == 1
    assert cert["F6_rollback_point_and_impact"]["tensors"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert [e["action"] for e in cert["F7_audit"]["events"]][:2] == ["request.submitted", "request.admit"]
    md = (folder / "certificate.md").read_text()
    assert "## F5 Regression" in md and "![regression](regression.png)" in md
    assert (folder / "regression.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in (folder / "certificate.html").read_text()
    arts = {a.path for a in gov.registry.client.list_artifacts(gov.get_request(rid).mlflow_run_id, "certificate")}
    assert "certificate/certificate.json" in arts

    gov.rollback(rid, "carol", "test")
    again = json.loads((folder / "certificate.json").read_text())
    assert again["state"] == "rolled_back" and again["digest"] != cert["digest"]
    issued = [e for e in gov.store.audit_events() if e.action == "certificate.issued"]
    assert [e.payload["state"] for e in issued] == ["promoted", "rolled_back"]
    assert issued[-1].payload["digest"] == again["digest"]

    tampered = dict(again)
    tampered["F1_target_and_evidence"] = {**again["F1_target_and_evidence"], "submitted_by": "mallory"}
    assert not verify_digest(tampered)


def test_certificate_cli_verify_and_errors(gov, policy_file, tmp_path):
    rid = promoted(gov, policy_file)
    env = {**os.environ, "GOVERN_HOME": str(gov.home.root)}
    env.pop("GOVERN_TOKEN", None)
    cli = [sys.executable, "-m", "govern.cli"]
    nobody = subprocess.run([*cli, "certificate", rid, "--out", str(tmp_path / "c")], env=env, capture_output=True, text=True)
    assert nobody.returncode == 2 and "no users yet" in nobody.stderr and not (tmp_path / "c").exists()
    gov.set_single_user(True, actor="admin")  # issuing a certificate needs a role; --verify needs none
    out = subprocess.run([*cli, "certificate", rid, "--out", str(tmp_path / "c")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "c" / "certificate.json"
    ok = subprocess.run([*cli, "certificate", "--verify", str(path)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    cert = json.loads(path.read_text())
    cert["F2_time_window"]["valid_until"] = "2099-01-01T00:00:00"
    path.write_text(json.dumps(cert))
    bad = subprocess.run([*cli, "certificate", "--verify", str(path)], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "does not match its digest" in bad.stdout
    missing = subprocess.run([*cli, "certificate", "req-nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "req-nope" in missing.stderr
    every = subprocess.run([*cli, "monitor", "--every", "soon"], env=env, capture_output=True, text=True)
    assert every.returncode == 2 and "30s, 10m or 1h" in every.stderr


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("10m", 600), ("1h", 3600), ("45", 45)])
def test_parse_every(text, seconds):
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-5m", "nan", "inf", "m", "10 parsecs"])
def test_parse_every_rejects(text):
    from govern.errors import InputError

    with pytest.raises(InputError):
        parse_every(text)


def test_certificate_before_any_evidence_is_a_clear_error(gov):
    rid = submit(gov)
    with pytest.raises(ConflictError, match="no canary evidence yet"):
        gov.certificate(rid)
    assert Path(gov.home.root / "certificates" / rid).exists() is False
