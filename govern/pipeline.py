"""`govern apply`: take requests through the whole loop headless, with a progress display.

1. load and validate the policy (and the request file, if any) — nothing is written on error;
2. submit the file's requests, then admit every pending request;
3. run the apply jobs: in-process when no live `govern worker` serves the model,
   otherwise wait for that worker while showing the jobs' live stage;
4. print a summary; the exit code is 0 only when every request reached the
   state its risk tier allows (promoted for auto-approval, awaiting_review otherwise).

Requests an earlier, killed run (or a dead worker) left ``admitted`` or
``applying`` are taken over too: their job is re-claimed as soon as its
holder's process is known gone (or its lease ran out), and the exit code stays
non-zero while any of them is still unfinished.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from govern.domain import load_request_file
from govern.lifecycle import State
from govern.policy import Policy, load_policy
from govern.service import Govern
from govern.worker import Worker, live_workers


def expected_state(policy: Policy, tier: str | None) -> State:
    if tier and policy.risk.tiers[tier].auto_approve:
        return State.PROMOTED
    return State.AWAITING_REVIEW


def run_pipeline(gov: Govern | None, policy_path: Path | Policy, file: Path | None, *, actor: str, model: str | None,
                 device: str, console: Any, dtype: str = "float32") -> int:
    """See the module docstring. `gov` may be None: it is then opened after the inputs validated.

    `policy_path` may be a `Policy` already loaded (and checked: `govern apply` runs the very policy whose
    registration it checked, never a second read of a file that could have changed in between)."""
    policy = policy_path if isinstance(policy_path, Policy) else load_policy(policy_path)
    reqs = load_request_file(file) if file else []
    gov = gov or Govern()
    if file:
        ids = gov.submit(reqs, actor, model)
        console.print(f"submitted {len(ids)} request(s) from {file}")
    name = gov.resolve_model(model) if model else None
    pending = gov.pending_requests(name)
    orphaned = [r for r in unfinished_requests(gov, name) if r not in pending]
    if not pending and not orphaned:
        console.print("no pending requests")
        return 0
    gov.admit_many(pending, policy)  # submitted ones are judged; admitted ones are left as they are
    if orphaned:
        console.print(f"taking over {len(orphaned)} request(s) a stopped run left unfinished: {', '.join(orphaned)}")
    by_model: dict[str, list[str]] = {}
    for rid in [*pending, *orphaned]:
        r = gov.get_request(rid)
        if r.state == State.ADMITTED or rid in orphaned:
            by_model.setdefault(r.model, []).append(rid)
    pending = [*pending, *orphaned]
    for model_name, rids in by_model.items():
        _run_jobs(gov, model_name, set(rids), device, console, dtype)
    return _summarise(gov, policy, pending, console)


def unfinished_requests(gov: Govern, model: str | None) -> list[str]:
    """Requests admitted or applying whose apply job no live worker holds (a killed `govern apply` or worker)."""
    live = {w.id for w in live_workers(gov, model)} if model else {w.id for w in gov.live_workers()}
    out = []
    for j in gov.jobs():
        if j.kind != "apply" or j.state not in ("queued", "running") or (model and j.model != model):
            continue
        if j.state == "running" and j.lease_owner in live:
            continue  # a live worker is on it
        r = gov.get_request(j.request_id)
        if r.state in (State.ADMITTED, State.APPLYING) and r.id not in out:
            out.append(r.id)
    return out


def _run_jobs(gov: Govern, model: str, rids: set[str], device: str, console: Any, dtype: str = "float32") -> None:
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        tasks = {rid: bar.add_task(f"{rid} {escape(gov.get_request(rid).title[:30])}", total=1.0, stage="queued")
                 for rid in sorted(rids)}

        def on_progress(rid: str, stage: str, frac: float) -> None:
            if rid in tasks:
                bar.update(tasks[rid], completed=frac if stage != "done" else 1.0, stage=stage)

        if live_workers(gov, model):
            console.print(f"a worker serves {model}; waiting for it")
            while True:
                jobs = [j for j in gov.jobs() if j.request_id in rids]
                for j in jobs:
                    on_progress(j.request_id, j.stage or j.state, 1.0 if j.state in ("done", "failed") else j.progress)
                if all(j.state in ("done", "failed") for j in jobs):
                    return
                if not live_workers(gov, model):
                    console.print(f"the worker for {model} stopped; taking over its jobs")
                    break
                time.sleep(1.0)
        console.print(f"no worker is running for {model}: working in-process on {device}")
        Worker(gov, model, device=device, dtype=dtype, progress=on_progress).run_until_idle(rids)


def _summarise(gov: Govern, policy: Policy, rids: list[str], console: Any) -> int:
    table = Table(title="govern apply")
    for col in ("request", "change", "state", "expected", "efficacy", "paraphrase", "specificity",
                "drawdown", "version"):
        table.add_column(col)
    ok = True
    for rid in rids:
        r = gov.get_request(rid)
        want = expected_state(Policy.model_validate_json(r.policy) if r.policy else policy, r.tier)
        good = r.state == want
        if r.state in (State.ADMITTED, State.APPLYING):
            console.print(f"[red]{r.id}: still {r.state}; its job did not finish (run `govern apply` again, "
                          "or see `govern status`)[/]")
        ok &= good
        ev = r.report()
        m = ev.metrics if ev else {}
        table.add_row(r.id, escape(r.title), f"[{'green' if good else 'red'}]{r.state}[/]", want.value,
                      *(_fmt(m.get(k)) for k in ("efficacy", "paraphrase", "specificity", "drawdown")),
                      f"v{r.candidate_version}" if r.candidate_version else "-")
        if r.error:
            console.print(f"[red]{r.id}: {escape(r.error)}[/]")
    console.print(table)
    return 0 if ok else 1


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
