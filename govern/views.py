"""Terminal views for `govern status` and `govern history` (rich tables)."""

from __future__ import annotations

import json
from typing import Any

from govern.service import Govern


def show_requests(gov: Govern, model: str | None, console: Any) -> None:
    from rich.table import Table

    t = Table(title="requests")
    for c in ("id", "model", "subject", "target", "state", "tier", "submitted by", "version", "job"):
        t.add_column(c)
    jobs = {j.request_id: j for j in gov.jobs()}
    for r in gov.list_requests(model):
        j = jobs.get(r.id)
        job = f"{j.state} {j.stage or ''} {j.progress:.0%}" if j else "-"
        t.add_row(r.id, r.model, r.subject, r.target.strip(), r.state, r.tier or "-", r.submitted_by,
                  f"v{r.candidate_version}" if r.candidate_version else "-", job)
    console.print(t)


def show_request(gov: Govern, request_id: str, console: Any) -> None:
    from rich.table import Table

    r = gov.get_request(request_id)
    console.print(f"[bold]{r.id}[/] {r.state}  model={r.model} method={r.method} tier={r.tier or '-'} by {r.submitted_by}")
    console.print(f"  {r.prompt!r} -> {r.target!r} (old {r.target_old!r})")
    if r.error:
        console.print(f"  [red]{r.error}[/]")
    for j in gov.jobs(r.id):
        console.print(f"  job {j.id}: {j.state} stage={j.stage} {j.progress:.0%} attempts={j.attempts} owner={j.lease_owner}")
    if r.canary:
        c = json.loads(r.canary)
        g = Table(title="canary gates")
        for col in ("gate", "value", "result", "why"):
            g.add_column(col)
        for gate in c["gates"]:
            g.add_row(gate["gate"], "n/a" if gate["value"] is None else f"{gate['value']:.4f}", gate["result"],
                      gate.get("why", ""))
        console.print(g)
        e = Table(title="evidence (target and paraphrases)")
        for col in ("slice", "prompt", "p(new) before", "p(new) after", "p(old) after"):
            e.add_column(col)
        for row in c["rows"]:
            if row["slice"] in ("target", "paraphrase"):
                e.add_row(row["slice"], row["prompt"], f"{row['p_new_before']:.3f}", f"{row['p_new_after']:.3f}",
                          f"{row['p_old_after']:.3f}")
        console.print(e)
    for rv in gov.reviews(r.id):
        console.print(f"  review: {rv.decision} by {rv.reviewer}: {rv.comment}")
    for ev in gov.request_events(r.id):
        console.print(f"  #{ev.seq} {ev.ts[:19]} {ev.actor}: {ev.action}")


def show_history(gov: Govern, model: str | None, console: Any) -> None:
    from rich.table import Table

    m, versions = gov.history(model)
    t = Table(title=f"{m.name} versions (base sha256 {m.base_digest[:12]})")
    for c in ("version", "parent", "status", "alias", "change", "request", "mlflow"):
        t.add_column(c)
    for v, r in versions:
        alias = "production" if v.number == m.production_version else ("candidate" if v.number == m.candidate_version else "")
        change = "base checkpoint" if r is None else f"{r.subject}: {r.prompt} -> {r.target.strip()}"
        t.add_row(f"v{v.number}", f"v{v.parent}" if v.parent else "-", v.status, alias, change,
                  r.id if r else "-", v.mlflow_version or "-")
    console.print(t)
