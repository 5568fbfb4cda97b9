"""Property: any sequence of agency updates keeps every referral in a valid status,
terminal statuses stay terminal, and applying an update twice equals once."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.referrals import TERMINAL_STATUSES, ReferralOutput, ReferralUpdate
from streams.referrals.engine import TRANSITIONS, apply_referral

from .helpers import KEY, T0, ctx, event

C = ctx()
AGENCIES = ["housing-a", "housing-b", "pantry"]
STATUSES = ["accepted", "rejected", "in-progress", "completed", "cancelled"]
VALID = {"requested", "accepted", "rejected", "in-progress", "completed", "cancelled"}

updates = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(AGENCIES),
                             st.sampled_from(STATUSES), st.booleans()), max_size=14)


@settings(max_examples=150, deadline=None)
@given(updates)
def test_agency_updates_never_break_the_state_machine(steps: list[tuple[int, str, str, bool]]
                                                      ) -> None:
    state, _ = apply_referral(None, KEY, event(county="Hampden"), now=T0, ctx=C)
    for i, (which, agency, status, repeat) in enumerate(steps):
        tasks = [t for r in state.referrals.values() for t in r.tasks]
        task = tasks[which % len(tasks)]
        before = {t.task_id: t.status for r in state.referrals.values() for t in r.tasks}
        u = ReferralUpdate(id=f"u{i}", referral_task_id=task.task_id, agency_id=agency,
                           patient_key=KEY, status=status,  # type: ignore[arg-type]
                           at=T0 + timedelta(minutes=i + 1))
        new, emits = apply_referral(state, KEY, u, now=T0, ctx=C)
        if repeat:
            again, more = apply_referral(new, KEY, u, now=T0, ctx=C)
            assert more == [] and again.model_dump() == new.model_dump()
        for out in (e.value for e in emits if isinstance(e.value, ReferralOutput)):
            assert out.status in VALID
        for r in new.referrals.values():
            for t in r.tasks:
                assert t.status in VALID
                old = before.get(t.task_id)
                if old in TERMINAL_STATUSES:
                    assert t.status == old  # terminal stays terminal
                elif old is not None and t.status != old:
                    assert t.status in TRANSITIONS[old]
                    assert t.agency_id == agency and t.task_id == task.task_id
            # at most one open task per referral, and it is the last one
            open_ = [t for t in r.tasks if t.status not in TERMINAL_STATUSES]
            assert len(open_) <= 1 and (not open_ or open_[0] is r.tasks[-1])
            assert [t.attempt for t in r.tasks] == list(range(1, len(r.tasks) + 1))
            assert len({t.agency_id for t in r.tasks}) == len(r.tasks)
        state = new
