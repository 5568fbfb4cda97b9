"""The normalize step: one raw record (bytes + headers) -> canonical events or an error.

Pure apart from calling the mappers: no faust, no Kafka. The agent in
:mod:`streams.app` wraps it with dedup, output and dead-lettering.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from mappers.fhir import map_fhir
from mappers.hl7v2 import map_hl7v2, read_header
from schemas.canonical import CanonicalEvent, derive_id
from schemas.errors import ErrorCode, MappingError
from schemas.records import HEADER_DEDUP_KEY, HEADER_DEFAULT_TZ, HEADER_RECEIVED_AT


@dataclass(frozen=True)
class RawRecord:
    format: str
    """``hl7v2`` or ``fhir`` (from the topic it was read from)."""
    value: bytes
    headers: dict[str, bytes]


def received_at(record: RawRecord, fallback: datetime) -> datetime:
    raw = record.headers.get(HEADER_RECEIVED_AT)
    if raw:
        try:
            parsed = datetime.fromisoformat(raw.decode())
            if parsed.tzinfo is not None:
                return parsed
        except (UnicodeDecodeError, ValueError):
            pass
    return fallback.astimezone(UTC)


def dedup_key(record: RawRecord) -> str:
    """Sending facility + control id for HL7 (as ingest computed it), else a content id.

    Producers that write to the raw topics directly (not through our ingest) get the
    same key computed here, so the rule is one: facility + MSH-10.
    """
    given = record.headers.get(HEADER_DEDUP_KEY)
    if given:
        return given.decode("utf-8", "replace")
    if record.format == "hl7v2":
        try:
            header = read_header(record.value)
            if header.control_id:
                return f"hl7v2|{header.sending_facility or ''}|{header.control_id}"
        except MappingError:
            pass
    return f"{record.format}|" + derive_id(record.format, record.value.hex())


def normalize(record: RawRecord, *, now: datetime, default_tz: str,
              feed_timezones: dict[str, str]) -> list[CanonicalEvent]:
    """Map one raw record to canonical events; raises only :class:`MappingError`."""
    at = received_at(record, now)
    tz_header = record.headers.get(HEADER_DEFAULT_TZ)
    tz = tz_header.decode() if tz_header else default_tz
    if record.format == "hl7v2":
        if not tz_header and feed_timezones:
            with contextlib.suppress(MappingError):
                tz = feed_timezones.get(read_header(record.value).sending_facility or "", tz)
        return map_hl7v2(record.value, received_at=at, default_tz=tz)
    if record.format == "fhir":
        return map_fhir(record.value, received_at=at, default_tz=tz)
    raise MappingError(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, "record format is not hl7v2 or fhir")
