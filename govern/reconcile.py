"""One source of truth: MLflow's state derived from the database, idempotently.

The database (and its audit trail) decides; MLflow mirrors. A decision is
committed to the database first and MLflow is brought in line afterwards, by
`reconcile_model`, which is safe to run any number of times, from any
process, after any crash:

1. **runs and model versions** — every version row without an MLflow model
   version gets one. A version that added a change gets the change's run
   (params, metrics, the change file, the canary report, the card), built
   from the stored rows; any other version (the base, one built by a
   rollback) a run of its own. An earlier attempt's finished run or model
   version (found by the tags ``govern.model`` and ``govern.version``) is
   reused, so a crash between MLflow and the database write never doubles them;
2. **aliases** — ``production`` and ``candidate`` point where the database says;
3. **anchors** — each registered model carries the audit trail's head as tags
   (`govern.anchors`); every run logged here carries the head of its moment;
4. **orphans** (with ``collect``) — runs and model versions that no database
   row names, older than ``grace_s``, are tagged ``govern.orphan`` (a run left
   RUNNING by a killed process is ended as KILLED) and collected: runs are
   deleted (MLflow keeps deleted runs restorable), model versions removed.
   Change files under the home's ``changes/`` that no change row names, older
   than ``grace_s``, are deleted — nothing outside that folder is touched;
5. **certificates** — a request whose newest issued certificate does not
   describe its current state (skipped when MLflow or the disk failed) is
   issued one again;
6. jobs marked "waiting for MLflow" are marked done.

It runs after every decision (`ServiceBase.after_decision`, without step 4),
at worker start, in `govern monitor`, and as `govern reconcile`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from govern import faults
from govern.anchors import head_tags
from govern.policy import Policy
from govern.store import AuditRow, ChangeRow, JobRow, ModelRow, RequestRow, VersionRow

if TYPE_CHECKING:
    from govern.service import Govern

Log = Callable[[str], None]
WAITING_FOR_MLFLOW = "waiting for MLflow"
DEFAULT_GRACE_S = 600.0


@dataclass
class Report:
    """What one reconcile of one model did."""

    model: str
    runs: list[str] = field(default_factory=list)  # runs logged
    versions: list[int] = field(default_factory=list)  # database versions given an MLflow model version
    aliases: dict[str, str | None] = field(default_factory=dict)
    orphan_runs: list[str] = field(default_factory=list)
    orphan_versions: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.runs or self.versions:
            out.append(f"{self.model}: mirrored versions {', '.join(f'v{n}' for n in self.versions) or '-'} "
                       f"({len(self.runs)} runs logged)")
        if self.orphan_runs or self.orphan_versions or self.orphan_files:
            out.append(f"{self.model}: collected {len(self.orphan_runs)} orphan runs, {len(self.orphan_versions)} "
                       f"orphan model versions, {len(self.orphan_files)} orphan change files")
        if self.certificates:
            out.append(f"{self.model}: re-issued certificates of {', '.join(self.certificates)}")
        return out or [f"{self.model}: in line with the database (production -> MLflow version "
                       f"{self.aliases.get('production') or '-'})"]


def _head(gov: Govern) -> Any:
    with gov.store.read() as s:
        row = s.exec(select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1)).first()
    return row.to_event() if row else None


def _find_run(gov: Govern, model: str, number: int) -> str | None:
    """A finished run an earlier attempt logged for version `number` (newest first)."""
    runs = gov.registry.client.search_runs(
        [gov.registry.experiment_id],
        filter_string=f"tags.`govern.model` = '{model}' and tags.`govern.version` = '{number}'",
        order_by=["attributes.start_time DESC"], max_results=10)
    for run in runs:
        if run.info.status == "FINISHED" and "govern.orphan" not in run.data.tags:
            return str(run.info.run_id)
    return None


def _model_versions(gov: Govern, model: str) -> list[Any]:
    return list(gov.registry.client.search_model_versions(f"name='{model}'"))


def _log_change_run(gov: Govern, model: str, v: VersionRow, req: RequestRow, crow: ChangeRow) -> str:
    """The MLflow run of the change that made version `v`, from the stored rows."""
    from audits.evidence import Evidence
    from govern.services.cards import render_card

    evidence = Evidence.from_json(req.canary) if req.canary else None
    summary = json.loads(crow.summary or "{}")
    policy = Policy.model_validate_json(req.policy) if req.policy else None
    hp = policy.method_config(req.method).model_dump() if policy else {}
    metrics: dict[str, float | None] = {}
    texts = {"change.json": json.dumps(summary, indent=2)}
    if evidence is not None:
        metrics = {**{k: val for k, val in evidence.metrics.items() if val is not None},
                   "ppl_production": evidence.report.ppl_production, "ppl_candidate": evidence.report.ppl_candidate,
                   "seconds_total": evidence.seconds, "seconds_edit": evidence.edit_seconds}
        texts["canary.json"] = evidence.to_json(indent=2)
        texts["card.md"] = render_card(req, evidence, summary)
    outcome = "gates_passed" if evidence is not None and evidence.passed else "gates_failed"
    return gov.registry.log_run(
        name=f"{model}: {req.title}",
        tags={"govern.model": model, "govern.request": req.id, "govern.kind": "change", "govern.version": str(v.number),
              "govern.change": crow.id, "govern.outcome": outcome, **head_tags(_head(gov))},
        params={"method": req.method, "request_id": req.id, "request_kind": req.kind, "change_kind": crow.kind,
                "layer": summary.get("layer"), "module": summary.get("module"), "covariance": summary.get("covariance"),
                "parent_version": v.parent, "policy": policy.name if policy else None, "tier": req.tier,
                "change_bytes": crow.size_bytes, "change_digest": crow.digest, **{f"hp.{k}": val for k, val in hp.items()}},
        metrics=metrics, files={"change": gov.home.resolve(crow.path)}, texts=texts)


def _mirror_version(gov: Govern, model: str, v: VersionRow, mvs: list[Any], report: Report) -> None:
    """Give database version `v` its MLflow model version (step 1 of the module docstring)."""
    from govern.registry import MODEL_ARTIFACT

    with gov.store.read() as s:
        last = v.change_ids[-1] if v.change_ids else None
        crow = s.get(ChangeRow, last) if last else None
        req = s.get(RequestRow, v.request_id) if v.request_id else None
    added_change = crow is not None and req is not None and crow.request_id == req.id
    run_id = _find_run(gov, model, v.number)
    if run_id is None:
        if added_change:
            assert crow is not None and req is not None  # noqa: S101 - added_change says so
            run_id = _log_change_run(gov, model, v, req, crow)
        else:
            ref = gov.version(model, v.number)
            run_id = gov.registry.log_run(
                name=f"{model}: v{v.number}",
                tags={"govern.model": model, "govern.kind": "version", "govern.request": v.request_id or "",
                      "govern.version": str(v.number), **head_tags(_head(gov))},
                params={"version": v.number, "changes": ",".join(c.id for c in ref.changes),
                        "base_digest": ref.base.digest}, metrics={})
        report.runs.append(run_id)
        faults.point("reconcile.after_run")
    mv = next((m for m in mvs if m.run_id == run_id), None)
    if mv is None:
        arts = {a.path for a in gov.registry.client.list_artifacts(run_id)}
        if MODEL_ARTIFACT not in arts:
            gov.registry.log_version_model(run_id, model, gov.version(model, v.number))
        mv = gov.registry.client.create_model_version(
            model, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
            tags={"govern.kind": "candidate" if added_change else "version", "govern.version": str(v.number),
                  "govern.request": v.request_id or ""})
        mvs.append(mv)
        faults.point("reconcile.after_version")
    with gov.store.tx() as s:
        row = gov.store.get_version(s, model, v.number)
        if row.mlflow_version is None:
            row.mlflow_version = str(mv.version)
            s.add(row)
            if added_change and req is not None:
                r = gov.store.get_request(s, req.id)
                if r.change_id == last:  # the request's newest application
                    r.mlflow_run_id = run_id
                    s.add(r)
            gov.store.audit(s, "reconciler", "mlflow.mirrored", model,
                            {"version": v.number, "mlflow_version": str(mv.version), "run": run_id})
    report.versions.append(v.number)


def _collect(gov: Govern, model: str, mvs: list[Any], grace_s: float, report: Report) -> None:
    """Step 4: orphan runs and model versions of `model`."""
    cutoff_ms = (time.time() - grace_s) * 1000
    with gov.store.read() as s:
        named = {v.mlflow_version for v in s.exec(select(VersionRow).where(VersionRow.model == model)).all()}
        run_ids = {r.mlflow_run_id for r in s.exec(select(RequestRow).where(RequestRow.model == model)).all()}
    keep_runs = {m.run_id for m in mvs if str(m.version) in named} | {r for r in run_ids if r}
    client = gov.registry.client
    for m in mvs:
        if str(m.version) not in named and m.creation_timestamp < cutoff_ms:
            client.delete_model_version(model, str(m.version))
            report.orphan_versions.append(str(m.version))
    runs = client.search_runs([gov.registry.experiment_id], filter_string=f"tags.`govern.model` = '{model}'",
                              max_results=5000)
    for run in runs:
        rid = run.info.run_id
        if rid in keep_runs or run.info.start_time >= cutoff_ms:
            continue
        client.set_tag(rid, "govern.orphan", "no database row names this run (collected by the reconciler)")
        if run.info.status == "RUNNING":
            client.set_terminated(rid, "KILLED")
        client.delete_run(rid)
        report.orphan_runs.append(rid)


def collect_files(gov: Govern, grace_s: float) -> list[str]:
    """Change files (and write leftovers) under the home's ``changes/`` that no change row names, older than grace.

    A change's sidecars (e.g. the keys a projected method stored beside it, `editors.sidecars.keys_path_for`)
    belong to the change and are kept with it."""
    from editors.sidecars import keys_path_for

    folder = gov.home.changes
    if not folder.is_dir():
        return []
    with gov.store.read() as s:
        files = [gov.home.resolve(c.path).resolve() for c in s.exec(select(ChangeRow)).all()]
    named = set(files) | {keys_path_for(f) for f in files}
    cutoff = time.time() - grace_s
    gone = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.is_symlink() or p.resolve() in named:
            continue
        if p.stat().st_mtime < cutoff:
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def _certificates(gov: Govern, model: str, report: Report) -> None:
    """Step 5: re-issue the certificate of every measured request whose newest one describes another state."""
    with gov.store.read() as s:
        reqs = s.exec(select(RequestRow).where(RequestRow.model == model, col(RequestRow.canary).is_not(None))).all()
        issued: dict[str, str] = {}
        for e in s.exec(select(AuditRow).where(AuditRow.action == "certificate.issued").order_by(col(AuditRow.seq))):
            issued[e.subject] = json.loads(e.payload).get("state", "")
    for r in reqs:
        if issued.get(r.id) != r.state:
            gov.issue_certificate(r.id)
            report.certificates.append(r.id)


def reconcile_model(gov: Govern, model: str, *, collect: bool = False, grace_s: float = DEFAULT_GRACE_S,
                    certificates: bool = True) -> Report:
    """Bring MLflow in line with the database for `model` (see the module docstring). Idempotent."""
    report = Report(model)
    with gov.store.read() as s:
        m = gov.store.get_model(s, model)
        pending = list(s.exec(select(VersionRow).where(VersionRow.model == model, col(VersionRow.mlflow_version).is_(None))
                              .order_by(col(VersionRow.number))).all())
        prod = gov.store.get_version(s, model, m.production_version) if m.production_version else None
    reg = gov.registry
    reg.ensure_registered_model(model, f"governed model {model}")
    mvs = _model_versions(gov, model)
    for v in pending:
        _mirror_version(gov, model, v, mvs, report)
    with gov.store.read() as s:
        m = gov.store.get_model(s, model)
        prod = gov.store.get_version(s, model, m.production_version) if m.production_version else None
        cand = gov.store.get_version(s, model, m.candidate_version) if m.candidate_version else None
    for alias, row in (("production", prod), ("candidate", cand)):
        want = row.mlflow_version if row else None
        reg.set_alias(model, alias, want)
        report.aliases[alias] = want
    for k, val in head_tags(_head(gov)).items():
        reg.client.set_registered_model_tag(model, k, val)
    if collect:
        _collect(gov, model, _model_versions(gov, model), grace_s, report)
    if certificates:
        _certificates(gov, model, report)
    with gov.store.tx() as s:
        for j in s.exec(select(JobRow).where(JobRow.model == model, JobRow.stage == WAITING_FOR_MLFLOW)).all():
            j.stage = "done"
            s.add(j)
    return report


def reconcile(gov: Govern, model: str | None = None, *, collect: bool = True, grace_s: float = DEFAULT_GRACE_S,
              log: Log = lambda _m: None) -> list[Report]:
    """`reconcile_model` for `model` (or every registered model), then the orphan change files."""
    with gov.store.read() as s:
        names = [model] if model else [r.name for r in s.exec(select(ModelRow).order_by(col(ModelRow.name))).all()]
        if model:
            gov.store.get_model(s, model)  # unknown model: one clear line
    reports = [reconcile_model(gov, name, collect=collect, grace_s=grace_s) for name in names]
    if collect:
        files = collect_files(gov, grace_s)
        if reports:
            reports[0].orphan_files = files
    for r in reports:
        for line in r.lines():
            log(line)
    return reports


def reconcile_quietly(gov: Govern, model: str, *, collect: bool = False, what: str = "reconcile") -> bool:
    """`reconcile_model`, where a failure must not stop the caller (a worker starting, a monitor pass):
    printed to stderr and left for the next run. Returns whether it succeeded."""
    try:
        reconcile_model(gov, model, collect=collect)
        if collect:
            collect_files(gov, DEFAULT_GRACE_S)
        return True
    except Exception as e:  # noqa: BLE001 - the database is the truth; MLflow catches up at the next reconcile
        print(f"warning: {what}: MLflow not brought in line with the database for {model} "
              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); `govern reconcile` retries",
              file=sys.stderr)
        return False


__all__ = ["DEFAULT_GRACE_S", "WAITING_FOR_MLFLOW", "Report", "collect_files", "reconcile", "reconcile_model",
           "reconcile_quietly"]
