"""A merge's surviving key holds its inputs until the prior key's history arrives.

A40/A47 move state in two hops through care.episode-commands (handover to the prior key,
absorb at the survivor). Inputs for the survivor read in between must not be decided
without the merged history: they wait in the survivor's state (bounded by count and
time) and are replayed, in order, right after the absorb.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.commands.decide_cmd import load_roster, load_rules
from hub.commands.map_cmd import map_files
from schemas import topics
from schemas.canonical import CanonicalEvent, EventKind, derive_id
from schemas.care import AssignmentOutput, PatientCommand, TaskUpdate, TeamRequest, dump_output
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

HERE = Path(__file__).parent / "journeys"
T0 = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
PRIOR, SURVIVOR = "GENHOSP|J3OLD", "GENHOSP|J3NEW"
_OUTPUTS = frozenset(OUTPUT_TOPICS.values())
_ROUTED = (topics.CARE_ASSIGNMENTS.name, topics.CARE_ASSIGNMENT_REQUESTS.name,
           topics.CARE_EPISODE_COMMANDS.name)

Record = tuple[str, str, Any]


def _ctx(**episode: Any) -> CareContext:
    config = load_rules(None, default_tz="America/New_York")
    if episode:
        config = config.model_copy(update={
            "episode": config.episode.model_copy(update=episode)})
    return CareContext(config=config, roster=load_roster(HERE / "roster.yaml"),
                       render_fhir=False)


def _j3() -> list[CanonicalEvent]:
    out = list(map_files([str(HERE / "j3_merge.hl7")], default_tz="America/New_York",
                         received_at=T0))
    assert all(isinstance(e, CanonicalEvent) for e in out)
    return out  # type: ignore[return-value]


class Net:
    """Patients and teams in memory, records moving first in, first out (one queue):
    like streams.care.offline, but absorbs can be held back and put anywhere."""

    def __init__(self, ctx: CareContext, now: datetime) -> None:
        self.ctx, self.now = ctx, now
        self.patients: dict[str, PatientState] = {}
        self.teams: dict[str, TeamState] = {}
        self.outputs: list[dict[str, Any]] = []
        self.held: list[Record] = []
        self.hold = False

    def run(self, records: list[Record]) -> None:
        queue: deque[Record] = deque(records)
        while queue:
            topic, key, msg = queue.popleft()
            if self.hold and isinstance(msg, PatientCommand) and msg.op == "absorb":
                self.held.append((topic, key, msg))
                continue
            emits: list[Emit]
            if topic == topics.CARE_ASSIGNMENT_REQUESTS.name:
                assert isinstance(msg, TeamRequest)
                self.teams[key], emits = apply_team(self.teams.get(key), msg, ctx=self.ctx)
            else:
                if isinstance(msg, AssignmentOutput) and topic != topics.CARE_ASSIGNMENTS.name:
                    continue
                self.patients[key], emits = apply_patient(self.patients.get(key), key, msg,
                                                          now=self.now, ctx=self.ctx)
            for e in emits:
                if e.topic in _OUTPUTS:
                    self.outputs.append(dump_output(e.value))
                if e.topic in _ROUTED:
                    queue.append((e.topic, e.key, e.value))


def event(ev: CanonicalEvent) -> Record:
    return (topics.CARE_EVENTS.name, ev.patient.key, ev)


def _follow_ons(evs: list[CanonicalEvent]) -> list[Record]:
    """What the surviving key reads right after the A40: an update of the merged-away
    episode's task, the readmission, an update adding a diagnosis, the discharge."""
    discharge_x1 = evs[1]
    assert discharge_x1.encounter is not None and discharge_x1.encounter.discharge_at
    x1_contact = derive_id("task", PRIOR,
                           f"GENHOSP|X1@{discharge_x1.encounter.discharge_at.isoformat()}",
                           "contact")
    admit = evs[3]
    update = admit.model_copy(update={
        "event_id": "x2-a08", "trigger": "A08", "kind": EventKind.UPDATE,
        "occurred_at": admit.occurred_at + timedelta(hours=5),
        "diagnoses": [*admit.diagnoses, admit.diagnoses[0].model_copy(
            update={"code": "Z59.01"})]})
    assert admit.encounter is not None
    out_at = admit.occurred_at + timedelta(days=3)
    discharge = admit.model_copy(update={
        "event_id": "x2-a03", "trigger": "A03", "kind": EventKind.DISCHARGE,
        "occurred_at": out_at,
        "encounter": admit.encounter.model_copy(update={"discharge_at": out_at,
                                                        "discharge_disposition": "01"})})
    attempted = TaskUpdate(task_id=x1_contact, patient_key=SURVIVOR, status="attempted",
                           at=admit.occurred_at - timedelta(days=1))
    return [(topics.CARE_TASK_UPDATES.name, SURVIVOR, attempted), event(admit),
            event(update), event(discharge)]


def _merged_with_absorb_held(ctx: CareContext) -> tuple[list[CanonicalEvent], Net]:
    """The prior key's stay and the merge, the merge's absorb held back in ``net.held``."""
    evs = _j3()
    net = Net(ctx, now=evs[2].occurred_at)
    net.run([event(evs[0]), event(evs[1])])
    net.hold = True
    net.run([event(evs[2])])
    net.hold = False
    return evs, net


def _journey(follow: list[Record], absorb_at: int, ctx: CareContext
             ) -> tuple[list[dict[str, Any]], Net]:
    """The prior key's stay, the merge, then ``follow`` with the absorb delivered after
    ``absorb_at`` of them (0: before any, as it would be with no race)."""
    _, net = _merged_with_absorb_held(ctx)
    assert len(net.held) == 1 and net.patients[SURVIVOR].merge_wait is not None
    net.run([*follow[:absorb_at], *net.held, *follow[absorb_at:]])
    return net.outputs, net


def _state_without_seen(p: PatientState) -> dict[str, Any]:
    return p.model_dump(mode="json", exclude={"seen"})


def test_an_admission_read_before_the_absorb_waits_for_the_history() -> None:
    ctx = _ctx()
    evs = _j3()
    follow = [event(evs[3])]
    late, net = _journey(follow, 1, ctx)
    first, _ = _journey(follow, 0, ctx)
    assert late == first
    flags = [o for o in late if o["type"] == "flag" and o["encounter_key"] == "GENHOSP|X2"]
    assert "readmission_30d" in {r["code"] for r in flags[0]["reasons"]}
    (assignment,) = [o for o in late if o["type"] == "assignment"
                     and o["encounter_key"] == "GENHOSP|X2"]
    assert assignment["reason"] == "continuity"
    survivor = net.patients[SURVIVOR]
    assert survivor.merge_wait is None and survivor.merge_waits_expired is None
    assert "GENHOSP|X1" in survivor.episodes


def test_held_inputs_publish_nothing_until_the_absorb() -> None:
    ctx = _ctx()
    evs = _j3()
    now = evs[2].occurred_at
    state, emits = apply_patient(None, SURVIVOR, evs[2], now=now, ctx=ctx)
    assert [e.value.op for e in emits] == ["handover"]  # type: ignore[attr-defined]
    assert state.merge_wait is not None and state.merge_wait.awaiting == [evs[2].event_id]
    held, emits = apply_patient(state, SURVIVOR, evs[3], now=now, ctx=ctx)
    assert emits == [] and held.merge_wait is not None and len(held.merge_wait.buffered) == 1
    # Stored and restored (the agent keeps states as JSON), then redelivered: dropped.
    restored = PatientState.model_validate_json(held.model_dump_json(exclude_none=True))
    again, emits = apply_patient(restored, SURVIVOR, evs[3], now=now, ctx=ctx)
    assert emits == [] and again == restored
    # The caller's states were not touched along the way.
    assert state.merge_wait.buffered == []


def test_a_prior_key_with_no_history_still_ends_the_wait() -> None:
    ctx = _ctx()
    evs = _j3()
    now = evs[2].occurred_at
    survivor, emits = apply_patient(None, SURVIVOR, evs[2], now=now, ctx=ctx)
    (handover,) = [e.value for e in emits]
    prior, emits = apply_patient(None, PRIOR, handover, now=now, ctx=ctx)  # type: ignore[arg-type]
    (absorb,) = [e.value for e in emits]
    assert isinstance(absorb, PatientCommand) and absorb.op == "absorb" and absorb.state is None
    assert prior.merged_into == SURVIVOR
    held, _ = apply_patient(survivor, SURVIVOR, evs[3], now=now, ctx=ctx)
    done, emits = apply_patient(held, SURVIVOR, absorb, now=now, ctx=ctx)
    assert done.merge_wait is None and done.merge_waits_expired is None
    assert [o for o in (e.value for e in emits) if getattr(o, "type", None) == "flag"]
    # A handover to a key already merged away answers too (a redelivered merge).
    _, emits = apply_patient(prior, PRIOR, handover.model_copy(  # type: ignore[attr-defined,arg-type]
        update={"cause_event_id": "again"}), now=now, ctx=ctx)
    assert [(e.value.op, e.value.state) for e in emits] == [  # type: ignore[attr-defined]
        ("absorb", None)]


def test_the_wait_gives_up_after_the_max_count() -> None:
    ctx = _ctx(merge_buffer_max=2)
    evs = _j3()
    follow = _follow_ons(evs)
    now = evs[2].occurred_at
    state, _ = apply_patient(None, SURVIVOR, evs[2], now=now, ctx=ctx)
    outs: list[Emit] = []
    for _, key, msg in follow:
        state, emits = apply_patient(state, key, msg, now=now, ctx=ctx)
        outs += emits
        if state.merge_wait is not None:
            assert emits == []
    # The third input overflowed the buffer: all three were decided, without the history.
    assert state.merge_wait is None and state.merge_waits_expired == 1
    flags = [e.value for e in outs if getattr(e.value, "type", None) == "flag"]
    assert flags and "readmission_30d" not in {r.code for f in flags  # type: ignore[attr-defined]
                                               for r in f.reasons}  # type: ignore[attr-defined]


def test_the_wait_gives_up_after_the_max_time_on_an_input_or_a_tick() -> None:
    ctx = _ctx(merge_wait_seconds=60)
    evs = _j3()
    now = evs[2].occurred_at
    state, _ = apply_patient(None, SURVIVOR, evs[2], now=now, ctx=ctx)
    held, emits = apply_patient(state, SURVIVOR, evs[3], now=now + timedelta(seconds=59),
                                ctx=ctx)
    assert emits == [] and held.merge_wait is not None
    # A tick before the time keeps waiting; one after it replays what was held.
    ticked, emits = tick_patient(held, now=now + timedelta(seconds=59), ctx=ctx)
    assert emits == [] and ticked.merge_wait is not None
    released, emits = tick_patient(held, now=now + timedelta(seconds=60), ctx=ctx)
    assert released.merge_wait is None and released.merge_waits_expired == 1
    assert {e.value.rule for e in emits  # type: ignore[attr-defined]
            if e.topic == topics.CARE_FLAGS.name} == {"risk.admission"}
    # The same through the next input after the time: held input first, then the new one.
    update = evs[3].model_copy(update={"event_id": "late-a08", "trigger": "A08",
                                       "kind": EventKind.UPDATE})
    moved, emits = apply_patient(held, SURVIVOR, update, now=now + timedelta(minutes=5),
                                 ctx=ctx)
    assert moved.merge_wait is None and moved.merge_waits_expired == 1
    assert emits and emits[0].value.cause_event_id == evs[3].event_id  # type: ignore[attr-defined]


def test_an_absorb_after_giving_up_still_brings_the_history() -> None:
    ctx = _ctx(merge_wait_seconds=1)
    evs, net = _merged_with_absorb_held(ctx)
    net.now += timedelta(seconds=5)
    net.run([event(evs[3]), *net.held])
    survivor = net.patients[SURVIVOR]
    assert survivor.merge_waits_expired == 1 and "GENHOSP|X1" in survivor.episodes


def test_a_survivor_merged_away_while_waiting_hands_over_the_merged_history() -> None:
    # B -> A, then A -> C before B's history reached A: C must end up with both.
    ctx = _ctx()
    evs, net = _merged_with_absorb_held(ctx)
    third = "GENHOSP|J3THIRD"
    assert evs[2].merge is not None
    a40 = evs[2].model_copy(update={
        "event_id": "second-merge",
        "patient": evs[2].patient.model_copy(update={"key": third}),
        "merge": evs[2].merge.model_copy(update={"prior_patient_key": SURVIVOR})})
    net.run([event(a40)])  # C's handover waits at A behind B's absorb
    assert net.patients[SURVIVOR].merge_wait is not None
    net.run(net.held)
    assert net.patients[SURVIVOR].merged_into == third
    assert "GENHOSP|X1" in net.patients[third].episodes
    assert set(net.patients[third].merged_from) == {PRIOR, SURVIVOR}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask=st.lists(st.booleans(), min_size=4, max_size=4), data=st.data())
def test_any_absorb_position_gives_the_absorb_first_outputs(mask: list[bool],
                                                            data: st.DataObject) -> None:
    ctx = _ctx()
    follow = [r for r, keep in zip(_follow_ons(_j3()), mask, strict=True) if keep]
    absorb_at = data.draw(st.integers(0, len(follow)), label="absorb_at")
    expected, first = _journey(follow, 0, ctx)
    got, late = _journey(follow, absorb_at, ctx)
    assert got == expected
    assert _state_without_seen(late.patients[SURVIVOR]) == \
        _state_without_seen(first.patients[SURVIVOR])
    assert late.teams == first.teams


def _inputs_for_idempotence() -> list[PatientInput]:
    evs = _j3()
    return [evs[2], *(msg for _, _, msg in _follow_ons(evs))]


@pytest.mark.parametrize("upto", range(1, 6))
def test_applying_any_input_twice_while_waiting_equals_once(upto: int) -> None:
    ctx = _ctx()
    inputs = _inputs_for_idempotence()[:upto]
    now = inputs[0].occurred_at  # type: ignore[union-attr]
    state: PatientState | None = None
    for msg in inputs:
        state, _ = apply_patient(state, SURVIVOR, msg, now=now, ctx=ctx)
    assert state is not None
    twice, emits = apply_patient(state, SURVIVOR, inputs[-1], now=now, ctx=ctx)
    assert emits == [] and twice == state
