"""When a patient next needs the timer (pure): so the timer reads only the patients due.

:func:`streams.care.engine.tick_patient` changes a state only at times this module can
name in advance: an open task becoming overdue, a discharged episode's follow-up period
ending (or its tasks all being done), a merge wait running out, history and episodes
that are over growing older than ``history_days``. :func:`next_tick_at` is the earliest
of them; before it a tick is a no-op, so the worker stores it beside each patient and
skips everyone not yet due, instead of reading every stored state on every tick.

Early is harmless (one wasted read); late would delay an escalation, so every time here
is the first instant ``tick_patient``'s own tests (all ``now >= ...``) pass.
tests/streams/care/test_due.py checks that ticking any earlier changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from streams.care.config import CareConfig
from streams.care.engine import TERMINAL_TASK_STATUSES, episode_over_at
from streams.care.state import OPEN_TASK_STATUSES, PatientState

__all__ = ["next_tick_at", "task_counts"]


def next_tick_at(state: PatientState, cfg: CareConfig) -> datetime | None:
    """The first time at which a tick would change ``state``; None when no time will.

    Reads ``merged_into``, ``merge_wait.since``, each episode's ``status``,
    ``discharge_at`` and tasks (``status``, ``escalated``, ``due``), the time of each
    episode that is over (:func:`streams.care.engine.episode_over_at`), and the times in
    ``ed_visits`` and ``discharges``. A discharged episode whose tasks are all done is
    due at once (its earliest possible time: its discharge).
    """
    if state.merged_into:
        return None
    times: list[datetime] = []
    if state.merge_wait is not None:
        times.append(state.merge_wait.since + timedelta(seconds=cfg.episode.merge_wait_seconds))
    overdue_after = timedelta(hours=cfg.followup.escalate_after_hours)
    close_after = timedelta(days=cfg.episode.close_after_days)
    # Forgotten once strictly older than the horizon: due just after it.
    forget_after = timedelta(days=cfg.episode.history_days) + timedelta(microseconds=1)
    for ep in state.episodes.values():
        for t in ep.tasks.values():
            if t.status in OPEN_TASK_STATUSES and not t.escalated:
                times.append(t.due + overdue_after)
        if ep.status == "discharged" and ep.discharge_at is not None:
            if ep.tasks and all(t.status in TERMINAL_TASK_STATUSES for t in ep.tasks.values()):
                times.append(ep.discharge_at)
            else:
                times.append(ep.discharge_at + close_after)
        over_at = episode_over_at(ep)
        if over_at is not None:
            times.append(over_at + forget_after)
    for seen in (state.ed_visits, state.discharges):
        if seen:
            times.append(min(seen.values()) + forget_after)
    return min(times) if times else None


def task_counts(state: PatientState) -> tuple[int, int]:
    """(open tasks, of which escalated as overdue): the figures the timer reports."""
    open_tasks = overdue = 0
    for ep in state.episodes.values():
        for t in ep.tasks.values():
            if t.status in OPEN_TASK_STATUSES:
                open_tasks += 1
                overdue += int(t.escalated)
    return open_tasks, overdue
