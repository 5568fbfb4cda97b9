"""When the agency hears again: only when its minimum-necessary copy changed (content
hash kept in the Task state), always for hub cancellations; and address changes, which
re-send the copy or move a not-yet-accepted referral to an agency serving the new area."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.canonical import EventKind
from schemas.care import AssignmentOutput
from schemas.referrals import AgencyReferral, ConsentRecord, DeliveryJob
from streams.care.engine import Emit
from streams.care.roster import parse_roster
from streams.referrals.engine import MOVED_OUT_OF_AREA, ReferralContext, apply_referral
from streams.referrals.state import ReferralPatientState

from .helpers import KEY, T0, ctx, discharge, event
from .test_engine import referrals, run, update

SHARED_DESK = """
teams:
  - {id: medsurg, facility: GENHOSP, supervisor: sup-lee, name: Med-surg team}
managers:
  - {id: cm-ana, name: Transitions desk, teams: [medsurg], cap_points: 20,
     timezone: America/New_York, phone: "+1-413-555-0111", email: desk@hospital.example}
  - {id: cm-bob, name: Transitions desk, teams: [medsurg], cap_points: 20,
     timezone: America/New_York, phone: "+1-413-555-0111", email: desk@hospital.example}
  - {id: sup-lee, name: Lee Park, teams: [medsurg], cap_points: 5,
     timezone: America/New_York}
"""


def copies(emits: list[Emit]) -> list[AgencyReferral]:
    return [e.value for e in emits if isinstance(e.value, AgencyReferral)]


def jobs(emits: list[Emit]) -> list[DeliveryJob]:
    return [e.value for e in emits if isinstance(e.value, DeliveryJob)]


def assign(n: int, manager: str, minutes: int) -> AssignmentOutput:
    return AssignmentOutput(
        id=f"as-{n}", cause_event_id="x", rule="assignment.least_loaded", patient_key=KEY,
        encounter_key="GENHOSP|V1", facility="GENHOSP",
        decided_at=T0 + timedelta(minutes=minutes), status="assigned", manager_id=manager,
        team="medsurg", reason="least_loaded")


def a08(n: int, hours: int = 1, **kw: Any) -> Any:
    kw.setdefault("trigger", "A08")
    return event(EventKind.UPDATE, n=n, at=T0 + timedelta(hours=hours), **kw)


def restart(state: ReferralPatientState) -> ReferralPatientState:
    # What the referrals table stores and a restarted worker restores.
    return ReferralPatientState.model_validate_json(state.model_dump_json(exclude_none=True))


# --- only a changed agency copy goes out


def test_a_new_manager_with_the_same_contact_updates_the_hub_record_only() -> None:
    c = ReferralContext(config=ctx().config, directory=ctx().directory,
                        roster=parse_roster(SHARED_DESK))
    state, first = run([event(), assign(1, "cm-ana", 5)], c=c)
    (sent,) = [j for j in jobs(first) if j.version == 2]  # team -> the desk: a change
    state, emits = run([assign(2, "cm-bob", 10)], restart(state), c=c)
    (ref,) = referrals(emits)
    assert (ref.manager_id, ref.version, ref.rule) == ("cm-bob", 3, "referral.contact")
    assert [e.topic for e in emits] == ["care.referrals"]  # no agency record, no webhook
    assert ref.agency_copy.version == 2 == sent.version
    assert ref.agency_copy.model_dump_json(exclude_none=True) == sent.body  # what it has


def test_a_discharge_time_on_the_same_day_sends_nothing_new() -> None:
    state, _ = run([event(), discharge()])
    later = T0 + timedelta(days=3, hours=2)
    _, emits = run([a08(9, hours=74, discharge_at=later)], restart(state))
    assert emits == []


def test_no_agency_left_is_a_hub_record_not_an_agency_copy() -> None:
    state, emits = run([event(county="Hampden")])
    first = referrals(emits)[0]
    state, emits = run([update(first.id, "housing-a", "rejected", 1, "no_capacity")], state)
    second = referrals(emits)[-1]
    _, emits = run([update(second.id, "housing-b", "rejected", 2, "no_capacity")], state)
    rejected, last = referrals(emits)
    assert (last.outcome, last.rule) == ("no_agency_available", "referral.no_agency")
    # The rejection changed the copy (its status): once on the agency topic, no webhook
    # (the agency made it); the outcome is the hub's business only.
    assert [e.topic for e in emits] == ["care.referrals", "referrals.housing-b",
                                        "care.referrals", "care.escalations"]
    assert last.agency_copy == rejected.agency_copy


def test_hub_cancellations_always_reach_the_agency() -> None:
    state, _ = run([event()])
    _, emits = run([ConsentRecord(patient_key=KEY, referrals="opt-out",
                                  at=T0 + timedelta(hours=1))], restart(state))
    (copy,) = copies(emits)
    (job,) = jobs(emits)
    assert (copy.status, copy.status_reason, copy.version) == (
        "cancelled", "patient_opted_out", 2)
    assert job.body == copy.model_dump_json(exclude_none=True) and job.version == 2


def test_a_state_from_before_agency_versions_continues_the_old_numbering() -> None:
    state, emits = run([event(), assign(1, "cm-ana", 5)])
    legacy = state.model_copy(deep=True)
    old = legacy.referrals[referrals(emits)[0].referral_id].tasks[0]
    old.agency_version = old.agency_hash = old.agency_updated_at = old.sent_patient = None
    _, emits = run([discharge()], restart(legacy))
    (copy,) = copies(emits)
    (ref,) = referrals(emits)
    assert copy.version == ref.version == 3  # what the copy's version was before


def test_replays_give_the_same_bytes() -> None:
    inputs = [event(), assign(1, "cm-ana", 5), a08(3, postal="01104"), discharge()]
    _, one = run(inputs)
    _, two = run(inputs)
    assert [(e.topic, e.key, e.value_bytes()) for e in one] == \
        [(e.topic, e.key, e.value_bytes()) for e in two]


# --- address changes


def test_moving_within_the_agency_area_re_sends_the_copy() -> None:
    state, _ = run([event()])
    _, emits = run([a08(3, postal="01104")], restart(state))
    (ref,) = referrals(emits)
    (copy,) = copies(emits)
    (job,) = jobs(emits)
    assert (ref.agency_id, ref.status, ref.rule) == ("housing-a", "requested",
                                                     "referral.patient")
    assert copy.patient.address is not None and copy.patient.address.postal_code == "01104"
    assert copy.version == job.version == 2


def test_moving_out_of_the_area_cancels_and_refers_to_the_next_agency() -> None:
    state, _ = run([event()])
    _, emits = run([a08(3, postal="01199", county="Hampden")], restart(state))
    cancelled, moved = referrals(emits)
    assert (cancelled.agency_id, cancelled.status, cancelled.status_reason, cancelled.rule) == (
        "housing-a", "cancelled", MOVED_OUT_OF_AREA, "referral.cancel.moved")
    assert (moved.agency_id, moved.status, moved.attempt, moved.rule) == (
        "housing-b", "requested", 2, "referral.rematch")
    assert moved.referral_id == cancelled.referral_id
    assert [e.topic for e in emits] == ["care.referrals", "referrals.housing-a",
                                        "referrals.deliveries", "care.referrals",
                                        "referrals.housing-b"]
    (job,) = jobs(emits)  # housing-a has a webhook: it is told; housing-b has none
    assert job.agency_id == "housing-a" and '"cancelled"' in job.body
    assert moved.agency_copy.patient.address is not None
    assert moved.agency_copy.patient.address.postal_code == "01199"


def test_a_31_without_an_encounter_moves_the_referral_too() -> None:
    state, _ = run([event()])
    a31 = a08(4, postal="01199", county="Hampden", trigger="A31").model_copy(
        update={"encounter": None})
    _, emits = run([a31], state)
    assert [(r.agency_id, r.status) for r in referrals(emits)] == [
        ("housing-a", "cancelled"), ("housing-b", "requested")]


def test_moving_where_no_agency_serves_escalates() -> None:
    state, _ = run([event()])
    _, emits = run([a08(3, postal="02139", county="Middlesex")], state)
    cancelled, last = referrals(emits)
    assert cancelled.status == "cancelled" and last.outcome == "no_agency_available"
    assert any(e.topic == "care.escalations" for e in emits)


def test_an_accepted_referral_stays_and_gets_the_new_address() -> None:
    state, emits = run([event()])
    first = referrals(emits)[0]
    state, _ = run([update(first.id, "housing-a", "accepted", 1)], state)
    _, emits = run([a08(3, postal="01199", county="Hampden")], state)
    (ref,) = referrals(emits)
    assert (ref.agency_id, ref.status) == ("housing-a", "accepted")
    assert ref.agency_copy.patient.address is not None
    assert ref.agency_copy.patient.address.postal_code == "01199"
    assert len(jobs(emits)) == 1


def test_a_county_the_copy_does_not_carry_sends_nothing_while_still_served() -> None:
    state, _ = run([event()])
    _, emits = run([a08(3, county="Hampden")], state)
    assert emits == []


def test_a_phone_change_re_sends_and_suppression_stops_it() -> None:
    state, _ = run([event()])
    changed = a08(3)
    changed = changed.model_copy(update={"patient": changed.patient.model_copy(
        update={"phone": "(413)555-0999"})})
    _, emits = run([changed], state)
    (copy,) = copies(emits)
    assert copy.patient.phone == "(413)555-0999"
    # Accepted, then opted out (the referral continues), then moved: nothing goes out.
    ref_id = referrals(run([event()])[1])[0].id
    state, _ = run([update(ref_id, "housing-a", "accepted", 1),
                    ConsentRecord(patient_key=KEY, referrals="opt-out",
                                  at=T0 + timedelta(hours=2))], state)
    _, emits = run([a08(5, hours=3, postal="01104")], state)
    assert emits == []


def test_apply_does_not_mutate_its_input_state() -> None:
    state, _ = run([event()])
    before = state.model_dump_json()
    apply_referral(state, KEY, a08(3, postal="01199", county="Hampden"), now=T0, ctx=ctx())
    assert state.model_dump_json() == before
