"""Referral engine journeys: detection -> agency, re-referral, endings, suppression."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.canonical import EventKind
from schemas.care import AssignmentOutput, EscalationOutput, Factor, FlagOutput, Reason
from schemas.referrals import (
    AgencyReferral,
    ConsentRecord,
    DeliveryJob,
    ReferralOutput,
    ReferralUpdate,
)
from streams.care.engine import Emit
from streams.referrals.engine import ReferralInput, apply_referral
from streams.referrals.state import ReferralPatientState

from .helpers import KEY, T0, ctx, discharge, event

C = ctx()


def run(inputs: list[ReferralInput], state: ReferralPatientState | None = None, c: Any = C
        ) -> tuple[ReferralPatientState, list[Emit]]:
    out: list[Emit] = []
    for msg in inputs:
        state, emits = apply_referral(state, KEY, msg, now=T0, ctx=c)
        out += emits
    assert state is not None
    return state, out


def referrals(emits: list[Emit]) -> list[ReferralOutput]:
    return [e.value for e in emits if isinstance(e.value, ReferralOutput)]


def update(task_id: str, agency: str, status: str, hours: int, reason: str | None = None
           ) -> ReferralUpdate:
    return ReferralUpdate(id=f"u-{task_id}-{status}-{hours}", referral_task_id=task_id,
                          agency_id=agency, patient_key=KEY, status=status,  # type: ignore[arg-type]
                          reason=reason, at=T0 + timedelta(hours=hours))


def test_housing_patient_goes_to_the_right_agency() -> None:
    _state, emits = run([event()])
    (ref,) = referrals(emits)
    assert (ref.agency_id, ref.need, ref.status, ref.attempt, ref.version) == (
        "housing-a", "housing", "requested", 1, 1)
    assert ref.need_codes == ["Z59.01"]
    assert ref.rule == "referral.new" and ref.cause_event_id == event().event_id
    assert ref.decided_at == ref.requested_at == T0
    topics_ = [e.topic for e in emits]
    assert topics_ == ["care.referrals", "referrals.housing-a", "referrals.deliveries"]
    copy = emits[1].value
    assert isinstance(copy, AgencyReferral) and emits[1].key == ref.id == copy.id
    job = emits[2].value
    assert isinstance(job, DeliveryJob)
    assert job.body == emits[1].value_bytes().decode()  # exactly as published
    assert job.url == "https://a.example/hook" and job.secret_env == "HOUSING_A_SECRET"
    assert emits[2].key == job.id
    assert ref.fhir is not None and copy.fhir is not None
    assert copy.referring.name == "Med-surg team"  # team fallback before assignment
    assert copy.discharge_date is None


def test_discharge_republishes_with_discharge_date_and_manager_contact() -> None:
    state, first = run([event()])
    assigned = AssignmentOutput(id="as-1", cause_event_id="x", rule="assignment.least_loaded",
                                patient_key=KEY, encounter_key="GENHOSP|V1", facility="GENHOSP",
                                decided_at=T0 + timedelta(minutes=5), status="assigned",
                                manager_id="cm-ana", team="medsurg", reason="least_loaded")
    state, emits = run([assigned, discharge()], state)
    refs = referrals(emits)
    assert [(r.version, r.rule) for r in refs] == [(2, "referral.contact"),
                                                   (3, "referral.discharge")]
    assert refs[-1].agency_copy.discharge_date == (T0 + timedelta(days=3)).date()
    assert refs[-1].agency_copy.referring.phone == "+1-413-555-0111"
    assert refs[-1].manager_id == "cm-ana"
    assert len({r.id for r in referrals(first) + refs}) == 1
    jobs = [e.value for e in emits if isinstance(e.value, DeliveryJob)]
    assert [j.version for j in jobs] == [2, 3]


def test_rejection_goes_to_next_agency_then_none_left() -> None:
    state, emits = run([event(county="Hampden")])
    (first,) = referrals(emits)
    state, emits = run([update(first.id, "housing-a", "rejected", 2, "no_capacity")], state)
    rejected, second = referrals(emits)
    assert (rejected.status, rejected.status_reason, rejected.version) == (
        "rejected", "no_capacity", 2)
    assert (second.agency_id, second.attempt, second.referral_id) == (
        "housing-b", 2, first.referral_id)
    assert second.rule == "referral.rereferral"
    # No webhook for the agency's own rejection; housing-b has no webhook.
    assert not [e for e in emits if isinstance(e.value, DeliveryJob)]
    state, emits = run([update(second.id, "housing-b", "rejected", 3)], state)
    last = referrals(emits)
    assert [(r.status, r.outcome) for r in last] == [("rejected", None),
                                                     ("rejected", "no_agency_available")]
    (esc,) = [e.value for e in emits if isinstance(e.value, EscalationOutput)]
    assert (esc.reason, esc.supervisor, esc.task_kind) == (
        "no_agency_available", "sup-lee", "referral:housing")


def test_no_agency_at_all_escalates() -> None:
    _, emits = run([event(postal="99999")])
    assert referrals(emits) == []
    (esc,) = [e.value for e in emits if isinstance(e.value, EscalationOutput)]
    assert esc.rule == "referral.no_agency"


def test_accept_then_complete_records_times() -> None:
    state, emits = run([event()])
    (ref,) = referrals(emits)
    state, emits = run([update(ref.id, "housing-a", "accepted", 2),
                        update(ref.id, "housing-a", "completed", 50)], state)
    acc, done = referrals(emits)
    assert acc.status == "accepted" and acc.time_to_accept_s == 7200.0
    assert acc.accepted_at == T0 + timedelta(hours=2)
    assert done.status == "completed" and done.time_to_complete_s == 50 * 3600.0
    assert done.completed_at == T0 + timedelta(hours=50) and done.version == 3
    # Terminal stays terminal; the ignored update is counted.
    state, emits = run([update(ref.id, "housing-a", "cancelled", 60)], state)
    assert emits == [] and state.ignored_updates == {"invalid_transition": 1}


def test_updates_from_another_agency_or_unknown_task_are_ignored() -> None:
    state, emits = run([event()])
    (ref,) = referrals(emits)
    state, emits = run([update(ref.id, "housing-b", "accepted", 1),
                        update("no-such-task", "housing-a", "accepted", 1)], state)
    assert emits == []
    assert state.ignored_updates == {"wrong_agency": 1, "unknown_task": 1}


def test_opt_out_cancels_unaccepted_and_suppresses_new() -> None:
    state, emits = run([event(dx=("Z59.01", "Z59.41"))])
    housing, food = sorted(referrals(emits), key=lambda r: r.need, reverse=True)
    state, _ = run([update(food.id, "pantry", "accepted", 1)], state)
    state, emits = run([ConsentRecord(patient_key=KEY, referrals="opt-out",
                                      at=T0 + timedelta(hours=2))], state)
    (cancelled,) = referrals(emits)
    assert (cancelled.id, cancelled.status, cancelled.status_reason) == (
        housing.id, "cancelled", "patient_opted_out")
    assert any(isinstance(e.value, DeliveryJob) for e in emits)  # the agency is told
    # A new need while opted out: nothing goes out.
    state, emits = run([event(EventKind.UPDATE, n=5, dx=("F32.9",), trigger="A08")], state)
    assert referrals(emits) == []
    # Opting back in refers the open episode's pending need.
    state, emits = run([ConsentRecord(patient_key=KEY, referrals="opt-in",
                                      at=T0 + timedelta(hours=3))], state)
    assert [r.need for r in referrals(emits)] == ["behavioral-health"]
    # An older record arriving late changes nothing.
    _, emits = run([ConsentRecord(patient_key=KEY, referrals="opt-out",
                                  at=T0 + timedelta(hours=1))], state)
    assert emits == []


def test_protection_indicator_suppresses() -> None:
    _, emits = run([event(protection=True)])
    assert emits == []
    state, emits = run([event()])
    (ref,) = referrals(emits)
    _, emits = run([event(EventKind.UPDATE, n=3, protection=True, trigger="A08")], state)
    (cancelled,) = referrals(emits)
    assert (cancelled.id, cancelled.status_reason) == (ref.id, "protection_indicator")


def test_death_cancels_and_cancel_admit_withdraws() -> None:
    state, emits = run([event()])
    _, emits = run([discharge(disposition="20")], state)
    (ref,) = referrals(emits)
    assert (ref.status, ref.status_reason) == ("cancelled", "patient_deceased")
    _, emits = run([event(EventKind.CANCEL_ADMIT, n=9, trigger="A11")], state)
    (ref,) = referrals(emits)
    assert (ref.status, ref.status_reason, ref.rule) == (
        "entered-in-error", "admission_cancelled", "referral.withdraw.cancel_admit")


def test_home_health_on_discharge_and_cancel_discharge() -> None:
    state, emits = run([event(dx=("I50.9",), language="en")])
    assert emits == []
    state, emits = run([discharge(disposition="06", dx=("I50.9",), language="en")], state)
    (ref,) = referrals(emits)
    assert (ref.agency_id, ref.need, ref.need_codes) == ("home-care", "home-health",
                                                          ["disposition:06"])
    assert ref.agency_copy.discharge_date == (T0 + timedelta(days=3)).date()
    _, emits = run([event(EventKind.CANCEL_DISCHARGE, n=7, trigger="A13")], state)
    (ref,) = referrals(emits)
    assert ref.status == "entered-in-error"


def test_outpatient_not_referred_and_ed_is() -> None:
    from schemas.canonical import EncounterClass

    assert run([event(cls=EncounterClass.OUTPATIENT)])[1] == []
    (ref,) = referrals(run([event(cls=EncounterClass.EMERGENCY, trigger="A04")])[1])
    assert ref.need == "housing"


def test_flag_reasons_are_needs() -> None:
    state, _ = run([event(dx=("I50.9",))])
    flag = FlagOutput(
        id="flag-1", cause_event_id="e", rule="risk.admission", patient_key=KEY,
        encounter_key="GENHOSP|V1", decided_at=T0, stage="admission", risk_level="high",
        lace={"score": 12, "l": 1, "a": 3, "c": 4, "e": 4},
        charlson={"score": 2}, reasons=[Reason(code="social_needs", display="x",
                                               factors=[Factor(code="sdoh.food")])])
    _, emits = run([flag], state)
    (ref,) = referrals(emits)
    assert (ref.need, ref.need_codes, ref.agency_id) == ("food", ["flag:social_needs"], "pantry")


def test_replay_is_idempotent_and_deterministic() -> None:
    inputs: list[ReferralInput] = [event(), discharge()]
    s1, e1 = run(inputs)
    _s2, e2 = run(inputs)
    assert [e.value_bytes() for e in e1] == [e.value_bytes() for e in e2]
    s3, e3 = run(inputs, s1)  # the same inputs again: duplicates, no output
    assert e3 == [] and s3.model_dump() == s1.model_dump()
    before = s1.model_dump()
    apply_referral(s1, KEY, discharge(n=99), now=T0, ctx=C)
    assert s1.model_dump() == before  # the input state is never mutated


def test_disabled() -> None:
    assert run([event()], c=ctx(enabled=False))[1] == []
