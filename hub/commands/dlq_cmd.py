"""``hub dlq list | show ID | replay ID...|--all``: browse and replay dead letters.

``hub.dlq`` holds PHI-free records (codes, coordinates, sizes) that anyone in ops may
read; ``hub.dlq-payloads`` holds the original bytes (PHI) and is read only by
``show --payload`` (which says so) and by ``replay``.

Replay sends a dead letter's original bytes back to its raw topic (``ehr.hl7v2`` or
``ehr.fhir``, from the record's source topic or content type), so it goes through
normalize again, after a fix. Why it does not duplicate outputs:

1. Only what maps *now* is sent (checked with the installed mappers before writing);
   a message that still fails is reported and skipped (``--force`` sends it anyway,
   and it is dead-lettered again).
2. The record keeps its original headers where known (the raw record's own headers for
   a normalize-stage dead letter, else the payload's: received-at, transport...), its
   dedup key (sending facility + control id, the same rule as ingest) and the patient
   key as the Kafka key, plus ``hub-replay-of: <dead letter id>`` (:data:`HEADER_REPLAY_OF`).
3. Event ids are derived from the message (facility + control id / FHIR source id), so
   a replayed message yields the same event ids as it would have the first time, and
   normalize's dedup (facility + control id within the window) drops a second replay
   of the same message; downstream stages dedup on event ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, get_args

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from hub.kafka import DurableProducer, HubKafkaError, Record, fetch_record, read_topic
from hub.logging import get_logger
from hub.settings import Settings
from hub.webhooks import requeue_delivery
from mappers.fhir import map_fhir
from mappers.hl7v2 import map_hl7v2, read_header
from schemas.canonical import CanonicalEvent
from schemas.errors import MappingError
from schemas.records import (
    HEADER_CONTENT_TYPE,
    HEADER_DEDUP_KEY,
    HEADER_DEFAULT_TZ,
    HEADER_RECEIVED_AT,
    DeadLetter,
    Stage,
)
from schemas.topics import EHR_FHIR, EHR_HL7V2, HUB_DLQ, HUB_DLQ_PAYLOADS
from streams.normalize import HEADER_REPLAY_OF, events_dedup_key

log = get_logger("hub.dlq")


_HL7_TYPES = {"hl7v2", "x-application/hl7-v2+er7", "text/plain", "application/hl7-v2",
              "application/edi-hl7"}
_FHIR_TYPES = {"fhir", "application/fhir+json", "application/json"}
_DURATION = re.compile(r"^(\d+)([smhd])$")
READ_TIMEOUT_S = 15.0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d``, ``45s`` ago, or an ISO-8601 time (UTC if no offset)."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def load_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every record on hub.dlq, one per id (the latest), oldest first."""
    records = await read_topic(settings, HUB_DLQ.name, timeout=READ_TIMEOUT_S)
    by_id: dict[str, DeadLetter] = {}
    for rec in records:
        try:
            letter = DeadLetter.model_validate_json(rec.value or b"")
        except ValidationError:
            log.warning("dead_letter_unreadable", partition=rec.partition, offset=rec.offset)
            continue
        by_id[letter.id] = letter
    return sorted(by_id.values(), key=lambda d: d.dead_lettered_at)


async def load_payload(settings: Settings, dl_id: str) -> Record | None:
    records = await read_topic(settings, HUB_DLQ_PAYLOADS.name, timeout=READ_TIMEOUT_S)
    found = [r for r in records if (r.key or b"").decode(errors="replace") == dl_id]
    return found[-1] if found else None


def _coords(d: DeadLetter) -> str:
    if d.source is None:
        return f"{d.transport or '?'}:{d.listener or '?'}"
    return f"{d.source.topic}/{d.source.partition}/{d.source.offset}"


def _select(letters: list[DeadLetter], *, since: datetime | None, stage: str | None,
            code: str | None) -> list[DeadLetter]:
    return [d for d in letters
            if (since is None or d.dead_lettered_at >= since)
            and (stage is None or d.stage == stage)
            and (code is None or d.error_code == code)]


def _find(letters: list[DeadLetter], dl_id: str) -> DeadLetter | None:
    matches = [d for d in letters if d.id == dl_id or d.id.startswith(dl_id)]
    return matches[-1] if len(matches) == 1 or (matches and matches[-1].id == dl_id) else None


# ------------------------------------------------------------------------ replay


@dataclass(frozen=True)
class ReplayResult:
    dead_letter_id: str
    outcome: str
    """``replayed``, ``dry_run`` or ``skipped``."""
    reason: str = ""
    """A code: ``still_fails:<error code>``, ``payload_missing``, ``payload_truncated``,
    ``unknown_format``, ``write_failed``; or the coordinates written."""


def target_topic(d: DeadLetter, prefix: str) -> str | None:
    if d.source is not None:
        name = d.source.topic.removeprefix(prefix)
        if name in (EHR_HL7V2.name, EHR_FHIR.name):
            return name
    ctype = (d.content_type or "").split(";")[0].strip().lower()
    if ctype in _HL7_TYPES:
        return EHR_HL7V2.name
    if ctype in _FHIR_TYPES:
        return EHR_FHIR.name
    return None


def _map_now(topic: str, value: bytes, settings: Settings, headers: dict[str, bytes]
             ) -> list[CanonicalEvent]:
    received = headers.get(HEADER_RECEIVED_AT)
    at = datetime.now(UTC)
    if received:
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(received.decode())
    tz_header = headers.get(HEADER_DEFAULT_TZ)
    if topic == EHR_HL7V2.name:
        tz = tz_header.decode() if tz_header else settings.default_timezone
        if not tz_header:
            with contextlib.suppress(MappingError):
                tz = settings.timezone_for(read_header(value).sending_facility)
        return map_hl7v2(value, received_at=at, default_tz=tz)
    tz = tz_header.decode() if tz_header else settings.default_timezone
    return map_fhir(value, received_at=at, default_tz=tz)


async def replay_one(settings: Settings, producer: DurableProducer | None, d: DeadLetter, *,
                     force: bool = False) -> ReplayResult:
    """Send one dead letter's original back to its raw topic (``producer`` None: dry run)."""
    if not d.payload_stored:
        return ReplayResult(d.id, "skipped", "payload_truncated")
    if d.stage == "deliveries":
        # A webhook delivery (given up, or unreadable): re-queued on referrals.deliveries,
        # not sent through normalize. --force does not apply.
        payload = await load_payload(settings, d.id)
        outcome, detail = await requeue_delivery(
            settings, producer, d, payload.value if payload is not None else None)
        return ReplayResult(d.id, outcome, detail)
    topic = target_topic(d, settings.topic_prefix)
    if topic is None:
        return ReplayResult(d.id, "skipped", "unknown_format")
    payload = await load_payload(settings, d.id)
    if payload is None or payload.value is None:
        return ReplayResult(d.id, "skipped", "payload_missing")
    value = payload.value
    headers = dict(payload.headers)
    key: bytes | None = None
    if d.source is not None:
        # The raw record itself has the full header set (dedup key, feed zone...).
        original = await fetch_record(settings, d.source.topic, d.source.partition,
                                      d.source.offset, timeout=READ_TIMEOUT_S)
        if original is not None and original.value == value:
            headers = {**headers, **original.headers}
            key = original.key
    try:
        events = _map_now(topic, value, settings, headers)
        failure = None if events else "no_events"
    except MappingError as err:
        events, failure = [], err.code.value
    if failure is not None and not force:
        return ReplayResult(d.id, "skipped", f"still_fails:{failure}")
    if events:
        key = key or events[0].patient.key.encode()
        if HEADER_DEDUP_KEY not in headers:
            # As ingest computes it: format + facility + control id (FHIR: source id
            # or event id), so the replay and any resend of the message are one.
            fmt = "hl7v2" if topic == EHR_HL7V2.name else "fhir"
            headers[HEADER_DEDUP_KEY] = (events_dedup_key(fmt, events) or "").encode()
    if HEADER_CONTENT_TYPE not in headers and d.content_type:
        headers[HEADER_CONTENT_TYPE] = d.content_type.encode()
    headers[HEADER_REPLAY_OF] = d.id.encode()
    if producer is None:
        return ReplayResult(d.id, "dry_run", topic)
    try:
        partition, offset = await producer.send(
            settings.topic(topic), value, key=key, headers=list(headers.items()),
            timeout=settings.ack_timeout_s)
    except HubKafkaError:
        return ReplayResult(d.id, "skipped", "write_failed")
    log.info("dead_letter_replayed", dead_letter_id=d.id, topic=settings.topic(topic),
             partition=partition, offset=offset, events=len(events))
    return ReplayResult(d.id, "replayed", f"{settings.topic(topic)}/{partition}/{offset}")


async def replay(settings: Settings, letters: Sequence[DeadLetter], *, force: bool,
                 dry_run: bool) -> list[ReplayResult]:
    if dry_run:
        return [await replay_one(settings, None, d, force=force) for d in letters]
    producer = DurableProducer(settings)
    try:
        await producer.start()
    except HubKafkaError:
        if not producer.idempotent:
            raise
        # The embedded broker (Tansu) has no InitProducerId. A non-idempotent
        # producer is safe here: a retry's duplicate carries the same replay header
        # and dedup key, which normalize drops.
        log.warning("producer_idempotence_unavailable", reason="init_producer_id_failed")
        producer = DurableProducer(settings, idempotent=False)
        await producer.start()
    try:
        return [await replay_one(settings, producer, d, force=force) for d in letters]
    finally:
        await producer.stop()


# ----------------------------------------------------------------------- command


def _table(title: str, letters: Sequence[DeadLetter]) -> Table:
    table = Table(title=title)
    for col in ("id", "stage", "code", "coordinates", "facility", "control id", "size",
                "dead-lettered at"):
        table.add_column(col)
    for d in letters:
        table.add_row(d.id, d.stage, d.error_code, _coords(d), d.sending_facility or "",
                      d.message_id or "", str(d.original_size),
                      d.dead_lettered_at.isoformat(timespec="seconds"))
    return table


async def _run(args: argparse.Namespace, settings: Settings, out: Console, err: TextIO
               ) -> int:
    action: str = args.action
    since = parse_since(args.since) if getattr(args, "since", None) else None
    letters = await load_dead_letters(settings)
    if action == "list":
        chosen = _select(letters, since=since, stage=args.stage, code=args.code)
        chosen = chosen[-args.limit:] if args.limit else chosen
        if not chosen:
            out.print("No dead letters.")
            return 0
        out.print(_table(f"Dead letters on {settings.topic(HUB_DLQ.name)}", chosen))
        return 0
    if action == "show":
        found = _find(letters, args.id)
        if found is None:
            print(f"hub dlq: no dead letter {args.id}", file=err)
            return 1
        out.print_json(found.model_dump_json(exclude_none=True))
        if args.payload:
            print(f"hub dlq: WARNING: printing the original message from "
                  f"{settings.topic(HUB_DLQ_PAYLOADS.name)}: it contains PHI.", file=err)
            payload = await load_payload(settings, found.id)
            if payload is None or payload.value is None:
                print("hub dlq: the payload is not on the payloads topic (retention?)",
                      file=err)
                return 1
            text = payload.value.decode("utf-8", "replace").replace("\r", "\n")
            out.print(text, markup=False, highlight=False)
        return 0
    # replay
    if not args.all and not args.ids:
        print("hub dlq replay: give dead letter ids or --all", file=err)
        return 2
    if args.all:
        chosen = _select(letters, since=since, stage=args.stage, code=args.code)
    else:
        chosen = []
        for wanted in args.ids:
            found = _find(letters, wanted)
            if found is None:
                print(f"hub dlq: no dead letter {wanted}", file=err)
                return 1
            chosen.append(found)
    if not chosen:
        out.print("Nothing to replay.")
        return 0
    results = await replay(settings, chosen, force=args.force, dry_run=args.dry_run)
    table = Table(title="Replay" + (" (dry run)" if args.dry_run else ""))
    for col in ("id", "outcome", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(r.dead_letter_id, r.outcome, r.reason)
    out.print(table)
    failed = [r for r in results if r.outcome == "skipped"]
    if args.all:
        # Still-failing letters are expected in a bulk replay; a write failure is not.
        return 1 if any(r.reason == "write_failed" for r in failed) else 0
    return 1 if failed else 0


def run_dlq(args: argparse.Namespace, settings: Settings, *, out: Console | None = None,
            err: TextIO | None = None) -> int:
    if not settings.kafka_bootstrap:
        print("hub dlq: set HUB_KAFKA_BOOTSTRAP to the hub's broker (the embedded broker "
              "logs its address as embedded_broker_started)", file=err or sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings, out or Console(), err or sys.stderr))
    except HubKafkaError as exc:
        print(f"hub dlq: {exc}", file=err or sys.stderr)
        return 2


def add_parser(sub: Any) -> None:
    """Register ``hub dlq`` on the CLI's subparsers (``run_dlq`` runs it)."""
    p = sub.add_parser("dlq", help="list, show and replay dead letters")
    actions = p.add_subparsers(dest="action", required=True)
    lp = actions.add_parser("list", help="dead letters (codes and coordinates, no PHI)")
    lp.add_argument("--since", help="2h, 30m, 7d or an ISO-8601 time")
    lp.add_argument("--stage", choices=get_args(Stage))  # every stage that dead-letters
    lp.add_argument("--code", help="error code, e.g. missing_patient_identifier")
    lp.add_argument("--limit", type=int, default=0, help="only the N most recent")
    sp = actions.add_parser("show", help="one dead letter")
    sp.add_argument("id", help="dead letter id (or a unique prefix)")
    sp.add_argument("--payload", action="store_true",
                    help="also print the original message (PHI, from hub.dlq-payloads)")
    rp = actions.add_parser(
        "replay", help="send dead letters back through normalize",
        description="Send dead letters back through normalize. Dead letters of the "
        "deliveries stage (webhook deliveries given up) are re-queued on "
        "referrals.deliveries instead: same Idempotency-Key and body, a fresh retry "
        "window (HUB_WEBHOOK_MAX_AGE_S); fix the cause first (agency URL in the "
        "directory, its secret_env on the worker, the receiver). Each dead letter "
        "restarts its delivery once; the body carries its version, so a receiver keeps "
        "the highest it has seen.")
    rp.add_argument("ids", nargs="*", help="dead letter ids (or unique prefixes)")
    rp.add_argument("--all", action="store_true", help="every dead letter (see --since)")
    rp.add_argument("--since", help="with --all: 2h, 30m, 7d or an ISO-8601 time")
    rp.add_argument("--stage", choices=("ingest", "normalize", "replay", "deliveries"))
    rp.add_argument("--code")
    rp.add_argument("--force", action="store_true",
                    help="send even what the current mappers still reject")
    rp.add_argument("--dry-run", action="store_true", help="check, do not write")
