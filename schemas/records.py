"""Records the hub writes besides canonical events: dead letters and raw-topic headers."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.canonical import derive_id
from schemas.errors import MappingError

Stage = Literal["ingest", "normalize", "replay", "episodes", "caseloads", "deliveries",
                "referrals"]


class SourceCoordinates(BaseModel):
    """Where a failed record was read from (absent for failures at ingest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """One record on ``hub.dlq``: coordinates and codes only, never PHI.

    The original bytes live on ``hub.dlq-payloads`` under the same key (``id``); that
    topic is the restricted one (tighter ACLs, it holds PHI), so ops can browse the dead
    letters themselves freely.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    stage: Stage
    error_code: str
    hl7_error_code: str | None = None
    detail: str
    position: str | None = None
    source: SourceCoordinates | None = None
    transport: str | None = None
    """mllp, http, kafka or file."""
    listener: str | None = None
    content_type: str | None = None
    sending_facility: str | None = None
    message_id: str | None = None
    """HL7 MSH-10 or FHIR id when readable (control ids are not PHI)."""
    received_at: datetime
    dead_lettered_at: datetime
    original_size: int
    payload_stored: bool = True
    """False when the payload was too large to keep whole (``payload_truncated_to`` bytes kept)."""
    payload_truncated_to: int | None = None
    attempts: int = Field(default=1)


# Kafka header names on the raw topics (ehr.hl7v2, ehr.fhir). Values are UTF-8 strings.
HEADER_RECEIVED_AT = "hub-received-at"
HEADER_TRANSPORT = "hub-transport"
HEADER_LISTENER = "hub-listener"
HEADER_CONTENT_TYPE = "hub-content-type"
HEADER_DEFAULT_TZ = "hub-default-tz"
HEADER_DEDUP_KEY = "hub-dedup-key"


PAYLOAD_LIMIT_BYTES = 900 * 1024
"""Largest payload kept whole: under Kafka's 1 MiB default ``max.message.bytes`` with
room for key and headers, so the DLQ works on any broker without tuning. Longer
originals (e.g. a 20 MB MLLP frame) are truncated and the record says so."""


def dead_letter_id(*, stage: str, transport: str | None, facility: str | None,
                   message_id: str | None, original: bytes,
                   source: SourceCoordinates | None = None) -> str:
    """Deterministic: the same bad input resent gives the same id (downstream dedup)."""
    digest = hashlib.sha256(original).hexdigest()
    coords = f"{source.topic}/{source.partition}/{source.offset}" if source else None
    return derive_id("dead-letter", stage, transport, facility, message_id, digest, coords)


def build_dead_letter(*, stage: Stage, error: MappingError, original: bytes,
                      received_at: datetime, now: datetime, transport: str | None,
                      listener: str | None = None, content_type: str | None = None,
                      source: SourceCoordinates | None = None, facility: str | None = None,
                      message_id: str | None = None, original_size: int | None = None,
                      hl7: bool = True) -> tuple[DeadLetter, bytes]:
    """The PHI-free record and the payload to keep (truncated past the limit).

    ``original`` may already be only the head of a longer input (a frame cut off by the
    MLLP decoder): then pass the full length as ``original_size``.
    """
    size = max(original_size or 0, len(original))
    kept = original[:PAYLOAD_LIMIT_BYTES]
    whole = len(kept) == size
    dl_id = dead_letter_id(stage=stage, transport=transport, facility=facility,
                           message_id=message_id, original=original, source=source)
    record = DeadLetter(
        id=dl_id, stage=stage, error_code=error.code.value,
        hl7_error_code=error.hl7_code if hl7 else None, detail=error.detail,
        position=error.position, source=source, transport=transport, listener=listener,
        content_type=content_type, sending_facility=facility, message_id=message_id,
        received_at=received_at, dead_lettered_at=now, original_size=size,
        payload_stored=whole, payload_truncated_to=None if whole else len(kept),
    )
    return record, kept
