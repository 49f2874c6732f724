"""Reading an export back, and verifying it against its chain and footer.

:func:`read_export` parses a file written by `audits.trail.export` (the format
is detected from the content) and raises :class:`TrailError`, naming the line,
for a file it cannot read or parse.  :func:`verify_export_reference` (the
reference behind `audits.trail.stream.verify_export`) never raises for
tampered or malformed content; it returns a failed :class:`VerifyResult`
naming the problem (with the line number for malformed files).  Only a file
that cannot be read at all raises :class:`TrailError`.  Parsing is strict: no
NaN or infinity, no duplicate keys, no missing or unexpected fields.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audits.trail.events import AuditEvent, TrailError, VerifyResult, failed_result, verify_events
from audits.trail.export import (
    CSV_COLUMNS,
    EVENT_FIELDS,
    EXPORT_FORMAT_VERSION,
    FOOTER_FIELDS,
    ExportFooter,
    expected_footer_hash,
)

NO_FOOTER_REASON: str = "no export footer: the file was truncated or is not a govern audit export"

_CSV_DIGITS = re.compile(r"[0-9]+")


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Parsed:
    """What could be read from an export: the events up to any error, the footer, the error."""

    events: list[AuditEvent]
    footer: ExportFooter | None
    error: TrailError | None


class _JsonContentError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonContentError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _JsonContentError(f"{name} is not allowed")


def _load_json(text: str, line: int, what: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys; errors name the line."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise TrailError(f"{what} is not valid JSON ({error.msg} at column {error.colno})", line=line) from error
    except _JsonContentError as error:
        raise TrailError(f"{what} is not acceptable JSON ({error})", line=line) from error
    except (ValueError, RecursionError) as error:
        raise TrailError(f"{what} is not acceptable JSON ({error})", line=line) from error


def _check_field_names(mapping: Mapping[str, Any], expected: Sequence[str], line: int, what: str) -> None:
    missing = [name for name in expected if name not in mapping]
    if missing:
        raise TrailError(f"{what} is missing field(s): {', '.join(missing)}", line=line)
    extra = sorted(name for name in mapping if name not in expected)
    if extra:
        raise TrailError(f"{what} has unexpected field(s): {', '.join(extra)}", line=line)


def _typed(value: Any, name: str, kinds: tuple[type, ...], line: int, what: str) -> Any:
    """Return ``value`` if it is one of ``kinds`` (bool never counts as int), else raise."""
    ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
    if not ok:
        wanted = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise TrailError(f"{what}: field {name!r} must be {wanted}, found {json.dumps(value)[:40]}", line=line)
    return value


def _event_from_mapping(mapping: Mapping[str, Any], line: int) -> AuditEvent:
    _check_field_names(mapping, EVENT_FIELDS, line, "event record")
    return AuditEvent(
        seq=_typed(mapping["seq"], "seq", (int,), line, "event record"),
        ts=_typed(mapping["ts"], "ts", (str,), line, "event record"),
        actor=_typed(mapping["actor"], "actor", (str,), line, "event record"),
        action=_typed(mapping["action"], "action", (str,), line, "event record"),
        subject=_typed(mapping["subject"], "subject", (str,), line, "event record"),
        payload=_typed(mapping["payload"], "payload", (dict,), line, "event record"),
        prev_hash=_typed(mapping["prev_hash"], "prev_hash", (str,), line, "event record"),
        hash=_typed(mapping["hash"], "hash", (str,), line, "event record"),
    )


def _footer_from_mapping(mapping: Mapping[str, Any], line: int) -> ExportFooter:
    what = "export footer"
    _check_field_names(mapping, FOOTER_FIELDS, line, what)
    none = type(None)
    footer = ExportFooter(
        format_version=_typed(mapping["format_version"], "format_version", (int,), line, what),
        first_seq=_typed(mapping["first_seq"], "first_seq", (int, none), line, what),
        last_seq=_typed(mapping["last_seq"], "last_seq", (int, none), line, what),
        count=_typed(mapping["count"], "count", (int,), line, what),
        head_hash=_typed(mapping["head_hash"], "head_hash", (str, none), line, what),
        anchor_prev_hash=_typed(mapping["anchor_prev_hash"], "anchor_prev_hash", (str, none), line, what),
        exported_at=_typed(mapping["exported_at"], "exported_at", (str,), line, what),
        footer_hash=_typed(mapping["footer_hash"], "footer_hash", (str,), line, what),
    )
    if footer.format_version != EXPORT_FORMAT_VERSION:
        raise TrailError(f"unsupported export format version {footer.format_version}", line=line)
    if footer.count < 0:
        raise TrailError(f"{what}: count {footer.count} is negative", line=line)
    optional = (footer.first_seq, footer.last_seq, footer.head_hash, footer.anchor_prev_hash)
    if footer.count == 0 and any(value is not None for value in optional):
        raise TrailError(f"{what}: an empty export must have null first_seq, last_seq and hashes", line=line)
    if footer.count > 0 and any(value is None for value in optional):
        raise TrailError(f"{what}: first_seq, last_seq, head_hash and anchor_prev_hash must be set", line=line)
    if footer.first_seq is not None and footer.last_seq is not None and not 1 <= footer.first_seq <= footer.last_seq:
        raise TrailError(f"{what}: range {footer.first_seq} to {footer.last_seq} is not valid", line=line)
    return footer


def _split_lines(text: str) -> list[str]:
    """Split on newlines only (not on U+2028 and friends, which JSON strings may hold raw)."""
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_jsonl(text: str) -> _Parsed:
    events: list[AuditEvent] = []
    footer: ExportFooter | None = None
    for number, raw in enumerate(_split_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            if footer is not None:
                raise TrailError("unexpected record after the export footer", line=number)
            record = _load_json(raw, number, "record")
            if not isinstance(record, dict):
                raise TrailError("record is not a JSON object", line=number)
            kind = record.get("record")
            fields = {key: value for key, value in record.items() if key != "record"}
            if kind == "event":
                events.append(_event_from_mapping(fields, number))
            elif kind == "footer":
                footer = _footer_from_mapping(fields, number)
            else:
                raise TrailError(f"unknown record type {kind!r} (expected 'event' or 'footer')", line=number)
        except TrailError as error:
            return _Parsed(events, None, error)
    return _Parsed(events, footer, None)


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, row); quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise TrailError(f"unreadable CSV ({error})", line=start) from error
        end = reader.line_num
        yield start, row


def _csv_header(row: list[str], line: int) -> list[str]:
    duplicates = sorted({name for name in row if row.count(name) > 1})
    if duplicates:
        raise TrailError(f"CSV header repeats column(s): {', '.join(duplicates)}", line=line)
    missing = [name for name in CSV_COLUMNS if name not in row]
    if missing:
        raise TrailError(f"CSV header is missing column(s): {', '.join(missing)}", line=line)
    extra = [name for name in row if name not in CSV_COLUMNS]
    if extra:
        raise TrailError(f"CSV header has unexpected column(s): {', '.join(extra)}", line=line)
    return row


def _csv_event(cells: Mapping[str, str], line: int) -> AuditEvent:
    seq_text = cells["seq"]
    if not _CSV_DIGITS.fullmatch(seq_text):
        raise TrailError(f"seq {seq_text!r} is not an integer", line=line)
    payload = _load_json(cells["payload"], line, "payload")
    fields: dict[str, Any] = {name: cells[name] for name in EVENT_FIELDS}
    fields.update(seq=int(seq_text), payload=payload)
    return _event_from_mapping(fields, line)


def _csv_footer(cells: Mapping[str, str], line: int) -> ExportFooter:
    for name in EVENT_FIELDS:
        if name not in ("payload", "hash") and cells[name] != "":
            raise TrailError(f"footer row must leave column {name!r} empty", line=line)
    body = _load_json(cells["payload"], line, "footer")
    if not isinstance(body, dict):
        raise TrailError("footer payload is not a JSON object", line=line)
    if "footer_hash" in body:
        raise TrailError("footer payload must not hold footer_hash (it goes in the hash column)", line=line)
    return _footer_from_mapping({**body, "footer_hash": cells["hash"]}, line)


def _parse_csv(text: str) -> _Parsed:
    events: list[AuditEvent] = []
    footer: ExportFooter | None = None
    columns: list[str] | None = None
    try:
        for number, row in _csv_rows(text):
            if not row:
                continue
            if columns is None:
                columns = _csv_header(row, number)
                continue
            if footer is not None:
                raise TrailError("unexpected record after the export footer", line=number)
            if len(row) != len(columns):
                raise TrailError(f"expected {len(columns)} fields, found {len(row)}", line=number)
            cells = dict(zip(columns, row, strict=True))  # lengths checked above
            if cells["record"] == "event":
                events.append(_csv_event(cells, number))
            elif cells["record"] == "footer":
                footer = _csv_footer(cells, number)
            else:
                raise TrailError(
                    f"unknown record type {cells['record']!r} (expected 'event' or 'footer')", line=number
                )
    except TrailError as error:
        return _Parsed(events, None, error)
    return _Parsed(events, footer, None)


def _first_content_line(text: str) -> str:
    for line in _split_lines(text):
        if line.strip():
            return line
    return ""


def _parse_text(text: str) -> _Parsed:
    """Parse export text, detecting the format from its first non-blank line."""
    first = _first_content_line(text)
    if not first:
        return _Parsed([], None, None)
    if first.lstrip().startswith("{"):
        return _parse_jsonl(text)
    if first.split(",", 1)[0].strip('"') == "record":
        return _parse_csv(text)
    return _Parsed([], None, TrailError("not a govern audit export (expected JSON Lines or a CSV header)", line=1))


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TrailError(f"cannot read audit export {str(path)!r}: {error.strerror or error}") from error


def _parse_bytes(data: bytes) -> _Parsed:
    """Decode (UTF-8, optional BOM) and parse; undecodable bytes end the parse at their line."""
    try:
        return _parse_text(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        bad = TrailError(f"not valid UTF-8 ({error.reason})", line=data[: error.start].count(b"\n") + 1)
        prefix = data[: data.rfind(b"\n", 0, error.start) + 1]
        parsed = _parse_text(prefix.decode("utf-8-sig"))
        return _Parsed(parsed.events, None, parsed.error or bad)


def _parse_file(path: str | Path) -> _Parsed:
    return _parse_bytes(_read_bytes(path))


def read_export(path: str | Path) -> tuple[list[AuditEvent], ExportFooter | None]:
    """Read an export written by :func:`export_events` (format detected from the content).

    Returns the events in file order and the footer (``None`` when the file
    has none).  Nothing is verified here; see :func:`verify_export`.  Raises
    TrailError, naming the line, for a file that cannot be read or parsed.
    """
    parsed = _parse_file(path)
    if parsed.error is not None:
        raise parsed.error
    return parsed.events, parsed.footer


# --------------------------------------------------------------------------- export verification


def _verify_unanchored(events: Sequence[AuditEvent]) -> VerifyResult:
    """Check the chain against its own first event (used when no trusted footer is available)."""
    if not events:
        return VerifyResult(ok=True, count=0, first_bad_seq=None, reason=None, head_hash=None)
    first = events[0]
    if isinstance(first.seq, bool) or not isinstance(first.seq, int):
        return failed_result(0, None, "first event has no usable sequence number", None)
    return verify_events(events, start_prev_hash=first.prev_hash, start_seq=first.seq)


def _after_last(events: Sequence[AuditEvent]) -> int | None:
    return events[-1].seq + 1 if events else None


def _verify_without_footer(events: Sequence[AuditEvent], reason: str) -> VerifyResult:
    """No trustworthy footer: report a chain break if there is one, else ``reason`` after the last event."""
    chain = _verify_unanchored(events)
    if not chain.ok:
        return chain
    return failed_result(chain.count, _after_last(events), reason, chain.head_hash)


def _verify_against_footer(events: Sequence[AuditEvent], footer: ExportFooter) -> VerifyResult:
    """Check a chain anchored at the footer's first_seq/anchor hash, then the footer's claims."""
    if footer.count == 0:
        if events:
            return failed_result(
                0,
                events[0].seq,
                f"event {events[0].seq}: the export footer records an empty export, but the file holds events",
                None,
            )
        return VerifyResult(ok=True, count=0, first_bad_seq=None, reason=None, head_hash=None)
    assert footer.first_seq is not None and footer.last_seq is not None and footer.anchor_prev_hash is not None  # noqa: S101 - _footer_from_mapping refuses a non-empty footer without them
    first, last = footer.first_seq, footer.last_seq
    chain = verify_events(events, start_prev_hash=footer.anchor_prev_hash, start_seq=first)
    if not chain.ok and chain.first_bad_seq is not None and chain.first_bad_seq <= last:
        return chain
    last_good = first + chain.count - 1
    if last_good < last:
        stops = f"stops at event {last_good}" if chain.count else "holds no events"
        return failed_result(
            chain.count,
            last_good + 1,
            f"event {last_good + 1}: missing; the export footer says the export runs to event {last} "
            f"but the file {stops} (truncated?)",
            chain.head_hash,
        )
    covered = last - first + 1
    if events[covered - 1].hash != footer.head_hash:
        return failed_result(
            covered - 1,
            last,
            f"event {last}: its hash differs from the head hash recorded in the export footer (edited and re-hashed?)",
            events[covered - 2].hash if covered > 1 else None,
        )
    if len(events) > covered:
        return failed_result(
            covered,
            last + 1,
            f"event {last + 1}: not covered by the export footer, which ends at event {last} (appended after export?)",
            footer.head_hash,
        )
    if footer.count != covered:
        return failed_result(
            min(covered, footer.count),
            first + min(covered, footer.count),
            f"the export footer is inconsistent: it counts {footer.count} events but spans events {first} to {last}",
            footer.head_hash,
        )
    return VerifyResult(ok=True, count=covered, first_bad_seq=None, reason=None, head_hash=footer.head_hash)


def _verify_parsed(parsed: _Parsed) -> VerifyResult:
    if parsed.error is not None:
        return _verify_without_footer(parsed.events, str(parsed.error))
    if parsed.footer is None:
        return _verify_without_footer(parsed.events, NO_FOOTER_REASON)
    if expected_footer_hash(parsed.footer) != parsed.footer.footer_hash:
        return _verify_without_footer(
            parsed.events, "the export footer was edited: its footer_hash does not match its contents"
        )
    return _verify_against_footer(parsed.events, parsed.footer)


def verify_export_reference(path: str | Path) -> VerifyResult:
    """Verify an export file: the chain, then the footer's seal, range, count and head hash (the reference:
    the whole file is parsed into events first; `audits.trail.stream.verify_export` streams, and asks this
    one whenever it cannot prove a file good).

    Never raises for tampered or malformed content -- that yields a failed
    result whose ``reason`` names the problem (and the line, for malformed
    files) and whose ``first_bad_seq`` is the first sequence number that is
    wrong or missing (for a file that stops being readable: the last readable
    event + 1, or None if there is none).  Raises TrailError only when the
    file cannot be read at all.  A passing result still has to be compared
    with the database head hash; see the module docstring.
    """
    return _verify_parsed(_parse_file(path))


__all__ = ["NO_FOOTER_REASON", "read_export", "verify_export_reference"]
