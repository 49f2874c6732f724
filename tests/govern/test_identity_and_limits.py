"""Identity by person, not spelling; settings that would make every gate or edit meaningless are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from govern.domain import parse_request
from govern.errors import ConflictError, PermissionDenied, PolicyError
from govern.policy import load_policy


def _awaiting(gov, tmp_path, submitter="alice"):
    from conftest import TEST_POLICY
    from test_any_change import _apply

    p = tmp_path / "two.yaml"
    p.write_text(TEST_POLICY)
    [rid] = gov.submit([parse_request({"subject": "Review me Corp", "prompt": "Review me Corp is based in",
                                       "target": " Oslo"})], submitter)
    assert _apply(gov, p) == 0
    assert gov.get_request(rid).state == "awaiting_review"
    return rid


# the fourth is "alice" in fullwidth letters
@pytest.mark.parametrize("spelling", ["Alice", "alice ", " ALICE", "\uff41\uff4c\uff49\uff43\uff45", "al\u200bice"])
def test_the_submitter_cannot_approve_under_another_spelling(gov, tmp_path, spelling):
    rid = _awaiting(gov, tmp_path)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        gov.review(rid, "approve", spelling, "looks fine")


def test_one_approver_under_two_spellings_counts_once(gov, tmp_path):
    rid = _awaiting(gov, tmp_path)
    gov.review(rid, "approve", "bob", "ok")
    with pytest.raises(PermissionDenied, match="distinct"):
        gov.review(rid, "approve", "Bob ", "ok again")
    assert gov.get_request(rid).state == "awaiting_review"


def test_user_names_are_unique_after_normalisation(gov):
    gov.add_user("Alice", ["requester"], password="correct horse", actor="root")
    with pytest.raises(ConflictError, match="already exists"):
        gov.add_user("alice", ["admin"], password="correct horse", actor="root")
    assert [u.name for u in gov.list_users()] == ["alice"]
    assert gov.sign_in(" ALICE", "correct horse").name == "alice"


@pytest.mark.parametrize("setting,words", [
    ("methods: {rome: {kl_factor: .inf}}", "methods"),
    ("methods: {rome: {clamp_norm_factor: 1.0e308}}", "methods"),
])
def test_method_settings_must_be_finite_and_sane(tmp_path, setting, words):
    from conftest import TEST_POLICY

    p = tmp_path / "p.yaml"
    p.write_text(TEST_POLICY.split("methods:")[0] + setting + "\n")
    with pytest.raises(PolicyError, match=words):
        load_policy(p)


@pytest.mark.parametrize("margin,words", [("1.0e308", "less than or equal to 10"), ("1.0", "lets any candidate pass")])
def test_absurd_margins_are_refused(tmp_path, margin, words):
    from conftest import TEST_POLICY

    p = tmp_path / "p.yaml"
    p.write_text(TEST_POLICY.replace("    - {metric: drawdown, op: \"<=\", threshold: 1.0}",
                                     f"    - {{metric: specificity, compare: non_inferior, margin: {margin}}}"))
    with pytest.raises(PolicyError, match=words):
        load_policy(p)


@pytest.mark.parametrize("lease", ["0", "-5", "0.5"])
def test_worker_lease_must_leave_room_for_the_heartbeat(tmp_path, lease):
    p = subprocess.run([sys.executable, "-m", "govern.cli", "worker", "--lease", lease], capture_output=True, text=True,
                       env={"GOVERN_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert p.returncode == 2 and "--lease" in p.stderr
    assert not (tmp_path / "h").exists() or not (tmp_path / "h" / "govern.db").exists()
