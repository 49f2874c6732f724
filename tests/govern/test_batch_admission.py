"""`admit_many`: many requests judged in one transaction, with the outcome of judging them one at a time.

Same checks (conflicts with requests admitted earlier in the same batch, the active-change limit, risk
tiers, expiry), same transitions and audit events per request, idempotent, and an error rolls back only
its own chunk. Each test runs on SQLite and PostgreSQL (`backend_gov`).
"""

from __future__ import annotations

import re

import pytest

from audits.trail import verify_events
from govern.domain import parse_request
from govern.errors import NotFoundError
from govern.policy import load_policy

POLICY = """
version: 1
name: batch
admission:
  allowed_methods: {{edit: [rome]}}
  max_active_edits_per_model: {limit}
risk:
  default_tier: low
  tiers:
    low: {{approvers: 0, auto_approve: true}}
    two: {{approvers: 2, auto_approve: false}}
  rules:
    - {{tier: two, pattern: "(?i)review me"}}
canary:
  gates:
    - {{metric: drawdown, op: "<=", threshold: 1.0}}
"""


def policy(tmp_path, limit: int = 1000):
    path = tmp_path / f"policy-{limit}.yaml"
    path.write_text(POLICY.format(limit=limit))
    return load_policy(path)


def specs(tag: str) -> list[dict]:
    """Requests whose outcomes depend on each other: repeated subjects conflict with the first one admitted."""
    return [
        {"subject": f"{tag} Zorg", "prompt": f"The capital of {tag} Zorg is", "target": " Paris"},
        {"subject": f"{tag} Zorg", "prompt": f"The capital of {tag} Zorg is", "target": " Rome"},  # conflicts with 0
        {"subject": f"{tag} Review me", "prompt": f"{tag} Review me is in", "target": " Oslo"},  # tier two
        {"subject": f"{tag} Quux", "prompt": f"{tag} Quux lives in", "target": " Lima",
         "valid_until": "2001-01-01T00:00:00+00:00"},  # expired: denied
        {"subject": f"{tag} Zorg", "prompt": f"{tag} Zorg was founded by", "target": " Ada"},  # another relation
        {"subject": f"{tag} Blip", "prompt": f"The capital of {tag} Blip is", "target": " Bern"},
        {"subject": f"{tag} Blip", "prompt": f"The capital of {tag} Blip is", "target": " Bern"},  # repeats 5
    ]


def outcome(gov, ids: list[str]) -> list[tuple]:
    """Per request: state, tier, error, and its admission events (ids of the batch written as their index)."""
    index = {rid: f"#{i}" for i, rid in enumerate(ids)}

    def plain(text):
        return re.sub(r"req-[0-9a-f]{10}", lambda m: index.get(m.group(0), "?"), str(text))

    events = [e for e in gov.store.audit_events() if e.subject in index and e.action != "request.submitted"]
    out = []
    for rid in ids:
        r = gov.get_request(rid)
        mine = [(e.action, e.actor, plain(e.payload)) for e in events if e.subject == rid]
        out.append((r.state, r.tier, plain(r.error), mine))
    return out


def test_a_batch_is_judged_as_one_at_a_time(backend_gov, tmp_path):
    gov, p = backend_gov, policy(tmp_path)
    one = gov.submit([parse_request(s) for s in specs("One")], "alice")
    alone = [gov.admit(rid, p) for rid in one]
    many = gov.submit([parse_request(s) for s in specs("Many")], "alice")
    batched = gov.admit_many(many, p, chunk=3)  # chunks of 3: conflicts reach across transactions too
    assert batched == alone
    assert [s.value for s in alone] == ["admitted", "rejected", "admitted", "rejected", "admitted", "admitted",
                                        "rejected"]
    assert outcome(gov, many) == outcome(gov, one)
    assert f"conflicts with active request {many[0]} (admitted)" in gov.get_request(many[1]).error
    assert gov.get_request(many[2]).tier == "two"
    jobs = {j.request_id for j in gov.jobs()}
    assert {rid for rid, s in zip(many, batched, strict=True) if s.value == "admitted"} <= jobs
    assert not {rid for rid, s in zip(many, batched, strict=True) if s.value == "rejected"} & jobs
    assert verify_events(gov.store.audit_events()).ok and gov.audit_verify(mlflow=False).ok


def test_the_active_limit_counts_the_requests_admitted_before_in_the_same_batch(backend_gov, tmp_path):
    gov = backend_gov
    ids = gov.submit([parse_request({"subject": f"S{i}", "prompt": f"S{i} is in", "target": " X"}) for i in range(8)],
                     "alice")
    states = gov.admit_many(ids, policy(tmp_path, limit=5))
    assert [s.value for s in states] == ["admitted"] * 5 + ["rejected"] * 3
    assert "already has 5 active changes (limit 5)" in gov.get_request(ids[5]).error


def test_admitting_again_changes_nothing_and_a_missing_request_rolls_back_its_chunk(backend_gov, tmp_path):
    gov, p = backend_gov, policy(tmp_path)
    ids = gov.submit([parse_request({"subject": f"T{i}", "prompt": f"T{i} is in", "target": " X"}) for i in range(6)],
                     "alice")
    first = gov.admit_many(ids[:2], p)
    n = len(gov.store.audit_events())
    assert gov.admit_many([ids[0], ids[0], ids[1]], p) == [first[0], first[0], first[1]]  # idempotent, duplicates too
    assert len(gov.store.audit_events()) == n and len(gov.jobs()) == 2

    with pytest.raises(NotFoundError, match="no request 'req-missing'"):
        gov.admit_many([ids[2], ids[3], ids[4], "req-missing", ids[5]], p, chunk=2)
    states = [gov.get_request(rid).state for rid in ids[2:]]
    assert states == ["admitted", "admitted", "submitted", "submitted"]  # the first chunk stays, the second is undone
    assert len(gov.store.audit_events()) == n + 2 and len(gov.jobs()) == 4
    assert gov.audit_verify(mlflow=False).ok  # the rolled-back chunk left no event and no anchor behind
