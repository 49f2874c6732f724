"""MLflow: one run per change, one registered model per governed model, a model
version per candidate, aliases ``production`` and ``candidate``.

Every model version is a loadable MLflow model (`govern.pyfunc`): its run logs
the pyfunc model under ``model/`` — the version's change files and a small JSON
pinning the base checkpoint by path and sha256, never a copy of the weights —
and the version's source is ``runs:/<run>/model``. So
``mlflow.pyfunc.load_model("models:/NAME@production")`` and
``mlflow models serve -m models:/NAME@production`` serve what the database
says production is.

MLflow is the change log and the registry people browse; it has no approvals
and no alias history, so the database and the audit trail stay the source of
truth and MLflow mirrors them. mlflow is imported lazily (it is slow to import).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from govern.home import Home
from govern.host import BaseRef, ChangeRef, VersionRef
from govern.locks import first_use

EXPERIMENT = "govern-changes"
MODEL_ARTIFACT = "model"  # where a run holds its version's pyfunc model


class Registry:
    def __init__(self, home: Home) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        from mlflow.tracking import MlflowClient

        from govern.retry import call_mlflow

        self.home = home
        with first_use(home, home.mlflow_uri, "mlflow"):  # first use migrates MLflow's schema: one process at a time
            self.client = MlflowClient(tracking_uri=home.mlflow_uri, registry_uri=home.mlflow_uri)
            exp = call_mlflow(lambda: self.client.get_experiment_by_name(EXPERIMENT), "opening the tracking store")
            self.experiment_id = (
                exp.experiment_id
                if exp
                else self.client.create_experiment(EXPERIMENT, artifact_location=home.mlflow_artifacts.as_uri())
            )
            call_mlflow(lambda: self.client.search_registered_models(max_results=1), "opening the model registry")

    # -- runs ----------------------------------------------------------------
    def log_run(
        self,
        *,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, float | None],
        files: dict[str, Path] | None = None,
        texts: dict[str, str] | None = None,
    ) -> str:
        """Create a finished run with params, metrics and artifacts; return its id."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        rid = run.info.run_id
        try:
            for k, v in params.items():
                self.client.log_param(rid, k, str(v)[:6000])
            for k, v in metrics.items():
                if v is not None:
                    self.client.log_metric(rid, k, float(v))
            for sub, path in (files or {}).items():
                self.client.log_artifact(rid, str(path), artifact_path=sub)
            with tempfile.TemporaryDirectory() as d:
                for fname, text in (texts or {}).items():
                    p = Path(d) / fname
                    p.write_text(text, encoding="utf-8")
                    self.client.log_artifact(rid, str(p))
            self.client.set_terminated(rid, "FINISHED")
        except BaseException:
            self.client.set_terminated(rid, "FAILED")
            raise
        return rid

    def log_artifacts(self, run_id: str, paths: Any, artifact_path: str) -> None:
        """Add files to an existing (finished) run, e.g. a re-issued certificate."""
        for p in paths:
            self.client.log_artifact(run_id, str(p), artifact_path=artifact_path)

    # -- registry ------------------------------------------------------------
    def ensure_registered_model(self, name: str, description: str = "") -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=description)

    def register_base(self, name: str, checkpoint: dict[str, Any]) -> str:
        """Register version 1 (the base checkpoint, described by its pinned files) as a pyfunc model."""
        self.ensure_registered_model(name, f"governed model {name}")
        rid = self.log_run(
            name=f"{name}: base checkpoint",
            tags={"govern.model": name, "govern.kind": "base"},
            params={"source": checkpoint.get("source"), "base_digest": checkpoint.get("base_digest")},
            metrics={},
            texts={"checkpoint.json": json.dumps(checkpoint, indent=2)},
        )
        base = BaseRef(name=name, path=str(checkpoint["path"]), files=dict(checkpoint["files"]),
                       digest=str(checkpoint["base_digest"]))
        self.log_version_model(rid, name, VersionRef(base=base, number=1))
        mv = self.client.create_model_version(name, source=f"runs:/{rid}/{MODEL_ARTIFACT}", run_id=rid,
                                              tags={"govern.kind": "base", "govern.version": "1"})
        self.client.set_registered_model_alias(name, "production", mv.version)
        return str(mv.version)

    def register_candidate(self, name: str, run_id: str, request_id: str, *, parent: VersionRef, change: ChangeRef,
                           manifest: dict[str, str]) -> str:
        """A model version for the candidate `parent` + `change`: its run logs the pyfunc model first."""
        ref = VersionRef(base=parent.base, number=None, changes=(*parent.changes, change), manifest=manifest)
        self.log_version_model(run_id, name, ref)
        mv = self.client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
                                              tags={"govern.kind": "candidate", "govern.request": request_id})
        self.client.set_registered_model_alias(name, "candidate", mv.version)
        return str(mv.version)

    def register_version(self, name: str, ref: VersionRef, *, request_id: str | None = None) -> str:
        """A model version for a version made without a candidate run (e.g. by a rollback job): a run of its own."""
        rid = self.log_run(name=f"{name}: v{ref.number}",
                           tags={"govern.model": name, "govern.kind": "version", "govern.request": request_id or ""},
                           params={"version": ref.number, "changes": ",".join(c.id for c in ref.changes),
                                   "base_digest": ref.base.digest}, metrics={})
        self.log_version_model(rid, name, ref)
        mv = self.client.create_model_version(name, source=f"runs:/{rid}/{MODEL_ARTIFACT}", run_id=rid,
                                              tags={"govern.kind": "version", "govern.version": str(ref.number)})
        return str(mv.version)

    def log_version_model(self, run_id: str, name: str, ref: VersionRef) -> None:
        """Log the pyfunc model of `ref` (`govern.pyfunc`) into the run under ``model/``."""
        from govern.pyfunc import save_version_model

        with tempfile.TemporaryDirectory() as d:
            path = save_version_model(Path(d) / MODEL_ARTIFACT, name, ref)
            self.client.log_artifacts(run_id, str(path), artifact_path=MODEL_ARTIFACT)

    def set_alias(self, name: str, alias: str, version: str | None) -> None:
        if version is None:
            try:
                self.client.delete_registered_model_alias(name, alias)
            except Exception:  # noqa: BLE001 - absent alias: nothing to delete
                return
        else:
            self.client.set_registered_model_alias(name, alias, version)

    def aliases(self, name: str) -> dict[str, str]:
        rm = self.client.get_registered_model(name)
        return {k: str(v) for k, v in (rm.aliases or {}).items()}
