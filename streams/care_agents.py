"""The care stages as faust agents: thin shells around :mod:`streams.care.engine`.

* ``episodes`` (table ``episodes``, keyed by patient) reads care.events,
  care.assignments, care.task-updates and care.episode-commands as one co-partitioned
  stream: every input of one patient on one partition, in order.
* ``caseloads`` (table ``caseloads``: the team's totals, keyed by team; table
  ``caseload-episodes``: one row per open episode, keyed by team and episode) reads
  care.assignment-requests: repartitioned by team, so a team's caseload is counted in one
  place. A decision reads and writes a few small records, however long the team's queue:
  a whole team in one record grew with every queued patient until it passed the broker's
  record size limit. Totals stored whole by older workers (``TeamState`` JSON) are split
  into rows on the team's first request.
* The roster comes from ``cfg.roster_feed``: the hub tails the compacted config.roster
  topic for every worker (a faust GlobalTable over it hung the worker's start-up, as
  faust's own docs warn), so a roster change applies without a restart.
* A timer asks each active partition for a tick (tables are only written from inside
  stream iteration, on the partition that owns the key). Beside each patient the table
  ``episodes-due`` keeps when the timer next has anything to do for them
  (:func:`streams.care.due.next_tick_at`) and their open and overdue task counts, so a
  tick reads only the states that are due; the first tick of a partition in a process
  reads them all once (states stored by older workers have no mark yet).

Order of one input's work, and why (at-least-once, effectively-once):
1. Apply the pure rules to the stored state.
2. Publish every emit and wait until the broker has them all.
3. Only then store the new state. A crash between 2 and 3 replays the input against the
   old state, which yields the same output ids again (downstream dedups); the opposite
   order could store a state whose outputs were never published.
Agent and table names are state identities: renaming one is a migration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import structlog
from faust.types import EventT

from schemas import topics as catalogue
from schemas.canonical import patient_ref
from schemas.care import TICK_KEY, TeamRequest
from schemas.errors import ErrorCode, MappingError
from streams.care.assignment import Caseload, CaseloadView, EpisodeLoad, TeamState, TeamTotals
from streams.care.config import CareConfig, parse_rules
from streams.care.due import next_tick_at, task_counts
from streams.care.engine import (
    CareContext,
    Emit,
    apply_patient,
    apply_team,
    decode_patient_input,
    tick_patient,
)
from streams.care.roster import Roster, parse_roster
from streams.care.state import PatientState
from streams.config import StreamsConfig
from streams.marks import epoch_us
from streams.raw import raw_schema, raw_table
from streams.rows import handle_rows, marked_elsewhere

log = structlog.stdlib.get_logger("streams.care")

EPISODES_AGENT = "episodes"
EPISODES_TABLE = "episodes"
CASELOADS_AGENT = "caseloads"
CASELOADS_TABLE = "caseloads"
CASELOAD_ROWS_TABLE = "caseload-episodes"
EPISODES_DUE_TABLE = "episodes-due"

DeadLetterFn = Callable[[EventT, str, MappingError], Awaitable[None]]


class CareFigures:
    """The care stages' figures, in the shape of ``hub.metrics.FiguresProvider``.

    Counts, roster ids and codes only (no PHI). The agents below write the attributes;
    ``figures()`` is read at every scrape, so it only copies. Per-stage rates, dead
    letters by code and end-to-end latency are observed by the hub for every agent
    alike (``hub.observe.StreamsSensor``, a faust sensor), so they are not kept here.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, int] = {}
        self._open_tasks: dict[int, int] = {}
        self._overdue_tasks: dict[int, int] = {}
        self.caseload_points: dict[tuple[str, str], int] = {}
        self.caseload_caps: dict[tuple[str, str], int] = {}
        self.tick_row_failures = 0
        """Stored patients a tick could not handle (left as stored; the pass went on)."""

    # The timer's tick counts one partition's tasks at a time and assigns the result
    # here, from inside the agent's iteration over that partition's tick event: the
    # current event tells which partition the count is for, and the figure is the
    # sum over partitions. Before any tick the gauges are absent ("no data yet"),
    # not a reassuring 0.
    @staticmethod
    def _partition() -> int:
        event = faust.current_event()
        return int(event.message.partition) if event is not None else -1

    @property
    def open_tasks(self) -> int:
        return sum(self._open_tasks.values())

    @open_tasks.setter
    def open_tasks(self, value: int) -> None:
        self._open_tasks[self._partition()] = value

    @property
    def overdue_tasks(self) -> int:
        return sum(self._overdue_tasks.values())

    @overdue_tasks.setter
    def overdue_tasks(self, value: int) -> None:
        self._overdue_tasks[self._partition()] = value

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outputs": dict(self.outputs)}
        if self._open_tasks or self.tick_row_failures:  # once the timer has run
            out["stages"] = {EPISODES_AGENT: {"timer_row_failures": self.tick_row_failures}}
        if self._open_tasks:
            out["tasks_open"] = self.open_tasks
        if self._overdue_tasks:
            out["tasks_overdue"] = self.overdue_tasks
        if self.caseload_caps or self.caseload_points:
            keys = sorted(set(self.caseload_points) | set(self.caseload_caps))
            out["caseloads"] = [
                {"team": team, "manager": manager,
                 "points": self.caseload_points.get((team, manager), 0),
                 "cap_points": self.caseload_caps.get((team, manager))}
                for team, manager in keys]
        return out


def add_care_agents(app: faust.App, cfg: StreamsConfig, dead_letter: DeadLetterFn
                    ) -> CareFigures:
    figures = CareFigures()
    partitions = cfg.partitions or catalogue.CARE_EVENTS.partitions
    config: CareConfig = parse_rules(cfg.rules_yaml) if cfg.rules_yaml else CareConfig()
    config = config.model_copy(update={"episode": config.episode.model_copy(update={
        "default_timezone": config.episode.default_timezone
        if "default_timezone" in config.episode.model_fields_set else cfg.default_timezone,
        "facility_timezones": {**cfg.feed_timezones, **config.episode.facility_timezones},
    })})
    file_roster = parse_roster(cfg.roster_yaml) if cfg.roster_yaml else Roster()
    names = {cfg.topic(t.name): t.name for t in (
        catalogue.CARE_EVENTS, catalogue.CARE_ASSIGNMENTS, catalogue.CARE_TASK_UPDATES,
        catalogue.CARE_EPISODE_COMMANDS)}
    patient_topics = app.topic(*names, schema=raw_schema(), partitions=partitions,
                               internal=False)
    requests_topic = app.topic(cfg.topic(catalogue.CARE_ASSIGNMENT_REQUESTS.name),
                               schema=raw_schema(), partitions=partitions, internal=False)
    commands_name = cfg.topic(catalogue.CARE_EPISODE_COMMANDS.name)
    # key_type/value_type pick the changelog and store codecs (schema= only covers the
    # source stream): without them faust falls back to JSON, and a restarted worker fails
    # to recover the changelog ("expected a JSON value") and never becomes ready.
    episodes = raw_table(app, EPISODES_TABLE, partitions=partitions)
    caseloads = raw_table(app, CASELOADS_TABLE, partitions=partitions)
    caseload_rows = raw_table(app, CASELOAD_ROWS_TABLE, partitions=partitions)
    due = raw_table(app, EPISODES_DUE_TABLE, partitions=partitions)
    swept: set[int] = set()
    """Partitions this process has ticked over in full once (see ``tick``)."""
    cache: dict[str, Any] = {"raw": None, "ctx": CareContext(config=config, roster=file_roster)}

    def context() -> CareContext:
        raw = cfg.roster_feed.latest() if cfg.roster_feed is not None else None
        if raw and raw != cache["raw"]:
            try:
                roster = Roster.from_json(raw)
            except Exception as exc:  # a bad pushed roster must not stop care decisions
                log.error("roster_rejected", exc_type=type(exc).__name__)
            else:
                cache["ctx"] = CareContext(config=config, roster=roster)
                log.info("roster_applied", teams=len(roster.teams),
                         managers=len(roster.managers))
            cache["raw"] = raw
        ctx: CareContext = cache["ctx"]
        return ctx

    async def publish(emits: list[Emit]) -> None:
        pending = []
        for e in emits:
            pending.append(await app.producer.send(
                cfg.topic(e.topic), e.key.encode(), e.value_bytes(), None, None, None))
            if e.topic in _COUNTED:
                kind = _COUNTED[e.topic]
                figures.outputs[kind] = figures.outputs.get(kind, 0) + 1
        if pending:
            await asyncio.gather(*pending)

    def mark_due(key: Any, state: PatientState, partition: int, ctx: CareContext) -> None:
        value = due_value(state, partition, ctx.config)
        if due.get(key) != value:
            due[key] = value

    async def tick_one(key: Any, state: PatientState, partition: int, now: datetime,
                       ctx: CareContext) -> tuple[int, int]:
        """Tick one patient; their (open, overdue) task counts afterwards."""
        # Not handed over: whether anything changed is a comparison with the old state.
        new, emits = tick_patient(state, now=now, ctx=ctx)
        _log_merge_wait(_waits_expired(state), new, key, partition, None)
        await publish(emits)
        if new != state:
            episodes[key] = new.model_dump_json(exclude_none=True).encode()
        mark_due(key, new, partition, ctx)
        return task_counts(new)

    async def tick(partition: int) -> None:
        now = datetime.now(UTC)
        ctx = context()
        counts = [0, 0]  # open, overdue tasks of the partition
        ref = _patient_ref_fields

        async def tick_counted(key: Any, state: PatientState) -> None:
            opened_n, escalated_n = await tick_one(key, state, partition, now, ctx)
            counts[0], counts[1] = counts[0] + opened_n, counts[1] + escalated_n

        if partition not in swept:
            # Once per partition per process: every stored state, which also writes the
            # due marks a state stored by an older worker lacks. Afterwards only the
            # patients whose due time has come are read.
            read = 0

            async def sweep_one(row: tuple[Any, Any]) -> None:
                nonlocal read
                key, raw = row
                if not marked_elsewhere(due.get(key), partition):
                    state = PatientState.model_validate_json(raw)
                    if state.partition == partition:
                        read += 1
                        await tick_counted(key, state)

            failed = await handle_rows(list(episodes.items()), sweep_one,
                                       event="care_tick_row_failed", partition=partition,
                                       ref=ref)
            # Done even past a failing row: it stays as stored, and sweeping again on
            # every tick would only fail on it again.
            swept.add(partition)
            log.info("care_tick_swept", partition=partition, records=read, failed=failed)
        else:
            now_us = epoch_us(now)

            async def due_one(row: tuple[Any, Any]) -> None:
                key, mark = row
                if not mark.startswith(b"%d|" % partition):
                    return
                try:
                    _, at, opened, escalated = mark.split(b"|")
                    stored = int(opened), int(escalated)
                    now_due = bool(at) and int(at) <= now_us
                except ValueError:
                    # Not a mark this worker can read: the state is ticked as if due,
                    # which writes a good mark (or reports the state, should it fail).
                    stored, now_due = (0, 0), True
                if now_due:
                    raw = episodes.get(key)
                    if raw:
                        await tick_counted(key, PatientState.model_validate_json(raw))
                        return
                counts[0], counts[1] = counts[0] + stored[0], counts[1] + stored[1]

            failed = await handle_rows(list(due.items()), due_one,
                                       event="care_tick_row_failed", partition=partition,
                                       ref=ref)
        figures.tick_row_failures += failed
        figures.open_tasks, figures.overdue_tasks = counts[0], counts[1]

    async def on_patient_input(event: EventT) -> None:
        msg = event.message
        if event.key == TICK_KEY:
            await tick(msg.partition)
            return
        topic = names.get(msg.topic, msg.topic)
        inp = decode_patient_input(topic, event.value)
        key = (event.key or b"").decode()
        raw = episodes.get(event.key)
        state = PatientState.model_validate_json(raw) if raw else None
        waits_expired = _waits_expired(state)
        ctx = context()
        # Handed over (changed in place, engine module docstring): decoded for this record
        # alone, while the store keeps the old state's bytes until the new one is written.
        new, emits = apply_patient(state, key, inp, now=datetime.now(UTC), ctx=ctx,
                                   in_place=True)
        _log_merge_wait(waits_expired, new, event.key, msg.partition, msg.offset)
        new.partition = msg.partition
        await publish(emits)
        episodes[event.key] = new.model_dump_json(exclude_none=True).encode()
        mark_due(event.key, new, msg.partition, ctx)

    async def on_team_request(event: EventT) -> None:
        req = TeamRequest.model_validate_json(event.value)
        team, ctx = req.team, context()
        key = event.key or b""
        new, emits = apply_team(load_caseload(caseloads, caseload_rows, key, team), req,
                                ctx=ctx)
        assert isinstance(new, CaseloadView)
        await publish(emits)
        store_caseload(caseloads, caseload_rows, key, new)
        _team_figures(figures, new, ctx.roster)

    async def guarded(event: EventT, stage: str, handler: Callable[[EventT], Awaitable[None]]
                      ) -> None:
        # faust acks an event whose agent raised and never processes it again: every
        # failure becomes a dead letter with its coordinates instead.
        try:
            await handler(event)
        except Exception as exc:
            code = ErrorCode.INVALID_RESOURCE if is_bad_input(exc) else ErrorCode.INTERNAL_ERROR
            log.error("care_input_failed", stage=stage, exc_type=type(exc).__name__,
                      topic=event.message.topic, partition=event.message.partition,
                      offset=event.message.offset)
            try:
                await dead_letter(event, stage, MappingError(
                    code, f"{type(exc).__name__} in the {stage} stage"))
            except Exception as exc2:
                log.error("dead_letter_failed", exc_type=type(exc2).__name__,
                          topic=event.message.topic, partition=event.message.partition,
                          offset=event.message.offset)

    @app.agent(patient_topics, name=EPISODES_AGENT)
    async def episodes_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(event, "episodes", on_patient_input)

    @app.agent(requests_topic, name=CASELOADS_AGENT)
    async def caseloads_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(event, "caseloads", on_team_request)

    @app.timer(interval=cfg.tick_interval_s)
    async def care_timer() -> None:
        active = {tp.partition for tp in app.assignor.assigned_actives()
                  if tp.topic == commands_name}
        at = orjson.dumps({"op": "tick", "at": datetime.now(UTC).isoformat()})
        for partition in sorted(active):
            await app.producer.send(commands_name, TICK_KEY, at, partition, None, None)

    return figures


_COUNTED = {catalogue.CARE_FLAGS.name: "flag", catalogue.CARE_ASSIGNMENTS.name: "assignment",
            catalogue.CARE_TASKS.name: "task", catalogue.CARE_ESCALATIONS.name: "escalation",
            catalogue.CARE_NOTIFICATIONS.name: "notification"}


def due_value(state: PatientState, partition: int, config: CareConfig) -> bytes:
    """The ``episodes-due`` mark of a patient: ``partition|due|open|overdue`` with the
    next tick time in microseconds since the epoch (empty: never due) and the open and
    escalated task counts the timer reports without reading the state."""
    at = next_tick_at(state, config)
    opened, escalated = task_counts(state)
    return (f"{partition}|{epoch_us(at) if at is not None else ''}|{opened}|{escalated}"
            .encode())


def _row_key(team: str, episode_key: str) -> bytes:
    return f"{team}\x1f{episode_key}".encode()


def load_caseload(totals: MutableMapping[bytes, Any], rows: MutableMapping[bytes, Any],
                  key: bytes, team: str) -> CaseloadView:
    """The team's caseload over its stored rows (``caseloads`` and ``caseload-episodes``
    tables, or dicts in tests). Rows are read only when a decision asks for one.

    Totals stored whole by an older worker (``TeamState`` JSON) are split here: rows
    first, then the totals, so a crash in between splits them again with equal rows.
    """
    def lookup(episode_key: str) -> EpisodeLoad | None:
        row = rows.get(_row_key(team, episode_key))
        return EpisodeLoad.model_validate_json(row) if row else None

    raw = totals.get(key)
    if not raw:
        return CaseloadView(TeamTotals(team_id=team), lookup)
    stored = orjson.loads(raw)
    if "episodes" in stored:
        whole = TeamState.model_validate(stored)
        for episode_key, row in whole.episodes.items():
            rows[_row_key(team, episode_key)] = row.model_dump_json().encode()
        totals[key] = whole.totals.model_dump_json().encode()
        log.info("caseload_split", team=team, records=len(whole.episodes))
        return CaseloadView(whole.totals, lookup)
    return CaseloadView(TeamTotals.model_validate(stored), lookup)


def store_caseload(totals: MutableMapping[bytes, Any], rows: MutableMapping[bytes, Any],
                   key: bytes, view: CaseloadView) -> None:
    """Write a decision's rows (a released episode's row is deleted), then the totals."""
    team = view.team_id
    for episode_key, row in view.changes.items():
        k = _row_key(team, episode_key)
        if row is not None:
            rows[k] = row.model_dump_json().encode()
        elif rows.get(k) is not None:
            del rows[k]
    totals[key] = view.totals.model_dump_json().encode()


def _waits_expired(state: PatientState | None) -> int:
    return (state.merge_waits_expired or 0) if state is not None else 0


def _patient_ref_fields(row: tuple[Any, Any]) -> dict[str, str]:
    key = row[0]
    return {"patient_ref": patient_ref(
        key.decode(errors="replace") if isinstance(key, bytes) else str(key))}


def _log_merge_wait(before: int, new: PatientState, key: bytes | str | None,
                    partition: int, offset: int | None) -> None:
    """A surviving key that gave up waiting for a merge's history decided without it
    (``before``: the state's ``merge_waits_expired`` before the step): worth a warning
    (the count is kept in the state)."""
    if (new.merge_waits_expired or 0) > before:
        raw = key.decode() if isinstance(key, bytes) else (key or "")
        log.warning("merge_wait_expired", patient_ref=patient_ref(raw), partition=partition,
                    offset=offset, waits_expired=new.merge_waits_expired)


def is_bad_input(exc: Exception) -> bool:
    """Did the input itself fail to decode or validate (dead-lettered as
    INVALID_RESOURCE), rather than the stage failing on a good input (INTERNAL_ERROR)?"""
    return type(exc).__name__ in ("ValidationError", "JSONDecodeError", "UnicodeDecodeError")


def _team_figures(figures: CareFigures, state: Caseload, roster: Roster) -> None:
    for m in roster.members(state.team_id):
        figures.caseload_points[(state.team_id, m.id)] = state.load(m.id)
        figures.caseload_caps[(state.team_id, m.id)] = m.cap_points
