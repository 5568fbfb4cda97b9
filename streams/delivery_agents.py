"""Webhook delivery as a faust agent: a thin shell around :mod:`streams.referrals.delivery`.

``webhook_deliveries`` (table ``deliveries``, keyed by job id) reads referrals.deliveries:
each DeliveryJob is attempted at once (unless its agency just failed: then the next tick
does it), and its state is stored, so a restart resumes pending deliveries from the
table. A timer sends every active partition a tick (tables are only written from inside
stream iteration, on the partition that owns the key); the tick pass retries what is
due, gives up what is past its deadline and forgets finished deliveries after
``retain_s``. Beside each delivery the table ``deliveries-due`` keeps when the timer next
has anything to do for it (:func:`streams.referrals.delivery.due_mark`) and whether it is
pending, so a tick parses only the states whose time has come; the first tick of a
partition in a process reads them all once (states stored by older workers have no mark
yet). The HTTP call is the hub's (``cfg.webhook_sender``): streams never import the hub
or an HTTP client.

Order of one delivery's work, and why (at-least-once towards the agency, made
effectively-once by the Idempotency-Key header):
1. Attempt the POST (bounded in time, so a black-holed endpoint holds the partition
   for at most ``webhook_attempt_timeout_s`` per batch).
2. For a delivery given up: publish the dead letter and wait for it.
3. Only then store the new state. A crash between 1 and 3 sends the same job again with
   the same idempotency key (the agency dedups); the opposite order could record a
   delivery that never happened.
Agent and table names are state identities: renaming one is a migration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import faust
import orjson
import structlog
from faust.types import EventT

from schemas import topics as catalogue
from schemas.care import TICK_KEY
from schemas.errors import ErrorCode, MappingError
from schemas.records import (
    PAYLOAD_LIMIT_BYTES,
    DeadLetter,
    SourceCoordinates,
    dead_letter_id,
)
from schemas.referrals import DeliveryJob
from streams.care_agents import DeadLetterFn, is_bad_input
from streams.config import StreamsConfig
from streams.raw import raw_schema, raw_table
from streams.referrals.delivery import (
    AttemptOutcome,
    DeliveryPolicy,
    DeliveryState,
    Transition,
    due_mark,
    epoch_us,
    expire,
    forgettable,
    is_due,
    new_state,
    record_attempt,
    restarts,
)
from streams.rows import handle_row, handle_rows, marked_elsewhere

log = structlog.stdlib.get_logger("streams.deliveries")

DELIVERIES_AGENT = "webhook_deliveries"
DELIVERIES_TABLE = "deliveries"
DELIVERIES_DUE_TABLE = "deliveries-due"
STAGE: Final = "deliveries"
EXHAUSTED_CODE = "webhook_exhausted"



class DeliveryFigures:
    """Counts for metrics (a :class:`hub.metrics.FiguresProvider`; no PHI: agency ids and
    outcome codes only). Outcomes: ``delivered`` (deliveries accepted), ``failed``
    (attempts that failed), ``retried`` (retries scheduled), ``exhausted`` (deliveries
    given up and dead-lettered)."""

    def __init__(self) -> None:
        self.by_agency: dict[str, dict[str, int]] = {}
        self.processed = 0
        self.failures = 0
        self.tick_row_failures = 0
        """Stored deliveries a tick could not handle (left as stored; the pass went on)."""
        self._pending: dict[int, int] = {}
        self.ticks = 0
        """Timer passes finished by this process (all partitions)."""

    @property
    def pending(self) -> int:
        """Deliveries not yet delivered nor given up, over this process's partitions
        (as of each partition's last tick); 0 before any tick."""
        return sum(self._pending.values())

    def set_pending(self, partition: int, count: int) -> None:
        self._pending[partition] = count

    def count(self, agency: str, outcome: str) -> None:
        per = self.by_agency.setdefault(agency, {})
        per[outcome] = per.get(outcome, 0) + 1

    def figures(self) -> dict[str, Any]:
        stage: dict[str, Any] = {"processed": self.processed}
        if self._pending or self.tick_row_failures:  # once the timer has run
            stage["timer_row_failures"] = self.tick_row_failures
        exhausted = sum(o.get("exhausted", 0) for o in self.by_agency.values())
        if exhausted:
            stage["dead_letters"] = {EXHAUSTED_CODE: exhausted}
        out: dict[str, Any] = {
            "webhook_deliveries": {a: dict(o) for a, o in self.by_agency.items()},
            "outputs": {"webhook": sum(o.get("delivered", 0)
                                       for o in self.by_agency.values())},
            "stages": {STAGE: stage},
        }
        if self._pending:  # before any tick: absent ("no data yet"), not 0
            out["webhook_deliveries_pending"] = self.pending
        return out


def add_delivery_agents(app: faust.App, cfg: StreamsConfig, dead_letter: DeadLetterFn
                        ) -> DeliveryFigures:
    """Add the ``webhook_deliveries`` agent, its table and timer (needs a sender). Jobs
    that cannot be read go to ``dead_letter`` (the hub's, as for the care stages)."""
    sender = cfg.webhook_sender
    if sender is None:
        raise ValueError("add_delivery_agents needs cfg.webhook_sender")
    figures = DeliveryFigures()
    policy = cfg.webhook_policy or DeliveryPolicy()
    partitions = cfg.partitions or catalogue.REFERRALS_DELIVERIES.partitions
    jobs_name = cfg.topic(catalogue.REFERRALS_DELIVERIES.name)
    jobs_topic = app.topic(jobs_name, schema=raw_schema(), partitions=partitions,
                           internal=False)
    # key_type/value_type as well as the schema: faust picks the changelog serializers
    # from the types (json when absent), and json-encoded changelog records of a raw
    # table fail to load on recovery, so a restarted worker would never become ready.
    table = raw_table(app, DELIVERIES_TABLE, partitions=partitions)
    marks = raw_table(app, DELIVERIES_DUE_TABLE, partitions=partitions)
    swept: set[int] = set()
    """Partitions this process has ticked over in full once (see ``tick``)."""
    dlq_name = cfg.topic(catalogue.HUB_DLQ.name)
    payloads_name = cfg.topic(catalogue.HUB_DLQ_PAYLOADS.name)
    attempt_bound = cfg.webhook_attempt_timeout_s + 2.0
    # Agency -> monotonic time until which new jobs wait for the tick instead of being
    # tried inline: while an agency is down, its new jobs must not hold the partition.
    cooling: dict[str, float] = {}

    async def dead_letter_exhausted(state: DeliveryState, reason: str) -> None:
        job = state.job
        now = datetime.now(UTC)
        original = job.model_dump_json().encode()
        source = (SourceCoordinates(topic=state.source_topic, partition=state.partition,
                                    offset=state.source_offset)
                  if state.source_topic is not None and state.partition is not None
                  and state.source_offset is not None else None)
        dl_id = dead_letter_id(stage=STAGE, transport="webhook", facility=None,
                               message_id=job.id, original=original, source=source)
        kept = original[:PAYLOAD_LIMIT_BYTES]
        letter = DeadLetter(
            id=dl_id, stage=STAGE, error_code=EXHAUSTED_CODE,
            detail=(f"webhook delivery to agency {job.agency_id} given up after "
                    f"{state.attempts} attempt(s); last outcome {reason}"),
            source=source, transport="webhook", listener=job.agency_id,
            content_type="application/json", message_id=job.id,
            received_at=job.created_at, dead_lettered_at=now, original_size=len(original),
            payload_stored=len(kept) == len(original),
            payload_truncated_to=None if len(kept) == len(original) else len(kept),
            attempts=max(1, state.attempts))
        # The payload (the agency copy: PHI) first and delivered, then the PHI-free record
        # that points at it, as every stage of the hub does.
        fut = await app.producer.send(payloads_name, dl_id.encode(), kept, None, None, None)
        await fut
        fut = await app.producer.send(dlq_name, dl_id.encode(),
                                      letter.model_dump_json(exclude_none=True).encode(),
                                      None, None, None)
        await fut
        log.warning("delivery_dead_lettered", stage=STAGE, agency_id=job.agency_id,
                    delivery_id=job.id, attempts=state.attempts, reason=reason,
                    dead_letter_id=dl_id)

    async def attempt(state: DeliveryState) -> AttemptOutcome:
        number = state.attempts + 1
        try:
            return await asyncio.wait_for(sender(state.job, number), attempt_bound)
        except TimeoutError:
            return AttemptOutcome("timeout", code="attempt_timeout")
        except Exception as exc:  # the sender should never raise; if it does, retry
            log.error("webhook_sender_failed", agency_id=state.job.agency_id,
                      delivery_id=state.job.id, exc_type=type(exc).__name__)
            return AttemptOutcome("connect_error", code="sender_error")

    async def settle(state: DeliveryState, new: DeliveryState, tr: Transition) -> DeliveryState:
        """Count, log and (for a delivery given up) dead-letter one transition."""
        agency = state.job.agency_id
        if tr.kind == "delivered":
            figures.count(agency, "delivered")
            cooling.pop(agency, None)
            log.info("delivery_delivered", agency_id=agency, delivery_id=state.job.id,
                     attempts=new.attempts)
        elif tr.kind in ("retrying", "exhausted") and new.attempts > state.attempts:
            figures.count(agency, "failed")
            cooling[agency] = time.monotonic() + policy.backoff_base_s
        if tr.kind == "retrying":
            figures.count(agency, "retried")
            log.info("delivery_retry_scheduled", agency_id=agency, delivery_id=state.job.id,
                     attempts=new.attempts, reason=tr.reason,
                     next_attempt_at=new.next_attempt_at.isoformat()
                     if new.next_attempt_at else None)
        elif tr.kind == "exhausted":
            figures.count(agency, "exhausted")
            await dead_letter_exhausted(new, tr.reason or "unknown")
        return new

    async def try_once(state: DeliveryState) -> DeliveryState:
        outcome = await attempt(state)
        new, tr = record_attempt(state, outcome, datetime.now(UTC), policy)
        return await settle(state, new, tr)

    def mark(key: bytes, state: DeliveryState) -> None:
        value = due_mark(state, policy)
        if marks.get(key) != value:
            marks[key] = value

    def store(state: DeliveryState) -> None:
        # The state and its mark in the same step: a state without its (new) mark would
        # wait for the next process's sweep.
        key = state.job.id.encode()
        table[key] = state.model_dump_json(exclude_none=True).encode()
        mark(key, state)

    def forget(key: bytes) -> None:
        # The row first: a crash in between leaves a mark without a row, which the next
        # tick drops (the other order would leave a row no tick reads until a sweep).
        del table[key]
        if marks.get(key) is not None:
            del marks[key]

    async def on_job(event: EventT) -> None:
        msg = event.message
        figures.processed += 1
        job = DeliveryJob.model_validate_json(event.value)
        held = table.get(job.id.encode())
        if held is not None:
            if not restarts(DeliveryState.model_validate_json(held), job):
                # A redelivered job (same id = same referral version): never sent twice.
                log.info("delivery_duplicate_ignored", agency_id=job.agency_id,
                         delivery_id=job.id, replay=job.replay_of is not None,
                         topic=msg.topic, partition=msg.partition, offset=msg.offset)
                return
            # ``hub dlq replay`` of a delivery given up: a fresh start, same idempotency key.
            log.info("delivery_replay_started", agency_id=job.agency_id, delivery_id=job.id,
                     dead_letter_id=job.replay_of, topic=msg.topic, partition=msg.partition,
                     offset=msg.offset)
        now = datetime.now(UTC)
        state = new_state(job, now, partition=msg.partition, source_topic=msg.topic,
                          source_offset=msg.offset)
        expired, tr = expire(state, now, policy)
        if tr.kind == "exhausted":
            state = await settle(state, expired, tr)
        elif cooling.get(job.agency_id, 0.0) <= time.monotonic():
            state = await try_once(state)
        store(state)

    async def tick(partition: int) -> None:
        now = datetime.now(UTC)
        due: list[DeliveryState] = []
        pending = 0
        sweep = partition not in swept
        rows: list[tuple[bytes, bytes | None]]
        if sweep:
            # Once per partition per process: every stored state, which also writes the
            # marks that states stored by an older worker lack. Afterwards only the
            # deliveries whose mark's time has come are read.
            rows = list(table.items())
        else:
            keys, pending = due_keys(list(marks.items()), partition, epoch_us(now))
            rows = [(key, table.get(key)) for key in keys]
        records = 0

        async def classify(row: tuple[bytes, bytes | None]) -> None:
            nonlocal records, pending
            key, raw = row
            if raw is None:  # a mark left behind by a crash between forget's two deletes
                if marks.get(key) is not None:
                    del marks[key]
                return
            if sweep and marked_elsewhere(marks.get(key), partition):
                return
            state = DeliveryState.model_validate_json(raw)
            if state.partition != partition:
                return
            records += 1
            if forgettable(state, now, policy):
                forget(key)
                return
            expired, tr = expire(state, now, policy)
            if tr.kind == "exhausted":
                store(await settle(state, expired, tr))
                return
            if not state.terminal:
                pending += 1
            if is_due(state, now):
                due.append(state)
            # A missing mark (an older worker's state; also one that is due but may not
            # fit in this pass's batches) or an early one: set it right.
            mark(key, state)

        failed = await handle_rows(rows, classify, event="delivery_tick_row_failed",
                                   partition=partition, ref=_delivery_ref)
        if sweep:
            # Done even past a failing row: it stays as stored, and sweeping again on
            # every tick would only fail on it again.
            swept.add(partition)
            log.info("delivery_tick_swept", partition=partition, records=records,
                     failed=failed)

        async def attempt_and_store(state: DeliveryState) -> None:
            store(await try_once(state))

        due.sort(key=lambda s: s.next_attempt_at or now)
        # Batches of attempts at once, until the pass has used about one attempt's bound:
        # what is left waits for the next tick, so the partition keeps moving.
        started = time.monotonic()
        while due and time.monotonic() - started < cfg.webhook_attempt_timeout_s:
            batch, due = due[:cfg.webhook_concurrency], due[cfg.webhook_concurrency:]
            done = await asyncio.gather(*(
                handle_row(s, attempt_and_store, event="delivery_tick_row_failed",
                           partition=partition, ref=_state_ref) for s in batch))
            failed += done.count(False)
        figures.tick_row_failures += failed
        figures.set_pending(partition, pending)
        figures.ticks += 1

    async def guarded(event: EventT) -> None:
        # faust acks an event whose agent raised and never processes it again: a job
        # that cannot be handled is dead-lettered with its coordinates instead.
        msg = event.message
        try:
            if event.key == TICK_KEY:
                await tick(msg.partition)
            else:
                await on_job(event)
        except Exception as exc:
            figures.failures += 1
            log.error("delivery_input_failed", stage=STAGE, exc_type=type(exc).__name__,
                      topic=msg.topic, partition=msg.partition, offset=msg.offset)
            if event.key != TICK_KEY:
                await _dead_letter_input(event, exc)

    async def _dead_letter_input(event: EventT, exc: Exception) -> None:
        msg = event.message
        code = ErrorCode.INVALID_RESOURCE if is_bad_input(exc) else ErrorCode.INTERNAL_ERROR
        try:
            await dead_letter(event, STAGE, MappingError(
                code, f"{type(exc).__name__} in the {STAGE} stage"))
        except Exception as exc2:
            log.error("dead_letter_failed", exc_type=type(exc2).__name__, topic=msg.topic,
                      partition=msg.partition, offset=msg.offset)

    @app.agent(jobs_topic, name=DELIVERIES_AGENT)
    async def deliveries_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(event)

    @app.timer(interval=cfg.webhook_tick_interval_s)
    async def deliveries_timer() -> None:
        active = {tp.partition for tp in app.assignor.assigned_actives()
                  if tp.topic == jobs_name}
        at = orjson.dumps({"op": "tick", "at": datetime.now(UTC).isoformat()})
        for partition in sorted(active):
            try:
                await app.producer.send(jobs_name, TICK_KEY, at, partition, None, None)
            except Exception as exc:  # a missed tick is retried by the next one
                log.warning("delivery_tick_failed", exc_type=type(exc).__name__,
                            partition=partition)

    return figures


def _delivery_ref(row: tuple[bytes, bytes | None]) -> dict[str, str]:
    # The key is the delivery id (a derived id, not PHI).
    return {"delivery_id": row[0].decode(errors="replace")}


def _state_ref(state: DeliveryState) -> dict[str, str]:
    return {"delivery_id": state.job.id}


def due_keys(marks: Iterable[tuple[bytes, bytes]], partition: int, now_us: int
             ) -> tuple[list[bytes], int]:
    """From ``(key, mark)`` pairs of the ``deliveries-due`` table: the keys of
    ``partition`` whose mark's time has come (``<= now_us``, epoch microseconds), and how
    many of its other deliveries are pending (read from the marks, not the states)."""
    want = b"%d|" % partition
    keys: list[bytes] = []
    pending = 0
    for key, value in marks:
        if not value.startswith(want):
            continue
        # parse_mark's format, inlined: this loop runs over every mark on every tick.
        try:
            _, at, is_pending = value.split(b"|")
            now_due = bool(at) and int(at) <= now_us
        except ValueError:
            # Not a mark this worker can read: its state is read as if due, which
            # writes a good mark (or reports the state, should that fail too).
            keys.append(key)
            continue
        if now_due:
            keys.append(key)
        elif is_pending == b"1":
            pending += 1
    return keys, pending
