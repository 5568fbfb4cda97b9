"""ACK store bounds, dead-letter ids, and the whole IngestService start/stop."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from hub.ingest import IngestService
from hub.ingest.ackstore import AckStore
from hub.ingest.deadletter import PAYLOAD_LIMIT_BYTES, dead_letter, dead_letter_id
from hub.kafka import DurableProducer, ensure_topics, read_topic
from hub.settings import Settings
from mappers.hl7v2 import read_header
from schemas.errors import ErrorCode, MappingError
from schemas.records import DeadLetter, SourceCoordinates
from schemas.topics import HUB_DLQ, HUB_DLQ_PAYLOADS

from .ingest_helpers import RawClient, adt, msa


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ack_store_ttl_and_lru() -> None:
    clock = Clock()
    store = AckStore(Settings(dedup_window_s=60), None, max_entries=3, clock=clock)
    for i in range(3):
        store.remember("F", f"c{i}", f"ack{i}".encode())
    assert store.get("F", "c0") == b"ack0"  # c0 is now the most recent
    store.remember("F", "c3", b"ack3")  # evicts c1, the least recently used
    assert store.get("F", "c1") is None
    assert [store.get("F", c) for c in ("c0", "c2", "c3")] == [b"ack0", b"ack2", b"ack3"]
    assert store.get("G", "c0") is None  # scoped by facility
    clock.now += 61
    assert store.get("F", "c0") is None and len(store) == 2


def test_ack_store_disabled_window() -> None:
    store = AckStore(Settings(dedup_window_s=0), None)
    store.remember("F", "c", b"ack")
    assert store.get("F", "c") is None


def test_dead_letter_id_is_deterministic() -> None:
    a = dead_letter_id(stage="ingest", transport="mllp", facility="F", message_id="1",
                       original=b"x")
    assert a == dead_letter_id(stage="ingest", transport="mllp", facility="F", message_id="1",
                               original=b"x")
    assert a != dead_letter_id(stage="ingest", transport="mllp", facility="F", message_id="1",
                               original=b"y")
    src = SourceCoordinates(topic="ehr.hl7v2", partition=0, offset=5)
    assert a != dead_letter_id(stage="normalize", transport="kafka", facility="F",
                               message_id="1", original=b"x", source=src)


@pytest.mark.kafka
async def test_dead_letter_normalize_stage_with_source(
    kafka_settings: Callable[..., Settings],
) -> None:
    """streams/ reuses dead_letter for normalize failures: coordinates, no ingest bits."""
    settings = kafka_settings()
    await ensure_topics(settings, [HUB_DLQ, HUB_DLQ_PAYLOADS])
    raw = adt("NORM1") + b"X" * (PAYLOAD_LIMIT_BYTES + 10)
    src = SourceCoordinates(topic=settings.topic("ehr.hl7v2"), partition=2, offset=41)
    async with DurableProducer(settings) as producer:
        dl_id = await dead_letter(
            producer, settings, stage="normalize",
            error=MappingError(ErrorCode.BAD_FIELD, "PV1-44 is not a timestamp.",
                               position="PV1-44"),
            original=raw, transport="kafka", listener=None, content_type=None,
            header=read_header(raw), source=src)
    recs = await read_topic(settings, HUB_DLQ.name, timeout=10, min_records=1)
    record = DeadLetter.model_validate_json(recs[0].value or b"")
    assert record.id == dl_id and record.source == src and record.stage == "normalize"
    assert record.message_id == "NORM1" and record.sending_facility == "GENHOSP"
    assert record.position == "PV1-44" and record.hl7_error_code == "102"
    assert record.original_size == len(raw)
    assert not record.payload_stored and record.payload_truncated_to == PAYLOAD_LIMIT_BYTES
    payloads = await read_topic(settings, HUB_DLQ_PAYLOADS.name, timeout=10, min_records=1)
    assert payloads[0].value == raw[:PAYLOAD_LIMIT_BYTES]


@pytest.mark.kafka
async def test_ingest_service_start_serve_stop(kafka_settings: Callable[..., Settings]) -> None:
    settings = kafka_settings(mllp_port=0, http_port=0)
    service = IngestService(settings)
    await service.start()
    try:
        client = await RawClient.connect(service.mllp_port)
        assert msa(await client.send(adt("SVC1"))) == ("AA", "SVC1")
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{service.http_port}/health/live"
        ) as r:
            assert r.status == 200
        await client.close()
    finally:
        await service.stop()
    # Restarted service: the ACK store is reloaded, the duplicate is answered from it.
    service = IngestService(settings)
    await service.start()
    try:
        assert len(service.ack_store) >= 1
        client = await RawClient.connect(service.mllp_port)
        assert msa(await client.send(adt("SVC1"))) == ("AA", "SVC1")
        assert service.ingestor.stats["duplicate"] == 1
        await client.close()
    finally:
        await service.stop()
    raw = await read_topic(settings, "ehr.hl7v2", timeout=10, min_records=1)
    assert len(raw) == 1
