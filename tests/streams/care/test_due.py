"""next_tick_at (streams.care.due): before it, a tick changes nothing; at it, the timer
does what it is for (escalate, close, forget, stop waiting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.care import TaskUpdate
from streams.care.due import next_tick_at, task_counts
from streams.care.engine import CareContext, tick_patient
from streams.care.offline import OfflineRun
from streams.care.state import OPEN_TASK_STATUSES, PatientState

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
