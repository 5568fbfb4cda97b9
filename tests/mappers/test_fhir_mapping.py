"""FHIR R4 -> canonical: Bundles, notifications, resolver, times, errors, robustness."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers.fhir import map_fhir
from schemas.canonical import EncounterClass, EventKind
from schemas.errors import ErrorCode, MappingError

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-1234"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                              "code": "MR"}]},
         "system": MRN_SYSTEM, "value": "MRN001"},
    ],
    "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
    "gender": "female",
    "birthDate": "1950-02-03",
    "generalPractitioner": [{"reference": "Practitioner/gp", "display": "Dr GP"}],
}
ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "e1",
    "meta": {"versionId": "3"},
    "identifier": [{"type": {"coding": [{"code": "VN"}]}, "value": "V100"}],
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
                             "code": "EM"}]},
    "serviceType": {"coding": [{"code": "MED"}]},
    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
    "participant": [
        {"type": [{"coding": [{"code": "ADM"}]}], "individual": {"display": "Dr Admit"}},
        {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"reference": "Practitioner/d1"}},
    ],
    "period": {"start": "2024-03-10T08:00:00-04:00", "end": "2024-03-12T10:00:00-04:00"},
    "hospitalization": {"admitSource": {"coding": [{"code": "emd"}]},
                        "dischargeDisposition": {"coding": [{"code": "home"}]}},
    "location": [
        {"location": {"reference": "Location/ed"}, "status": "completed"},
        {"location": {"reference": "Location/bed12"}, "status": "active"},
    ],
    "serviceProvider": {"reference": "Organization/h1"},
}

LONE_ENCOUNTER: dict[str, Any] = {**ENCOUNTER, "subject": {"reference": "Patient/p1"}}


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    url = full_url or f"http://ehr.example/fhir/{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": url, "resource": resource}


def transaction_bundle() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": "tx1",
        "type": "transaction",
        "entry": [
            _entry(ENCOUNTER),
            _entry(PATIENT, "urn:uuid:11111111-1111-1111-1111-111111111111"),
            _entry({"resourceType": "Practitioner", "id": "d1",
                    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                    "value": "1234567893"}],
                    "name": [{"family": "House", "given": ["Greg"]}]}),
            _entry({"resourceType": "Organization", "id": "h1", "name": "General Hospital"}),
            _entry({"resourceType": "Location", "id": "ward4", "name": "4 West",
                    "physicalType": {"coding": [{"code": "wa"}]}}),
            _entry({"resourceType": "Location", "id": "room12", "name": "412",
                    "physicalType": {"coding": [{"code": "ro"}]},
                    "partOf": {"reference": "Location/ward4"}}),
            _entry({"resourceType": "Location", "id": "bed12", "name": "412-B",
                    "physicalType": {"coding": [{"code": "bd"}]},
                    "partOf": {"reference": "Location/room12"}}),
            _entry({"resourceType": "Location", "id": "ed", "name": "Emergency",
                    "physicalType": {"coding": [{"code": "wa"}]}}),
            _entry({"resourceType": "Condition", "id": "c1",
                    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                    "encounter": {"reference": "Encounter/e1"},
                    "category": [{"coding": [{"code": "encounter-diagnosis"}]}],
                    "code": {"coding": [
                        {"system": "http://snomed.info/sct", "code": "42343007"},
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9",
                         "display": "Heart failure, unspecified"}]}}),
            _entry({"resourceType": "Condition", "id": "c-other",
                    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                    "encounter": {"reference": "Encounter/other"},
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                         "code": "Z59.0"}]}}),
            _entry({"resourceType": "Coverage", "id": "cov1", "status": "active",
                    "beneficiary": {"reference":
                                    "urn:uuid:11111111-1111-1111-1111-111111111111"},
                    "payor": [{"reference": "Organization/pay1"}],
                    "class": [{"type": {"coding": [{"code": "plan"}]}, "value": "PLAN-7"}]}),
            _entry({"resourceType": "Organization", "id": "pay1", "name": "Medicare",
                    "identifier": [{"value": "CMS"}]}),
        ],
    }


def test_transaction_bundle_full_mapping() -> None:
    (event,) = map_fhir(transaction_bundle(), received_at=RECEIVED_AT)
    assert event.kind is EventKind.ADMIT
    assert event.trigger == "encounter-in-progress"
    p = event.patient
    assert p.key == f"{MRN_SYSTEM}|MRN001" and p.mrn == "MRN001"
    assert [i.value for i in p.identifiers] == ["MRN001"]  # SSN dropped
    assert (p.family_name, p.given_names, p.sex) == ("Doe", ["Jane", "Q"], "female")
    assert p.primary_care_provider is not None and p.primary_care_provider.name == "Dr GP"
    enc = event.encounter
    assert enc is not None
    assert enc.id == "V100"
    assert enc.class_ is EncounterClass.INPATIENT
    assert enc.admission_type == "E"  # ActPriority EM -> HL7 0007 E
    assert enc.hospital_service == "MED"
    assert enc.admit_source == "emd" and enc.discharge_disposition == "home"
    assert enc.discharge_at is None  # in-progress
    assert enc.location is not None
    assert (enc.location.facility, enc.location.unit, enc.location.room, enc.location.bed) == (
        "General Hospital", "4 West", "412", "412-B")
    assert enc.prior_location is not None and enc.prior_location.unit == "Emergency"
    assert enc.attending is not None
    assert (enc.attending.id, enc.attending.name) == ("1234567893", "Greg House")
    assert [(d.code, d.system, d.type) for d in event.diagnoses] == [
        ("I50.9", "ICD-10-CM", "encounter-diagnosis")]
    assert [(c.payer_id, c.payer_name, c.plan_id) for c in event.coverage] == [
        ("CMS", "Medicare", "PLAN-7")]
    assert event.source.facility == "General Hospital"
    assert event.source.message_id == "tx1"
    assert event.occurred_at == enc.admit_at  # no envelope time, no meta lastUpdated


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        ("planned", "IMP", EventKind.PREADMIT),
        ("arrived", "IMP", EventKind.ADMIT),
        ("arrived", "EMER", EventKind.REGISTER),
        ("triaged", "OBSENC", EventKind.ADMIT),
        ("in-progress", "AMB", EventKind.ADMIT),
        ("onleave", "IMP", EventKind.LEAVE_OF_ABSENCE),
        ("finished", "IMP", EventKind.DISCHARGE),
        ("cancelled", "IMP", EventKind.CANCEL_ADMIT),
        ("entered-in-error", "IMP", EventKind.CANCEL_ADMIT),
        ("unknown", "IMP", EventKind.UPDATE),
    ],
)
def test_status_to_kind(status: str, code: str, kind: EventKind) -> None:
    bundle = transaction_bundle()
    bundle["entry"][0]["resource"] = {**ENCOUNTER, "status": status, "class": {"code": code}}
    (event,) = map_fhir(bundle, received_at=RECEIVED_AT)
    assert event.kind is kind
    assert event.encounter is not None
    discharge = event.encounter.discharge_at
    assert (discharge is not None) == (status == "finished")


@pytest.mark.parametrize(
    ("code", "cls"),
    [("ACUTE", "inpatient"), ("EMER", "emergency"), ("OBSENC", "observation"),
     ("AMB", "outpatient"), ("PRENC", "preadmit"), ("HH", "other"), ("VR", "other")],
)
def test_class_codes(code: str, cls: str) -> None:
    bundle = transaction_bundle()
    bundle["entry"][0]["resource"] = {**ENCOUNTER, "class": {"code": code}}
    (event,) = map_fhir(bundle, received_at=RECEIVED_AT)
    assert event.encounter is not None and event.encounter.class_ == cls


def test_bad_status_is_invalid() -> None:
    bundle = transaction_bundle()
    bundle["entry"][0]["resource"] = {**ENCOUNTER, "status": "Jane Doe"}
    with pytest.raises(MappingError) as err:
        map_fhir(bundle, received_at=RECEIVED_AT)
    assert err.value.code is ErrorCode.INVALID_RESOURCE
    assert "Jane" not in err.value.detail


def test_davinci_discharge_and_transfer() -> None:
    for code, kind in [("notification-discharge", EventKind.DISCHARGE),
                       ("notification-transfer", EventKind.TRANSFER)]:
        bundle = transaction_bundle()
        bundle["type"] = "message"
        bundle["timestamp"] = "2024-03-12T10:05:00-04:00"
        header = {"resourceType": "MessageHeader", "id": "mh",
                  "eventCoding": {"system": "http://hl7.org/fhir/us/davinci-alerts/"
                                            "CodeSystem/notification-event", "code": code},
                  "source": {"endpoint": "https://ehr.example/fhir"},
                  "focus": [{"reference": "Encounter/e1"}]}
        bundle["entry"].insert(0, _entry(header, "urn:uuid:22222222-2222-2222-2222-222222222222"))
        (event,) = map_fhir(bundle, received_at=RECEIVED_AT)
        assert event.kind is kind and event.trigger == code
        assert event.occurred_at.isoformat() == "2024-03-12T10:05:00-04:00"
        assert event.source.system == "https://ehr.example/fhir"
        assert event.encounter is not None
        # A discharge notification takes period.end as the discharge time.
        assert (event.encounter.discharge_at is not None) == (kind is EventKind.DISCHARGE)
        assert event.encounter.prior_location is not None


def test_message_bundle_without_header_is_invalid() -> None:
    bundle = transaction_bundle()
    bundle["type"] = "message"
    with pytest.raises(MappingError) as err:
        map_fhir(bundle, received_at=RECEIVED_AT)
    assert err.value.code is ErrorCode.INVALID_RESOURCE


def _notification(*, ntype: str = "event-notification", with_bodies: bool = True,
                  focus: bool = True) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/s1"}},
        {"name": "topic", "valueCanonical": "http://example.org/topic/encounter-start"},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": ntype},
    ]
    if focus:
        params.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": "1"},
            {"name": "timestamp", "valueInstant": "2024-03-10T12:00:00Z"},
            {"name": "focus", "valueReference": {"reference":
                                                 "http://ehr.example/fhir/Encounter/e1"}},
        ]})
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:33333333-3333-3333-3333-333333333333",
         "resource": {"resourceType": "Parameters", "id": "st", "parameter": params}}]
    if with_bodies:
        entries += [_entry(ENCOUNTER),
                    _entry(PATIENT, "urn:uuid:11111111-1111-1111-1111-111111111111")]
    else:
        entries.append({"fullUrl": "http://ehr.example/fhir/Encounter/e1",
                        "request": {"method": "PUT", "url": "Encounter/e1"}})
    return {"resourceType": "Bundle", "id": "n1", "type": "history",
            "timestamp": "2024-03-10T12:00:01Z", "entry": entries}


def test_full_resource_subscription_notification() -> None:
    (event,) = map_fhir(_notification(), received_at=RECEIVED_AT)
    assert event.kind is EventKind.ADMIT
    assert event.trigger == "http://example.org/topic/encounter-start"
    assert event.occurred_at.isoformat() == "2024-03-10T12:00:00+00:00"
    assert event.patient.mrn == "MRN001"


@pytest.mark.parametrize("ntype", ["handshake", "heartbeat", "query-status"])
def test_handshake_and_heartbeat_map_to_nothing(ntype: str) -> None:
    assert map_fhir(_notification(ntype=ntype, with_bodies=False, focus=False),
                    received_at=RECEIVED_AT) == []


def test_id_only_notification_rejected_without_resolver() -> None:
    with pytest.raises(MappingError) as err:
        map_fhir(_notification(with_bodies=False), received_at=RECEIVED_AT)
    assert err.value.code is ErrorCode.ID_ONLY_NOTIFICATION
    with pytest.raises(MappingError) as err:
        map_fhir(_notification(with_bodies=False, focus=False), received_at=RECEIVED_AT)
    assert err.value.code is ErrorCode.ID_ONLY_NOTIFICATION


def test_id_only_notification_with_resolver() -> None:
    asked: list[str] = []
    store = {"http://ehr.example/fhir/Encounter/e1": ENCOUNTER,
             "urn:uuid:11111111-1111-1111-1111-111111111111": PATIENT}

    def resolver(ref: str) -> dict[str, Any] | None:
        asked.append(ref)
        return copy.deepcopy(store.get(ref))

    (event,) = map_fhir(_notification(with_bodies=False), received_at=RECEIVED_AT,
                        resolver=resolver)
    assert event.patient.mrn == "MRN001"
    assert asked == list(store)

    with pytest.raises(MappingError) as err:
        map_fhir(_notification(with_bodies=False), received_at=RECEIVED_AT,
                 resolver=lambda ref: None)
    assert err.value.code is ErrorCode.UNRESOLVED_REFERENCE


def test_resolver_failure_is_a_mapping_error() -> None:
    def broken(ref: str) -> dict[str, Any] | None:
        raise ConnectionError(f"cannot reach {ref}")

    with pytest.raises(MappingError) as err:
        map_fhir(_notification(with_bodies=False), received_at=RECEIVED_AT, resolver=broken)
    assert err.value.code is ErrorCode.UNRESOLVED_REFERENCE
    assert "e1" not in err.value.detail


def test_lone_encounter_subject_resolved() -> None:
    enc = {**ENCOUNTER, "subject": {"reference": "Patient/p1"}, "location": []}
    (event,) = map_fhir(enc, received_at=RECEIVED_AT,
                        resolver=lambda ref: PATIENT if ref == "Patient/p1" else None)
    assert event.patient.key == f"{MRN_SYSTEM}|MRN001"
    assert event.source.message_id == "Encounter/e1/_history/3"


def test_lone_encounter_logical_reference() -> None:
    enc = {**ENCOUNTER, "subject": {"identifier": {"system": MRN_SYSTEM, "value": "M9"}}}
    (event,) = map_fhir(enc, received_at=RECEIVED_AT)
    assert event.patient.key == f"{MRN_SYSTEM}|M9"


def test_contained_patient() -> None:
    enc = {**ENCOUNTER, "contained": [{**PATIENT, "id": "pat"}],
           "subject": {"reference": "#pat"}}
    (event,) = map_fhir(enc, received_at=RECEIVED_AT)
    assert event.patient.mrn == "MRN001"


def test_times_without_offset_use_default_tz() -> None:
    enc = {**LONE_ENCOUNTER, "period": {"start": "2024-07-01T08:00:00", "end": "2024-07-02"},
           "status": "finished"}
    (event,) = map_fhir(enc, received_at=RECEIVED_AT, default_tz="America/New_York")
    assert event.encounter is not None
    assert event.encounter.admit_at is not None
    assert event.encounter.admit_at.isoformat() == "2024-07-01T08:00:00-04:00"  # EDT
    assert event.encounter.discharge_at is not None
    assert event.encounter.discharge_at.isoformat() == "2024-07-02T00:00:00-04:00"
    (utc_event,) = map_fhir(enc, received_at=RECEIVED_AT)
    assert utc_event.encounter is not None and utc_event.encounter.admit_at is not None
    assert utc_event.encounter.admit_at.utcoffset() is not None
    assert utc_event.encounter.admit_at.isoformat() == "2024-07-01T08:00:00+00:00"


def test_event_ids_follow_version_and_content() -> None:
    (a,) = map_fhir(LONE_ENCOUNTER, received_at=RECEIVED_AT)
    (b,) = map_fhir(copy.deepcopy(LONE_ENCOUNTER), received_at=datetime.now(UTC))
    assert a.event_id == b.event_id  # same versionId: redelivery
    (c,) = map_fhir({**LONE_ENCOUNTER, "meta": {"versionId": "4"}}, received_at=RECEIVED_AT)
    assert c.event_id != a.event_id
    no_meta = {k: v for k, v in LONE_ENCOUNTER.items() if k != "meta"}
    (d,) = map_fhir(no_meta, received_at=RECEIVED_AT)
    (e,) = map_fhir({**no_meta, "status": "finished"}, received_at=RECEIVED_AT)
    assert d.event_id != e.event_id  # no version: the content decides


def test_bytes_input_with_bom() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(PATIENT).encode()
    (event,) = map_fhir(raw, received_at=RECEIVED_AT)
    assert event.kind is EventKind.UPDATE and event.patient.mrn == "MRN001"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.INVALID_JSON),
        (b"\xff\xfe{", ErrorCode.INVALID_JSON),
        (b'{"resourceType": "Patient",', ErrorCode.INVALID_JSON),
        (b'{"resourceType": "Patient", "x": NaN}', ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.INVALID_RESOURCE),
        (b"{}", ErrorCode.INVALID_RESOURCE),
        (b'{"resourceType": "JaneDoe"}', ErrorCode.INVALID_RESOURCE),
        (b'{"resourceType": "Observation", "status": "final", "code": {}}',
         ErrorCode.UNSUPPORTED_RESOURCE),
        (b'{"resourceType": "Bundle", "type": "document"}', ErrorCode.UNSUPPORTED_RESOURCE),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
         b'{"resourceType": "Observation", "status": "final", "code": {}}}]}',
         ErrorCode.UNSUPPORTED_RESOURCE),
        (b'{"resourceType": "Bundle", "type": "history", "entry": []}',
         ErrorCode.UNSUPPORTED_RESOURCE),
        (b'{"resourceType": "Patient", "birthDate": "Jane Doe"}', ErrorCode.INVALID_RESOURCE),
        (b'{"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"}}',
         ErrorCode.MISSING_PATIENT_IDENTIFIER),
    ],
)
def test_rejections(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(MappingError) as err:
        map_fhir(data, received_at=RECEIVED_AT)
    assert err.value.code is code
    assert "Jane" not in err.value.detail and "Doe" not in err.value.detail


def test_unsupported_resource_names_the_type() -> None:
    with pytest.raises(MappingError) as err:
        map_fhir({"resourceType": "Observation"}, received_at=RECEIVED_AT)
    assert "Observation" in err.value.detail


def test_r4_only_resource_in_bundle_is_ignored() -> None:
    bundle = transaction_bundle()
    bundle["entry"].append({"fullUrl": "urn:uuid:44444444-4444-4444-4444-444444444444",
                            "resource": {"resourceType": "MedicinalProduct", "id": "mp"}})
    (event,) = map_fhir(bundle, received_at=RECEIVED_AT)
    assert event.kind is EventKind.ADMIT


def test_bad_default_tz_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        map_fhir(PATIENT, received_at=RECEIVED_AT, default_tz="Mars/Olympus")


# --- robustness: only MappingError escapes, and never INTERNAL_ERROR ------------------

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_fhir_keys = st.sampled_from([
    "resourceType", "id", "status", "class", "subject", "reference", "identifier", "value",
    "system", "entry", "resource", "type", "fullUrl", "period", "start", "end", "code",
    "coding", "location", "name", "family", "given", "birthDate", "meta", "lastUpdated",
    "focus", "eventCoding", "parameter", "part", "valueCode", "valueReference",
])
_fhir_like = st.recursive(
    _json_leaf | st.sampled_from(["Encounter", "Patient", "Bundle", "message", "history",
                                  "collection", "finished", "in-progress", "IMP", "MR",
                                  "Patient/p1", "2024-01-01T00:00:00Z", "2024-01-01T10:00"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(_fhir_keys, children, max_size=6),
    max_leaves=40,
)


def _only_mapping_errors(data: Any) -> None:
    try:
        map_fhir(data, received_at=RECEIVED_AT)
    except MappingError as exc:
        assert exc.code is not ErrorCode.INTERNAL_ERROR, exc.detail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_mapping_error(data: bytes) -> None:
    _only_mapping_errors(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), _json, max_size=6))
def test_arbitrary_dicts_raise_only_mapping_error(data: dict[str, Any]) -> None:
    _only_mapping_errors(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["Encounter", "Patient", "Bundle"]),
    st.dictionaries(_fhir_keys, _fhir_like, max_size=8),
)
def test_fhir_shaped_dicts_raise_only_mapping_error(rtype: str, body: dict[str, Any]) -> None:
    _only_mapping_errors({**body, "resourceType": rtype})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_bundle_raises_only_mapping_error(data: st.DataObject) -> None:
    bundle = transaction_bundle()
    i = data.draw(st.integers(0, len(bundle["entry"]) - 1))
    resource = bundle["entry"][i]["resource"]
    key = data.draw(st.sampled_from(sorted(resource)))
    resource[key] = data.draw(_fhir_like)
    _only_mapping_errors(bundle)
