"""A hash-chained, append-only audit trail: event hashing, export and verification.

govern records every change it makes (a request submitted, an edit applied, a
canary passed, a promotion, a rollback) as an :class:`AuditEvent`.  Events are
numbered ``1, 2, 3, ...`` and each one carries two SHA-256 digests:

* ``prev_hash`` -- the ``hash`` of the event before it (:data:`GENESIS_HASH`,
  64 zeros, for event 1), and
* ``hash`` -- the SHA-256 of the event's *canonical bytes*
  (:func:`canonical_bytes`), which cover ``seq``, ``ts``, ``actor``,
  ``action``, ``subject``, ``payload`` and ``prev_hash``.

Because every hash covers the previous hash, the events form a chain: changing
any byte of any event changes that event's hash, which no longer matches the
``prev_hash`` stored in its successor.  :func:`verify_events` walks the chain
and reports the *first* sequence number at which it breaks, so an edited,
deleted, inserted or reordered event is located, not merely detected.

Canonical form
--------------
The canonical bytes are ``json.dumps`` of a dict holding the seven fields above
with ``sort_keys=True``, ``separators=(",", ":")``, ``ensure_ascii=False`` and
``allow_nan=False``, encoded as UTF-8.  Sorting applies at every level, so the
payload's key order never matters.  Payloads must be plain JSON: dicts with
string keys, lists (tuples are written as lists), strings, ints, finite floats,
booleans and ``None``.  Anything else -- NaN, infinity, a ``set``, a
``datetime``, a non-string key, a lone surrogate -- raises :class:`TrailError`
instead of being silently coerced, because a value that does not survive a JSON
round trip would make a stored event unverifiable later.

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

What this does and does not protect against
-------------------------------------------
The chain makes the trail *tamper-evident*, not tamper-proof, and only relative
to a trusted reference point:

* It catches accidental corruption and any edit made without recomputing
  hashes: a changed field, a deleted, inserted, duplicated or reordered event,
  a truncated file, an edited footer.
* It does **not** stop a writer who recomputes the chain.  SHA-256 is public and
  unkeyed; anyone can rewrite event 7, recompute hashes 7..N and a new footer,
  and the file will verify.  What defeats that is comparing the verified head
  hash (``VerifyResult.head_hash``) with a value the attacker cannot also
  rewrite: the head hash held by the database, or one anchored externally
  (published, signed, or written to write-once storage).  The service layer
  cross-checks the database head; this module only provides the pure functions
  that make that comparison meaningful.
* Truncation of a file is visible only through the footer, and a footer can be
  forged in the same way (recompute ``footer_hash``); again, the head hash and
  count must be compared with the database.
* Hashes give integrity, not authenticity or secrecy: the ``actor`` and ``ts``
  fields are what the writer claimed, nothing is signed, and payloads are
  stored in clear text.
* CSV exports are written verbatim (no spreadsheet-formula escaping, since that
  would change the hashed bytes); open them in a spreadsheet with care.  The
  standard ``csv`` module refuses fields over 128 KiB, so use JSON Lines for
  trails with very large payloads.

Everything here is standard library only and, apart from the three file
functions (:func:`export_events`, :func:`read_export`, :func:`verify_export`),
free of side effects.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from editors.errors import GovernError

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "GENESIS_HASH",
    "NO_FOOTER_REASON",
    "AuditEvent",
    "ExportFooter",
    "TrailError",
    "VerifyResult",
    "canonical_bytes",
    "compute_footer_hash",
    "compute_hash",
    "export_events",
    "make_event",
    "make_footer",
    "read_export",
    "verify_events",
    "verify_export",
]

GENESIS_HASH: str = "0" * 64
"""The ``prev_hash`` of event 1: there is no event before it."""

EXPORT_FORMAT_VERSION: int = 1
"""Version of the export file layout, recorded in every footer."""

NO_FOOTER_REASON: str = "no export footer: the file was truncated or is not a govern audit export"

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

_CSV_DIGITS = re.compile(r"[0-9]+")


class TrailError(GovernError, ValueError):
    """An event that cannot be canonicalised, or an export file that cannot be read or parsed.

    ``line`` is the 1-based line of the file where the problem was found, when
    there is one; the message then starts with ``"line N: "``.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class AuditEvent:
    """One link of the chain. Build new ones with :func:`make_event`."""

    seq: int
    ts: str
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a verification.

    ``count`` is the number of events that verified before the first problem
    (all of them when ``ok``).  ``first_bad_seq`` is the first sequence number
    at which the chain is broken, ``None`` when ``ok`` or when no sequence
    number can be named.  ``head_hash`` is the hash of the last good event
    (``None`` if there is none); callers compare it with the database head.
    """

    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str | None
    head_hash: str | None


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


# --------------------------------------------------------------------------- canonical form


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    """Raise TrailError unless ``value`` is plain, finite JSON with string keys."""
    if depth > 200:
        raise TrailError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TrailError(f"{where}: {value!r} is not allowed (NaN and infinity have no JSON form)")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TrailError(f"{where}: key {key!r} is not a string")
            _check_json_value(item, f"{where}[{key!r}]", depth + 1)
        return
    raise TrailError(f"{where}: a {type(value).__name__} is not JSON (use dicts, lists, str, int, float, bool, None)")


def _canonical_json(value: Any, where: str) -> str:
    """Deterministic JSON text: sorted keys, no spaces, raw UTF-8, no NaN."""
    _check_json_value(value, where)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:  # pragma: no cover - _check_json_value rejects these first
        raise TrailError(f"{where}: {error}") from error


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TrailError(f"{where}: text is not valid Unicode ({error.reason})") from error


def _require_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrailError(f"{name} must be an integer, not {type(value).__name__}")
    return value


def _require_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TrailError(f"{name} must be a string, not {type(value).__name__}")
    return value


def canonical_bytes(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    """The exact bytes an event's hash covers (see "Canonical form" above).

    Raises TrailError for a wrongly typed field or a payload that is not plain,
    finite JSON (for example one containing NaN).
    """
    if not isinstance(payload, dict):
        raise TrailError(f"payload must be a dict, not {type(payload).__name__}")
    document = {
        "seq": _require_int(seq, "seq"),
        "ts": _require_str(ts, "ts"),
        "actor": _require_str(actor, "actor"),
        "action": _require_str(action, "action"),
        "subject": _require_str(subject, "subject"),
        "payload": payload,
        "prev_hash": _require_str(prev_hash, "prev_hash"),
    }
    return _utf8(_canonical_json(document, "event"), "event")


def compute_hash(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """Hex SHA-256 of :func:`canonical_bytes` for these fields."""
    return hashlib.sha256(canonical_bytes(seq, ts, actor, action, subject, payload, prev_hash)).hexdigest()


def _event_hash(event: AuditEvent) -> str:
    return compute_hash(event.seq, event.ts, event.actor, event.action, event.subject, event.payload, event.prev_hash)


def _utc_timestamp(ts: str | datetime) -> str:
    """Check that ``ts`` is an ISO-8601 UTC timestamp; datetimes are converted to one."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise TrailError("ts must be timezone-aware (UTC)")
        return ts.astimezone(timezone.utc).isoformat()
    text = _require_str(ts, "ts")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise TrailError(f"ts {text!r} is not an ISO-8601 timestamp") from error
    offset = parsed.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise TrailError(f"ts {text!r} is not in UTC (expected an offset of +00:00)")
    return text


def make_event(
    prev: AuditEvent | None,
    *,
    ts: str | datetime,
    actor: str,
    action: str,
    subject: str,
    payload: Mapping[str, Any],
) -> AuditEvent:
    """The event that follows ``prev`` (or event 1 when ``prev`` is None).

    ``ts`` must be an ISO-8601 UTC string (kept byte for byte) or an aware
    datetime (converted with ``isoformat()``).  The payload is checked and
    stored as a detached copy in its JSON form, so the event holds exactly what
    an export will contain.  Raises TrailError for NaN/infinity or other
    non-JSON payload values.
    """
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    ts_text = _utc_timestamp(ts)
    if not isinstance(payload, Mapping):
        raise TrailError(f"payload must be a dict, not {type(payload).__name__}")
    stored_payload = json.loads(_canonical_json(dict(payload), "payload"))
    digest = compute_hash(seq, ts_text, actor, action, subject, stored_payload, prev_hash)
    return AuditEvent(seq, ts_text, actor, action, subject, stored_payload, prev_hash, digest)


# --------------------------------------------------------------------------- chain verification


def _failed(count: int, first_bad_seq: int | None, reason: str, head_hash: str | None) -> VerifyResult:
    return VerifyResult(ok=False, count=count, first_bad_seq=first_bad_seq, reason=reason, head_hash=head_hash)


def _sequence_problem(
    events: Sequence[AuditEvent],
    index: int,
    expected_seq: int,
    accepted: Mapping[int, str],
) -> tuple[int, str]:
    """Explain why ``events[index]`` does not carry ``expected_seq``; return (first bad seq, reason)."""
    event = events[index]
    found = event.seq
    if event.prev_hash == accepted[expected_seq - 1]:
        return expected_seq, (
            f"event {expected_seq}: the record that links to event {expected_seq - 1} is numbered {found!r} (edited?)"
        )
    if isinstance(found, int) and not isinstance(found, bool) and found in accepted and found - 1 in accepted:
        # The record repeats a sequence number that already verified.
        if event.hash == accepted[found]:
            return expected_seq, (
                f"event {expected_seq}: expected here, but found a second copy of event {found} (duplicated record?)"
            )
        if event.prev_hash == accepted[found - 1]:
            return found, (
                f"event {found}: two different records claim this sequence number and both link to "
                f"event {found - 1} (a forged event was inserted?)"
            )
        return expected_seq, f"event {expected_seq}: expected here, but found a record numbered {found} (edited?)"
    if any(later.seq == expected_seq for later in events[index + 1 :]):
        return expected_seq, (
            f"event {expected_seq}: out of order; found event {found!r} where event {expected_seq} "
            "was expected (reordered?)"
        )
    return expected_seq, (
        f"event {expected_seq}: missing; found event {found!r} where event {expected_seq} was expected (deleted?)"
    )


def _link_problem(event: AuditEvent, expected_seq: int, expected_prev: str, start_seq: int) -> str | None:
    """Reason why ``event`` (already at the right seq) does not link or hash correctly, or None."""
    if event.prev_hash != expected_prev:
        if expected_seq == start_seq:
            return (
                f"event {expected_seq}: prev_hash does not match the starting hash the chain must "
                "continue from (wrong anchor, or the first event was replaced?)"
            )
        return (
            f"event {expected_seq}: prev_hash does not match the hash of event {expected_seq - 1} "
            "(an event was inserted, removed or edited?)"
        )
    try:
        recomputed = _event_hash(event)
    except TrailError as error:
        return f"event {expected_seq}: its contents cannot be hashed ({error})"
    if recomputed != event.hash:
        return f"event {expected_seq}: hash does not match its contents (edited?)"
    return None


def verify_events(
    events: Sequence[AuditEvent],
    *,
    start_prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
) -> VerifyResult:
    """Walk the chain in the given order and stop at the first break.

    The first event must carry ``start_seq`` and link to ``start_prev_hash``
    (defaults: a whole trail from event 1); each later event must carry the
    next number, link to the previous event's hash, and hash to its own
    ``hash``.  A missing event, a reordering, an inserted event and an edit are
    told apart in ``reason``; ``first_bad_seq`` names where the chain breaks.
    An empty sequence verifies (count 0, head_hash None).
    """
    expected_seq = start_seq
    expected_prev = start_prev_hash
    accepted: dict[int, str] = {start_seq - 1: start_prev_hash}
    head: str | None = None
    for index, event in enumerate(events):
        if event.seq != expected_seq or isinstance(event.seq, bool):
            bad_seq, reason = _sequence_problem(events, index, expected_seq, accepted)
            # Everything before bad_seq verified; with a forged insertion bad_seq is an earlier number.
            last_good = accepted[bad_seq - 1] if bad_seq > start_seq else None
            return _failed(bad_seq - start_seq, bad_seq, reason, last_good)
        reason = _link_problem(event, expected_seq, expected_prev, start_seq)
        if reason is not None:
            return _failed(index, expected_seq, reason, head)
        accepted[expected_seq] = event.hash
        head = event.hash
        expected_prev = event.hash
        expected_seq += 1
    return VerifyResult(ok=True, count=len(events), first_bad_seq=None, reason=None, head_hash=head)


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
    return hashlib.sha256(_utf8(_canonical_json(sealed, "footer"), "footer")).hexdigest()


def _expected_footer_hash(footer: ExportFooter) -> str:
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
        fields = _footer_body(
            EXPORT_FORMAT_VERSION, first.seq, last.seq, len(events), last.hash, first.prev_hash, exported_at
        )
    else:
        fields = _footer_body(EXPORT_FORMAT_VERSION, None, None, 0, None, None, exported_at)
    return ExportFooter(**fields, footer_hash=compute_footer_hash(**fields))


# --------------------------------------------------------------------------- rendering


def _event_record(event: AuditEvent) -> dict[str, Any]:
    """The JSON Lines object for an event; the payload is re-serialised with sorted keys."""
    payload = json.loads(_canonical_json(event.payload, f"event {event.seq} payload"))
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


def render_jsonl(events: Sequence[AuditEvent], footer: ExportFooter) -> str:
    """The JSON Lines text of an export: one event per line, then the footer line."""
    lines = [_json_line(_event_record(event)) for event in events]
    lines.append(_json_line(_footer_record(footer)))
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
                _canonical_json(event.payload, f"event {event.seq} payload"),
                event.prev_hash,
                event.hash,
            ]
        )
    body = {key: value for key, value in _footer_record(footer).items() if key not in ("record", "footer_hash")}
    writer.writerow(["footer", "", "", "", "", "", _canonical_json(body, "footer"), "", footer.footer_hash])
    return buffer.getvalue()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


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
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
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
    fields = {name: cells[name] for name in EVENT_FIELDS}
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
            cells = dict(zip(columns, row))
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
        return _failed(0, None, "first event has no usable sequence number", None)
    return verify_events(events, start_prev_hash=first.prev_hash, start_seq=first.seq)


def _after_last(events: Sequence[AuditEvent]) -> int | None:
    return events[-1].seq + 1 if events else None


def _verify_without_footer(events: Sequence[AuditEvent], reason: str) -> VerifyResult:
    """No trustworthy footer: report a chain break if there is one, else ``reason`` after the last event."""
    chain = _verify_unanchored(events)
    if not chain.ok:
        return chain
    return _failed(chain.count, _after_last(events), reason, chain.head_hash)


def _verify_against_footer(events: Sequence[AuditEvent], footer: ExportFooter) -> VerifyResult:
    """Check a chain anchored at the footer's first_seq/anchor hash, then the footer's claims."""
    if footer.count == 0:
        if events:
            return _failed(
                0,
                events[0].seq,
                f"event {events[0].seq}: the export footer records an empty export, but the file holds events",
                None,
            )
        return VerifyResult(ok=True, count=0, first_bad_seq=None, reason=None, head_hash=None)
    assert footer.first_seq is not None and footer.last_seq is not None and footer.anchor_prev_hash is not None
    first, last = footer.first_seq, footer.last_seq
    chain = verify_events(events, start_prev_hash=footer.anchor_prev_hash, start_seq=first)
    if not chain.ok and chain.first_bad_seq is not None and chain.first_bad_seq <= last:
        return chain
    last_good = first + chain.count - 1
    if last_good < last:
        stops = f"stops at event {last_good}" if chain.count else "holds no events"
        return _failed(
            chain.count,
            last_good + 1,
            f"event {last_good + 1}: missing; the export footer says the export runs to event {last} "
            f"but the file {stops} (truncated?)",
            chain.head_hash,
        )
    covered = last - first + 1
    if events[covered - 1].hash != footer.head_hash:
        return _failed(
            covered - 1,
            last,
            f"event {last}: its hash differs from the head hash recorded in the export footer (edited and re-hashed?)",
            events[covered - 2].hash if covered > 1 else None,
        )
    if len(events) > covered:
        return _failed(
            covered,
            last + 1,
            f"event {last + 1}: not covered by the export footer, which ends at event {last} (appended after export?)",
            footer.head_hash,
        )
    if footer.count != covered:
        return _failed(
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
    if _expected_footer_hash(parsed.footer) != parsed.footer.footer_hash:
        return _verify_without_footer(
            parsed.events, "the export footer was edited: its footer_hash does not match its contents"
        )
    return _verify_against_footer(parsed.events, parsed.footer)


def verify_export(path: str | Path) -> VerifyResult:
    """Verify an export file: the chain, then the footer's seal, range, count and head hash.

    Never raises for tampered or malformed content -- that yields a failed
    result whose ``reason`` names the problem (and the line, for malformed
    files) and whose ``first_bad_seq`` is the first sequence number that is
    wrong or missing (for a file that stops being readable: the last readable
    event + 1, or None if there is none).  Raises TrailError only when the
    file cannot be read at all.  A passing result still has to be compared
    with the database head hash; see the module docstring.
    """
    return _verify_parsed(_parse_file(path))
