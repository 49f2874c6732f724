"""What every service module shares: one home, one store, the MLflow registry, and the after-decision hook."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from govern import faults
from govern.anchors import HeadFile
from govern.deploy.runner import deliver
from govern.home import Home
from govern.locks import first_use
from govern.reconcile import WAITING_FOR_MLFLOW, reconcile_model
from govern.registry import Registry
from govern.store import Store

if TYPE_CHECKING:
    from pathlib import Path


class ServiceBase:
    """State shared by the service modules (`govern.service.Govern` combines them)."""

    def __init__(self, home: Home | None = None) -> None:
        self.home = (home or Home.discover()).ensure()
        with first_use(self.home, self.home.db_url, "govern"):  # one process creates the schema, the others wait
            self.store = Store(self.home.db_url)
        self.store.anchor_sink = HeadFile(self.home.root).record
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """MLflow, built on first use: importing mlflow is slow."""
        if self._registry is None:
            self._registry = Registry(self.home)
        return self._registry

    def note(self, actor: str, action: str, subject: str, payload: dict[str, Any]) -> None:
        """Append one audit event on its own (sign-ins, exports)."""
        with self.store.tx() as s:
            self.store.audit(s, actor, action, subject, payload)

    def mirror_aliases(self, model: str) -> None:
        """Make MLflow's aliases show what the database says (the source of truth); never raises.

        A failure is printed and left for `govern.reconcile` (which `after_decision` runs).
        """
        try:
            with self.store.read() as s:
                m = self.store.get_model(s, model)
                prod = self.store.get_version(s, model, m.production_version) if m.production_version else None
                cand = self.store.get_version(s, model, m.candidate_version) if m.candidate_version else None
            self.registry.set_alias(model, "production", prod.mlflow_version if prod else None)
            self.registry.set_alias(model, "candidate", cand.mlflow_version if cand else None)
        except Exception as e:  # noqa: BLE001 - a committed decision stands; the reconciler repairs the aliases
            print(f"warning: MLflow aliases of {model} not updated ({type(e).__name__}); `govern reconcile` retries",
                  file=sys.stderr)

    def after_decision(self, model: str, request_id: str | None) -> None:
        """After a committed decision: bring MLflow in line (`govern.reconcile`), deliver, re-issue the certificate.

        None of them may undo the decision: a failure is printed and audited, the
        request's job shows "waiting for MLflow", and the next reconcile (worker
        start, `govern monitor`, `govern reconcile`) finishes what is missing.
        """
        faults.point("decision.after_commit")
        try:
            reconcile_model(self, model, certificates=False)  # type: ignore[arg-type]  # self is the whole Govern
        except Exception as e:  # noqa: BLE001 - the decision stands; the failure is visible and audited
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            print(f"warning: MLflow not in line with the database for {model} yet ({why}); "
                  "`govern reconcile` (or the next worker start / monitor pass) finishes it", file=sys.stderr)
            self._note_pending(model, request_id, why, WAITING_FOR_MLFLOW)
            return  # delivery and the certificate need MLflow too; the reconciler re-issues the certificate
        deliver(self, model, request_id)  # deploy hooks (govern.deploy.runner): audited, never undo the decision
        if request_id is None:
            return
        try:
            self.issue_certificate(request_id)
        except Exception as e:  # noqa: BLE001 - the decision stands; the failure is visible and audited
            print(f"warning: certificate for {request_id} not issued: {type(e).__name__}: {e}", file=sys.stderr)
            self.note("govern", "certificate.failed", request_id, {"error": f"{type(e).__name__}: {e}"})

    def _note_pending(self, model: str, request_id: str | None, why: str, stage: str) -> None:
        """Audit that MLflow lags the database, and show it on the request's newest job."""
        from sqlmodel import col, select

        from govern.store import JobRow

        try:
            with self.store.tx() as s:
                self.store.audit(s, "govern", "mlflow.pending", request_id or model, {"model": model, "error": why})
                if request_id:
                    j = s.exec(select(JobRow).where(JobRow.request_id == request_id)
                               .order_by(col(JobRow.id).desc())).first()
                    if j is not None:
                        j.stage = stage
                        s.add(j)
        except Exception as e:  # noqa: BLE001 - even the note failed (database gone too): say so, keep going
            print(f"warning: could not record that MLflow lags ({type(e).__name__}: {e})", file=sys.stderr)

    if TYPE_CHECKING:  # provided by govern.services.certificates

        def issue_certificate(self, request_id: str, out_dir: str | Path | None = None, *,
                              log: bool = True, actor: str = "govern") -> dict[str, Path]: ...
