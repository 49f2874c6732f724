"""Jobs: turn a claimed job into a task for an executor, and commit the executor's outcome.

This is the one place where a job's result becomes state: one database
transaction that records the change row, the candidate version, the evidence,
every lifecycle event with its audit entry and, where the policy
auto-approves, the promotion — only if the worker still holds the job's lease.
MLflow (a run per change, a model version per candidate, the aliases) is
derived from those rows afterwards by `govern.reconcile`
(`ServiceBase.after_decision`): MLflow being slow, locked or down never fails
a job, and a crash between the two is repaired by the next reconcile.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from audits.evidence import Evidence, GateResult
from govern import faults
from govern.errors import GovernError
from govern.executors import ApplyTask, Candidate, Failure, Outcome, RestoredChange, RollbackTask, Task
from govern.host import BaseRef, ChangeRef, VersionRef
from govern.lifecycle import Event, JobKind, JobState, State, VersionStatus
from govern.policy import Policy
from govern.services.base import ServiceBase
from govern.services.transitions import discard_candidate, move_production, promote
from govern.store import ChangeRow, JobRow, RequestRow, VersionRow, as_utc, new_id, now


class LeaseLost(GovernError):
    """Another worker took the job over (our lease expired); our results are dropped."""


class JobsService(ServiceBase):
    if TYPE_CHECKING:  # provided by ModelsService

        def version_ref(self, s: Session, model: str, number: int | None = None) -> VersionRef: ...
        def base_ref(self, s: Session, model: str) -> BaseRef: ...
        def change_refs(self, s: Session, change_ids: list[str]) -> tuple[ChangeRef, ...]: ...

    # -- job -> task ------------------------------------------------------------------------
    def task_for(self, job: JobRow) -> Task | Failure:
        """What an executor needs to run `job`, as plain data (or why it cannot run)."""
        with self.store.read() as s:
            req = self.store.get_request(s, job.request_id)
            if not req.policy:
                return Failure(message=f"request {req.id} has no admitting policy")
            policy = Policy.model_validate_json(req.policy)
            production = self.version_ref(s, req.model)
            if job.kind == JobKind.ROLLBACK:
                return self._rollback_task(s, job, req, policy, production)
            if req.valid_until is not None and as_utc(req.valid_until) <= now():
                return Failure(message=f"valid_until {as_utc(req.valid_until).isoformat()} passed before the change was applied")
            spec = req.request()
            return ApplyTask(job_id=job.id or 0, request_id=req.id, request_kind=req.kind, spec=spec.model_dump_json(),
                             method=req.method, method_config=policy.method_config(req.method).model_dump(),
                             canary=policy.canary.model_dump(), production=production,
                             cache_dir=str(self.home.shared_cache), changes_dir=str(self.home.changes),
                             change_id=new_id("change"))

    def _rollback_task(self, s: Session, job: JobRow, req: RequestRow, policy: Policy, production: VersionRef) -> Task | Failure:
        args = json.loads(job.args)
        ids = [c.id for c in production.changes]
        if args["change"] not in ids:
            return Failure(message=f"change {args['change']} is no longer in production v{production.number}")
        keep = [c for c in ids if c != args["change"]]
        stays = []
        for ref in production.changes[ids.index(args["change"]) + 1:]:
            row = self.store.get_change(s, ref.id)
            other = s.get(RequestRow, row.request_id) if row.request_id else None
            stays.append(RestoredChange(ref=ref, request_kind=other.kind if other else None,
                                        spec=other.request().model_dump_json() if other else None,
                                        resolved=other.resolved_facts if other else {}))
        target = VersionRef(base=production.base, number=None, changes=self.change_refs(s, keep))
        return RollbackTask(job_id=job.id or 0, request_id=req.id, production=production, target=target,
                            stays=tuple(stays), canary=policy.canary.model_dump(), cache_dir=str(self.home.shared_cache))

    # -- outcome -> state ---------------------------------------------------------------------
    def commit(self, job: JobRow, worker_id: str, task: Task | None, outcome: Outcome) -> State:
        """Record `outcome` of `job` (see the module docstring); returns the request's state."""
        if isinstance(outcome, Failure):
            return self.fail_job(job, worker_id, outcome.message)
        if isinstance(task, RollbackTask):
            return self._commit_rollback(job, worker_id, task, outcome)
        assert isinstance(task, ApplyTask)  # noqa: S101 - a Candidate comes from one of the two tasks
        return self._commit_apply(job, worker_id, task, outcome)

    def _lease(self, s: Session, job: JobRow, worker_id: str) -> JobRow:
        j = s.get(JobRow, job.id)
        if j is None or j.lease_owner != worker_id or j.state != JobState.RUNNING:
            raise LeaseLost(f"job {job.id} is no longer ours; dropping its result")
        return j

    def _evidence(self, policy: Policy, outcome: Candidate, kind: str, tier: str | None = None) -> Evidence:
        """Gates over the outcome's report. `passed`: no gate failed, and none lacks evidence unless `tier` allows it."""
        from audits.gates import evaluate, paired_summary  # scipy

        report = outcome.report
        plan = policy.canary.plan()
        gates = [GateResult.model_validate(g) for g in
                 evaluate(list(policy.gates_for(kind)), report.metrics, report.scores, plan)]
        tolerated = {"pass", "skipped"} | ({"insufficient"} if tier and policy.risk.tiers[tier].allow_insufficient else set())
        passed = all(g.result in tolerated for g in gates)
        return Evidence(report=report, gates=gates, passed=passed, resolved=outcome.resolved,
                        stats=paired_summary(report.scores, plan), plan=dict(plan.__dict__),
                        seconds=outcome.seconds, edit_seconds=outcome.edit_seconds,
                        kind="rollback" if kind == "rollback" else "change")

    def _commit_apply(self, job: JobRow, worker_id: str, task: ApplyTask, outcome: Candidate) -> State:
        with self.store.read() as s:
            req = self.store.get_request(s, job.request_id)
        policy = Policy.model_validate_json(req.policy or "{}")
        evidence = self._evidence(policy, outcome, req.kind, req.tier)
        # not enough evidence, nothing shown worse: the policy sends it to a person instead of failing it
        to_review = (not evidence.passed and policy.canary.on_insufficient == "review"
                     and all(g.result != "fail" for g in evidence.gates))
        assert outcome.change is not None  # noqa: S101 - an apply candidate always carries its change
        change = outcome.change
        tier = policy.risk.tiers[req.tier or policy.risk.default_tier]
        faults.point("commit.before_tx")
        with self.store.tx() as s:
            j = self._lease(s, job, worker_id)
            r = self.store.get_request(s, req.id)
            model = self.store.get_model(s, req.model)
            parent = self.store.get_version(s, req.model, task.production.number or 1)
            number = 1 + max(v.number for v in s.exec(select(VersionRow).where(VersionRow.model == req.model)).all())
            s.add(ChangeRow(id=change.id, model=req.model, request_id=req.id, kind=change.kind,
                            method=outcome.change_method or req.method, digest=change.digest,
                            path=self.home.relative(change.path), size_bytes=outcome.change_size,
                            summary=json.dumps(outcome.change_summary)))
            s.add(VersionRow(model=req.model, number=number, parent=parent.number, request_id=req.id,
                             changes=json.dumps([*parent.change_ids, change.id]), tensors=json.dumps(outcome.manifest),
                             status=VersionStatus.CANDIDATE.value))
            r.candidate_version, r.change_id = number, change.id
            r.canary, r.mlflow_run_id, r.resolved = evidence.to_json(), None, json.dumps(outcome.resolved)
            model.candidate_version = number
            s.add_all([r, model])
            s.flush()
            self.store.transition(s, r, Event.APPLIED, worker_id, {
                "change": change.id, "change_kind": change.kind, "change_digest": change.digest, "version": number,
                "parent_version": parent.number, "tensors": outcome.change_summary.get("tensors", [])})
            gates_payload = {"metrics": evidence.metrics, "gates": [g.model_dump() for g in evidence.gates]}
            if not evidence.passed and not to_review:
                bad = [g for g in evidence.gates if g.result in ("fail", "insufficient")]
                r.error = "gates failed: " + "; ".join(f"{g.gate} ({g.why})" for g in bad)
                s.add(r)
                self.store.transition(s, r, Event.GATES_FAILED, "canary", gates_payload)
                discard_candidate(self.store, s, r, "canary", r.error)
            elif to_review:
                self.store.transition(s, r, Event.GATES_PASSED, "canary", {
                    **gates_payload, "approvers_needed": max(tier.approvers, 1),
                    "why": "not enough evidence on " + ", ".join(g.metric for g in evidence.gates if g.result == "insufficient")
                           + "; the policy sends such candidates to a person (canary.on_insufficient: review)"})
            elif tier.auto_approve:
                self.store.transition(s, r, Event.AUTO_APPROVED, "policy", {**gates_payload, "tier": req.tier})
                promote(self.store, s, r, "policy")
            else:
                self.store.transition(s, r, Event.GATES_PASSED, "canary", {**gates_payload, "approvers_needed": tier.approvers})
            j.state, j.stage, j.progress, j.updated_at = JobState.DONE.value, "done", 1.0, now()
            s.add(j)
            final = State(r.state)
        self.after_decision(req.model, req.id)
        return final

    def _commit_rollback(self, job: JobRow, worker_id: str, task: RollbackTask, outcome: Candidate) -> State:
        with self.store.read() as s:
            req = self.store.get_request(s, job.request_id)
        args = json.loads(job.args)
        policy = Policy.model_validate_json(req.policy or "{}")
        evidence = self._evidence(policy, outcome, "rollback")
        with self.store.tx() as s:
            j = self._lease(s, job, worker_id)
            r = self.store.get_request(s, req.id)
            model = self.store.get_model(s, req.model)
            j.state, j.stage, j.progress, j.updated_at = JobState.DONE.value, "done", 1.0, now()
            j.result = evidence.to_json()
            s.add(j)
            if model.production_version != task.production.number:
                j.error = f"production moved from v{task.production.number} to v{model.production_version}; roll back again"
                self.store.transition(s, r, Event.ROLLBACK_REFUSED, "canary", {"why": j.error})
                return State(r.state)
            gates_payload = {"metrics": evidence.metrics, "gates": [g.model_dump() for g in evidence.gates]}
            if not evidence.passed:
                bad = [g for g in evidence.gates if g.result in ("fail", "insufficient")]
                j.error = "the version without the change failed its canary: " + "; ".join(f"{g.gate} ({g.why})" for g in bad)
                self.store.transition(s, r, Event.ROLLBACK_REFUSED, "canary", {**gates_payload, "why": j.error})
                return State(r.state)
            number = 1 + max(v.number for v in s.exec(select(VersionRow).where(VersionRow.model == req.model)).all())
            s.add(VersionRow(model=req.model, number=number, parent=task.production.number, request_id=req.id,
                             changes=json.dumps([c.id for c in task.target.changes]), tensors=json.dumps(outcome.manifest),
                             status=VersionStatus.CANDIDATE.value))
            s.flush()
            move_production(self.store, s, req.model, number, old_status=VersionStatus.ROLLED_BACK)
            self.store.transition(s, r, Event.ROLLBACK, args.get("actor", "govern"), {
                "reason": args.get("reason"), "to_version": number, **gates_payload})
            self.store.audit(s, args.get("actor", "govern"), "model.rolled_back", req.model, {
                "request": req.id, "change": args["change"], "from_version": task.production.number, "to_version": number,
                "reapplied": [c.ref.id for c in task.stays], "reason": args.get("reason"), "tensors": outcome.manifest})
            final = State(r.state)
        self.after_decision(req.model, req.id)
        return final

    def fail_job(self, job: JobRow, worker_id: str, error: str) -> State:
        """End a job without a result: an apply fails its request; a rollback leaves the change in production."""
        with self.store.tx() as s:
            j = s.get(JobRow, job.id)
            if j is None or j.lease_owner != worker_id:
                raise LeaseLost(f"job {job.id} is no longer ours")
            r = self.store.get_request(s, job.request_id)
            j.state, j.error, j.updated_at = JobState.FAILED.value, error, now()
            s.add(j)
            if j.kind == JobKind.ROLLBACK:
                self.store.transition(s, r, Event.ROLLBACK_REFUSED, worker_id, {"error": error})
            else:
                r.error = error
                s.add(r)
                self.store.transition(s, r, Event.CRASH, worker_id, {"error": error})
            return State(r.state)

    def rollback_result(self, request_id: str) -> dict[str, Any] | None:
        """The last rollback job of a request: state, error and evidence."""
        with self.store.read() as s:
            j = s.exec(select(JobRow).where(JobRow.request_id == request_id, JobRow.kind == JobKind.ROLLBACK.value)
                       .order_by(col(JobRow.id).desc())).first()
        if j is None:
            return None
        return {"job": j.id, "state": j.state, "error": j.error,
                "evidence": Evidence.from_json(j.result) if j.result else None}


__all__ = ["JobsService", "LeaseLost"]
