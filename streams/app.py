"""The faust app: raw topics -> normalize agent -> ``care.events`` (+ dead letters).

Agent and table names are state identities (consumer group offsets and changelog topics
are named after them): renaming one is a migration, not a refactor.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import structlog
from faust.types import EventT

from schemas import topics as catalogue
from schemas.canonical import dump_event, patient_ref
from schemas.errors import ErrorCode, MappingError
from schemas.records import SourceCoordinates, Stage, build_dead_letter
from streams.config import StreamsConfig
from streams.normalize import (
    RawRecord,
    dedup_key,
    events_dedup_key,
    normalize,
    received_at,
    replay_key,
)
from streams.raw import raw_table

log = structlog.stdlib.get_logger("streams.normalize")

NORMALIZE_AGENT = "normalize"
DEDUP_TABLE = "normalize-dedup"


class NormalizeCounters:
    """In-process figures for the demo summary and (later) metrics."""

    def __init__(self) -> None:
        self.mapped = 0
        self.events = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.care: Any = None
        """The care stages' figures (streams.care_agents.CareFigures) when they run."""
        self.deliveries: Any = None
        """The webhook delivery figures (streams.delivery_agents.DeliveryFigures)."""
        self.referrals: Any = None
        """The referral figures (streams.referral_agents.ReferralFigures): ``figures()``
        has ``referrals`` = {status: count}."""


def _raw_topics(app: faust.App, cfg: StreamsConfig) -> Any:
    # One faust Topic over both raw topics: the agent learns the format from the
    # record's topic name. Same partition count on both (co-partitioned with the table).
    return app.topic(
        cfg.topic(catalogue.EHR_HL7V2.name),
        cfg.topic(catalogue.EHR_FHIR.name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=cfg.partitions or catalogue.EHR_HL7V2.partitions,
        internal=False,
    )


def _parse_seen(value: bytes | None) -> tuple[float, str | None]:
    if not value:
        return 0.0, None
    at, _, coords = value.decode().partition(" ")
    return float(at), coords


def create_app(cfg: StreamsConfig) -> tuple[faust.App, NormalizeCounters]:
    """Build the faust app for ``cfg``; no global app, so tests can build several."""
    app = faust.App(
        cfg.app_id,
        broker=[f"kafka://{b}" for b in cfg.bootstrap.split(",")],
        store=cfg.store,
        datadir=str(cfg.state_dir),
        topic_replication_factor=cfg.replication_factor,
        topic_partitions=cfg.partitions or catalogue.EHR_HL7V2.partitions,
        producer_acks=-1,
        # Batch outputs for a few ms: one produce request per event caps a worker far
        # below what the mappers can do (measured in bench/bench_normalize.py).
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        processing_guarantee="at_least_once",
        web_enabled=cfg.web_enabled,
        web_port=cfg.web_port,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=cfg.consumer_instance_id,
        table_cleanup_interval=60.0,
        broker_session_timeout=cfg.session_timeout_s,
        broker_rebalance_timeout=cfg.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
        autodiscover=False,
        **cfg.broker_kwargs,  # type: ignore[arg-type]
    )
    counters = NormalizeCounters()
    raw_topics = _raw_topics(app, cfg)
    formats = {
        cfg.topic(catalogue.EHR_HL7V2.name): "hl7v2",
        cfg.topic(catalogue.EHR_FHIR.name): "fhir",
    }
    events_name = cfg.topic(catalogue.CARE_EVENTS.name)
    dlq_topic = app.topic(
        cfg.topic(catalogue.HUB_DLQ.name), key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", internal=False,
    )
    payload_topic = app.topic(
        cfg.topic(catalogue.HUB_DLQ_PAYLOADS.name), key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", internal=False,
    )
    # dedup key -> b"<first-seen epoch seconds> <topic:partition:offset>". Keeping the
    # coordinates of the first sighting tells a redelivery of that same record (after a
    # crash before commit: must be processed again, its outputs have the same ids) from
    # a sender's resend of the message (a duplicate: dropped).
    # Raw bytes both ways: JSON codecs on this per-event write were measurable.
    dedup = raw_table(app, DEDUP_TABLE,
                      partitions=cfg.partitions or catalogue.EHR_HL7V2.partitions)

    async def dead_letter(event: EventT, record: RawRecord, error: MappingError,
                          stage: Stage = "normalize") -> None:
        msg = event.message
        now = datetime.now(UTC)
        letter, payload = build_dead_letter(
            stage=stage, error=error, original=record.value,
            received_at=received_at(record, now), now=now, transport="kafka",
            content_type=record.format, hl7=record.format == "hl7v2",
            source=SourceCoordinates(topic=msg.topic, partition=msg.partition, offset=msg.offset),
        )
        dl_id = letter.id
        # Payload first, and delivered, before the record that points at it (dead
        # letters are rare, so waiting for this one delivery costs nothing).
        delivered = await payload_topic.send(key=dl_id.encode(), value=payload)
        await delivered
        await dlq_topic.send(key=dl_id.encode(),
                             value=letter.model_dump_json(exclude_none=True).encode())
        counters.dead_letters += 1
        log.warning(
            "record_dead_lettered", stage=stage, topic=msg.topic,
            partition=msg.partition, offset=msg.offset, error_code=error.code.value,
            dead_letter_id=dl_id,
        )

    def _duplicate(keys: list[bytes], msg: Any) -> bool:
        """Seen at other coordinates (a resend, or a replay already done): drop it.
        The same coordinates are a redelivery after a crash: process it again."""
        coords = f"{msg.topic}:{msg.partition}:{msg.offset}"
        for key in keys:
            seen_at, seen_coords = _parse_seen(dedup.get(key))
            if seen_coords is None or seen_coords == coords:
                continue
            if key.startswith(b"replay|") or time.time() - seen_at < cfg.dedup_window_s:
                counters.duplicates += 1
                log.info("duplicate_dropped", topic=msg.topic, partition=msg.partition,
                         offset=msg.offset, dedup=key.split(b"|", 1)[0].decode())
                return True
        return False

    async def process(event: EventT) -> None:
        msg = event.message
        headers = {k: v for k, v in (event.headers or {}).items() if isinstance(v, bytes)}
        record = RawRecord(format=formats.get(msg.topic, "hl7v2"), value=event.value,
                           headers=headers)
        now = datetime.now(UTC)
        coords = f"{msg.topic}:{msg.partition}:{msg.offset}"
        # Two keys may drop a record: the message's (format + facility + message id,
        # within the window: a sender's resend) and, for a ``hub dlq replay``, the
        # dead letter's (no window: one dead letter yields its events once, however
        # often it is replayed). Neither exists for a message never normalized, so
        # the first replay of a dead letter always goes through.
        message_key = dedup_key(record)
        keys = [k.encode() for k in (message_key, replay_key(record)) if k]
        if _duplicate(keys, msg):
            return
        try:
            mapped = normalize(record, now=now, default_tz=cfg.default_timezone,
                               feed_timezones=cfg.feed_timezones)
        except MappingError as exc:
            await dead_letter(event, record, exc)
            return
        if message_key is None:
            # FHIR produced without ingest's header: only its events name the message.
            late = events_dedup_key(record.format, mapped)
            if late is not None:
                if _duplicate([late.encode()], msg):
                    return
                keys.append(late.encode())
        for ev in mapped:
            # The producer directly, not Topic.send: faust's FutureMessage bookkeeping
            # per output cost more CPU than the mapping (bench/bench_normalize.py).
            # Still at-least-once: faust flushes this producer before every commit.
            await app.producer.send(
                events_name, ev.patient.key.encode(), orjson.dumps(dump_event(ev)), None, None,
                [("hub-event-id", ev.event_id.encode()), ("hub-source", coords.encode())],
            )
            log.debug("event_published", event_id=ev.event_id, kind=ev.kind.value,
                     trigger=ev.trigger, patient_ref=patient_ref(ev.patient.key),
                     topic=msg.topic, partition=msg.partition, offset=msg.offset)
        # Mark as seen only after the outputs were handed to the producer; faust
        # flushes the producer before committing the offset, so a crash in between
        # replays this record and the same coordinates let it through again.
        seen = f"{time.time():.3f} {coords}".encode()
        for key in keys:
            dedup[key] = seen
        counters.mapped += 1
        counters.events += len(mapped)

    @app.agent(raw_topics, name=NORMALIZE_AGENT)
    async def normalize_agent(stream: Any) -> None:
        async for event in stream.events():
            # faust acks an event whose agent raised and never processes it again, so
            # nothing may escape: an unexpected failure becomes a dead letter too.
            try:
                await process(event)
            except Exception as exc:
                log.error("normalize_failed", exc_type=type(exc).__name__,
                          topic=event.message.topic, partition=event.message.partition,
                          offset=event.message.offset)
                try:
                    record = RawRecord(format=formats.get(event.message.topic, "hl7v2"),
                                       value=event.value or b"", headers={})
                    await dead_letter(event, record, MappingError(
                        ErrorCode.INTERNAL_ERROR,
                        f"unexpected {type(exc).__name__} in normalize"))
                except Exception as exc2:
                    log.error("dead_letter_failed", exc_type=type(exc2).__name__,
                              topic=event.message.topic, partition=event.message.partition,
                              offset=event.message.offset)

    async def stage_dead_letter(event: EventT, stage: str, error: MappingError) -> None:
        # For the stages after normalize: the record's topic names its format
        # (care.events, care.task-updates, referrals.deliveries, ...).
        record = RawRecord(format=event.message.topic, value=event.value or b"", headers={})
        await dead_letter(event, record, error, stage)  # type: ignore[arg-type]

    if cfg.care:
        from streams.care_agents import add_care_agents

        counters.care = add_care_agents(app, cfg, stage_dead_letter)
        from streams.referral_agents import add_referral_agents

        counters.referrals = add_referral_agents(app, cfg, stage_dead_letter)
    if cfg.webhook_sender is not None:
        from streams.delivery_agents import add_delivery_agents

        counters.deliveries = add_delivery_agents(app, cfg, stage_dead_letter)
    return app, counters
