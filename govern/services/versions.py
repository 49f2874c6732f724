"""Rolling back any promoted change, and the promotions `govern monitor` makes when a change's time comes.

Production is a version: the base plus an ordered list of changes. Rolling back
change ``c`` of production ``[c1, …, c, …, cn]``:

* ``c`` is the newest: production moves to the version with exactly the changes
  below it — the weights it had before the change, bit for bit (rebuilt and
  compared with the recorded hashes before production moves);
* changes sit above ``c`` and all of them commute (low-rank updates are
  additive): a rollback job builds ``[c1, …, cn]`` without ``c`` — the changes
  above re-applied — and canaries it against production on the suites of the
  changes that stay; it becomes production only if its gates pass
  (``promoted → rolling_back → rolled_back``, or back to ``promoted``);
* with ``cascade=True`` (or ``rollback.reapply: never`` in the admitting policy,
  or a change above that does not commute: then ``cascade`` is required) the changes
  above are taken off too and re-queued (``rebase``): a worker recomputes them on
  the new production and they pass their canary and approvals again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from govern.errors import ConflictError, InputError, IntegrityError
from govern.lifecycle import IN_PRODUCTION, Event, JobKind, State, VersionStatus
from govern.policy import Policy
from govern.services.base import ServiceBase
from govern.services.transitions import move_production, promote
from govern.store import JobRow, ModelRow, RequestRow, VersionRow, as_utc
from govern.validation import refuse_controls

if TYPE_CHECKING:
    from govern.host import Loaded, VersionRef


@dataclass
class RollbackResult:
    request_id: str | None
    model: str
    from_version: int
    to_version: int | None  # None while a rollback job builds and canaries the version without the change
    tensors: list[dict[str, Any]]  # name, sha256 expected, sha256 now, equal
    rebased: list[str] = field(default_factory=list)  # newer requests taken off and re-queued (cascade)
    job_id: int | None = None  # the rollback job, when the change sits under newer ones


class VersionsService(ServiceBase):
    if TYPE_CHECKING:  # provided by ModelsService

        def list_models(self) -> list[ModelRow]: ...
        def version_ref(self, s: Session, model: str, number: int | None = None) -> VersionRef: ...
        def materialise(self, model: str, version: int | None = None, device: str = "cpu") -> Loaded: ...

    def rollback(self, target: str, actor: str, reason: str, *, cascade: bool = False) -> RollbackResult:
        """Take one change out of production (see the module docstring). `target`: a request id or a version number."""
        if not actor or not actor.strip():
            raise InputError("who is rolling back? pass --as USER")
        if not reason or not reason.strip():
            raise InputError("a rollback needs a reason (--reason TEXT)")
        refuse_controls({"reason": reason}, "rollback", frozenset({"reason"}))  # newline and tab only
        with self.store.read() as s:
            req, change_id, model = self._rollback_target(s, target)
            prod = self.store.get_version(s, model.name, model.production_version or 1)
            ids = prod.change_ids
            if change_id not in ids:
                raise ConflictError(
                    f"change {change_id} is not in production v{prod.number} of {model.name}; nothing to roll back")
            above = ids[ids.index(change_id) + 1:]
            kinds = {c: self.store.get_change(s, c).kind for c in above}
        policy = Policy.model_validate_json(req.policy) if req is not None and req.policy else None
        if above and policy is not None and policy.rollback.reapply == "never":
            cascade = True  # the admitting policy wants newer changes recomputed, not re-applied
        if above and not cascade:
            from editors.changes import change_kinds

            fixed = [c for c, k in kinds.items() if not getattr(change_kinds().get(k), "commutes", False)]
            if fixed:
                raise ConflictError(f"{len(fixed)} change(s) above it cannot be re-applied without it (kind "
                                    f"{kinds[fixed[0]]}); pass --cascade to take them off and recompute them")
            return self._queue_rollback_job(req, change_id, model, prod, actor, reason)
        return self._rollback_now(req, change_id, model, prod, above, actor, reason)

    def _rollback_target(self, s: Session, target: str) -> tuple[RequestRow | None, str, ModelRow]:
        t = target.strip()
        if t.lower().lstrip("v").isdigit():
            if len(t.lower().lstrip("v")) > 9:  # SQLite's INTEGER (and any real history) is far below 10**9
                raise InputError(f"version {t[:24]!r} is not a version of this model; `govern history` lists them")
            models = self.list_models()
            if len(models) != 1:
                raise InputError("with several models, roll back by request id (or pass --model)")
            version = self.store.get_version(s, models[0].name, int(t.lower().lstrip("v")))
            if version.parent is None:
                raise ConflictError(
                    f"v{version.number} of {models[0].name} is the base checkpoint; there is nothing to roll back to")
            parent = self.store.get_version(s, models[0].name, version.parent)
            added = [c for c in version.change_ids if c not in parent.change_ids]
            if len(added) != 1:
                raise ConflictError(
                    f"v{version.number} does not add exactly one change to v{parent.number}; roll back by request id")
            req = s.get(RequestRow, version.request_id) if version.request_id else None
            return req, added[0], self.store.get_model(s, models[0].name)
        req = self.store.get_request(s, t)
        if req.state not in IN_PRODUCTION or req.change_id is None:
            raise ConflictError(f"request {req.id} is {req.state}; only a promoted change can be rolled back")
        if req.state == State.ROLLING_BACK:
            raise ConflictError(f"request {req.id} is already being rolled back; `govern status {req.id}` shows the job")
        return req, req.change_id, self.store.get_model(s, req.model)

    def _find_version(self, s: Session, model: str, change_ids: list[str]) -> VersionRow | None:
        """The newest measured version whose change list is exactly `change_ids` (a candidate never discarded)."""
        rows = s.exec(select(VersionRow).where(VersionRow.model == model).order_by(col(VersionRow.number).desc())).all()
        for v in rows:
            if v.change_ids == change_ids and v.status != VersionStatus.DISCARDED.value:
                return v
        return None

    def _rollback_now(self, req: RequestRow | None, change_id: str, model: ModelRow, prod: VersionRow, above: list[str],
                      actor: str, reason: str) -> RollbackResult:
        """The change is the newest (or `cascade`): production goes to the version below it, checked bit for bit."""
        from editors.changes import tensor_sha256

        with self.store.read() as s:
            keep = prod.change_ids[: prod.change_ids.index(change_id)]
            target = self._find_version(s, model.name, keep)
            if target is None:
                raise IntegrityError(
                    f"no version of {model.name} holds exactly the changes below {change_id}; nothing was changed")
            removed = [self.store.get_change(s, c) for c in [change_id, *above]]
            above_reqs = [r.request_id for r in removed[1:] if r.request_id]
        loaded = self.materialise(model.name, target.number)  # checked against its manifest while loading
        params = dict(loaded.model.named_parameters())
        tensors = []
        for row in removed:
            for t in json.loads(row.summary).get("tensors", []):
                name = t["name"]
                # a tensor no staying change touches is the base checkpoint's, whose file was checked against its pin
                # while loading: the loaded target holds it (materialising the base a second time gave the same bytes)
                expect = target.manifest.get(name) or tensor_sha256(params[name])
                have = tensor_sha256(params[name])
                tensors.append({"name": name, "sha256_before_change": expect, "sha256_now": have, "equal": have == expect})
        if not all(t["equal"] for t in tensors):
            bad = next(t for t in tensors if not t["equal"])
            raise IntegrityError(
                f"rebuilt v{target.number} does not match the recorded original of {bad['name']}; nothing was changed")
        rebased: list[str] = []
        with self.store.tx() as s:
            m = self.store.get_model(s, model.name)
            if m.production_version != prod.number:
                raise ConflictError("production changed while rolling back; try again")
            for rid in reversed(above_reqs):  # newest first
                r = self.store.get_request(s, rid)
                r.candidate_version = None
                s.add(r)
                s.add(JobRow(kind=JobKind.APPLY.value, request_id=r.id, model=model.name))
                self.store.transition(s, r, Event.REBASE, actor, {
                    "reason": f"a change below it ({change_id}) was rolled back: {reason}", "from_version": prod.number})
                rebased.append(rid)
            # the versions on production's line that hold the change: the one that added it is rolled back,
            # those built on top of it are rebased (their requests were re-queued above)
            number: int | None = prod.number
            while number is not None:
                v = self.store.get_version(s, model.name, number)
                if change_id not in v.change_ids:
                    break
                added = v.change_ids[-1] == change_id
                v.status = (VersionStatus.ROLLED_BACK if added else VersionStatus.REBASED).value
                s.add(v)
                number = v.parent
            move_production(self.store, s, model.name, target.number,
                            old_status=VersionStatus.REBASED if above else VersionStatus.ROLLED_BACK)
            if req is not None:
                r = self.store.get_request(s, req.id)
                self.store.transition(s, r, Event.ROLLBACK, actor, {"reason": reason, "to_version": target.number})
            self.store.audit(s, actor, "model.rolled_back", model.name, {
                "request": req.id if req else None, "change": change_id, "from_version": prod.number,
                "to_version": target.number, "rebased": rebased, "reason": reason, "tensors": tensors})
        self.after_decision(model.name, req.id if req else None)
        return RollbackResult(req.id if req else None, model.name, prod.number, target.number, tensors, rebased)

    def _queue_rollback_job(self, req: RequestRow | None, change_id: str, model: ModelRow, prod: VersionRow,
                            actor: str, reason: str) -> RollbackResult:
        if req is None:
            raise ConflictError("a change under newer ones is rolled back by its request id, so the rollback can be tracked")
        with self.store.tx() as s:
            m = self.store.get_model(s, model.name)
            if m.production_version != prod.number:
                raise ConflictError("production changed while rolling back; try again")
            r = self.store.get_request(s, req.id)
            job = JobRow(kind=JobKind.ROLLBACK.value, request_id=r.id, model=model.name, args=json.dumps({
                "change": change_id, "from_version": prod.number, "actor": actor, "reason": reason}))
            s.add(job)
            s.flush()
            self.store.transition(s, r, Event.ROLLBACK_REQUESTED, actor, {
                "reason": reason, "change": change_id, "from_version": prod.number, "job": job.id,
                "why": "changes sit above it: the version without it is built and canaried before it becomes production"})
            job_id = job.id
        return RollbackResult(req.id, model.name, prod.number, None, [], job_id=job_id)

    def newest_change_request(self, model: str) -> str | None:
        """The request whose change is production's newest (what a breach rolls back first)."""
        with self.store.read() as s:
            m = self.store.get_model(s, model)
            ids = self.store.get_version(s, model, m.production_version or 1).change_ids
            return self.store.get_change(s, ids[-1]).request_id if ids else None

    # -- validity windows (govern monitor) ------------------------------------------------
    def expired_changes(self, model: str, at: datetime) -> list[tuple[str, datetime]]:
        """Promoted changes of `model` whose valid_until is at or before `at`, newest version first."""
        with self.store.read() as s:
            rows = s.exec(select(RequestRow).where(RequestRow.model == model, RequestRow.state == State.PROMOTED.value,
                                                   col(RequestRow.valid_until).is_not(None))).all()
            due = [r for r in rows if r.valid_until is not None and as_utc(r.valid_until) <= as_utc(at)]
        due.sort(key=lambda r: r.candidate_version or 0, reverse=True)
        return [(r.id, as_utc(r.valid_until)) for r in due if r.valid_until is not None]

    def promote_due(self, model: str, at: datetime, actor: str = "monitor") -> list[tuple[str, int]]:
        """Promote approved changes whose valid_from has come (oldest first); returns (request, version)."""
        with self.store.read() as s:
            rows = s.exec(select(RequestRow).where(RequestRow.model == model, RequestRow.state == State.APPROVED.value)
                          .order_by(col(RequestRow.updated_at))).all()
            due = [r.id for r in rows if r.valid_from is None or as_utc(r.valid_from) <= as_utc(at)]
        done = []
        for rid in due:
            with self.store.tx() as s:
                r = self.store.get_request(s, rid)
                if r.state != State.APPROVED:
                    continue
                _, version = promote(self.store, s, r, actor, at)
            self.mirror_aliases(model)
            if version is not None:
                done.append((rid, version))
                self.after_decision(model, rid)
        return done
