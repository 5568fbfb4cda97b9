"""Transport-neutral ingest: one message in, one answer out (MLLP and HTTP share it).

The ACK policy is REFERENCE.md section 2, applied as numbered steps for HL7 v2
(:meth:`Ingestor.handle_hl7`):

1. Read MSH (``read_header``). Unreadable (empty, no MSH, bad encoding characters):
   dead-letter the bytes, answer a minimal ``AR`` with ERR and an empty MSA-2 (the
   issue asks for a clear error; there is no control id to echo). Original-mode codes,
   since without MSH-15/16 the mode is unknown.
2. Duplicate (sending facility + MSH-10 within ``dedup_window_s``): replay the stored
   ACK byte for byte and write nothing. A copy arriving while the first is still in
   flight waits for the first's answer instead of racing it onto the topic.
3. Map (``map_hl7v2``) to validate and to find the patient key. A ``MappingError`` is
   dead-lettered first; only once that write is durable do we answer:
   original mode ``AR`` (unsupported type/trigger/version/processing id) or ``AE``
   (unusable content), with ERR; enhanced mode ``CR`` (unsupported) or ``CA`` (the
   message *is* durably committed, to the DLQ; the ERR segment says why it will not
   be processed; the application-level AE that MSH-16 may ask for would need a return
   channel to the sender, which the hub does not have).
4. Write the raw bytes to ``ehr.hl7v2`` keyed by the patient key, acks=all, bounded by
   ``settings.ack_timeout_s``. Only after the broker confirmed do we answer ``AA``/``CA``
   (durable write before ACK: an ACK is a promise the sender may delete its copy).
   Timeout or failure: ``AR`` (original) / ``CE`` (enhanced) so the sender retries.
   The write may still land after we gave up (at-least-once); the retry then produces
   a duplicate that normalize's dedup on facility + control id absorbs, which is why
   a timeout here is safe while an early AA would not be.
5. Remember the ACK (success and content errors; never a "retry later" answer, which
   must not be replayed to the retry) in the ACK store.

A dead-letter write that fails turns any answer into AR/CE: the hub never acknowledges
what it has not kept. No exception escapes: anything unexpected is dead-lettered as
INTERNAL_ERROR and answered AR (HL7) or 500 (FHIR).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from hub.kafka import HubKafkaError
from hub.logging import get_logger
from hub.settings import Settings
from mappers.fhir import map_fhir
from mappers.hl7v2 import MessageHeader, map_hl7v2, read_header
from mappers.hl7v2.ack import ack_mode, build_ack
from schemas.canonical import patient_ref
from schemas.errors import AckCode, ErrorCode, MappingError
from schemas.fhir import operation_outcome
from schemas.records import (
    HEADER_CONTENT_TYPE,
    HEADER_DEDUP_KEY,
    HEADER_DEFAULT_TZ,
    HEADER_LISTENER,
    HEADER_RECEIVED_AT,
    HEADER_TRANSPORT,
)
from schemas.topics import EHR_FHIR, EHR_HL7V2
from streams.normalize import events_dedup_key, message_dedup_key

from .ackstore import AckStore, ack_key
from .deadletter import Sender, dead_letter

log = get_logger("hub.ingest")

HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
FHIR_CONTENT_TYPE = "application/fhir+json"

# FHIR error code -> HTTP status: bad JSON is a malformed request (400); JSON we can
# read but not use is an unprocessable entity (422).
_FHIR_STATUS: dict[ErrorCode, int] = {ErrorCode.INVALID_JSON: 400}


@dataclass(frozen=True)
class Hl7Outcome:
    """What happened to one HL7 v2 message (for HTTP status, metrics and tests)."""

    ack: bytes
    code: AckCode
    error_code: str | None = None
    duplicate: bool = False
    retryable: bool = False
    """True when the answer means "not kept, send again" (durable write failed)."""
    dead_letter_id: str | None = None
    facility: str | None = None
    control_id: str | None = None
    trigger: str | None = None
    """MSH-9.2 when readable (metrics count messages per feed and trigger)."""


@dataclass(frozen=True)
class FhirOutcome:
    status: int
    body: dict[str, Any]
    error_code: str | None = None
    dead_letter_id: str | None = None
    facility: str | None = None
    trigger: str | None = None


class IngestMetrics(Protocol):
    """Optional hooks (``hub.metrics.HubMetrics`` plugs Prometheus in here).

    ``feed`` is the sending facility, ``trigger`` MSH-9.2 (or the FHIR event), both
    None when unreadable; ``protocol`` is ``hl7v2`` (``ack_code`` = MSA-1) or ``fhir``
    (``ack_code`` = the HTTP status); ``dead_lettered`` says a dead letter was written.
    """

    def message_handled(self, *, transport: str, listener: str, ack_code: str,
                        error_code: str | None, duplicate: bool, latency_s: float,
                        feed: str | None = None, trigger: str | None = None,
                        protocol: str = "hl7v2", dead_lettered: bool = False) -> None: ...

    def frame_rejected(self, *, transport: str, listener: str, error_code: str,
                       size: int, dead_lettered: bool = True) -> None: ...


def _present(**fields: Any) -> dict[str, Any]:
    """Log fields without the empty ones (a None says nothing and costs a column)."""
    return {k: v for k, v in fields.items() if v is not None}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ack_control_id() -> str:
    # 20 characters: MSH-10 is ST(20) in v2.3/2.4.
    return uuid.uuid4().hex[:20].upper()


def _enhanced(header: MessageHeader | None) -> bool:
    return ack_mode(header) == "enhanced"


def _operation_outcome(code: str, detail: str, *, issue_type: str = "invalid",
                       severity: str = "error") -> dict[str, Any]:
    return operation_outcome(code, detail, severity=severity, issue_type=issue_type)


class Ingestor:
    """Shared by :class:`~hub.ingest.mllp.MllpServer` and the HTTP app."""

    def __init__(
        self,
        settings: Settings,
        producer: Sender,
        *,
        ack_store: AckStore | None = None,
        clock: Callable[[], datetime] = _utcnow,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.ack_store = ack_store if ack_store is not None else AckStore(settings, producer)
        self.clock = clock
        self.metrics = metrics
        self.stats: Counter[str] = Counter()
        """Counts by outcome (``ack.AA``, ``error.missing_msh``, ``duplicate``...)."""
        self._inflight: dict[str, asyncio.Future[Hl7Outcome]] = {}

    # ------------------------------------------------------------------ HL7 v2
    async def handle_hl7(self, raw: bytes, *, transport: str, listener: str,
                         peer: str | None) -> bytes:
        """The ACK for one HL7 v2 message (unframed, CR-separated)."""
        outcome = await self.handle_hl7_outcome(raw, transport=transport, listener=listener,
                                                peer=peer)
        return outcome.ack

    async def handle_hl7_outcome(self, raw: bytes, *, transport: str, listener: str,
                                 peer: str | None,
                                 content_type: str = HL7_CONTENT_TYPE) -> Hl7Outcome:
        started = time.perf_counter()
        received_at = self.clock()
        try:
            outcome = await self._hl7(raw, transport, listener, content_type, received_at)
        except Exception as exc:  # the one place nothing may escape
            outcome = await self._internal_error_hl7(raw, exc, transport, listener,
                                                     content_type, received_at)
        latency = time.perf_counter() - started
        self.stats[f"ack.{outcome.code.value}"] += 1
        if outcome.error_code:
            self.stats[f"error.{outcome.error_code}"] += 1
        if outcome.duplicate:
            self.stats["duplicate"] += 1
        log.info("ack_sent", **_present(
            transport=transport, listener=listener, peer=peer, facility=outcome.facility,
            control_id=outcome.control_id, ack_code=outcome.code.value,
            error_code=outcome.error_code, dead_letter_id=outcome.dead_letter_id,
            reason="duplicate" if outcome.duplicate else None,
            latency_ms=round(latency * 1000, 2)))
        if self.metrics is not None:
            self.metrics.message_handled(
                transport=transport, listener=listener, ack_code=outcome.code.value,
                error_code=outcome.error_code, duplicate=outcome.duplicate, latency_s=latency,
                feed=outcome.facility, trigger=outcome.trigger,
                dead_lettered=outcome.dead_letter_id is not None)
        return outcome

    async def _hl7(self, raw: bytes, transport: str, listener: str, content_type: str,
                   received_at: datetime) -> Hl7Outcome:
        # 1. header
        try:
            header = read_header(raw)
        except MappingError as err:
            return await self._reject_unreadable(raw, err, transport, listener, content_type,
                                                 received_at)
        facility, control_id = header.sending_facility, header.control_id
        if not control_id:
            missing = MappingError(ErrorCode.MISSING_CONTROL_ID,
                                   "MSH-10 (message control id) is empty.", position="MSH-10")
            return await self._content_error(raw, header, missing, transport, listener,
                                             content_type, received_at)

        # 2. duplicate: answer with the stored ACK, or wait for the copy in flight.
        key = ack_key(facility, control_id)
        while True:
            stored = self.ack_store.get(facility, control_id)
            if stored is not None:
                return Hl7Outcome(ack=stored, code=_code_of(stored), duplicate=True,
                                  facility=facility, control_id=control_id,
                                  trigger=header.trigger)
            pending = self._inflight.get(key)
            if pending is None:
                break
            # asyncio.wait, not await/shield: the first copy being cancelled must not
            # cancel this one.
            await asyncio.wait({pending})
            first = (pending.result()
                     if not pending.cancelled() and pending.exception() is None else None)
            if first is not None and first.retryable:
                # The first copy was not kept; process this one ourselves.
                break
        fut: asyncio.Future[Hl7Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            outcome = await self._map_and_write(raw, header, transport, listener, content_type,
                                                received_at)
            fut.set_result(outcome)
            return outcome
        except BaseException:
            fut.cancel()  # waiters re-check the store, then process their copy
            raise
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    async def _map_and_write(self, raw: bytes, header: MessageHeader, transport: str,
                             listener: str, content_type: str,
                             received_at: datetime) -> Hl7Outcome:
        facility, control_id = header.sending_facility, header.control_id
        assert control_id
        tz = self.settings.timezone_for(facility)
        # 3. validate and find the patient key
        try:
            events = map_hl7v2(raw, received_at=received_at, default_tz=tz)
            if not events:
                raise MappingError(ErrorCode.UNSUPPORTED_TRIGGER,
                                   "The message yields no care event.", position="MSH-9")
        except MappingError as err:
            return await self._content_error(raw, header, err, transport, listener,
                                             content_type, received_at)

        # 4. durable write, then (only then) the positive ACK
        enhanced = _enhanced(header)
        patient_key = events[0].patient.key  # an A40's patient is the surviving one
        headers = [
            (HEADER_RECEIVED_AT, received_at.isoformat().encode()),
            (HEADER_TRANSPORT, transport.encode()),
            (HEADER_LISTENER, listener.encode()),
            (HEADER_CONTENT_TYPE, content_type.encode()),
            (HEADER_DEFAULT_TZ, tz.encode()),
            (HEADER_DEDUP_KEY, message_dedup_key("hl7v2", facility, control_id).encode()),
        ]
        try:
            await self._bounded_send(self.settings.topic(EHR_HL7V2.name), raw,
                                     key=patient_key.encode(), headers=headers)
        except HubKafkaError:
            return self._retry_later(header, enhanced)
        code = AckCode.CA if enhanced else AckCode.AA
        ack = build_ack(header, code, now=self.clock(), ack_control_id=_ack_control_id())
        # 5. remember for duplicates
        self.ack_store.put(facility, control_id, ack)
        log.debug("message_written", facility=facility, control_id=control_id,
                  patient_ref=patient_ref(patient_key), events=len(events))
        return Hl7Outcome(ack=ack, code=code, facility=facility, control_id=control_id,
                          trigger=header.trigger)

    async def _bounded_send(self, topic: str, value: bytes, *, key: bytes | None,
                            headers: list[tuple[str, bytes]]) -> None:
        # DurableProducer.send already applies the timeout; the outer bound is a belt
        # for any Sender that does not (an idempotent aiokafka producer never gives up).
        timeout = self.settings.ack_timeout_s
        try:
            await asyncio.wait_for(
                self.producer.send(topic, value, key=key, headers=headers, timeout=timeout),
                timeout + 1.0,
            )
        except TimeoutError as exc:
            from hub.kafka import DurableWriteError

            raise DurableWriteError(f"write to {topic} not acknowledged in time") from exc

    def _retry_later(self, header: MessageHeader | None, enhanced: bool) -> Hl7Outcome:
        err = MappingError(ErrorCode.DURABLE_WRITE_FAILED,
                           "The message could not be stored; send it again.")
        code = AckCode.CE if enhanced else AckCode.AR
        ack = build_ack(header, code, now=self.clock(), ack_control_id=_ack_control_id(),
                        error=err)
        return Hl7Outcome(ack=ack, code=code, error_code=err.code.value, retryable=True,
                          facility=header.sending_facility if header else None,
                          control_id=header.control_id if header else None,
                          trigger=header.trigger if header else None)

    async def _content_error(self, raw: bytes, header: MessageHeader, err: MappingError,
                             transport: str, listener: str, content_type: str,
                             received_at: datetime) -> Hl7Outcome:
        enhanced = _enhanced(header)
        try:
            dl_id = await dead_letter(
                self.producer, self.settings, stage="ingest", error=err, original=raw,
                transport=transport, listener=listener, content_type=content_type,
                header=header, received_at=received_at, now=self.clock())
        except HubKafkaError:
            return self._retry_later(header, enhanced)
        if enhanced:
            code = AckCode.CR if err.is_reject else AckCode.CA
        else:
            code = AckCode.AR if err.is_reject else AckCode.AE
        ack = build_ack(header, code, now=self.clock(), ack_control_id=_ack_control_id(),
                        error=err)
        if header.control_id:
            # Same bytes resent give the same error: replay it rather than dead-letter
            # the copy again.
            self.ack_store.put(header.sending_facility, header.control_id, ack)
        return Hl7Outcome(ack=ack, code=code, error_code=err.code.value, dead_letter_id=dl_id,
                          facility=header.sending_facility, control_id=header.control_id,
                          trigger=header.trigger)

    async def _reject_unreadable(self, raw: bytes, err: MappingError, transport: str,
                                 listener: str, content_type: str,
                                 received_at: datetime) -> Hl7Outcome:
        try:
            dl_id = await dead_letter(
                self.producer, self.settings, stage="ingest", error=err, original=raw,
                transport=transport, listener=listener, content_type=content_type,
                received_at=received_at, now=self.clock())
        except HubKafkaError:
            return self._retry_later(None, False)
        ack = build_ack(None, AckCode.AR, now=self.clock(), ack_control_id=_ack_control_id(),
                        error=err)
        return Hl7Outcome(ack=ack, code=AckCode.AR, error_code=err.code.value,
                          dead_letter_id=dl_id)

    async def _internal_error_hl7(self, raw: bytes, exc: Exception, transport: str,
                                  listener: str, content_type: str,
                                  received_at: datetime) -> Hl7Outcome:
        # Log the exception type only: its message may quote the input.
        log.error("message_failed", transport=transport, listener=listener,
                  reason=type(exc).__name__, error_code=ErrorCode.INTERNAL_ERROR.value)
        err = MappingError(ErrorCode.INTERNAL_ERROR, "The hub failed to process the message.")
        header: MessageHeader | None
        try:
            header = read_header(raw)
        except Exception:
            header = None
        dl_id: str | None = None
        try:
            dl_id = await dead_letter(
                self.producer, self.settings, stage="ingest", error=err, original=raw,
                transport=transport, listener=listener, content_type=content_type,
                header=header, received_at=received_at, now=self.clock())
        except Exception:
            dl_id = None
        # AR either way: the sender keeps the message and retries (or a human looks).
        code = AckCode.CE if _enhanced(header) else AckCode.AR
        ack = build_ack(header, code, now=self.clock(), ack_control_id=_ack_control_id(),
                        error=err)
        return Hl7Outcome(ack=ack, code=code, error_code=err.code.value, dead_letter_id=dl_id,
                          retryable=True,
                          facility=header.sending_facility if header else None,
                          control_id=header.control_id if header else None,
                          trigger=header.trigger if header else None)

    # ---------------------------------------------------------- framing errors
    async def reject_bytes(self, original: bytes, error: MappingError, *, transport: str,
                           listener: str, peer: str | None, original_size: int | None = None,
                           content_type: str = HL7_CONTENT_TYPE) -> str | None:
        """Dead-letter bytes that never became a message (garbage, over-size frame).

        Returns the dead-letter id, or None when even the DLQ write failed (logged and
        counted; nothing was acknowledged for these bytes, so nothing is lost that the
        sender believes delivered).
        """
        size = max(original_size or 0, len(original))
        self.stats[f"error.{error.code.value}"] += 1
        dl_id: str | None
        try:
            dl_id = await dead_letter(
                self.producer, self.settings, stage="ingest", error=error, original=original,
                transport=transport, listener=listener, content_type=content_type,
                original_size=original_size, received_at=self.clock(), now=self.clock())
        except Exception as exc:
            log.error("dead_letter_failed", transport=transport, listener=listener,
                      error_code=error.code.value, reason=type(exc).__name__)
            dl_id = None
        log.warning("frame_rejected", **_present(
            transport=transport, listener=listener, peer=peer, error_code=error.code.value,
            size=size, dead_letter_id=dl_id))
        if self.metrics is not None:
            self.metrics.frame_rejected(transport=transport, listener=listener,
                                        error_code=error.code.value, size=size,
                                        dead_lettered=dl_id is not None)
        return dl_id

    # -------------------------------------------------------------------- FHIR
    async def handle_fhir(self, body: bytes, *, transport: str, listener: str,
                          peer: str | None, path: str,
                          content_type: str = FHIR_CONTENT_TYPE) -> tuple[int, dict[str, Any]]:
        outcome = await self.handle_fhir_outcome(body, transport=transport, listener=listener,
                                                 peer=peer, path=path,
                                                 content_type=content_type)
        return outcome.status, outcome.body

    async def handle_fhir_outcome(self, body: bytes, *, transport: str, listener: str,
                                  peer: str | None, path: str,
                                  content_type: str = FHIR_CONTENT_TYPE) -> FhirOutcome:
        started = time.perf_counter()
        received_at = self.clock()
        try:
            outcome = await self._fhir(body, transport, listener, path, content_type,
                                       received_at)
        except Exception as exc:
            log.error("message_failed", transport=transport, listener=listener, path=path,
                      reason=type(exc).__name__, error_code=ErrorCode.INTERNAL_ERROR.value)
            err = MappingError(ErrorCode.INTERNAL_ERROR, "The hub failed to process the request.")
            dl_id: str | None
            try:
                dl_id = await dead_letter(
                    self.producer, self.settings, stage="ingest", error=err, original=body,
                    transport=transport, listener=listener, content_type=content_type,
                    received_at=received_at, now=self.clock())
            except Exception:
                dl_id = None
            outcome = FhirOutcome(500, _operation_outcome(err.code.value, err.detail,
                                                          issue_type="exception"),
                                  err.code.value, dl_id)
        latency = time.perf_counter() - started
        self.stats[f"http.{outcome.status}"] += 1
        if outcome.error_code:
            self.stats[f"error.{outcome.error_code}"] += 1
        log.info("fhir_answered", **_present(
            transport=transport, listener=listener, path=path, http_status=outcome.status,
            error_code=outcome.error_code, dead_letter_id=outcome.dead_letter_id,
            latency_ms=round(latency * 1000, 2)))
        if self.metrics is not None:
            self.metrics.message_handled(
                transport=transport, listener=listener, ack_code=str(outcome.status),
                error_code=outcome.error_code, duplicate=False, latency_s=latency,
                feed=outcome.facility, trigger=outcome.trigger, protocol="fhir",
                dead_lettered=outcome.dead_letter_id is not None)
        return outcome

    async def _fhir(self, body: bytes, transport: str, listener: str, path: str,
                    content_type: str, received_at: datetime) -> FhirOutcome:
        tz = self.settings.default_timezone
        try:
            events = map_fhir(body, received_at=received_at, default_tz=tz)
            _check_path(body, path)
        except MappingError as err:
            try:
                dl_id = await dead_letter(
                    self.producer, self.settings, stage="ingest", error=err, original=body,
                    transport=transport, listener=listener, content_type=content_type,
                    received_at=received_at, now=self.clock())
            except HubKafkaError:
                return self._fhir_unavailable()
            status = _FHIR_STATUS.get(err.code, 422)
            issue = "structure" if status == 400 else (
                "not-supported" if err.code in (ErrorCode.UNSUPPORTED_RESOURCE,
                                                ErrorCode.UNSUPPORTED_EVENT) else "invalid")
            return FhirOutcome(status, _operation_outcome(err.code.value, err.detail,
                                                          issue_type=issue),
                               err.code.value, dl_id)

        if not events:
            # A subscription handshake/heartbeat: valid, and nothing happened. Nothing
            # to key or to replay, so nothing is written.
            return FhirOutcome(200, {"event_ids": []})
        first = events[0]
        patient_key = first.patient.key
        facility = first.source.facility
        dedup = events_dedup_key("fhir", events) or ""
        headers = [
            (HEADER_RECEIVED_AT, received_at.isoformat().encode()),
            (HEADER_TRANSPORT, transport.encode()),
            (HEADER_LISTENER, listener.encode()),
            (HEADER_CONTENT_TYPE, content_type.encode()),
            (HEADER_DEFAULT_TZ, tz.encode()),
            (HEADER_DEDUP_KEY, dedup.encode()),
        ]
        try:
            await self._bounded_send(self.settings.topic(EHR_FHIR.name), body,
                                     key=patient_key.encode(), headers=headers)
        except HubKafkaError:
            return self._fhir_unavailable()
        return FhirOutcome(202, {"event_ids": [e.event_id for e in events]},
                           facility=facility, trigger=first.trigger)

    def _fhir_unavailable(self) -> FhirOutcome:
        err = ErrorCode.DURABLE_WRITE_FAILED
        return FhirOutcome(503, _operation_outcome(
            err.value, "The request could not be stored; send it again.",
            issue_type="transient"), err.value)


def _check_path(body: bytes, path: str) -> None:
    """``POST /fhir/Encounter`` takes an Encounter only; ``/fhir`` takes anything mapped."""
    if not path.rstrip("/").endswith("/Encounter"):
        return
    try:
        kind = orjson.loads(body).get("resourceType")
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    if kind != "Encounter":
        raise MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                           "This endpoint accepts Encounter resources only; POST other "
                           "resources and Bundles to /fhir.")


def _code_of(ack: bytes) -> AckCode:
    """MSA-1 of a stored ACK (to answer a replayed duplicate with the right status)."""
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA") and len(seg) > 4:
            parts = seg[4:].split(seg[3:4])
            try:
                return AckCode(parts[0].decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                break
    return AckCode.AA

