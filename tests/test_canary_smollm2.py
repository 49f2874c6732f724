"""Issue 4's claims on the real model (SmolLM2-135M): the statistical gates let a good edit through and stop
a harmful one naming the failing test; `govern monitor` finds a harmful change forced in past the gates and
rolls back exactly that one; the certificate of a real edit renders with its plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from govern.domain import parse_request
from govern.monitor import check_model
from govern.policy import load_policy
from govern.worker import Worker

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

PERMISSIVE = """
version: 1
name: permissive
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
canary:
  gates:
    - {metric: efficacy, op: ">=", threshold: 1.0}
"""

# subject "The capital" instead of the country: the key ROME rewrites is shared by every capital question
HARMFUL = {"subject": "The capital", "prompt": "The capital of Germany is", "target": " Paris"}
GOOD = {"subject": "France", "prompt": "The capital of France is", "target": " Rome"}


@pytest.fixture(scope="module")
def gov(tmp_path_factory):
    from govern.home import Home
    from govern.service import Govern

    g = Govern(Home(tmp_path_factory.mktemp("issue4") / "home"))
    g.ensure_default_model(log=lambda _m: None)
    return g


def run(gov, fields: dict, policy) -> str:
    [rid] = gov.submit([parse_request(fields)], "alice")
    gov.admit(rid, policy)
    Worker(gov, "smollm2").run_until_idle()
    return rid


def test_good_edit_passes_statistical_gates_and_harmful_one_is_rejected_naming_the_test(gov):
    policy = load_policy(REPO / "policies" / "default.yaml")
    good = gov.get_request(run(gov, GOOD, policy))
    assert good.state == "promoted", good.error
    report = good.report()
    relative = [g for g in report.gates if g.kind == "relative"]
    assert relative and all(g.result == "pass" and g.p_adjusted is not None and g.p_adjusted <= 0.05 for g in relative)
    assert report.report.suite["slices"]["neighbor"] == 60
    # freshness counts an answer about France only (the case: "The capital of Italy is Rome." is not fresh)
    from audits.canary import is_fresh

    (fresh,) = [r for r in report.report.rows if r.slice == "fresh"]
    assert report.metrics["freshness"] == float(is_fresh(fresh.after or "", "Rome", "Paris", "France")), fresh.after

    bad = gov.get_request(run(gov, HARMFUL, policy))
    assert bad.state == "canary_failed"
    assert "probe_specificity non-inferior" in bad.error and "holm-adjusted p=" in bad.error
    # probes moved by about 12%: not shown non-inferior at margin 0.1 (not enough evidence, or shown worse),
    # and not enough evidence fails closed under the default policy
    stopped = [g for g in bad.report().gates if g.kind == "relative" and g.result in ("fail", "insufficient")]
    assert stopped and stopped[0].metric == "probe_specificity" and stopped[0].diff is not None and stopped[0].diff < -0.05
    assert gov.history("smollm2")[0].production_version == 2  # production still has only the good edit

    # the certificate of the real edit: JSON + Markdown + HTML + two plots
    folder = gov.home.root / "certificates" / good.id
    assert {p.name for p in folder.iterdir()} >= {"certificate.json", "certificate.md", "certificate.html",
                                                  "probabilities.png", "regression.png"}


def test_monitor_rolls_back_a_harmful_change_forced_past_the_gates(gov, tmp_path):
    permissive = tmp_path / "permissive.yaml"
    permissive.write_text(PERMISSIVE)
    good_before = gov.history("smollm2")[0].production_version
    forced = gov.get_request(run(gov, HARMFUL, load_policy(permissive)))
    assert forced.state == "promoted", forced.error  # the permissive policy let it in
    bad_version = gov.history("smollm2")[0].production_version

    check = check_model(gov, load_policy(REPO / "policies" / "default.yaml"), "smollm2")
    assert check.actions == [f"breach: rolled back {forced.id} (v{bad_version} -> v{good_before})"]
    assert gov.get_request(forced.id).state == "rolled_back"
    assert gov.history("smollm2")[0].production_version == good_before  # the good edit stays
    assert not check.breached
    _, text = gov.ask(None, "The capital of Germany is", 4)
    assert "Berlin" in text
