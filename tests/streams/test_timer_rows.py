"""The timers' passes over stored rows, driven through the real agents without a broker
(faust's in-memory ``agent.test_context()``, memory store): one stored row this worker
cannot read is reported and left as stored, and every other row of the partition is
still ticked, on the first full sweep and on the passes that read due marks after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from schemas.canonical import patient_ref
from schemas.care import TICK_KEY
from schemas.referrals import DeliveryJob
from streams.app import create_app
from streams.care.state import PatientState
from streams.care_agents import EPISODES_AGENT, EPISODES_DUE_TABLE, EPISODES_TABLE
from streams.config import StreamsConfig
from streams.delivery_agents import (
    DELIVERIES_AGENT,
    DELIVERIES_DUE_TABLE,
    DELIVERIES_TABLE,
    DeliveryFigures,
)
from streams.referrals.delivery import AttemptOutcome, DeliveryState, new_state

BAD = b"\x00not a state a worker can read"
TICK = b'{"op":"tick"}'


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _store(app: Any, table: str) -> Any:
    return app.tables[table].data


async def _tick(app: Any, agent_name: str, partition: int, done: Callable[[], bool]
                ) -> None:
    """Send the agent one tick for ``partition`` and wait until ``done()`` (the test
    wrapper's own wait returns before an agent that yields nothing has finished)."""
    async with app.agents[agent_name].test_context() as agent:
        await agent.put(TICK, key=TICK_KEY, partition=partition, wait=False)
        for _ in range(500):
            if done():
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the tick did not finish")


def _failed(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


def test_care_tick_goes_past_a_state_it_cannot_read(loop: asyncio.AbstractEventLoop
                                                    ) -> None:
    app, counters = create_app(StreamsConfig(bootstrap="localhost:1", partitions=2))
    states = _store(app, EPISODES_TABLE)
    marks = _store(app, EPISODES_DUE_TABLE)
    for key in (b"MRN-1", b"MRN-BAD", b"MRN-2"):
        states[key] = (BAD if key == b"MRN-BAD" else
                       PatientState(key=key.decode(), partition=0).model_dump_json().encode())
    # Another partition's patient: its own partition's sweep reads it, not this one.
    states[b"MRN-9"] = PatientState(key="MRN-9", partition=1).model_dump_json().encode()

    def tick(failures: int) -> Any:
        return _tick(app, EPISODES_AGENT, 0,
                     lambda: counters.care.tick_row_failures == failures
                     and counters.care.figures().get("tasks_open") is not None)

    with capture_logs() as logs:
        loop.run_until_complete(tick(1))  # the first tick: a full sweep
    failed = _failed(logs, "care_tick_row_failed")
    assert failed == [{"event": "care_tick_row_failed", "log_level": "error", "partition": 0,
                       "exc_type": "ValidationError", "patient_ref": patient_ref("MRN-BAD")}]
    assert "MRN" not in repr(logs)
    swept = _failed(logs, "care_tick_swept")
    assert swept and swept[0]["records"] == 2 and swept[0]["failed"] == 1
    # Both readable patients of the partition were ticked (their due marks written),
    # the unreadable one is left as stored, and the sweep counts as done.
    assert marks[b"MRN-1"] == marks[b"MRN-2"] == b"0||0|0"
    assert states[b"MRN-BAD"] == BAD and b"MRN-BAD" not in marks
    assert counters.care.figures()["stages"][EPISODES_AGENT]["timer_row_failures"] == 1

    # The next passes read due marks: the bad state's mark is due, one of the good
    # ones is due, and another's mark is one this worker cannot read.
    past = b"%d" % int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1e6)
    marks[b"MRN-BAD"] = b"0|" + past + b"|0|0"
    marks[b"MRN-1"] = b"0|" + past + b"|0|0"
    marks[b"MRN-2"] = b"0|garbage"
    with capture_logs() as logs:
        loop.run_until_complete(tick(2))
    assert [e["patient_ref"] for e in _failed(logs, "care_tick_row_failed")] == [
        patient_ref("MRN-BAD")]
    assert not _failed(logs, "care_tick_swept")  # not swept again
    assert marks[b"MRN-1"] == b"0||0|0"
    assert marks[b"MRN-2"] == b"0||0|0"  # read as due, and a good mark written
    assert states[b"MRN-BAD"] == BAD
    assert counters.care.figures()["stages"][EPISODES_AGENT]["timer_row_failures"] == 2


def _job(i: int) -> DeliveryJob:
    return DeliveryJob(id=f"dlv-{i}", agency_id="springfield-housing",
                       url="https://agency.example/referrals", secret_env="X_SECRET",
                       body="{}", created_at=datetime.now(UTC), referral_task_id=f"task-{i}")


def _delivery_tick(app: Any, figures: DeliveryFigures, partition: int) -> Any:
    ticks = figures.ticks
    return _tick(app, DELIVERIES_AGENT, partition, lambda: figures.ticks > ticks)


def test_delivery_tick_goes_past_a_state_it_cannot_read(
        loop: asyncio.AbstractEventLoop) -> None:
    sent: list[str] = []

    async def sender(job: DeliveryJob, attempt: int) -> AttemptOutcome:
        sent.append(job.id)
        return AttemptOutcome("http", 200)

    app, counters = create_app(StreamsConfig(bootstrap="localhost:1", partitions=2,
                                             care=False, webhook_sender=sender))
    figures: DeliveryFigures = counters.deliveries
    states = _store(app, DELIVERIES_TABLE)
    marks = _store(app, DELIVERIES_DUE_TABLE)
    now = datetime.now(UTC)
    for key in (b"dlv-1", b"dlv-bad", b"dlv-2", b"dlv-3", b"dlv-4"):
        i = key[4:].decode()
        states[key] = BAD if i == "bad" else new_state(
            _job(int(i)), now, partition=1 if i == "4" else 0).model_dump_json(
                exclude_none=True).encode()

    with capture_logs() as logs:
        loop.run_until_complete(_delivery_tick(app, figures, 0))
    assert _failed(logs, "delivery_tick_row_failed") == [
        {"event": "delivery_tick_row_failed", "log_level": "error", "partition": 0,
         "exc_type": "ValidationError", "delivery_id": "dlv-bad"}]
    swept = _failed(logs, "delivery_tick_swept")
    assert swept and swept[0]["records"] == 3 and swept[0]["failed"] == 1
    assert sorted(sent) == ["dlv-1", "dlv-2", "dlv-3"]
    for i in (1, 2, 3):
        assert DeliveryState.model_validate_json(states[b"dlv-%d" % i]).terminal
    assert states[b"dlv-bad"] == BAD
    assert figures.figures()["stages"]["deliveries"]["timer_row_failures"] == 1
    assert figures.by_agency["springfield-housing"]["delivered"] == 3

    # Afterwards the marks: the bad state's own mark is due, and is read again (and
    # fails again, left as stored); another partition's delivery with a mark this
    # worker cannot read is found by that partition's sweep all the same.
    past = b"%d" % int((now - timedelta(minutes=1)).timestamp() * 1e6)
    marks[b"dlv-bad"] = b"0|" + past + b"|1"
    marks[b"dlv-4"] = b"1|garbage"
    with capture_logs() as logs:
        loop.run_until_complete(_delivery_tick(app, figures, 0))
        loop.run_until_complete(_delivery_tick(app, figures, 1))
    assert [(e["delivery_id"], e["partition"])
            for e in _failed(logs, "delivery_tick_row_failed")] == [("dlv-bad", 0)]
    assert sent[3:] == ["dlv-4"]
    assert figures.tick_row_failures == 2
    assert states[b"dlv-bad"] == BAD


def test_a_mark_this_worker_cannot_read_is_taken_as_due_and_rewritten(
        loop: asyncio.AbstractEventLoop) -> None:
    async def sender(job: DeliveryJob, attempt: int) -> AttemptOutcome:
        return AttemptOutcome("http", 503)

    app, counters = create_app(StreamsConfig(bootstrap="localhost:1", partitions=1,
                                             care=False, webhook_sender=sender))
    figures: DeliveryFigures = counters.deliveries
    states = _store(app, DELIVERIES_TABLE)
    marks = _store(app, DELIVERIES_DUE_TABLE)
    states[b"dlv-1"] = new_state(_job(1), datetime.now(UTC), partition=0).model_dump_json(
        exclude_none=True).encode()
    loop.run_until_complete(_delivery_tick(app, figures, 0))  # the sweep
    good = marks[b"dlv-1"]
    marks[b"dlv-1"] = b"0|not-a-time"
    loop.run_until_complete(_delivery_tick(app, figures, 0))
    assert marks[b"dlv-1"] == good
    assert figures.tick_row_failures == 0 and figures.pending == 1


def test_pending_is_the_sum_over_partitions(loop: asyncio.AbstractEventLoop) -> None:
    async def sender(job: DeliveryJob, attempt: int) -> AttemptOutcome:
        return AttemptOutcome("http", 503)  # every delivery stays pending

    app, counters = create_app(StreamsConfig(bootstrap="localhost:1", partitions=3,
                                             care=False, webhook_sender=sender))
    figures: DeliveryFigures = counters.deliveries
    states = _store(app, DELIVERIES_TABLE)
    now = datetime.now(UTC)
    for i, partition in enumerate((0, 0, 1, 2, 2, 2)):
        states[b"dlv-%d" % i] = new_state(_job(i), now, partition=partition).model_dump_json(
            exclude_none=True).encode()
    assert "webhook_deliveries_pending" not in figures.figures()  # no tick yet

    for partition in (0, 1, 2):
        loop.run_until_complete(_delivery_tick(app, figures, partition))
        assert figures.pending == {0: 2, 1: 3, 2: 6}[partition]
    assert figures.figures()["webhook_deliveries_pending"] == 6
    for partition in (2, 0, 1):  # passes that read the marks count the same
        loop.run_until_complete(_delivery_tick(app, figures, partition))
        assert figures.pending == 6
