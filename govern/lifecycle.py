"""The request lifecycle: one transition table, state × event → state.

`next_state` is pure. The only caller that persists a transition is
`govern.store.Store.transition`, which writes the new state and its audit event
in one database transaction.

    submitted ─admit─► admitted ─claim─► applying ─applied─► canary ─gates_passed─► awaiting_review
        │                                    │                  │       └─auto_approved─► approved
        └─deny─► rejected                    └─crash─► failed   └─gates_failed─► canary_failed
    awaiting_review ─approve─► awaiting_review (more approvals needed) | approved
    awaiting_review ─reject─► rejected
    approved ─promote─► promoted ─rollback─► rolled_back      (by a person, a monitor trigger or expiry)
    promoted ─rebase─► admitted   (an older change below it was rolled back; rebuilt on the new production)
    promoted ─rollback_requested─► rolling_back ─rollback─► rolled_back   (a change under newer ones: the version
        without it is built and canaried first) ─rollback_refused─► promoted   (that version failed its canary)
    awaiting_review | approved ─stale─► admitted   (production moved; rebuild the candidate)
    applying ─requeue─► admitted                    (worker lease expired; the job runs again)
"""

from __future__ import annotations

from enum import StrEnum

from govern.errors import InvalidTransition


class State(StrEnum):
    SUBMITTED = "submitted"  # stored, schema-valid, not yet judged by the policy
    ADMITTED = "admitted"  # passed admission; an apply job is queued
    REJECTED = "rejected"  # refused by admission or by a reviewer (terminal)
    APPLYING = "applying"  # a worker holds the job and is computing the candidate
    CANARY = "canary"  # candidate built; being measured against production
    CANARY_FAILED = "canary_failed"  # a gate failed; the candidate was discarded (terminal)
    AWAITING_REVIEW = "awaiting_review"  # gates passed; needs human approvals
    APPROVED = "approved"  # enough approvals; ready to promote
    PROMOTED = "promoted"  # the candidate is production
    FAILED = "failed"  # the apply crashed for good (terminal; nothing kept)
    ROLLED_BACK = "rolled_back"  # was production, then rolled back (terminal)
    ROLLING_BACK = "rolling_back"  # still in production; the version without it is being built and canaried


class Event(StrEnum):
    ADMIT = "admit"
    DENY = "deny"
    CLAIM = "claim"
    REQUEUE = "requeue"
    APPLIED = "applied"
    CRASH = "crash"
    GATES_PASSED = "gates_passed"
    AUTO_APPROVED = "auto_approved"
    GATES_FAILED = "gates_failed"
    APPROVE = "approve"
    APPROVE_FINAL = "approve_final"
    REJECT = "reject"
    PROMOTE = "promote"
    STALE = "stale"
    ROLLBACK = "rollback"
    REBASE = "rebase"
    ROLLBACK_REQUESTED = "rollback_requested"
    ROLLBACK_REFUSED = "rollback_refused"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.SUBMITTED, E.ADMIT): S.ADMITTED,
    (S.SUBMITTED, E.DENY): S.REJECTED,
    (S.ADMITTED, E.CLAIM): S.APPLYING,
    (S.APPLYING, E.REQUEUE): S.ADMITTED,
    (S.APPLYING, E.APPLIED): S.CANARY,
    (S.APPLYING, E.CRASH): S.FAILED,
    (S.CANARY, E.CRASH): S.FAILED,
    (S.CANARY, E.GATES_PASSED): S.AWAITING_REVIEW,
    (S.CANARY, E.AUTO_APPROVED): S.APPROVED,
    (S.CANARY, E.GATES_FAILED): S.CANARY_FAILED,
    (S.AWAITING_REVIEW, E.APPROVE): S.AWAITING_REVIEW,
    (S.AWAITING_REVIEW, E.APPROVE_FINAL): S.APPROVED,
    (S.AWAITING_REVIEW, E.REJECT): S.REJECTED,
    (S.AWAITING_REVIEW, E.STALE): S.ADMITTED,
    (S.APPROVED, E.STALE): S.ADMITTED,
    (S.APPROVED, E.PROMOTE): S.PROMOTED,
    (S.PROMOTED, E.ROLLBACK): S.ROLLED_BACK,
    (S.PROMOTED, E.REBASE): S.ADMITTED,
    (S.PROMOTED, E.ROLLBACK_REQUESTED): S.ROLLING_BACK,
    (S.ROLLING_BACK, E.ROLLBACK): S.ROLLED_BACK,
    (S.ROLLING_BACK, E.ROLLBACK_REFUSED): S.PROMOTED,
    (S.ROLLING_BACK, E.REBASE): S.ADMITTED,
}

TERMINAL = frozenset({S.REJECTED, S.CANARY_FAILED, S.FAILED, S.ROLLED_BACK})
# a change counts as "active" (for conflicts and limits) from admission until it ends
ACTIVE = frozenset({S.ADMITTED, S.APPLYING, S.CANARY, S.AWAITING_REVIEW, S.APPROVED, S.PROMOTED, S.ROLLING_BACK})
# a change whose weights are in production
IN_PRODUCTION = frozenset({S.PROMOTED, S.ROLLING_BACK})


class JobKind(StrEnum):
    APPLY = "apply"  # build a candidate: production + the request's change, then its canary
    ROLLBACK = "rollback"  # build production without one change (the others re-applied), then its canary


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # leased by a worker (lease_owner, lease_expires_at)
    DONE = "done"  # its outcome was committed
    FAILED = "failed"  # ended without a result (the reason is in `error`)


class VersionStatus(StrEnum):
    BASE = "base"  # never used as a status once a later version is production; kept for readability
    CANDIDATE = "candidate"  # built by a worker, measured, not (yet) production
    PRODUCTION = "production"  # the version the production alias points at
    SUPERSEDED = "superseded"  # was production; a newer version replaced it
    DISCARDED = "discarded"  # a candidate that failed its gates, was rejected or went stale
    ROLLED_BACK = "rolled_back"  # was production, then rolled back
    REBASED = "rebased"  # was on production's line; taken off because a change below it was rolled back


def next_state(state: State | str, event: Event | str) -> State:
    """The state after `event` in `state`, or InvalidTransition naming what is allowed."""
    state, event = State(state), Event(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        hint = f"allowed from {state.value}: {', '.join(allowed)}" if allowed else f"{state.value} is final"
        raise InvalidTransition(f"cannot {event.value} a request that is {state.value} ({hint})") from None
