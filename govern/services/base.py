"""What every service module shares: one home, one store, the MLflow registry, and the after-decision hook."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from govern.deploy.runner import deliver
from govern.home import Home
from govern.registry import Registry
from govern.store import Store

if TYPE_CHECKING:
    from pathlib import Path


class ServiceBase:
    """State shared by the service modules (`govern.service.Govern` combines them)."""

    def __init__(self, home: Home | None = None) -> None:
        self.home = (home or Home.discover()).ensure()
        self.store = Store(self.home.db_url)
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
        """Make MLflow's aliases show what the database says (the source of truth)."""
        with self.store.read() as s:
            m = self.store.get_model(s, model)
            prod = self.store.get_version(s, model, m.production_version) if m.production_version else None
            cand = self.store.get_version(s, model, m.candidate_version) if m.candidate_version else None
        self.registry.set_alias(model, "production", prod.mlflow_version if prod else None)
        self.registry.set_alias(model, "candidate", cand.mlflow_version if cand else None)

    def after_decision(self, model: str, request_id: str | None) -> None:
        """After a committed decision: mirror MLflow's aliases and re-issue the request's certificate.

        Neither may undo the decision: a failure is printed and audited.
        """
        self.mirror_aliases(model)
        deliver(self, model, request_id)  # deploy hooks (govern.deploy.runner): audited, never undo the decision
        if request_id is None:
            return
        try:
            self.issue_certificate(request_id)
        except Exception as e:  # noqa: BLE001 - the decision stands; the failure is visible and audited
            print(f"warning: certificate for {request_id} not issued: {type(e).__name__}: {e}", file=sys.stderr)
            self.note("govern", "certificate.failed", request_id, {"error": f"{type(e).__name__}: {e}"})

    if TYPE_CHECKING:  # provided by govern.services.certificates

        def issue_certificate(self, request_id: str, out_dir: str | Path | None = None, *,
                              log: bool = True) -> dict[str, Path]: ...
