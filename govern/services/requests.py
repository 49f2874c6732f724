"""Requests: submit, admission, review, and the read models of requests and jobs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from editors import available_methods, method_spec, methods_for_kind
from govern.domain import RequestSpec
from govern.errors import ConflictError, InputError, PermissionDenied
from govern.lifecycle import ACTIVE, Event, JobKind, State
from govern.policy import Policy
from govern.services.base import ServiceBase
from govern.services.transitions import discard_candidate, promote
from govern.store import JobRow, RequestRow, ReviewRow, as_utc, new_id, now, row_values
from govern.text import identity
from govern.validation import refuse_controls

if TYPE_CHECKING:
    from govern.services.models import EditBudget


@dataclass
class _ActiveChanges:
    """A model's active requests (from admission until they end: `ACTIVE`) as admission sees them in one transaction.

    Read once (three columns, not whole rows), then kept up to date as the transaction admits more, so that
    judging a request costs the same however many are active, and each sees the ones admitted before it.
    """

    order: list[tuple[str, str]]  # (id, state), in the order the database returned them, then as admitted
    ids: set[str]
    by_key: dict[str, list[str]]  # conflict key -> ids of the active requests holding it
    budget: EditBudget | None = None  # production's edit budget, once a policy limit needs it

    @classmethod
    def read(cls, s: Session, model: str) -> _ActiveChanges:
        rows = s.exec(select(RequestRow.id, RequestRow.state, RequestRow.conflicts).where(
            RequestRow.model == model, col(RequestRow.state).in_([x.value for x in ACTIVE]))).all()
        changes = cls(order=[], ids=set(), by_key={})
        for rid, state, conflicts in rows:
            changes.add(rid, state, json.loads(conflicts or "[]"))
        return changes

    def add(self, request_id: str, state: str, keys: list[str]) -> None:
        self.order.append((request_id, state))
        self.ids.add(request_id)
        for key in set(keys):
            self.by_key.setdefault(key, []).append(request_id)

    def count(self, excluding: str) -> int:
        return len(self.order) - (excluding in self.ids)

    def conflicting(self, keys: list[str], excluding: str) -> list[tuple[str, str]]:
        """The active requests sharing a conflict key with `keys`, in `order`."""
        hits = {rid for key in set(keys) for rid in self.by_key.get(key, ()) if rid != excluding}
        return [(rid, state) for rid, state in self.order if rid in hits] if hits else []


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
        rows: list[dict[str, Any]] = []
        with self.store.tx() as s, self.store.audit_batch(s):  # one insert for the requests, one for their events
            for r in requests:
                spec_text = r.spec_json()
                row = row_values(
                    RequestRow, id=new_id("req"), kind=r.kind, model=resolved[r.model or model],
                    method=r.method or r.default_method, title=r.title()[:300], spec=spec_text,
                    conflicts=json.dumps(r.conflict_keys()), submitted_by=actor or identity(r.submitted_by or ""),
                    justification=r.justification, evidence=json.dumps(r.evidence),
                    valid_from=r.valid_from, valid_until=r.valid_until)
                rows.append(row)
                self.store.audit(s, row["submitted_by"], "request.submitted", row["id"], {
                    "model": row["model"], "kind": row["kind"], "method": row["method"], "title": row["title"],
                    "spec": json.loads(spec_text), "submitted_by": row["submitted_by"], "evidence": r.evidence})
            self.store.insert_rows(s, RequestRow, rows)
        return [row["id"] for row in rows]

    def admit(self, request_id: str, policy: Policy, actor: str = "policy") -> State:
        """Judge a submitted request against the policy; queue an apply job if admitted (`admit_many` of one)."""
        return self.admit_many([request_id], policy, actor)[0]

    def admit_many(self, request_ids: Sequence[str], policy: Policy, actor: str = "policy", *,
                   chunk: int = 500) -> list[State]:
        """Judge submitted requests against the policy, in order; queue an apply job for each one admitted.

        The same checks, transition and audit event per request as one at a time, and the same outcome: each
        request sees the ones admitted before it (conflicts, the active count, the edit budget). `chunk`
        requests share one transaction (one lock, one commit, one anchor write; their events inserted
        together, `Store.audit_batch`). A request no longer submitted is left as it is and its state returned,
        so admitting again after a crash admits nothing twice. An error rolls back the chunk it happened in;
        the chunks before it stay committed. `govern apply`, `govern submit` and the UI come here.
        """
        if chunk < 1:
            raise InputError(f"chunk must be at least 1, not {chunk}")
        policy_json = policy.model_dump_json()  # stored on every request it judged: built once, not per request
        ids = list(request_ids)
        states: list[State] = []
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            with self.store.tx() as s, self.store.audit_batch(s):
                rows = {r.id: r for r in s.exec(select(RequestRow).where(col(RequestRow.id).in_(set(part)))).all()}
                active: dict[str, _ActiveChanges] = {}
                jobs: list[dict[str, Any]] = []
                for rid in part:
                    req = rows.get(rid) or self.store.get_request(s, rid)  # the second raises NotFoundError
                    states.append(self._admit_one(s, req, policy, policy_json, actor, active, jobs))
                self.store.insert_rows(s, JobRow, jobs)
        return states

    def _admit_one(self, s: Session, req: RequestRow, policy: Policy, policy_json: str, actor: str,
                   active: dict[str, _ActiveChanges], jobs: list[dict[str, Any]]) -> State:
        if req.state != State.SUBMITTED:
            return State(req.state)
        spec = req.request()
        changes = active.get(req.model)
        if changes is None:
            changes = active[req.model] = _ActiveChanges.read(s, req.model)
        reasons = self._admission_reasons(s, req, spec, policy, changes)
        tier = policy.risk.tier_for_texts(spec.risk_texts())
        req.tier = tier
        req.policy = policy_json
        if reasons:
            req.error = "; ".join(reasons)
            return self.store.transition(s, req, Event.DENY, actor, {"reasons": reasons, "policy": policy.name})
        jobs.append(row_values(JobRow, kind=JobKind.APPLY.value, request_id=req.id, model=req.model))  # queued
        t = policy.risk.tiers[tier]
        state = self.store.transition(s, req, Event.ADMIT, actor, {
            "policy": policy.name, "tier": tier, "approvers": t.approvers, "auto_approve": t.auto_approve})
        changes.add(req.id, state.value, req.conflict_keys)
        return state

    def _admission_reasons(self, s: Session, req: RequestRow, spec: RequestSpec, policy: Policy,
                           changes: _ActiveChanges) -> list[str]:
        a = policy.admission
        reasons = []
        allowed = a.allowed_methods.get(req.kind, [])
        if req.method not in allowed:
            reasons.append(f"method {req.method!r} is not allowed for {req.kind} requests "
                           f"(allowed: {', '.join(allowed) or 'none'})")
        if req.valid_until is not None and as_utc(req.valid_until) <= as_utc(now()):
            reasons.append(f"valid_until {as_utc(req.valid_until).isoformat()} has already passed")
        reasons += spec.admission_problems(a)
        n_active = changes.count(excluding=req.id)
        if n_active >= a.max_active_edits_per_model:
            reasons.append(f"model {req.model} already has {n_active} active changes (limit {a.max_active_edits_per_model})")
        reasons += self._budget_reasons(s, req, spec, a, changes)
        for other_id, other_state in changes.conflicting(req.conflict_keys, excluding=req.id):
            reasons.append(f"conflicts with active request {other_id} ({other_state}) on the same subject and relation")
        return reasons

    def _budget_reasons(self, s: Session, req: RequestRow, spec: RequestSpec, a: Any,
                        changes: _ActiveChanges) -> list[str]:
        """The model's edit budget (`ModelsService.budget_in`, read once per transaction) against the policy's limits."""
        if a.max_active_facts_per_model is None and a.max_cumulative_update_norm is None:
            return []
        if changes.budget is None:  # production does not move while requests are admitted
            changes.budget = self.budget_in(s, req.model)
        b = changes.budget
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
                self.store.get_model(s, model)  # an unknown name is an error naming the registered ones, not an empty list
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
