"""Policy loading: shipped policies, and every bad policy becomes one PolicyError line naming the key."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from govern.errors import InputError, PolicyError
from govern.policy import Gate, Policy, Risk, load_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"

BASE = """\
version: 1
name: base
admission:
  allowed_methods:
    edit: [rome]
  allow_identity_covariance: false
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
    high: {approvers: 2, auto_approve: false}
  rules:
    - {tier: high, pattern: "(?i)\\\\bceo\\\\b"}
canary:
  gates:
    - {metric: efficacy, op: ">=", threshold: 0.9}
    - {metric: drawdown, op: "<=", threshold: 0.05}
methods:
  rome: {}
"""


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _write_mutated(tmp_path: Path, mutate) -> Path:
    data = copy.deepcopy(yaml.safe_load(BASE))
    mutate(data)
    return _write(tmp_path, yaml.safe_dump(data, sort_keys=False))


def _policy_error(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    msg = str(info.value)
    assert "\n" not in msg, f"PolicyError must be one line, got {msg!r}"
    assert msg.startswith("policy"), msg
    return msg


# --- the base fixture itself and the shipped policies --------------------------------------------


def test_base_fixture_policy_is_valid(tmp_path):
    policy = load_policy(_write(tmp_path, BASE))
    assert isinstance(policy, Policy)
    assert policy.name == "base"
    assert [g.metric for g in policy.canary.gates] == ["efficacy", "drawdown"]


def test_shipped_default_policy():
    policy = load_policy(POLICIES / "default.yaml")
    assert policy.name == "default"
    assert policy.risk.default_tier == "low"
    low = policy.risk.tiers["low"]
    assert low.auto_approve is True and low.approvers == 0
    medium = policy.risk.tiers["medium"]
    assert medium.auto_approve is False and medium.approvers == 1
    assert policy.admission.allowed_methods == {"edit": ["rome"]}
    assert policy.admission.allow_identity_covariance is False
    paraphrase = next(g for g in policy.canary.gates if g.metric == "paraphrase")
    assert paraphrase.when_missing == "skip"


def test_shipped_strict_policy():
    policy = load_policy(POLICIES / "strict.yaml")
    assert policy.name == "strict"
    assert policy.risk.default_tier == "standard"
    standard = policy.risk.tiers["standard"]
    assert standard.approvers == 2 and standard.auto_approve is False
    sensitive = policy.risk.tiers["sensitive"]
    assert sensitive.approvers == 3 and sensitive.auto_approve is False
    assert not any(t.auto_approve for t in policy.risk.tiers.values()), "strict must never auto-approve"
    # only the slices a request may lack (no relation known: no freshness question; no refusal prompts) may skip
    assert all(g.when_missing == "fail" for g in policy.canary.gates if g.metric not in ("freshness", "refusal"))
    assert {g.metric for g in policy.canary.gates if g.compare} >= {"specificity", "probe_specificity", "retention"}
    assert policy.method_config("rome").stats_tokens == 50000


def test_identity_covariance_loads_when_allowed(tmp_path):
    def mutate(d):
        d["admission"]["allow_identity_covariance"] = True
        d["methods"]["rome"] = {"covariance": "identity"}

    policy = load_policy(_write_mutated(tmp_path, mutate))
    assert policy.method_config("rome").covariance == "identity"


# --- bad policies: one line, naming the key path ------------------------------------------------


def test_typo_top_level_key(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("admission:", "admision:")))
    assert "admision: unknown key" in msg


def test_typo_nested_key_with_default(tmp_path):
    def mutate(d):
        d["canary"]["gates"][0]["when_mising"] = "skip"

    msg = _policy_error(_write_mutated(tmp_path, mutate))
    assert "canary.gates.0.when_mising: unknown key" in msg


def test_typo_of_required_nested_key_names_the_typo(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("  gates:", "  gatez:")))
    assert "canary.gatez" in msg


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "inf", "nan"])
def test_non_finite_threshold(tmp_path, value):
    text = BASE.replace("threshold: 0.9}", f"threshold: {value}}}")
    assert value in text
    msg = _policy_error(_write(tmp_path, text))
    assert "canary.gates.0.threshold" in msg


def test_negative_threshold(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("threshold: 0.05}", "threshold: -0.05}")))
    assert "canary.gates.1" in msg
    assert "negative threshold -0.05" in msg


def test_unknown_metric(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("metric: drawdown", "metric: accuracy")))
    assert "canary.gates.1.metric" in msg
    assert "'accuracy'" in msg and "efficacy" in msg


def test_rate_threshold_above_one(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("threshold: 0.9}", "threshold: 1.5}")))
    assert "canary.gates.0" in msg
    assert "efficacy" in msg and "1.5" in msg


def test_ratio_metric_may_exceed_one(tmp_path):
    policy = load_policy(_write(tmp_path, BASE.replace("threshold: 0.05}", "threshold: 1.5}")))
    assert policy.canary.gates[1].threshold == 1.5


def test_unknown_comparator(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace('op: ">="', 'op: "=>"')))
    assert "canary.gates.0.op" in msg


def test_unknown_method_in_allowed_methods(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("edit: [rome]", "edit: [rome, zapper]")))
    assert "admission.allowed_methods" in msg
    assert "'zapper'" in msg


def test_rule_uses_undefined_tier(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("{tier: high,", "{tier: critical,")))
    assert msg.split(": ", 1)[1].startswith("risk:"), msg
    assert "'critical'" in msg and "not defined" in msg


def test_default_tier_undefined(tmp_path):
    msg = _policy_error(_write(tmp_path, BASE.replace("default_tier: low", "default_tier: lowest")))
    assert "risk" in msg and "'lowest'" in msg


def test_auto_approve_with_approvers(tmp_path):
    policy = BASE.replace("{approvers: 0, auto_approve: true}", "{approvers: 1, auto_approve: true}")
    msg = _policy_error(_write(tmp_path, policy))
    assert "risk.tiers.low" in msg
    assert "auto-approve" in msg


def test_invalid_rule_pattern(tmp_path):
    def mutate(d):
        d["risk"]["rules"][0]["pattern"] = "(unclosed"

    msg = _policy_error(_write_mutated(tmp_path, mutate))
    assert "risk.rules.0.pattern" in msg


def test_identity_covariance_not_allowed(tmp_path):
    def mutate(d):
        d["methods"]["rome"] = {"covariance": "identity"}

    msg = _policy_error(_write_mutated(tmp_path, mutate))
    assert "methods.rome.covariance" in msg
    assert "allow_identity_covariance" in msg


def test_empty_gate_list_means_the_request_kinds_default_gates(tmp_path):
    def mutate(d):
        d["canary"]["gates"] = []

    policy = load_policy(_write_mutated(tmp_path, mutate))
    assert [g.describe() for g in policy.gates_for("edit")] == [
        "efficacy >= 1", "specificity non-inferior (margin 0.1)", "probe_specificity non-inferior (margin 0.1)"]
    assert [g.metric for g in policy.gates_for("rollback")] == ["kept_efficacy", "probe_specificity"]


def test_malformed_yaml_names_the_line(tmp_path):
    text = "version: 1\nname: broken\nrisk: [\n  a: b\ncanary: {\n"
    msg = _policy_error(_write(tmp_path, text))
    assert "not valid YAML" in msg
    assert "at line " in msg


def test_malformed_yaml_line_number_is_exact(tmp_path):
    text = "version: 1\nname: x\n  risk: 1\n"  # bad indentation on line 3
    msg = _policy_error(_write(tmp_path, text))
    assert "at line 3" in msg


def test_yaml_list_instead_of_mapping(tmp_path):
    msg = _policy_error(_write(tmp_path, "- name: a\n- name: b\n"))
    assert "must be a YAML mapping" in msg


def test_empty_policy_file(tmp_path):
    msg = _policy_error(_write(tmp_path, ""))
    assert "must be a YAML mapping" in msg


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    msg = _policy_error(missing)
    assert "does not exist" in msg
    assert str(missing) in msg


def test_policy_error_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load_policy(tmp_path / "nope.yaml")


def test_many_problems_are_counted(tmp_path):
    msg = _policy_error(_write(tmp_path, "version: 1\nfoo: 1\n"))
    # name, risk, canary missing + foo unknown
    assert "(and 3 more problems)" in msg


def test_non_utf8_policy_file_is_a_policy_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(BASE.replace("name: base", "name: caf\xe9").encode("latin-1"))
    _policy_error(p)


# --- Gate.holds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">=", 0.5, True), (">=", 0.49, False),
        (">", 0.5, False), (">", 0.51, True),
        ("<=", 0.5, True), ("<=", 0.51, False),
        ("<", 0.5, False), ("<", 0.49, True),
    ],
)
def test_gate_holds_comparators(op, value, expected):
    gate = Gate(metric="specificity", op=op, threshold=0.5)
    assert gate.holds(value) is expected


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_gate_missing_value_skip(missing):
    gate = Gate(metric="paraphrase", op=">=", threshold=0.5, when_missing="skip")
    assert gate.holds(missing) is None


@pytest.mark.parametrize("missing", [None, float("nan")])
@pytest.mark.parametrize("op", [">=", ">", "<=", "<"])
def test_gate_missing_value_fail(missing, op):
    gate = Gate(metric="paraphrase", op=op, threshold=0.5)  # when_missing defaults to fail
    assert gate.when_missing == "fail"
    assert gate.holds(missing) is False


def test_gate_skip_still_judges_present_values():
    gate = Gate(metric="paraphrase", op=">=", threshold=0.5, when_missing="skip")
    assert gate.holds(0.7) is True
    assert gate.holds(0.2) is False


def test_gate_describe():
    assert Gate(metric="drawdown", op="<=", threshold=0.05).describe() == "drawdown <= 0.05"


def test_gate_is_frozen():
    gate = Gate(metric="efficacy", op=">=", threshold=1.0)
    with pytest.raises(ValidationError, match="frozen"):
        gate.threshold = math.nan


# --- Risk.tier_for -------------------------------------------------------------------------------


def _risk() -> Risk:
    return Risk.model_validate(
        {
            "default_tier": "low",
            "tiers": {"low": {"approvers": 0, "auto_approve": True}, "high": {"approvers": 2}},
            "rules": [{"tier": "high", "pattern": r"(?i)\bceo\b"}],
        }
    )


def test_tier_for_default():
    assert _risk().tier_for("Paris", "Paris is the capital of") == "low"


def test_tier_for_rule_matches_subject():
    assert _risk().tier_for("the CEO of Acme", "the CEO of Acme is") == "high"


def test_tier_for_rule_matches_prompt_only():
    assert _risk().tier_for("Acme", "The ceo of Acme is") == "high"


def test_tier_for_respects_word_boundary():
    assert _risk().tier_for("Ceol", "Ceol is a kind of") == "low"


def test_tier_for_first_matching_rule_wins():
    risk = Risk.model_validate(
        {
            "default_tier": "low",
            "tiers": {"low": {"approvers": 0}, "mid": {"approvers": 1}, "high": {"approvers": 2}},
            "rules": [{"tier": "mid", "pattern": "born"}, {"tier": "high", "pattern": "born in"}],
        }
    )
    assert risk.tier_for("Ada", "Ada was born in") == "mid"


def test_shipped_policies_tier_for():
    default = load_policy(POLICIES / "default.yaml")
    strict = load_policy(POLICIES / "strict.yaml")
    assert default.risk.tier_for("Paris", "Paris is the capital of") == "low"
    assert default.risk.tier_for("Ada Lovelace", "Ada Lovelace was born in") == "medium"
    assert strict.risk.tier_for("Paris", "Paris is the capital of") == "standard"
    assert strict.risk.tier_for("Ada Lovelace", "Ada Lovelace said she lived in") == "sensitive"


def test_policy_digest_pins_settings_and_suite_contents_not_formatting_or_place(tmp_path):
    """`govern policy register` matches a pipeline's policy by `Policy.digest`: the same policy elsewhere and
    reformatted matches; another setting, or a suite file with other items, does not."""
    from conftest import TEST_POLICY

    suite = ("items:\n  - {slice: probe, kind: prefers, prompt: \"The capital of France is\", answer: \" Paris\", "
             "foil: \" Rome\"}\n")
    text = TEST_POLICY.replace("canary:\n", "canary:\n  suites: [extra.yaml]\n")
    assert "suites: [extra.yaml]" in text
    digests = {}
    for where, body, suite_text in (("a", text, suite), ("b", "# moved and commented\n" + text, suite),
                                    ("c", text.replace("approvers: 2", "approvers: 0"), suite),
                                    ("d", text, suite.replace("Paris", "Lyon"))):
        d = tmp_path / where
        d.mkdir()
        (d / "extra.yaml").write_text(suite_text)
        (d / "p.yaml").write_text(body)
        digests[where] = load_policy(d / "p.yaml").digest
    assert digests["a"] == digests["b"]
    assert len({digests["a"], digests["c"], digests["d"]}) == 3
