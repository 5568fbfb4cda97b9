"""The pure delivery logic: signatures, classification, backoff and the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.referrals import DeliveryJob
from streams.referrals.delivery import (
    AttemptOutcome,
    DeliveryPolicy,
    backoff_s,
    classify,
    deadline,
    expire,
    forgettable,
    is_due,
    jitter_fraction,
    new_state,
    record_attempt,
    signature_header,
    verify_signature,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = b"s3cret-shared-with-the-agency"
BODY = b'{"id":"task-1","status":"requested"}'


def _job(job_id: str = "job-1", created: datetime = T0) -> DeliveryJob:
    return DeliveryJob(id=job_id, agency_id="springfield-housing",
                       url="https://agency.example/referrals", secret_env="X_SECRET",
                       body=BODY.decode(), created_at=created, referral_task_id="task-1")


# ------------------------------------------------------------------------ signatures


def test_signature_verifies_with_the_shared_secret() -> None:
    t = int(T0.timestamp())
    header = signature_header(SECRET, BODY, t)
    assert header.startswith(f"t={t},v1=")
    assert verify_signature(SECRET, header, BODY, now=t + 10)
    assert verify_signature(SECRET.decode(), header, BODY, now=t - 10)


def test_signature_fails_with_a_wrong_secret_stale_time_or_tampered_body() -> None:
    t = int(T0.timestamp())
    header = signature_header(SECRET, BODY, t)
    assert not verify_signature(b"another secret", header, BODY, now=t)
    assert not verify_signature(SECRET, header, BODY, now=t + 301)
    assert not verify_signature(SECRET, header, BODY, now=t - 301)
    assert not verify_signature(SECRET, header, BODY + b" ", now=t)
    assert not verify_signature(SECRET, header, BODY.replace(b"task-1", b"task-2"), now=t)
    # The timestamp is inside the MAC: moving it forward breaks the signature.
    forged = header.replace(f"t={t}", f"t={t + 100}")
    assert not verify_signature(SECRET, forged, BODY, now=t + 100)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=1", "v1=abc", "t=x,v1=ab",
                                    "t=1,t=2,v1=ab", "t=1;v1=ab"])
def test_malformed_signature_headers_never_verify(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, now=1)


def test_rotation_any_of_several_v1_values_may_match() -> None:
    t = int(T0.timestamp())
    old = signature_header(b"old", BODY, t).split(",")[1]
    new = signature_header(SECRET, BODY, t).split(",")[1]
    assert verify_signature(SECRET, f"t={t},{old},{new}", BODY, now=t)


# -------------------------------------------------------------------- classification


@pytest.mark.parametrize(("outcome", "verdict"), [
    (AttemptOutcome("http", 200), "delivered"),
    (AttemptOutcome("http", 204), "delivered"),
    (AttemptOutcome("http", 408), "retry"),
    (AttemptOutcome("http", 429), "retry"),
    (AttemptOutcome("http", 500), "retry"),
    (AttemptOutcome("http", 503), "retry"),
    (AttemptOutcome("http", 410), "give_up"),
    (AttemptOutcome("http", 400), "client_error"),
    (AttemptOutcome("http", 401), "client_error"),
    (AttemptOutcome("http", 302), "client_error"),
    (AttemptOutcome("http", 307), "client_error"),
    (AttemptOutcome("connect_error", code="connect_refused"), "retry"),
    (AttemptOutcome("timeout"), "retry"),
    (AttemptOutcome("dns_error"), "retry"),
    (AttemptOutcome("missing_secret"), "retry"),
    (AttemptOutcome("refused", code="not_https"), "give_up"),
])
def test_classify(outcome: AttemptOutcome, verdict: str) -> None:
    assert classify(outcome) == verdict


def test_backoff_is_exponential_capped_and_jittered_deterministically() -> None:
    p = DeliveryPolicy(backoff_base_s=10, backoff_max_s=100)
    delays = [backoff_s(p, "job-1", n) for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        cap = min(100, 10 * 2 ** (n - 1))
        assert cap / 2 <= d < cap
    assert delays == [backoff_s(p, "job-1", n) for n in range(1, 8)]
    assert backoff_s(p, "job-1", 1) != backoff_s(p, "job-2", 1)
    assert 0 <= jitter_fraction("x", 1) < 1


def test_a_410_exhausts_at_once_and_client_errors_after_the_limit() -> None:
    p = DeliveryPolicy(client_error_attempts=3)
    state = new_state(_job(), T0)
    gone, tr = record_attempt(state, AttemptOutcome("http", 410), T0, p)
    assert (gone.status, tr.kind, tr.reason) == ("exhausted", "exhausted", "http_410")
    s, now = state, T0
    for i in range(3):
        s, tr = record_attempt(s, AttemptOutcome("http", 401), now, p)
        now = s.next_attempt_at or now
        assert tr.kind == ("exhausted" if i == 2 else "retrying")
    # A server error in between resets the client-error count.
    s = state
    for outcome in (AttemptOutcome("http", 401), AttemptOutcome("http", 401),
                    AttemptOutcome("http", 503), AttemptOutcome("http", 401)):
        s, tr = record_attempt(s, outcome, now, p)
    assert s.status == "retrying" and s.client_errors == 1


def test_expire_and_forget() -> None:
    p = DeliveryPolicy(max_age_s=3600, retain_s=60)
    s = new_state(_job(), T0)
    assert expire(s, T0 + timedelta(minutes=59), p)[1].kind == "ignored"
    done, tr = expire(s, T0 + timedelta(hours=1), p)
    assert (done.status, tr.reason) == ("exhausted", "max_age_exceeded")
    assert not is_due(done, T0 + timedelta(days=9))
    assert not forgettable(done, T0 + timedelta(hours=1), p)
    assert forgettable(done, T0 + timedelta(hours=1, seconds=60), p)


def test_state_round_trips_through_json() -> None:
    s, _ = record_attempt(new_state(_job(), T0, partition=2, source_topic="referrals."
                                    "deliveries", source_offset=7),
                          AttemptOutcome("timeout"), T0, DeliveryPolicy())
    assert type(s).model_validate_json(s.model_dump_json()) == s


# ------------------------------------------------------------------ property tests

_outcomes = st.one_of(
    st.builds(AttemptOutcome, st.just("http"), st.sampled_from(
        [200, 201, 202, 204, 301, 302, 400, 401, 403, 404, 408, 409, 410, 413, 422, 429,
         500, 502, 503, 504])),
    st.builds(AttemptOutcome, st.sampled_from(
        ["connect_error", "timeout", "dns_error", "missing_secret", "refused"])),
)
_policies = st.builds(
    DeliveryPolicy,
    backoff_base_s=st.floats(0.01, 600), backoff_max_s=st.floats(0.01, 7200),
    max_age_s=st.floats(1, 3 * 86400), client_error_attempts=st.integers(1, 10))


@settings(max_examples=300, deadline=None)
@given(policy=_policies, outcomes=st.lists(_outcomes, min_size=1, max_size=60),
       job_id=st.text(min_size=1, max_size=20), late=st.lists(st.floats(0, 5000),
                                                              min_size=60, max_size=60))
def test_machine_properties(policy: DeliveryPolicy, outcomes: list[AttemptOutcome],
                            job_id: str, late: list[float]) -> None:
    """Driven like the agent does (attempt only when due, possibly late): never delivers
    twice, the next attempt is strictly later than the last, nothing is attempted after
    the deadline, and a delivery that keeps failing is given up by the deadline."""
    state = new_state(_job(job_id), T0)
    end = deadline(state, policy)
    now = T0
    delivered = 0
    for outcome, lag in zip(outcomes, late, strict=False):
        if not is_due(state, now):
            break
        assert now <= end or state.attempts == 0
        before = state
        state, tr = record_attempt(state, outcome, now, policy)
        assert state.attempts == before.attempts + 1
        if tr.kind == "delivered":
            delivered += 1
        if tr.kind == "retrying":
            assert state.next_attempt_at is not None
            assert now < state.next_attempt_at <= end
            # The agent's tick may be late: it attempts at or after the due time.
            now = state.next_attempt_at + timedelta(seconds=lag % 30)
            if now > end:
                state, tr2 = expire(state, now, policy)
                assert tr2.kind == "exhausted"
        else:
            assert state.terminal and state.next_attempt_at is None
            # A finished delivery ignores anything after it.
            again, tr3 = record_attempt(state, AttemptOutcome("http", 200), now, policy)
            assert again == state and tr3.kind == "ignored"
            assert not is_due(state, now + timedelta(days=30))
    assert delivered <= 1
    assert delivered == (state.status == "delivered")


@settings(max_examples=200, deadline=None)
@given(policy=st.builds(DeliveryPolicy, backoff_base_s=st.floats(0.5, 600),
                        backoff_max_s=st.floats(60, 7200), max_age_s=st.floats(1, 2 * 86400)),
       job_id=st.text(min_size=1, max_size=20))
def test_always_failing_delivery_is_given_up_by_the_deadline(policy: DeliveryPolicy,
                                                              job_id: str) -> None:
    state = new_state(_job(job_id), T0)
    end = deadline(state, policy)
    now = T0
    for _ in range(20_000):
        if state.terminal:
            break
        assert is_due(state, now)
        state, _tr = record_attempt(state, AttemptOutcome("http", 503), now, policy)
        if state.next_attempt_at is not None:
            now = state.next_attempt_at
    assert state.status == "exhausted"
    assert state.last_attempt_at is not None and state.last_attempt_at <= end
