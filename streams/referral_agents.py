"""The referrals stage as a faust agent: a thin shell around :mod:`streams.referrals.engine`.

``referrals`` (table ``referrals``, keyed by patient) reads care.events, care.flags,
care.assignments, config.consent and referrals.updates as one co-partitioned stream
(all keyed by patient key, same partition count): one patient's inputs in order on one
partition. The agency directory comes from ``cfg.agencies_feed`` (the hub tails the
compacted config.agencies topic and creates each agency's ``referrals.<id>`` topic
before the directory naming it reaches us), the roster from ``cfg.roster_feed``.

Order of one input's work, as in :mod:`streams.care_agents`: apply the pure rules;
publish every emit and wait for the broker; only then store the new state (a crash in
between replays the input against the old state and re-sends the same ids).
Agent and table names are state identities: renaming one is a migration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from faust.types import EventT

from schemas import topics as catalogue
from schemas.canonical import patient_ref
from schemas.errors import ErrorCode, MappingError
from schemas.referrals import ReferralCommand, ReferralOutput
from streams.care.config import CareConfig, parse_rules
from streams.care.engine import Emit
from streams.care.roster import Roster, parse_roster
from streams.care_agents import DeadLetterFn, is_bad_input
from streams.config import StreamsConfig
from streams.raw import raw_schema, raw_table
from streams.referrals.directory import Directory, parse_directory
from streams.referrals.engine import ReferralContext, apply_referral, decode_referral_input
from streams.referrals.state import ReferralPatientState

log = structlog.stdlib.get_logger("streams.referrals")

REFERRALS_AGENT = "referrals"
REFERRALS_TABLE = "referrals"


class ReferralFigures:
    """In-process figures (counts only, no PHI): ``referrals`` = {status: count} of the
    current status of every agency referral this worker holds, plus totals."""

    def __init__(self) -> None:
        self.inputs = 0
        self.failures = 0
        self.published = 0
        self.statuses: dict[str, dict[str, str]] = {}
        """patient ref -> {task id: status} (for the current-status counts)."""
        self.ignored_updates: dict[str, int] = {}
        self.no_agency = 0

    def figures(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for tasks in self.statuses.values():
            for status in tasks.values():
                counts[status] = counts.get(status, 0) + 1
        return {"referrals": dict(sorted(counts.items())),
                "referral_inputs": self.inputs, "referral_failures": self.failures,
                "referral_records_published": self.published,
                "referral_updates_ignored": dict(self.ignored_updates),
                "referrals_no_agency": self.no_agency}

    def observe(self, state: ReferralPatientState, previous: ReferralPatientState | None,
                emits: list[Emit]) -> None:
        self.statuses[patient_ref(state.key)] = {
            t.task_id: t.status for r in state.referrals.values() for t in r.tasks}
        before = previous.ignored_updates if previous is not None else {}
        for reason, count in state.ignored_updates.items():
            delta = count - before.get(reason, 0)
            if delta > 0:
                self.ignored_updates[reason] = self.ignored_updates.get(reason, 0) + delta
        for e in emits:
            if isinstance(e.value, ReferralOutput):
                self.published += 1
            elif getattr(e.value, "rule", "") == "referral.no_agency":
                self.no_agency += 1  # the escalation: one per need left without agency


class _Latest:
    """Parse a config feed's latest bytes once per change; keep the last good value."""

    def __init__(self, name: str, parse: Callable[[bytes], Any], initial: Any) -> None:
        self.name, self.parse, self.value, self.raw = name, parse, initial, None

    def get(self, feed: Any) -> Any:
        raw = feed.latest() if feed is not None else None
        if raw and raw != self.raw:
            try:
                self.value = self.parse(raw)
            except Exception as exc:  # a bad pushed file must not stop referrals
                log.error(f"{self.name}_rejected", exc_type=type(exc).__name__)
            else:
                log.info(f"{self.name}_applied")
            self.raw = raw
        return self.value


def add_referral_agents(app: faust.App, cfg: StreamsConfig, dead_letter: DeadLetterFn
                        ) -> ReferralFigures:
    figures = ReferralFigures()
    partitions = cfg.partitions or catalogue.CARE_EVENTS.partitions
    care: CareConfig = parse_rules(cfg.rules_yaml) if cfg.rules_yaml else CareConfig()
    directory = _Latest("agencies", Directory.from_json,
                        parse_directory(cfg.agencies_yaml) if cfg.agencies_yaml
                        else Directory())
    roster = _Latest("referral_roster", Roster.from_json,
                     parse_roster(cfg.roster_yaml) if cfg.roster_yaml else Roster())
    names = {cfg.topic(t.name): t.name for t in (
        catalogue.CARE_EVENTS, catalogue.CARE_FLAGS, catalogue.CARE_ASSIGNMENTS,
        catalogue.CONFIG_CONSENT, catalogue.REFERRALS_UPDATES)}
    inputs = app.topic(*names, schema=raw_schema(), partitions=partitions, internal=False)
    # key_type/value_type choose the changelog and store codecs (schema= only covers the
    # stream); without them faust uses JSON and recovery after a restart fails.
    table = raw_table(app, REFERRALS_TABLE, partitions=partitions)

    def context() -> ReferralContext:
        # The merge wait is the care stage's: one setting for how long a survivor waits.
        return ReferralContext(config=care.referrals, directory=directory.get(cfg.agencies_feed),
                               roster=roster.get(cfg.roster_feed),
                               merge_wait_s=care.episode.merge_wait_seconds,
                               merge_buffer_max=care.episode.merge_buffer_max)

    async def publish(emits: list[Emit]) -> None:
        pending = [await app.producer.send(cfg.topic(e.topic), e.key.encode(), e.value_bytes(),
                                           None, None, None) for e in emits]
        if pending:
            await asyncio.gather(*pending)

    async def on_input(event: EventT) -> None:
        msg = event.message
        figures.inputs += 1
        inp = decode_referral_input(names.get(msg.topic, msg.topic), event.value)
        key = (event.key or b"").decode()
        raw = table.get(event.key)
        state = ReferralPatientState.model_validate_json(raw) if raw else None
        new, emits = apply_referral(state, key, inp, now=datetime.now(UTC), ctx=context())
        new.partition = msg.partition
        await publish(emits)
        table[event.key] = new.model_dump_json(exclude_none=True).encode()
        figures.observe(new, state, emits)
        for e in emits:
            if isinstance(e.value, ReferralOutput):
                log.info("referral_published", rule=e.value.rule, status=e.value.status,
                         need=e.value.need, agency_id=e.value.agency_id,
                         attempt=e.value.attempt, version=e.value.version,
                         agency_version=e.value.agency_copy.version,
                         patient_ref=patient_ref(key), topic=msg.topic,
                         partition=msg.partition, offset=msg.offset)
            elif isinstance(e.value, ReferralCommand):
                log.info("referral_merge_command_sent", op=e.value.op,
                         patient_ref=patient_ref(key), target_ref=patient_ref(e.key),
                         topic=msg.topic, partition=msg.partition, offset=msg.offset)
        if new.merge_waits_expired > (state.merge_waits_expired if state else 0):
            log.warning("referral_merge_wait_expired", patient_ref=patient_ref(key),
                        partition=msg.partition, offset=msg.offset)

    @app.agent(inputs, name=REFERRALS_AGENT)
    async def referrals_agent(stream: Any) -> None:
        async for event in stream.events():
            # faust acks an event whose agent raised and never processes it again: every
            # failure becomes a dead letter with its coordinates instead.
            try:
                await on_input(event)
            except Exception as exc:
                figures.failures += 1
                code = ErrorCode.INVALID_RESOURCE if is_bad_input(exc) \
                    else ErrorCode.INTERNAL_ERROR
                log.error("referral_input_failed", stage="referrals",
                          exc_type=type(exc).__name__, topic=event.message.topic,
                          partition=event.message.partition, offset=event.message.offset)
                try:
                    await dead_letter(event, "referrals", MappingError(
                        code, f"{type(exc).__name__} in the referrals stage"))
                except Exception as exc2:
                    log.error("dead_letter_failed", exc_type=type(exc2).__name__,
                              topic=event.message.topic, partition=event.message.partition,
                              offset=event.message.offset)

    return figures
