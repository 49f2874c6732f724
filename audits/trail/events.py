"""The hash chain: canonical event bytes, building events, and walking the chain.

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

:func:`verify_events` walks a chain in order and reports the first sequence
number at which it breaks, telling a missing, reordered, inserted or edited
event apart.  Everything here is pure.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from editors.errors import GovernError

GENESIS_HASH: str = "0" * 64
"""The ``prev_hash`` of event 1: there is no event before it."""


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


def _plain_json(value: Any, depth: int = 0) -> bool:
    """True when ``value`` passes `_check_json_value`'s rules using exact types only (the fast path:
    no message is built). False also for subclasses, which the full check then judges and explains."""
    if depth > 200:
        return False
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dict:
        return all(type(k) is str and _plain_json(v, depth + 1) for k, v in value.items())
    if t is list or t is tuple:
        return all(_plain_json(v, depth + 1) for v in value)
    return False


CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""The encoder behind :func:`canonical_json` (one instance: building one per call costs more than small events).
Its output for plain JSON is the canonical form; only :func:`canonical_json` checks that a value is plain JSON."""

quote_json = json.encoder.encode_basestring
"""How `CANONICAL_ENCODER` writes a string (the C function it calls: ``"`` ``\\`` and control characters escaped,
everything else raw), so that a document can be assembled from parts byte for byte as the encoder would write it."""

_DOCUMENT = '{"action":%s,"actor":%s,"payload":%s,"prev_hash":%s,"seq":%d,"subject":%s,"ts":%s}'
"""The canonical document of an event with its fields in sorted order (what `canonical_bytes` encodes)."""


def canonical_json(value: Any, where: str) -> str:
    """Deterministic JSON text: sorted keys, no spaces, raw UTF-8, no NaN (also used by the export)."""
    if not _plain_json(value):
        _check_json_value(value, where)
    try:
        return CANONICAL_ENCODER.encode(value)
    except (TypeError, ValueError) as error:  # pragma: no cover - _check_json_value rejects these first
        raise TrailError(f"{where}: {error}") from error


def utf8_bytes(text: str, where: str) -> bytes:
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
    return utf8_bytes(canonical_json(document, "event"), "event")


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


def hash_with_payload_text(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    payload_text: str,
    prev_hash: str,
) -> str:
    """:func:`compute_hash` of an event whose payload is given as its canonical JSON text
    (``canonical_json(payload)``), without parsing and re-encoding it.

    The document is assembled by formatting (`_DOCUMENT`, keys in sorted order, strings written by `quote_json`):
    byte for byte what :func:`canonical_bytes` encodes *when* `payload_text` is canonical. That is the caller's
    promise; with any other text the result is simply a different hash. Raises TrailError for a field of the
    wrong type and for text that is not valid Unicode, like :func:`canonical_bytes`.
    """
    if type(seq) is not int:  # exactly int: %d would write a bool as 1 and truncate a float
        _require_int(seq, "seq")
        seq = int(seq)  # an int subclass (not bool): written as its int value, as json.dumps does
    try:
        document = _DOCUMENT % (quote_json(action), quote_json(actor), payload_text, quote_json(prev_hash), seq,
                                quote_json(subject), quote_json(ts))
    except TypeError:
        for value, name in ((ts, "ts"), (actor, "actor"), (action, "action"), (subject, "subject"),
                            (prev_hash, "prev_hash"), (payload_text, "payload_text")):
            _require_str(value, name)
        raise
    return hashlib.sha256(utf8_bytes(document, "event")).hexdigest()


def _event_hash(event: AuditEvent) -> str:
    return compute_hash(event.seq, event.ts, event.actor, event.action, event.subject, event.payload, event.prev_hash)


def _utc_timestamp(ts: str | datetime) -> str:
    """Check that ``ts`` is an ISO-8601 UTC timestamp; datetimes are converted to one."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise TrailError("ts must be timezone-aware (UTC)")
        return ts.astimezone(UTC).isoformat()
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
    payload_text = canonical_json(dict(payload), "payload")
    stored_payload = json.loads(payload_text)  # canonical text round-trips: canonical_json(stored_payload) == payload_text
    digest = hash_with_payload_text(seq, ts_text, actor, action, subject, payload_text, prev_hash)
    return AuditEvent(seq, ts_text, actor, action, subject, stored_payload, prev_hash, digest)


# --------------------------------------------------------------------------- chain verification


def failed_result(count: int, first_bad_seq: int | None, reason: str, head_hash: str | None) -> VerifyResult:
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
            return failed_result(bad_seq - start_seq, bad_seq, reason, last_good)
        problem = _link_problem(event, expected_seq, expected_prev, start_seq)
        if problem is not None:
            return failed_result(index, expected_seq, problem, head)
        accepted[expected_seq] = event.hash
        head = event.hash
        expected_prev = event.hash
        expected_seq += 1
    return VerifyResult(ok=True, count=len(events), first_bad_seq=None, reason=None, head_hash=head)


__all__ = [
    "CANONICAL_ENCODER",
    "GENESIS_HASH",
    "AuditEvent",
    "TrailError",
    "VerifyResult",
    "canonical_bytes",
    "canonical_json",
    "compute_hash",
    "failed_result",
    "hash_with_payload_text",
    "make_event",
    "quote_json",
    "utf8_bytes",
    "verify_events",
]
