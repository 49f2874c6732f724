"""The decision rule: absolute and relative (non-inferiority) gates over a canary report.

* An **absolute** gate compares the candidate's metric with a fixed threshold
  (``efficacy >= 0.95``).
* A **relative** gate asks whether the candidate is *not worse than production*
  by more than ``margin`` on the same items: a one-sided paired non-inferiority
  test (``audits.stats.non_inferiority``) of ``H0: mean(cand - prod) <= -margin``.
  All relative gates of one decision form the *family*; their p-values are
  adjusted together (Holm 1979 for family-wise error, Benjamini-Hochberg 1995
  for false discovery rate, or none) and a gate passes when its adjusted
  p-value is at most ``alpha``. A gate that fails names its metric, the
  estimate, the confidence interval and the adjusted p-value.

Besides the gates, :func:`paired_summary` describes every paired metric (mean
difference, bootstrap CI, effect size, two-sided p): the regression table of the
change certificate.

The gate objects come from the policy (`govern.policy.Gate`); this module only
needs their attributes ``metric``, ``op``, ``threshold``, ``compare``,
``margin``, ``when_missing`` and the methods ``holds`` and ``describe``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from audits import stats


class GateLike(Protocol):
    metric: str
    compare: str | None
    margin: float | None
    when_missing: str

    def holds(self, value: float | None) -> bool | None: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class TestPlan:
    """How relative gates are tested: the policy's ``canary`` settings."""

    alpha: float = 0.05
    correction: Literal["holm", "bh", "none"] = "holm"
    test: Literal["bootstrap", "permutation"] = "bootstrap"
    resamples: int = 2000
    seed: int = 0


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def evaluate(gates: list[Any], metrics: dict[str, float | None], scores: dict[str, dict[str, list[float]]],
             plan: TestPlan) -> list[dict[str, Any]]:
    """One result dict per gate, in policy order: gate, metric, value, result (pass/fail/skipped), why."""
    out: list[dict[str, Any]] = []
    family: list[tuple[int, float]] = []  # (index in out, raw p-value)
    for g in gates:
        if getattr(g, "compare", None) is None:
            value = metrics.get(g.metric)
            ok = g.holds(value)
            res = "skipped" if ok is None else ("pass" if ok else "fail")
            why = ("not measured" if value is None else f"{value:.4g} {'meets' if ok else 'misses'} {g.describe()}")
            out.append({"gate": g.describe(), "metric": g.metric, "kind": "absolute", "value": value,
                        "result": res, "why": why if res != "skipped" else "not measured; skipped"})
            continue
        pair = scores.get(g.metric)
        n = len(pair["cand"]) if pair else 0
        if n < 2:
            res = "skipped" if g.when_missing == "skip" else "fail"
            out.append({"gate": g.describe(), "metric": g.metric, "kind": "relative", "value": None, "n": n,
                        "result": res, "why": f"{n} paired item(s); a relative gate needs at least 2"})
            continue
        r = stats.non_inferiority(pair["prod"], pair["cand"], margin=float(g.margin), alpha=plan.alpha,
                                  n_resamples=plan.resamples, seed=plan.seed, method=plan.test)
        out.append({"gate": g.describe(), "metric": g.metric, "kind": "relative", "value": r.diff, "n": r.n,
                    "margin": g.margin, "mean_prod": r.mean_prod, "mean_cand": r.mean_cand, "diff": r.diff,
                    "ci": [r.ci_low, r.ci_high], "effect_size": _finite(r.effect_size), "p_value": r.p_value})
        family.append((len(out) - 1, r.p_value))
    if family:
        raw = [p for _, p in family]
        adjusted = {"holm": stats.holm_adjusted, "bh": stats.bh_adjusted}.get(plan.correction, lambda p: list(p))(raw)
        for (k, _), adj in zip(family, adjusted, strict=True):
            row = out[k]
            ok = adj <= plan.alpha
            row.update(p_adjusted=adj, correction=plan.correction, alpha=plan.alpha, family_size=len(family),
                       result="pass" if ok else "fail")
            verdict = "non-inferior" if ok else "not shown non-inferior"
            row["why"] = (f"{verdict}: diff {row['diff']:+.4f} (95% CI {row['ci'][0]:+.4f}..{row['ci'][1]:+.4f}), "
                          f"margin {row['margin']:g}, p={row['p_value']:.4g}, {plan.correction}-adjusted p={adj:.4g} "
                          f"{'<=' if ok else '>'} {plan.alpha:g} (n={row['n']})")
    return out


def failed(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r['gate']} ({r['why']})" for r in results if r["result"] == "fail"]


def paired_summary(scores: dict[str, dict[str, list[float]]], plan: TestPlan) -> dict[str, dict[str, Any]]:
    """Per paired metric: n, means, diff, bootstrap CI, effect size, two-sided p (regression table)."""
    out: dict[str, dict[str, Any]] = {}
    for metric, pair in scores.items():
        n = len(pair["cand"])
        if n < 2:
            out[metric] = {"n": n, "mean_prod": pair["prod"][0] if n else None, "mean_cand": pair["cand"][0] if n else None}
            continue
        r = stats.paired_bootstrap(pair["prod"], pair["cand"], alpha=plan.alpha, n_resamples=plan.resamples,
                                   seed=plan.seed)
        out[metric] = {"n": r.n, "mean_prod": r.mean_prod, "mean_cand": r.mean_cand, "diff": r.diff,
                       "ci": [r.ci_low, r.ci_high], "effect_size": _finite(r.effect_size), "p_two_sided": r.p_value}
    return out
