"""Requests: submit, admission, review, and the read models of requests and jobs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from editors import available_methods, method_spec, methods_for_kind
from govern.domain import RequestSpec
from govern.errors import ConflictError, InputError, PermissionDenied
from govern.lifecycle import ACTIVE, Event, JobKind, State
from govern.policy import Policy
from govern.services.base import ServiceBase
from govern.services.transitions import discard_candidate, promote
from govern.store import JobRow, RequestRow, ReviewRow, as_utc, new_id, now
from govern.text import identity
from govern.validation import refuse_controls

if TYPE_CHECKING:
    from govern.services.models import EditBudget


class RequestsService(ServiceBase):
    if TYPE_CHECKING:  # provided by ModelsService

        def resolve_model(self, name: str | None) -> str: ...
        def budget_in(self, s: Session, name: str) -> EditBudget: ...

    def submit(self, requests: list[RequestSpec], actor: str, model: str | None = None) -> list[str]:
        """Store requests (all or nothing); returns their ids. Names are stored normalised (`govern.text.identity`)."""
        actor = identity(actor)
        if not (actor or "").strip() and any(not r.submitted_by for r in requests):
            raise InputError("who is submitting? pass --as USER (or set submitted_by in every request)")
        for r in requests:
            method = r.method or r.default_method
            if method not in available_methods():
                raise InputError(f"unknown method {method!r}; available: {', '.join(available_methods())}")
            spec = method_spec(method)
            if r.kind not in spec.request_kinds:
                raise InputError(f"method {method!r} does not serve {r.kind} requests; for {r.kind} use "
                                 f"{', '.join(methods_for_kind(r.kind)) or 'no registered method'}")
        resolved = {}
        for r in requests:
            key = r.model or model
            if key not in resolved:
                resolved[key] = self.resolve_model(key)
        ids: list[str] = []
        with self.store.tx() as s:
            for r in requests:
                row = RequestRow(
                    id=new_id("req"), kind=r.kind, model=resolved[r.model or model], method=r.method or r.default_method,
                    title=r.title()[:300], spec=r.spec_json(), conflicts=json.dumps(r.conflict_keys()),
                    submitted_by=actor or identity(r.submitted_by or ""), justification=r.justification,
                    evidence=json.dumps(r.evidence),
                    valid_from=r.valid_from, valid_until=r.valid_until)
                s.add(row)
                self.store.audit(s, row.submitted_by, "request.submitted", row.id, {
                    "model": row.model, "kind": row.kind, "method": row.method, "title": row.title,
                    "spec": json.loads(row.spec), "submitted_by": row.submitted_by, "evidence": r.evidence})
                ids.append(row.id)
        return ids

    def admit(self, request_id: str, policy: Policy, actor: str = "policy") -> State:
        """Judge a submitted request against the policy; queue an apply job if admitted."""
        with self.store.tx() as s:
            req = self.store.get_request(s, request_id)
            if req.state != State.SUBMITTED:
                return State(req.state)
            spec = req.request()
            reasons = self._admission_reasons(s, req, spec, policy)
            tier = policy.risk.tier_for_texts(spec.risk_texts())
            req.tier = tier
            req.policy = policy.model_dump_json()
            if reasons:
                req.error = "; ".join(reasons)
                return self.store.transition(s, req, Event.DENY, actor, {"reasons": reasons, "policy": policy.name})
            s.add(JobRow(kind=JobKind.APPLY.value, request_id=req.id, model=req.model))
            t = policy.risk.tiers[tier]
            return self.store.transition(s, req, Event.ADMIT, actor, {
                "policy": policy.name, "tier": tier, "approvers": t.approvers, "auto_approve": t.auto_approve})

    def _admission_reasons(self, s: Session, req: RequestRow, spec: RequestSpec, policy: Policy) -> list[str]:
        a = policy.admission
        reasons = []
        allowed = a.allowed_methods.get(req.kind, [])
        if req.method not in allowed:
            reasons.append(f"method {req.method!r} is not allowed for {req.kind} requests "
                           f"(allowed: {', '.join(allowed) or 'none'})")
        if req.valid_until is not None and as_utc(req.valid_until) <= as_utc(now()):
            reasons.append(f"valid_until {as_utc(req.valid_until).isoformat()} has already passed")
        reasons += spec.admission_problems(a)
        # three columns, not whole rows: every admission reads every active request of the model
        active = s.exec(select(RequestRow.id, RequestRow.state, RequestRow.conflicts).where(
            RequestRow.model == req.model, RequestRow.id != req.id,
            col(RequestRow.state).in_([x.value for x in ACTIVE]))).all()
        if len(active) >= a.max_active_edits_per_model:
            reasons.append(f"model {req.model} already has {len(active)} active changes (limit {a.max_active_edits_per_model})")
        reasons += self._budget_reasons(s, req, spec, a)
        mine = set(req.conflict_keys)
        for other_id, other_state, other_conflicts in active:
            if mine & set(json.loads(other_conflicts or "[]")):
                reasons.append(f"conflicts with active request {other_id} ({other_state}) on the same subject and relation")
        return reasons

    def _budget_reasons(self, s: Session, req: RequestRow, spec: RequestSpec, a: Any) -> list[str]:
        """The model's edit budget (`ModelsService.budget_in`) against the policy's limits."""
        if a.max_active_facts_per_model is None and a.max_cumulative_update_norm is None:
            return []
        b = self.budget_in(s, req.model)
        reasons = []
        adding = len(getattr(spec, "facts", None) or [None])
        if a.max_active_facts_per_model is not None and b.facts + adding > a.max_active_facts_per_model:
            reasons.append(f"model {req.model} carries {b.facts} edited facts and this request adds {adding}: over the "
                           f"edit budget of {a.max_active_facts_per_model} (admission.max_active_facts_per_model); roll "
                           "back changes that are no longer needed, or raise the limit")
        if a.max_cumulative_update_norm is not None and b.update_norm >= a.max_cumulative_update_norm:
            reasons.append(f"model {req.model}'s changes sum to an update norm of {b.update_norm:.4g}, at or over the "
                           f"edit budget of {a.max_cumulative_update_norm:g} (admission.max_cumulative_update_norm); roll "
                           "back changes that are no longer needed, or raise the limit")
        return reasons

    def pending_requests(self, model: str | None = None) -> list[str]:
        """Requests still to be judged (submitted) or waiting for a worker (admitted)."""
        with self.store.read() as s:
            q = select(RequestRow.id).where(col(RequestRow.state).in_([State.SUBMITTED.value, State.ADMITTED.value]))
            q = q.order_by(col(RequestRow.created_at))
            if model:
                q = q.where(RequestRow.model == model)
            return list(s.exec(q).all())

    def review(self, request_id: str, decision: str, actor: str, comment: str) -> State:
        if decision not in ("approve", "reject"):
            raise InputError(f"decision must be approve or reject, not {decision!r}")
        if not actor or not actor.strip():
            raise InputError("who is reviewing? pass --as USER")
        if not comment or not comment.strip():
            raise InputError("a review needs a comment (--comment TEXT)")
        refuse_controls({"comment": comment}, "review", frozenset({"comment"}))  # newline and tab only
        actor = identity(actor)  # "Alice" and "alice " are the submitter alice: four-eyes holds on the person
        with self.store.tx() as s:
            req = self.store.get_request(s, request_id)
            if req.state != State.AWAITING_REVIEW:
                raise ConflictError(f"request {request_id} is {req.state}, not awaiting_review; nothing to review")
            if decision == "approve" and actor == identity(req.submitted_by):
                raise PermissionDenied(
                    f"{actor} submitted {request_id} and cannot approve it (four-eyes rule); ask another reviewer")
            earlier = s.exec(select(ReviewRow).where(ReviewRow.request_id == req.id, ReviewRow.decision == "approve",
                                                     ReviewRow.candidate_version == req.candidate_version)).all()
            if decision == "approve" and any(identity(r.reviewer) == actor for r in earlier):
                raise PermissionDenied(f"{actor} already approved {request_id}; approvals must come from distinct people")
            s.add(ReviewRow(request_id=req.id, candidate_version=req.candidate_version, reviewer=actor,
                            decision=decision, comment=comment))
            if decision == "reject":
                self.store.transition(s, req, Event.REJECT, actor, {"comment": comment})
                discard_candidate(self.store, s, req, actor, "rejected by reviewer")
            else:
                policy = Policy.model_validate_json(req.policy) if req.policy else None
                needed = policy.risk.tiers[req.tier].approvers if policy and req.tier else 1
                have = len(earlier) + 1
                counts = {"comment": comment, "approvals": have, "needed": needed}
                if have < max(needed, 1):
                    self.store.transition(s, req, Event.APPROVE, actor, counts)
                else:
                    self.store.transition(s, req, Event.APPROVE_FINAL, actor, counts)
                    promote(self.store, s, req, actor)
        self.after_decision(req.model, req.id)
        return State(req.state)

    # -- read models -------------------------------------------------------------------
    def get_request(self, request_id: str) -> RequestRow:
        with self.store.read() as s:
            return self.store.get_request(s, request_id)

    def list_requests(self, model: str | None = None) -> list[RequestRow]:
        with self.store.read() as s:
            q = select(RequestRow).order_by(col(RequestRow.created_at))
            if model:
                q = q.where(RequestRow.model == model)
            return list(s.exec(q).all())

    def request_events(self, request_id: str) -> list[Any]:
        return [e for e in self.store.audit_events() if e.subject == request_id or e.payload.get("request") == request_id]

    def reviews(self, request_id: str) -> list[ReviewRow]:
        with self.store.read() as s:
            return list(s.exec(select(ReviewRow).where(ReviewRow.request_id == request_id)).all())

    def jobs(self, request_id: str | None = None) -> list[JobRow]:
        with self.store.read() as s:
            q = select(JobRow).order_by(col(JobRow.id))
            if request_id:
                q = q.where(JobRow.request_id == request_id)
            return list(s.exec(q).all())
