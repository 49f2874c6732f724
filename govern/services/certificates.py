"""Change certificates (F1-F7, `audits.certificate`): build from the stored records, render, log, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from audits.certificate import build, render
from govern.errors import ConflictError
from govern.services.base import ServiceBase
from govern.store import ChangeRow, ReviewRow, VersionRow, now

if TYPE_CHECKING:
    from audits.trail import AuditEvent


class CertificatesService(ServiceBase):
    if TYPE_CHECKING:  # provided by RequestsService

        def request_events(self, request_id: str) -> list[AuditEvent]: ...

    def certificate(self, request_id: str) -> dict[str, Any]:
        """The change certificate of a request as it stands now."""
        with self.store.read() as s:
            req = self.store.get_request(s, request_id)
            evidence = req.report()
            if evidence is None:
                raise ConflictError(f"request {request_id} is {req.state} and has no canary evidence yet; "
                                    "a certificate is issued once a worker has applied and measured it")
            version = s.exec(select(VersionRow).where(VersionRow.model == req.model, VersionRow.request_id == req.id)
                             .order_by(col(VersionRow.number).desc())).first()
            model = self.store.get_model(s, req.model)
            crow = s.get(ChangeRow, req.change_id) if req.change_id else None
            reviews = s.exec(select(ReviewRow).where(ReviewRow.request_id == req.id).order_by(col(ReviewRow.id))).all()
        request = req.model_dump(mode="json", exclude={"spec", "canary", "policy", "resolved", "conflicts"})
        request["evidence"] = req.evidence_list
        request["what"] = [list(row) for row in req.request().describe()]
        change = None if crow is None else {**json.loads(crow.summary), "id": crow.id, "kind": crow.kind,
                                            "digest": crow.digest, "size_bytes": crow.size_bytes}
        events = [{"seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action, "hash": e.hash,
                   "payload": e.payload} for e in self.request_events(req.id)]
        return build(
            request=request, evidence=evidence, change=change,
            versions={"parent": version.parent if version else None, "candidate": version.number if version else None,
                      "production_now": model.production_version},
            reviews=[{"reviewer": r.reviewer, "decision": r.decision, "comment": r.comment,
                      "candidate_version": r.candidate_version, "at": r.created_at.isoformat()} for r in reviews],
            events=events, policy=json.loads(req.policy) if req.policy else None,
            mlflow={"run_id": req.mlflow_run_id, "model": req.model, "version": version.mlflow_version if version else None},
            issued_at=now().isoformat())

    def issue_certificate(self, request_id: str, out_dir: str | Path | None = None, *, log: bool = True,
                          actor: str = "govern") -> dict[str, Path]:
        """Render the certificate (JSON, Markdown, HTML, PNG plots); log it to MLflow and the audit trail.

        Written to `out_dir` or `.govern/certificates/<request>/`. Re-issued at
        every decision (candidate measured, approved/rejected, promoted, rolled
        back), so the latest file always describes the request's current state.
        `actor` is who asked (``govern`` when the service re-issues it after a decision).
        """
        cert = self.certificate(request_id)
        out = Path(out_dir) if out_dir else self.home.root / "certificates" / request_id
        paths = render(cert, out)
        if log:
            run_id = cert["F7_audit"]["mlflow"]["run_id"]
            if run_id:
                self.registry.log_artifacts(run_id, paths.values(), "certificate")
            with self.store.tx() as s:
                self.store.audit(s, actor, "certificate.issued", request_id,
                                 {"digest": cert["digest"], "state": cert["state"], "path": self.home.relative(paths["json"])})
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

    def change_summary(self, change_id: str | None) -> dict[str, Any] | None:
        """Where a change sits: kind, size, layer, module, per tensor update norm vs weight norm."""
        if not change_id:
            return None
        with self.store.read() as s:
            row = s.get(ChangeRow, change_id)
        if row is None:
            return None
        return {**json.loads(row.summary), "id": row.id, "kind": row.kind, "digest": row.digest, "method": row.method,
                "size_bytes": row.size_bytes}
