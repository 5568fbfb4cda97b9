"""The agency's minimum-necessary copy, field by field, and the FHIR renderings."""

from __future__ import annotations

import orjson

from mappers.fhir_referral import service_request_status
from schemas.fhir import Bundle
from schemas.referrals import AgencyReferral, ReferralOutput

from ..streams.referrals.helpers import MRN, T0, ctx, discharge, event

SENSITIVE = [MRN, "GENHOSP|", "Z59.01", "Z59", "F32", "I50", "female", "WELBY", "V1",
             "4WEST", "disposition"]


def _outputs() -> tuple[ReferralOutput, AgencyReferral, bytes]:
    from streams.referrals.engine import apply_referral

    c = ctx()
    state, _ = apply_referral(None, event().patient.key, event(dx=("Z59.01", "F32.9", "I50.9")),
                              now=T0, ctx=c)
    _, emits = apply_referral(state, event().patient.key,
                              discharge(dx=("Z59.01", "F32.9", "I50.9")), now=T0, ctx=c)
    ref = next(e.value for e in emits if isinstance(e.value, ReferralOutput)
               and e.value.need == "housing")
    agency = next(e for e in emits if e.topic == "referrals.housing-a")
    assert isinstance(agency.value, AgencyReferral)
    return ref, agency.value, agency.value_bytes()


def test_agency_copy_field_by_field() -> None:
    _, _, wire = _outputs()
    data = orjson.loads(wire)
    assert set(data) == {"id", "referral_id", "agency_id", "status", "need", "patient",
                         "discharge_date", "referring", "authored_at", "updated_at",
                         "version", "fhir"}
    assert data["patient"] == {
        "family_name": "ZEBULONSKI", "given_names": ["QUINCEY"], "birth_date": "1961-04-05",
        "phone": "(413)555-0142",
        "address": {"line": ["12 ELM ST"], "city": "SPRINGFIELD", "state": "MA",
                    "postal_code": "01103"},
        "preferred_language": "es"}
    assert data["need"] == "housing"
    assert data["discharge_date"] == "2026-11-05"
    assert data["referring"] == {"name": "Med-surg team", "phone": "+1-413-555-0199"}
    assert (data["agency_id"], data["status"], data["version"]) == ("housing-a", "requested", 2)
    assert set(AgencyReferral.model_fields) == set(data) | {"status_reason"}


def test_agency_copy_carries_no_mrn_key_or_diagnoses() -> None:
    _, _, wire = _outputs()
    text = wire.decode()
    for token in SENSITIVE:
        assert token not in text, token


def test_agency_bundle_resources() -> None:
    _, copy, _ = _outputs()
    assert copy.fhir is not None
    Bundle.model_validate(copy.fhir)  # valid R4B
    entries = {e["resource"]["resourceType"]: e["resource"] for e in copy.fhir["entry"]}
    assert set(entries) == {"Patient", "ServiceRequest", "Task"}
    patient = entries["Patient"]
    assert set(patient) == {"resourceType", "id", "identifier", "name", "birthDate", "telecom",
                            "address", "communication"}
    assert patient["identifier"] == [{"system": "urn:care-hub:referral-patient",
                                      "value": copy.id}]
    sr = entries["ServiceRequest"]
    assert "reasonCode" not in sr and "encounter" not in sr
    assert sr["occurrencePeriod"] == {"start": "2026-11-05"}
    assert [c["coding"][0]["code"] for c in sr["category"]] == ["housing-instability", "housing"]
    assert sr["performer"][0]["identifier"]["value"] == "housing-a"
    task = entries["Task"]
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["owner"]["identifier"] == {"system": "urn:care-hub:agency", "value": "housing-a"}
    assert task["focus"]["type"] == "ServiceRequest" and task["for"]["type"] == "Patient"
    assert task["authoredOn"] == T0.isoformat().replace("+00:00", "Z")


def test_hub_bundle_references_the_patient_by_mrn_with_reasons() -> None:
    ref, _, _ = _outputs()
    assert ref.fhir is not None
    Bundle.model_validate(ref.fhir)
    sr, task = (e["resource"] for e in ref.fhir["entry"])
    assert sr["subject"]["identifier"]["value"] == MRN
    assert [c["coding"][0]["code"] for c in sr["reasonCode"]] == ["Z59.01"]
    assert sr["encounter"]["identifier"]["value"] == "V1"
    assert task["lastModified"].startswith("2026-11-05")


def test_service_request_status() -> None:
    assert service_request_status("requested") == "active"
    assert service_request_status("rejected") == "active"
    assert service_request_status("rejected", "no_agency_available") == "revoked"
    assert service_request_status("completed") == "completed"
    assert service_request_status("cancelled") == "revoked"
    assert service_request_status("entered-in-error") == "entered-in-error"


def test_agency_content_hash_reads_what_the_copy_says_only() -> None:
    from datetime import timedelta

    from mappers.fhir_referral import agency_content_hash
    from schemas.referrals import AgencyAddress

    _, copy, _ = _outputs()
    digest = agency_content_hash(copy)
    assert len(digest) == 64
    # Version, time and FHIR follow from the rest: not part of what the copy says.
    assert agency_content_hash(copy.model_copy(update={
        "version": 9, "updated_at": copy.updated_at + timedelta(days=1), "fhir": None})) == digest
    moved = copy.patient.model_copy(update={"address": AgencyAddress(postal_code="01104")})
    for change in ({"status": "cancelled"}, {"status_reason": "patient_opted_out"},
                   {"patient": moved}, {"discharge_date": None},
                   {"referring": copy.referring.model_copy(update={"phone": "+1-1"})}):
        assert agency_content_hash(copy.model_copy(update=change)) != digest, change
