"""Tests for audits.trail: the hash chain, its export files and tamper detection."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from audits.trail import (
    GENESIS_HASH,
    NO_FOOTER_REASON,
    AuditEvent,
    ExportFooter,
    TrailError,
    canonical_bytes,
    compute_hash,
    export_events,
    make_event,
    read_export,
    verify_events,
    verify_export,
)

FORMATS = ("jsonl", "csv")
EXPORTED_AT = "2026-11-23T03:00:00+00:00"
ACTORS = ["alice", "bob", "carol", "dmitri", "émilie", "farouk", "guo.wei", "hana", "ines", "jonas"]
ACTIONS = [
    "request.submitted",
    "request.admitted",
    "edit.applied",
    "canary.passed",
    "approval.granted",
    "model.promoted",
    "edit.applied",
    "canary.failed",
    "model.rolled_back",
    "request.closed",
]


def _payload(seq: int) -> dict:
    payloads = [
        {"fact": {"subject": "Eiffel Tower", "relation": "located in", "object": "Rome"}},
        {"score": 0.875, "checks": ["format", "duplicates"], "ok": True},
        {"layers": [5, 6, 7], "delta_norm": 1.25e-3, "method": "rome"},
        {"probes": {"passed": 48, "failed": 0}, "city": "Zürich"},
        {"approver_note": "東京 looks right ✅", "nested": {"a": {"b": {"c": None}}}},
        {"model": "smollm2-135m", "revision": "r-0002", "line\u2028sep": "para\u2029sep"},
        {"quote": 'she said "no", then left', "comma,key": "a,b;c", "newline": "x\ny"},
        {"regressions": [{"probe": "capital of France", "before": "Paris", "after": "Rome"}]},
        {"restored_revision": "r-0001", "exact": True, "empty": {}, "list": []},
        {"big": 2**70, "neg": -17, "zero": 0.0, "tiny": -1.5e-300},
    ]
    return {"note": f"marker-{seq}", **payloads[seq - 1]}


def build_chain(n: int = 10) -> list[AuditEvent]:
    start = datetime(2026, 11, 23, 2, 10, 0, 123456, tzinfo=UTC)
    events: list[AuditEvent] = []
    prev: AuditEvent | None = None
    for seq in range(1, n + 1):
        prev = make_event(
            prev,
            ts=(start + timedelta(seconds=seq)).isoformat(),
            actor=ACTORS[seq - 1],
            action=ACTIONS[seq - 1],
            subject=f"req-{(seq + 1) // 2:04d}",
            payload=_payload(seq),
        )
        events.append(prev)
    return events


@pytest.fixture()
def chain() -> list[AuditEvent]:
    return build_chain()


def export(tmp_path: Path, events: list[AuditEvent], fmt: str, name: str = "trail") -> Path:
    path = tmp_path / f"{name}.{fmt}"
    assert export_events(events, path, fmt, exported_at=EXPORTED_AT) == len(events)
    return path


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="")


def event_index(fmt: str, seq: int, first_seq: int = 1) -> int:
    """Index in read_lines() of the line holding event ``seq`` (CSV has a header line)."""
    return seq - first_seq + (1 if fmt == "csv" else 0)


def render_event_line(tmp_path: Path, event: AuditEvent, fmt: str) -> str:
    """The line an export would hold for ``event`` (used to forge self-consistent records)."""
    path = export(tmp_path, [event], fmt, name=f"forged-{event.seq}-{event.hash[:8]}")
    return read_lines(path)[event_index(fmt, event.seq, first_seq=event.seq)]


# --------------------------------------------------------------------------- canonical form and hashing


def test_canonical_bytes_golden() -> None:
    got = canonical_bytes(1, "2026-11-23T02:10:00+00:00", "alice", "a.b", "s", {"b": 1, "a": [1, "é"]}, GENESIS_HASH)
    expected = (
        '{"action":"a.b","actor":"alice","payload":{"a":[1,"é"],"b":1},'
        f'"prev_hash":"{GENESIS_HASH}","seq":1,"subject":"s","ts":"2026-11-23T02:10:00+00:00"}}'
    ).encode()
    assert got == expected
    digest = compute_hash(1, "2026-11-23T02:10:00+00:00", "alice", "a.b", "s", {"b": 1, "a": [1, "é"]}, GENESIS_HASH)
    assert digest == hashlib.sha256(expected).hexdigest()


def test_canonical_bytes_ignore_key_order_at_every_level() -> None:
    one = {"z": {"y": 1, "x": [{"b": 2, "a": 1}]}, "a": None}
    two = {"a": None, "z": {"x": [{"a": 1, "b": 2}], "y": 1}}
    args = (3, "2026-11-23T02:10:00+00:00", "bob", "edit.applied", "m")
    assert canonical_bytes(*args, one, "f" * 64) == canonical_bytes(*args, two, "f" * 64)


def test_make_event_links_and_detaches_payload(chain: list[AuditEvent]) -> None:
    assert [event.seq for event in chain] == list(range(1, 11))
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(chain))
    assert len({event.hash for event in chain}) == 10
    payload = {"items": [1, 2]}
    event = make_event(chain[-1], ts="2026-11-23T04:00:00Z", actor="a", action="x", subject="s", payload=payload)
    payload["items"].append(3)
    assert event.payload == {"items": [1, 2]}
    assert event.hash == compute_hash(11, "2026-11-23T04:00:00Z", "a", "x", "s", {"items": [1, 2]}, chain[-1].hash)


@pytest.mark.parametrize(
    "bad_payload",
    [{"x": math.nan}, {"x": math.inf}, {"x": -math.inf}, {"deep": {"list": [1.0, math.nan]}}],
    ids=["nan", "inf", "-inf", "nested-nan"],
)
def test_nan_and_infinity_rejected(bad_payload: dict) -> None:
    with pytest.raises(TrailError, match="NaN and infinity"):
        make_event(None, ts="2026-11-23T02:10:00+00:00", actor="a", action="x", subject="s", payload=bad_payload)
    with pytest.raises(TrailError):
        canonical_bytes(1, "2026-11-23T02:10:00+00:00", "a", "x", "s", bad_payload, GENESIS_HASH)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"payload": {"when": datetime(2026, 1, 1)}}, "datetime is not JSON"),
        ({"payload": {1: "int key"}}, "not a string"),
        ({"payload": {"s": {1, 2}}}, "set is not JSON"),
        ({"payload": {"s": "\ud800"}}, "not valid Unicode"),
        ({"ts": "2026-11-23T02:10:00+01:00"}, "not in UTC"),
        ({"ts": "2026-11-23T02:10:00"}, "not in UTC"),
        ({"ts": "yesterday"}, "not an ISO-8601"),
        ({"actor": 7}, "actor must be a string"),
    ],
)
def test_make_event_rejects_bad_input(kwargs: dict, match: str) -> None:
    fields = {"ts": "2026-11-23T02:10:00+00:00", "actor": "a", "action": "x", "subject": "s", "payload": {}}
    fields.update(kwargs)
    with pytest.raises(TrailError, match=match):
        make_event(None, **fields)


def test_make_event_accepts_aware_datetime() -> None:
    ts = datetime(2026, 11, 23, 3, 10, tzinfo=timezone(timedelta(hours=1)))
    event = make_event(None, ts=ts, actor="a", action="x", subject="s", payload={})
    assert event.ts == "2026-11-23T02:10:00+00:00"


# --------------------------------------------------------------------------- verify_events on in-memory chains


def test_verify_events_ok(chain: list[AuditEvent]) -> None:
    result = verify_events(chain)
    assert (result.ok, result.count, result.first_bad_seq, result.reason) == (True, 10, None, None)
    assert result.head_hash == chain[-1].hash
    assert verify_events([]) == verify_events([], start_seq=5)
    assert verify_events([]).ok and verify_events([]).head_hash is None


def test_verify_events_partial_needs_anchor(chain: list[AuditEvent]) -> None:
    assert verify_events(chain[4:], start_prev_hash=chain[3].hash, start_seq=5).ok
    wrong_anchor = verify_events(chain[4:], start_prev_hash=GENESIS_HASH, start_seq=5)
    assert (wrong_anchor.ok, wrong_anchor.first_bad_seq) == (False, 5)
    assert verify_events(chain[4:]).first_bad_seq == 1


@pytest.mark.parametrize(
    ("tamper", "first_bad", "words"),
    [
        (lambda ev: [*ev[:6], dataclasses.replace(ev[6], payload={**ev[6].payload, "x": 1}), *ev[7:]], 7, "edited"),
        (lambda ev: [*ev[:2], dataclasses.replace(ev[2], ts=ev[2].ts.replace("02:10", "02:11")), *ev[3:]], 3, "edited"),
        (lambda ev: [*ev[:5], *ev[6:]], 6, "deleted"),
        (lambda ev: [*ev[:3], ev[4], ev[3], *ev[5:]], 4, "reordered"),
        (lambda ev: [*ev[:5], ev[2], *ev[5:]], 6, "duplicated"),
        (lambda ev: [*ev[:4], dataclasses.replace(ev[4], prev_hash=ev[2].hash), *ev[5:]], 5, "prev_hash"),
        (lambda ev: [*ev[:4], dataclasses.replace(ev[4], seq=2), *ev[5:]], 5, "edited"),
    ],
    ids=["payload", "ts", "delete", "swap", "duplicate", "relink", "renumber"],
)
def test_verify_events_names_first_bad_seq(
    chain: list[AuditEvent], tamper: Callable, first_bad: int, words: str
) -> None:
    result = verify_events(tamper(chain))
    assert not result.ok
    assert result.first_bad_seq == first_bad
    assert words in result.reason
    assert result.count == first_bad - 1
    assert result.head_hash == chain[first_bad - 2].hash


def test_verify_events_forged_insertion(chain: list[AuditEvent]) -> None:
    forged = make_event(chain[4], ts="2026-11-23T02:30:00+00:00", actor="mallory", action="x", subject="s", payload={})
    result = verify_events([*chain[:5], forged, *chain[5:]])
    assert (result.ok, result.first_bad_seq, result.count, result.head_hash) == (False, 6, 5, chain[4].hash)
    assert "forged" in result.reason


# --------------------------------------------------------------------------- export round trip


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path: Path, chain: list[AuditEvent], fmt: str) -> None:
    path = export(tmp_path, chain, fmt)
    events, footer = read_export(path)
    assert events == chain
    assert footer == ExportFooter(
        format_version=1,
        first_seq=1,
        last_seq=10,
        count=10,
        head_hash=chain[-1].hash,
        anchor_prev_hash=GENESIS_HASH,
        exported_at=EXPORTED_AT,
        footer_hash=footer.footer_hash,
    )
    result = verify_export(path)
    assert (result.ok, result.count, result.first_bad_seq, result.reason) == (True, 10, None, None)
    assert result.head_hash == chain[-1].hash
    assert not list(tmp_path.glob(".*.partial"))


def test_file_layouts(tmp_path: Path, chain: list[AuditEvent]) -> None:
    jsonl = read_lines(export(tmp_path, chain, "jsonl"))
    assert len(jsonl) == 11
    assert jsonl[0].startswith('{"record":"event","seq":1,')
    assert jsonl[-1].startswith('{"record":"footer",')
    csv_lines = read_lines(export(tmp_path, chain, "csv"))
    assert csv_lines[0] == "record,seq,ts,actor,action,subject,payload,prev_hash,hash"
    assert csv_lines[1].startswith("event,1,")
    assert csv_lines[-1].startswith("footer,,,,,,")
    assert len(csv_lines) == 12  # header, 10 events, footer: JSON escapes newlines, so no record spans lines
    assert "marker-7" in csv_lines[7]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_export(tmp_path: Path, fmt: str) -> None:
    path = export(tmp_path, [], fmt)
    assert len(read_lines(path)) == (1 if fmt == "jsonl" else 2)
    events, footer = read_export(path)
    assert events == [] and footer is not None and footer.count == 0 and footer.first_seq is None
    result = verify_export(path)
    assert (result.ok, result.count, result.first_bad_seq, result.head_hash) == (True, 0, None, None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_partial_export(tmp_path: Path, chain: list[AuditEvent], fmt: str) -> None:
    path = export(tmp_path, chain[4:], fmt)
    _, footer = read_export(path)
    assert (footer.first_seq, footer.last_seq, footer.count, footer.anchor_prev_hash) == (5, 10, 6, chain[3].hash)
    result = verify_export(path)
    assert (result.ok, result.count, result.head_hash) == (True, 6, chain[-1].hash)

    lines = read_lines(path)
    del lines[event_index(fmt, 5, first_seq=5)]
    write_lines(path, lines)
    result = verify_export(path)
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_unknown_format_rejected(tmp_path: Path, chain: list[AuditEvent]) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_events(chain, tmp_path / "x.xml", "xml")  # type: ignore[arg-type]  # wrong on purpose: the check under test


# --------------------------------------------------------------------------- tampering with export files


def _replace_in_event(seq: int, old: str, new: str) -> Callable:
    def tamper(lines: list[str], fmt: str, chain: list[AuditEvent], tmp_path: Path) -> list[str]:
        index = event_index(fmt, seq)
        assert lines[index].count(old) == 1
        lines[index] = lines[index].replace(old, new)
        return lines

    return tamper


def _delete_event(seq: int) -> Callable:
    def tamper(lines, fmt, chain, tmp_path):
        del lines[event_index(fmt, seq)]
        return lines

    return tamper


def _insert_forged(lines, fmt, chain, tmp_path):
    forged = make_event(
        chain[4], ts="2026-11-23T02:10:05.5+00:00", actor="mallory", action="approval.granted", subject="req-0003",
        payload={"note": "looks fine"},
    )
    lines.insert(event_index(fmt, 6), render_event_line(tmp_path, forged, fmt))
    return lines


def _append_forged(lines, fmt, chain, tmp_path):
    forged = make_event(chain[-1], ts="2026-11-23T02:20:00+00:00", actor="mallory", action="x", subject="s", payload={})
    lines.insert(len(lines) - 1, render_event_line(tmp_path, forged, fmt))
    return lines


def _swap(lines, fmt, chain, tmp_path):
    a, b = event_index(fmt, 4), event_index(fmt, 5)
    lines[a], lines[b] = lines[b], lines[a]
    return lines


def _duplicate(lines, fmt, chain, tmp_path):
    lines.insert(event_index(fmt, 6), lines[event_index(fmt, 3)])
    return lines


def _truncate_with_footer(lines, fmt, chain, tmp_path):
    return lines[: event_index(fmt, 9)]


def _truncate_keep_footer(lines, fmt, chain, tmp_path):
    return [*lines[: event_index(fmt, 9)], lines[-1]]


def _edit_footer_time(lines, fmt, chain, tmp_path):
    assert lines[-1].count("03:00:00") == 1
    lines[-1] = lines[-1].replace("03:00:00", "04:00:00")
    return lines


def _truncate_and_fix_footer(lines, fmt, chain, tmp_path):
    """Drop events 9 and 10 and rewrite the footer to describe 1..8, without resealing it."""
    footer, edits = re.subn(r'((?:count|last_seq)"+:)10(?=[,}])', r"\g<1>8", lines[-1])
    assert edits == 2 and footer.count(chain[-1].hash) == 1
    footer = footer.replace(chain[-1].hash, chain[7].hash)
    return [*lines[: event_index(fmt, 9)], footer]


def _rehash_last(lines, fmt, chain, tmp_path):
    rewritten = make_event(
        chain[8], ts=chain[9].ts, actor=chain[9].actor, action=chain[9].action, subject=chain[9].subject,
        payload={**chain[9].payload, "neg": -18},
    )
    lines[event_index(fmt, 10)] = render_event_line(tmp_path, rewritten, fmt)
    return lines


def _change_seq(lines, fmt, chain, tmp_path):
    old, new = ('"seq":8,', '"seq":80,') if fmt == "jsonl" else ("event,8,", "event,80,")
    return _replace_in_event(8, old, new)(lines, fmt, chain, tmp_path)


TAMPERS = [
    ("payload-one-byte", _replace_in_event(7, "marker-7", "marker-8"), 7, "hash does not match its contents"),
    ("actor", _replace_in_event(3, "carol", "mallory"), 3, "hash does not match its contents"),
    ("unicode-payload-byte", _replace_in_event(4, "Zürich", "Zurich"), 4, "edited"),
    ("seq-number", _change_seq, 8, "is numbered 80 (edited?)"),
    ("delete", _delete_event(6), 6, "missing"),
    ("insert-forged", _insert_forged, 6, "forged"),
    ("append-forged", _append_forged, 11, "not covered by the export footer"),
    ("duplicate", _duplicate, 6, "duplicated"),
    ("swap", _swap, 4, "reordered"),
    ("truncate-with-footer", _truncate_with_footer, 9, NO_FOOTER_REASON),
    ("truncate-keep-footer", _truncate_keep_footer, 9, "truncated"),
    ("edit-footer", _edit_footer_time, 11, "footer was edited"),
    ("truncate-and-edit-footer", _truncate_and_fix_footer, 9, "footer was edited"),
    ("rehash-last-event", _rehash_last, 10, "head hash recorded in the export footer"),
    ("delete-all-events", lambda lines, fmt, chain, tmp: [*lines[: event_index(fmt, 1)], lines[-1]], 1, "missing"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("tamper", "first_bad", "words"), [case[1:] for case in TAMPERS], ids=[case[0] for case in TAMPERS]
)
def test_tampered_export_names_first_bad_seq(
    tmp_path: Path, chain: list[AuditEvent], fmt: str, tamper: Callable, first_bad: int, words: str
) -> None:
    path = export(tmp_path, chain, fmt)
    write_lines(path, tamper(read_lines(path), fmt, chain, tmp_path))
    result = verify_export(path)
    assert not result.ok
    assert result.first_bad_seq == first_bad
    assert words in result.reason
    if words == NO_FOOTER_REASON:
        assert result.reason == NO_FOOTER_REASON


def test_resealed_truncation_passes_file_check_but_head_differs(tmp_path: Path, chain: list[AuditEvent]) -> None:
    """A writer who recomputes the footer defeats the file alone; the database head hash catches it."""
    result = verify_export(export(tmp_path, chain[:8], "jsonl"))
    assert result.ok
    assert result.head_hash != chain[-1].hash


# --------------------------------------------------------------------------- malformed files


def _sub(index: int, old: str, new: str) -> Callable[[list[str]], list[str]]:
    """An edit that replaces ``old`` (which must occur) by ``new`` in line ``index`` (0-based)."""

    def edit(lines: list[str]) -> list[str]:
        assert old in lines[index]
        lines[index] = lines[index].replace(old, new, 1)
        return lines

    return edit


# (id, fmt, edit, line named in the reason, expected first_bad_seq); CSV line 1 is the header.
MALFORMED = [
    ("jsonl-bad-json", "jsonl", _sub(3, '"payload":', '"payload" "'), 4, 4),
    ("csv-bad-payload-json", "csv", _sub(4, '{""', "{"), 5, 4),
    ("csv-missing-column", "csv", _sub(0, ",hash", ""), 1, None),
    ("csv-non-integer-seq", "csv", _sub(4, "event,4,", "event,four,"), 5, 4),
    ("csv-unknown-record", "csv", _sub(6, "event,6,", "evnt,6,"), 7, 6),
    ("jsonl-string-seq", "jsonl", _sub(3, '"seq":4,', '"seq":"4",'), 4, 4),
    ("jsonl-nan-literal", "jsonl", _sub(2, '"delta_norm":0.00125', '"delta_norm":NaN'), 3, 3),
    ("jsonl-duplicate-key", "jsonl", _sub(0, '"actor":"alice"', '"actor":"alice","actor":"eve"'), 1, None),
    ("jsonl-missing-field", "jsonl", _sub(1, '"subject":"req-0001",', ""), 2, 2),
    ("jsonl-unknown-record", "jsonl", _sub(5, '"record":"event"', '"record":"note"'), 6, 6),
    ("csv-short-row", "csv", lambda lines: [*lines[:3], lines[3].rsplit(",", 1)[0], *lines[4:]], 4, 3),
    ("jsonl-record-after-footer", "jsonl", lambda lines: [*lines, lines[0]], 12, 11),
]


@pytest.mark.parametrize(
    ("fmt", "edit", "line", "first_bad"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_file(
    tmp_path: Path, chain: list[AuditEvent], fmt: str, edit: Callable, line: int, first_bad: int | None
) -> None:
    path = export(tmp_path, chain, fmt)
    write_lines(path, edit(read_lines(path)))
    with pytest.raises(TrailError, match=f"^line {line}: ") as raised:
        read_export(path)
    assert raised.value.line == line
    result = verify_export(path)
    assert not result.ok
    assert result.reason.startswith(f"line {line}: ")
    assert result.first_bad_seq == first_bad


def test_invalid_utf8_names_line(tmp_path: Path, chain: list[AuditEvent]) -> None:
    path = export(tmp_path, chain, "jsonl")
    data = path.read_bytes().split(b"\n")
    data[6] = data[6].replace(b"marker-7", b"marker-\xff")
    path.write_bytes(b"\n".join(data))
    result = verify_export(path)
    assert (result.ok, result.first_bad_seq, result.count) == (False, 7, 6)
    assert result.reason.startswith("line 7: not valid UTF-8")


@pytest.mark.parametrize("content", ["", "hello world\n"], ids=["empty-file", "not-an-export"])
def test_foreign_files_fail(tmp_path: Path, content: str) -> None:
    path = tmp_path / "foreign.txt"
    path.write_text(content, encoding="utf-8")
    result = verify_export(path)
    assert not result.ok and result.first_bad_seq is None


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TrailError, match="cannot read audit export"):
        verify_export(tmp_path / "nope.jsonl")
    with pytest.raises(TrailError, match="cannot read audit export"):
        read_export(tmp_path / "nope.jsonl")


def test_crlf_and_bom_are_tolerated(tmp_path: Path, chain: list[AuditEvent]) -> None:
    path = export(tmp_path, chain, "csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert verify_export(path).ok
