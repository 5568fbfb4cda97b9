"""Records the hub writes besides canonical events: dead letters and raw-topic headers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["ingest", "normalize", "replay"]


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
