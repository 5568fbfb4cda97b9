"""The care topology in memory: the same pure functions the agents run, without Kafka.

Powers ``hub decide`` (reproduce a journey offline), the pure-step benchmark, and
"what would the new rules have done to last month's caseloads?". Records move between
the two stages first in, first out; in Kafka they cross partitions, where only the
per-key order is guaranteed, and the rules depend on nothing more than that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from schemas import topics
from schemas.canonical import CanonicalEvent
from schemas.care import AssignmentOutput, FlagOutput, TaskUpdate, TeamRequest, dump_output
from schemas.referrals import ReferralCommand, ReferralOutput
from streams.care.assignment import CaseloadView, EpisodeLoad, TeamState, TeamTotals
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
from streams.referrals.engine import ReferralContext, ReferralInput, apply_referral
from streams.referrals.state import ReferralPatientState

_OUTPUTS = frozenset(OUTPUT_TOPICS.values())
_REFERRAL_OUTPUTS = frozenset({topics.CARE_REFERRALS.name, topics.CARE_ESCALATIONS.name})
_EVENTS = topics.CARE_EVENTS.name
_FLAGS = topics.CARE_FLAGS.name
_ASSIGNMENTS = topics.CARE_ASSIGNMENTS.name
_REQUESTS = topics.CARE_ASSIGNMENT_REQUESTS.name
_REFERRAL_COMMANDS = topics.REFERRALS_UPDATES.name
"""The referrals stage's merge commands (handover, absorb, forward) go back to it here."""
# care.assignments is public and also read back by the patient stage.
_READ_BACK = frozenset({_ASSIGNMENTS, _REQUESTS, topics.CARE_EPISODE_COMMANDS.name})


class OfflineRun:
    """Patients and teams in dictionaries; :attr:`outputs` collects every public output.

    With ``referrals`` (a :class:`streams.referrals.engine.ReferralContext`), the
    referrals stage runs too: it reads the same events plus the care stages' flags and
    assignments, and its ReferralOutputs (and no-agency escalations) join the outputs.
    Its merge commands (on referrals.updates) go back to it, keyed by the key they are
    for, as through the topic: a merge moves referral state to the surviving key. A
    context without a merge wait gets the worker's (the care stage's
    ``episode.merge_wait_seconds`` and ``merge_buffer_max``), so the survivor holds its
    inputs until the prior key's referrals are in, as it does in the worker.
    """

    def __init__(self, ctx: CareContext, referrals: ReferralContext | None = None, *,
                 in_place: bool = True) -> None:
        self.ctx = ctx
        self.in_place = in_place
        """Hand each patient's state over to the step, which changes it in place
        (:mod:`streams.care.engine`): a state read from :attr:`patients` is then the
        current one, not a snapshot. False keeps every state returned unchanged."""
        if referrals is not None and referrals.merge_wait_s is None:
            episode = ctx.config.episode
            referrals = replace(referrals, merge_wait_s=episode.merge_wait_seconds,
                                merge_buffer_max=episode.merge_buffer_max)
        self.referral_ctx = referrals
        self.referral_states: dict[str, ReferralPatientState] = {}
        self.patients: dict[str, PatientState] = {}
        self.teams: dict[str, CaseloadView] = {}
        """Team id -> its caseload: totals over rows kept in :attr:`team_rows`."""
        self.team_rows: dict[str, dict[str, EpisodeLoad]] = {}
        self.outputs: list[Any] = []
        self.clock: datetime | None = None

    def load_team(self, state: TeamState) -> None:
        """Hold a team's caseload given as one value (a stored state of older workers)."""
        rows = self.team_rows[state.team_id] = dict(state.episodes)
        self.teams[state.team_id] = CaseloadView(state.totals, rows.get)

    def _team(self, team_id: str) -> CaseloadView:
        found = self.teams.get(team_id)
        if found is None:
            rows = self.team_rows[team_id] = {}
            found = self.teams[team_id] = CaseloadView(TeamTotals(team_id=team_id), rows.get)
        return found

    def event(self, ev: CanonicalEvent, *, tick: bool = True) -> list[Any]:
        """Apply one canonical event (after a timer pass at its time when ``tick``)."""
        start = len(self.outputs)
        if tick and (self.clock is None or ev.occurred_at > self.clock):
            self.tick(ev.occurred_at)
        self._run(deque([(_EVENTS, ev.patient.key, ev)]), ev.occurred_at)
        return self.outputs[start:]

    def referral_input(self, key: str, msg: ReferralInput, now: datetime) -> list[Any]:
        """Apply one input to the referrals stage (consent, agency updates, ...), and the
        merge commands it leads to."""
        start = len(self.outputs)
        queue: deque[tuple[str, str, Any]] = deque()
        self._referral(key, msg, now, queue)
        self._run(queue, now)
        return self.outputs[start:]

    def _referral(self, key: str, msg: ReferralInput, now: datetime,
                  queue: deque[tuple[str, str, Any]]) -> None:
        if self.referral_ctx is None:
            return
        state, emits = apply_referral(self.referral_states.get(key), key, msg, now=now,
                                      ctx=self.referral_ctx)
        self.referral_states[key] = state
        for e in emits:
            if e.topic in _REFERRAL_OUTPUTS:
                self.outputs.append(e.value)
            elif e.topic == _REFERRAL_COMMANDS and isinstance(e.value, ReferralCommand):
                queue.append(e)

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
            state, emits = tick_patient(self.patients[key], now=now, ctx=self.ctx,
                                        in_place=self.in_place)
            self.patients[key] = state
            self._run(self._route(emits), now)
        return self.outputs[start:]

    def run(self, events: Iterable[CanonicalEvent]) -> list[Any]:
        start = len(self.outputs)
        for ev in events:
            self.event(ev)
        return self.outputs[start:]

    def _route(self, emits: list[Emit], queue: deque[tuple[str, str, Any]] | None = None
               ) -> deque[tuple[str, str, Any]]:
        """Collect the public outputs of ``emits``; queue what a stage reads back."""
        if queue is None:
            queue = deque()
        outputs = self.outputs
        for e in emits:
            topic, _, value = e  # an Emit is a (topic, key, value) tuple
            if topic in _OUTPUTS:
                outputs.append(value)
            if topic == _FLAGS:
                if isinstance(value, FlagOutput):
                    queue.append(e)
            elif topic in _READ_BACK:
                queue.append(e)
        return queue

    def _run(self, queue: deque[tuple[str, str, Any]], now: datetime) -> None:
        referrals = self.referral_ctx is not None
        while queue:
            topic, key, msg = queue.popleft()
            if topic == _FLAGS:
                assert isinstance(msg, FlagOutput)
                if referrals:
                    self._referral(key, msg, now, queue)
                continue
            if topic == _REFERRAL_COMMANDS:
                self._referral(key, msg, now, queue)
                continue
            if topic == _REQUESTS:
                assert isinstance(msg, TeamRequest)
                # As the worker stores it: the decision's rows, then the team's totals.
                team, emits = apply_team(self._team(key), msg, ctx=self.ctx)
                assert isinstance(team, CaseloadView)
                if team.changes:
                    rows = self.team_rows[key]
                    for episode_key, row in team.changes.items():
                        if row is None:
                            rows.pop(episode_key, None)
                        else:
                            rows[episode_key] = row
                    # Stored: the view now reads them through its lookup (rows.get, from
                    # _team or load_team, passed on by with_episode). Its changes dict is
                    # its own (with_episode builds one per view): emptied in place rather
                    # than a new view built per decision.
                    team.changes.clear()
                self.teams[key] = team
            else:
                if referrals and (topic == _EVENTS or (
                        topic == _ASSIGNMENTS and isinstance(msg, AssignmentOutput))):
                    # The referrals stage reads care.events and care.assignments too
                    # (before the patient stage, as their own consumer would).
                    self._referral(key, msg, now, queue)
                patient_msg: PatientInput = msg
                if isinstance(msg, AssignmentOutput) and topic != _ASSIGNMENTS:
                    continue
                state, emits = apply_patient(self.patients.get(key), key, patient_msg, now=now,
                                             ctx=self.ctx, in_place=self.in_place)
                self.patients[key] = state
            self._route(emits, queue)


def summary_line(output: Any, *, with_fhir: bool = False) -> dict[str, Any]:
    """The ``hub decide`` line of an output: its record, FHIR only when asked."""
    line = dump_output(output)
    if isinstance(output, ReferralOutput) and not with_fhir:
        # The agency copy holds the patient's name and address: shown only with --fhir.
        line.pop("agency_copy", None)
    if not with_fhir:
        line.pop("fhir", None)
        line.pop("flag_resources", None)
    return line
