"""Care records -> FHIR R4 (mappers.fhir_out): golden files, R4B round trip, determinism,
PHI, the notification message Bundle, references and status maps.

Golden files (``golden/fhir_out/<case>.json``) pin the full JSON of every builder, in
FHIR element order; regenerate them with
``UPDATE_GOLDEN=1 pytest tests/mappers/test_fhir_out.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from mappers import fhir_out as fo
from mappers.fhir import map_fhir
from schemas.canonical import CanonicalEvent, EventKind, derive_id
from schemas.care import (
    AssignmentOutput,
    Charlson,
    EscalationOutput,
    Factor,
    FlagOutput,
    Lace,
    NotificationOutput,
    Reason,
    TaskOutput,
)
from schemas.errors import ErrorCode, MappingError
from schemas.fhir import Patient as FhirPatient
from schemas.fhir import parse_resource

GOLDEN = Path(__file__).resolve().parent / "golden" / "fhir_out"
EDT = timezone(timedelta(hours=-4))
DECIDED = datetime(2024, 3, 12, 10, 0, tzinfo=EDT)
FAMILY = "Zyxwickova"  # distinctive, so a leak is found by substring search
GIVEN = "Quintessa"
PHONE = "555-0142"

EVENT_DATA: dict[str, Any] = {
    "event_id": "ev-discharge-1",
    "kind": "discharge",
    "trigger": "A03",
    "occurred_at": "2024-03-12T10:00:00-04:00",
    "recorded_at": "2024-03-12T10:00:05-04:00",
    "source": {"format": "hl7v2", "system": "EPIC", "facility": "GHH",
               "message_id": "MSG0001", "version": "2.5"},
    "patient": {
        "key": "HOSP|MRN001", "mrn": "MRN001", "assigning_authority": "HOSP",
        "identifiers": [{"system": "HOSP", "value": "MRN001", "type": "MR"},
                        {"system": "SSA", "value": "999-00-1234", "type": "SS"}],
        "family_name": FAMILY, "given_names": [GIVEN, "B"],
        "birth_date": "1950-02-03", "sex": "female",
        "address": {"line": ["12 Elm St"], "city": "Springfield", "state": "MA",
                    "postal_code": "01101"},
        "phone": PHONE, "language": "es",
        "primary_care_provider": {"id": "pcp9", "name": "Dr Gee"},
    },
    "encounter": {
        "id": "V100", "class": "inpatient",
        "admit_at": "2024-03-10T08:00:00-04:00", "discharge_at": "2024-03-12T10:00:00-04:00",
        "admission_type": "E", "discharge_disposition": "01",
        "location": {"facility": "GHH", "unit": "3W", "room": "312", "bed": "A"},
        "attending": {"id": "d1", "name": "Dr Attending"},
    },
    "diagnoses": [{"code": "I50.9", "system": "ICD-10-CM", "display": "Heart failure"}],
}
ADMIT_DATA: dict[str, Any] = {
    **EVENT_DATA,
    "event_id": "ev-admit-1",
    "kind": "admit",
    "trigger": "notification-admit",
    "source": {"format": "fhir", "system": "https://ehr.example/fhir", "version": "4.0.1"},
    "patient": {
        "key": "urn:oid:2.16.840.1.113883.19.5|MRN002", "mrn": "MRN002",
        "assigning_authority": "urn:oid:2.16.840.1.113883.19.5",
        "family_name": FAMILY, "given_names": [GIVEN], "sex": "female",
    },
    "encounter": {"id": "E200", "class": "emergency",
                  "admit_at": "2024-03-10T08:00:00-04:00",
                  "location": {"facility": "Mercy ED"}},
}


def event() -> CanonicalEvent:
    return CanonicalEvent.model_validate(EVENT_DATA)


def admit_event() -> CanonicalEvent:
    return CanonicalEvent.model_validate(ADMIT_DATA)


def _base(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cause_event_id": "ev-discharge-1", "patient_key": "HOSP|MRN001",
        "encounter_key": "GHH|V100", "facility": "GHH", "decided_at": DECIDED,
    }
    return {**base, **over}


def flag_output(**over: Any) -> FlagOutput:
    data: dict[str, Any] = {
        "id": derive_id("ev-discharge-1", "risk.discharge"),
        "rule": "risk.discharge",
        "stage": "discharge",
        "risk_level": "high",
        "lace": Lace(score=13, l=2, a=3, c=5, e=3),
        "charlson": Charlson(score=4, categories=["chf", "renal"]),
        "factors": [Factor(code="lace_l", points=2), Factor(code="lace_a", points=3),
                    Factor(code="lace_c", points=5), Factor(code="lace_e", points=3)],
        "reasons": [
            Reason(code="high_lace", display="High LACE index",
                   factors=[Factor(code="lace_score", points=13)]),
            Reason(code="cms_condition", display="CMS readmission-program condition",
                   factors=[Factor(code="heart_failure", detail="I50.9")]),
            Reason(code="social_needs", display="Social needs (ICD-10 Z55-Z65)",
                   factors=[Factor(code="Z59.0")]),
        ],
        **_base(),
    }
    data.update(over)
    return FlagOutput.model_validate(data)


def assignment_output(**over: Any) -> AssignmentOutput:
    data: dict[str, Any] = {
        "id": derive_id("ev-discharge-1", "assign"), "rule": "assign.continuity",
        "status": "assigned", "manager_id": "cm-017", "team": "3w-cm",
        "supervisor": "sup-3w", "reason": "continuity", "points": 3, "load_after": 11,
        "cap": 15, **_base(),
    }
    data.update(over)
    return AssignmentOutput.model_validate(data)


def task_output(**over: Any) -> TaskOutput:
    data: dict[str, Any] = {
        "id": derive_id("ev-discharge-1", "tcm.contact", "requested"),
        "rule": "tcm.contact", "task_id": derive_id("ev-discharge-1", "tcm.contact"),
        "kind": "contact", "due": datetime(2024, 3, 14, 17, 0, tzinfo=EDT),
        "status": "requested", "priority": "urgent", "owner": "cm-017",
        "description": "Interactive contact within 2 business days of discharge",
        **_base(),
    }
    data.update(over)
    return TaskOutput.model_validate(data)


def escalation_output(**over: Any) -> EscalationOutput:
    data: dict[str, Any] = {
        "id": derive_id("ev-discharge-1", "escalate.overdue"), "rule": "escalate.overdue",
        "reason": "task_overdue", "team": "3w-cm", "supervisor": "sup-3w",
        "task_id": derive_id("ev-discharge-1", "tcm.contact"), "task_kind": "contact",
        "due": datetime(2024, 3, 14, 17, 0, tzinfo=EDT), **_base(),
    }
    data.update(over)
    return EscalationOutput.model_validate(data)


def notification_output(**over: Any) -> NotificationOutput:
    data: dict[str, Any] = {
        "id": derive_id("ev-discharge-1", "notify.discharge"), "rule": "notify.discharge",
        "event_code": "notification-discharge", "recipient": "pcp9", **_base(),
    }
    data.update(over)
    return NotificationOutput.model_validate(data)


def admit_notification() -> NotificationOutput:
    return notification_output(
        id=derive_id("ev-admit-1", "notify.admit"), rule="notify.admit",
        cause_event_id="ev-admit-1", event_code="notification-admit", recipient=None,
        patient_key="urn:oid:2.16.840.1.113883.19.5|MRN002",
        encounter_key="Mercy ED|E200", facility="Mercy ED",
    )


# ------------------------------------------------------------------ cases (golden)

Json = dict[str, Any] | list[dict[str, Any]]
CASES: dict[str, Callable[[], Json]] = {
    "risk_assessment_discharge": lambda: fo.risk_assessment(flag_output(), event()),
    "risk_assessment_admission_no_event": lambda: fo.risk_assessment(
        flag_output(stage="admission", risk_level="moderate", reasons=[]), None),
    "risk_assessment_withdrawn": lambda: fo.risk_assessment(
        flag_output(status="withdrawn"), event()),
    "flags_discharge": lambda: fo.flags(flag_output(), event()),
    "flags_withdrawn": lambda: fo.flags(flag_output(status="withdrawn"), event()),
    "care_team_assigned": lambda: fo.care_team(assignment_output(), event()),
    "care_team_unassigned": lambda: fo.care_team(
        assignment_output(status="unassigned", manager_id=None, reason="all_at_cap",
                          points=0, load_after=None, cap=None), None),
    "care_team_released": lambda: fo.care_team(
        assignment_output(status="released", reason="episode_closed"), None),
    "task_contact": lambda: fo.task(task_output(), event()),
    "task_team_queue_no_event": lambda: fo.task(
        task_output(owner="team:3w-cm", priority="routine"), None),
    "task_cancelled": lambda: fo.task(
        task_output(status="cancelled", status_reason="patient_deceased"), event()),
    "escalation_overdue": lambda: fo.escalation_task(escalation_output(), event()),
    "escalation_all_at_cap": lambda: fo.escalation_task(
        escalation_output(reason="all_at_cap", supervisor=None, task_id=None,
                          task_kind=None, due=None), None),
    "notification_discharge": lambda: fo.notification_bundle(notification_output(),
                                                             event()),
    "notification_admit_fhir_source": lambda: fo.notification_bundle(admit_notification(),
                                                                      admit_event()),
}


def _text(value: Json) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    text = _text(CASES[name]())
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text


def _resources(value: Json) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trips_through_r4b_models(name: str) -> None:
    for resource in _resources(CASES[name]()):
        model = parse_resource(resource)
        assert model.model_dump(mode="json", by_alias=True, exclude_none=True) == resource
        # plain JSON: serialisable by the stdlib, no OrderedDict/datetime leftovers
        assert json.loads(json.dumps(resource)) == resource
        assert type(resource) is dict


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic(name: str) -> None:
    # fresh inputs each call (CASES builds them), same bytes out
    assert orjson.dumps(CASES[name]()) == orjson.dumps(CASES[name]())


# ------------------------------------------------------------------ PHI

PHI_CASES = [n for n in CASES if not n.startswith("notification")]


@pytest.mark.parametrize("name", PHI_CASES)
def test_no_phi_beyond_the_identifier_reference(name: str) -> None:
    text = json.dumps(CASES[name]())
    for value in (FAMILY, GIVEN, "1950-02-03", PHONE, "Elm St", "Springfield", "999-00-1234",
                  "I50.9", "Dr Attending", "Dr Gee"):
        assert value not in text, f"{value!r} leaked into {name}"


def test_patient_only_as_identifier_reference() -> None:
    for resource in [fo.risk_assessment(flag_output(), event()),
                     *fo.flags(flag_output(), event()),
                     fo.care_team(assignment_output(), event()),
                     fo.task(task_output(), event())]:
        subject = resource.get("subject") or resource["for"]
        assert set(subject) == {"type", "identifier"}
        assert subject["identifier"]["value"] == "MRN001"
        assert "name" not in resource


def test_factor_detail_not_copied() -> None:
    ra = fo.risk_assessment(flag_output(), event())
    notes = [n["text"] for n in ra["note"]]
    assert "lace_l: 2 points" in notes
    assert "cms_condition: heart_failure" in notes
    assert not any("I50.9" in n for n in notes)


# ------------------------------------------------------------------ notification Bundle


def _entries(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["fullUrl"]: e["resource"] for e in bundle["entry"]}


def _resolve(bundle: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return _entries(bundle)[ref["reference"]]


def test_notification_bundle_shape() -> None:
    n = notification_output()
    bundle = fo.notification_bundle(n, event())
    assert bundle["type"] == "message" and bundle["id"] == n.id
    assert bundle["timestamp"] == "2024-03-12T10:00:00-04:00"
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["eventCoding"] == {
        "system": "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event",
        "code": "notification-discharge", "display": "Discharge Notification"}
    assert header["source"]["endpoint"] == "urn:care-hub"
    (focus,) = header["focus"]
    enc = _resolve(bundle, focus)
    assert enc["resourceType"] == "Encounter"
    assert enc["status"] == "finished"
    assert enc["class"]["code"] == "IMP"
    assert enc["hospitalization"]["dischargeDisposition"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": "01"}
    assert enc["location"][0]["location"] == {"display": "3W"}  # unit only
    assert "312" not in json.dumps(enc)  # no room/bed
    patient = _resolve(bundle, enc["subject"])
    assert patient["resourceType"] == "Patient"
    assert patient["name"] == [{"family": FAMILY, "given": [GIVEN, "B"]}]
    assert patient["gender"] == "female" and patient["birthDate"] == "1950-02-03"
    assert [i["value"] for i in patient["identifier"]] == ["MRN001"]  # no SSN
    assert {"address", "telecom", "communication"}.isdisjoint(patient)
    org = _resolve(bundle, header["sender"])
    assert org["resourceType"] == "Organization" and org["name"] == "GHH"
    assert _resolve(bundle, enc["serviceProvider"]) is org
    prac = _resolve(bundle, enc["participant"][0]["individual"])
    assert prac["resourceType"] == "Practitioner"
    assert prac["name"] == [{"text": "Dr Attending"}]
    (dest,) = header["destination"]
    assert dest["endpoint"] == "urn:care-hub:pcp:pcp9"
    assert dest["receiver"]["identifier"] == {"system": "urn:care-hub:practitioner",
                                              "value": "pcp9"}
    # minimum necessary: no diagnoses, coverage, address, phone
    text = json.dumps(bundle)
    for value in (PHONE, "Elm St", "I50.9", "999-00-1234"):
        assert value not in text


def test_notification_bundle_references_all_resolve() -> None:
    for bundle in (fo.notification_bundle(notification_output(), event()),
                   fo.notification_bundle(admit_notification(), admit_event())):
        urls = [e["fullUrl"] for e in bundle["entry"]]
        assert len(set(urls)) == len(urls)
        for e in bundle["entry"]:
            assert e["fullUrl"] == f"urn:uuid:{e['resource']['id']}"
        refs: list[str] = []

        def walk(node: Any, refs: list[str] = refs) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("reference"), str):
                    refs.append(node["reference"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(bundle)
        assert refs and all(r in urls for r in refs)


def test_admit_notification_without_recipient_or_attending() -> None:
    bundle = fo.notification_bundle(admit_notification(), admit_event())
    header = bundle["entry"][0]["resource"]
    assert header["eventCoding"]["code"] == "notification-admit"
    assert "destination" not in header and "author" not in header
    enc = _resolve(bundle, header["focus"][0])
    assert enc["status"] == "in-progress" and enc["class"]["code"] == "EMER"
    assert "end" not in enc["period"]
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "MessageHeader", "Encounter", "Patient", "Organization"]
    patient = _resolve(bundle, enc["subject"])
    assert patient["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.19.5"


def test_notification_bundle_reads_back_through_the_inbound_mapper() -> None:
    """What we send, the hub itself reads back as the same admission facts."""
    bundle = fo.notification_bundle(notification_output(), event())
    (back,) = map_fhir(json.dumps(bundle).encode(), received_at=datetime(2024, 3, 12, tzinfo=UTC),
                       default_tz="UTC")
    src = event()
    assert back.kind is EventKind.DISCHARGE
    assert back.patient.mrn == "MRN001"
    assert back.patient.key == src.patient.key
    assert (back.patient.family_name, back.patient.given_names) == (FAMILY, [GIVEN, "B"])
    assert back.encounter is not None and src.encounter is not None
    assert back.encounter.id == "V100"
    assert back.encounter.class_ == src.encounter.class_
    assert (back.encounter.admit_at, back.encounter.discharge_at) == (
        src.encounter.admit_at, src.encounter.discharge_at)
    assert back.encounter.discharge_disposition == "01"
    assert back.encounter.location is not None
    assert (back.encounter.location.facility, back.encounter.location.unit) == ("GHH", "3W")
    assert back.encounter.attending is not None and back.encounter.attending.id == "d1"


@pytest.mark.parametrize("authority", ["GENHOSP", "St Mary's Hospital", "A|B^C"])
def test_hub_authority_urn_reads_back_as_the_same_patient_key(authority: str) -> None:
    """A patient the hub names by an HL7 namespace id keeps its key through a FHIR round
    trip (urn:care-hub:authority:<id> is the hub's own minting, so it maps back)."""
    from mappers.fhir import elements

    assert elements.AUTHORITY_URN_PREFIX == fo.AUTHORITY_URN_PREFIX
    data = {**EVENT_DATA, "patient": {**EVENT_DATA["patient"],
                                      "key": f"{authority}|MRN001",
                                      "assigning_authority": authority}}
    src = CanonicalEvent.model_validate(data)
    bundle = fo.notification_bundle(notification_output(patient_key=src.patient.key), src)
    (back,) = map_fhir(json.dumps(bundle).encode(), received_at=datetime(2024, 3, 12, tzinfo=UTC),
                       default_tz="UTC")
    assert back.patient.key == src.patient.key
    assert back.patient.assigning_authority == authority


@pytest.mark.parametrize(("cls", "code"), [
    ("inpatient", "IMP"), ("emergency", "EMER"), ("observation", "OBSENC"),
    ("outpatient", "AMB"), ("preadmit", "PRENC"), ("recurring", "AMB"), ("other", "UNK"),
])
def test_encounter_class(cls: str, code: str) -> None:
    data = {**EVENT_DATA, "encounter": {**EVENT_DATA["encounter"], "class": cls}}
    bundle = fo.notification_bundle(notification_output(),
                                    CanonicalEvent.model_validate(data))
    assert bundle["entry"][1]["resource"]["class"]["code"] == code


def test_notification_without_encounter_still_has_a_focus() -> None:
    data = {k: v for k, v in EVENT_DATA.items() if k != "encounter"}
    bundle = fo.notification_bundle(notification_output(), CanonicalEvent.model_validate(data))
    enc = _resolve(bundle, bundle["entry"][0]["resource"]["focus"][0])
    assert enc["resourceType"] == "Encounter"
    assert enc["class"]["code"] == "UNK"
    assert enc["identifier"][0]["value"] == "V100"  # from the encounter key
    parse_resource(bundle)


# ------------------------------------------------------------------ references


@pytest.mark.parametrize(("authority", "system"), [
    ("HOSP", "urn:care-hub:authority:HOSP"),
    ("2.16.840.1.113883.19.5", "urn:oid:2.16.840.1.113883.19.5"),
    ("urn:oid:2.16.840.1.113883.19.5", "urn:oid:2.16.840.1.113883.19.5"),
    ("http://hospital.smarthealthit.org", "http://hospital.smarthealthit.org"),
    ("https://ehr.example/fhir/Patient", "https://ehr.example/fhir/Patient"),
    ("8F0D6A5E-3C1B-4F5E-9A43-7C2B1D0E6F11", "urn:uuid:8f0d6a5e-3c1b-4f5e-9a43-7c2b1d0e6f11"),
    ("St Mary's Hospital", "urn:care-hub:authority:St%20Mary's%20Hospital"),
    ("1.2", "urn:oid:1.2"),
    ("3.1", "urn:care-hub:authority:3.1"),  # not an OID (first arc 0-2)
])
def test_authority_system(authority: str, system: str) -> None:
    assert fo.authority_system(authority) == system
    ref = fo.patient_reference(f"{authority}|M1", authority, "M1")
    assert ref["identifier"]["system"] == system
    # a valid FHIR Identifier.system (uri)
    FhirPatient.model_validate({"resourceType": "Patient",
                                "identifier": [{"system": system, "value": "M1"}]})


def test_patient_reference_by_identifier() -> None:
    assert fo.patient_reference("HOSP|MRN001", "HOSP", "MRN001") == {
        "type": "Patient",
        "identifier": {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "MR", "display": "Medical record number"}]},
            "system": "urn:care-hub:authority:HOSP",
            "value": "MRN001",
        },
    }


def test_patient_reference_from_key() -> None:
    ref = fo.patient_reference("urn:oid:1.2.3|A|B", "", "")
    assert ref["identifier"]["system"] == "urn:oid:1.2.3"
    assert ref["identifier"]["value"] == "A|B"  # split at the first "|"


def test_patient_reference_needs_an_mrn() -> None:
    with pytest.raises(MappingError) as exc:
        fo.patient_reference("nokey", "", "")
    assert exc.value.code is ErrorCode.MISSING_PATIENT_IDENTIFIER


def test_encounter_reference() -> None:
    ref = fo.encounter_reference("GHH|V100", None, None)
    assert ref is not None
    assert ref["type"] == "Encounter"
    assert ref["identifier"]["system"] == "urn:care-hub:visit:GHH"
    assert ref["identifier"]["value"] == "V100"
    assert fo.encounter_reference(None, "GHH", "V100") == ref
    assert fo.encounter_reference("GHH|V100", "GHH", None) == ref
    other = fo.encounter_reference(None, None, "V7")
    assert other is not None and other["identifier"]["system"] == "urn:care-hub:visit"
    assert fo.encounter_reference(None, "GHH", None) is None
    assert fo.encounter_reference("GHH|", None, None) is None


def test_merged_patient_uses_the_record_key() -> None:
    """After a merge the output's key is the surviving patient, not the event's."""
    ra = fo.risk_assessment(flag_output(patient_key="HOSP|MRN-SURVIVOR"), event())
    assert ra["subject"]["identifier"]["value"] == "MRN-SURVIVOR"


# ------------------------------------------------------------------ status maps & content


@pytest.mark.parametrize(("stage", "status", "want"), [
    ("discharge", "active", "final"),
    ("admission", "active", "preliminary"),
    ("discharge", "withdrawn", "entered-in-error"),
    ("admission", "withdrawn", "entered-in-error"),
])
def test_risk_assessment_status(stage: str, status: str, want: str) -> None:
    ra = fo.risk_assessment(flag_output(stage=stage, status=status), event())
    assert ra["status"] == want


def test_risk_assessment_content() -> None:
    f = flag_output()
    ra = fo.risk_assessment(f, event())
    assert ra["id"] == f.id
    assert ra["occurrenceDateTime"] == "2024-03-12T10:00:00-04:00"
    assert ra["method"]["coding"][0]["system"] == fo.RISK_METHOD_SYSTEM
    assert ra["method"]["coding"][0]["code"] == "lace"
    (pred,) = ra["prediction"]
    assert pred["qualitativeRisk"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/risk-probability",
        "code": "high", "display": "High likelihood"}
    assert "LACE index 13" in pred["rationale"]
    assert ra["encounter"]["identifier"]["value"] == "V100"


def test_flags_one_per_reason() -> None:
    f = flag_output()
    out = fo.flags(f, event())
    assert [x["id"] for x in out] == [derive_id(f.id, r.code) for r in f.reasons]
    assert [x["code"]["coding"][0]["code"] for x in out] == [r.code for r in f.reasons]
    for x in out:
        assert x["status"] == "active"
        assert x["category"][0]["coding"][0]["code"] == "clinical"
        assert x["code"]["coding"][0]["system"] == fo.CARE_FLAG_SYSTEM
        assert x["period"] == {"start": "2024-03-12T10:00:00-04:00"}
    withdrawn = fo.flags(flag_output(status="withdrawn"), event())
    assert {x["status"] for x in withdrawn} == {"inactive"}
    assert [x["id"] for x in withdrawn] == [x["id"] for x in out]  # same Flags, updated
    assert fo.flags(flag_output(reasons=[]), event()) == []


@pytest.mark.parametrize(("status", "want"), [
    ("assigned", "active"), ("unassigned", "proposed"), ("released", "inactive")])
def test_care_team_status(status: str, want: str) -> None:
    ct = fo.care_team(assignment_output(status=status), None)
    assert ct["status"] == want
    assert "name" not in ct and "managingOrganization" not in ct


def test_care_team_members() -> None:
    ct = fo.care_team(assignment_output(), event())
    (p,) = ct["participant"]
    assert p["role"][0]["coding"][0]["code"] == "768820003"
    assert p["member"] == {"type": "Practitioner",
                           "identifier": {"system": "urn:care-hub:manager", "value": "cm-017"}}
    assert p["onBehalfOf"]["identifier"] == {"system": "urn:care-hub:team", "value": "3w-cm"}
    assert ct["note"][0]["text"].startswith("reason: continuity")
    un = fo.care_team(assignment_output(status="unassigned", manager_id=None,
                                        reason="none_on_shift"), None)
    (p,) = un["participant"]
    assert p["member"] == {"type": "Organization",
                           "identifier": {"system": "urn:care-hub:team", "value": "3w-cm"}}
    assert "onBehalfOf" not in p  # ctm-1: only with a Practitioner member
    bare = fo.care_team(assignment_output(status="unassigned", manager_id=None, team=None,
                                          reason="no_team"), None)
    assert "member" not in bare["participant"][0]
    parse_resource(bare)


@pytest.mark.parametrize("status", ["requested", "in-progress", "completed", "cancelled",
                                    "failed", "on-hold"])
def test_task_status_maps_directly(status: str) -> None:
    assert fo.task(task_output(status=status), None)["status"] == status


def test_task_content() -> None:
    t = task_output()
    out = fo.task(t, event())
    assert out["id"] == t.task_id
    assert out["intent"] == "order" and out["priority"] == "urgent"
    assert out["code"]["coding"][0]["system"] == fo.CARE_TASK_SYSTEM
    assert out["code"]["coding"][0]["code"] == "contact"
    assert out["focus"]["type"] == "Encounter"
    assert out["for"]["type"] == "Patient"
    assert out["authoredOn"] == out["lastModified"] == "2024-03-12T10:00:00-04:00"
    assert out["restriction"]["period"]["end"] == "2024-03-14T17:00:00-04:00"
    assert out["owner"] == {"type": "Practitioner",
                            "identifier": {"system": "urn:care-hub:manager", "value": "cm-017"}}
    assert "statusReason" not in out
    queued = fo.task(task_output(owner="team:3w-cm"), None)
    assert queued["owner"] == {"type": "Organization",
                               "identifier": {"system": "urn:care-hub:team", "value": "3w-cm"}}
    assert "owner" not in fo.task(task_output(owner=None), None)
    cancelled = fo.task(task_output(status="cancelled", status_reason="deceased"), None)
    assert cancelled["statusReason"] == {"text": "deceased"}


def test_task_id_not_a_fhir_id_is_derived() -> None:
    out = fo.task(task_output(task_id="GHH|V100|contact"), None)
    assert out["id"] == derive_id("fhir-id", "GHH|V100|contact")


def test_escalation_task() -> None:
    esc = escalation_output()
    out = fo.escalation_task(esc, event())
    assert out["resourceType"] == "Task" and out["id"] == esc.id
    assert out["code"]["coding"][0]["code"] == "escalation"
    assert out["priority"] == "urgent" and out["status"] == "requested"
    assert out["focus"] == {"reference": f"Task/{esc.task_id}", "type": "Task"}
    assert out["owner"]["identifier"] == {"system": "urn:care-hub:manager", "value": "sup-3w"}
    assert out["for"] == fo.task(task_output(), event())["for"]  # the same patient
    assert out["reasonCode"]["coding"][0]["code"] == "task_overdue"
    no_task = fo.escalation_task(escalation_output(reason="none_eligible", task_id=None,
                                                   supervisor=None), None)
    assert no_task["focus"]["type"] == "Encounter"
    assert no_task["owner"]["identifier"] == {"system": "urn:care-hub:team", "value": "3w-cm"}


# ------------------------------------------------------------------ render & errors


def test_render_dispatch() -> None:
    ev = event()
    assert fo.render(flag_output(), ev) == fo.risk_assessment(flag_output(), ev)
    team = fo.render(assignment_output(), ev)
    assert team is not None and team["resourceType"] == "CareTeam"
    assert fo.render(task_output(), None) == fo.task(task_output(), None)
    assert fo.render(escalation_output(), ev) == fo.escalation_task(escalation_output(), ev)
    assert fo.render(notification_output(), ev) == fo.notification_bundle(
        notification_output(), ev)
    assert fo.render(notification_output(), None) is None


def test_invalid_content_becomes_a_phi_free_mapping_error() -> None:
    with pytest.raises(MappingError) as exc:
        fo.task(task_output(description=""), None)
    assert exc.value.code is ErrorCode.INTERNAL_ERROR
    assert "Task.description" in exc.value.detail
    # pydantic messages carry the input: the detail must not
    with pytest.raises(MappingError) as exc2:
        fo._build(FhirPatient, {"resourceType": "Patient", "birthDate": f"{FAMILY}-1950"})
    assert exc2.value.code is ErrorCode.INTERNAL_ERROR
    assert "Patient.birthDate" in exc2.value.detail
    assert FAMILY not in exc2.value.detail and FAMILY not in str(exc2.value)
    assert exc2.value.__cause__ is None
