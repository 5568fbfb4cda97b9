"""Webhook delivery end to end on a real broker: the hub's worker, a real local receiver,
and a hub restart in the middle of the retries.

The receiver refuses every attempt (503) until the first hub is stopped, so the second
hub has to resume the pending deliveries from the ``deliveries`` table; then it accepts
each idempotency key once (and counts any request for a key it already accepted).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from hub.commands.dlq_cmd import load_dead_letters, replay
from hub.kafka import DurableProducer, read_topic
from hub.settings import Settings
from schemas.referrals import DeliveryJob
from streams.referrals.delivery import verify_signature

from .hubproc import hub_process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECRET = "e2e-webhook-secret"


@dataclass
class Receiver:
    base: str = ""
    open: bool = False
    attempts: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    after_accept: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    redirect_target_hits: int = 0
    gone_fixed: bool = False
    """The agency behind /gone fixed its endpoint (for the dead letter replay)."""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        if not verify_signature(SECRET, request.headers.get("X-Hub-Signature"), body,
                                now=time.time()):
            rec.bad_signatures += 1
            return web.Response(status=401)
        rec.attempts[key] = rec.attempts.get(key, 0) + 1
        if key in rec.accepted:  # a well-behaved receiver answers 200 again, and dedups
            rec.after_accept[key] = rec.after_accept.get(key, 0) + 1
            return web.Response(status=200)
        if not rec.open:
            return web.Response(status=503)
        rec.accepted[key] = 1
        return web.Response(status=202)

    async def gone(request: web.Request) -> web.Response:
        if rec.gone_fixed:
            return await hook(request)
        return web.Response(status=410)

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/target")

    async def target(_: web.Request) -> web.Response:
        rec.redirect_target_hits += 1
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/gone", gone)
    app.router.add_post("/moved", moved)
    app.router.add_route("*", "/target", target)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


def _job(job_id: str, url: str) -> DeliveryJob:
    return DeliveryJob(id=job_id, agency_id="springfield-housing", url=url,
                       secret_env="E2E_AGENCY_SECRET",
                       body=orjson.dumps({"id": f"task-{job_id}", "status": "requested"}
                                         ).decode(),
                       created_at=datetime.now(UTC), referral_task_id=f"task-{job_id}")


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_exactly_one_accepted_delivery_per_key_across_a_hub_restart(
        kafka_bootstrap: str, kafka_idempotent: bool, receiver: Receiver,
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        "HUB_TOPIC_PREFIX": f"w{tag}.", "HUB_APP_ID": f"hub-w{tag}",
        "HUB_STATE_DIR": str(tmp_path / "state"),
        "HUB_WEBHOOK_ALLOW_INSECURE_LOOPBACK": "true",
        "HUB_WEBHOOK_BACKOFF_BASE_S": "0.4", "HUB_WEBHOOK_BACKOFF_MAX_S": "1.0",
        "HUB_WEBHOOK_TICK_INTERVAL_S": "0.3", "HUB_WEBHOOK_TIMEOUT_S": "3",
        "E2E_AGENCY_SECRET": SECRET,
    }
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_idempotence=kafka_idempotent,
                        topic_prefix=env["HUB_TOPIC_PREFIX"], app_id=env["HUB_APP_ID"],
                        partitions=3)
    keys = ["job-a", "job-b"]
    hook = f"{receiver.base}/hook"
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        async with DurableProducer(settings, idempotent=kafka_idempotent) as producer:
            jobs = [_job(k, hook) for k in keys]
            jobs.append(jobs[0])  # the same job twice on the topic: sent once
            jobs += [_job("job-gone", f"{receiver.base}/gone"),
                     _job("job-moved", f"{receiver.base}/moved")]
            for job in jobs:
                await producer.send("referrals.deliveries", job.model_dump_json().encode(),
                                    key=job.id.encode(), timeout=30)
            # Not a job at all: dead-lettered as bad input, the agent goes on.
            await producer.send("referrals.deliveries", b"not a delivery job",
                                key=b"job-unreadable", timeout=30)
        # Retries happen (each key refused at least twice) before the restart.
        await _until(lambda: all(receiver.attempts.get(k, 0) >= 2 for k in keys), 60,
                     "retries before the restart")
        letters = await _dead_letters(settings, 1)
        assert "job-gone" in {dl.get("message_id") for dl in letters}
    before = dict(receiver.attempts)
    assert not receiver.accepted
    receiver.open = True
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub2:
        await wait_ready(hub2, hub2.http)
        await _until(lambda: all(k in receiver.accepted for k in keys), 60,
                     "deliveries after the restart")
        await asyncio.sleep(2.0)  # several more ticks: nothing may be sent again
        assert receiver.accepted == {k: 1 for k in keys}
        # `hub dlq replay` of the delivery given up (410), once its agency fixed the
        # endpoint: re-queued, delivered once; the same dead letter again changes nothing.
        receiver.gone_fixed = True
        gone_letters = [d for d in await load_dead_letters(settings)
                        if d.message_id == "job-gone"]
        assert len(gone_letters) == 1
        for _ in range(2):
            (result,) = await replay(settings, gone_letters, force=False, dry_run=False)
            assert result.outcome == "replayed", result
            await _until(lambda: "job-gone" in receiver.accepted, 60,
                         "the replayed delivery")
        await asyncio.sleep(2.0)
        log = hub.log_text() + hub2.log_text()
    assert receiver.accepted == {k: 1 for k in [*keys, "job-gone"]}
    events = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    # Two replays of one dead letter: one restart (the second is a duplicate).
    assert len([e for e in events if e.get("event") == "delivery_replay_started"]) == 1
    assert receiver.after_accept == {}, "a delivered job was sent again"
    assert receiver.bad_signatures == 0
    for k in keys:
        assert receiver.attempts[k] > before[k], "the second hub resumed the delivery"
    # A 410 and a redirect are given up and dead-lettered (the redirect is a failure that
    # repeats, so its client-error budget runs out); the redirect target is never asked.
    assert receiver.redirect_target_hits == 0
    letters = await _dead_letters(settings, 1)
    gone = [dl for dl in letters if dl.get("message_id") == "job-gone"]
    assert len(gone) == 1 and gone[0]["stage"] == "deliveries"
    assert gone[0]["error_code"] == "webhook_exhausted" and "http_410" in gone[0]["detail"]
    assert "job-a" not in {dl.get("message_id") for dl in letters}
    unreadable = [dl for dl in letters if dl["stage"] == "deliveries"
                  and dl["error_code"] == "invalid_resource"]
    assert len(unreadable) == 1 and unreadable[0]["source"]["topic"].endswith(
        "referrals.deliveries"), letters
    assert "record_dead_lettered" in log  # counted and logged as every stage's are
    # The secret never reaches the log.
    assert SECRET not in log


async def _dead_letters(settings: Settings, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    letters: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = await read_topic(settings, "hub.dlq", timeout=5, min_records=n)
        letters = [orjson.loads(r.value) for r in records if r.value]
        if len(letters) >= n:
            break
        await asyncio.sleep(0.5)
    return letters


async def test_deliveries_stored_after_the_first_sweep_are_retried_and_expired_on_time(
        kafka_bootstrap: str, kafka_idempotent: bool, tmp_path: Path) -> None:
    """After its first full pass of a partition the timer reads only the deliveries whose
    mark (``deliveries-due``) has come: jobs arriving later must still be retried at
    their backoff and given up at their deadline, by those marks alone."""
    max_age = 6.0
    times: dict[str, list[float]] = {}

    async def flaky(request: web.Request) -> web.Response:
        # Refuses each key's first two attempts, then accepts.
        key = request.headers.get("Idempotency-Key", "")
        times.setdefault(key, []).append(time.monotonic())
        return web.Response(status=503 if len(times[key]) <= 2 else 202)

    async def down(request: web.Request) -> web.Response:
        times.setdefault(request.headers.get("Idempotency-Key", ""), []).append(
            time.monotonic())
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/flaky", flaky)
    app.router.add_post("/down", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    tag = uuid.uuid4().hex[:8]
    env = {
        "HUB_TOPIC_PREFIX": f"d{tag}.", "HUB_APP_ID": f"hub-d{tag}",
        "HUB_WEBHOOK_ALLOW_INSECURE_LOOPBACK": "true",
        "HUB_WEBHOOK_BACKOFF_BASE_S": "0.4", "HUB_WEBHOOK_BACKOFF_MAX_S": "1.0",
        "HUB_WEBHOOK_MAX_AGE_S": str(max_age),
        "HUB_WEBHOOK_TICK_INTERVAL_S": "0.3", "HUB_WEBHOOK_TIMEOUT_S": "3",
        "E2E_AGENCY_SECRET": SECRET,
    }
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_idempotence=kafka_idempotent,
                        topic_prefix=env["HUB_TOPIC_PREFIX"], app_id=env["HUB_APP_ID"],
                        partitions=3)
    flaky_keys = [f"late-ok-{i}" for i in range(4)]
    down_keys = [f"late-down-{i}" for i in range(4)]

    def swept(log: str) -> list[dict[str, Any]]:
        return [e for e in _log_events(log) if e.get("event") == "delivery_tick_swept"]

    try:
        with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                         tmp=tmp_path) as hub:
            await wait_ready(hub, hub.http)
            await _until(lambda: {e["partition"] for e in swept(hub.log_text())}
                         == {0, 1, 2}, 60, "every partition's first full pass")
            async with DurableProducer(settings, idempotent=kafka_idempotent) as producer:
                sent = time.monotonic()
                for key in flaky_keys:
                    await producer.send("referrals.deliveries", _job(
                        key, f"{base}/flaky").model_dump_json().encode(),
                        key=key.encode(), timeout=30)
                for key in down_keys:
                    await producer.send("referrals.deliveries", _job(
                        key, f"{base}/down").model_dump_json().encode(),
                        key=key.encode(), timeout=30)
            await _until(lambda: all(len(times.get(k, [])) >= 3 for k in flaky_keys), 30,
                         "the retried deliveries accepted")

            def given_up() -> set[str]:
                return {e.get("delivery_id") for e in _log_events(hub.log_text())
                        if e.get("event") == "delivery_dead_lettered"}

            await _until(lambda: set(down_keys) <= given_up(), max_age + 20,
                         "the failing deliveries given up")
            gave_up = time.monotonic()
            await asyncio.sleep(1.5)  # more ticks: nothing more may be sent
            log = hub.log_text()
    finally:
        await runner.cleanup()
    # Found only by their marks: no partition was swept again after the jobs arrived.
    assert len(swept(log)) == 3, swept(log)
    for key in flaky_keys:
        assert len(times[key]) == 3, (key, times[key])  # accepted once, never sent again
    for key in [*flaky_keys, *down_keys]:
        gaps = [b - a for a, b in zip(times[key], times[key][1:], strict=False)]
        # Each retry at its backoff (at most backoff_max_s = 1 s, jittered), found by a
        # tick soon after (0.3 s): a mark missed or late would show as a long gap.
        assert all(0.1 < g < 1.0 + 0.3 + 1.5 for g in gaps), (key, gaps)
    for key in down_keys:
        # Attempted until the deadline (6 s after creation), given up then.
        assert times[key][-1] - sent < max_age + 0.5, (key, times[key][-1] - sent)
        assert len(times[key]) >= 4, (key, times[key])
    assert gave_up - sent < max_age + 5.0
    letters = await _dead_letters(settings, len(down_keys))
    exhausted = {dl.get("message_id") for dl in letters
                 if dl.get("error_code") == "webhook_exhausted"}
    assert exhausted == set(down_keys), letters


def _log_events(log: str) -> list[dict[str, Any]]:
    """The hub's JSON log lines (a terminal control sequence may precede the first)."""
    events = []
    for line in log.splitlines():
        if "{" in line:
            try:
                events.append(orjson.loads(line[line.index("{"):]))
            except orjson.JSONDecodeError:  # not a log record (a traceback line)
                continue
    return [e for e in events if isinstance(e, dict)]
