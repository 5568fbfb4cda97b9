"""The care topology in memory: the same pure functions the agents run, without Kafka.

Powers ``hub decide`` (reproduce a journey offline), the pure-step benchmark, and
"what would the new rules have done to last month's caseloads?". Records move between
the two stages first in, first out; in Kafka they cross partitions, where only the
per-key order is guaranteed, and the rules depend on nothing more than that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from schemas import topics
from schemas.canonical import CanonicalEvent
from schemas.care import AssignmentOutput, TaskUpdate, TeamRequest, dump_output
from streams.care.assignment import TeamState
from streams.care.engine import (
    OUTPUT_TOPICS,
    CareContext,
    Emit,
    PatientInput,
    apply_patient,
    apply_team,
    tick_patient,
)
from streams.care.state import PatientState

_OUTPUTS = frozenset(OUTPUT_TOPICS.values())


class OfflineRun:
    """Patients and teams in dictionaries; :attr:`outputs` collects every public output."""

    def __init__(self, ctx: CareContext) -> None:
        self.ctx = ctx
        self.patients: dict[str, PatientState] = {}
        self.teams: dict[str, TeamState] = {}
        self.outputs: list[Any] = []
        self.clock: datetime | None = None

    def event(self, ev: CanonicalEvent, *, tick: bool = True) -> list[Any]:
        """Apply one canonical event (after a timer pass at its time when ``tick``)."""
        start = len(self.outputs)
        if tick and (self.clock is None or ev.occurred_at > self.clock):
            self.tick(ev.occurred_at)
        self._run(deque([(topics.CARE_EVENTS.name, ev.patient.key, ev)]), ev.occurred_at)
        return self.outputs[start:]

    def task_update(self, update: TaskUpdate) -> list[Any]:
        start = len(self.outputs)
        self._run(deque([(topics.CARE_TASK_UPDATES.name, update.patient_key, update)]),
                  update.at)
        return self.outputs[start:]

    def tick(self, now: datetime) -> list[Any]:
        """The timer at ``now`` over every patient (escalations, closing episodes)."""
        start = len(self.outputs)
        self.clock = now if self.clock is None else max(self.clock, now)
        for key in sorted(self.patients):
            state, emits = tick_patient(self.patients[key], now=now, ctx=self.ctx)
            self.patients[key] = state
            self._run(self._route(emits), now)
        return self.outputs[start:]

    def run(self, events: Iterable[CanonicalEvent]) -> list[Any]:
        start = len(self.outputs)
        for ev in events:
            self.event(ev)
        return self.outputs[start:]

    def _route(self, emits: list[Emit]) -> deque[tuple[str, str, Any]]:
        queue: deque[tuple[str, str, Any]] = deque()
        for e in emits:
            if e.topic in _OUTPUTS:
                self.outputs.append(e.value)
            # care.assignments is public and also read back by the patient stage.
            if e.topic in (topics.CARE_ASSIGNMENTS.name, topics.CARE_ASSIGNMENT_REQUESTS.name,
                           topics.CARE_EPISODE_COMMANDS.name):
                queue.append((e.topic, e.key, e.value))
        return queue

    def _run(self, queue: deque[tuple[str, str, Any]], now: datetime) -> None:
        while queue:
            topic, key, msg = queue.popleft()
            if topic == topics.CARE_ASSIGNMENT_REQUESTS.name:
                assert isinstance(msg, TeamRequest)
                team, emits = apply_team(self.teams.get(key), msg, ctx=self.ctx)
                self.teams[key] = team
            else:
                patient_msg: PatientInput = msg
                if isinstance(msg, AssignmentOutput) and topic != topics.CARE_ASSIGNMENTS.name:
                    continue
                state, emits = apply_patient(self.patients.get(key), key, patient_msg, now=now,
                                             ctx=self.ctx)
                self.patients[key] = state
            queue.extend(self._route(emits))


def summary_line(output: Any, *, with_fhir: bool = False) -> dict[str, Any]:
    """The ``hub decide`` line of an output: its record, FHIR only when asked."""
    line = dump_output(output)
    if not with_fhir:
        line.pop("fhir", None)
        line.pop("flag_resources", None)
    return line
