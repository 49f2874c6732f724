"""Anchors: the trail's head recorded outside the database, and the check of a trail against them.

The hash chain shows an edited or removed event in the middle; it cannot
show that events were cut off the *end*, that the table was emptied, or that
well-formed events were appended after the last real one — a writer can
recompute the chain. An :class:`Anchor` is the head (last sequence number,
its hash, the event count) as it stood at some moment, kept somewhere the
database's writer does not also rewrite: the home's head file (updated after
every commit), each MLflow run and registered model (tags), every export's
footer. :func:`check_anchors` compares a verified trail with them:

* an anchored event the trail lacks → truncated at the tail, or emptied;
* an anchored event with another hash → the chain was rewritten;
* events after the newest anchor of a source that anchors *every* commit
  (``complete``) → appended outside govern.

Pure: anchors in, a `VerifyResult` (or None when they agree) out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audits.trail.events import AuditEvent, VerifyResult, failed_result


@dataclass(frozen=True)
class Anchor:
    """The trail's head at one moment, as recorded by ``where``."""

    seq: int  # last sequence number then
    head_hash: str  # its hash
    count: int  # events then (== seq for a whole trail)
    where: str  # e.g. "the head file .govern/trail.head", "MLflow run 3f2a..."
    complete: bool = False  # True when this source is written after every commit (the head file)


def check_anchors(events: Sequence[AuditEvent], anchors: Sequence[Anchor]) -> VerifyResult | None:
    """None when `events` (a chain that already verified from event 1) agrees with every anchor; else why not."""
    if not anchors:
        return None
    by_seq = {e.seq: e.hash for e in events}
    return check_head(len(events), events[-1].seq if events else 0, events[-1].hash if events else None, by_seq, anchors)


def check_head(count: int, last: int, head: str | None, hash_at: Mapping[int, str],
               anchors: Sequence[Anchor]) -> VerifyResult | None:
    """:func:`check_anchors` for a chain known by its length, last sequence number (0 when empty) and head hash,
    and `hash_at`: its hash of each anchored event number and of the number before it, where the chain has that
    event (all `check_anchors` looks at; a streaming check reads just these)."""
    if not anchors:
        return None
    for a in sorted(anchors, key=lambda a: a.seq, reverse=True):
        if a.seq not in hash_at:
            if not count:
                why = (f"the database holds no audit events, but {a.where} records event {a.seq} "
                       f"(head {a.head_hash[:16]}): the trail was emptied")
            else:
                why = (f"event {last + 1}: missing; the trail ends at event {last} but {a.where} records event "
                       f"{a.seq} (head {a.head_hash[:16]}): events were cut off the end")
            return failed_result(count, last + 1, why, head)
        if hash_at[a.seq] != a.head_hash:
            return failed_result(a.seq - 1, a.seq, f"event {a.seq}: its hash differs from the one {a.where} recorded "
                                                   "(the chain was rewritten)", hash_at.get(a.seq - 1))
    complete = [a for a in anchors if a.complete]
    if complete:
        newest = max(complete, key=lambda a: a.seq)
        if last > newest.seq:
            return failed_result(newest.seq, newest.seq + 1, (
                f"event {newest.seq + 1}: events {newest.seq + 1}..{last} are in the database but {newest.where}, "
                f"written after every commit, ends at event {newest.seq} (appended outside govern?)"), newest.head_hash)
    return None


__all__ = ["Anchor", "check_anchors", "check_head"]
