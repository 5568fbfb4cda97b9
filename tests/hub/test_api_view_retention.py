"""The APIs' views forget closed items after ``HUB_API_VIEW_RETAIN_DAYS`` (pure: records
applied by hand, no broker, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.agency_api import ReferralView
from hub.api_common import Retention, past_retention
from hub.care_api import TaskView
from hub.settings import Settings
from schemas.care import TaskOutput
from schemas.referrals import ReferralOutput

from .test_agency_api import referral
from .test_care_api import task

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
RETAIN = timedelta(days=30)


def ref(task_id: str, at: datetime, *, status: str = "requested", version: int = 1,
        agency: str = "agency-a") -> ReferralOutput:
    return referral(task_id, agency, status=status, version=version).model_copy(
        update={"decided_at": at})


def load(view: TaskView, out: TaskOutput, partition: int = 0) -> bool:
    return view.apply_record(out.model_dump_json().encode(), partition)


V = TypeVar("V", ReferralView, TaskView)


def _ready(view: V) -> V:
    """A view caught up on its topics: only then does it forget (see Retention)."""
    view.mark_ready()
    return view


def test_the_rule_keeps_the_boundary() -> None:
    assert not past_retention(T0, T0 + RETAIN, RETAIN)
    assert past_retention(T0, T0 + RETAIN + timedelta(microseconds=1), RETAIN)


def test_retention_pops_each_entry_once_oldest_first() -> None:
    r: Retention[str] = Retention(RETAIN)
    r.arm()
    r.closed(T0 + DAY, "b")
    r.closed(T0, "a")
    r.saw(T0 + RETAIN + 2 * DAY)
    r.saw(T0)  # an older record does not move "now" back
    assert [k for _, k in r.due()] == ["a", "b"]
    assert list(r.due()) == [] and len(r) == 0


def test_the_setting_defaults_to_30_days() -> None:
    assert Settings().api_view_retain_days == 30
    assert ReferralView().retention.retain == timedelta(days=30)
    assert TaskView(Settings(api_view_retain_days=2)).retention.retain == 2 * DAY


# ------------------------------------------------------------------------ referrals


def test_a_closed_referral_past_the_retention_is_forgotten_an_open_one_stays() -> None:
    view = _ready(ReferralView(retain=RETAIN))
    view.apply(ref("done", T0, status="completed", version=2))
    view.apply(ref("old-open", T0 - 400 * DAY))
    view.posted("done", "completed")
    view.apply(ref("new", T0 + RETAIN + DAY))
    assert view.get("done") is None and view.effective_status("done") is None
    assert {r.id for r in view.all()} == {"old-open", "new"}
    assert {r.id for r in view.for_agency("agency-a")} == {"old-open", "new"}
    assert "done" not in view._by_id and "done" not in view._pending
    assert view.figures()["api_views"]["referrals"] == {"held": 2, "forgotten": 1}


def test_a_referral_exactly_at_the_retention_stays() -> None:
    view = _ready(ReferralView(retain=RETAIN))
    view.apply(ref("done", T0, status="cancelled"))
    view.apply(ref("other", T0 + RETAIN))
    assert view.get("done") is not None
    view.apply(ref("other", T0 + RETAIN + timedelta(seconds=1), version=2))
    assert view.get("done") is None


def test_a_late_referral_record_brings_it_back() -> None:
    view = _ready(ReferralView(retain=RETAIN))
    view.apply(ref("r", T0, status="rejected", version=3))
    view.apply(ref("other", T0 + 40 * DAY))
    assert view.get("r") is None
    assert view.apply(ref("r", T0 + 41 * DAY, status="entered-in-error", version=4))
    got = view.get("r")
    assert got is not None and got.status == "entered-in-error"


# ---------------------------------------------------------------------------- tasks


def test_a_closed_task_past_the_retention_is_forgotten_an_open_one_stays() -> None:
    view = _ready(TaskView(retain=RETAIN))
    load(view, task("done", status="completed", decided_at=T0, encounter="E|1"))
    load(view, task("old-open", decided_at=T0 - 400 * DAY, encounter="E|2"))
    view.posted("done", "completed")
    load(view, task("new", decided_at=T0 + RETAIN + DAY, encounter="E|3"))
    assert view.get("done") is None and view.effective_status("done") is None
    assert {r.task_id for r in view.all()} == {"old-open", "new"}
    assert "done" not in view._by_id and "done" not in view._pending
    assert view.figures()["api_views"]["tasks"] == {"held": 2, "forgotten": 1}


def test_nothing_is_forgotten_before_the_view_has_caught_up() -> None:
    # While catching up, a partition read later may hold an older record of an item a
    # faster partition closed (a merge republishes under another key): forgetting the
    # item then would let that stale record in. So forgetting waits for ready.
    view = TaskView(retain=RETAIN)
    load(view, task("done", status="completed", decided_at=T0, encounter="E|1"))
    load(view, task("new", decided_at=T0 + RETAIN + DAY, encounter="E|3"))
    assert view.get("done") is not None and len(view._by_id) == 2
    # The stale open record from the other partition, read later, loses to the held one.
    load(view, task("done", decided_at=T0 - DAY, encounter="E|1"), partition=1)
    assert view._by_id["done"].status == "completed"
    view.mark_ready()
    assert view.get("done") is None and "done" not in view._by_id


def test_a_task_exactly_at_the_retention_stays_and_a_late_record_brings_it_back() -> None:
    view = _ready(TaskView(retain=RETAIN))
    load(view, task("t", status="cancelled", decided_at=T0))
    load(view, task("other", decided_at=T0 + RETAIN))
    assert view.get("t") is not None
    load(view, task("other", decided_at=T0 + RETAIN + timedelta(seconds=1)))
    assert view.get("t") is None
    assert load(view, task("t", status="in-progress", decided_at=T0 + 50 * DAY))
    got = view.get("t")
    assert got is not None and got.status == "in-progress"


def test_an_episodes_team_goes_with_its_last_task() -> None:
    view = _ready(TaskView(retain=RETAIN))
    view.apply_assignment("E|1", "north", T0)
    view.apply_assignment("E|lonely", "south", T0)  # an episode that never got a task
    load(view, task("a", status="completed", decided_at=T0, encounter="E|1", owner=None))
    load(view, task("b", decided_at=T0, encounter="E|1", owner=None))
    load(view, task("x", decided_at=T0 + 40 * DAY, encounter="E|9"))
    # b is open: the episode and its team stay; the task-less episode's team is gone.
    b = view.get("b")
    assert b is not None and view.team_of(b) == "north"
    assert view._teams == {"E|1": "north"}
    load(view, task("b", status="completed", decided_at=T0 + 41 * DAY, encounter="E|1",
                    owner=None))
    load(view, task("x", decided_at=T0 + 72 * DAY, encounter="E|9"))
    assert view.get("b") is None and view._teams == {} and view._episode_tasks == {"E|9": 1}
    assert view.figures()["api_views"]["teams"] == {"held": 0}


# ---------------------------------------------------------------------------- replay

_STATUSES = ["requested", "in-progress", "completed", "cancelled", "failed", "on-hold"]


@st.composite
def _task_history(draw: st.DrawFn) -> list[TaskOutput]:
    """One partition's care.tasks: per task, times only move forward."""
    out, last = [], {}
    for _ in range(draw(st.integers(1, 40))):
        tid = draw(st.sampled_from(["a", "b", "c", "d", "e"]))
        at = last.get(tid, T0) + timedelta(days=draw(st.integers(0, 25)))
        last[tid] = at
        out.append(task(tid, status=draw(st.sampled_from(_STATUSES)), decided_at=at,
                        encounter=draw(st.sampled_from(["E|1", "E|2"]))))
    return out


@settings(max_examples=150, deadline=None)
@given(_task_history())
def test_forgetting_only_hides_what_the_rule_hides_and_a_replay_agrees(
        history: list[TaskOutput]) -> None:
    pruned, replay, everything = (_ready(TaskView(retain=RETAIN)),
                                  _ready(TaskView(retain=RETAIN)),
                                  _ready(TaskView(retain=timedelta(days=100_000))))
    for rec in history:
        load(pruned, rec)
        load(everything, rec)
    for rec in history:
        load(replay, rec)
    now = max(r.decided_at for r in history)
    want = {r.task_id: r for r in everything.all()
            if r.status in {"requested", "in-progress", "on-hold"}
            or not past_retention(r.decided_at, now, RETAIN)}
    assert {r.task_id: r for r in pruned.all()} == want
    assert {r.task_id: r for r in replay.all()} == want
    assert set(pruned._by_id) == set(want)  # memory too, not just the answers


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 25),
                          st.sampled_from(["requested", "accepted", "completed",
                                           "cancelled", "rejected"])), max_size=30))
def test_referrals_forget_exactly_the_closed_ones_past_the_retention(
        steps: list[tuple[str, int, str]]) -> None:
    pruned, everything = _ready(ReferralView(retain=RETAIN)), _ready(ReferralView(
        retain=timedelta(days=100_000)))
    at, version = T0, dict[str, int]()
    for rid, days, status in steps:
        at += timedelta(days=days)
        version[rid] = version.get(rid, 0) + 1
        for view in (pruned, everything):
            view.apply(ref(rid, at, status=status, version=version[rid]))
    want = {r.id for r in everything.all()
            if r.status in {"requested", "accepted"}
            or not past_retention(r.decided_at, at, RETAIN)}
    assert {r.id for r in pruned.all()} == want == set(pruned._by_id)


def test_view_sizes_reach_metrics() -> None:
    from hub.metrics import HubMetrics

    referrals, tasks = _ready(ReferralView(retain=RETAIN)), _ready(TaskView(retain=RETAIN))
    referrals.apply(ref("r", T0, status="completed"))
    referrals.apply(ref("s", T0 + 31 * DAY))
    tasks.apply_assignment("E|1", "north", T0)
    load(tasks, task("t", decided_at=T0, encounter="E|1"))
    metrics = HubMetrics(Settings())
    metrics.add_provider(referrals)
    metrics.add_provider(tasks)
    text = metrics.render().decode()
    assert 'hub_api_view_items{view="referrals"} 1.0' in text
    assert 'hub_api_view_forgotten_total{view="referrals"} 1.0' in text
    assert 'hub_api_view_items{view="tasks"} 1.0' in text
    assert 'hub_api_view_items{view="teams"} 1.0' in text
