"""Version moves inside a caller's transaction: promote a candidate, discard one.

Plain functions over a session, so requests (review), versions (rollback) and
commits (a job's outcome) share them without depending on each other.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from govern.errors import ConflictError
from govern.lifecycle import Event, JobKind, State, VersionStatus
from govern.store import JobRow, RequestRow, Store, as_utc, now


def promote(store: Store, s: Session, req: RequestRow, actor: str, at: datetime | None = None) -> tuple[State, int | None]:
    """Move production to the request's candidate, or send it back if production moved.

    A change whose ``valid_from`` lies after `at` (default: now) stays approved;
    `govern monitor` promotes it when the time comes.
    """
    model = store.get_model(s, req.model)
    cand = store.get_version(s, req.model, req.candidate_version) if req.candidate_version else None
    if cand is None:
        raise ConflictError(f"request {req.id} has no candidate version to promote")
    if req.valid_from is not None and as_utc(req.valid_from) > as_utc(at or now()):
        store.audit(s, actor, "promotion.deferred", req.id, {
            "valid_from": as_utc(req.valid_from).isoformat(),
            "why": "not valid yet; `govern monitor` promotes it when the time comes"})
        return State(req.state), None
    if cand.parent != model.production_version:
        discard_candidate(store, s, req, actor, f"production moved from v{cand.parent} to v{model.production_version}")
        s.add(JobRow(kind=JobKind.APPLY.value, request_id=req.id, model=req.model))
        return store.transition(s, req, Event.STALE, actor, {
            "reason": f"candidate v{cand.number} was built on v{cand.parent}, "
                      f"production is v{model.production_version}; re-queued"}), None
    old = move_production(store, s, req.model, cand.number)
    state = store.transition(s, req, Event.PROMOTE, actor, {"from_version": old, "to_version": cand.number})
    store.audit(s, actor, "model.promoted", req.model, {"request": req.id, "from_version": old, "to_version": cand.number})
    return state, cand.number


def move_production(store: Store, s: Session, model_name: str, number: int,
                    old_status: VersionStatus = VersionStatus.SUPERSEDED) -> int:
    """Point production at version `number`; the old production gets `old_status`. Returns the old number."""
    model = store.get_model(s, model_name)
    old = store.get_version(s, model_name, model.production_version or 1)
    new = store.get_version(s, model_name, number)
    old.status = old_status.value
    new.status = VersionStatus.PRODUCTION.value
    model.production_version = number
    if model.candidate_version == number:
        model.candidate_version = None
    s.add_all([old, new, model])
    return old.number


def discard_candidate(store: Store, s: Session, req: RequestRow, actor: str, why: str) -> None:
    if not req.candidate_version:
        return
    model = store.get_model(s, req.model)
    cand = store.get_version(s, req.model, req.candidate_version)
    cand.status = VersionStatus.DISCARDED.value
    if model.candidate_version == cand.number:
        model.candidate_version = None
    s.add_all([cand, model])
    req.candidate_version = None
    s.add(req)
    store.audit(s, actor, "candidate.discarded", req.model, {"request": req.id, "version": cand.number, "why": why})
