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

from datetime import UTC, datetime
from typing import Protocol

from hub.settings import Settings
from schemas.errors import MappingError
from schemas.records import (
    HEADER_CONTENT_TYPE,
    HEADER_LISTENER,
    HEADER_RECEIVED_AT,
    HEADER_TRANSPORT,
    PAYLOAD_LIMIT_BYTES,
    SourceCoordinates,
    Stage,
    build_dead_letter,
    dead_letter_id,
)
from schemas.topics import HUB_DLQ, HUB_DLQ_PAYLOADS

__all__ = ["PAYLOAD_LIMIT_BYTES", "Sender", "dead_letter", "dead_letter_id"]

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
    record, kept = build_dead_letter(
        stage=stage, error=error, original=original, received_at=received_at, now=now,
        transport=transport, listener=listener, content_type=content_type, source=source,
        facility=facility, message_id=message_id, original_size=original_size,
    )
    dl_id = record.id
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
