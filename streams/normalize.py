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


HEADER_REPLAY_OF = "hub-replay-of"
"""Set by ``hub dlq replay`` on a re-published raw record: the dead letter's id."""


def message_dedup_key(fmt: str, facility: str | None, message_id: str) -> str:
    """The one dedup rule, shared by ingest (which sets it as a header) and normalize
    (which computes it for records a third party produced without one): format,
    sending facility (MSH-4 / the FHIR source's facility) and message id (MSH-10 /
    the FHIR message or bundle id, else the first event's id)."""
    return f"{fmt}|{facility or ''}|{message_id}"


def dedup_key(record: RawRecord) -> str | None:
    """The record's dedup key, or None when only its mapped events can tell (FHIR
    written without ingest's header: see :func:`events_dedup_key`).

    Producers that write to the raw topics directly (not through our ingest) get the
    same key as ingest would have set (:func:`message_dedup_key`), so a message sent
    both ways is one message.
    """
    given = record.headers.get(HEADER_DEDUP_KEY)
    if given:
        return given.decode("utf-8", "replace")
    if record.format == "hl7v2":
        try:
            header = read_header(record.value)
            if header.control_id:
                return message_dedup_key("hl7v2", header.sending_facility, header.control_id)
        except MappingError:
            pass
    elif record.format == "fhir":
        return None
    return f"{record.format}|" + derive_id(record.format, record.value.hex())


def events_dedup_key(fmt: str, events: list[CanonicalEvent]) -> str | None:
    """Ingest's rule applied to mapped events (facility + message id, else event id)."""
    if not events:
        return None
    first = events[0]
    return message_dedup_key(fmt, first.source.facility,
                             first.source.message_id or first.event_id)


def replay_key(record: RawRecord) -> str | None:
    """``replay|<dead letter id>`` for a record ``hub dlq replay`` sent, else None."""
    given = record.headers.get(HEADER_REPLAY_OF)
    return f"replay|{given.decode('utf-8', 'replace')}" if given else None


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
