"""The care decision engine: ``(state, input, now, context) -> (new_state, emits)``.

Two stages, each a pure function over its own keyed state, exactly as the streaming
topology runs them (and as ``hub decide`` replays them offline, :mod:`streams.care.offline`):

* :func:`apply_patient` — per patient key (the episodes table): canonical events,
  assignment results, task updates and merge commands. Publishes risk records, tasks,
  notifications and escalations, and asks the team stage for a case manager.
* :func:`apply_team` — per team id (the caseloads table): assigns within caps and shifts,
  releases caseload, and answers on ``care.assignments`` (keyed by patient again).

Nothing here reads a clock, the environment or Kafka. Inputs never mutate: the engine
copies on write (the patient record shallowly, then each episode and each task it
changes; a deep copy of every patient per input cost more than all the rules together),
so applying an input twice to the same state gives equal results, and the agents store
the new state only after the emits are delivered (a crash in between replays the input
against the old state and re-sends the same output ids). A returned state shares what
it did not change with the state passed in: both are read-only to callers.

A caller that hands its state over (``in_place=True``: it never reads that object again)
spares those copies, a tenth of the step: the step then changes the state it was given
and returns it. The worker decodes a fresh state from its store for every record (the
stored bytes stay the old state until the new one is written), and the offline run
replaces each state with the one returned, so both hand theirs over.

Speed (``bench/bench_decide.py``): models the rules build from values they produced are
built unvalidated (:mod:`streams.care.trusted`; inputs, stored state and config are
validated where they come in); risk assessments are memoized per context, by input and
by the facts the rules read (:func:`_flag`).

Merges: the surviving key holds its inputs back until the prior key's history arrives
(:class:`streams.care.state.MergeWait`), so nothing is decided without it.

Output ids derive from the cause (event id, task id) and the rule; ``decided_at`` is the
cause's own time, so a replay reproduces every output byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from mappers import fhir_out
from schemas import topics
from schemas.canonical import CanonicalEvent, EncounterClass, EventKind, derive_id
from schemas.care import (
    AssignmentOutput,
    Charlson,
    EscalationOutput,
    Factor,
    FlagOutput,
    Lace,
    NotificationOutput,
    PatientCommand,
    Reason,
    TaskOutput,
    TaskUpdate,
    TeamRequest,
    dump_output,
)
from streams.care.assignment import (
    AssignmentRequest,
    Caseload,
    TeamState,
    assign,
    release,
    update_points,
)
from streams.care.charlson import CharlsonResult
from streams.care.config import CareConfig
from streams.care.episodes import (
    CREATES_EPISODE,
    EpisodeFacts,
    episode_facility,
    episode_key,
    episode_without_visit,
)
from streams.care.followup import DispositionClass, TaskKind, plan_followup
from streams.care.risk import (
    AssessmentParts,
    LaceResult,
    RiskFlag,
    RiskResult,
    assessment_parts,
    emergent_reason,
    risk_facts_of,
)
from streams.care.risk import Factor as RiskFactor
from streams.care.roster import Roster, teams_for
from streams.care.state import (
    OPEN_TASK_STATUSES,
    BufferedInput,
    EpisodeState,
    ManagerLink,
    MergeWait,
    PatientState,
    TaskState,
)
from streams.care.trusted import constructor, evolve, frozen_instance

# Unvalidated constructors for values the rules produced (streams.care.trusted).
_AssignmentOutput = constructor(AssignmentOutput)
_Charlson = constructor(Charlson)
_EpisodeState = constructor(EpisodeState)
_EscalationOutput = constructor(EscalationOutput)
_Factor = constructor(Factor)
_FlagOutput = constructor(FlagOutput)
_Lace = constructor(Lace)
_ManagerLink = constructor(ManagerLink)
_NotificationOutput = constructor(NotificationOutput)
_PatientState = constructor(PatientState)
_Reason = constructor(Reason)
_TaskOutput = constructor(TaskOutput)
_TaskState = constructor(TaskState)
_TeamRequest = constructor(TeamRequest)
_TeamState = constructor(TeamState)

TERMINAL_TASK_STATUSES = frozenset({"completed", "cancelled", "failed"})
ED_LEADS_TO_ADMISSION = timedelta(hours=24)
"""An ED visit this close before an admission at the same facility is the visit that led
to it: it makes the admission emergent and is not one of LACE's prior ED visits."""

PatientInput = CanonicalEvent | AssignmentOutput | TaskUpdate | PatientCommand

# Enum members and their values, looked up once (``Enum.value`` is a descriptor call).
_K = EventKind
_NOTIFIES_ADMIT = frozenset({_K.ADMIT, _K.REGISTER, _K.CLASS_CHANGE})
_CARE_CLASSES = ("inpatient", "observation")
_CLASS_VALUES: dict[EncounterClass, str] = {c: c.value for c in EncounterClass}
_TASK_KINDS: dict[TaskKind, str] = {k: k.value for k in TaskKind}
_NOTIFY_RULES = {code: f"notify.{code.removeprefix('notification-')}" for code in (
    "notification-admit", "notification-discharge", "notification-transfer")}
_ASSESSMENTS_MAX = 4096


@dataclass(frozen=True)
class CareContext:
    config: CareConfig
    roster: Roster
    render_fhir: bool = True
    """Attach FHIR renderings (off in the pure-step benchmark to measure the rules alone)."""
    assessments: dict[tuple[Any, ...], _Assessed] = field(
        default_factory=dict, init=False, compare=False, repr=False)
    """Memo of risk assessments under this context's rules, by stage and input, and by
    stage and facts (see :func:`_flag`)."""
    parts: dict[Any, tuple[Any, Any, Any, str]] = field(
        default_factory=dict, init=False, compare=False, repr=False)
    """Memo of flags' factors and reasons (see :func:`_part`)."""


class Emit(NamedTuple):
    """One record to publish: catalogue topic name (no prefix), key, value model."""

    # A named tuple: immutable like the frozen dataclass it was, and built several
    # times per event at a fraction of its cost.
    topic: str
    key: str
    value: BaseModel

    def value_bytes(self) -> bytes:
        if isinstance(self.value, FlagOutput | AssignmentOutput | TaskOutput |
                      EscalationOutput | NotificationOutput):
            return orjson.dumps(dump_output(self.value))
        return self.value.model_dump_json(exclude_none=True).encode()


OUTPUT_TOPICS: dict[str, str] = {
    "flag": topics.CARE_FLAGS.name,
    "assignment": topics.CARE_ASSIGNMENTS.name,
    "task": topics.CARE_TASKS.name,
    "escalation": topics.CARE_ESCALATIONS.name,
    "notification": topics.CARE_NOTIFICATIONS.name,
}


class _Emits(list[Emit]):
    """One step's emits, and the episodes the step has already copied (copy-on-write)."""

    __slots__ = ("in_place", "owned")

    def __init__(self, in_place: bool = False) -> None:  # list.__new__ made the list
        self.owned: dict[int, EpisodeState | TaskState] = {}
        """id -> copy (kept referenced, so an id is never reused within the step)."""
        self.in_place = in_place
        """The state was handed over (see the module docstring): everything in it is the
        step's own, nothing is copied."""


def _put(state: BaseModel, **fields: Any) -> None:
    """Set several fields of the step's own copy of a state at once: pydantic's
    __setattr__ for each, without its per-field dispatch (states validate nothing on
    assignment, and nothing reads their fields-set)."""
    state.__dict__.update(fields)


def _own(p: PatientState, ep: EpisodeState, out: _Emits) -> EpisodeState:
    """The step's own copy of ``ep`` (an episode of ``p``), made on first write. Call
    before changing an episode, and use the result (its tasks: :func:`_own_task`)."""
    if out.in_place or id(ep) in out.owned:
        return ep
    mine = evolve(ep, tasks=dict(ep.tasks))
    p.episodes[mine.key] = mine
    out.owned[id(mine)] = mine
    return mine


def _own_task(ep: EpisodeState, t: TaskState, out: _Emits) -> TaskState:
    """The step's own copy of task ``t`` of ``ep`` (the step's own episode), made on
    first write. Call before changing a task, and use the result."""
    if out.in_place or id(t) in out.owned:
        return t
    mine = evolve(t)
    ep.tasks[mine.task_id] = mine
    out.owned[id(mine)] = mine
    return mine


def _working_copy(state: PatientState) -> PatientState:
    # The containers changed in place get their own copies; episodes are copied later,
    # only when written (:func:`_own`); lists and dicts inside them are only ever replaced.
    return evolve(state, episodes=dict(state.episodes), ed_visits=dict(state.ed_visits),
                  discharges=dict(state.discharges))


def input_id(msg: PatientInput) -> str:
    """The id a patient remembers to drop a duplicate of ``msg``."""
    if isinstance(msg, CanonicalEvent):
        return msg.event_id
    if isinstance(msg, AssignmentOutput):
        return msg.id
    if isinstance(msg, TaskUpdate):
        return msg.id or derive_id("task-update", msg.task_id, msg.status, msg.at.isoformat(),
                                   msg.reason)
    return derive_id("command", msg.cause_event_id, msg.op, msg.target_key)


# --------------------------------------------------------------------------- patient stage


def apply_patient(state: PatientState | None, key: str, msg: PatientInput, *, now: datetime,
                  ctx: CareContext, in_place: bool = False) -> tuple[PatientState, list[Emit]]:
    """Apply one input to one patient's state. ``key`` is the record's key (patient key).

    ``now`` is the processing time: it is used for inputs without a time of their own
    (events carry theirs) and as the clock of a merge wait. ``in_place``: the caller
    hands ``state`` over and never reads it again (module docstring).
    """
    if state is None:
        state = _PatientState(key=key)
    elif not in_place:
        state = _working_copy(state)
    p = state
    out = _Emits(in_place)
    mid = input_id(msg)
    if mid in p.seen:
        return p, out  # a duplicate input: its outputs were published the first time
    p = _admit(p, msg, now, ctx, out)
    seen = p.seen
    keep = ctx.config.episode.remember_inputs
    p.__dict__["seen"] = [*seen, mid] if len(seen) < keep else [*seen[len(seen) - keep + 1:], mid]
    return p, out


def _admit(p: PatientState, msg: PatientInput, now: datetime, ctx: CareContext,
           out: _Emits) -> PatientState:
    """Apply ``msg`` now, or hold it back while a merge's history is on its way."""
    wait = p.merge_wait
    if wait is not None and not _is_awaited_absorb(wait, msg):
        cfg = ctx.config.episode
        if len(wait.buffered) < cfg.merge_buffer_max and \
                now < wait.since + timedelta(seconds=cfg.merge_wait_seconds):
            p.merge_wait = wait.model_copy(update={"buffered": [*wait.buffered, BufferedInput(
                topic=_topic_of(msg), value=msg.model_dump(mode="json"))]})
            return p
        p = _stop_waiting(p, now, ctx, out, expired=True)
    return _apply(p, msg, now, ctx, out)


def _is_awaited_absorb(wait: MergeWait, msg: PatientInput) -> bool:
    return isinstance(msg, PatientCommand) and msg.op == "absorb" and \
        msg.cause_event_id in wait.awaiting


def _stop_waiting(p: PatientState, now: datetime, ctx: CareContext, out: _Emits, *,
                  expired: bool) -> PatientState:
    """End the merge wait and replay what it held, in order (a replayed merge may start
    a new wait, which holds the rest again)."""
    wait = p.merge_wait
    assert wait is not None
    p.merge_wait = None
    if expired:
        p.merge_waits_expired = (p.merge_waits_expired or 0) + 1
    for held in wait.buffered:
        p = _admit(p, decode_patient_input(held.topic, orjson.dumps(held.value)), now, ctx, out)
    return p


def _apply(p: PatientState, msg: PatientInput, now: datetime, ctx: CareContext,
           out: _Emits) -> PatientState:
    if p.merged_into and not isinstance(msg, PatientCommand):
        # This key was merged away: its inputs belong to the survivor, in order.
        out.append(Emit(topics.CARE_EPISODE_COMMANDS.name, p.merged_into, PatientCommand(
            op="forward", cause_event_id=input_id(msg), decided_at=_time_of(msg, now),
            target_key=p.merged_into, message={"topic": _topic_of(msg),
                                               "value": msg.model_dump(mode="json")})))
    elif isinstance(msg, CanonicalEvent):
        _on_event(p, msg, now, ctx, out)
    elif isinstance(msg, AssignmentOutput):
        _on_assignment(p, msg, ctx, out)
    elif isinstance(msg, TaskUpdate):
        _on_task_update(p, msg, input_id(msg), ctx, out)
    else:
        p = _on_command(p, msg, now, ctx, out)
    return p


def tick_patient(state: PatientState, *, now: datetime, ctx: CareContext,
                 in_place: bool = False) -> tuple[PatientState, list[Emit]]:
    """The timer's pass over one patient: overdue tasks escalate (once: the mark is in
    the state, so a restart does not escalate again), episodes past their follow-up
    period close and release caseload, old history and episodes over since before the
    ``history_days`` horizon (:func:`episode_over_at`) are forgotten, and a merge wait past
    its time stops waiting (its inputs are decided without the merged history).
    ``in_place`` as for :func:`apply_patient`."""
    p = state if in_place else _working_copy(state)
    out = _Emits(in_place)
    if p.merged_into:
        return p, out
    wait = p.merge_wait
    if wait is not None and now >= wait.since + timedelta(
            seconds=ctx.config.episode.merge_wait_seconds):
        p = _stop_waiting(p, now, ctx, out, expired=True)
    overdue_at = timedelta(hours=ctx.config.followup.escalate_after_hours)
    for ep in list(p.episodes.values()):
        for t in list(ep.tasks.values()):
            if t.status in OPEN_TASK_STATUSES and not t.escalated and \
                    now >= t.due + overdue_at:
                ep = _own(p, ep, out)
                t = _own_task(ep, t, out)
                t.escalated = True
                _emit(out, _EscalationOutput(
                    id=derive_id(t.task_id, "task.overdue"), cause_event_id=t.cause_event_id,
                    rule="task.overdue", patient_key=p.key, encounter_key=ep.key,
                    facility=ep.facility, decided_at=now, reason="task_overdue", team=ep.team,
                    supervisor=ep.supervisor, task_id=t.task_id, task_kind=t.kind, due=t.due),
                    None, ctx)
        _maybe_close(p, ep, now, ctx, out)
    horizon = now - timedelta(days=ctx.config.episode.history_days)
    p.ed_visits = {k: v for k, v in p.ed_visits.items() if v >= horizon}
    p.discharges = {k: v for k, v in p.discharges.items() if v >= horizon}
    if any((at := episode_over_at(ep)) is not None and at < horizon
           for ep in p.episodes.values()):
        # Without this a frequent visitor's record grows with every visit, and every
        # record of theirs is decoded and re-encoded whole. Nothing reads an episode that
        # is over once its history is past the horizon: news without a visit number picks
        # among episodes still going (streams.care.episodes), and late news with one is
        # taken as a new episode (a cancel, task update or assignment about it: nothing).
        p.episodes = {k: ep for k, ep in p.episodes.items()
                      if (at := episode_over_at(ep)) is None or at >= horizon}
    return p, out


def episode_over_at(ep: EpisodeState) -> datetime | None:
    """The last time of an episode that is over (closed or cancelled, every task
    finished), from which the timer counts ``history_days`` to forget it; None while it
    is not over, or names no time at all (kept: nothing says how old it is).

    The latest of ``closed_at``, ``discharge_at`` and ``admit_at``, not the first set:
    a cancel stores no time of its own (its episode's admit or discharge is the latest
    known), a closure by a task update takes the update's time, which a sender's clock
    may put before the discharge, and late news about an episode that is over still
    moves its admit and discharge times (``_on_event``: "state only"). An episode closed
    by the timer with a task still open (the follow-up period ran out) is kept: that
    task is still reported open and may yet be updated.
    """
    if ep.status not in ("closed", "cancelled"):
        return None
    for t in ep.tasks.values():
        if t.status not in TERMINAL_TASK_STATUSES:
            return None
    times = [at for at in (ep.closed_at, ep.discharge_at, ep.admit_at) if at is not None]
    return max(times) if times else None


def _on_event(p: PatientState, ev: CanonicalEvent, now: datetime, ctx: CareContext,
              out: _Emits) -> None:
    pat = ev.patient
    # p is the step's own copy (apply_patient): its fields are written straight into its
    # __dict__, as _put does (pydantic's __setattr__ dispatch was ~4 calls per event).
    fields = p.__dict__
    pcp = pat.primary_care_provider
    if pcp is not None and pcp.id:
        fields["pcp_id"] = pcp.id
    if pat.language:
        fields["language"] = pat.language
    if pat.protection_indicator is not None:
        fields["protection"] = pat.protection_indicator
    if ev.kind == EventKind.MERGE:
        if ev.merge is not None and ev.merge.prior_patient_key != p.key:
            out.append(Emit(topics.CARE_EPISODE_COMMANDS.name, ev.merge.prior_patient_key,
                            PatientCommand(op="handover", cause_event_id=ev.event_id,
                                           decided_at=ev.occurred_at, target_key=p.key)))
            # Hold what follows until the prior key's history is here (see MergeWait).
            p.merge_wait = MergeWait(awaiting=[ev.event_id], since=now)
        return
    ep = _episode_for(p, ev, ctx, out)
    if ep is None:
        return
    was_class = ep.class_
    was_status = ep.status
    _absorb_fields(ep, ev)
    kind = ev.kind
    if kind == EventKind.PREADMIT:
        if was_status in ("new", "preadmit"):
            ep.status = "preadmit"
        return
    if kind == EventKind.CANCEL_ADMIT:
        _cancel_admit(p, ep, ev, ctx, out)
        return
    if kind == EventKind.CANCEL_DISCHARGE:
        _cancel_discharge(p, ep, ev, ctx, out)
        return
    if kind == EventKind.CANCEL_TRANSFER:
        return  # PV1-3 of an A12 is the location returned to: already taken above
    if ep.class_ == "emergency":
        p.ed_visits.setdefault(ep.key, ep.admit_at or ev.occurred_at)
    if was_status in ("cancelled", "closed"):
        return  # late news about an episode that is over: state only
    if kind == EventKind.DISCHARGE or (ev.encounter is not None and
                                      ev.encounter.discharge_at is not None and
                                      kind != EventKind.UPDATE and was_status != "discharged"):
        first_sight = was_status == "new"
        if first_sight and ep.counts_for_care():
            _admission(p, ep, ev, ctx, out, notify=False)
        _discharge(p, ep, ev, ctx, out)
        return
    starts_care = ep.counts_for_care() and (was_status in ("new", "preadmit") or
                                            was_class not in _CARE_CLASSES)
    if was_status == "discharged":
        if kind == EventKind.UPDATE and ep.counts_for_care():
            _flag(p, ep, ev, "discharge", ctx, out)
        return
    ep.__dict__["status"] = "active"  # the step's own copy (_episode_for): see _put
    if starts_care:
        if was_class == "emergency":
            _put(ep, emergent=True, emergent_reason="admitted from the emergency department")
        _admission(p, ep, ev, ctx, out, notify=kind in _NOTIFIES_ADMIT)
        if kind == EventKind.TRANSFER:
            _notify(p, ep, ev, "notification-transfer", ctx, out)
        return
    if kind in (EventKind.ADMIT, EventKind.REGISTER) and was_status == "new" and \
            ep.class_ == "emergency":
        _notify(p, ep, ev, "notification-admit", ctx, out)  # CMS CoP: ED registration
        return
    if kind == EventKind.TRANSFER and (ep.counts_for_care() or ep.class_ == "emergency"):
        _notify(p, ep, ev, "notification-transfer", ctx, out)
    if ep.counts_for_care():
        _flag(p, ep, ev, "admission", ctx, out)  # publishes only if something changed


def _episode_for(p: PatientState, ev: CanonicalEvent, ctx: CareContext, out: _Emits
                 ) -> EpisodeState | None:
    """The episode an event is about, the step's own copy (created if the event may)."""
    enc = ev.encounter
    facility = episode_facility(ev)
    if enc is not None and enc.id:
        key = episode_key(facility, enc.id)
    else:
        # The referrals stage picks by the same rule (its keys must match these).
        found = episode_without_visit(
            [EpisodeFacts(e.key, e.facility, e.status, e.admit_at, e.discharge_at)
             for e in p.episodes.values()],
            facility, ev.kind, enc.admit_at if enc else None, ev.occurred_at)
        if found is None:
            return None
        key = found
    ep = p.episodes.get(key)
    if ep is None:
        if enc is None or ev.kind not in CREATES_EPISODE:
            return None
        ep = _EpisodeState(key=key, facility=facility, encounter_id=enc.id, status="new",
                           tz=ctx.config.episode.timezone_for(facility))
        p.episodes[key] = ep
        out.owned[id(ep)] = ep
        return ep
    return _own(p, ep, out)


def _absorb_fields(ep: EpisodeState, ev: CanonicalEvent) -> None:
    enc = ev.encounter
    # Written straight into the episode's fields (the step's own copy; the values are
    # the validated event's): pydantic's __setattr__ without its dispatch (nothing reads
    # the fields-set of a state).
    fields = ep.__dict__
    if enc is not None:
        if enc.class_ is not None:
            fields["class_"] = _CLASS_VALUES[enc.class_]
        loc = enc.location
        if loc is not None and loc.unit and loc.unit != fields["unit"]:
            fields["prior_unit"], fields["unit"] = fields["unit"], loc.unit
        # An equal datetime is written too: it may differ in offset, which the stored
        # form keeps.
        if enc.admit_at is not None:
            fields["admit_at"] = enc.admit_at
        if enc.admission_type is not None:
            fields["admission_type"] = enc.admission_type
        if enc.admit_source is not None:
            fields["admit_source"] = enc.admit_source
        if enc.discharge_disposition is not None:
            fields["disposition"] = enc.discharge_disposition
    if ev.diagnoses:
        pairs = {(d.code, d.system) for d in ev.diagnoses}
        try:
            # Pairs are unique: compared as they are they sort as by _diagnosis_order,
            # unless one code comes with and without a system (None against a string).
            fields["diagnoses"] = sorted(pairs)
        except TypeError:
            fields["diagnoses"] = sorted(pairs, key=_diagnosis_order)
    if ev.coverage:
        fields["payer_ids"] = sorted({c.payer_id for c in ev.coverage if c.payer_id})


def _diagnosis_order(d: tuple[str, str | None]) -> tuple[str, str]:
    return d[0], d[1] or ""


def _admission(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, ctx: CareContext,
               out: _Emits, *, notify: bool) -> None:
    fields = ep.__dict__  # the step's own copy: written as _put writes
    if fields["status"] in ("new", "preadmit"):
        fields["status"] = "active"
    admit = ep.admit_at or ev.occurred_at
    cfg = ctx.config.risk
    if not ep.emergent:
        why = emergent_reason(ep.admission_type, ep.admit_source, cfg)
        if why is not None:
            _put(ep, emergent=True, emergent_reason=why)
        elif _led_by_ed_visit(p, ep, admit):
            _put(ep, emergent=True,
                 emergent_reason="emergency department visit before admission")
    # A readmission interrupts the previous discharge's follow-up: its open tasks end.
    for other in list(p.episodes.values()):
        if other.key != ep.key:
            _cancel_tasks(p, other, ev, "readmitted", ctx, out, rule="task.cancel.readmission")
    fields["risk_as_of"] = ep.risk_as_of or max(admit, min(ev.occurred_at,
                                                           admit + timedelta(days=1)))
    _flag(p, ep, ev, "admission", ctx, out)
    _request_assignment(p, ep, ev, ctx, out)
    if notify:
        _notify(p, ep, ev, "notification-admit", ctx, out)


def _led_by_ed_visit(p: PatientState, ep: EpisodeState, admit: datetime) -> bool:
    return any(k != ep.key and timedelta(0) <= admit - t <= ED_LEADS_TO_ADMISSION
               for k, t in p.ed_visits.items())


def _discharge(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, ctx: CareContext,
               out: _Emits) -> None:
    enc = ev.encounter
    at = (enc.discharge_at if enc else None) or ev.occurred_at
    if ep.status == "discharged" and ep.discharge_at == at:
        return
    _put(ep, status="discharged", discharge_at=at)
    if ep.class_ == "emergency":
        _notify(p, ep, ev, "notification-discharge", ctx, out)
        return
    if not ep.counts_for_care():
        return
    p.discharges[ep.key] = at
    _flag(p, ep, ev, "discharge", ctx, out)
    disposition = ep.disposition
    if ev.patient.deceased:
        disposition = "20"
    dclass, plans = plan_followup(discharge_at=at, disposition=disposition,
                                  risk_level=ep.risk_level or "low", tz=ep.tz,
                                  has_pcp=p.pcp_id is not None, cfg=ctx.config.followup)
    no_followup = dclass in (DispositionClass.DEATH, DispositionClass.HOSPICE)
    if ep.assignment in ("none", "unassigned"):
        # A death or hospice discharge has no work for a case manager: nobody is
        # assigned for it (the episode closes below).
        if not no_followup:
            _request_assignment(p, ep, ev, ctx, out)
    elif ep.assignment in ("requested", "assigned") and ep.team and \
            ep.points_level != ep.risk_level:
        ep.__dict__["points_level"] = ep.risk_level
        out.append(Emit(topics.CARE_ASSIGNMENT_REQUESTS.name, ep.team, _team_request(
            p, ep, ev, "update_points")))
    if no_followup:
        reason = "deceased" if dclass == DispositionClass.DEATH else "hospice"
        for other in list(p.episodes.values()):
            _cancel_tasks(p, other, ev, reason, ctx, out, rule=f"task.cancel.{reason}")
    discharge_key = f"{ep.key}@{at.isoformat()}"
    owner = ep.manager_id or (f"team:{ep.team}" if ep.team else None)
    for plan in plans:
        kind = _TASK_KINDS[plan.kind]
        task_id = derive_id("task", p.key, discharge_key, kind)
        t = _TaskState(task_id=task_id, kind=kind, due=plan.due, priority=plan.priority,
                       owner=owner, rule=plan.rule, description=plan.description,
                       cause_event_id=ev.event_id, discharge_key=discharge_key)
        ep.tasks[task_id] = out.owned[id(t)] = t
        _emit_task(p, ep, t, ev, derive_id(ev.event_id, plan.rule, task_id), plan.rule,
                   ev.occurred_at, ctx, out)
    _notify(p, ep, ev, "notification-discharge", ctx, out)
    if no_followup:
        # Release the caseload now rather than after the follow-up period: a manager's
        # cap must not stay spent on a patient who died or went to hospice. closed_at ==
        # discharge_at marks this closure, which a cancelled discharge (A13) reopens.
        _maybe_close(p, ep, at, ctx, out, force=True)


def _cancel_discharge(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, ctx: CareContext,
                      out: _Emits) -> None:
    closed_at_discharge = (ep.status == "closed" and ep.discharge_at is not None
                           and ep.closed_at == ep.discharge_at)
    if ep.status != "discharged" and not closed_at_discharge:
        return
    key = f"{ep.key}@{ep.discharge_at.isoformat()}" if ep.discharge_at else None
    ep.status, ep.discharge_at = "active", None
    if closed_at_discharge:
        # The death/hospice discharge that closed the episode was a mistake: the
        # patient is back in a bed and needs a case manager again.
        ep.closed_at = None
        if ep.assignment == "released":
            ep.assignment = "none"
        _request_assignment(p, ep, ev, ctx, out)
    p.discharges.pop(ep.key, None)
    for t in ep.tasks.values():
        if t.discharge_key == key and t.status in OPEN_TASK_STATUSES:
            _set_task(p, ep, t, "cancelled", "discharge_cancelled", ev, "task.cancel.discharge",
                      ctx, out)
    if ep.discharge_flag_id:
        _withdraw(p, ep, ev, ctx, out)
        ep.discharge_flag_id = None


def _cancel_admit(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, ctx: CareContext,
                  out: _Emits) -> None:
    if ep.status in ("cancelled", "new"):
        if ep.status == "new":
            del p.episodes[ep.key]
        return
    ep.status = "cancelled"
    p.ed_visits.pop(ep.key, None)
    p.discharges.pop(ep.key, None)
    _cancel_tasks(p, ep, ev, "admission_cancelled", ctx, out, rule="task.cancel.admission")
    if ep.last_flag is not None and ep.last_flag.get("status") == "active":
        _withdraw(p, ep, ev, ctx, out)
    if ep.team and ep.assignment in ("requested", "assigned", "unassigned"):
        ep.assignment = "released"
        out.append(Emit(topics.CARE_ASSIGNMENT_REQUESTS.name, ep.team,
                        _team_request(p, ep, ev, "release", reason="cancelled")))


def _maybe_close(p: PatientState, ep: EpisodeState, now: datetime, ctx: CareContext,
                 out: _Emits, *, force: bool = False) -> None:
    if ep.status != "discharged" or ep.discharge_at is None:
        return
    if not force:
        period_over = now >= ep.discharge_at + timedelta(
            days=ctx.config.episode.close_after_days)
        tasks_done = bool(ep.tasks) and all(t.status in TERMINAL_TASK_STATUSES
                                            for t in ep.tasks.values())
        if not (period_over or tasks_done):
            return
    discharged_at = ep.discharge_at
    ep = _own(p, ep, out)
    _put(ep, status="closed", closed_at=now)
    if ep.team and ep.assignment in ("requested", "assigned", "unassigned"):
        ep.assignment = "released"
        cause = derive_id("episode-close", p.key, ep.key, discharged_at.isoformat())
        out.append(Emit(topics.CARE_ASSIGNMENT_REQUESTS.name, ep.team, _TeamRequest(
            op="release", team=ep.team, patient_key=p.key, encounter_key=ep.key,
            facility=ep.facility, cause_event_id=cause, decided_at=now,
            reason="episode_closed")))


# --- risk


def _signature(stage: str, r: RiskResult) -> str:
    """The stored ``risk_signature`` of an assessment (what :func:`_assessed` computes from
    memoized pieces; tests/streams/care/test_fast_paths.py checks they agree)."""
    parts = [stage, r.level, r.lace.score, r.lace.l, r.lace.a, r.lace.c, r.lace.e,
             r.charlson.score, *r.charlson.categories,
             *(f"{f.code}:{x.code}:{x.detail}" for f in r.flags for x in f.factors)]
    return hashlib.sha256("\x1f".join(str(x) for x in parts).encode()).hexdigest()[:16]


class _Assessed(NamedTuple):
    """An assessment as a flag publishes it: level, signature, the risk fields as frozen
    models and as JSON (for ``last_flag``). Shared by every record built from it, so
    read-only, like everything states share."""

    level: str
    signature: str
    lace: Lace
    charlson: Charlson
    factors: tuple[Factor, ...]
    reasons: tuple[Reason, ...]
    json: dict[str, Any]


_Part = tuple[Any, Any, Any, str]
"""(source object, frozen model, JSON, its text in the signature)."""


def _part(f: RiskFactor | RiskFlag | LaceResult | CharlsonResult,
          memo: dict[Any, _Part]) -> _Part:
    """A piece of an assessment as its frozen model, its JSON and its signature text,
    memoized by object: the risk rules hand out the same (cached) objects for equal
    pieces. The entry holds the object itself, so its id is not reused while the entry
    lives (shared, read-only)."""
    found = memo.get(id(f))
    if found is None or found[0] is not f:
        if isinstance(f, RiskFlag):
            factors = [_part(x, memo) for x in f.factors]
            found = (f, _Reason(code=f.code, display=f.display,
                                factors=[m for _, m, _, _ in factors]),
                     {"code": f.code, "display": f.display,
                      "factors": [j for _, _, j, _ in factors]},
                     "".join(f"\x1f{f.code}:{x.code}:{x.detail}" for x in f.factors))
        elif isinstance(f, RiskFactor):
            found = (f, _Factor(code=f.code, points=f.points, detail=f.detail),
                     {"code": f.code, "points": f.points, "detail": f.detail}, "")
        elif isinstance(f, LaceResult):
            found = (f, _Lace(score=f.score, l=f.l, a=f.a, c=f.c, e=f.e),
                     {"score": f.score, "l": f.l, "a": f.a, "c": f.c, "e": f.e},
                     f"\x1f{f.score}\x1f{f.l}\x1f{f.a}\x1f{f.c}\x1f{f.e}")
        else:
            found = (f, _Charlson(score=f.score, categories=list(f.categories)),
                     {"score": f.score, "categories": list(f.categories)},
                     "".join(f"\x1f{x}" for x in (f.score, *f.categories)))
        memo[id(f)] = found
    return found


def _assessed(stage: str, r: RiskResult, memo: dict[Any, _Part]) -> _Assessed:
    """An assessment as a flag publishes it, from a :class:`RiskResult`: the general form
    of :func:`_assessed_of` (which the step uses), kept plain for the tests to compare
    against."""
    factors = [_part(f, memo) for f in r.factors]
    reasons = [_part(f, memo) for f in r.flags]
    lace, charlson = _part(r.lace, memo), _part(r.charlson, memo)
    text = "".join([stage, "\x1f", r.level, lace[3], charlson[3], *[t for *_, t in reasons]])
    return _Assessed(
        level=r.level, signature=hashlib.sha256(text.encode()).hexdigest()[:16],
        lace=lace[1], charlson=charlson[1],
        factors=tuple([m for _, m, _, _ in factors]),
        reasons=tuple([m for _, m, _, _ in reasons]),
        # flag.model_dump(mode="json") of these fields, written out (same keys, same order;
        # tests/streams/care/test_fast_paths.py checks it). Shared JSON is read-only.
        json={"lace": lace[2], "charlson": charlson[2],
              "factors": [j for _, _, j, _ in factors], "reasons": [j for _, _, j, _ in reasons]})


def _assessed_of(stage: str, parts: AssessmentParts, memo: dict[Any, _Part]) -> _Assessed:
    """``_assessed(stage, assess_facts(facts, cfg), memo)`` from ``assessment_parts(facts,
    cfg)``: what each cached block publishes is memoized by the block (an entry holds it,
    so its id is not reused while the entry lives), and an assessment, mostly a new
    combination of known blocks, is only assembled (tests/streams/care/test_fast_paths.py
    checks it against the general form)."""
    if len(memo) >= _ASSESSMENTS_MAX:
        memo.clear()
    block = parts.lace
    found = memo.get(id(block))
    if found is None or found[0] is not block:
        each = [_part(f, memo) for f in block.factors]
        found = memo[id(block)] = (block, (
            _part(block.result, memo), tuple([m for _, m, _, _ in each]),
            [j for _, _, j, _ in each]), None, "")
    lace, factor_models, factor_json = found[1]
    charlson = _part(parts.diagnosis.charlson, memo)
    reasons = [_part(f, memo) for f in parts.flags()]
    level = block.level
    text = "".join([stage, "\x1f", level, lace[3], charlson[3], *[t for *_, t in reasons]])
    return tuple.__new__(_Assessed, (  # type: ignore[no-any-return]
        level, hashlib.sha256(text.encode()).hexdigest()[:16], lace[1], charlson[1],
        factor_models, tuple([m for _, m, _, _ in reasons]),
        {"lace": lace[2], "charlson": charlson[2], "factors": factor_json,
         "reasons": [j for _, _, j, _ in reasons]}))


def _flag(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, stage: str, ctx: CareContext,
          out: _Emits) -> None:
    final = stage == "discharge"
    as_of = (ep.discharge_at or ev.occurred_at) if final else (ep.risk_as_of or ev.occurred_at)
    admit = ep.admit_at or as_of
    this = ep.key
    # tuple([...]) rather than tuple(generator): no generator frame per item.
    prior_ed = tuple([t for k, t in p.ed_visits.items()
                      if k != this and t < admit and
                      not admit - t <= ED_LEADS_TO_ADMISSION]) if p.ed_visits else ()
    prior_discharges = tuple([t for k, t in p.discharges.items()
                              if k != this and t <= admit]) if p.discharges else ()
    # Memoized twice over. By input: an update that changes nothing the rules read (most
    # A08s) asks again with an equal one. By facts (what the rules read once times are
    # counted in days): patients alike in those share an assessment. Equal inputs or
    # facts give equal results (times equal across offsets are the same to the rules).
    memo = ctx.assessments
    key = (stage, ep.admit_at, as_of, ep.tz, ep.emergent, ep.emergent_reason,
           tuple(ep.diagnoses), prior_ed, prior_discharges, ep.disposition if final else None)
    a = memo.get(key)
    if a is None:
        cfg = ctx.config.risk
        # risk_facts(RiskInput(...)) without building the RiskInput.
        facts = risk_facts_of(ep.admit_at, as_of, ep.tz, ep.emergent, ep.emergent_reason,
                              key[6], prior_ed, prior_discharges, key[9], final, cfg)
        a = memo.get((stage, facts))
        if len(memo) >= _ASSESSMENTS_MAX:
            memo.clear()
        if a is None:
            a = memo[(stage, facts)] = _assessed_of(stage, assessment_parts(facts, cfg),
                                                    ctx.parts)
        memo[key] = a
    if a.signature == ep.risk_signature:
        return  # nothing relevant changed: no output
    rule = f"risk.{stage}"
    flag_id = derive_id(ev.event_id, rule, ep.key)
    flag = _FlagOutput(
        id=flag_id, cause_event_id=ev.event_id, rule=rule, patient_key=p.key,
        encounter_key=ep.key, facility=ep.facility, decided_at=ev.occurred_at, stage=stage,
        risk_level=a.level, lace=a.lace, charlson=a.charlson, factors=list(a.factors),
        reasons=list(a.reasons))
    if final:
        _put(ep, discharge_flag_id=flag_id)
    # last_flag is flag.model_dump(mode="json"), written out (tests/streams/care/
    # test_fast_paths.py checks it).
    last_flag = {
        "id": flag_id, "cause_event_id": ev.event_id, "rule": rule, "patient_key": p.key,
        "encounter_key": ep.key, "facility": ep.facility,
        "decided_at": to_jsonable_python(ev.occurred_at), "fhir": None, "type": "flag",
        "stage": stage, "status": "active", "replaces": None, "risk_level": a.level,
        **a.json, "flag_resources": []}
    _put(ep, risk_level=a.level, risk_signature=a.signature, active_flag_id=flag_id,
         last_flag=last_flag)
    _emit(out, flag, ev, ctx)


def _withdraw(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, ctx: CareContext,
              out: _Emits) -> None:
    if ep.last_flag is None:
        return
    previous = FlagOutput.model_validate(ep.last_flag)
    withdrawn = previous.model_copy(update={
        "id": derive_id(ev.event_id, "risk.withdraw", previous.id), "replaces": previous.id,
        "cause_event_id": ev.event_id, "rule": "risk.withdraw", "status": "withdrawn",
        "decided_at": ev.occurred_at, "fhir": None, "flag_resources": []})
    ep.last_flag = withdrawn.model_dump(mode="json")
    ep.risk_signature = None
    _emit(out, withdrawn, ev, ctx)


# --- assignment


def _team_request(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, op: str, *,
                  reason: str | None = None) -> TeamRequest:
    return _TeamRequest(op=op, team=ep.team or "", patient_key=p.key, encounter_key=ep.key,
                        facility=ep.facility, cause_event_id=ev.event_id,
                        decided_at=ev.occurred_at, risk_level=ep.risk_level or "low",
                        payer_ids=list(ep.payer_ids), language=p.language, reason=reason)


def _request_assignment(p: PatientState, ep: EpisodeState, ev: CanonicalEvent,
                        ctx: CareContext, out: _Emits) -> None:
    if ep.assignment in ("requested", "assigned"):
        return
    teams = teams_for(ctx.roster, ep.facility, ep.unit)
    if not teams:
        ep.assignment = "unassigned"
        _emit(out, _AssignmentOutput(
            id=derive_id(ev.event_id, "assignment", ep.key), cause_event_id=ev.event_id,
            rule="assignment.no_team", patient_key=p.key, encounter_key=ep.key,
            facility=ep.facility, decided_at=ev.occurred_at, status="unassigned",
            reason="no_team"), ev, ctx)
        _emit(out, _EscalationOutput(
            id=derive_id(ev.event_id, "escalation", ep.key), cause_event_id=ev.event_id,
            rule="assignment.no_team", patient_key=p.key, encounter_key=ep.key,
            facility=ep.facility, decided_at=ev.occurred_at, reason="no_team"), ev, ctx)
        return
    team = teams[0]
    _put(ep, team=team.id, supervisor=team.supervisor, assignment="requested",
         points_level=ep.risk_level)
    req = _team_request(p, ep, ev, "assign")
    link = p.last_manager
    window = timedelta(days=ctx.config.assignment.continuity_days)
    if link is not None and ev.occurred_at - link.at <= window:
        req = evolve(req, continuity_manager_id=link.manager_id, continuity_at=link.at)
    out.append(Emit(topics.CARE_ASSIGNMENT_REQUESTS.name, team.id, req))


def _on_assignment(p: PatientState, a: AssignmentOutput, ctx: CareContext,
                   out: _Emits) -> None:
    ep = p.episodes.get(a.encounter_key or "")
    if ep is None:
        return
    ep = _own(p, ep, out)
    fields = ep.__dict__  # the step's own copy: written as _put writes
    if a.status == "released":
        fields["assignment"] = "released"
        return
    if a.status == "unassigned":
        if ep.assignment == "requested":
            fields["assignment"] = "unassigned"
        return
    if ep.status in ("cancelled", "closed") or ep.assignment == "released":
        # Cancelled while the request was in flight: hand the caseload straight back.
        out.append(Emit(topics.CARE_ASSIGNMENT_REQUESTS.name, a.team or "", _TeamRequest(
            op="release", team=a.team or "", patient_key=p.key, encounter_key=ep.key,
            facility=ep.facility, cause_event_id=a.id, decided_at=a.decided_at,
            reason="cancelled")))
        return
    _put(ep, assignment="assigned", manager_id=a.manager_id)
    if a.manager_id and a.team and (p.last_manager is None or
                                     p.last_manager.at <= a.decided_at):
        p.__dict__["last_manager"] = _ManagerLink(manager_id=a.manager_id, team=a.team,
                                                  at=a.decided_at)
    for t in ep.tasks.values():
        if t.status in OPEN_TASK_STATUSES and t.owner != a.manager_id:
            t = _own_task(ep, t, out)
            t.__dict__["owner"] = a.manager_id  # the step's own copy: see _put
            _emit_task(p, ep, t, None, derive_id(a.id, "task.owner", t.task_id), "task.owner",
                       a.decided_at, ctx, out)


# --- tasks


def _emit_task(p: PatientState, ep: EpisodeState, t: TaskState, ev: CanonicalEvent | None,
               out_id: str, rule: str, at: datetime, ctx: CareContext, out: _Emits) -> None:
    _emit(out, _TaskOutput(
        id=out_id, cause_event_id=ev.event_id if ev else t.cause_event_id, rule=rule,
        patient_key=p.key, encounter_key=ep.key, facility=ep.facility, decided_at=at,
        task_id=t.task_id, kind=t.kind, due=t.due, status=t.status,
        priority=t.priority, owner=t.owner, description=t.description,
        status_reason=t.status_reason, attempts=t.attempts), ev, ctx)


def _set_task(p: PatientState, ep: EpisodeState, t: TaskState, status: str, reason: str | None,
              ev: CanonicalEvent, rule: str, ctx: CareContext, out: _Emits) -> None:
    t = _own_task(ep, t, out)
    _put(t, status=status, status_reason=reason)
    _emit_task(p, ep, t, ev, derive_id(ev.event_id, rule, t.task_id), rule, ev.occurred_at,
               ctx, out)


def _cancel_tasks(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, reason: str,
                  ctx: CareContext, out: _Emits, *, rule: str) -> None:
    if not any(t.status in OPEN_TASK_STATUSES for t in ep.tasks.values()):
        return
    ep = _own(p, ep, out)
    for t in ep.tasks.values():
        if t.status in OPEN_TASK_STATUSES:
            _set_task(p, ep, t, "cancelled", reason, ev, rule, ctx, out)


def _on_task_update(p: PatientState, u: TaskUpdate, uid: str, ctx: CareContext,
                    out: _Emits) -> None:
    for ep in p.episodes.values():
        t = ep.tasks.get(u.task_id)
        if t is None:
            continue
        if t.status in TERMINAL_TASK_STATUSES:
            return  # closed tasks stay closed; a late update changes nothing
        ep = _own(p, ep, out)
        t = _own_task(ep, t, out)
        if u.status == "attempted":
            t.attempts += 1
            # CMS TCM: two documented, timely unsuccessful attempts satisfy the contact.
            if t.kind == "contact" and t.attempts >= 2:
                t.status, t.status_reason = "completed", "two_attempts_documented"
            else:
                t.status, t.status_reason = "in-progress", "attempted"
        else:
            t.status, t.status_reason = u.status, u.reason
        _emit_task(p, ep, t, None, derive_id(uid, "task.update", t.task_id),
                   f"task.update.{u.status}", u.at, ctx, out)
        _maybe_close(p, ep, u.at, ctx, out)
        return


# --- notifications


def _notify(p: PatientState, ep: EpisodeState, ev: CanonicalEvent, code: str, ctx: CareContext,
            out: _Emits) -> None:
    if not ctx.config.episode.notifications:
        return
    _emit(out, _NotificationOutput(
        id=derive_id(ev.event_id, "notify", code, ep.key), cause_event_id=ev.event_id,
        rule=_NOTIFY_RULES[code], patient_key=p.key, encounter_key=ep.key,
        facility=ep.facility, decided_at=ev.occurred_at, event_code=code,
        recipient=p.pcp_id), ev, ctx)


# --- merges


def _on_command(p: PatientState, cmd: PatientCommand, now: datetime, ctx: CareContext,
                out: _Emits) -> PatientState:
    if cmd.op == "handover":
        # Always answer, with nothing to move if need be: the survivor is waiting for it.
        moved = None
        if not p.merged_into and (p.episodes or p.ed_visits or p.discharges or
                                  p.last_manager):
            moved = p.model_copy(update={"seen": [], "merged_into": None}).model_dump(
                mode="json")
        out.append(Emit(topics.CARE_EPISODE_COMMANDS.name, cmd.target_key, PatientCommand(
            op="absorb", cause_event_id=cmd.cause_event_id, decided_at=cmd.decided_at,
            target_key=cmd.target_key, state=moved)))
        if p.merged_into:
            return p
        return PatientState(key=p.key, merged_into=cmd.target_key, seen=p.seen,
                            merged_from=p.merged_from)
    if cmd.op == "absorb":
        if cmd.state is not None:
            _absorb(p, cmd, PatientState.model_validate(cmd.state), ctx, out)
        wait = p.merge_wait
        if wait is not None and cmd.cause_event_id in wait.awaiting:
            awaiting = [c for c in wait.awaiting if c != cmd.cause_event_id]
            p.merge_wait = wait.model_copy(update={"awaiting": awaiting})
            if not awaiting:
                p = _stop_waiting(p, now, ctx, out, expired=False)
        return p
    if cmd.op == "forward" and cmd.message is not None:
        inner = decode_patient_input(cmd.message["topic"], orjson.dumps(cmd.message["value"]))
        # p is this step's own record; what it holds is shared with the input unless
        # that was handed over.
        q, more = apply_patient(p, p.key, inner, now=now, ctx=ctx, in_place=out.in_place)
        out.extend(more)
        return q
    return p


def _absorb(p: PatientState, cmd: PatientCommand, src: PatientState, ctx: CareContext,
            out: _Emits) -> None:
    """Merge a prior key's history into this (surviving) key."""
    for key, ep in src.episodes.items():
        if key in p.episodes:
            continue  # the survivor's own record of an episode wins
        p.episodes[key] = ep
        for t in ep.tasks.values():
            if t.status in OPEN_TASK_STATUSES:
                _emit_task(p, ep, t, None, derive_id(cmd.cause_event_id, "merge.rekey",
                                                     t.task_id),
                           "merge.rekey", cmd.decided_at, ctx, out)
    p.ed_visits = {**src.ed_visits, **p.ed_visits}
    p.discharges = {**src.discharges, **p.discharges}
    if src.last_manager and (p.last_manager is None or
                             p.last_manager.at < src.last_manager.at):
        p.last_manager = src.last_manager
    p.pcp_id = p.pcp_id or src.pcp_id
    p.language = p.language or src.language
    p.merged_from = sorted({*p.merged_from, src.key, *src.merged_from})


def decode_patient_input(topic: str, value: bytes) -> PatientInput:
    """The model of a record read by the patient stage, by catalogue topic name."""
    if topic == topics.CARE_EVENTS.name:
        return CanonicalEvent.model_validate_json(value)
    if topic == topics.CARE_ASSIGNMENTS.name:
        return AssignmentOutput.model_validate_json(value)
    if topic == topics.CARE_TASK_UPDATES.name:
        return TaskUpdate.model_validate_json(value)
    return PatientCommand.model_validate_json(value)


def _topic_of(msg: PatientInput) -> str:
    if isinstance(msg, CanonicalEvent):
        return topics.CARE_EVENTS.name
    if isinstance(msg, AssignmentOutput):
        return topics.CARE_ASSIGNMENTS.name
    if isinstance(msg, TaskUpdate):
        return topics.CARE_TASK_UPDATES.name
    return topics.CARE_EPISODE_COMMANDS.name


def _time_of(msg: PatientInput, now: datetime) -> datetime:
    if isinstance(msg, CanonicalEvent):
        return msg.occurred_at
    if isinstance(msg, AssignmentOutput | PatientCommand):
        return msg.decided_at
    if isinstance(msg, TaskUpdate):
        return msg.at
    return now


def _emit(out: list[Emit], output: BaseModel, ev: CanonicalEvent | None,
          ctx: CareContext) -> None:
    if ctx.render_fhir:
        output = _with_fhir(output, ev)
    out.append(Emit(OUTPUT_TOPICS[output.type], output.patient_key, output))  # type: ignore[attr-defined]


def _with_fhir(output: BaseModel, ev: CanonicalEvent | None) -> BaseModel:
    if isinstance(output, FlagOutput):
        # A withdrawal renders the withdrawn record's own resources (same FHIR ids, now
        # entered-in-error / inactive), so receivers update what they hold.
        subject = output.model_copy(update={"id": output.replaces}) if output.replaces \
            else output
        return output.model_copy(update={"fhir": fhir_out.risk_assessment(subject, ev),
                                         "flag_resources": fhir_out.flags(subject, ev)})
    return output.model_copy(update={"fhir": fhir_out.render(output, ev)})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- team stage


def apply_team(state: Caseload | None, req: TeamRequest, *, ctx: CareContext
               ) -> tuple[Caseload, list[Emit]]:
    """Apply one request to one team's caseload (None: the team holds nothing yet).
    Time is the request's own. A :class:`streams.care.assignment.CaseloadView` comes
    back as a view whose ``changes`` and ``totals`` the caller stores."""
    out: list[Emit] = []
    base = state  # assign/release/update_points never mutate their argument
    if req.op == "release":
        if base is None:
            return _TeamState(team_id=req.team), out
        new, decision = release(base, req.encounter_key)
        if decision is not None:
            _emit(out, _AssignmentOutput(
                id=derive_id(req.cause_event_id, "assignment.release", req.encounter_key),
                cause_event_id=req.cause_event_id, rule="assignment.release",
                patient_key=req.patient_key, encounter_key=req.encounter_key,
                facility=req.facility, decided_at=req.decided_at, status="released",
                manager_id=decision.manager_id, team=req.team, reason=req.reason or "released",
                points=decision.points), None, ctx)
        return new, out
    if req.op == "update_points":
        if base is None:
            return _TeamState(team_id=req.team), out
        return update_points(base, req.encounter_key, req.risk_level, ctx.config.assignment), out
    new, d = assign(base, frozen_instance(
        AssignmentRequest, episode_key=req.encounter_key, team_id=req.team,
        risk_level=req.risk_level, payer_ids=tuple(req.payer_ids), language=req.language,
        specialty=req.specialty, continuity_manager_id=req.continuity_manager_id,
        continuity_at=req.continuity_at, cause_event_id=req.cause_event_id),
        now=req.decided_at, roster=ctx.roster, cfg=ctx.config.assignment)
    if d.status == "already_assigned":
        return new, out
    rule = f"assignment.{d.reason}"
    _emit(out, _AssignmentOutput(
        id=derive_id(req.cause_event_id, "assignment", req.encounter_key),
        cause_event_id=req.cause_event_id, rule=rule, patient_key=req.patient_key,
        encounter_key=req.encounter_key, facility=req.facility, decided_at=req.decided_at,
        status="assigned" if d.status == "assigned" else "unassigned",
        manager_id=d.manager_id, team=req.team, supervisor=d.supervisor, reason=d.reason,
        points=d.points, load_after=d.load_after, cap=d.cap,
        considered=list(map(list, d.considered))), None, ctx)
    if d.status != "assigned":
        _emit(out, _EscalationOutput(
            id=derive_id(req.cause_event_id, "escalation", req.encounter_key),
            cause_event_id=req.cause_event_id, rule=rule, patient_key=req.patient_key,
            encounter_key=req.encounter_key, facility=req.facility,
            decided_at=req.decided_at, reason=d.reason, team=req.team,
            supervisor=d.supervisor), None, ctx)
    return new, out


def output_of(emit: Emit) -> dict[str, Any] | None:
    """The public output record of an emit (None for internal messages)."""
    if emit.topic in OUTPUT_TOPICS.values():
        return dump_output(emit.value)
    return None
