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

The package, one idea per module:

* `audits.trail.events` -- the chain: canonical bytes, :func:`make_event`,
  :func:`verify_events`, :class:`AuditEvent`, :class:`VerifyResult`,
  :class:`TrailError`;
* `audits.trail.export` -- export files: the sealed :class:`ExportFooter`,
  JSON Lines and CSV, :func:`export_events`;
* `audits.trail.reader` -- reading an export back (:func:`read_export`) and
  verifying it against its chain and footer (:func:`verify_export_reference`,
  the whole file in memory);
* `audits.trail.stream` -- the same in bounded memory and at C speed: stored
  events (:data:`StoredEvent`) written as an export (:func:`write_export`),
  a live trail or an export proven good (:func:`prove_stored`,
  :func:`prove_export`), and :func:`verify_export`, which streams and leaves
  every file it cannot prove good to the reference;
* `audits.trail.anchor` -- the head recorded outside the database
  (:class:`Anchor`) and :func:`check_anchors`, which catches truncation at the
  tail, an emptied trail and events appended after the anchored head.

Every public name is importable from `audits.trail` itself.

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

Everything here is standard library only and, apart from the file functions
(:func:`export_events`, :func:`write_export`, :func:`read_export`,
:func:`verify_export`, :func:`verify_export_reference`, :func:`prove_export`),
free of side effects.
"""

from __future__ import annotations

from audits.trail.anchor import Anchor, check_anchors, check_head
from audits.trail.events import (
    GENESIS_HASH,
    AuditEvent,
    TrailError,
    VerifyResult,
    canonical_bytes,
    canonical_json,
    compute_hash,
    make_event,
    verify_events,
)
from audits.trail.export import (
    CSV_COLUMNS,
    EVENT_FIELDS,
    EXPORT_FORMAT_VERSION,
    EXPORT_FORMATS,
    FOOTER_FIELDS,
    ExportFooter,
    ExportFormat,
    compute_footer_hash,
    export_events,
    make_footer,
    render_csv,
    render_jsonl,
)
from audits.trail.reader import NO_FOOTER_REASON, read_export, verify_export_reference
from audits.trail.stream import (
    StoredEvent,
    canonical_payloads,
    prove_export,
    prove_stored,
    verify_export,
    write_export,
)

__all__ = [
    "CSV_COLUMNS",
    "EVENT_FIELDS",
    "EXPORT_FORMATS",
    "EXPORT_FORMAT_VERSION",
    "FOOTER_FIELDS",
    "GENESIS_HASH",
    "NO_FOOTER_REASON",
    "Anchor",
    "AuditEvent",
    "ExportFooter",
    "ExportFormat",
    "StoredEvent",
    "TrailError",
    "VerifyResult",
    "canonical_bytes",
    "canonical_json",
    "canonical_payloads",
    "check_anchors",
    "check_head",
    "compute_footer_hash",
    "compute_hash",
    "export_events",
    "make_event",
    "make_footer",
    "prove_export",
    "prove_stored",
    "read_export",
    "render_csv",
    "render_jsonl",
    "verify_events",
    "verify_export",
    "verify_export_reference",
    "write_export",
]
