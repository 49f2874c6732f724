"""Tests for audits.gates: the decision rule of the canary (absolute and relative gates).

Known answers: identical models pass every non-inferiority gate, a clearly worse
candidate fails with the evidence named; the multiple-testing correction makes a
borderline gate fail when the family grows; and, by simulation over many seeded
datasets, a candidate that is truly worse by exactly the margin passes at most
at the declared error rate, while an equally good one passes most of the time.
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
from audits.gates import evaluate, failed, paired_summary
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


def test_identical_scores_pass_every_relative_gate():
    rng = np.random.default_rng(7)
    scores = {}
    for metric in ("specificity", "probe_specificity", "paraphrase"):
        x = (rng.random(30) < 0.6).astype(float).tolist()
        scores[metric] = {"prod": x, "cand": list(x)}
    scores["retention"] = {"prod": (-rng.random(30) * 3).tolist()}
    scores["retention"]["cand"] = list(scores["retention"]["prod"])
    gates = [rel("specificity", 0.05), rel("probe_specificity", 0.02), rel("paraphrase", 0.1), rel("retention", 0.01)]
    res = evaluate(gates, {}, scores, Canary(gates=gates).plan())
    assert [r["result"] for r in res] == ["pass"] * 4
    for r in res:
        assert r["diff"] == 0.0 and r["ci"] == [0.0, 0.0] and r["n"] == 30
        assert r["family_size"] == 4 and r["correction"] == "holm"
        # no resampled mean can reach the margin: the smallest attainable p, 1/(B+1)
        assert r["p_value"] == pytest.approx(1 / 2001)
        assert r["p_adjusted"] <= 0.05
        assert r["why"].startswith("non-inferior: diff +0.0000")
    assert failed(res) == []


def test_clearly_worse_candidate_fails_and_names_the_evidence():
    n = 40
    pair = wins_losses(n, losses=12, wins=0)  # 30% of items flipped 1 -> 0
    gate = rel("specificity", 0.05)
    res = evaluate([gate], {}, {"specificity": pair}, PLAN)
    (r,) = res
    assert r["gate"] == gate.describe() and "specificity" in r["gate"] and "0.05" in r["gate"]
    assert r["result"] == "fail" and r["kind"] == "relative"
    assert r["diff"] == pytest.approx(-0.3) and r["value"] == pytest.approx(-0.3)
    assert r["mean_prod"] == 1.0 and r["mean_cand"] == pytest.approx(0.7)
    lo, hi = r["ci"]
    assert lo < -0.3 < hi < -0.05, "the whole CI lies below -margin"
    assert r["p_value"] > 0.5 and r["p_adjusted"] > 0.05
    why = r["why"]
    assert why.startswith("not shown non-inferior")
    assert "diff -0.3000" in why
    assert f"95% CI {lo:+.4f}..{hi:+.4f}" in why
    assert "margin 0.05" in why
    assert re.search(r"holm-adjusted p=[0-9.e-]+ > 0\.05", why), why
    assert "(n=40)" in why
    msgs = failed(res)
    assert msgs == [f"{gate.describe()} ({why})"]


def test_small_loss_within_margin_passes_and_equal_loss_fails():
    # diff -0.02 with a 0.2 margin is clearly inside; diff -0.2 (= -margin) is not shown non-inferior
    inside = evaluate([rel("specificity", 0.2)], {}, {"specificity": wins_losses(100, 2, 0)}, PLAN)[0]
    at_margin = evaluate([rel("specificity", 0.2)], {}, {"specificity": wins_losses(100, 20, 0)}, PLAN)[0]
    assert inside["result"] == "pass" and inside["p_adjusted"] < 0.01
    assert at_margin["result"] == "fail" and at_margin["p_value"] > 0.3


def _borderline():
    """Three 0/1 score pairs (n=100, margin 0.1) whose raw p-values are ~0.018, ~0.034, ~0.034."""
    return {"specificity": wins_losses(100, 6, 2), "probe_specificity": wins_losses(100, 7, 3),
            "paraphrase": wins_losses(100, 10, 8)}


def test_holm_family_makes_a_borderline_gate_fail():
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
    assert [r["p_adjusted"] for r in by["none"]] == raw

    h, b, n = by["holm"][0], by["bh"][0], by["none"][0]
    assert n["result"] == "pass" and n["p_adjusted"] == p0
    assert h["result"] == "fail" and h["p_adjusted"] > 0.05
    assert "holm-adjusted" in h["why"] and "not shown non-inferior" in h["why"]
    assert b["result"] == "pass"
    assert n["p_adjusted"] < b["p_adjusted"] < h["p_adjusted"], "BH lies between no correction and Holm"
    # every Holm-adjusted p of this family exceeds alpha: all three fail together
    assert [r["result"] for r in by["holm"]] == ["fail"] * 3
    assert [r["result"] for r in by["none"]] == ["pass"] * 3


def test_plan_from_policy_reaches_the_test():
    """alpha, test, resamples and seed of `canary` are the ones the gate's test runs with."""
    pair = wins_losses(30, 3, 2)
    gates = [rel("specificity", 0.1)]
    plan = Canary(gates=gates, alpha=0.1, correction="none", test="permutation", resamples=500, seed=3).plan()
    assert plan == Plan(alpha=0.1, correction="none", test="permutation", resamples=500, seed=3)
    r = evaluate(gates, {}, {"specificity": pair}, plan)[0]
    direct = stats.non_inferiority(pair["prod"], pair["cand"], margin=0.1, alpha=0.1, n_resamples=500, seed=3,
                                   method="permutation")
    assert r["p_value"] == direct.p_value and r["ci"] == [direct.ci_low, direct.ci_high]
    assert r["alpha"] == 0.1 and r["result"] == ("pass" if direct.p_value <= 0.1 else "fail")
    boot = stats.non_inferiority(pair["prod"], pair["cand"], margin=0.1, alpha=0.1, n_resamples=500, seed=3)
    assert boot.p_value != direct.p_value, "the two tests differ here, so the comparison above can fail"


def test_pass_iff_adjusted_p_at_most_alpha():
    """At alpha equal to the adjusted p the gate passes; just below it fails."""
    pair = wins_losses(100, 6, 2)
    p = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, PLAN)[0]["p_adjusted"]
    at = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, Plan(alpha=p))[0]
    below = evaluate([rel("specificity", 0.1)], {}, {"specificity": pair}, Plan(alpha=p * 0.999))[0]
    assert at["result"] == "pass" and below["result"] == "fail"


# --------------------------------------------------------------------------- error rates by simulation


def _paired_bernoulli(rng: np.random.Generator, n: int, lose: float, win: float, base: float = 0.8):
    """Realistic paired 0/1 scores: mostly agreeing items, a share `lose` of 1->0 and `win` of 0->1.

    The true mean difference cand - prod is exactly ``win - lose``.
    """
    u = rng.random(n)
    both = (rng.random(n) < base).astype(float)
    prod, cand = both.copy(), both.copy()
    lost, won = u < lose, (u >= lose) & (u < lose + win)
    prod[lost], cand[lost] = 1.0, 0.0
    prod[won], cand[won] = 0.0, 1.0
    return prod.tolist(), cand.tolist()


def _slack(rate: float, trials: int) -> float:
    return 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


N_SIM, N_ITEMS, MARGIN = 400, 150, 0.1
SIM_PLAN = Plan(alpha=0.05, correction="holm", resamples=1000, seed=0)


def test_no_false_pass_when_candidate_is_worse_by_exactly_the_margin():
    """H0 true at its boundary (mean diff = -margin): the gate passes at most alpha of the time."""
    gate = rel("specificity", MARGIN)
    passes = {0.05: 0, 0.10: 0}
    for s in range(N_SIM):
        p, c = _paired_bernoulli(np.random.default_rng(10_000 + s), N_ITEMS, lose=0.15, win=0.05)
        for alpha in passes:
            r = evaluate([gate], {}, {"specificity": {"prod": p, "cand": c}}, Plan(alpha=alpha, resamples=1000))[0]
            passes[alpha] += r["result"] == "pass"
    for alpha, k in passes.items():
        rate = k / N_SIM
        assert rate <= alpha + _slack(alpha, N_SIM), f"alpha={alpha}: passed {rate:.3f} of truly inferior candidates"
    assert passes[0.05] <= passes[0.10], "a larger alpha never passes fewer"
    assert passes[0.10] > 0, "at the boundary the gate is not trivially conservative"


def test_equally_good_candidate_passes_most_of_the_time_and_no_false_alarm():
    """Same distribution, independent noise: non-inferiority passes (power); two-sided p<0.05 at ~5%."""
    gate = rel("specificity", MARGIN)
    passes = alarms = 0
    for s in range(N_SIM):
        p, c = _paired_bernoulli(np.random.default_rng(20_000 + s), N_ITEMS, lose=0.1, win=0.1)
        scores = {"specificity": {"prod": p, "cand": c}}
        passes += evaluate([gate], {}, scores, SIM_PLAN)[0]["result"] == "pass"
        alarms += paired_summary(scores, SIM_PLAN)["specificity"]["p_two_sided"] < 0.05
    # normal approximation of the power: sd(d) = sqrt(0.2), z = margin / (sd / sqrt(n)) ~ 2.74 -> ~0.86
    assert passes / N_SIM >= 0.75, f"power {passes / N_SIM:.3f}"
    assert abs(alarms / N_SIM - 0.05) <= _slack(0.05, N_SIM), f"two-sided false alarm rate {alarms / N_SIM:.3f}"


def test_family_error_rate_is_controlled_by_holm_not_without_correction():
    """Three relative gates, each candidate metric worse by exactly its margin: P(any gate passes)."""
    gates = [rel("specificity", MARGIN), rel("probe_specificity", MARGIN), rel("paraphrase", MARGIN)]
    n_sim, any_pass = 250, {"holm": 0, "none": 0}
    for s in range(n_sim):
        rng = np.random.default_rng(30_000 + s)
        scores = {}
        for g in gates:
            p, c = _paired_bernoulli(rng, 100, lose=0.15, win=0.05)
            scores[g.metric] = {"prod": p, "cand": c}
        for corr in any_pass:
            res = evaluate(gates, {}, scores, Plan(correction=corr, resamples=1000))
            any_pass[corr] += any(r["result"] == "pass" for r in res)
    holm_rate, none_rate = any_pass["holm"] / n_sim, any_pass["none"] / n_sim
    assert holm_rate <= 0.05 + _slack(0.05, n_sim), f"family-wise false pass rate with Holm {holm_rate:.3f}"
    assert none_rate > holm_rate, "without correction three chances pass more often"


def test_bootstrap_ci_covers_a_planted_difference():
    planted = 0.05 - 0.15
    n_sim, covered, widths = 200, 0, []
    for s in range(n_sim):
        p, c = _paired_bernoulli(np.random.default_rng(40_000 + s), N_ITEMS, lose=0.15, win=0.05)
        summ = paired_summary({"specificity": {"prod": p, "cand": c}}, SIM_PLAN)["specificity"]
        lo, hi = summ["ci"]
        assert lo <= summ["diff"] <= hi
        covered += lo <= planted <= hi
        widths.append(hi - lo)
    assert covered / n_sim >= 0.95 - _slack(0.05, n_sim), f"coverage {covered / n_sim:.3f}"
    # and not by being needlessly wide: ~ 2 * 1.96 * sd(d) / sqrt(n), sd(d)^2 = 0.2 - 0.1^2
    expected = 2 * 1.959964 * math.sqrt(0.2 - planted**2) / math.sqrt(N_ITEMS)
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
    assert res[0]["why"] == "1 meets efficacy >= 0.9" and res[0]["value"] == 1.0
    assert res[1]["why"] == "0.2 misses drawdown <= 0.05"
    assert res[2]["why"] == "not measured; skipped"
    assert res[3]["why"] == "not measured" and res[5]["why"] == "not measured"
    assert failed(res) == ["drawdown <= 0.05 (0.2 misses drawdown <= 0.05)", "paraphrase >= 0.5 (not measured)",
                           "refusal >= 0.5 (not measured)"]


@pytest.mark.parametrize("op,threshold,value,expected", [
    (">=", 0.5, 0.5, "pass"), (">", 0.5, 0.5, "fail"), ("<=", 0.1, 0.1, "pass"), ("<", 0.1, 0.1, "fail"),
])
def test_absolute_gate_boundaries(op, threshold, value, expected):
    assert evaluate([ab("specificity", op, threshold)], {"specificity": value}, {}, PLAN)[0]["result"] == expected


@pytest.mark.parametrize("pair", [None, {"prod": [], "cand": []}, {"prod": [1.0], "cand": [0.0]}])
def test_relative_gate_with_fewer_than_two_items(pair):
    scores = {} if pair is None else {"specificity": pair}
    n = 0 if pair is None else len(pair["cand"])
    skip, fail = evaluate([rel("specificity", 0.05, "skip"), rel("specificity", 0.05, "fail")], {}, scores, PLAN)
    assert skip["result"] == "skipped" and fail["result"] == "fail"
    for r in (skip, fail):
        assert r["n"] == n and r["value"] is None
        assert r["why"] == f"{n} paired item(s); a relative gate needs at least 2"
        assert "family_size" not in r, "an untested gate is not part of the family"


def test_results_keep_policy_order_and_family_excludes_skipped():
    scores = {"specificity": wins_losses(50, 0, 0), "probe_specificity": wins_losses(50, 20, 0),
              "retention": {"prod": [-1.0], "cand": [-1.0]}}
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
                 + "  alpha: 0.1\n  correction: bh\n", encoding="utf-8")
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
                 + f"  suites: [suites/extra.yaml, more.jsonl, {pdir / 'more.jsonl'}]\n", encoding="utf-8")
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
