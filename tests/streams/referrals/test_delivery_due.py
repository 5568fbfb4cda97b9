"""next_tick_at / due_mark (streams.referrals.delivery): before a delivery's mark, the
timer's pass does nothing to it; at the mark it attempts, gives up or forgets it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.referrals import DeliveryJob
from streams.referrals.delivery import (
    AttemptOutcome,
    DeliveryPolicy,
    DeliveryState,
    deadline,
    due_mark,
    epoch_us,
    expire,
    forgettable,
    is_due,
    new_state,
    next_tick_at,
    parse_mark,
    record_attempt,
)

T0 = datetime(2026, 3, 2, 8, 0, 0, 250_001, tzinfo=UTC)
JUST = timedelta(microseconds=1)


def _job(job_id: str = "job-1", created: datetime = T0) -> DeliveryJob:
    return DeliveryJob(id=job_id, agency_id="springfield-housing",
                       url="https://agency.example/referrals", secret_env="X_SECRET",
                       body='{"id":"task-1"}', created_at=created, referral_task_id="task-1")


def timer_pass(state: DeliveryState, now: datetime, policy: DeliveryPolicy,
               outcome: AttemptOutcome) -> tuple[DeliveryState | None, bool]:
    """What the timer's pass (streams.delivery_agents, ``tick``) does to one stored
    state at ``now``, in its order: (the state afterwards, None when forgotten; whether it
    acted at all)."""
    if forgettable(state, now, policy):
        return None, True
    expired, tr = expire(state, now, policy)
    if tr.kind == "exhausted":
        return expired, True
    if is_due(state, now):
        return record_attempt(state, outcome, now, policy)[0], True
    return state, False


def _walk(state: DeliveryState, policy: DeliveryPolicy, outcomes: list[AttemptOutcome],
          lags: list[float]) -> list[str]:
    """Tick at each due time in turn (or late by a lag); a tick one microsecond before
    the due time must leave the state untouched. Returns what each tick did."""
    did: list[str] = []
    for i in range(1000):
        at = next_tick_at(state, policy)
        if at is None:
            assert state.terminal
            return did
        outcome = outcomes[i % len(outcomes)]
        early, acted = timer_pass(state, at - JUST, policy, outcome)
        assert not acted and early == state, (state, at)
        now = at + timedelta(seconds=lags[i % len(lags)])
        new, acted = timer_pass(state, now, policy, outcome)
        assert acted, (state, at, now)
        if new is None:
            did.append("forgotten")
            return did
        did.append(new.status if new.attempts == state.attempts else "attempt")
        after = next_tick_at(new, policy)
        assert after is None or after > at, "a due time that does not move loops"
        state = new
    raise AssertionError("the due times never ran out")


_outcomes = st.one_of(
    st.builds(AttemptOutcome, st.just("http"), st.sampled_from(
        [200, 202, 302, 400, 401, 408, 410, 429, 500, 503])),
    st.builds(AttemptOutcome, st.sampled_from(
        ["connect_error", "timeout", "dns_error", "missing_secret", "refused"])),
)



@st.composite
def _policies(draw: st.DrawFn) -> DeliveryPolicy:
    # The backoff cap is at least 1/200 of the retry window: a bounded walk.
    max_age = draw(st.floats(0.000001, 3 * 86400))
    return DeliveryPolicy(
        backoff_base_s=draw(st.floats(0.000001, 600)),
        backoff_max_s=draw(st.floats(max(max_age / 200, 0.000001), 7200)),
        max_age_s=max_age, client_error_attempts=draw(st.integers(1, 10)),
        retain_s=draw(st.floats(0.000001, 9 * 86400)))


_created = st.builds(
    lambda lag_us, offset_min: (T0 - timedelta(microseconds=lag_us)).astimezone(
        timezone(timedelta(minutes=offset_min))),
    st.integers(0, 4 * 86400 * 1_000_000), st.integers(-12 * 60, 14 * 60))


@settings(max_examples=400, deadline=None)
@given(policy=_policies(), outcomes=st.lists(_outcomes, min_size=1, max_size=30),
       lags=st.lists(st.sampled_from([0.0, 0.0, 0.000001, 0.3, 5.0, 4000.0]), min_size=1,
                     max_size=30),
       created=_created, job_id=st.text(min_size=1, max_size=12))
def test_no_tick_before_the_mark_changes_anything(
        policy: DeliveryPolicy, outcomes: list[AttemptOutcome], lags: list[float],
        created: datetime, job_id: str) -> None:
    """Deliveries created a while ago (some past their deadline already, as after a long
    outage), any outcomes, ticks on time or late: every tick before the mark is a no-op,
    every tick at or after it acts, and the walk ends with the delivery forgotten."""
    state = new_state(_job(job_id, created), T0, partition=3)
    did = _walk(state, policy, outcomes, lags)
    assert did[-1] == "forgotten"


def test_the_mark_is_the_next_attempt_the_deadline_or_the_forgetting() -> None:
    p = DeliveryPolicy(backoff_base_s=30, max_age_s=3600, retain_s=60)
    s = new_state(_job(), T0, partition=1)
    assert next_tick_at(s, p) == T0  # a new job: due at once
    retry, _ = record_attempt(s, AttemptOutcome("http", 503), T0, p)
    assert retry.next_attempt_at is not None
    assert next_tick_at(retry, p) == retry.next_attempt_at < deadline(retry, p)
    # Due later than the deadline (a state written before the deadline moved): the
    # deadline comes first.
    late = retry.model_copy(update={"next_attempt_at": T0 + timedelta(hours=2)})
    assert next_tick_at(late, p) == deadline(late, p) == T0 + timedelta(hours=1)
    done, _ = record_attempt(retry, AttemptOutcome("http", 200), T0 + timedelta(minutes=1), p)
    assert next_tick_at(done, p) == T0 + timedelta(minutes=2)
    assert next_tick_at(done.model_copy(update={"finished_at": None}), p) is None


def test_the_mark_reads_back() -> None:
    p = DeliveryPolicy()
    s = new_state(_job(), T0, partition=7)
    assert due_mark(s, p) == f"7|{epoch_us(T0)}|1".encode()
    assert parse_mark(due_mark(s, p)) == (7, epoch_us(T0), True)
    done, _ = record_attempt(s, AttemptOutcome("http", 200), T0, p)
    assert parse_mark(due_mark(done, p)) == (
        7, epoch_us(T0 + timedelta(seconds=p.retain_s)), False)
    odd = done.model_copy(update={"finished_at": None, "partition": None})
    assert due_mark(odd, p) == b"||0" and parse_mark(b"||0") == (None, None, False)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])))
def test_epoch_microseconds_are_exact(at: datetime) -> None:
    """No float rounding: a mark one microsecond late would be one tick late."""
    us = epoch_us(at)
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us) == at
    assert epoch_us(at + JUST) == us + 1
