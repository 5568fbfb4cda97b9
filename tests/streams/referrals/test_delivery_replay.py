"""``hub dlq replay`` of a delivery given up: the job it is re-queued as, and when the
delivery stage starts a delivery it already holds again (once per dead letter)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from streams.referrals.delivery import (
    AttemptOutcome,
    DeliveryPolicy,
    DeliveryState,
    deadline,
    new_state,
    record_attempt,
    replay_job,
    restarts,
)

from .test_delivery import T0, _job

POLICY = DeliveryPolicy()


def _given_up() -> DeliveryState:
    state, _ = record_attempt(new_state(_job(), T0), AttemptOutcome("http", 410), T0, POLICY)
    assert state.status == "exhausted"
    return state


def test_the_replayed_job_keeps_id_and_body_and_gets_a_fresh_window() -> None:
    original = _job().model_dump_json().encode()
    later = T0 + timedelta(days=3)
    job = replay_job(original, "dl-1", later)
    assert (job.id, job.body, job.url, job.version) == (_job().id, _job().body, _job().url, 1)
    assert (job.created_at, job.replay_of) == (later, "dl-1")
    assert deadline(new_state(job, later), POLICY) == later + timedelta(days=1)


@pytest.mark.parametrize("raw", [b"", b"{}", b"not json", b'{"id": 1}'])
def test_what_is_not_a_job_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        replay_job(raw, "dl-1", T0)
    assert issubclass(ValidationError, ValueError)


def test_only_a_replay_of_a_given_up_delivery_restarts_and_only_once() -> None:
    gone = _given_up()
    replay = replay_job(_job().model_dump_json().encode(), "dl-1", T0 + timedelta(days=1))
    assert restarts(gone, replay)
    assert not restarts(gone, _job())  # a plain redelivery
    restarted = new_state(replay, T0 + timedelta(days=1))
    assert not restarts(restarted, replay)  # still going: a duplicate
    again, _ = record_attempt(restarted, AttemptOutcome("http", 410), T0 + timedelta(days=1),
                              POLICY)
    assert not restarts(again, replay)  # the same dead letter twice
    second = replay_job(_job().model_dump_json().encode(), "dl-2", T0 + timedelta(days=2))
    assert restarts(again, second)  # a new dead letter of the same delivery
    done, _ = record_attempt(new_state(second, T0), AttemptOutcome("http", 200), T0, POLICY)
    assert not restarts(done, replay_job(_job().model_dump_json().encode(), "dl-3", T0))
