"""The decision rule: absolute and relative (non-inferiority) gates over a canary report.

* An **absolute** gate compares the candidate's metric with a fixed threshold
  (``efficacy >= 0.95``): ``"pass"`` or ``"fail"``.
* A **relative** gate asks whether the candidate is *not worse than production*
  by ``margin`` or more on the same items (``audits.stats.non_inferiority``). The
  test is picked by the metric's declared score type (``audits.metrics``):
  the exact unconditional test for paired 0/1 scores, the bootstrap-t (or, with
  ``TestPlan.test = "permutation"``, the sign-flip test) for continuous ones.
  It has three answers:

  - ``"pass"``: non-inferiority shown, the family-adjusted ``p_value <= alpha``;
  - ``"fail"``: the candidate is shown worse than the margin allows, the
    family-adjusted ``p_worse <= alpha`` (the upper confidence bound of
    ``cand - prod`` lies below ``-margin``);
  - ``"insufficient"``: neither; the data cannot tell. The row says how many
    items would be needed (``n_needed``).

  ``"skipped"`` is for a gate whose metric was not measured and whose policy says
  ``when_missing: skip``; with ``when_missing: fail`` the gate fails.

**The family.** All relative gates that were tested form one family. Their
non-inferiority p-values are adjusted together (Holm 1979 for family-wise
error, Benjamini-Hochberg 1995 for false discovery rate, or ``none``), and so,
separately, are their "shown worse" p-values: a ``"fail"`` is a claim too, and
it gets the same protection. A gate whose test could not run (continuous scores
without spread or with fewer than ``min_continuous_n`` items) stays in the family
with p = 1, which is conservative for the others. ``n_needed`` is computed at
``alpha / m``, with ``m`` the number of relative gates (``alpha`` without
correction): enough items to pass whatever the other gates show.

``ci`` of a relative row is ``[lower, upper]``: one-sided ``1 - alpha`` bounds of
``mean(cand) - mean(prod)``, each the inversion of one of the two tests at the
plan's (unadjusted) ``alpha``; together a ``1 - 2 alpha`` interval (90% at
``alpha = 0.05``), named in ``ci_level``.

Besides the gates, :func:`paired_summary` describes every paired metric (mean
difference, percentile bootstrap CI, effect size, two-sided p): the regression
table of the change certificate. It is descriptive, not a gate.

The gate objects come from the policy (`govern.policy.Gate`); this module only
needs their attributes ``metric``, ``op``, ``threshold``, ``compare``,
``margin``, ``when_missing`` and the methods ``holds`` and ``describe``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from audits import stats
from audits.metrics import METRICS, ScoreType, score_type

GateResult = Literal["pass", "fail", "insufficient", "skipped"]

#: outcome of the test -> result of the gate
_RESULT: dict[str, GateResult] = {"passed": "pass", "failed": "fail", "insufficient": "insufficient"}


class GateLike(Protocol):
    metric: str
    op: str | None
    threshold: float | None
    compare: str | None
    margin: float | None
    when_missing: str

    def holds(self, value: float | None) -> bool | None: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class TestPlan:
    """How relative gates are tested: the policy's ``canary`` settings.

    ``alpha`` is the error rate of the family; ``correction`` the multiple-testing
    correction across relative gates. ``test``, ``resamples`` and ``seed`` apply
    to continuous metrics only (binary metrics get the exact test, which draws
    nothing): ``"bootstrap"`` is the bootstrap-t, ``"permutation"`` the sign-flip
    test. ``min_continuous_n``: a continuous metric with fewer items is
    ``"insufficient"`` without a test.
    """

    alpha: float = 0.05
    correction: Literal["holm", "bh", "none"] = "holm"
    test: Literal["bootstrap", "permutation"] = "bootstrap"
    resamples: int = 2000
    seed: int = 0
    min_continuous_n: int = stats.MIN_CONTINUOUS_N


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _bound(x: float | None, unbounded: str) -> str:
    return unbounded if x is None else f"{x:+.3f}"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- absolute gates

_SHORT_OF = {">=": "is below", ">": "is not above", "<=": "is above", "<": "is not below"}


def _absolute(g: Any, value: float | None) -> dict[str, Any]:
    ok = g.holds(value)
    row: dict[str, Any] = {"gate": g.describe(), "metric": g.metric, "kind": "absolute", "value": value,
                           "n_needed": None, "test": "threshold"}
    if _missing(value):
        res: GateResult = "skipped" if ok is None else "fail"
        return {**row, "result": res, "outcome": None if ok is None else "failed",
                "why": "not measured; skipped" if ok is None else "not measured"}
    info = METRICS.get(g.metric)
    shown = f"{value:.2f}" if info is not None and info.kind == "rate" else f"{value:.4g}"
    verb = "meets" if ok else _SHORT_OF.get(g.op, "does not meet")
    return {**row, "result": "pass" if ok else "fail", "outcome": "passed" if ok else "failed",
            "why": f"{g.metric} {shown} {verb} the required {g.op} {g.threshold:g}"}


# --------------------------------------------------------------------------- relative gates


def _test_name(st: ScoreType, plan: TestPlan) -> str:
    if st == "binary":
        return "exact-unconditional-score"
    return "bootstrap-t" if plan.test == "bootstrap" else "sign-flip"


def _adjust(p_values: Sequence[float], correction: str) -> list[float]:
    adjust: dict[str, Callable[[Sequence[float]], list[float]]] = {"holm": stats.holm_adjusted,
                                                                    "bh": stats.bh_adjusted}
    return adjust[correction](p_values) if correction in adjust else [float(p) for p in p_values]


def _n_needed(st: ScoreType, margin: float, alpha: float, sd: float | None, plan: TestPlan) -> int | None:
    if st == "binary":
        return stats.binary_n_needed(margin, alpha)
    if sd is None:  # nothing measured: the minimum is all we can say
        return plan.min_continuous_n
    return stats.continuous_n_needed(sd, margin, alpha, plan.min_continuous_n)


def _relative_row(g: Any, r: stats.NonInferiorityResult, st: ScoreType, plan: TestPlan) -> dict[str, Any]:
    # a bound can be infinite (resamples without spread): stored as None (the trail takes finite numbers only)
    ci = None if r.ci_low is None or r.ci_high is None else [_finite(r.ci_low), _finite(r.ci_high)]
    return {"gate": g.describe(), "metric": g.metric, "kind": "relative", "value": r.diff, "n": r.n,
            "margin": r.margin, "mean_prod": r.mean_prod, "mean_cand": r.mean_cand, "diff": r.diff,
            "ci": ci, "ci_level": 1.0 - 2.0 * plan.alpha, "effect_size": _finite(r.effect_size),
            "p_value": r.p_value, "p_worse": r.p_worse, "losses": r.losses, "wins": r.wins,
            "test": r.test, "score_type": st}


def _relative_why(row: dict[str, Any], r: stats.NonInferiorityResult, plan: TestPlan, alpha_needed: float,
                  n_rel: int) -> str:
    noun = METRICS[row["metric"]].items
    m, a = r.margin, plan.alpha
    corr = f"{plan.correction}-adjusted" if plan.correction != "none" else "unadjusted"
    need = row["n_needed"]
    family = (f" after {plan.correction} over {n_rel} relative gates, alpha/{n_rel} = {alpha_needed:.3g}"
              if alpha_needed < a else "")
    need_txt = (f"{need} {noun} would be needed{' to pass whatever the other gates show' if family else ''}"
                if need is not None else "no number of items would do at this margin")
    if r.p_value is None:  # the test could not run
        return f"not enough evidence: {r.note}; {need_txt}"
    lo, hi = row["ci"] or (None, None)
    ci = f"{100 * row['ci_level']:g}% CI {_bound(lo, '-inf')}..{_bound(hi, '+inf')}"
    if r.score_type == "binary":
        what = f"{r.losses} of {r.n} {noun} got worse and {r.wins} better"
    else:
        what = f"mean change {r.diff:+.4f} over {r.n} {noun}"
    p_ni = f"p={r.p_value:.3g}, {corr} p={row['p_adjusted']:.3g}"
    tail = f"({r.test}, n={r.n})"
    if row["outcome"] == "passed":
        return f"non-inferior: {what}; diff {r.diff:+.3f} ({ci}) is above -{m:g}: {p_ni} <= {a:g} {tail}"
    if row["outcome"] == "failed":
        return (f"worse than production: {what}; diff {r.diff:+.3f} ({ci}) is below -{m:g}: "
                f"worse-test p={r.p_worse:.3g}, {corr} p={row['p_worse_adjusted']:.3g} <= {a:g} {tail}")
    if r.score_type == "binary" and r.losses == 0 and r.wins == 0:
        return (f"not enough evidence: 0 of {r.n} {noun} changed, which cannot show a loss below {m:.2f} "
                f"at alpha {a:g}{family} ({p_ni}); {need_txt}")
    return (f"not enough evidence: {what}; diff {r.diff:+.3f} ({ci}) includes -{m:g}: {p_ni} > {a:g} {tail}; "
            f"even with no change {need_txt}")


def evaluate(gates: list[Any], metrics: dict[str, float | None], scores: dict[str, dict[str, list[float]]],
             plan: TestPlan) -> list[dict[str, Any]]:
    """One result dict per gate, in policy order.

    Every row has ``gate`` (the gate's description), ``metric``, ``kind``
    (``"absolute"``/``"relative"``), ``value``, ``result`` (``"pass"``, ``"fail"``,
    ``"insufficient"``, ``"skipped"``), ``why`` (a sentence: what was measured and
    what was wanted), ``outcome`` (``"passed"``, ``"failed"``, ``"insufficient"``
    or ``None`` when skipped), ``n_needed`` and ``test``. Tested relative rows
    add ``n``, ``margin``, ``mean_prod``, ``mean_cand``, ``diff``, ``ci``,
    ``ci_level``, ``effect_size``, ``p_value``, ``p_adjusted``, ``p_worse``,
    ``p_worse_adjusted``, ``losses``/``wins`` (binary), ``score_type``,
    ``correction``, ``alpha``, ``alpha_needed`` and ``family_size``.
    An unknown metric raises ``ValueError``.
    """
    out: list[dict[str, Any]] = []
    family: list[tuple[int, stats.NonInferiorityResult]] = []
    n_rel = sum(getattr(g, "compare", None) is not None for g in gates)
    alpha_needed = plan.alpha / n_rel if n_rel > 1 and plan.correction != "none" else plan.alpha
    for g in gates:
        if getattr(g, "compare", None) is None:
            out.append(_absolute(g, metrics.get(g.metric)))
            continue
        st = score_type(g.metric)
        margin = float(g.margin)
        pair = scores.get(g.metric)
        n = len(pair["cand"]) if pair else 0
        if pair is None or n < 2:  # none: not measured, when_missing decides; one: too little to show anything
            res: GateResult = ("skipped" if g.when_missing == "skip" else "fail") if n == 0 else "insufficient"
            out.append({"gate": g.describe(), "metric": g.metric, "kind": "relative", "value": None, "n": n,
                        "margin": margin, "result": res,
                        "outcome": {"skipped": None, "fail": "failed", "insufficient": "insufficient"}[res],
                        "why": "not measured: no paired items" if n == 0 else
                               f"not enough evidence: 1 {METRICS[g.metric].items.rstrip('s')} cannot show a loss below "
                               f"{margin:.2f}; {_n_needed(st, margin, alpha_needed, None, plan)} would be needed",
                        "n_needed": _n_needed(st, margin, alpha_needed, None, plan),
                        "test": _test_name(st, plan), "score_type": st})
            continue
        r = stats.non_inferiority(pair["prod"], pair["cand"], margin=margin, score_type=st, alpha=plan.alpha,
                                  n_resamples=plan.resamples, seed=plan.seed, method=plan.test,
                                  min_n=plan.min_continuous_n)
        out.append(_relative_row(g, r, st, plan))
        family.append((len(out) - 1, r))
    if not family:
        return out
    adj_ni = _adjust([1.0 if r.p_value is None else r.p_value for _, r in family], plan.correction)
    adj_w = _adjust([1.0 if r.p_worse is None else r.p_worse for _, r in family], plan.correction)
    for (k, r), a_ni, a_w in zip(family, adj_ni, adj_w, strict=True):
        row = out[k]
        p_adj = None if r.p_value is None else a_ni
        pw_adj = None if r.p_worse is None else a_w
        outcome = stats.decide(p_adj, pw_adj, plan.alpha)
        # no spread: no n would do (stats says None); otherwise recompute at the family's level
        sd = None if r.score_type == "continuous" and r.n_needed is None else r.sd
        row.update(p_adjusted=p_adj, p_worse_adjusted=pw_adj, correction=plan.correction, alpha=plan.alpha,
                   alpha_needed=alpha_needed, family_size=len(family), outcome=outcome, result=_RESULT[outcome],
                   n_needed=None if sd is None else _n_needed(row["score_type"], r.margin, alpha_needed, sd, plan))
        row["why"] = _relative_why(row, r, plan, alpha_needed, n_rel)
    return out


def failed(results: list[dict[str, Any]]) -> list[str]:
    """``"gate (why)"`` for every gate whose result is ``"fail"`` (not ``"insufficient"``)."""
    return [f"{r['gate']} ({r['why']})" for r in results if r["result"] == "fail"]


def insufficient(results: list[dict[str, Any]]) -> list[str]:
    """``"gate (why)"`` for every gate that could not decide: not shown non-inferior, not shown worse."""
    return [f"{r['gate']} ({r['why']})" for r in results if r["result"] == "insufficient"]


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
