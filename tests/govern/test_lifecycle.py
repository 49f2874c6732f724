"""The lifecycle transition table: reachability, terminal states, errors that say what is allowed."""

from __future__ import annotations

from collections import deque

import pytest

from govern.errors import GovernError, InvalidTransition
from govern.lifecycle import ACTIVE, TERMINAL, TRANSITIONS, Event, State, next_state


def _reachable_from(start: State) -> set[State]:
    seen = {start}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        for (src, _event), dst in TRANSITIONS.items():
            if src == s and dst not in seen:
                seen.add(dst)
                queue.append(dst)
    return seen


def test_every_state_is_reachable_from_submitted():
    reachable = _reachable_from(State.SUBMITTED)
    unreachable = set(State) - reachable
    assert unreachable == set(), f"states no request can ever reach: {sorted(unreachable)}"


def test_submitted_is_only_the_entry_state():
    # nothing leads back into SUBMITTED: it is where a request starts, never where it returns
    assert State.SUBMITTED not in TRANSITIONS.values()


def test_terminal_states_have_no_outgoing_transitions():
    assert TERMINAL, "there must be terminal states"
    outgoing = {(s, e) for (s, e) in TRANSITIONS if s in TERMINAL}
    assert outgoing == set()


def test_every_non_terminal_state_has_a_way_out():
    for state in set(State) - TERMINAL:
        assert any(s == state for (s, _e) in TRANSITIONS), f"{state} is a dead end but not marked terminal"


def test_states_partition_into_submitted_active_terminal():
    assert ACTIVE.isdisjoint(TERMINAL)
    assert State.SUBMITTED not in ACTIVE | TERMINAL
    assert ACTIVE | TERMINAL | {State.SUBMITTED} == set(State)


def test_terminal_states_are_reachable_final_outcomes():
    assert TERMINAL == {State.REJECTED, State.CANARY_FAILED, State.FAILED, State.ROLLED_BACK}


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (State.SUBMITTED, Event.ADMIT, State.ADMITTED),
        (State.SUBMITTED, Event.DENY, State.REJECTED),
        (State.ADMITTED, Event.CLAIM, State.APPLYING),
        (State.APPLYING, Event.REQUEUE, State.ADMITTED),
        (State.APPLYING, Event.APPLIED, State.CANARY),
        (State.APPLYING, Event.CRASH, State.FAILED),
        (State.CANARY, Event.GATES_PASSED, State.AWAITING_REVIEW),
        (State.CANARY, Event.AUTO_APPROVED, State.APPROVED),
        (State.CANARY, Event.GATES_FAILED, State.CANARY_FAILED),
        (State.AWAITING_REVIEW, Event.APPROVE, State.AWAITING_REVIEW),
        (State.AWAITING_REVIEW, Event.APPROVE_FINAL, State.APPROVED),
        (State.AWAITING_REVIEW, Event.STALE, State.ADMITTED),
        (State.APPROVED, Event.STALE, State.ADMITTED),
        (State.APPROVED, Event.PROMOTE, State.PROMOTED),
        (State.PROMOTED, Event.ROLLBACK, State.ROLLED_BACK),
        (State.PROMOTED, Event.REBASE, State.ADMITTED),
    ],
)
def test_next_state_legal_pairs(state, event, expected):
    assert next_state(state, event) is expected


def test_next_state_accepts_plain_strings():
    result = next_state("approved", "promote")
    assert result is State.PROMOTED
    assert isinstance(result, State)


def test_illegal_transition_names_the_allowed_events():
    with pytest.raises(InvalidTransition) as info:
        next_state(State.PROMOTED, Event.APPROVE)
    msg = str(info.value)
    assert "approve" in msg and "promoted" in msg
    assert "allowed from promoted: rebase, rollback" in msg
    assert "\n" not in msg


def test_illegal_transition_lists_every_allowed_event_sorted():
    with pytest.raises(InvalidTransition) as info:
        next_state(State.CANARY, Event.PROMOTE)
    msg = str(info.value)
    assert "allowed from canary: auto_approved, crash, gates_failed, gates_passed" in msg


def test_cannot_promote_before_approval():
    with pytest.raises(InvalidTransition, match="allowed from awaiting_review: approve, approve_final, reject, stale"):
        next_state(State.AWAITING_REVIEW, Event.PROMOTE)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_state_message_says_it_is_final(state):
    with pytest.raises(InvalidTransition) as info:
        next_state(state, Event.ADMIT)
    msg = str(info.value)
    assert f"{state.value} is final" in msg
    assert "allowed from" not in msg


def test_invalid_transition_is_a_govern_error():
    with pytest.raises(GovernError):
        next_state(State.ROLLED_BACK, Event.ROLLBACK)


def test_unknown_event_string_raises_value_error():
    with pytest.raises(ValueError):
        next_state(State.SUBMITTED, "explode")


def test_unknown_state_string_raises_value_error():
    with pytest.raises(ValueError):
        next_state("limbo", Event.ADMIT)
