"""End to end on a real broker: the hub's processes, real sockets, real topics.

`hub run` is started as a subprocess (the way users run it), bound to the test broker
with a unique topic prefix and consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from hub.feed import FeedConfig, generate
from hub.kafka import read_topic
from hub.mllp_client import MllpClient
from hub.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _msa(ack: bytes) -> list[str]:
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            return seg.decode().split("|")
    raise AssertionError("no MSA segment in the ACK")


@contextmanager
def hub_process(bootstrap: str, *, idempotent: bool, roles: str = "run") -> Iterator[Settings]:
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": bootstrap,
        "HUB_KAFKA_IDEMPOTENCE": "true" if idempotent else "false",
        "HUB_TOPIC_PREFIX": prefix,
        "HUB_APP_ID": f"hub-{prefix}",
        "HUB_PARTITIONS": "3",
        "HUB_MLLP_PORT": str(_free_port()),
        "HUB_HTTP_PORT": str(_free_port()),
        "HUB_ACK_TIMEOUT_S": "15",
        "HUB_STATE_DIR": f"/tmp/hub-state-{prefix}",
        "HUB_LOG_LEVEL": "INFO",
    }
    if not idempotent:  # the embedded broker: see hub.runner.broker
        env.update(HUB_GROUP_SESSION_TIMEOUT_S="6", HUB_GROUP_REBALANCE_TIMEOUT_S="3")
    settings = Settings(
        kafka_bootstrap=bootstrap, kafka_idempotence=idempotent, topic_prefix=prefix,
        partitions=3, mllp_port=int(env["HUB_MLLP_PORT"]), http_port=int(env["HUB_HTTP_PORT"]),
    )
    log_path = Path(f"/tmp/hub-e2e-{prefix}log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", roles], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"hub exited early:\n{log_path.read_text()[-3000:]}")
                try:
                    socket.create_connection(("127.0.0.1", settings.mllp_port), 0.5).close()
                    break
                except OSError:
                    time.sleep(0.3)
            else:
                raise AssertionError(f"MLLP never listened:\n{log_path.read_text()[-3000:]}")
            yield settings
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            settings_log = log_path.read_text(errors="replace")
            # The log of a whole run is structured JSON with no PHI from the feed.
            for token in ("MAIN ST", "WELBY", "MRN100"):
                assert token not in settings_log, f"PHI token {token!r} leaked into the log"


async def _wait_for(settings: Settings, topic: str, n: int, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        records = await read_topic(settings, settings.topic(topic), timeout=5, min_records=n)
        if len(records) >= n:
            return records
        await asyncio.sleep(0.5)
    return records


async def _flow(settings: Settings) -> None:
    good = list(generate(FeedConfig(patients=3, bad_messages=False)))
    bad = (b"MSH|^~\\&|EPICADT|GENHOSP|HUB|HUB|20261102080000||ADT^A01|BADPID|P|2.5.1\r"
           b"EVN|A01|20261102080000\rPID|1||||NOBODY\rPV1|1|I\r")
    async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
        acks = [await client.send(m) for m in good]
        bad_ack = await client.send(bad)
        dup_ack = await client.send(good[0])
    for msg, ack in zip(good, acks, strict=True):
        msa = _msa(ack)
        control = msg.split(b"\r")[0].split(b"|")[9].decode()
        assert msa[1] == "AA" and msa[2] == control
    assert _msa(bad_ack)[1] == "AE" and b"ERR|" in bad_ack
    assert dup_ack == acks[0], "a duplicate control id gets the stored ACK"

    events = await _wait_for(settings, "care.events", len(good))
    assert len(events) == len(good)
    decoded = [orjson.loads(r.value) for r in events]
    assert {e["source"]["message_id"] for e in decoded} == {
        m.split(b"\r")[0].split(b"|")[9].decode() for m in good}
    for rec, ev in zip(events, decoded, strict=True):
        assert rec.key.decode() == ev["patient"]["key"]
    dlq = await _wait_for(settings, "hub.dlq", 1)
    letters = [orjson.loads(r.value) for r in dlq]
    assert [dl["error_code"] for dl in letters] == ["missing_patient_identifier"]
    payloads = await _wait_for(settings, "hub.dlq-payloads", 1)
    assert payloads[0].value == bad and payloads[0].key.decode() == letters[0]["id"]


async def test_mllp_to_care_events_on_the_test_broker(kafka_bootstrap: str,
                                                       kafka_idempotent: bool) -> None:
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent) as settings:
        await _flow(settings)


async def test_fhir_over_http_and_direct_kafka_producers(
        kafka_bootstrap: str, kafka_idempotent: bool, corpus_dir: Path) -> None:
    """FHIR over HTTP -> care.events; a producer writing to ehr.hl7v2 directly gets
    normalize's dedup (facility + control id) and dead letters with coordinates."""
    import aiohttp

    from hub.kafka import DurableProducer

    bundle = (corpus_dir / "fhir/davinci-alerts/admit-notification-message-bundle-01.json"
              ).read_bytes()
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent) as settings:
        url = f"http://127.0.0.1:{settings.http_port}/fhir"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=bundle,
                                 headers={"Content-Type": "application/fhir+json"}) as resp:
                assert resp.status == 202, await resp.text()
                ids = (await resp.json())["event_ids"]
            async with http.post(url, data=b'{"resourceType": "Observation", "id": "x"}',
                                 headers={"Content-Type": "application/fhir+json"}) as resp:
                assert resp.status in (400, 422)
                outcome = await resp.json()
                assert outcome["resourceType"] == "OperationOutcome"

        good = next(iter(generate(FeedConfig(patients=1, seed=99, bad_messages=False))))
        bad = b"MSH|^~\\&|X|GENHOSP|H|H|20261102||ADT^A01|K2|P|2.5.1\rPID|1\r"
        producer = DurableProducer(settings, idempotent=kafka_idempotent)
        await producer.start()
        try:
            topic = settings.topic("ehr.hl7v2")
            for value in (good, good, bad):  # the second is a sender's resend
                await producer.send(topic, value, key=b"k", headers=None, timeout=30)
        finally:
            await producer.stop()

        events = await _wait_for(settings, "care.events", 2)
        decoded = [orjson.loads(r.value) for r in events]
        assert sorted(e["event_id"] for e in decoded if e["source"]["format"] == "fhir") == \
            sorted(ids)
        hl7 = [e for e in decoded if e["source"]["format"] == "hl7v2"]
        assert len(hl7) == 1, "the resent control id was dropped by normalize's dedup"
        letters = [orjson.loads(r.value) for r in await _wait_for(settings, "hub.dlq", 2)]
        normalize_letters = [dl for dl in letters if dl["stage"] == "normalize"]
        assert len(normalize_letters) == 1
        src = normalize_letters[0]["source"]
        assert src["topic"] == settings.topic("ehr.hl7v2") and src["offset"] == 2


async def test_same_flow_on_the_embedded_broker(embedded_bootstrap: str) -> None:
    with hub_process(embedded_bootstrap, idempotent=False) as settings:
        await _flow(settings)
