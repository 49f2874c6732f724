"""Export files: the sealed footer and the JSON Lines and CSV renderings.

Export files
------------
:func:`export_events` writes JSON Lines (one object per line, ``"record":
"event"``) or CSV (columns ``record, seq, ts, actor, action, subject, payload,
prev_hash, hash``; ``payload`` holds JSON text).  The chain alone cannot show
that events were cut off the *end*, so every export closes with a footer record
(:class:`ExportFooter`) stating the first and last sequence numbers, the count,
the head hash, the ``prev_hash`` of the first exported event (the *anchor*, so
that a partial export that starts at event N still verifies) and the export
time, sealed by ``footer_hash``.  :func:`verify_export` checks the events
against the footer: a missing footer, a footer whose seal does not match, or a
footer that disagrees with the events all fail verification.
:func:`verify_export` never raises for tampered or malformed content; it
returns a failed :class:`VerifyResult` naming the problem (with the line
number for malformed files).  Only a file that cannot be read at all raises
:class:`TrailError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from audits.trail.events import AuditEvent, canonical_json, utf8_bytes

EXPORT_FORMAT_VERSION: int = 1
"""Version of the export file layout, recorded in every footer."""

ExportFormat = Literal["jsonl", "csv"]
EXPORT_FORMATS: tuple[str, ...] = ("jsonl", "csv")

EVENT_FIELDS: tuple[str, ...] = ("seq", "ts", "actor", "action", "subject", "payload", "prev_hash", "hash")
FOOTER_FIELDS: tuple[str, ...] = (
    "format_version",
    "first_seq",
    "last_seq",
    "count",
    "head_hash",
    "anchor_prev_hash",
    "exported_at",
    "footer_hash",
)
CSV_COLUMNS: tuple[str, ...] = ("record", *EVENT_FIELDS)


@dataclass(frozen=True)
class ExportFooter:
    """The closing record of an export; see the module docstring.

    For an empty export ``count`` is 0 and ``first_seq``, ``last_seq``,
    ``head_hash`` and ``anchor_prev_hash`` are ``None``.
    """

    format_version: int
    first_seq: int | None
    last_seq: int | None
    count: int
    head_hash: str | None
    anchor_prev_hash: str | None
    exported_at: str
    footer_hash: str



# --------------------------------------------------------------------------- footer


def _footer_body(
    format_version: int,
    first_seq: int | None,
    last_seq: int | None,
    count: int,
    head_hash: str | None,
    anchor_prev_hash: str | None,
    exported_at: str,
) -> dict[str, Any]:
    """The footer fields that ``footer_hash`` seals, in JSON form."""
    return {
        "format_version": format_version,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "count": count,
        "head_hash": head_hash,
        "anchor_prev_hash": anchor_prev_hash,
        "exported_at": exported_at,
    }


def compute_footer_hash(
    *,
    format_version: int,
    first_seq: int | None,
    last_seq: int | None,
    count: int,
    head_hash: str | None,
    anchor_prev_hash: str | None,
    exported_at: str,
) -> str:
    """Hex SHA-256 of the canonical JSON of the footer fields (tagged ``"record": "footer"``)."""
    body = _footer_body(format_version, first_seq, last_seq, count, head_hash, anchor_prev_hash, exported_at)
    sealed = {"record": "footer", **body}
    return hashlib.sha256(utf8_bytes(canonical_json(sealed, "footer"), "footer")).hexdigest()


def expected_footer_hash(footer: ExportFooter) -> str:
    return compute_footer_hash(
        format_version=footer.format_version,
        first_seq=footer.first_seq,
        last_seq=footer.last_seq,
        count=footer.count,
        head_hash=footer.head_hash,
        anchor_prev_hash=footer.anchor_prev_hash,
        exported_at=footer.exported_at,
    )


def make_footer(events: Sequence[AuditEvent], *, exported_at: str) -> ExportFooter:
    """The footer that closes an export of ``events`` (in file order)."""
    if events:
        first, last = events[0], events[-1]
        return seal_footer(first.seq, last.seq, len(events), last.hash, first.prev_hash, exported_at)
    return seal_footer(None, None, 0, None, None, exported_at)


def seal_footer(
    first_seq: int | None,
    last_seq: int | None,
    count: int,
    head_hash: str | None,
    anchor_prev_hash: str | None,
    exported_at: str,
) -> ExportFooter:
    """The footer of an export known by its first and last event (for a streaming writer)."""
    fields = _footer_body(EXPORT_FORMAT_VERSION, first_seq, last_seq, count, head_hash, anchor_prev_hash, exported_at)
    return ExportFooter(**fields, footer_hash=compute_footer_hash(**fields))


# --------------------------------------------------------------------------- rendering


def _event_record(event: AuditEvent) -> dict[str, Any]:
    """The JSON Lines object for an event; the payload is re-serialised with sorted keys."""
    payload = json.loads(canonical_json(event.payload, f"event {event.seq} payload"))
    return {
        "record": "event",
        "seq": event.seq,
        "ts": event.ts,
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "payload": payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _footer_record(footer: ExportFooter) -> dict[str, Any]:
    return {
        "record": "footer",
        **_footer_body(
            footer.format_version,
            footer.first_seq,
            footer.last_seq,
            footer.count,
            footer.head_hash,
            footer.anchor_prev_hash,
            footer.exported_at,
        ),
        "footer_hash": footer.footer_hash,
    }


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def footer_jsonl(footer: ExportFooter) -> str:
    """The footer's line of a JSON Lines export (without the newline)."""
    return _json_line(_footer_record(footer))


def footer_csv_row(footer: ExportFooter) -> list[str]:
    """The footer's row of a CSV export: its fields as canonical JSON in the payload column, the seal in hash."""
    body = {key: value for key, value in _footer_record(footer).items() if key not in ("record", "footer_hash")}
    return ["footer", "", "", "", "", "", canonical_json(body, "footer"), "", footer.footer_hash]


def render_jsonl(events: Sequence[AuditEvent], footer: ExportFooter) -> str:
    """The JSON Lines text of an export: one event per line, then the footer line."""
    lines = [_json_line(_event_record(event)) for event in events]
    lines.append(footer_jsonl(footer))
    return "".join(line + "\n" for line in lines)


def render_csv(events: Sequence[AuditEvent], footer: ExportFooter) -> str:
    """The CSV text of an export: header, one row per event, then the footer row."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for event in events:
        writer.writerow(
            [
                "event",
                event.seq,
                event.ts,
                event.actor,
                event.action,
                event.subject,
                canonical_json(event.payload, f"event {event.seq} payload"),
                event.prev_hash,
                event.hash,
            ]
        )
    writer.writerow(footer_csv_row(footer))
    return buffer.getvalue()


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def export_events(
    events: Sequence[AuditEvent],
    path: str | Path,
    fmt: ExportFormat,
    *,
    exported_at: str | None = None,
) -> int:
    """Write ``events`` and a closing footer to ``path``; return the number of events written.

    ``fmt`` is ``"jsonl"`` or ``"csv"``.  Events are written as given (a
    broken chain is exported as is, so that it can be examined); an empty
    sequence writes just a footer with count 0.  ``exported_at`` defaults to
    now (UTC).  The file is written to a sibling temporary file and renamed
    into place, so readers never see a half-written export.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    items = list(events)
    footer = make_footer(items, exported_at=_utc_now() if exported_at is None else exported_at)
    text = render_jsonl(items, footer) if fmt == "jsonl" else render_csv(items, footer)
    _write_atomically(Path(path), text)
    return len(items)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8", newline="")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


__all__ = [
    "CSV_COLUMNS",
    "EVENT_FIELDS",
    "EXPORT_FORMATS",
    "EXPORT_FORMAT_VERSION",
    "FOOTER_FIELDS",
    "ExportFooter",
    "ExportFormat",
    "compute_footer_hash",
    "expected_footer_hash",
    "export_events",
    "footer_csv_row",
    "footer_jsonl",
    "make_footer",
    "render_csv",
    "render_jsonl",
    "seal_footer",
]
