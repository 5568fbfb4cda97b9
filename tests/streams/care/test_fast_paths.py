"""The shortcuts the decision step takes for speed give what the plain rules give.

Copy-on-write states never change the caller's state, and states handed over give what
copies give; memoized shift windows agree with
streams.care.roster.on_shift; a team's carried-forward load totals agree with a recount;
unvalidated constructors build what pydantic builds; memoized assessments and plans
give the same outputs cold or warm; derived ids are uuid5 as before.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from hub.commands.decide_cmd import load_roster, load_rules
from hub.commands.map_cmd import map_files
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.canonical import CanonicalEvent, EventKind, derive_id
from schemas.care import AssignmentOutput, FlagOutput, TaskOutput, TaskUpdate, TeamRequest
from streams.care import risk
from streams.care.assignment import (
    AssignmentConfig,
    AssignmentRequest,
    CaseloadView,
    Decision,
    EpisodeLoad,
    TeamState,
    TeamTotals,
    _decision,
    _members_eligibility,
    assign,
    eligibility_skip,
    release,
    update_points,
)
from streams.care.charlson import diagnoses_key
from streams.care.engine import CareContext, _assessed, _assessed_of, _signature
from streams.care.followup import TaskKind
from streams.care.offline import OfflineRun, summary_line
from streams.care.risk import (
    RiskConfig,
    RiskFacts,
    RiskFlag,
    RiskInput,
    RiskResult,
    assess_facts,
    assessment_parts,
    risk_facts,
    risk_facts_of,
)
from streams.care.roster import Manager, on_shift, shift_occurrences, teams_for
from streams.care.state import EpisodeState, PatientState, TaskState
from streams.care.trusted import constructor, evolve, frozen_instance

HERE = Path(__file__).parent
SAMPLE_ROSTER = HERE.parents[2] / "hub" / "samples" / "roster.yaml"
ROSTERS = [load_roster(SAMPLE_ROSTER), load_roster(HERE / "journeys" / "roster.yaml")]
MANAGERS = [m for r in ROSTERS for m in r.managers]


def test_states_passed_in_are_never_changed() -> None:
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=ROSTERS[1])
    files = ["j1_hf_admission.hl7", "j1_readmission.hl7", "j2_cancel_discharge.hl7",
             "j3_merge.hl7", "j4_off_shift.hl7"]
    events = list(map_files([str(HERE / "journeys" / f) for f in files],
                            default_tz="America/New_York",
                            received_at=datetime(1970, 1, 1, tzinfo=UTC)))
    run = OfflineRun(ctx, in_place=False)
    for ev in events:
        assert isinstance(ev, CanonicalEvent)
        before = {k: (p, p.model_dump_json()) for k, p in run.patients.items()}
        run.event(ev)
        for state, as_json in before.values():
            assert state.model_dump_json() == as_json
    assert run.outputs


def _handed_over_or_copied(in_place: bool) -> tuple[list[str], list[str]]:
    """Outputs and final states of journeys and a synthetic feed run end to end: events
    with the timer, task updates of every kind, then timers far ahead (escalations,
    closes, forgetting)."""
    config = load_rules(None, default_tz="America/New_York")
    events = [*_journey_events(), *(
        e for m in generate(FeedConfig(patients=80, bad_messages=False))
        for e in map_hl7v2(m, received_at=datetime(2026, 11, 1, tzinfo=UTC),
                           default_tz="America/New_York"))]
    run = OfflineRun(CareContext(config=config, roster=ROSTERS[0]), in_place=in_place)
    for ev in events:
        run.event(ev)
    statuses = ["completed", "attempted", "attempted", "cancelled", "in-progress"]
    tasks = [o for o in list(run.outputs) if isinstance(o, TaskOutput)]
    for n, o in enumerate(tasks[:120]):
        run.task_update(TaskUpdate(task_id=o.task_id, patient_key=o.patient_key,
                                   status=statuses[n % 5],
                                   at=o.decided_at + timedelta(hours=n % 7 + 1)))
    last = max(e.occurred_at for e in events)
    for days in (1, 3, 10, 40, 400):
        run.tick(last + timedelta(days=days))
    return ([o.model_dump_json() for o in run.outputs],
            [run.patients[k].model_dump_json() for k in sorted(run.patients)])


def test_states_handed_over_give_what_copies_give() -> None:
    # in_place=True skips the copies (the engine module docstring): the same outputs and
    # the same final states as copy-on-write, merges, cancels and timers included.
    handed, copied = _handed_over_or_copied(True), _handed_over_or_copied(False)
    assert len(handed[0]) > 500
    assert handed == copied


# Around both 2026 US DST changes and an ordinary week, to the second.
_INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 3, 6), max_value=datetime(2026, 3, 10)),
    st.datetimes(min_value=datetime(2026, 10, 30), max_value=datetime(2026, 11, 3)),
    st.datetimes(min_value=datetime(2026, 12, 21), max_value=datetime(2026, 12, 28)),
).map(lambda d: d.replace(tzinfo=UTC))


def _on_shift(manager: Manager, at: datetime) -> bool:
    """The shift rule from scratch (no memo): the manager's local day, PTO days off,
    yesterday's overnight shift, UTC compare."""
    local_day = at.astimezone(manager.zone).date()
    if local_day in manager.pto:
        return False
    instant = at.astimezone(UTC)
    return any(start <= instant < end for start, end in
               shift_occurrences(manager, local_day - timedelta(days=1), local_day))


@settings(max_examples=400, deadline=None)
@given(at=_INSTANTS, index=st.integers(0, len(MANAGERS) - 1))
def test_memoized_shift_check_agrees_with_the_roster(at: datetime, index: int) -> None:
    manager = MANAGERS[index]
    assert _on_shift(manager, at) == on_shift(manager, at)
    assert _on_shift(manager, at) == on_shift(manager, at)  # a cache hit, same answer


_OPS = st.lists(st.tuples(st.sampled_from(["assign", "release", "points"]),
                          st.integers(0, 12), st.sampled_from(["low", "moderate", "high"])),
                max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS)
def test_carried_load_totals_agree_with_a_recount(ops: list[tuple[str, int, str]]) -> None:
    roster = ROSTERS[0]
    cfg = AssignmentConfig()
    now = datetime(2026, 11, 3, 15, tzinfo=UTC)  # a Tuesday afternoon in New York
    state = TeamState(team_id="medsurg")
    # The stored form (totals carried, rows in a store) side by side with the value.
    rows: dict[str, EpisodeLoad] = {}
    view = CaseloadView(TeamTotals(team_id="medsurg"), rows.get)
    for n, (op, episode, level) in enumerate(ops):
        key = f"GENHOSP|V{episode}"
        if op == "assign":
            req = AssignmentRequest(
                episode_key=key, team_id="medsurg", risk_level=level, payer_ids=(),
                language=None, specialty=None, continuity_manager_id=None,
                continuity_at=None, cause_event_id=f"c{n}")
            at = now + timedelta(minutes=n)
            state, d = assign(state, req, now=at, roster=roster, cfg=cfg)
            view, d2 = assign(view, req, now=at, roster=roster, cfg=cfg)
            assert d == d2
        elif op == "release":
            state, d = release(state, key)
            view, d2 = release(view, key)
            assert d == d2
        else:
            state = update_points(state, key, level, cfg)
            view = update_points(view, key, level, cfg)
        for k, row in view.changes.items():
            if row is None:
                rows.pop(k, None)
            else:
                rows[k] = row
        view = CaseloadView(view.totals, rows.get)
        recount = TeamState.model_validate_json(state.model_dump_json())
        assert state.loads() == recount.loads()
        assert all(state.load(m.id) == recount.load(m.id) for m in roster.managers)
        assert state == recount
        assert view.totals == recount.totals and rows == recount.episodes


def test_a_copy_with_other_episodes_recounts() -> None:
    at = datetime(2026, 11, 3, 15, tzinfo=UTC)
    state = TeamState(team_id="t", episodes={
        "a": EpisodeLoad(manager_id="m", points=3, assigned_at=at)})
    assert state.load("m") == 3
    other = state.model_copy(update={"episodes": {
        "b": EpisodeLoad(manager_id="m", points=1, assigned_at=at)}})
    assert other.load("m") == 1 and state.load("m") == 3


_PARTS = st.lists(st.one_of(st.none(), st.integers(), st.text(), st.sampled_from(
    ["", "\x1f", "é€", "tcm.contact.2bd", EventKind.ADMIT, TaskKind.MED_REC])), max_size=6)


@settings(max_examples=500, deadline=None)
@given(parts=_PARTS)
def test_derive_id_is_uuid5_over_the_joined_parts(parts: list[str | int | None]) -> None:
    # The ids published so far were uuid.uuid5 of exactly this name: they must not move.
    name = "\x1f".join("" if p is None else str(p) for p in parts)
    namespace = uuid.UUID("8f0d6a5e-3c1b-4f5e-9a43-7c2b1d0e6f11")
    assert derive_id(*parts) == str(uuid.uuid5(namespace, name))



AT = datetime(2026, 11, 3, 15, tzinfo=UTC)
_BUILT: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (TaskOutput, {"id": "o", "cause_event_id": "e", "rule": "tcm.med_rec", "patient_key": "A|1",
                  "decided_at": AT, "task_id": "t", "kind": "med_rec", "due": AT,
                  "status": "requested", "description": "d"}),
    (AssignmentOutput, {"id": "o", "cause_event_id": "e", "rule": "assignment.least_loaded",
                        "patient_key": "A|1", "decided_at": AT, "status": "assigned",
                        "reason": "least_loaded", "considered": [["cm-a", "chosen"]]}),
    (TeamRequest, {"op": "assign", "team": "t", "patient_key": "A|1", "encounter_key": "F|1",
                   "cause_event_id": "e", "decided_at": AT, "payer_ids": ["P1"]}),
    (EpisodeState, {"key": "F|1", "facility": "F", "encounter_id": "1", "status": "new"}),
    (TaskState, {"task_id": "t", "kind": "visit", "due": AT, "rule": "r", "description": "d",
                 "cause_event_id": "e", "discharge_key": "k"}),
    (PatientState, {"key": "A|1"}),
]


@pytest.mark.parametrize(("cls", "values"), _BUILT)
def test_unvalidated_constructor_builds_what_pydantic_builds(
        cls: type[BaseModel], values: dict[str, Any]) -> None:
    built, validated = constructor(cls)(**values), cls(**values)
    assert built == validated
    assert list(built.__dict__) == list(validated.__dict__)  # field order: the JSON's
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_dump(mode="json", exclude_none=True) == \
        validated.model_dump(mode="json", exclude_none=True)
    # Defaults made by a factory are the object's own.
    other = constructor(cls)(**values)
    for name, value in built.__dict__.items():
        if isinstance(value, list | dict) and name not in values:
            assert value is not other.__dict__[name]
    copied = evolve(built, **{k: v for k, v in values.items() if k == "status"})
    assert copied == built.model_copy() and copied is not built
    assert copied.__dict__ is not built.__dict__


def test_unvalidated_constructor_refuses_unknown_or_missing_fields() -> None:
    make = constructor(TaskState)
    with pytest.raises(TypeError):
        make(task_id="t")  # required fields missing
    with pytest.raises(TypeError):
        make(**_BUILT[4][1], colour="red")


def test_models_with_validators_are_built_validated() -> None:
    class Checked(BaseModel):
        x: int

        @field_validator("x")
        @classmethod
        def _positive(cls, value: int) -> int:
            assert value > 0
            return value

    with pytest.raises(TypeError):
        constructor(Checked)


def _journey_events() -> list[CanonicalEvent]:
    files = ["j1_hf_admission.hl7", "j1_readmission.hl7", "j2_cancel_discharge.hl7",
             "j3_merge.hl7", "j4_off_shift.hl7"]
    out = [e for e in map_files([str(HERE / "journeys" / f) for f in files],
                                default_tz="America/New_York",
                                received_at=datetime(1970, 1, 1, tzinfo=UTC))]
    assert all(isinstance(e, CanonicalEvent) for e in out)
    return out  # type: ignore[return-value]


def test_memoized_context_gives_the_same_outputs_cold_or_warm() -> None:
    # The context's memos (assessments by input and by facts, flag parts) and the module
    # memos (plans, diagnosis facts) must not change a byte, whatever ran before.
    config = load_rules(None, default_tz="America/New_York")
    events = _journey_events()
    warm = CareContext(config=config, roster=ROSTERS[1])
    OfflineRun(warm).run(events)
    assert warm.assessments
    again = OfflineRun(warm).run(events)
    cold = OfflineRun(CareContext(config=config, roster=ROSTERS[1])).run(events)
    assert [o.model_dump_json() for o in again] == [o.model_dump_json() for o in cold]


def test_last_flag_is_the_flag_as_json() -> None:
    # The engine writes last_flag out by hand: it must be flag.model_dump(mode="json"),
    # key for key, in order (it is stored, and withdrawn flags are rebuilt from it).
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=ROSTERS[1], render_fhir=False)
    run = OfflineRun(ctx)
    flags = {o.id: o for o in run.run(_journey_events()) if isinstance(o, FlagOutput)}
    stored = [ep.last_flag for p in run.patients.values() for ep in p.episodes.values()
              if ep.last_flag is not None and ep.last_flag["status"] == "active"]
    assert stored
    for last in stored:
        flag = flags[last["id"]]
        assert json.dumps(last) == json.dumps(flag.model_dump(mode="json"))
        assert FlagOutput.model_validate(last) == flag


def test_output_lines_do_not_depend_on_fhir_rendering() -> None:
    config = load_rules(None, default_tz="America/New_York")
    events = _journey_events()
    plain = OfflineRun(CareContext(config=config, roster=ROSTERS[1], render_fhir=False))
    fhir = OfflineRun(CareContext(config=config, roster=ROSTERS[1]))
    assert [summary_line(o) for o in plain.run(events)] == \
        [summary_line(o) for o in fhir.run(events)]


@pytest.mark.parametrize("roster", ROSTERS)
def test_roster_indexes_agree_with_a_scan(roster: Any) -> None:
    for team in roster.teams:
        assert roster.team(team.id) is team
        assert roster.members(team.id) == tuple(sorted(
            (m for m in roster.managers if team.id in m.teams), key=lambda m: m.id))
    for manager in roster.managers:
        assert roster.manager(manager.id) is manager
    assert roster.team("nope") is None and roster.manager("nope") is None
    assert roster.members("nope") == ()
    for unit in (None, "4WEST", "ICU", "ED", "nowhere"):
        first = teams_for(roster, "GENHOSP", unit)
        assert teams_for(roster, "GENHOSP", unit) == first  # from the memo
        assert teams_for(roster, " genhosp ", unit) == first
    copy = roster.model_copy(update={"teams": ()})
    assert copy.team(roster.teams[0].id) is None  # a copy does not inherit the indexes


def test_frozen_instance_is_the_dataclass_built_by_its_init() -> None:
    fields: dict[str, Any] = {
        "episode_key": "F|1", "team_id": "t", "risk_level": "high", "payer_ids": ("P1",),
        "language": "es", "specialty": None, "continuity_manager_id": None,
        "continuity_at": None, "cause_event_id": "e"}
    built = frozen_instance(AssignmentRequest, **fields)
    assert built == AssignmentRequest(**fields) and hash(built) == hash(AssignmentRequest(**fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.team_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        frozen_instance(AssignmentRequest, episode_key="F|1")


_FACTS = st.builds(
    RiskFacts,
    los=st.one_of(st.none(), st.integers(0, 20)), emergent=st.booleans(),
    emergent_reason=st.sampled_from([None, "admission type E", "admit source 7"]),
    diagnoses=st.lists(st.sampled_from([("I50.9", "I10"), ("J44.1", "I10"), ("E11.9", "I10"),
                                        ("Z59.0", "I10"), ("C34.90", "I10"), ("R69", None)]),
                       max_size=4, unique=True).map(lambda d: diagnoses_key(d)),
    ed_6m=st.integers(0, 6), recent_ed=st.integers(0, 6),
    readmission_days=st.one_of(st.none(), st.integers(0, 30)),
    discharge_disposition=st.sampled_from([None, "01", "07", "AMA"]), final=st.booleans())
_WARM_PARTS: dict[Any, Any] = {}


@settings(max_examples=300, deadline=None)
@given(facts=_FACTS, stage=st.sampled_from(["admission", "discharge"]))
def test_assessed_pieces_agree_with_the_result(facts: RiskFacts, stage: str) -> None:
    # _assessed builds the signature and the JSON from memoized pieces (the risk rules
    # hand out cached factors and flags): they must be what the result itself gives,
    # with the memo warm or cold.
    cfg = RiskConfig()
    result = assess_facts(facts, cfg)
    for parts in (_WARM_PARTS, {}):
        a = _assessed(stage, result, parts)
        assert a.signature == _signature(stage, result)
        flag_json = {"lace": dataclasses.asdict(result.lace),
                     "charlson": {"score": result.charlson.score,
                                  "categories": list(result.charlson.categories)},
                     "factors": [dataclasses.asdict(f) for f in result.factors],
                     "reasons": [{"code": f.code, "display": f.display,
                                  "factors": [dataclasses.asdict(x) for x in f.factors]}
                                 for f in result.flags]}
        assert json.dumps(a.json) == json.dumps(flag_json)
        assert [r.model_dump() for r in a.reasons] == flag_json["reasons"]


_CONFIGS = [RiskConfig(), RiskConfig(flag_lace_at=0, lace_moderate_at=2, lace_high_at=4),
            RiskConfig(enabled_flags=("cms_condition", "frequent_ed")),
            RiskConfig(enabled_flags=(), frequent_ed_visits=1, readmission_days=7)]
_WARM_BLOCK_PARTS: dict[Any, Any] = {}


@settings(max_examples=300, deadline=None)
@given(facts=_FACTS, stage=st.sampled_from(["admission", "discharge"]),
       cfg=st.sampled_from(_CONFIGS))
def test_assessment_from_blocks_is_the_assessment_of_the_result(
        facts: RiskFacts, stage: str, cfg: RiskConfig) -> None:
    # The engine assembles a cold assessment from the risk rules' cached blocks
    # (_assessed_of); it must be what the general form builds from assess_facts' result,
    # with the memo of blocks warm or cold.
    want = _assessed(stage, assess_facts(facts, cfg), {})
    for parts in (_WARM_BLOCK_PARTS, {}):
        got = _assessed_of(stage, assessment_parts(facts, cfg), parts)
        assert got[:6] == want[:6]
        assert json.dumps(got.json) == json.dumps(want.json)


@settings(max_examples=200, deadline=None)
@given(facts=_FACTS)
def test_cached_lace_parts_and_diagnosis_flags_agree_with_their_pieces(facts: RiskFacts) -> None:
    # assess_facts takes the LACE factors, the high_lace flag and the diagnosis flags
    # from caches keyed by plain values: they must be the flags built from the factors.
    cfg = RiskConfig(flag_lace_at=0)
    r = assess_facts(facts, cfg)
    diagnosis = risk._diagnosis_facts(facts.diagnoses)
    assert r.factors == (
        risk._l_factor(facts.los, facts.final, r.lace.l),
        risk._a_factor(facts.emergent, facts.emergent_reason, r.lace.a),
        risk._c_factor(r.lace.c, diagnosis.c_detail),
        risk._e_factor(facts.ed_6m, cfg.ed_lookback_days, r.lace.e))
    flags = {f.code: f for f in r.flags}
    assert flags["high_lace"].factors == tuple(f for f in r.factors if f.points)
    assert flags.get("cms_condition") == (RiskFlag(
        "cms_condition", "CMS readmission-program (HRRP) condition", diagnosis.cms)
        if diagnosis.cms else None)
    assert flags.get("social_needs") == (RiskFlag(
        "social_needs", "Social needs (ICD-10 Z55-Z65)", diagnosis.social)
        if diagnosis.social else None)


@pytest.mark.parametrize("roster", ROSTERS)
@pytest.mark.parametrize("language", [None, "es", "Spanish", "fr"])
@pytest.mark.parametrize("payers", [(), ("MCR",), (" payer2 ", "p1")])
def test_memoized_eligibility_agrees_with_the_rule(roster: Any, language: str | None,
                                                   payers: tuple[str, ...]) -> None:
    for team in roster.teams:
        req = frozen_instance(
            AssignmentRequest, episode_key="F|1", team_id=team.id, risk_level="high",
            payer_ids=payers, language=language, specialty=None, continuity_manager_id=None,
            continuity_at=None, cause_event_id="e")
        expected = tuple((m, eligibility_skip(m, req)) for m in roster.members(team.id))
        assert _members_eligibility(roster, req) == expected
        assert _members_eligibility(roster, req) == expected  # from the memo


_ZONES = st.sampled_from(["America/New_York", "America/Chicago", "UTC", "Asia/Kolkata"])
_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=2))])
_TIMES = st.builds(lambda d, tz: d.replace(tzinfo=UTC).astimezone(tz),
                   st.datetimes(min_value=datetime(2026, 1, 1),
                                max_value=datetime(2026, 12, 31)), _OFFSETS)
_INPUTS = st.builds(
    RiskInput, admit_at=st.one_of(st.none(), _TIMES), as_of=_TIMES, tz=_ZONES,
    emergent=st.booleans(), emergent_reason=st.sampled_from([None, "admission type E"]),
    diagnoses=st.lists(st.sampled_from([("I50.9", "I10"), ("Z59.0", "I10"), ("R69", None)]),
                       max_size=3, unique=True).map(tuple),
    prior_ed_visits=st.lists(_TIMES, max_size=5).map(tuple),
    prior_discharges=st.lists(_TIMES, max_size=4).map(tuple),
    discharge_disposition=st.sampled_from([None, "01", "07"]), final=st.booleans())


def _facts_as_before(inp: RiskInput, cfg: RiskConfig) -> RiskFacts:
    """risk_facts as it was before it took its fields one by one (the general form)."""
    zone = ZoneInfo(inp.tz)
    as_of_date = inp.as_of.astimezone(zone).date()
    if inp.admit_at is None:
        ref, ref_date, los = inp.as_of, as_of_date, None
    else:
        ref, ref_date = inp.admit_at, inp.admit_at.astimezone(zone).date()
        los = max(0, (as_of_date - ref_date).days)
    ed_days = [(ref_date - v.astimezone(zone).date()).days
               for v in inp.prior_ed_visits if v < ref]
    readmission = None
    before = [d for d in inp.prior_discharges if d.astimezone(zone).date() <= ref_date and
              d <= ref]
    if before:
        days = (ref_date - max(before).astimezone(zone).date()).days
        readmission = days if days <= cfg.readmission_days else None
    return RiskFacts(
        los=los, emergent=inp.emergent, emergent_reason=inp.emergent_reason,
        diagnoses=diagnoses_key(inp.diagnoses),
        ed_6m=sum(1 for d in ed_days if d <= cfg.ed_lookback_days),
        recent_ed=sum(1 for d in ed_days if d <= cfg.frequent_ed_days),
        readmission_days=readmission, discharge_disposition=inp.discharge_disposition,
        final=inp.final)


@settings(max_examples=400, deadline=None)
@given(inp=_INPUTS)
def test_facts_from_fields_are_the_facts_of_the_input(inp: RiskInput) -> None:
    # The engine calls risk_facts_of with a RiskInput's fields (no RiskInput built), and
    # it builds the RiskFacts tuple without its constructor: same facts, same class.
    cfg = RiskConfig()
    expected = _facts_as_before(inp, cfg)
    facts = risk_facts_of(*(getattr(inp, f.name) for f in dataclasses.fields(inp)), cfg)
    assert type(facts) is RiskFacts and facts == expected and facts._asdict() == \
        expected._asdict()
    assert risk_facts(inp, cfg) == expected
    # The result built by frozen_instance is the one RiskResult's own __init__ builds.
    result = assess_facts(facts, cfg)
    rebuilt = dataclasses.replace(result)  # through RiskResult.__init__
    assert result == rebuilt and type(result) is RiskResult
    assert list(vars(result).items()) == list(vars(rebuilt).items())  # same order too


def test_facts_from_fields_refuse_naive_times() -> None:
    cfg = RiskConfig()
    aware = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        risk_facts_of(None, datetime(2026, 3, 1), "UTC", False, None, (), (), (), None, True,
                      cfg)
    with pytest.raises(ValueError, match="aware"):
        risk_facts_of(aware, aware, "UTC", False, None, (), (datetime(2026, 2, 1),), (), None,
                      True, cfg)
    with pytest.raises(ValueError, match="aware"):
        risk_facts_of(aware, aware, "UTC", False, None, (), (), (datetime(2026, 2, 1),), None,
                      True, cfg)


def test_caseload_views_are_the_views_their_constructor_builds() -> None:
    # with_episode builds views with their dict set whole, not dataclasses.replace /
    # CaseloadView(...): equal fields, same class, still frozen; each with a changes dict
    # of its own (the offline run empties it once stored).
    at = datetime(2026, 11, 3, 15, tzinfo=UTC)
    rows = {"a": EpisodeLoad(manager_id="m", points=3, assigned_at=at)}
    view = CaseloadView(TeamTotals(team_id="t").moved(None, rows["a"]), rows.get)
    row = EpisodeLoad(manager_id="n", points=1, assigned_at=at)
    moved = view.with_episode("b", row)
    expected = dataclasses.replace(view, totals=view.totals.moved(None, row),
                                   changes={"b": row})
    assert type(moved) is CaseloadView and moved == expected
    assert moved.episode("b") == row and moved.episode("a") == rows["a"]
    gone = moved.with_episode("a", None)
    assert gone.changes == {"b": row, "a": None} and gone.load("m") == 0
    assert view.changes == {}  # the view it came from is unchanged
    assert moved.changes is not view.changes and gone.changes is not moved.changes
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.totals = view.totals  # type: ignore[misc]


def _all_journeys_run() -> OfflineRun:
    """Every scripted journey file, in name order, through one offline run."""
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=ROSTERS[1])
    events = list(map_files([str(p) for p in sorted((HERE / "journeys").glob("*.hl7"))],
                            default_tz="America/New_York",
                            received_at=datetime(1970, 1, 1, tzinfo=UTC)))
    run = OfflineRun(ctx)
    for ev in events:
        assert isinstance(ev, CanonicalEvent)
        run.event(ev)
    return run


def test_states_written_in_place_keep_every_field_set() -> None:
    # The engine writes its own copies' fields into __dict__ (no pydantic __setattr__,
    # which would also add the name to the fields-set): every state it builds already
    # names every field there, so the two ways of writing leave the same object.
    run = _all_journeys_run()
    assert run.patients
    for p in run.patients.values():
        if p.merged_into:
            continue  # a merged-away key is a validated, fresh record
        assert p.model_fields_set == set(PatientState.model_fields)
        assert PatientState.model_validate_json(p.model_dump_json()) == p
        for ep in p.episodes.values():
            assert ep.model_fields_set == set(EpisodeState.model_fields)
            for t in ep.tasks.values():
                assert t.model_fields_set == set(TaskState.model_fields)


def test_decisions_built_whole_are_the_decisions_their_init_builds() -> None:
    # assign and release build decisions with their dict set whole (assignment._decision).
    fields: dict[str, Any] = {
        "status": "unassigned", "manager_id": None, "team_id": "t", "supervisor": "sup",
        "reason": "all_at_cap", "points": 3, "load_after": None, "cap": None,
        "considered": (("m1", "at_cap"), ("m2", "off_shift")), "continuity": "expired",
        "episode_key": "F|1", "cause_event_id": "e"}
    built = _decision(**fields)
    assert type(built) is Decision and built == Decision(**fields)
    assert vars(built) == vars(Decision(**fields)) and hash(built) == hash(Decision(**fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.reason = "other"  # type: ignore[misc]


def _recount(team_id: str, rows: dict[str, EpisodeLoad]) -> TeamTotals:
    loads: dict[str, int] = {}
    opened: dict[str, int] = {}
    queued = queued_points = 0
    for row in rows.values():
        if row.manager_id is None:
            queued += 1
            queued_points += row.points
        else:
            loads[row.manager_id] = loads.get(row.manager_id, 0) + row.points
            opened[row.manager_id] = opened.get(row.manager_id, 0) + 1
    return TeamTotals(team_id=team_id, loads=loads, open=opened, queued=queued,
                      queued_points=queued_points)


_HOLDINGS = st.one_of(st.none(), st.tuples(st.sampled_from([None, "m", "n"]),
                                           st.integers(1, 3)))


@settings(max_examples=200, deadline=None)
@given(others=st.lists(st.tuples(st.sampled_from([None, "m", "n"]), st.integers(1, 3)),
                       max_size=4),
       old=_HOLDINGS, new=_HOLDINGS)
def test_moved_totals_agree_with_a_recount(others: list[tuple[str | None, int]],
                                            old: tuple[str | None, int] | None,
                                            new: tuple[str | None, int] | None) -> None:
    # TeamTotals.moved has a queue-only path (no manager's entry changes, the managers'
    # dicts shared; the same totals back when nothing moves): it agrees with a recount.
    at = datetime(2026, 11, 3, 15, tzinfo=UTC)
    rows = {f"k{i}": EpisodeLoad(manager_id=m, points=p, assigned_at=at)
            for i, (m, p) in enumerate(others)}
    before = dict(rows)
    old_row = new_row = None
    if old is not None:
        old_row = before["x"] = EpisodeLoad(manager_id=old[0], points=old[1], assigned_at=at)
    if new is not None:
        new_row = rows["x"] = EpisodeLoad(manager_id=new[0], points=new[1], assigned_at=at)
    totals = _recount("t", before)
    kept = totals.model_dump()
    moved = totals.moved(old_row, new_row)
    assert moved == _recount("t", rows)
    assert totals.model_dump() == kept  # the totals it came from are unchanged
    assert moved.model_fields_set == set(TeamTotals.model_fields)


def test_offline_views_read_their_own_rows() -> None:
    # The offline run rebuilds a team's view over the lookup with_episode passed on: it
    # must be the get of that team's rows, as when the run built the view.
    run = _all_journeys_run()
    assert run.teams
    for team_id, view in run.teams.items():
        assert view.lookup == run.team_rows[team_id].get and not view.changes
        assert view.totals == _recount(team_id, run.team_rows[team_id])
