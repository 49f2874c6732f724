"""The governed loop on a real (tiny, untrained) transformers model with real SQLite and MLflow stores."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from editors.changes import load_change, tensor_sha256
from govern.domain import parse_request
from govern.errors import ConflictError, PermissionDenied
from govern.pipeline import run_pipeline
from govern.store import ChangeRow


def submit(gov, actor="alice", **kw):
    base = {"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris",
            "paraphrases": ["Zorblat's capital city is"], "neighbors": ["The capital of Spain is"]}
    return gov.submit([parse_request({**base, **kw})], actor)[0]


def apply(gov, policy_file) -> int:
    return run_pipeline(gov, policy_file, None, actor="pipeline", model=None, device="cpu",
                        console=Console(file=io.StringIO(), width=200))


def state_dict(loaded):
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def actions(gov):
    return [e.action for e in gov.store.audit_events()]


def test_auto_approved_change_promotes_then_rolls_back_bit_exactly(gov, policy_file):
    rid = submit(gov)
    assert apply(gov, policy_file) == 0
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    m, versions = gov.history("tiny")
    assert m.production_version == 2 and [v.status for v, _ in versions] == ["superseded", "production"]

    base = state_dict(gov.materialise("tiny", 1))
    prod = state_dict(gov.materialise("tiny"))
    with gov.store.read() as s:
        row = s.get(ChangeRow, r.change_id)
    change = load_change(gov.home.resolve(row.path), row.digest)
    assert row.kind == "low_rank" and row.size_bytes < 4 * (64 + 128) + 64  # a rank-one update: two vectors, not a matrix
    touched = set(change.touched())
    assert touched == {"model.layers.1.mlp.down_proj.weight"}
    for k in base:
        assert torch.equal(base[k], prod[k]) == (k not in touched), k

    # MLflow mirrors it: a run with the evidence, a version per candidate, aliases
    client = gov.registry.client
    run = client.get_run(r.mlflow_run_id)
    assert run.data.params["method"] == "rome" and "drawdown" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(r.mlflow_run_id)}
    assert {"canary.json", "card.md", "change", "change.json"} <= arts
    assert gov.registry.aliases("tiny")["production"] == versions[1][0].mlflow_version

    res = gov.rollback(rid, "bob", "test rollback")
    assert (res.from_version, res.to_version) == (2, 1)
    assert res.tensors and all(t["equal"] for t in res.tensors)
    after = state_dict(gov.materialise("tiny"))
    for k in base:
        assert torch.equal(base[k], after[k]), k
    assert gov.get_request(rid).state == "rolled_back"
    assert gov.registry.aliases("tiny")["production"] == versions[0][0].mlflow_version
    assert {"request.submitted", "request.admit", "request.claim", "request.applied", "request.auto_approved",
            "request.promote", "model.promoted", "request.rollback", "model.rolled_back"} <= set(actions(gov))
    assert gov.audit_verify().ok


def test_two_approvers_four_eyes_and_distinct(gov, policy_file):
    rid = submit(gov, subject="Review me Corp", prompt="Review me Corp is based in", target=" Oslo")
    assert apply(gov, policy_file) == 0  # awaiting_review is what the policy allows
    assert gov.get_request(rid).state == "awaiting_review"
    with pytest.raises(PermissionDenied, match="four-eyes"):
        gov.review(rid, "approve", "alice", "my own")
    assert gov.reviews(rid) == []
    assert gov.review(rid, "approve", "bob", "looks right").value == "awaiting_review"
    with pytest.raises(PermissionDenied, match="distinct"):
        gov.review(rid, "approve", "bob", "again")
    assert gov.review(rid, "approve", "carol", "agree").value == "promoted"
    m, _ = gov.history("tiny")
    assert m.production_version == gov.get_request(rid).candidate_version == 2
    assert [rv.reviewer for rv in gov.reviews(rid)] == ["bob", "carol"]


def test_reject_discards_candidate(gov, policy_file):
    rid = submit(gov, subject="Review me Inc", prompt="Review me Inc is based in", target=" Lima")
    apply(gov, policy_file)
    gov.review(rid, "reject", "bob", "wrong source")
    r = gov.get_request(rid)
    assert r.state == "rejected" and r.candidate_version is None
    m, versions = gov.history("tiny")
    assert m.production_version == 1 and m.candidate_version is None
    assert versions[-1][0].status == "discarded"
    assert "candidate" not in gov.registry.aliases("tiny")
    with pytest.raises(ConflictError, match="rejected"):
        gov.review(rid, "approve", "carol", "late")


def test_failed_gate_discards_candidate_and_keeps_production(gov, tmp_path):
    from tests_policy import strict_paraphrase_policy

    p = strict_paraphrase_policy(tmp_path)
    rid = submit(gov, paraphrases=[])  # the policy demands paraphrase evidence
    assert apply(gov, p) == 1
    r = gov.get_request(rid)
    assert r.state == "canary_failed"
    gates = {g.metric: g.result for g in r.report().gates}
    assert gates["paraphrase"] == "fail"
    m, versions = gov.history("tiny")
    assert m.production_version == 1 and versions[-1][0].status == "discarded"
    assert "request.gates_failed" in actions(gov) and "candidate.discarded" in actions(gov)
    assert "candidate" not in gov.registry.aliases("tiny")


def test_conflicting_active_change_is_denied(gov, policy_file):
    first = submit(gov)
    second = submit(gov, target=" Rome", actor="bob")
    apply(gov, policy_file)
    assert gov.get_request(first).state == "promoted"
    r = gov.get_request(second)
    assert r.state == "rejected" and "conflicts with active request" in r.error


def test_stale_candidate_is_rebuilt_on_new_production(gov, policy_file):
    slow = submit(gov, subject="Review me Ltd", prompt="Review me Ltd is based in", target=" Cairo")
    apply(gov, policy_file)  # awaiting review, built on v1
    fast = submit(gov, subject="Quux", prompt="The capital of Quux is", target=" Rome", actor="bob")
    apply(gov, policy_file)  # auto-approved: production moves to its version
    assert gov.get_request(fast).state == "promoted"
    gov.review(slow, "approve", "bob", "ok")
    assert gov.review(slow, "approve", "carol", "ok").value == "admitted"  # stale: re-queued
    assert "candidate.discarded" in actions(gov)
    apply(gov, policy_file)  # rebuilt on the new production
    r = gov.get_request(slow)
    assert r.state == "awaiting_review"
    m, _ = gov.history("tiny")
    with gov.store.read() as s:
        cand = gov.store.get_version(s, "tiny", r.candidate_version)
    assert cand.parent == m.production_version
    gov.review(slow, "approve", "bob", "ok")  # earlier approvals were for the old candidate
    assert gov.review(slow, "approve", "dave", "ok").value == "promoted"
    prod = gov.materialise("tiny")
    assert len(prod.changes) == 2


def test_rollback_refuses_what_is_not_production(gov, policy_file):
    rid = submit(gov)
    apply(gov, policy_file)
    gov.rollback(rid, "bob", "first")
    with pytest.raises(ConflictError, match="only a promoted change"):
        gov.rollback(rid, "bob", "again")
    with pytest.raises(ConflictError, match="base checkpoint"):
        gov.rollback("1", "bob", "base")


def test_delta_hashes_recorded_in_trail_match_weights(gov, policy_file):
    rid = submit(gov)
    apply(gov, policy_file)
    applied = next(e for e in gov.store.audit_events() if e.action == "request.applied")
    prod = dict(gov.materialise("tiny").model.named_parameters())
    for t in applied.payload["tensors"]:
        assert tensor_sha256(prod[t["name"]]) == t["sha256_after"]
    assert applied.subject == rid
