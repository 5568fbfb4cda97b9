"""next_tick_at (streams.care.due): before it, a tick changes nothing; at it, the timer
does what it is for (escalate, close, forget, stop waiting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.care import TaskUpdate
from streams.care.due import next_tick_at, task_counts
from streams.care.engine import CareContext, episode_over_at, tick_patient
from streams.care.offline import OfflineRun
from streams.care.state import (
    OPEN_TASK_STATUSES,
    EpisodeState,
    EpisodeStatus,
    PatientState,
    TaskState,
)

SAMPLES = Path(__file__).resolve().parents[3] / "hub" / "samples"
AT = datetime(2026, 11, 1, tzinfo=UTC)
JUST = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def run() -> OfflineRun:
    """Patients after a synthetic feed, some task updates, and one tick."""
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=load_roster(SAMPLES / "roster.yaml"), render_fhir=False)
    r = OfflineRun(ctx)
    events = [e for m in generate(FeedConfig(patients=80, bad_messages=False))
              for e in map_hl7v2(m, received_at=AT, default_tz="America/New_York")]
    for ev in events:
        r.event(ev, tick=False)
    n = 0
    for o in list(r.outputs):
        if getattr(o, "type", None) == "task" and o.status == "requested" and n < 120:
            status = ["completed", "attempted", "cancelled", "completed"][n % 4]
            r.task_update(TaskUpdate(task_id=o.task_id, patient_key=o.patient_key,
                                     status=status, at=o.decided_at + timedelta(hours=2)))
            n += 1
    return r


def _walk(state: PatientState, ctx: CareContext, limit: int = 50) -> list[datetime]:
    """Tick at each due time in turn; before each, a tick one microsecond earlier must
    change nothing. Returns the due times visited."""
    visited: list[datetime] = []
    for _ in range(limit):
        due = next_tick_at(state, ctx.config)
        if due is None:
            return visited
        early, emits = tick_patient(state, now=due - JUST, ctx=ctx)
        assert emits == [] and early == state, (state.key, due)
        state, _ = tick_patient(state, now=due, ctx=ctx)
        after = next_tick_at(state, ctx.config)
        assert after is None or after > due, "a due time that does not move loops"
        visited.append(due)
    raise AssertionError("the due times never ran out")


def test_no_tick_before_the_due_time_changes_anything(run: OfflineRun) -> None:
    walked = [_walk(p, run.ctx) for p in run.patients.values()]
    assert sum(map(len, walked)) > len(run.patients)  # escalations, closes, forgetting


def test_the_walk_forgets_every_episode_that_is_over(run: OfflineRun) -> None:
    forgotten = 0
    for p in run.patients.values():
        state = p
        for due in _walk(p, run.ctx):
            state, _ = tick_patient(state, now=due, ctx=run.ctx)
        # Left: episodes still going, or closed with a task still open (never over).
        assert all(episode_over_at(ep) is None for ep in state.episodes.values())
        forgotten += len(p.episodes.keys() - state.episodes.keys())
    assert forgotten > 0


_DAY = timedelta(days=1)
_OFFSETS = st.one_of(st.none(), st.integers(min_value=-5_000_000_000, max_value=5_000_000_000)
                     .map(lambda us: timedelta(microseconds=us)))


@st.composite
def _episodes(draw: st.DrawFn) -> EpisodeState:
    """An episode over or still going, with any of its three times set (around AT, to
    the microsecond) and tasks finished or not. (Discharged ones come from the feed: a
    discharged episode with every task done is closed by the update that finished it.)"""
    status: EpisodeStatus = draw(st.sampled_from(["closed", "cancelled", "closed",
                                                  "cancelled", "active"]))
    closed, discharge, admit = (draw(_OFFSETS) for _ in range(3))
    tasks = {f"t{n}": TaskState(
        task_id=f"t{n}", kind="contact", due=AT + _DAY * n,
        status=draw(st.sampled_from(["completed", "cancelled", "failed", "requested",
                                     "in-progress", "on-hold"])),
        escalated=draw(st.booleans()), rule="r", description="d", cause_event_id="c",
        discharge_key="k") for n in range(draw(st.integers(min_value=0, max_value=2)))}
    return EpisodeState(
        key="F|" + draw(st.text("abc", min_size=1, max_size=3)), status=status,
        closed_at=AT + closed if closed is not None else None,
        discharge_at=AT + discharge if discharge is not None else None,
        admit_at=AT + admit if admit is not None else None, tasks=tasks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(episodes=st.lists(_episodes(), max_size=6),
       ed=st.lists(_OFFSETS.filter(lambda d: d is not None), max_size=3))
def test_episodes_over_are_forgotten_exactly_at_their_due_time(
        run: OfflineRun, episodes: list[EpisodeState], ed: list[timedelta]) -> None:
    """Old closed and cancelled episodes beside the rest: one microsecond before each due
    time a tick changes nothing (the walk); at the due time of an episode that is over,
    it is gone, and what is not over stays."""
    state = PatientState(key="P|1", episodes={e.key: e for e in episodes},
                         ed_visits={f"F|e{n}": AT + d for n, d in enumerate(ed)})
    history = timedelta(days=run.ctx.config.episode.history_days)
    visited = _walk(state, run.ctx)
    for ep in state.episodes.values():
        over_at = episode_over_at(ep)
        if over_at is None:
            continue
        assert over_at + history + JUST in visited  # a due time of its own
        kept, _ = tick_patient(state, now=over_at + history, ctx=run.ctx)
        assert ep.key in kept.episodes
        gone, _ = tick_patient(state, now=over_at + history + JUST, ctx=run.ctx)
        assert ep.key not in gone.episodes
    far, _ = tick_patient(state, now=AT + 10 * history, ctx=run.ctx)
    assert set(far.episodes) == {k for k, e in state.episodes.items()
                                 if episode_over_at(e) is None}


def test_the_due_time_is_an_open_tasks_escalation(run: OfflineRun) -> None:
    overdue_after = timedelta(hours=run.ctx.config.followup.escalate_after_hours)
    for p in run.patients.values():
        pending = [t.due + overdue_after for ep in p.episodes.values()
                   for t in ep.tasks.values()
                   if t.status in OPEN_TASK_STATUSES and not t.escalated]
        due = next_tick_at(p, run.ctx.config)
        if pending:
            assert due is not None and due <= min(pending)
            _, emits = tick_patient(p, now=min(pending), ctx=run.ctx)
            assert any(e.value.rule == "task.overdue" for e in emits)  # type: ignore[attr-defined]


def test_a_merged_away_key_is_never_due(run: OfflineRun) -> None:
    p = next(iter(run.patients.values()))
    assert next_tick_at(p.model_copy(update={"merged_into": "X|1"}), run.ctx.config) is None
    assert next_tick_at(PatientState(key="X|2"), run.ctx.config) is None


def test_task_counts(run: OfflineRun) -> None:
    totals = [task_counts(p) for p in run.patients.values()]
    assert sum(o for o, _ in totals) > 0
    later = max(t.due for p in run.patients.values() for ep in p.episodes.values()
                for t in ep.tasks.values()) + timedelta(days=2)
    ticked = [tick_patient(p, now=later, ctx=run.ctx)[0] for p in run.patients.values()]
    counts = [task_counts(p) for p in ticked]
    assert all(overdue == opened for opened, overdue in counts)  # every open one escalated
