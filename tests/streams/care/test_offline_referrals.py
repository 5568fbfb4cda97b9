"""``hub decide --agencies`` over a merge: the referrals stage's merge commands
(handover, absorb, forward on referrals.updates) go back to it in the offline run, as
through the topic, so referral state moves to the surviving key as in the worker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.commands.decide_cmd import load_agencies, load_roster, load_rules
from hub.commands.map_cmd import map_files
from schemas.canonical import CanonicalEvent
from schemas.referrals import ReferralOutput
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun, summary_line
from streams.referrals.engine import ReferralContext

JOURNEYS = Path(__file__).parent / "journeys"
AGENCIES = Path(__file__).resolve().parents[3] / "hub" / "samples" / "agencies.yaml"
OLD, NEW = "GENHOSP|J3OLD", "GENHOSP|J3NEW"


@pytest.fixture(scope="module")
def ctx() -> CareContext:
    return CareContext(config=load_rules(None, default_tz="America/New_York"),
                       roster=load_roster(JOURNEYS / "roster.yaml"))


def referrals(ctx: CareContext) -> ReferralContext:
    return ReferralContext(config=ctx.config.referrals, directory=load_agencies(AGENCIES),
                           roster=ctx.roster)


def journey(path: Path, text: str | None = None) -> list[CanonicalEvent]:
    if text is not None:
        path.write_text(text)
    items = list(map_files([str(path)], default_tz="America/New_York",
                           received_at=datetime(1970, 1, 1, tzinfo=UTC)))
    assert all(isinstance(i, CanonicalEvent) for i in items)
    return items  # type: ignore[return-value]


def test_a_merge_moves_referral_state_to_the_survivor(ctx: CareContext) -> None:
    events = journey(JOURNEYS / "j3_merge.hl7")
    run = OfflineRun(ctx, referrals(ctx))
    out = run.run(events)
    prior, survivor = run.referral_states[OLD], run.referral_states[NEW]
    assert prior.merged_into == NEW and not prior.episodes and not prior.referrals
    assert survivor.merged_from == [OLD] and survivor.merge_wait is None
    assert survivor.merge_waits_expired == 0  # the absorb came back: nothing decided blind
    assert "GENHOSP|X1" in survivor.episodes  # the prior key's episode, moved
    # No need in this journey: the printed lines are the care stages' alone.
    assert [summary_line(o) for o in out] == [
        summary_line(o) for o in OfflineRun(ctx).run(events)]


def test_an_open_referral_moves_with_its_id(ctx: CareContext, tmp_path: Path) -> None:
    # j3 with a housing need (Z59.01) coded on the first admission: referred under the
    # prior key, then republished under the survivor's key by the merge.
    text = (JOURNEYS / "j3_merge.hl7").read_text().replace(
        "DG1|1||J44.1^^I10||20261102090000-0500|A",
        "DG1|1||J44.1^^I10||20261102090000-0500|A\nDG1|2||Z59.01^^I10||20261102090000-0500|A",
        1)
    run = OfflineRun(ctx, referrals(ctx))
    out = [o for o in run.run(journey(tmp_path / "j3_need.hl7", text))
           if isinstance(o, ReferralOutput)]
    first = out[0]
    assert (first.need, first.patient_key, first.version) == ("housing", OLD, 1)
    before = max(o.version for o in out if o.patient_key == OLD)  # discharge re-sends
    moved = [o for o in out if o.rule == "referral.merge"]
    assert [(o.id, o.referral_id, o.patient_key, o.version) for o in moved] == [
        (first.id, first.referral_id, NEW, before + 1)]
    assert list(run.referral_states[NEW].referrals) == [first.referral_id]
    assert not run.referral_states[OLD].referrals
    # Not referred a second time under the survivor's key.
    assert {o.referral_id for o in out} == {first.referral_id}
