"""Dead letters: a PHI-free record on ``hub.dlq`` plus the original bytes on
``hub.dlq-payloads``, both keyed by the same deterministic id.

Shared by ingest (bad frames and messages) and streams (normalize-stage failures, which
pass ``source`` coordinates), so it knows nothing about MLLP or HTTP beyond the strings
it is given.

Ordering: the payload is written first, then the record. A record therefore never
points at a payload that is not there; a crash between the two leaves an orphan payload
(harmless, same id on retry). Both writes are acks=all and bounded by
``settings.ack_timeout_s``; a failure raises :class:`hub.kafka.DurableWriteError` so the
caller answers "not accepted" (AR/CE/503) and the sender retries: nothing the hub has
acknowledged, even as an error, is ever lost.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Protocol

from hub.settings import Settings
from schemas.canonical import derive_id
from schemas.errors import MappingError
from schemas.records import (
    HEADER_CONTENT_TYPE,
    HEADER_LISTENER,
    HEADER_RECEIVED_AT,
    HEADER_TRANSPORT,
    DeadLetter,
    SourceCoordinates,
    Stage,
)
from schemas.topics import HUB_DLQ, HUB_DLQ_PAYLOADS

PAYLOAD_LIMIT_BYTES = 900 * 1024
"""Largest payload kept whole: under Kafka's 1 MiB default ``max.message.bytes`` with
room for key and headers, so the DLQ works on any broker without tuning. Longer
originals (e.g. a 20 MB MLLP frame) are truncated and the record says so."""


class Sender(Protocol):
    """What a dead letter needs from ``hub.kafka.DurableProducer``."""

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = ...,
        timeout: float,
    ) -> tuple[int, int]: ...


class HeaderLike(Protocol):
    @property
    def sending_facility(self) -> str | None: ...
    @property
    def control_id(self) -> str | None: ...


def dead_letter_id(
    *,
    stage: str,
    transport: str | None,
    facility: str | None,
    message_id: str | None,
    original: bytes,
    source: SourceCoordinates | None = None,
) -> str:
    """Deterministic: the same bad input resent gives the same id (downstream dedup)."""
    digest = hashlib.sha256(original).hexdigest()
    coords = f"{source.topic}/{source.partition}/{source.offset}" if source else None
    return derive_id("dead-letter", stage, transport, facility, message_id, digest, coords)


async def dead_letter(
    producer: Sender,
    settings: Settings,
    *,
    stage: Stage,
    error: MappingError,
    original: bytes,
    transport: str | None,
    listener: str | None,
    content_type: str | None,
    header: HeaderLike | None = None,
    source: SourceCoordinates | None = None,
    received_at: datetime | None = None,
    original_size: int | None = None,
    message_id: str | None = None,
    facility: str | None = None,
    now: datetime | None = None,
) -> str:
    """Write one dead letter; return its id. Raises ``DurableWriteError`` on failure.

    ``original`` may already be only the head of a longer input (a frame cut off by the
    MLLP decoder): then pass the full length as ``original_size``.
    """
    now = now or datetime.now(UTC)
    received_at = received_at or now
    if header is not None:
        facility = facility or header.sending_facility
        message_id = message_id or header.control_id
    size = max(original_size or 0, len(original))
    kept = original[:PAYLOAD_LIMIT_BYTES]
    whole = len(kept) == size
    dl_id = dead_letter_id(
        stage=stage,
        transport=transport,
        facility=facility,
        message_id=message_id,
        original=original,
        source=source,
    )
    record = DeadLetter(
        id=dl_id,
        stage=stage,
        error_code=error.code.value,
        hl7_error_code=error.hl7_code,
        detail=error.detail,
        position=error.position,
        source=source,
        transport=transport,
        listener=listener,
        content_type=content_type,
        sending_facility=facility,
        message_id=message_id,
        received_at=received_at,
        dead_lettered_at=now,
        original_size=size,
        payload_stored=whole,
        payload_truncated_to=None if whole else len(kept),
    )
    key = dl_id.encode()
    headers: list[tuple[str, bytes]] = [(HEADER_RECEIVED_AT, received_at.isoformat().encode())]
    if transport:
        headers.append((HEADER_TRANSPORT, transport.encode()))
    if listener:
        headers.append((HEADER_LISTENER, listener.encode()))
    if content_type:
        headers.append((HEADER_CONTENT_TYPE, content_type.encode()))
    # 1. payload (PHI, restricted topic), 2. the PHI-free record pointing at it.
    await producer.send(
        settings.topic(HUB_DLQ_PAYLOADS.name),
        kept,
        key=key,
        headers=headers,
        timeout=settings.ack_timeout_s,
    )
    await producer.send(
        settings.topic(HUB_DLQ.name),
        record.model_dump_json(exclude_none=True).encode(),
        key=key,
        headers=[(HEADER_CONTENT_TYPE, b"application/json")],
        timeout=settings.ack_timeout_s,
    )
    return dl_id
