"""Tests for audits.gates: the decision rule of the canary (absolute and relative gates).

Known answers: identical 0/1 scores pass a non-inferiority gate only when there
are enough items (and say how many would be needed otherwise), a clearly worse
candidate fails with the evidence named, a candidate worse by exactly the margin
is "insufficient" (neither shown non-inferior nor shown worse); the
multiple-testing correction makes borderline gates undecided when the family
grows; the test follows the metric's declared score type. Error rates by
simulation live in tests/audits/test_gate_error_rates.py.
Gates are real `govern.policy.Gate` objects; the plan comes from `Canary.plan()`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from audits import stats
from audits.gates import (
    TestPlan as Plan,  # aliased: pytest would try to collect a class named Test*
)
from audits.gates import evaluate, failed, insufficient, paired_summary
from govern.errors import PolicyError
from govern.policy import Canary, Gate, load_policy


def rel(metric: str, margin: float, when_missing: str = "fail") -> Gate:
    return Gate(metric=metric, compare="non_inferior", margin=margin, when_missing=when_missing)


def ab(metric: str, op: str, threshold: float, when_missing: str = "fail") -> Gate:
    return Gate(metric=metric, op=op, threshold=threshold, when_missing=when_missing)


def wins_losses(n: int, losses: int, wins: int) -> dict[str, list[float]]:
    """Paired 0/1 scores: `losses` items 1->0, `wins` items 0->1, the rest 1 for both."""
    rest = n - losses - wins
    return {"prod": [1.0] * losses + [0.0] * wins + [1.0] * rest,
            "cand": [0.0] * losses + [1.0] * wins + [1.0] * rest}


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, written out independently of audits.stats."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


PLAN = Plan(alpha=0.05, correction="holm", test="bootstrap", resamples=2000, seed=0)


# --------------------------------------------------------------------------- relative gates: known answers


def test_identical_binary_scores_with_enough_items_pass():
    rng = np.random.default_rng(7)
    scores = {}
    for metric in ("specificity", "probe_specificity", "paraphrase"):
        x = (rng.random(100) < 0.6).astype(float).tolist()
        scores[metric] = {"prod": x, "cand": list(x)}
    # zero flips of 100 suffice at margin 0.05 even at alpha/3 (83 needed) and at 0.1 (41)
    gates = [rel("specificity", 0.05), rel("probe_specificity", 0.1), rel("paraphrase", 0.1)]
    res = evaluate(gates, {}, scores, Canary(gates=gates).plan())
    assert [r["result"] for r in res] == ["pass"] * 3
    for r, need in zip(res, (83, 41, 41), strict=True):
        assert r["diff"] == 0.0 and r["n"] == 100 and (r["losses"], r["wins"]) == (0, 0)
        assert r["family_size"] == 3 and r["correction"] == "holm" and r["outcome"] == "passed"
        assert r["test"] == "exact-unconditional-score" and r["score_type"] == "binary"
        assert r["p_adjusted"] <= 0.05 and r["ci"][0] > -r["margin"] and r["ci_level"] == pytest.approx(0.9)
        assert r["n_needed"] == need and r["alpha_needed"] == pytest.approx(0.05 / 3)
        assert r["why"].startswith("non-inferior: 0 of 100 ")
    assert failed(res) == [] and insufficient(res) == []


def test_zero_flips_on_few_items_is_insufficient_not_pass():
    """The issue: 'non-inferior at margin 0.1' was shown from 2 unchanged neighbours (p = 1/(B+1))."""
    gate = rel("specificity", 0.1)
    (r,) = evaluate([gate], {}, {"specificity": wins_losses(2, 0, 0)}, PLAN)
    assert r["result"] == "insufficient" and r["outcome"] == "insufficient"
    assert r["p_value"] > 0.5 and r["p_worse"] == 1.0 and r["n_needed"] == 29
    assert r["why"].startswith("not enough evidence: 0 of 2 neighbours changed, which cannot show a loss below "
                               "0.10 at alpha 0.05"), r["why"]
    assert r["why"].endswith("; 29 neighbours would be needed"), r["why"]
    assert failed([r]) == [] and insufficient([r]) == [f"{gate.describe()} ({r['why']})"]
    # the same with 29 neighbours passes
    assert evaluate([gate], {}, {"specificity": wins_losses(29, 0, 0)}, PLAN)[0]["result"] == "pass"
    assert evaluate([gate], {}, {"specificity": wins_losses(28, 0, 0)}, PLAN)[0]["result"] == "insufficient"


def test_n_needed_in_a_family_is_for_alpha_over_m():
    gates = [rel("specificity", 0.1), rel("probe_specificity", 0.05), rel("retention", 0.02)]
    x = np.linspace(-3, -1, 30)
    scores = {"specificity": wins_losses(2, 0, 0), "probe_specificity": wins_losses(40, 0, 0),
              "retention": {"prod": x.tolist(), "cand": x.tolist()}}
    spec, probe, ret = evaluate(gates, {}, scores, PLAN)
    assert spec["n_needed"] == stats.binary_n_needed(0.1, 0.05 / 3) == 41
    assert probe["n_needed"] == stats.binary_n_needed(0.05, 0.05 / 3) == 83
    assert "after holm over 3 relative gates, alpha/3 = 0.0167" in spec["why"]
    assert spec["why"].endswith("41 neighbours would be needed to pass whatever the other gates show")
    # identical continuous scores: no spread, so no test and no n would do
    assert ret["result"] == "insufficient" and ret["p_value"] is None and ret["p_adjusted"] is None
    assert ret["ci"] is None and ret["n_needed"] is None and ret["test"] == "none"
    assert ret["why"].startswith("not enough evidence: all 30 differences are equal")
    assert ret["family_size"] == 3, "an untestable gate stays in the family with p = 1"
    # without correction, alpha itself
    none = evaluate(gates, {}, scores, Plan(correction="none"))
    assert none[0]["n_needed"] == 29 and none[0]["alpha_needed"] == 0.05


def test_clearly_worse_candidate_fails_and_names_the_evidence():
    n = 40
    pair = wins_losses(n, losses=12, wins=0)  # 30% of items flipped 1 -> 0
    gate = rel("specificity", 0.05)
    res = evaluate([gate], {}, {"specificity": pair}, PLAN)
    (r,) = res
    assert r["gate"] == gate.describe() and "specificity" in r["gate"] and "0.05" in r["gate"]
    assert r["result"] == "fail" and r["outcome"] == "failed" and r["kind"] == "relative"
    assert r["diff"] == pytest.approx(-0.3) and r["value"] == pytest.approx(-0.3)
    assert r["mean_prod"] == 1.0 and r["mean_cand"] == pytest.approx(0.7)
    lo, hi = r["ci"]
    assert lo < -0.3 < hi < -0.05, "the whole CI lies below -margin"
    assert r["p_value"] > 0.5 and r["p_adjusted"] > 0.05 and r["p_worse_adjusted"] <= 0.05
    why = r["why"]
    assert why.startswith("worse than production: 12 of 40 neighbours got worse and 0 better")
    assert "diff -0.300" in why
    assert f"90% CI {lo:+.3f}..{hi:+.3f}" in why
    assert "is below -0.05" in why
    assert re.search(r"holm-adjusted p=[0-9.e-]+ <= 0\.05", why), why
    assert "n=40" in why
    assert failed(res) == [f"{gate.describe()} ({why})"] and insufficient(res) == []


def test_small_loss_within_margin_passes_and_loss_equal_to_margin_is_undecided():
    # diff -0.02 with a 0.2 margin is clearly inside; diff -0.2 (= -margin) is neither shown inside nor outside
    inside = evaluate([rel("specificity", 0.2)], {}, {"specificity": wins_losses(100, 2, 0)}, PLAN)[0]
    at_margin = evaluate([rel("specificity", 0.2)], {}, {"specificity": wins_losses(100, 20, 0)}, PLAN)[0]
    beyond = evaluate([rel("specificity", 0.2)], {}, {"specificity": wins_losses(100, 40, 0)}, PLAN)[0]
    assert inside["result"] == "pass" and inside["p_adjusted"] < 0.01
    assert at_margin["result"] == "insufficient" and at_margin["p_value"] > 0.3 and at_margin["p_worse"] > 0.3
    assert at_margin["why"].startswith("not enough evidence: 20 of 100 neighbours got worse and 0 better")
    assert "includes -0.2" in at_margin["why"]
    assert beyond["result"] == "fail"


def _borderline():
    """Three 0/1 score pairs (n=100, margin 0.1) whose raw exact p-values are ~0.025, ~0.033, ~0.039."""
    return {"specificity": wins_losses(100, 6, 3), "probe_specificity": wins_losses(100, 7, 4),
            "paraphrase": wins_losses(100, 10, 8)}


def test_holm_family_makes_a_borderline_gate_undecided():
    scores = _borderline()
    gate = rel("specificity", 0.1)
    alone = evaluate([gate], {}, scores, PLAN)[0]
    p0 = alone["p_value"]
    # the construction: passes alone, but 3 * p0 > alpha
    assert 0.05 / 3 < p0 < 0.04, p0
    assert alone["family_size"] == 1 and alone["p_adjusted"] == p0 and alone["result"] == "pass"

    family = [gate, rel("probe_specificity", 0.1), rel("paraphrase", 0.1)]
    raw = [evaluate([g], {}, scores, PLAN)[0]["p_value"] for g in family]
    assert raw[0] == p0 and all(p0 < p < 0.05 for p in raw[1:]), raw

    by = {c: evaluate(family, {}, scores, Plan(correction=c)) for c in ("holm", "bh", "none")}
    for c, res in by.items():
        assert [r["p_value"] for r in res] == raw, "the raw p-value does not depend on the correction"
        assert all(r["family_size"] == 3 and r["correction"] == c for r in res)
    holm_adj = [r["p_adjusted"] for r in by["holm"]]
    assert holm_adj == pytest.approx(holm_by_hand(raw))
    assert [r["p_worse_adjusted"] for r in by["holm"]] == pytest.approx(holm_by_hand([r["p_worse"] for r in by["holm"]]))
    assert [r["p_adjusted"] for r in by["none"]] == raw

    h, b, n = by["holm"][0], by["bh"][0], by["none"][0]
    assert n["result"] == "pass" and n["p_adjusted"] == p0
    assert h["result"] == "insufficient" and h["p_adjusted"] > 0.05
    assert "holm-adjusted" in h["why"] and h["why"].startswith("not enough evidence")
    assert b["result"] == "pass"
    assert n["p_adjusted"] < b["p_adjusted"] < h["p_adjusted"], "BH lies between no correction and Holm"
    # every Holm-adjusted p of this family exceeds alpha: none of the three is decided
    assert [r["result"] for r in by["holm"]] == ["insufficient"] * 3
    assert [r["result"] for r in by["none"]] == ["pass"] * 3


def test_score_type_picks_the_test_and_plan_reaches_it():
    """Binary metrics get the exact test whatever the plan says; retention gets the plan's resampling test."""
    rng = np.random.default_rng(3)
    prod = rng.normal(-2.0, 0.5, 40)
    ret = {"prod": prod.tolist(), "cand": (prod + rng.normal(-0.005, 0.02, 40)).tolist()}
    pair = wins_losses(60, 3, 2)
    gates = [rel("specificity", 0.1), rel("retention", 0.02)]
    plan = Canary(gates=gates, alpha=0.1, correction="none", test="permutation", resamples=500, seed=3).plan()
    assert plan == Plan(alpha=0.1, correction="none", test="permutation", resamples=500, seed=3)
    spec, r = evaluate(gates, {}, {"specificity": pair, "retention": ret}, plan)
    direct = stats.non_inferiority(ret["prod"], ret["cand"], margin=0.02, score_type="continuous", alpha=0.1,
                                   n_resamples=500, seed=3, method="permutation")
    assert r["test"] == "sign-flip" and r["score_type"] == "continuous"
    assert r["p_value"] == direct.p_value and r["ci"] == [direct.ci_low, direct.ci_high]
    assert r["alpha"] == 0.1 and r["result"] == {"passed": "pass", "failed": "fail"}.get(direct.outcome, "insufficient")
    boot = evaluate(gates, {}, {"specificity": pair, "retention": ret}, Plan(alpha=0.1, correction="none", resamples=500,
                                                                            seed=3))
    assert boot[1]["test"] == "bootstrap-t" and boot[1]["p_value"] != r["p_value"]
    # the binary gate ignores test, resamples and seed: the exact test draws nothing
    assert spec["test"] == boot[0]["test"] == "exact-unconditional-score"
    assert spec["p_value"] == boot[0]["p_value"] == float(stats.exact_paired_pvalues(3, 2, 60, -0.1))


def test_binary_metric_with_non_binary_scores_raises():
    with pytest.raises(ValueError, match="needs 0/1 scores"):
        evaluate([rel("specificity", 0.1)], {}, {"specificity": {"prod": [1.0, 0.5], "cand": [1.0, 1.0]}}, PLAN)


def test_pass_iff_adjusted_p_at_most_alpha():
    """At alpha equal to the adjusted p the gate passes; just below it does not."""
    pair = wins_losses(100, 6, 2)
    p = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, PLAN)[0]["p_adjusted"]
    at = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, Plan(alpha=p))[0]
    below = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, Plan(alpha=p * 0.999))[0]
    assert at["result"] == "pass" and below["result"] == "insufficient"


def test_bootstrap_ci_covers_a_planted_difference():
    planted = 0.05 - 0.15
    n_items, n_sim, covered, widths = 150, 200, 0, []
    for s in range(n_sim):
        rng = np.random.default_rng(40_000 + s)
        u = rng.random(n_items)
        both = (rng.random(n_items) < 0.8).astype(float)
        p, c = both.copy(), both.copy()
        lost, won = u < 0.15, (u >= 0.15) & (u < 0.2)
        p[lost], c[lost], p[won], c[won] = 1.0, 0.0, 0.0, 1.0
        summ = paired_summary({"specificity": {"prod": p.tolist(), "cand": c.tolist()}},
                              Plan(resamples=1000))["specificity"]
        lo, hi = summ["ci"]
        assert lo <= summ["diff"] <= hi
        covered += lo <= planted <= hi
        widths.append(hi - lo)
    slack = 3.0 * math.sqrt(0.05 * 0.95 / n_sim)
    assert covered / n_sim >= 0.95 - slack, f"coverage {covered / n_sim:.3f}"
    # and not by being needlessly wide: ~ 2 * 1.96 * sd(d) / sqrt(n), sd(d)^2 = 0.2 - 0.1^2
    expected = 2 * 1.959964 * math.sqrt(0.2 - planted**2) / math.sqrt(n_items)
    assert float(np.mean(widths)) == pytest.approx(expected, rel=0.1)


def test_paired_summary_fields():
    scores = {"specificity": wins_losses(40, 4, 0), "retention": {"prod": [-2.0], "cand": [-2.5]},
              "paraphrase": {"prod": [], "cand": []}}
    out = paired_summary(scores, PLAN)
    s = out["specificity"]
    assert s["n"] == 40 and s["mean_prod"] == 1.0 and s["mean_cand"] == pytest.approx(0.9)
    assert s["diff"] == pytest.approx(-0.1) and s["ci"][0] <= -0.1 <= s["ci"][1]
    assert s["effect_size"] < 0 and 0 < s["p_two_sided"] < 0.2
    assert out["retention"] == {"n": 1, "mean_prod": -2.0, "mean_cand": -2.5}
    assert out["paraphrase"] == {"n": 0, "mean_prod": None, "mean_cand": None}
    # all differences equal and non-zero: d_z is infinite, reported as None (JSON-safe)
    assert paired_summary({"x": wins_losses(10, 10, 0)}, PLAN)["x"]["effect_size"] is None


# --------------------------------------------------------------------------- absolute gates, missing data, order


def test_absolute_gates_pass_fail_and_missing():
    metrics = {"efficacy": 1.0, "drawdown": 0.2, "paraphrase": None, "freshness": float("nan")}
    gates = [ab("efficacy", ">=", 0.9), ab("drawdown", "<=", 0.05), ab("paraphrase", ">=", 0.5, "skip"),
             ab("paraphrase", ">=", 0.5, "fail"), ab("freshness", ">=", 0.5, "skip"), ab("refusal", ">=", 0.5)]
    res = evaluate(gates, metrics, {}, PLAN)
    assert [r["result"] for r in res] == ["pass", "fail", "skipped", "fail", "skipped", "fail"]
    assert all(r["kind"] == "absolute" for r in res)
    assert res[0]["why"] == "efficacy 1.00 meets the required >= 0.9" and res[0]["value"] == 1.0
    assert res[1]["why"] == "drawdown 0.2 is above the required <= 0.05"
    assert res[2]["why"] == "not measured; skipped"
    assert res[3]["why"] == "not measured" and res[5]["why"] == "not measured"
    assert [r["outcome"] for r in res] == ["passed", "failed", None, "failed", None, "failed"]
    assert all(r["test"] == "threshold" and r["n_needed"] is None for r in res)
    assert failed(res) == ["drawdown <= 0.05 (drawdown 0.2 is above the required <= 0.05)",
                           "paraphrase >= 0.5 (not measured)", "refusal >= 0.5 (not measured)"]
    assert insufficient(res) == []


@pytest.mark.parametrize("op,threshold,value,why", [
    (">=", 1.0, 0.0, "efficacy 0.00 is below the required >= 1"),
    (">", 0.5, 0.5, "efficacy 0.50 is not above the required > 0.5"),
    ("<=", 0.5, 0.75, "efficacy 0.75 is above the required <= 0.5"),
    ("<", 0.5, 0.5, "efficacy 0.50 is not below the required < 0.5"),
    (">=", 0.9, 0.95, "efficacy 0.95 meets the required >= 0.9"),
])
def test_absolute_messages_say_what_was_measured_and_what_was_wanted(op, threshold, value, why):
    assert evaluate([ab("efficacy", op, threshold)], {"efficacy": value}, {}, PLAN)[0]["why"] == why


@pytest.mark.parametrize("op,threshold,value,expected", [
    (">=", 0.5, 0.5, "pass"), (">", 0.5, 0.5, "fail"), ("<=", 0.1, 0.1, "pass"), ("<", 0.1, 0.1, "fail"),
])
def test_absolute_gate_boundaries(op, threshold, value, expected):
    assert evaluate([ab("specificity", op, threshold)], {"specificity": value}, {}, PLAN)[0]["result"] == expected


@pytest.mark.parametrize("pair", [None, {"prod": [], "cand": []}])
def test_relative_gate_with_no_items_follows_when_missing(pair):
    scores = {} if pair is None else {"specificity": pair}
    skip, fail = evaluate([rel("specificity", 0.05, "skip"), rel("specificity", 0.05, "fail")], {}, scores, PLAN)
    assert skip["result"] == "skipped" and fail["result"] == "fail"
    assert skip["outcome"] is None and fail["outcome"] == "failed"
    for r in (skip, fail):
        assert r["n"] == 0 and r["value"] is None
        assert r["why"] == "not measured: no paired items"
        assert "family_size" not in r, "an untested gate is not part of the family"
        # two relative gates: n_needed at alpha / 2
        assert r["n_needed"] == stats.binary_n_needed(0.05, 0.025) == 73 and r["test"] == "exact-unconditional-score"


def test_relative_gate_with_one_item_is_not_enough_evidence_whatever_when_missing_says():
    scores = {"specificity": {"prod": [1.0], "cand": [0.0]}}
    for r in evaluate([rel("specificity", 0.05, "skip"), rel("specificity", 0.05, "fail")], {}, scores, PLAN):
        assert r["result"] == "insufficient" and r["outcome"] == "insufficient" and r["n"] == 1
        assert r["why"] == "not enough evidence: 1 neighbour cannot show a loss below 0.05; 73 would be needed"


def test_results_keep_policy_order_and_family_excludes_skipped():
    scores = {"specificity": wins_losses(100, 0, 0), "probe_specificity": wins_losses(50, 20, 0),
              "retention": {"prod": [], "cand": []}}  # not measured
    gates = [rel("probe_specificity", 0.05), ab("efficacy", ">=", 0.9), rel("retention", 0.1, "skip"),
             rel("specificity", 0.05), ab("drawdown", "<=", 0.1, "skip")]
    res = evaluate(gates, {"efficacy": 1.0}, scores, PLAN)
    assert [r["gate"] for r in res] == [g.describe() for g in gates]
    assert [r["metric"] for r in res] == ["probe_specificity", "efficacy", "retention", "specificity", "drawdown"]
    assert [r["result"] for r in res] == ["fail", "pass", "skipped", "pass", "skipped"]
    assert res[0]["diff"] == pytest.approx(-0.4) and res[3]["diff"] == 0.0, "each row got its own test"
    assert res[0]["family_size"] == res[3]["family_size"] == 2


# --------------------------------------------------------------------------- policy validation


POLICY = """\
version: 1
name: gates
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
canary:
  gates:
    - {metric: efficacy, op: ">=", threshold: 0.9}
    - GATE
"""


def _policy_error(tmp_path: Path, gate: str = "{metric: specificity, compare: non_inferior, margin: 0.05}",
                  canary_extra: str = "") -> str:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.replace("GATE", gate) + canary_extra, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"policy {p}"), msg
    return msg


def test_relative_gate_policy_loads(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.replace("GATE", "{metric: specificity, compare: non_inferior, margin: 0.05}")
                 + "  alpha: 0.1\n  correction: bh\n  neighbors: 46\n", encoding="utf-8")
    policy = load_policy(p)
    g = policy.canary.gates[1]
    assert (g.compare, g.margin, g.op, g.threshold) == ("non_inferior", 0.05, None, None)
    assert policy.canary.plan() == Plan(alpha=0.1, correction="bh")


@pytest.mark.parametrize("gate,key,words", [
    ("{metric: specificity, op: '>=', threshold: 0.9, compare: non_inferior, margin: 0.05}", "canary.gates.1",
     "not both"),
    ("{metric: specificity, op: '>=', threshold: 0.9, margin: 0.05}", "canary.gates.1", "not both"),
    ("{metric: specificity}", "canary.gates.1", "needs op and threshold"),
    ("{metric: specificity, when_missing: skip}", "canary.gates.1", "needs op and threshold"),
    ("{metric: drawdown, compare: non_inferior, margin: 0.05}", "canary.gates.1", "no per-item scores"),
    ("{metric: target_prob, compare: non_inferior, margin: 0.05}", "canary.gates.1", "no per-item scores"),
    ("{metric: specificity, compare: non_inferior, margin: -0.05}", "canary.gates.1.margin", "greater than 0"),
    ("{metric: specificity, compare: non_inferior, margin: 0}", "canary.gates.1.margin", "greater than 0"),
    ("{metric: specificity, compare: non_inferior, margin: .nan}", "canary.gates.1.margin", "finite"),
    ("{metric: specificity, compare: non_inferior, margin: .inf}", "canary.gates.1.margin", "finite"),
    ("{metric: specificity, compare: non_inferior}", "canary.gates.1", "needs both"),
    ("{metric: specificity, margin: 0.05}", "canary.gates.1", "needs both"),
    ("{metric: specificity, compare: superior, margin: 0.05}", "canary.gates.1.compare", "non_inferior"),
    ("{metric: specificity, op: '>=', threshold: 1.5}", "canary.gates.1", "rate in [0, 1]"),
    ("{metric: refusal, op: '>=', threshold: -0.1}", "canary.gates.1", "rate in [0, 1]"),
    ("{metric: specificity, op: '>='}", "canary.gates.1", "needs both op and threshold"),
])
def test_bad_gate_is_one_policy_error_naming_the_key(tmp_path, gate, key, words):
    msg = _policy_error(tmp_path, gate)
    assert f": {key}: " in msg, msg
    assert words in msg, msg


@pytest.mark.parametrize("extra,key", [
    ("  alpha: 0\n", "canary.alpha"), ("  alpha: 0.5\n", "canary.alpha"), ("  alpha: 1.2\n", "canary.alpha"),
    ("  alpha: -0.05\n", "canary.alpha"), ("  alpha: .nan\n", "canary.alpha"),
    ("  correction: bonferroni\n", "canary.correction"), ("  test: ttest\n", "canary.test"),
    ("  resamples: 10\n", "canary.resamples"), ("  seed: -1\n", "canary.seed"),
    ("  neighbors: 501\n", "canary.neighbors"), ("  alpah: 0.05\n", "canary.alpah"),
])
def test_bad_canary_setting_is_one_policy_error_naming_the_key(tmp_path, extra, key):
    msg = _policy_error(tmp_path, canary_extra=extra)
    assert f": {key}: " in msg, msg


GOOD_SUITE = """\
name: extra
items:
  - {slice: neighbor, kind: keeps, prompt: "The capital of Spain is"}
"""


def test_suite_paths_resolve_relative_to_the_policy_file(tmp_path, monkeypatch):
    pdir = tmp_path / "conf"
    (pdir / "suites").mkdir(parents=True)
    (pdir / "suites" / "extra.yaml").write_text(GOOD_SUITE, encoding="utf-8")
    (pdir / "more.jsonl").write_text('{"slice": "probe", "kind": "keeps", "prompt": "Water boils at"}\n')
    p = pdir / "policy.yaml"
    p.write_text(POLICY.replace("GATE", "{metric: specificity, compare: non_inferior, margin: 0.05}")
                 + f"  neighbors: 60\n  suites: [suites/extra.yaml, more.jsonl, {pdir / 'more.jsonl'}]\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the policy's folder
    policy = load_policy(p)
    want = [str((pdir / "suites" / "extra.yaml").resolve()), str((pdir / "more.jsonl").resolve()), str(pdir / "more.jsonl")]
    assert policy.canary.suites == want
    assert all(Path(s).is_absolute() for s in policy.canary.suites)
    # a policy loaded from its own folder with a relative path gives the same result
    monkeypatch.chdir(pdir)
    assert load_policy("policy.yaml").canary.suites[:2] == want[:2]


@pytest.mark.parametrize("content,words", [
    ("name: x\nitems:\n  - {slice: neighbour, kind: keeps, prompt: p}\n", "unknown slice 'neighbour'"),
    ("items: [1, 2]\n", "item 1: must be a mapping"),
    ("items: {a: 1}\n", "must be a mapping with an 'items' list"),
    (None, "does not exist"),
])
def test_malformed_suite_file_makes_load_policy_fail_naming_it(tmp_path, content, words):
    suite = tmp_path / "bad_suite.yaml"
    if content is not None:
        suite.write_text(content, encoding="utf-8")
    (tmp_path / "ok.yaml").write_text(GOOD_SUITE, encoding="utf-8")
    msg = _policy_error(tmp_path, canary_extra="  suites: [ok.yaml, bad_suite.yaml]\n")
    assert ": canary.suites.1: " in msg, msg
    assert str(suite) in msg and words in msg, msg


def test_a_gate_the_suites_cannot_show_is_refused_with_the_number_of_missing_items(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.replace("GATE", "{metric: specificity, compare: non_inferior, margin: 0.05}")
                 + "  alpha: 0.1\n  correction: bh\n  neighbors: 20\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    msg = str(info.value)
    assert "canary.gates.1" in msg and "needs at least 46 neighbours" in msg and "26 missing" in msg
    assert "raise canary.neighbors" in msg and "\n" not in msg
