"""Run one apply job on a loaded model: edit → canary → gates → (auto-)approval → promotion.

Nothing the job computes is visible until its last step: the delta file and the
MLflow run are written first, then one database transaction records the
candidate version, the canary outcome, every lifecycle event with its audit
entry and, where the policy auto-approves, the promotion. A worker killed at
any earlier point leaves the database exactly as the claim left it; the job is
claimed again once its lease expires.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from govern.lifecycle import Event, State
from govern.policy import Policy
from govern.store import DeltaRow, JobRow, RequestRow, VersionRow, new_id, now

if TYPE_CHECKING:
    from govern.models import LoadedModel
    from govern.service import Govern

Progress = Callable[[str, float], None]


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired); our results are dropped."""


class ModelHost:
    """Keeps one model loaded and moves it between versions by applying/reverting deltas."""

    def __init__(self, gov: Govern, model: str, device: str = "cpu") -> None:
        self.gov, self.name, self.device = gov, model, device
        self.loaded: LoadedModel | None = None

    def sync(self) -> LoadedModel:
        """Bring the in-memory weights to the current production version, exactly."""
        from editors.delta import Delta

        with self.gov.store.read() as s:
            m = self.gov.store.get_model(s, self.name)
            want = self.gov.store.get_version(s, self.name, m.production_version).delta_ids
            paths = {d: self.gov._delta_path(s, d) for d in want}
        if self.loaded is None:
            self.loaded = self.gov.materialise(self.name, device=self.device)
            return self.loaded
        have = self.loaded.deltas
        common = 0
        while common < min(len(have), len(want)) and have[common] == want[common]:
            common += 1
        if have[common:]:  # revert what production no longer has, newest first
            with self.gov.store.read() as s:
                for d in reversed(have[common:]):
                    Delta.load(self.gov._delta_path(s, d)).revert(self.loaded.model)
        for d in want[common:]:
            Delta.load(paths[d]).apply(self.loaded.model)
        self.loaded.deltas = list(want)
        return self.loaded


def build_suite(req: RequestRow, policy: Policy, target_old: str):  # noqa: ANN201
    """The request's evaluation suite: generated + shipped slices, then the policy's suite files."""
    from audits.suites import for_request, load_suite

    suite = for_request(subject=req.subject, prompt=req.prompt, target_new=req.target, target_old=target_old,
                        paraphrases=req.paraphrase_list, neighbors=req.neighbor_list, relation=req.relation,
                        n_neighbors=policy.canary.neighbors, generate=policy.canary.generate, seed=policy.canary.seed)
    fill = {"subject": req.subject, "target": req.target, "target_old": target_old}
    for path in policy.canary.suites:
        suite = suite + load_suite(path, fill)
    return suite


def evaluate_gates(policy: Policy, canary: Any) -> list[dict[str, Any]]:
    """Absolute and relative gates of `policy` over a CanaryReport (see `audits.gates`)."""
    from audits.gates import evaluate

    return evaluate(list(policy.canary.gates), canary.metrics, canary.scores, policy.canary.plan())


def render_card(req: RequestRow, report: dict[str, Any], gates: list[dict[str, Any]], delta_summary: dict[str, Any]) -> str:
    """A short Markdown evaluation card (MLflow artifact; the UI renders a richer one)."""
    lines = [
        f"# Change {req.id}: {req.subject}",
        "",
        f"- model: `{req.model}`, method: `{req.method}`, submitted by {req.submitted_by}",
        f"- prompt: {req.prompt!r} -> new target {req.target!r} (old {req.target_old!r})",
        f"- edited: `{delta_summary.get('module')}` (layer {delta_summary.get('layer')}), "
        f"update norm {delta_summary['tensors'][0]['update_norm']:.4g} vs weight norm {delta_summary['tensors'][0]['weight_norm']:.4g}",
        f"- covariance: {delta_summary.get('covariance')}",
        "",
        "| gate | value | result | why |",
        "|---|---|---|---|",
        *[f"| {g['gate']} | {_fmt(g['value'])} | {g['result']} | {g.get('why', '')} |" for g in gates],
        "",
        "| slice | prompt | before | after | pass |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if r["slice"] in ("target", "paraphrase"):
            lines.append(f"| {r['slice']} | {r['prompt']} | p(new)={r['p_new_before']:.3f} p(old)={r['p_old_before']:.3f} "
                         f"| p(new)={r['p_new_after']:.3f} p(old)={r['p_old_after']:.3f} | {r['pass']} |")
        elif r["slice"] == "neighbor":
            lines.append(f"| neighbour | {r['prompt']} | {r['before']!r} | {r['after']!r} | {r['pass']} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_apply_job(gov: Govern, host: ModelHost, job: JobRow, worker_id: str, progress: Progress | None = None) -> State:
    """Execute one claimed apply job; returns the request's final state."""
    from audits.canary import compare, greedy_answer, measure
    from audits.gates import paired_summary
    from editors import EditContext, FactEdit, get_editor

    def report(stage: str, frac: float) -> None:
        if progress:
            progress(stage, frac)

    with gov.store.read() as s:
        req = gov.store.get_request(s, job.request_id)
        m = gov.store.get_model(s, req.model)
        parent_number = m.production_version
    policy = Policy.model_validate_json(req.policy)
    started = time.perf_counter()

    from govern.store import as_utc

    if req.valid_until is not None and as_utc(req.valid_until) <= now():
        return _finish_failed(gov, job, worker_id, f"valid_until {as_utc(req.valid_until).isoformat()} passed before the change was applied")
    report("load", 0.0)
    loaded = host.sync()
    net, tok = loaded.model, loaded.tokenizer
    target_old = req.target_old or greedy_answer(net, tok, req.prompt)
    if target_old.strip() == req.target.strip():
        return _finish_failed(gov, job, worker_id, f"the model already answers {req.target!r}; nothing to change")

    try:
        suite = build_suite(req, policy, target_old)
    except ValueError as e:  # a suite file changed since admission
        return _finish_failed(gov, job, worker_id, f"evaluation suite: {e}")
    report("canary-production", 0.0)
    prod = measure(net, tok, suite)

    editor = get_editor(req.method)
# statistics and prefixes are keyed by the base checkpoint: C describes keys on general text,
    # which earlier local edits barely move (MEMIT's sequential editing also keeps the base C)
    ctx = EditContext(cache_dir=gov.home.shared_cache, model_digest=loaded.base_digest,
                      config=policy.method_config(req.method), progress=report)
    try:
        edit = FactEdit(subject=req.subject, prompt=req.prompt, target_new=req.target, target_old=target_old)
        delta = editor.compute(net, tok, edit, ctx)
    except Exception as e:  # noqa: BLE001 - any editor failure ends this request, recorded
        return _finish_failed(gov, job, worker_id, f"{req.method} failed: {type(e).__name__}: {e}")
    delta_id = new_id("delta")
    delta.meta["request_id"] = req.id
    delta_path = delta.save(gov.home.deltas / f"{delta_id}.safetensors")

    report("canary-candidate", 0.0)
    with delta.applied(net):
        cand = measure(net, tok, suite)
    canary = compare(suite, prod, cand, tok)
    report("statistics", 0.0)
    gates = evaluate_gates(policy, canary)
    passed = all(g["result"] != "fail" for g in gates)
    tier = policy.risk.tiers[req.tier]
    summary = delta.summary()
    plan = policy.canary.plan()
    report_dict = {**canary.to_dict(), "gates": gates, "passed": passed, "target_old": target_old,
                   "stats": paired_summary(canary.scores, plan), "plan": plan.__dict__,
                   "seconds": round(time.perf_counter() - started, 2), "edit_seconds": delta.meta.get("seconds")}

    # MLflow first: a run per change, a model version per candidate
    report("mlflow", 0.0)
    run_id = gov.registry.log_run(
        name=f"{req.model}: {req.subject} -> {req.target.strip()}",
        tags={"govern.model": req.model, "govern.request": req.id, "govern.kind": "change",
              "govern.outcome": "gates_passed" if passed else "gates_failed"},
        params={"method": req.method, "request_id": req.id, "layer": delta.meta.get("layer"),
                "module": delta.meta.get("module"), "covariance": delta.meta.get("covariance"),
                "parent_version": parent_number, "policy": policy.name, "tier": req.tier,
                **{f"hp.{k}": v for k, v in policy.method_config(req.method).items()}},
        metrics={**{k: v for k, v in canary.metrics.items() if v is not None}, "ppl_production": canary.ppl_production, "ppl_candidate": canary.ppl_candidate,
                 "seconds_total": report_dict["seconds"], "seconds_edit": delta.meta.get("seconds")},
        files={"delta": delta_path},
        texts={"canary.json": json.dumps(report_dict, indent=2), "card.md": render_card(
            req.model_copy(update={"target_old": target_old}), report_dict, gates, summary),
               "delta.json": json.dumps(summary, indent=2)},
    )
    mlflow_version = gov.registry.register_candidate(req.model, run_id, req.id)

    # one transaction: candidate, outcome, events, maybe promotion
    report("commit", 0.0)
    promoted = False
    with gov.store.tx() as s:
        j = s.get(JobRow, job.id)
        if j is None or j.lease_owner != worker_id or j.state != "running":
            raise LeaseLost(f"job {job.id} is no longer ours; dropping its result")
        r = gov.store.get_request(s, req.id)
        model = gov.store.get_model(s, req.model)
        parent = gov.store.get_version(s, req.model, parent_number)
        number = 1 + max(v.number for v in s.exec(_versions(req.model)).all())
        s.add(DeltaRow(id=delta_id, model=req.model, request_id=req.id, method=req.method, digest=delta.digest,
                       path=str(delta_path), summary=json.dumps(summary)))
        s.add(VersionRow(model=req.model, number=number, parent=parent.number, request_id=req.id,
                         deltas=json.dumps([*parent.delta_ids, delta_id]), status="candidate", mlflow_version=mlflow_version))
        r.candidate_version, r.delta_id, r.target_old = number, delta_id, target_old
        r.canary, r.mlflow_run_id = json.dumps(report_dict), run_id
        model.candidate_version = number
        s.add_all([r, model])
        s.flush()
        gov.store.transition(s, r, Event.APPLIED, worker_id, {
            "delta": delta_id, "delta_digest": delta.digest, "version": number, "parent_version": parent.number,
            "tensors": summary["tensors"], "mlflow_run": run_id})
        gates_payload = {"metrics": canary.metrics, "gates": gates}
        if not passed:
            from audits.gates import failed

            r.error = "gates failed: " + "; ".join(failed(gates))
            s.add(r)
            gov.store.transition(s, r, Event.GATES_FAILED, "canary", gates_payload)
            gov._discard_candidate(s, r, "canary", r.error)
        elif tier.auto_approve:
            gov.store.transition(s, r, Event.AUTO_APPROVED, "policy", {**gates_payload, "tier": req.tier})
            _, promoted_to = gov._promote(s, r, "policy")
            promoted = promoted_to is not None
        else:
            gov.store.transition(s, r, Event.GATES_PASSED, "canary", {**gates_payload, "approvers_needed": tier.approvers})
        j.state, j.stage, j.progress, j.updated_at = "done", "done", 1.0, now()
        s.add(j)
        final = State(r.state)
    gov._mirror_aliases(req.model)
    report("certificate", 0.0)
    gov._reissue_certificate(req.id)
    if promoted:
        host.sync()  # the in-memory model is production again, now with the delta
    report("done", 1.0)
    return final


def _versions(model: str):  # noqa: ANN202
    from sqlmodel import select

    return select(VersionRow).where(VersionRow.model == model)


def _finish_failed(gov: Govern, job: JobRow, worker_id: str, error: str) -> State:
    with gov.store.tx() as s:
        j = s.get(JobRow, job.id)
        if j is None or j.lease_owner != worker_id:
            raise LeaseLost(f"job {job.id} is no longer ours")
        r = gov.store.get_request(s, job.request_id)
        r.error = error
        j.state, j.error, j.updated_at = "failed", error, now()
        s.add_all([r, j])
        gov.store.transition(s, r, Event.CRASH, worker_id, {"error": error})
        return State(r.state)


__all__ = ["ModelHost", "run_apply_job", "LeaseLost"]
