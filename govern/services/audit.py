"""The audit trail's read side: search, export and verify; the monitor's check records; live workers."""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlmodel import select

from audits.trail import (
    Anchor,
    ExportFormat,
    VerifyResult,
    check_anchors,
    check_head,
    prove_export,
    prove_stored,
    read_export,
    verify_events,
    verify_export_reference,
    write_export,
)
from govern.anchors import HeadFile, mlflow_anchors
from govern.errors import InputError
from govern.services.base import ServiceBase
from govern.store import ModelRow, WorkerRow, as_utc


def process_gone(w: WorkerRow) -> bool:
    """A registered worker whose process on this host no longer exists (killed without unregistering)."""
    if not w.id.startswith(f"worker-{socket.gethostname()}-"):
        return False  # another host: only its heartbeat and lease tell
    try:
        os.kill(w.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class AuditService(ServiceBase):
    def audit_export(self, path: str | Path, fmt: str, since: datetime | None = None) -> int:
        """Write the trail (events at or after `since`) to `path` with a sealed footer; streams, in bounded memory."""
        if fmt not in ("jsonl", "csv"):
            raise InputError(f"format must be jsonl or csv, not {fmt!r}")
        out = Path(path)
        if out.is_symlink() or (out.exists() and not out.is_file()):  # the export is renamed into place: it would
            raise InputError(f"{out} exists and is not a regular file (a folder, link or device); "  # replace that
                             "export to a new file name, or to a regular file to replace")
        with self.store.trail_reader() as trail:
            return write_export(trail.stored_events(), path, cast(ExportFormat, fmt), since=since)  # checked above

    def audit_verify(self, path: str | Path | None = None, *, mlflow: bool = True) -> VerifyResult:
        """Verify the live trail against its anchors, or an export file cross-checked against the database.

        Live: the chain from event 1, then the anchors outside the database
        (`govern.anchors`: the head file, and with `mlflow` the heads tagged on
        MLflow's registered models and newest runs) — a trail cut at the tail,
        emptied, or with events appended past the anchored head fails. An
        export: its own chain and footer, then every event must be the
        database's event of that number, and the database must still hold the
        export's head.

        Every hash is recomputed either way. The trail and the file are streamed
        (`audits.trail.stream`); when that cannot prove them good, the reference
        check (`_verify_live_reference`, `_verify_export_reference`: everything
        in memory) decides and names the first bad event.
        """
        if path is None:
            with self.store.trail_reader() as trail:
                proven = prove_stored(trail.stored_events())
                if proven is not None:
                    anchors = self.trail_anchors(mlflow=mlflow)
                    hash_at = trail.hashes({n for a in anchors for n in (a.seq, a.seq - 1)})
                    return check_head(proven.count, proven.count, proven.head_hash, hash_at, anchors) or proven
            return self._verify_live_reference(mlflow=mlflow)
        if not Path(path).is_file():
            raise InputError(f"export file {path} does not exist")
        with self.store.trail_reader() as trail:
            proven = prove_export(path, database=trail.hashes_from)
        return proven or self._verify_export_reference(path)

    def _verify_live_reference(self, *, mlflow: bool) -> VerifyResult:
        """The live trail verified in memory: the chain (`verify_events`), then the anchors."""
        live = self.store.audit_events()
        result = verify_events(live)
        if not result.ok:
            return result
        return check_anchors(live, self.trail_anchors(mlflow=mlflow)) or result

    def _verify_export_reference(self, path: str | Path) -> VerifyResult:
        """An export verified in memory (`verify_export_reference`), then each event looked up in the database."""
        result = verify_export_reference(path)
        if not result.ok:
            return result
        # a writer who recomputed the whole chain still disagrees with the database
        live = self.store.audit_events()
        events, _ = read_export(path)
        by_seq = {e.seq: e for e in live}
        for e in events:
            mine = by_seq.get(e.seq)
            if mine is None:
                why = (f"event {e.seq} is in the export but not in the database, which ends at event "
                       f"{live[-1].seq if live else 0} (forged, or the database lost it)")
                return VerifyResult(False, 0, e.seq, why, None)
            if mine.hash != e.hash:
                why = f"event {e.seq} differs from the database's event {e.seq} (chain rewritten?)"
                return VerifyResult(False, 0, e.seq, why, None)
        return result

    def trail_anchors(self, *, mlflow: bool = True) -> list[Anchor]:
        """The trail's heads recorded outside the database (the head file; MLflow's tags when reachable)."""
        anchors = [a for a in [HeadFile(self.home.root).anchor()] if a is not None]
        if mlflow:
            try:
                names = [m.name for m in self.store_models()]
                anchors += mlflow_anchors(self.registry, names)
            except Exception as e:  # noqa: BLE001 - MLflow down: the head file alone is checked, and we say so
                print(f"warning: MLflow's anchors not checked ({type(e).__name__}); the head file is", file=sys.stderr)
        return anchors

    def store_models(self) -> list[ModelRow]:
        with self.store.read() as s:
            return list(s.exec(select(ModelRow)).all())

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

    def live_workers(self, model: str | None = None, within_s: float = 30.0) -> list[WorkerRow]:
        """Workers (of `model`, if given) whose heartbeat is at most `within_s` seconds old."""
        cutoff = datetime.now(UTC) - timedelta(seconds=within_s)
        with self.store.read() as s:
            q = select(WorkerRow)
            if model:
                q = q.where(WorkerRow.model == model)
            rows = list(s.exec(q).all())
        return [w for w in rows if as_utc(w.heartbeat_at) >= cutoff and not process_gone(w)]

    def record_monitor_check(self, model: str, version: int, policy: str, metrics: dict[str, Any],
                             triggers: list[dict[str, Any]]) -> None:
        with self.store.tx() as s:
            self.store.audit(s, "monitor", "monitor.check", model, {
                "version": version, "policy": policy, "breached": any(t["result"] == "fail" for t in triggers),
                "metrics": {k: v for k, v in metrics.items() if v is not None},
                "triggers": [{"gate": t["gate"], "result": t["result"], "why": t.get("why")} for t in triggers]})
