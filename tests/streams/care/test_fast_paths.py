"""The shortcuts the decision step takes for speed give what the plain rules give.

Copy-on-write states never change the caller's state; memoized shift windows agree with
streams.care.roster.on_shift; a team's carried-forward load totals agree with a recount.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.commands.decide_cmd import load_roster, load_rules
from hub.commands.map_cmd import map_files
from schemas.canonical import CanonicalEvent
from streams.care.assignment import (
    AssignmentConfig,
    AssignmentRequest,
    EpisodeLoad,
    TeamState,
    _on_shift,
    assign,
    release,
    update_points,
)
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun
from streams.care.roster import on_shift

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
    run = OfflineRun(ctx)
    for ev in events:
        assert isinstance(ev, CanonicalEvent)
        before = {k: (p, p.model_dump_json()) for k, p in run.patients.items()}
        run.event(ev)
        for state, as_json in before.values():
            assert state.model_dump_json() == as_json
    assert run.outputs


# Around both 2026 US DST changes and an ordinary week, to the second.
_INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 3, 6), max_value=datetime(2026, 3, 10)),
    st.datetimes(min_value=datetime(2026, 10, 30), max_value=datetime(2026, 11, 3)),
    st.datetimes(min_value=datetime(2026, 12, 21), max_value=datetime(2026, 12, 28)),
).map(lambda d: d.replace(tzinfo=UTC))


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
    for n, (op, episode, level) in enumerate(ops):
        key = f"GENHOSP|V{episode}"
        if op == "assign":
            state, _ = assign(state, AssignmentRequest(
                episode_key=key, team_id="medsurg", risk_level=level, payer_ids=(),
                language=None, specialty=None, continuity_manager_id=None,
                continuity_at=None, cause_event_id=f"c{n}"),
                now=now + timedelta(minutes=n), roster=roster, cfg=cfg)
        elif op == "release":
            state, _ = release(state, key)
        else:
            state = update_points(state, key, level, cfg)
        recount = TeamState.model_validate_json(state.model_dump_json())
        assert state.loads() == recount.loads()
        assert all(state.load(m.id) == recount.load(m.id) for m in roster.managers)
        assert state == recount


def test_a_copy_with_other_episodes_recounts() -> None:
    at = datetime(2026, 11, 3, 15, tzinfo=UTC)
    state = TeamState(team_id="t", episodes={
        "a": EpisodeLoad(manager_id="m", points=3, assigned_at=at)})
    assert state.load("m") == 3
    other = state.model_copy(update={"episodes": {
        "b": EpisodeLoad(manager_id="m", points=1, assigned_at=at)}})
    assert other.load("m") == 1 and state.load("m") == 3
