"""hub.kafka: topic creation, durable writes, reading back, readiness."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from hub.brokers.embedded import EmbeddedBroker
from hub.kafka import (
    DurableProducer,
    DurableWriteError,
    KafkaUnavailableError,
    broker_ready,
    client_kwargs,
    ensure_topics,
    full_topic,
    read_topic,
)
from hub.settings import Settings
from schemas.topics import CATALOGUE, EHR_HL7V2, HUB_ACKS

# ------------------------------------------------------------------ no broker


def test_client_kwargs_plaintext() -> None:
    kw = client_kwargs(Settings(kafka_bootstrap="a:1,b:2"))
    assert kw == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}


def test_client_kwargs_sasl_ssl_unwraps_secret_and_builds_context() -> None:
    s = Settings(
        kafka_bootstrap="a:1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="hub",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_verify=False,
    )
    kw = client_kwargs(s)
    assert kw["sasl_plain_password"] == "s3cret"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE
    assert "s3cret" not in repr(s)


def test_client_kwargs_missing_cafile_fails_loudly(tmp_path: Path) -> None:
    s = Settings(
        kafka_bootstrap="a:1",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tmp_path / "missing.pem",
    )
    with pytest.raises(OSError):
        client_kwargs(s)


def test_client_kwargs_without_bootstrap() -> None:
    with pytest.raises(KafkaUnavailableError):
        client_kwargs(Settings())


def test_full_topic_applies_the_prefix_once() -> None:
    s = Settings(topic_prefix="t1.")
    assert full_topic(s, "care.events") == "t1.care.events"
    assert full_topic(s, s.topic("care.events")) == "t1.care.events"
    assert full_topic(Settings(), "care.events") == "care.events"


async def test_broker_ready_false_when_nothing_listens() -> None:
    from hub.brokers import free_port

    t0 = time.monotonic()
    assert await broker_ready(f"127.0.0.1:{free_port()}", timeout=1) is False
    assert time.monotonic() - t0 < 3


# ------------------------------------------------------------------ on a broker


@pytest.mark.kafka
async def test_broker_ready(kafka_bootstrap: str) -> None:
    assert await broker_ready(kafka_bootstrap, timeout=10)


@pytest.mark.kafka
async def test_ensure_topics_is_idempotent(kafka_settings: Callable[..., Settings]) -> None:
    settings = kafka_settings()
    await ensure_topics(settings, CATALOGUE)
    await ensure_topics(settings, CATALOGUE)  # second run: nothing to do, no error
    # Concurrent callers (ingest and worker starting together) must not trip up.
    import asyncio

    await asyncio.gather(*(ensure_topics(settings, [HUB_ACKS]) for _ in range(3)))
    records = await read_topic(settings, EHR_HL7V2.name, timeout=5)
    assert records == []


@pytest.mark.kafka
async def test_send_returns_offsets_and_reads_back(
    kafka_settings: Callable[..., Settings], kafka_idempotent: bool
) -> None:
    settings = kafka_settings()
    await ensure_topics(settings, [EHR_HL7V2])
    async with DurableProducer(settings, idempotent=kafka_idempotent) as producer:
        sent = []
        for i in range(6):
            sent.append(
                await producer.send(
                    EHR_HL7V2.name,
                    b"msg-%d" % i,
                    key=b"patient-%d" % (i % 2),
                    headers=[("source", b"test")],
                    timeout=10,
                )
            )
    partitions = {p for p, _ in sent}
    assert all(0 <= p < 3 for p in partitions)
    # Same key, same partition, increasing offsets: one patient's messages stay ordered.
    by_key: dict[int, list[tuple[int, int]]] = {}
    for i, po in enumerate(sent):
        by_key.setdefault(i % 2, []).append(po)
    for pos in by_key.values():
        assert len({p for p, _ in pos}) == 1
        assert [o for _, o in pos] == sorted(o for _, o in pos)

    records = await read_topic(settings, EHR_HL7V2.name, timeout=10, min_records=6)
    assert sorted((r.partition, r.offset) for r in records) == sorted(sent)
    r0 = next(r for r in records if r.value == b"msg-0")
    assert r0.key == b"patient-0" and r0.headers == {"source": b"test"}
    assert r0.topic == settings.topic(EHR_HL7V2.name) and r0.timestamp > 0


@pytest.mark.kafka
async def test_oversized_record_is_a_durable_write_error(
    kafka_settings: Callable[..., Settings], kafka_idempotent: bool
) -> None:
    settings = kafka_settings(mllp_max_frame_bytes=1024 * 1024)
    await ensure_topics(settings, [EHR_HL7V2])
    async with DurableProducer(settings, idempotent=kafka_idempotent) as producer:
        with pytest.raises(DurableWriteError):
            await producer.send(EHR_HL7V2.name, b"x" * (3 * 1024 * 1024), key=b"k", timeout=10)


async def test_send_times_out_when_the_broker_is_gone() -> None:
    broker = EmbeddedBroker()
    broker.start()
    try:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="t.", partitions=1)
        await ensure_topics(settings, [EHR_HL7V2])
        producer = DurableProducer(settings, idempotent=False)
        await producer.start()
        assert await producer.send(EHR_HL7V2.name, b"before", key=b"k", timeout=5) == (0, 0)
        broker.stop()
        t0 = time.monotonic()
        with pytest.raises(DurableWriteError):
            await producer.send(EHR_HL7V2.name, b"after", key=b"k", timeout=2)
        elapsed = time.monotonic() - t0
        assert elapsed < 3, f"send took {elapsed:.1f}s"
        t0 = time.monotonic()
        await producer.stop()
        assert time.monotonic() - t0 < 7
    finally:
        broker.stop()


async def test_producer_start_fails_cleanly_without_broker() -> None:
    from hub.brokers import free_port

    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = DurableProducer(settings, idempotent=False)
    with pytest.raises(KafkaUnavailableError):
        await producer.start(timeout=3)
    with pytest.raises(DurableWriteError):
        await producer.send("x", b"v", key=None, timeout=1)
