"""The timer forgets history older than ``episode.history_days``: ED visits and
discharges (the counts' inputs), and episodes that are over (closed or cancelled, every
task finished) with their tasks and flags, so a frequent visitor's record stops growing.
The continuity link (``last_manager``) stays. Late news about a forgotten episode is
news about an episode the patient never had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from mappers.hl7v2 import map_hl7v2
from schemas.canonical import CanonicalEvent
from schemas.care import TaskUpdate
from streams.care.due import next_tick_at
from streams.care.engine import CareContext, episode_over_at, tick_patient
from streams.care.offline import OfflineRun, summary_line
from streams.care.state import EpisodeState, PatientState, TaskState

HERE = Path(__file__).parent / "journeys"
T0 = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
KEY = "GENHOSP|J1001"
JUST = timedelta(microseconds=1)


@pytest.fixture
def ctx() -> CareContext:
    return CareContext(config=load_rules(None, default_tz="America/New_York"),
                       roster=load_roster(HERE / "roster.yaml"))


def _messages() -> list[str]:
    raw = (HERE / "j1_hf_admission.hl7").read_text()
    return [m.strip() for m in raw.split("\n\n") if m.strip()]


def _events(*messages: str) -> list[CanonicalEvent]:
    out = [e for m in messages
           for e in map_hl7v2(m.replace("\n", "\r").encode(), received_at=T0,
                              default_tz="America/New_York")]
    assert all(isinstance(e, CanonicalEvent) for e in out), out
    return out  # type: ignore[return-value]


def _late(message: str, trigger: str, control_id: str) -> str:
    """``message`` sent again as ``trigger`` under a new control id (a new input, not a
    redelivery, which the patient's ``seen`` ids would drop), its times unchanged."""
    lines = [line.split("|") for line in message.split("\n")]
    lines[0][8], lines[0][9] = f"ADT^{trigger}^ADT_A01", control_id
    lines[1][1] = trigger
    return "\n".join("|".join(f) for f in lines)


def _journey_done(ctx: CareContext) -> tuple[OfflineRun, datetime]:
    """j1 (three ED visits, then a heart-failure admission, discharged 2026-11-13), every
    task completed, then the timer once past every follow-up period: all four episodes
    closed. Returns the run and the last closing time."""
    run = OfflineRun(ctx)
    out = run.run(_events(*_messages()))
    tasks = [o for o in out if getattr(o, "type", None) == "task"]
    assert len(tasks) == 4
    for n, t in enumerate(tasks):
        run.task_update(TaskUpdate(task_id=t.task_id, patient_key=KEY, status="completed",
                                   at=t.decided_at + timedelta(hours=n + 1)))
    closing = datetime(2026, 12, 31, tzinfo=UTC)
    run.tick(closing)
    assert {e.status for e in run.patients[KEY].episodes.values()} == {"closed"}
    return run, closing


def test_ed_visits_discharges_and_episodes_over_are_forgotten_after_history_days(
        ctx: CareContext) -> None:
    run, closing = _journey_done(ctx)
    p = run.patients[KEY]
    history = timedelta(days=ctx.config.episode.history_days)
    assert len(p.ed_visits) == 3 and list(p.discharges) == ["GENHOSP|V1"]
    assert p.last_manager is not None and p.last_manager.manager_id == "cm-ana"
    v1 = p.episodes["GENHOSP|V1"]
    # The HF admission closed when its last task was done, hours after its discharge.
    assert v1.closed_at is not None and v1.discharge_at is not None
    assert v1.discharge_at < v1.closed_at < closing and episode_over_at(v1) == v1.closed_at
    over = [at for e in p.episodes.values() if (at := episode_over_at(e)) is not None]
    assert len(over) == 4
    times = sorted({*p.ed_visits.values(), *p.discharges.values(), *over})
    assert len(times) == 6 and closing in times

    state = p
    for at in times:
        # Kept at exactly the horizon, forgotten one microsecond past it: the due time.
        due = at + history + JUST
        assert next_tick_at(state, ctx.config) == due
        same, emits = tick_patient(state, now=due - JUST, ctx=ctx)
        assert same == state and emits == []
        state, emits = tick_patient(state, now=due, ctx=ctx)
        assert emits == []
        assert all(t > at for t in state.ed_visits.values())
        assert all(t > at for t in state.discharges.values())
        assert all((episode_over_at(e) or at) > at for e in state.episodes.values())
        if at == v1.closed_at:
            assert "GENHOSP|V1" not in state.episodes  # with its tasks and flags

    # Everything older than the horizon gone; continuity and demographics stay.
    assert (state.episodes, state.ed_visits, state.discharges) == ({}, {}, {})
    assert state.last_manager == p.last_manager and state.pcp_id == p.pcp_id
    assert next_tick_at(state, ctx.config) is None
    assert p.episodes["GENHOSP|V1"] is v1 and len(p.episodes) == 4  # input unchanged


def test_an_episode_closed_with_a_task_still_open_is_kept(ctx: CareContext) -> None:
    # Nobody updates the tasks: the follow-up period ends, the episode closes with its
    # tasks still open (escalated): they are still reported open, and an update may
    # still come, so the episode stays.
    run = OfflineRun(ctx)
    run.run(_events(*_messages()))
    run.tick(datetime(2026, 12, 31, tzinfo=UTC))
    p = run.patients[KEY]
    v1 = p.episodes["GENHOSP|V1"]
    assert v1.status == "closed" and any(t.status == "requested" for t in v1.tasks.values())
    assert episode_over_at(v1) is None
    far = datetime(2030, 1, 1, tzinfo=UTC)
    q, _ = tick_patient(p, now=far, ctx=ctx)
    assert list(q.episodes) == ["GENHOSP|V1"]  # the three ED visits are gone


def _task(status: str) -> TaskState:
    return TaskState(task_id=f"t-{status}", kind="contact", due=datetime(2026, 1, 5, tzinfo=UTC),
                     status=status, rule="r", description="d", cause_event_id="c",
                     discharge_key="k", escalated=True)


def test_a_cancelled_episode_is_forgotten_from_its_latest_time(ctx: CareContext) -> None:
    admit = datetime(2026, 1, 1, tzinfo=UTC)
    discharge = admit + timedelta(days=3)
    history = timedelta(days=ctx.config.episode.history_days)
    p = PatientState(key="X|1", episodes={
        "F|1": EpisodeState(key="F|1", status="cancelled", admit_at=admit,
                            discharge_at=discharge, tasks={"t": _task("cancelled")}),
        "F|2": EpisodeState(key="F|2", status="cancelled", admit_at=admit),
        "F|3": EpisodeState(key="F|3", status="cancelled"),  # no time: kept
        "F|4": EpisodeState(key="F|4", status="cancelled", admit_at=admit,
                            tasks={"t": _task("on-hold")}),  # a task not finished: kept
        "F|5": EpisodeState(key="F|5", status="active", admit_at=admit),  # going: kept
    })
    assert next_tick_at(p, ctx.config) == admit + history + JUST
    q, _ = tick_patient(p, now=admit + history + JUST, ctx=ctx)
    assert list(q.episodes) == ["F|1", "F|3", "F|4", "F|5"]
    assert next_tick_at(q, ctx.config) == discharge + history + JUST
    q, _ = tick_patient(q, now=discharge + history, ctx=ctx)
    assert "F|1" in q.episodes
    q, _ = tick_patient(q, now=discharge + history + JUST, ctx=ctx)
    assert list(q.episodes) == ["F|3", "F|4", "F|5"]
    assert next_tick_at(q, ctx.config) is None


def _lines(outputs: list[Any]) -> list[dict[str, Any]]:
    return [summary_line(o) for o in outputs]


def test_late_news_about_a_forgotten_episode(ctx: CareContext) -> None:
    run, closing = _journey_done(ctx)
    history = timedelta(days=ctx.config.episode.history_days)
    run.tick(closing + history + JUST)
    p = run.patients[KEY]
    assert p.episodes == {}
    tasks = [o for o in run.outputs if getattr(o, "type", None) == "task"]
    v1_discharge = _messages()[8]

    # A cancel (A11, A13) or a task update about it: nothing to cancel, nothing kept.
    for trigger, cid in (("A11", "LATE-1"), ("A13", "LATE-2")):
        (ev,) = _events(_late(v1_discharge, trigger, cid))
        assert run.event(ev, tick=False) == []
    assert run.task_update(TaskUpdate(task_id=tasks[0].task_id, patient_key=KEY,
                                      status="cancelled", at=closing + history)) == []
    assert run.patients[KEY].episodes == {}

    # Any other news with its visit number is about an episode the patient does not
    # have: _episode_for takes it as a new one, as if the visit were first seen now
    # (its history, the ED visits, is forgotten too: no frequent-ED flag any more). A
    # late A03 likewise admits and discharges it again: flags, an assignment, and its
    # TCM tasks, under the same task ids as the first time (they derive from the
    # discharge) and already overdue.
    (ev,) = _events(_late(v1_discharge, "A08", "LATE-3"))
    out = _lines(run.event(ev, tick=False))
    v1 = run.patients[KEY].episodes["GENHOSP|V1"]
    assert v1.status == "active"
    (flag,) = [o for o in out if o["type"] == "flag"]
    assert "frequent_ed" not in {r["code"] for r in flag["reasons"]}
