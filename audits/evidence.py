"""Typed evidence: what a canary measured and what the gates decided, serialised in one place.

* `EvidenceRow` — one suite item, production (before) vs candidate (after);
* `CanaryReport` — `audits.canary.compare`'s result: per-slice metrics, the
  evidence rows and the paired per-item scores the gates test;
* `GateResult` — one gate's decision (`audits.gates.evaluate`);
* `Evidence` — what a request stores: the report, the gates, the verdict, the
  facts measured on production, the paired summary and timings.

`Evidence.to_json()` / `Evidence.from_json()` are the only (de)serialisers; the
database, MLflow's ``canary.json``, the certificate and every view go through them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GateOutcome = Literal["pass", "fail", "insufficient", "skipped"]


class EvidenceRow(BaseModel):
    """One item of the suite. Slice-specific fields are None where they do not apply."""

    model_config = ConfigDict(extra="forbid")

    slice: str
    kind: str
    prompt: str
    source: str = "generated"
    score_before: float
    score_after: float
    ok: bool = Field(description="the item is as it should be: the edit's slices reached the new answer, others not worse")
    answer: str | None = None
    foil: str | None = None
    p_answer_before: float | None = None  # "prefers" items: probability of the answer / the foil
    p_foil_before: float | None = None
    p_answer_after: float | None = None
    p_foil_after: float | None = None
    before: str | None = None  # what production said (a token, a generation, a summary)
    after: str | None = None  # what the candidate said


class CanaryReport(BaseModel):
    """Candidate vs production on one suite; ``scores`` holds the paired per-item scores by metric."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float | None]
    rows: list[EvidenceRow]
    ppl_production: float
    ppl_candidate: float
    scores: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    suite: dict[str, Any] = Field(default_factory=dict)

    def slice_rows(self, *slices: str) -> list[EvidenceRow]:
        return [r for r in self.rows if r.slice in slices]


class GateResult(BaseModel):
    """One gate's decision; relative gates carry their test's numbers."""

    model_config = ConfigDict(extra="allow")

    gate: str
    metric: str
    kind: Literal["absolute", "relative"]
    result: GateOutcome
    why: str = ""
    value: float | None = None
    n: int | None = None
    margin: float | None = None
    diff: float | None = None
    ci: list[float | None] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n_needed: int | None = None
    test: str | None = None


class Evidence(BaseModel):
    """Everything a request's canary produced; stored as the request's ``canary`` JSON."""

    model_config = ConfigDict(extra="forbid")

    report: CanaryReport
    gates: list[GateResult]
    passed: bool
    resolved: dict[str, Any] = Field(default_factory=dict, description="facts measured on production (e.g. old answers)")
    stats: dict[str, dict[str, Any]] = Field(default_factory=dict, description="paired summary per metric")
    plan: dict[str, Any] = Field(default_factory=dict, description="how relative gates were tested")
    seconds: float | None = None
    edit_seconds: float | None = None
    kind: Literal["change", "rollback"] = "change"

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.report.metrics

    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if g.result == "fail"]

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Evidence:
        return cls.model_validate_json(text)


__all__ = ["CanaryReport", "Evidence", "EvidenceRow", "GateOutcome", "GateResult"]
