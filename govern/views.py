"""Terminal views for `govern status` and `govern history` (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from govern.deploy.runner import delivery_problems
from govern.service import Govern


def show_requests(gov: Govern, model: str | None, console: Any) -> None:
    t = Table(title="requests")
    for c in ("id", "model", "kind", "change", "state", "tier", "submitted by", "version", "job"):
        t.add_column(c)
    jobs = {j.request_id: j for j in gov.jobs()}
    for r in gov.list_requests(model):
        j = jobs.get(r.id)
        job = f"{j.kind} {j.state} {j.stage or ''} {j.progress:.0%}" if j else "-"
        t.add_row(r.id, r.model, r.kind, escape(r.title), r.state, r.tier or "-", escape(r.submitted_by),
                  f"v{r.candidate_version}" if r.candidate_version else "-", job)
    console.print(t)
    for line in delivery_problems(gov, model):
        console.print(f"[red]{escape(line)}[/]")


def show_request(gov: Govern, request_id: str, console: Any) -> None:
    r = gov.get_request(request_id)
    console.print(f"[bold]{r.id}[/] {r.state}  model={r.model} kind={r.kind} method={escape(r.method)} "
                  f"tier={r.tier or '-'} by {escape(r.submitted_by)}")
    for field, value in r.request().describe():
        console.print(f"  {field}: {escape(value)}")
    if r.error:
        console.print(f"  [red]{escape(r.error)}[/]")
    for j in gov.jobs(r.id):
        console.print(f"  job {j.id} ({j.kind}): {j.state} stage={j.stage} {j.progress:.0%} attempts={j.attempts} "
                      f"owner={j.lease_owner}" + (f" [red]{escape(j.error)}[/]" if j.error else ""))
    ev = r.report()
    if ev is not None:
        g = Table(title="canary gates")
        for col in ("gate", "value", "result", "why"):
            g.add_column(col)
        for gate in ev.gates:
            g.add_row(gate.gate, "n/a" if gate.value is None else f"{gate.value:.4f}", gate.result, escape(gate.why))
        console.print(g)
        e = Table(title="evidence (target and paraphrases)")
        for col in ("slice", "prompt", "p(new) before", "p(new) after", "p(old) after"):
            e.add_column(col)
        for row in ev.report.slice_rows("target", "paraphrase"):
            e.add_row(row.slice, escape(row.prompt), f"{row.p_answer_before:.3f}", f"{row.p_answer_after:.3f}",
                      f"{row.p_foil_after:.3f}")
        console.print(e)
    for rv in gov.reviews(r.id):
        console.print(f"  review: {rv.decision} by {escape(rv.reviewer)}: {escape(rv.comment)}")
    for event in gov.request_events(r.id):
        console.print(f"  #{event.seq} {event.ts[:19]} {escape(event.actor)}: {event.action}")


def show_history(gov: Govern, model: str | None, console: Any) -> None:
    m, versions = gov.history(model)
    t = Table(title=f"{m.name} versions (base sha256 {m.base_digest[:12]})")
    for c in ("version", "parent", "status", "alias", "changes", "what", "request", "mlflow"):
        t.add_column(c)
    for v, r in versions:
        alias = "production" if v.number == m.production_version else ("candidate" if v.number == m.candidate_version else "")
        what = "base checkpoint" if r is None else (r.title if r.change_id in v.change_ids else f"without {r.title}")
        t.add_row(f"v{v.number}", f"v{v.parent}" if v.parent else "-", v.status, alias, str(len(v.change_ids)), escape(what),
                  r.id if r else "-", v.mlflow_version or "-")
    console.print(t)
    console.print(budget_line(gov, m.name))


def budget_line(gov: Govern, model: str) -> str:
    """One line: the production version's edit budget against the limits of the policy that admitted its last change."""
    b = gov.edit_budget(model)
    limits = gov.budget_limits(model)
    facts = f"{b.facts}" + (f" of {limits[0]}" if limits[0] else "")
    norm = f"{b.update_norm:.4g}" + (f" of {limits[1]:g}" if limits[1] else "")
    return (f"edit budget of v{b.version} (production): {b.changes} changes, {facts} edited facts, cumulative update norm "
            f"{norm} (largest relative to its tensor {b.max_relative:.2%})")
