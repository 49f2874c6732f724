"""Where govern anchors the audit trail's head outside the database (see `audits.trail.anchor`).

* **The head file** ``.govern/trail.head``: after every commit that appended
  audit events, `Store.tx` hands the new head here; it is rewritten (under an
  exclusive ``flock``, only ever forwards) to hold the highest sequence
  number, its hash and the count. It is the one *complete* anchor: every
  commit updates it, so events past it were not written by govern.
* **MLflow**: every run the reconciler logs and every registered model carry
  the head as tags (``govern.trail.seq``, ``govern.trail.head``,
  ``govern.trail.count``), refreshed at each reconcile. A writer who edits the
  database and the head file still leaves these behind.
* **Export footers** (`audits.trail.export`) hold the head of what they
  exported; `govern audit verify FILE` checks the database against them.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audits.trail import Anchor, AuditEvent

if TYPE_CHECKING:
    from govern.registry import Registry

HEAD_FILE = "trail.head"
RECORD_BYTES = 256  # the head file's size: one JSON record padded with spaces, then a newline
TAG_SEQ, TAG_HEAD, TAG_COUNT = "govern.trail.seq", "govern.trail.head", "govern.trail.count"


class HeadFile:
    """The home's head file (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.path = root / HEAD_FILE

    def record(self, event: AuditEvent) -> None:
        """Move the anchored head forward to `event` (never back: concurrent writers commit in any order)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 4096)
            try:
                have = int(json.loads(raw)["seq"]) if raw.strip() else 0
            except (ValueError, KeyError, TypeError):
                have = 0  # unreadable: overwritten by the true head (the check reports the damage until then)
            if event.seq <= have:
                return
            data = json.dumps({"seq": event.seq, "head_hash": event.hash, "count": event.seq, "at": event.ts}).encode()
            # One fixed-size record written in place: no truncation, so the file is never empty, and ext4 does not
            # flush it on close (its auto_da_alloc heuristic does that after a truncate to zero: ~5 ms per commit).
            record = data.ljust(RECORD_BYTES - 1) + b"\n" if len(data) < RECORD_BYTES else data + b"\n"
            os.pwrite(fd, record, 0)
            if os.fstat(fd).st_size > len(record):  # a longer record from an older govern: cut what is past ours
                os.ftruncate(fd, len(record))
        finally:
            os.close(fd)  # closing releases the lock

    def anchor(self) -> Anchor | None:
        """The recorded head, or None when the file does not exist (a home from before anchoring)."""
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            return Anchor(seq=int(d["seq"]), head_hash=str(d["head_hash"]), count=int(d["count"]),
                          where=f"the head file {self.path}", complete=True)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            return Anchor(seq=0, head_hash="unreadable", count=0, where=f"the head file {self.path} (unreadable)",
                          complete=True)


def head_tags(events_head: AuditEvent | None) -> dict[str, str]:
    """The MLflow tags that anchor `events_head`."""
    if events_head is None:
        return {}
    return {TAG_SEQ: str(events_head.seq), TAG_HEAD: events_head.hash, TAG_COUNT: str(events_head.seq)}


def _from_tags(tags: dict[str, Any], where: str) -> Anchor | None:
    try:
        return Anchor(seq=int(tags[TAG_SEQ]), head_hash=str(tags[TAG_HEAD]), count=int(tags[TAG_COUNT]), where=where)
    except (KeyError, ValueError, TypeError):
        return None


def mlflow_anchors(registry: Registry, models: list[str], newest_runs: int = 20) -> list[Anchor]:
    """Anchors in MLflow: each registered model's tags and the newest runs' tags."""
    found: list[Anchor] = []
    for name in models:
        try:
            rm = registry.client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - a model MLflow does not know yet holds no anchor
            continue
        a = _from_tags(dict(rm.tags or {}), f"MLflow registered model {name!r}")
        if a:
            found.append(a)
    runs = registry.client.search_runs([registry.experiment_id], filter_string=f"tags.`{TAG_SEQ}` != ''",
                                       max_results=newest_runs, order_by=["attributes.start_time DESC"])
    for run in runs:
        a = _from_tags(dict(run.data.tags), f"MLflow run {run.info.run_id}")
        if a:
            found.append(a)
    return found


__all__ = ["HEAD_FILE", "HeadFile", "head_tags", "mlflow_anchors"]
