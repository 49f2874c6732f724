"""Streaming the trail: exports written and verified in bounded memory, the per-event work done in C.

A million events in a few seconds leaves a few microseconds per event, so
nothing here builds an :class:`AuditEvent` or walks a payload in Python.
Events come in blocks, either as *stored events* (:data:`StoredEvent`: the
fields as the database holds them, the payload as JSON text) or as the lines
of a JSON Lines export.

Canonical text, vouched for in bulk
-----------------------------------
An event's hash covers its canonical bytes (`audits.trail.events`). When a
payload's text already *is* its canonical JSON, the bytes can be assembled
around the text (:func:`hash_with_payload_text`) instead of parsing and
re-encoding it one event at a time. :func:`canonical_payloads` checks a whole
block at once: it parses ``[t1,t2,...]`` with one ``json.loads`` and
re-encodes the list with the canonical encoder. If that gives back the same
string, every text is exactly one value (the count matches), an object (the
types are checked) and canonical (sorted keys, no spaces, the encoder's own
escapes and number forms, no duplicate keys, no NaN) — re-encoding a list
writes ``[`` + each item's canonical JSON joined by ``,`` + ``]``. Texts short
enough cannot nest past `canonical_json`'s depth limit; longer ones are
counted. A block that fails is judged text by text: the canonical JSON of
what each text parses to, or None where `canonical_json`'s rules would refuse
it or could not be applied this way.

Proofs, and the reference
-------------------------
:func:`prove_stored` and :func:`prove_export` return an ok `VerifyResult`
only when every hash was recomputed and every check of the reference
verifiers passed; otherwise None, and the caller runs the reference
(:func:`verify_events`, :func:`verify_export_reference`), which names the
first bad event exactly as before. A trail that verifies costs one streaming
read; a broken one costs the reference's time and memory on top.
:func:`verify_export` pairs the two for a file. :func:`write_export` writes
the same bytes as :func:`export_events` from stored events, streaming.

A JSON Lines line is read by a fixed layout — the one :func:`export_events`
writes — whose string fields are then vouched for as canonical in the same
bulk round trip as the payloads. A line laid out any other way (reordered
fields, spaces, CRLF, an edit that changes a hash's length) is not proven and
goes to the reference, which accepts whatever valid JSON it finds.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from audits.trail.events import (
    CANONICAL_ENCODER,
    GENESIS_HASH,
    TrailError,
    VerifyResult,
    canonical_json,
    quote_json,
)
from audits.trail.export import (
    CSV_COLUMNS,
    EXPORT_FORMATS,
    ExportFormat,
    expected_footer_hash,
    footer_csv_row,
    footer_jsonl,
    seal_footer,
)
from audits.trail.reader import _footer_from_mapping, _load_json, verify_export_reference

StoredEvent = tuple[int, str, str, str, str, str, str, str]
"""An event as the database stores it: (seq, ts, actor, action, subject, payload as JSON text, prev_hash, hash)."""

Hashes = Iterable[Sequence[tuple[int, str]]]
"""Blocks of (seq, hash) from a database, in sequence order."""

_SHORT = 300
"""A text shorter than this opens fewer than 150 brackets, so it nests well inside `canonical_json`'s limit of 200."""
_OPENS_SAFE = 150


def _deep(text: str) -> bool:
    """Might nest near `canonical_json`'s depth limit (counts brackets, in strings too: errs on the safe side)."""
    return len(text) >= _SHORT and text.count("{") + text.count("[") >= _OPENS_SAFE


def _vouch(texts: Sequence[str], kinds: Sequence[type] = (dict,)) -> bool:
    """True when every text is exactly the canonical JSON of one value of `kinds[i % len(kinds)]` (module docstring)."""
    if not texts:
        return True
    try:
        if max(map(len, texts)) >= _SHORT and any(_deep(t) for t in texts):
            return False
        joined = "[" + ",".join(texts) + "]"
        values = json.loads(joined)
        if len(values) != len(texts):
            return False
        step = len(kinds)
        for offset, kind in enumerate(kinds):
            if set(map(type, values[offset::step])) != {kind}:
                return False
        return CANONICAL_ENCODER.encode(values) == joined
    except (TypeError, ValueError, RecursionError):  # not text, not JSON, NaN or infinity
        return False


def _canonical_one(text: str) -> str | None:
    """The canonical JSON of the object `text` parses to, or None (not text, not an object, NaN, too deep)."""
    if type(text) is not str or _deep(text):
        return None
    try:
        value = json.loads(text)
        return CANONICAL_ENCODER.encode(value) if type(value) is dict else None
    except (ValueError, RecursionError):
        return None


def canonical_payloads(texts: Sequence[str]) -> list[str | None]:
    """For stored payload texts, the canonical JSON of each payload (None where it cannot be vouched for).

    A text of ``None`` is one a caller must take through the reference path (`canonical_json` of the parsed
    payload), which then says what is wrong with it, or (for a text nested deep but within the limit) is fine.
    """
    if _vouch(texts):
        return list(texts)
    return [_canonical_one(t) for t in texts]


# --------------------------------------------------------------------------- the live trail

_DOCUMENT_HEX = '{"action":%s,"actor":%s,"payload":%s,"prev_hash":"%s","seq":%d,"subject":%s,"ts":%s}'
"""`audits.trail.events`' canonical document for a prev_hash known to be a hex digest (quoting it changes nothing)."""
_DOCUMENT_PLAIN = '{"action":"%s","actor":"%s","payload":%s,"prev_hash":"%s","seq":%d,"subject":"%s","ts":"%s"}'
"""The same for text with nothing to escape (`_plain`)."""
_ESCAPES = re.compile(r'["\\\x00-\x1f]')
_PAYLOAD = operator.itemgetter(5)
_TEXTS = operator.itemgetter(1, 2, 3, 4)  # ts, actor, action, subject
_EXPORT_TEXTS = operator.itemgetter(1, 2, 3, 4, 6, 7)  # and prev_hash, hash


def _plain(block: Sequence[StoredEvent], fields: Callable[[StoredEvent], tuple[str, ...]]) -> bool:
    """True when no text among these fields of the block's rows holds anything the canonical encoder escapes
    (``"``, ``\\``, control characters): each is then written as ``"`` + text + ``"``, so the block is
    formatted without a call per field. One join and one search, in C."""
    try:
        return _ESCAPES.search("".join(itertools.chain.from_iterable(map(fields, block)))) is None
    except TypeError:  # a value that is not text: the per-field path says so
        return False


def prove_stored(blocks: Iterable[Sequence[StoredEvent]]) -> VerifyResult | None:
    """An ok result when the stored events are a whole chain from event 1 (what :func:`verify_events` checks,
    every hash recomputed); None when they may not be: run :func:`verify_events` on them for the reason."""
    expected_seq, prev = 1, GENESIS_HASH
    quote, sha256 = quote_json, hashlib.sha256
    for block in blocks:
        if not block:
            continue
        payloads = canonical_payloads(list(map(_PAYLOAD, block)))
        plain = _plain(block, _TEXTS)
        try:
            for (seq, ts, actor, action, subject, _, prev_hash, digest), text in zip(block, payloads, strict=True):
                if seq != expected_seq or type(seq) is not int or prev_hash != prev or text is None:
                    return None
                # hash_with_payload_text, inlined (a call per event costs a tenth of the work); prev_hash is the
                # previous event's hex digest here, so it needs no quoting, and plain text none either
                if plain:
                    document = _DOCUMENT_PLAIN % (action, actor, text, prev_hash, seq, subject, ts)
                else:
                    document = _DOCUMENT_HEX % (quote(action), quote(actor), text, prev_hash, seq, quote(subject),
                                                quote(ts))
                if sha256(document.encode("utf-8")).hexdigest() != digest:
                    return None
                prev = digest
                expected_seq += 1
        except (TypeError, UnicodeEncodeError):  # a field that is not text, text that is not valid Unicode
            return None
    count = expected_seq - 1
    return VerifyResult(ok=True, count=count, first_bad_seq=None, reason=None, head_hash=prev if count else None)


# --------------------------------------------------------------------------- writing an export

_LINE = '{"record":"event","seq":%d,"ts":%s,"actor":%s,"action":%s,"subject":%s,"payload":%s,"prev_hash":%s,"hash":%s}\n'
"""An export's event line, as `audits.trail.export` renders it (fields in that order, compact, raw UTF-8)."""
_LINE_PLAIN = ('{"record":"event","seq":%d,"ts":"%s","actor":"%s","action":"%s","subject":"%s","payload":%s,'
               '"prev_hash":"%s","hash":"%s"}\n')
"""The same for text with nothing to escape (`_plain`)."""


def _reference_payload(seq: int, text: str) -> str:
    """What the in-memory export writes for a payload text it could not vouch for (raises as it does)."""
    return canonical_json(json.loads(text), f"event {seq} payload")


def _since(blocks: Iterable[Sequence[StoredEvent]], since: datetime | None) -> Iterator[Sequence[StoredEvent]]:
    for block in blocks:
        yield block if since is None else [r for r in block if datetime.fromisoformat(r[1]) >= since]


def write_export(
    blocks: Iterable[Sequence[StoredEvent]],
    path: str | Path,
    fmt: ExportFormat,
    *,
    exported_at: str | None = None,
    since: datetime | None = None,
) -> int:
    """Write stored events (blocks, in order) and a closing footer to ``path``; return the number written.

    The bytes are those :func:`export_events` writes for the same events, in bounded memory: the file is
    written as the blocks arrive, to a sibling temporary file renamed into place at the end (readers never see
    half an export; a failure leaves the old file). `since` keeps events whose ``ts`` is at or after it.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    first: StoredEvent | None = None
    last: StoredEvent | None = None
    count = 0
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
            if writer is not None:
                writer.writerow(CSV_COLUMNS)
            for block in _since(blocks, since):
                if not block:
                    continue
                payloads = canonical_payloads(list(map(_PAYLOAD, block)))
                if writer is None and _plain(block, _EXPORT_TEXTS):
                    out.write("".join([_LINE_PLAIN % (seq, ts, actor, action, subject,
                                                      p if p is not None else _reference_payload(seq, text),
                                                      prev_hash, digest)
                                       for (seq, ts, actor, action, subject, text, prev_hash, digest), p
                                       in zip(block, payloads, strict=True)]))
                elif writer is None:
                    q = quote_json
                    out.write("".join([_LINE % (seq, q(ts), q(actor), q(action), q(subject),
                                                p if p is not None else _reference_payload(seq, text),
                                                q(prev_hash), q(digest))
                                       for (seq, ts, actor, action, subject, text, prev_hash, digest), p
                                       in zip(block, payloads, strict=True)]))
                else:
                    writer.writerows(["event", seq, ts, actor, action, subject,
                                      p if p is not None else _reference_payload(seq, text), prev_hash, digest]
                                     for (seq, ts, actor, action, subject, text, prev_hash, digest), p
                                     in zip(block, payloads, strict=True))
                first = first or block[0]
                last = block[-1]
                count += len(block)
            stamp = datetime.now(UTC).isoformat() if exported_at is None else exported_at
            footer = seal_footer(first[0] if first else None, last[0] if last else None, count,
                                 last[7] if last else None, first[6] if first else None, stamp)
            if writer is None:
                out.write(footer_jsonl(footer) + "\n")
            else:
                writer.writerow(footer_csv_row(footer))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return count


# --------------------------------------------------------------------------- verifying an export

_STR = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # a JSON-string-shaped token; whether it is a valid (canonical) one is vouched later
_PLAIN = r'"[^"\\\x00-\x1f]*"'  # a string with nothing to escape: canonical as it stands (the encoder writes it so)
_HEAD_FIELDS = r'\{{"record":"event","seq":(0|[1-9][0-9]*),"ts":({s}),"actor":({s}),"action":({s}),"subject":({s}),"payload":'
_HEAD_PLAIN = re.compile(_HEAD_FIELDS.format(s=_PLAIN))
_HEAD = re.compile(_HEAD_FIELDS.format(s=_STR))
_TAIL = len(',"prev_hash":"') + 64 + len('","hash":"') + 64 + len('"}')  # then prev_hash at [14:78], hash at [88:152]
_HEX = re.compile("[0-9a-f]{64}")
_DOC = '{"action":%s,"actor":%s,"payload":%s,"prev_hash":"%s","seq":%s,"subject":%s,"ts":%s}'
_CHUNK = 1 << 18  # bytes read at a time: a few hundred lines, a few MB of memory at the peak


def _lines(path: str | Path) -> Iterator[list[str]]:
    """The file's lines, split on "\\n" only, in blocks; raises UnicodeDecodeError for bytes that are not UTF-8."""
    with open(path, "rb") as f:
        rest = b""
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                yield rest.decode("utf-8").split("\n")
                return
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            yield data[:cut].decode("utf-8").split("\n")


def prove_export(path: str | Path, database: Callable[[int], Hashes] | None = None) -> VerifyResult | None:
    """An ok result when the JSON Lines export at `path` verifies (its chain, every hash recomputed, and its
    footer, as :func:`verify_export_reference` checks them) and, with `database`, every event is the database's
    event of that number (`database(first_seq)`: its (seq, hash) blocks from that event on); else None.
    """
    try:
        with open(path, "rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":  # a byte-order mark: the reference skips it
                return None
        return _prove_lines(_lines(path), database)
    except (OSError, UnicodeDecodeError):
        return None


def _prove_lines(blocks: Iterator[list[str]], database: Callable[[int], Hashes] | None) -> VerifyResult | None:
    expected_seq = first_seq = 0  # 0 until the first event: sequence numbers start at 1
    first_prev = prev = ""
    db: Iterator[tuple[int, str]] | None = None
    footer_line: str | None = None
    number = 0
    hash_of = hashlib.sha256
    for lines in blocks:
        payloads: list[str] = []
        escaped: list[str] = []  # string fields with escapes: vouched for like the payloads
        for line in lines:
            number += 1
            if footer_line is not None:
                if line:
                    return None  # a record (or blank space) after the footer: the reference says what
                continue
            m = _HEAD_PLAIN.match(line)
            if m is None:
                m = _HEAD.match(line)
                if m is None:
                    footer_line = line
                    continue
                escaped += m.groups()[1:]
            end = len(line) - _TAIL
            tail = line[end:]
            if m.end() > end or not tail.startswith(',"prev_hash":"') or tail[78:88] != '","hash":"' \
                    or tail[152:] != '"}':
                return None
            seq_text, ts, actor, action, subject = m.groups()
            payload, prev_hash, digest = line[m.end():end], tail[14:78], tail[88:152]
            if not expected_seq:  # the first event: the chain starts where the footer says (checked at the end)
                expected_seq = first_seq = int(seq_text)
                first_prev = prev = prev_hash
                if first_seq < 1 or not _HEX.fullmatch(prev_hash):
                    return None
                if database is not None:
                    db = itertools.chain.from_iterable(database(first_seq))
            if seq_text != str(expected_seq) or prev_hash != prev:
                return None
            document = _DOC % (action, actor, payload, prev_hash, seq_text, subject, ts)
            if hash_of(document.encode("utf-8")).hexdigest() != digest:
                return None
            if db is not None:
                row = next(db, None)
                if row is None or row[0] != expected_seq or row[1] != digest:
                    return None
            payloads.append(payload)
            prev = digest
            expected_seq += 1
        if not (_vouch(payloads) and _vouch(escaped, (str,))):  # the hashes above were of canonical bytes only so
            return None
    count = expected_seq - first_seq
    if footer_line is None or not count:
        return None  # no footer, or no events: the reference (cheap then) gives the exact verdict
    try:
        record = _load_json(footer_line, number, "record")
        if not isinstance(record, dict) or record.get("record") != "footer":
            return None
        footer = _footer_from_mapping({k: v for k, v in record.items() if k != "record"}, number)
    except TrailError:
        return None
    if expected_footer_hash(footer) != footer.footer_hash or footer.count != count or footer.first_seq != first_seq \
            or footer.last_seq != expected_seq - 1 or footer.head_hash != prev or footer.anchor_prev_hash != first_prev:
        return None
    return VerifyResult(ok=True, count=count, first_bad_seq=None, reason=None, head_hash=footer.head_hash)


def verify_export(path: str | Path) -> VerifyResult:
    """Verify an export file: the chain, then the footer's seal, range, count and head hash.

    Streams a JSON Lines export laid out as govern writes it (:func:`prove_export`); anything else, and any
    file that does not verify, is judged by :func:`verify_export_reference`, which reads the whole file and
    names the problem. Never raises for tampered or malformed content; raises TrailError only when the file
    cannot be read at all. A passing result still has to be compared with the database head hash.
    """
    return prove_export(path) or verify_export_reference(path)


__all__ = [
    "StoredEvent",
    "canonical_payloads",
    "prove_export",
    "prove_stored",
    "verify_export",
    "write_export",
]
