"""The short Markdown evaluation card logged with each change's MLflow run (the UI and the certificate show more)."""

from __future__ import annotations

from typing import Any

from audits.evidence import Evidence
from govern.store import RequestRow


def render_card(req: RequestRow, evidence: Evidence, change: dict[str, Any]) -> str:
    tensors = change.get("tensors") or [{}]
    t0 = tensors[0]
    lines = [
        f"# Change {req.id}: {req.title}",
        "",
        f"- model: `{req.model}`, kind: `{req.kind}`, method: `{req.method}`, submitted by {req.submitted_by}",
        *[f"- {k}: {v}" for k, v in req.request().describe()],
        f"- change: {change.get('kind')} on `{change.get('module', t0.get('name'))}` (layer {change.get('layer', '-')}), "
        f"{change.get('size_bytes', 0):,} bytes; update norm {_fmt(t0.get('update_norm'))} "
        f"vs weight norm {_fmt(t0.get('weight_norm'))}",
        f"- covariance: {change.get('covariance', '-')}",
        "",
        "| gate | value | result | why |",
        "|---|---|---|---|",
        *[f"| {g.gate} | {_fmt(g.value)} | {g.result} | {g.why} |" for g in evidence.gates],
        "",
        "| slice | prompt | before | after | ok |",
        "|---|---|---|---|---|",
    ]
    for r in evidence.report.rows:
        if r.slice in ("target", "paraphrase"):
            lines.append(f"| {r.slice} | {r.prompt} | p(new)={_fmt(r.p_answer_before)} p(old)={_fmt(r.p_foil_before)} "
                         f"| p(new)={_fmt(r.p_answer_after)} p(old)={_fmt(r.p_foil_after)} | {r.ok} |")
        elif r.slice == "neighbor":
            lines.append(f"| neighbour | {r.prompt} | {r.before!r} | {r.after!r} | {r.ok} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
