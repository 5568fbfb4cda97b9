"""The delivery timer's choice of rows from the ``deliveries-due`` marks (``due_keys``).

Over dicts standing for the two tables (the tables themselves, the sweep and the ticks
run in tests/hub/test_webhooks_e2e.py): reading only the marks picks exactly the stored
deliveries a pass over every state would act on, and counts the same pending figure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.referrals import DeliveryJob
from streams.delivery_agents import due_keys
from streams.referrals.delivery import (
    AttemptOutcome,
    DeliveryPolicy,
    DeliveryState,
    due_mark,
    epoch_us,
    expire,
    forgettable,
    is_due,
    new_state,
    record_attempt,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
POLICY = DeliveryPolicy(backoff_base_s=20, backoff_max_s=600, max_age_s=3600,
                        retain_s=1800, client_error_attempts=3)
OUTCOMES = [AttemptOutcome("http", 503), AttemptOutcome("http", 200),
            AttemptOutcome("http", 401), AttemptOutcome("http", 410),
            AttemptOutcome("timeout")]


def _state(i: int, partition: int, created_s: int, steps: list[int]) -> DeliveryState:
    job = DeliveryJob(id=f"job-{i}", agency_id="springfield-housing",
                      url="https://agency.example/referrals", secret_env="X_SECRET",
                      body="{}", created_at=T0 + timedelta(seconds=created_s),
                      referral_task_id=f"task-{i}")
    s = new_state(job, job.created_at, partition=partition)
    for step in steps:
        if s.terminal or s.next_attempt_at is None:
            break
        s, _ = record_attempt(s, OUTCOMES[step], s.next_attempt_at, POLICY)
    return s


def _full_pass(states: dict[bytes, DeliveryState], partition: int, now: datetime
               ) -> tuple[set[bytes], int]:
    """What the pass over every state (the timer before its marks) acts on, and its
    pending figure."""
    acted: set[bytes] = set()
    pending = 0
    for key, s in states.items():
        if s.partition != partition:
            continue
        if forgettable(s, now, POLICY) or expire(s, now, POLICY)[1].kind == "exhausted":
            acted.add(key)
            continue
        pending += not s.terminal
        if is_due(s, now):
            acted.add(key)
    return acted, pending


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 3), st.integers(-3 * 3600, 3600),
                               st.lists(st.integers(0, len(OUTCOMES) - 1), max_size=6)),
                     max_size=40),
       partition=st.integers(0, 3), now_s=st.integers(-3600, 4 * 3600))
def test_the_marks_pick_what_a_full_pass_would_act_on(
        rows: list[tuple[int, int, list[int]]], partition: int, now_s: int) -> None:
    states = {f"job-{i}".encode(): _state(i, p, c, steps)
              for i, (p, c, steps) in enumerate(rows)}
    marks = {k: due_mark(s, POLICY) for k, s in states.items()}
    now = T0 + timedelta(seconds=now_s)
    acted, pending = _full_pass(states, partition, now)
    keys, marked_pending = due_keys(list(marks.items()), partition, epoch_us(now))
    assert set(keys) == acted
    # The tick adds the pending ones among the rows it reads (those neither forgotten
    # nor given up now).
    read_pending = sum(1 for k in keys
                       if not forgettable(states[k], now, POLICY)
                       and expire(states[k], now, POLICY)[1].kind != "exhausted"
                       and not states[k].terminal)
    assert marked_pending + read_pending == pending


def test_one_microsecond_before_a_mark_nothing_is_read() -> None:
    s = _state(1, 2, 0, [0])  # one 503: a retry scheduled
    assert s.next_attempt_at is not None
    marks = [(b"job-1", due_mark(s, POLICY))]
    at = epoch_us(s.next_attempt_at)
    assert due_keys(marks, 2, at - 1) == ([], 1)
    assert due_keys(marks, 2, at) == ([b"job-1"], 0)
    assert due_keys(marks, 1, at) == ([], 0)  # another partition's
    assert due_keys(marks, 12, at) == ([], 0)  # not fooled by a common prefix
