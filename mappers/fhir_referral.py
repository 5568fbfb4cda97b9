"""Community referrals -> FHIR R4 (Gravity SDOH Clinical Care shape), and the agency's
minimum-necessary projection.

Pure functions: every time and id comes from the arguments, so the same referral gives
byte-identical JSON. Resources are validated with the R4B models through
:func:`mappers.fhir_out._build` (the one place FHIR validation errors become
``MappingError``; ``fhir.resources`` itself is only imported by :mod:`schemas.fhir`).

Two renderings of one referral, on purpose (see :mod:`schemas.referrals`):

* the hub view (:func:`hub_bundle`): a ``collection`` Bundle with the ServiceRequest (the
  need; ``reasonCode`` = the ICD-10 codes that detected it) and the Task (the agency's
  workflow), the patient referenced by MRN like every other care record;
* the agency copy (:func:`agency_copy` builds the :class:`AgencyReferral`,
  :func:`agency_bundle` its FHIR): a ``collection`` Bundle with a Patient holding only
  name, birth date, phone, address and preferred language, identified by a
  referral-scoped id (never the MRN); a ServiceRequest whose only clinical content is the
  need category (no ``reasonCode``, no diagnoses); and the Task.

Codes. ``ServiceRequest.category``: the Gravity SDOHCC temporary code of the need when it
is a social need (housing -> ``housing-instability``, food -> ``food-insecurity``, ...),
plus the hub's service code (:data:`REFERRAL_SERVICE_SYSTEM`) for every need (home
health and behavioral health are not SDOH domains). ``ServiceRequest.code``: the hub's
service code with a display; no SNOMED CT code is invented here (a site that wants one
maps it downstream).

References are logical (identifiers), as in :mod:`mappers.fhir_out`: the agency is an
Organization ``{system: urn:care-hub:agency, value: <agency id>}``; the referring case
manager a Practitioner ``{system: urn:care-hub:manager}``, or the team Organization.
Inside a Bundle, the ServiceRequest, Task and Patient point at each other by their
``urn:uuid:`` fullUrls.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any, Final

from mappers.fhir_out import (
    MANAGER_SYSTEM,
    _build,
    _concept,
    _fhir_id,
    _prune,
    encounter_reference,
    patient_reference,
)
from schemas.canonical import Address, derive_id
from schemas.fhir import Bundle, Patient, ServiceRequest, Task
from schemas.referrals import (
    AgencyAddress,
    AgencyPatient,
    AgencyReferral,
    Contact,
    ReferralOutput,
)

__all__ = [
    "AGENCY_SYSTEM",
    "REFERRAL_ID_SYSTEM",
    "REFERRAL_PATIENT_SYSTEM",
    "REFERRAL_SERVICE_SYSTEM",
    "SDOHCC_SYSTEM",
    "STATUS_REASON_SYSTEM",
    "agency_bundle",
    "agency_content_hash",
    "agency_copy",
    "agency_patient",
    "hub_bundle",
    "service_request_status",
]

_PROJECT_CS: Final = "https://care-hub.example/fhir/CodeSystem"
REFERRAL_SERVICE_SYSTEM: Final = f"{_PROJECT_CS}/referral-service"
"""The hub's service codes (housing, food, home-health, behavioral-health, ...)."""
STATUS_REASON_SYSTEM: Final = f"{_PROJECT_CS}/referral-status-reason"
SDOHCC_SYSTEM: Final = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes")
AGENCY_SYSTEM: Final = "urn:care-hub:agency"
REFERRAL_ID_SYSTEM: Final = "urn:care-hub:referral"
REFERRAL_PATIENT_SYSTEM: Final = "urn:care-hub:referral-patient"
"""``Patient.identifier.system`` in the agency copy: the value is the agency Task id,
which identifies the patient to that agency for that referral only."""
BCP47_SYSTEM: Final = "urn:ietf:bcp:47"

# hub service code -> Gravity SDOHCC category (SDOH domains only)
_SDOH_CATEGORY: Final = {
    "housing": ("housing-instability", "Housing Instability"),
    "food": ("food-insecurity", "Food Insecurity"),
    "transportation": ("transportation-insecurity", "Transportation Insecurity"),
    "financial": ("financial-insecurity", "Financial Insecurity"),
    "education": ("educational-attainment", "Educational Attainment"),
    "employment": ("employment-status", "Employment Status"),
    "social-support": ("social-connection", "Social Connection"),
    "family-support": ("sdoh-category-unspecified", "SDOH Category Unspecified"),
    "psychosocial-support": ("sdoh-category-unspecified", "SDOH Category Unspecified"),
    "occupational-health": ("sdoh-category-unspecified", "SDOH Category Unspecified"),
    "environmental-health": ("sdoh-category-unspecified", "SDOH Category Unspecified"),
}
_SERVICE_DISPLAY: Final = {
    "housing": "Housing assistance",
    "food": "Food assistance",
    "transportation": "Transportation assistance",
    "financial": "Financial assistance",
    "education": "Education and literacy support",
    "employment": "Employment support",
    "social-support": "Social support",
    "family-support": "Family support",
    "psychosocial-support": "Psychosocial support",
    "occupational-health": "Occupational health",
    "environmental-health": "Environmental health",
    "home-health": "Home health services",
    "behavioral-health": "Behavioral health services",
}


# --- the minimum-necessary projection ----------------------------------------------------


def agency_patient(*, family_name: str | None, given_names: list[str], birth_date: date | None,
                   phone: str | None, address: Address | None, language: str | None
                   ) -> AgencyPatient:
    """The patient as an agency sees them: canonical ``patient.family_name``,
    ``given_names``, ``birth_date``, ``phone``, ``address`` (line, city, state,
    postal_code; not country or county) and ``language``. Nothing else is read, so
    nothing else can leak (no MRN, key, identifiers, sex, PCP, diagnoses)."""
    addr = None
    if address is not None and (address.line or address.city or address.state or
                                address.postal_code):
        addr = AgencyAddress(line=list(address.line), city=address.city, state=address.state,
                             postal_code=address.postal_code)
    return AgencyPatient(family_name=family_name, given_names=list(given_names),
                         birth_date=birth_date, phone=phone, address=addr,
                         preferred_language=language)


def agency_copy(*, task_id: str, referral_id: str, agency_id: str, status: str,
                status_reason: str | None, need: str, patient: AgencyPatient,
                discharge_date: date | None, referring: Contact, authored_at: datetime,
                updated_at: datetime, version: int, render_fhir: bool = True
                ) -> AgencyReferral:
    """The :class:`AgencyReferral` (with its FHIR Bundle unless ``render_fhir`` is off)."""
    copy = AgencyReferral(
        id=task_id, referral_id=referral_id, agency_id=agency_id,
        status=status,  # type: ignore[arg-type]
        status_reason=status_reason, need=need, patient=patient,
        discharge_date=discharge_date, referring=referring, authored_at=authored_at,
        updated_at=updated_at, version=version)
    if render_fhir:
        copy = copy.model_copy(update={"fhir": agency_bundle(copy)})
    return copy


def agency_content_hash(copy: AgencyReferral) -> str:
    """Hex SHA-256 of what an agency copy says: every :class:`AgencyReferral` field except
    ``version``, ``updated_at`` and ``fhir`` (which only follow from the others). Two
    copies with the same hash tell the agency the same thing, so the second is not sent.
    """
    data = copy.model_dump(mode="json", exclude={"version", "updated_at", "fhir"},
                           exclude_none=True)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- FHIR --------------------------------------------------------------------------------


def service_request_status(task_status: str, outcome: str | None = None) -> str:
    """ServiceRequest.status for the current Task status: open -> ``active``,
    ``completed`` -> ``completed``, ``cancelled``/``failed`` -> ``revoked``, a rejection
    -> ``active`` while another agency may be asked, ``revoked`` once none is left."""
    if task_status == "completed":
        return "completed"
    if task_status == "entered-in-error":
        return "entered-in-error"
    if task_status in ("cancelled", "failed"):
        return "revoked"
    if task_status == "rejected":
        return "revoked" if outcome else "active"
    if task_status == "on-hold":
        return "on-hold"
    return "active"


def _agency_ref(agency_id: str) -> dict[str, Any]:
    return {"type": "Organization", "identifier": {"system": AGENCY_SYSTEM, "value": agency_id}}


def _requester(manager_id: str | None, referring: Contact) -> dict[str, Any] | None:
    if manager_id:
        ref: dict[str, Any] = {"type": "Practitioner",
                               "identifier": {"system": MANAGER_SYSTEM, "value": manager_id}}
    elif referring.name:
        ref = {"type": "Organization"}
    else:
        return None
    if referring.name:
        ref["display"] = referring.name
    return ref


def _categories(need: str) -> list[dict[str, Any]]:
    out = []
    if need in _SDOH_CATEGORY:
        code, display = _SDOH_CATEGORY[need]
        out.append(_concept(SDOHCC_SYSTEM, code, display))
    out.append(_concept(REFERRAL_SERVICE_SYSTEM, need, _SERVICE_DISPLAY.get(need)))
    return out


def _status_reason(reason: str | None) -> dict[str, Any] | None:
    if not reason:
        return None
    return _concept(STATUS_REASON_SYSTEM, reason, None, text=reason)


def _service_request(*, referral_id: str, need: str, status: str, subject: dict[str, Any],
                     requester: dict[str, Any] | None, agency_id: str, authored: datetime,
                     discharge: date | None, encounter: dict[str, Any] | None,
                     reason_codes: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": _fhir_id(referral_id),
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": referral_id}],
        "status": status,
        "intent": "order",
        "category": _categories(need),
        "code": _concept(REFERRAL_SERVICE_SYSTEM, need, _SERVICE_DISPLAY.get(need), text=need),
        "subject": subject,
        "encounter": encounter,
        "occurrencePeriod": {"start": discharge.isoformat()} if discharge else None,
        "authoredOn": authored.isoformat(),
        "requester": requester,
        "performer": [_agency_ref(agency_id)],
        "reasonCode": [_concept("http://hl7.org/fhir/sid/icd-10-cm", c, None)
                       for c in reason_codes],
    }
    return _build(ServiceRequest, data)


def _task(*, task_id: str, status: str, status_reason: str | None, focus: dict[str, Any],
          subject: dict[str, Any], requester: dict[str, Any] | None, agency_id: str,
          authored: datetime, modified: datetime, need: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resourceType": "Task",
        "id": _fhir_id(task_id),
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": task_id}],
        "status": status,
        "statusReason": _status_reason(status_reason),
        "intent": "order",
        "priority": "routine",
        "code": _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill",
                         "Fulfill the focal request"),
        "description": _SERVICE_DISPLAY.get(need, need),
        "focus": focus,
        "for": subject,
        "authoredOn": authored.isoformat(),
        "lastModified": modified.isoformat(),
        "requester": requester,
        "owner": _agency_ref(agency_id),
    }
    return _build(Task, data)


def _bundle(bundle_id: str, modified: datetime, entries: list[tuple[str, dict[str, Any]]]
            ) -> dict[str, Any]:
    data = {
        "resourceType": "Bundle",
        "id": _fhir_id(bundle_id),
        "type": "collection",
        "timestamp": modified.isoformat(),
        "entry": [{"fullUrl": url, "resource": _prune(r)} for url, r in entries],
    }
    return _build(Bundle, data)


def _icd_codes(need_codes: list[str]) -> list[str]:
    # need_codes also hold disposition:06 and flag:<code>; only diagnoses are reasons.
    return [c for c in need_codes if ":" not in c]


def hub_bundle(output: ReferralOutput) -> dict[str, Any]:
    """The hub view: ServiceRequest + Task of one agency referral (a collection Bundle).

    ServiceRequest: ``id``/``identifier`` (referral id), ``status``
    (:func:`service_request_status`), ``intent`` order, ``category`` (Gravity SDOHCC +
    hub service code), ``code`` (the need), ``subject`` (Patient by MRN), ``encounter``
    (visit number), ``occurrencePeriod.start`` (discharge date when known),
    ``authoredOn`` (first request), ``requester`` (case manager or team), ``performer``
    (the agency Organization), ``reasonCode`` (the ICD-10 codes that detected the need).
    Task: ``id``/``identifier`` (the agency Task id), ``status``, ``statusReason``,
    ``intent`` order, ``code`` fulfill, ``focus`` (the ServiceRequest), ``for`` (the
    patient), ``authoredOn`` (requested_at), ``lastModified`` (decided_at),
    ``requester``, ``owner`` (the agency).
    """
    copy = output.agency_copy
    subject = patient_reference(output.patient_key, "", "")
    requester = _requester(output.manager_id, copy.referring)
    sr_url = f"urn:uuid:{derive_id(output.referral_id, 'ServiceRequest')}"
    task_url = f"urn:uuid:{derive_id(output.id, 'Task')}"
    sr = _service_request(
        referral_id=output.referral_id, need=output.need,
        status=service_request_status(output.status, output.outcome),
        subject=subject, requester=requester, agency_id=output.agency_id,
        authored=output.requested_at, discharge=copy.discharge_date,
        encounter=encounter_reference(output.encounter_key, output.facility, None),
        reason_codes=_icd_codes(output.need_codes))
    task = _task(task_id=output.id, status=output.status, status_reason=output.status_reason,
                 focus={"reference": sr_url, "type": "ServiceRequest"}, subject=subject,
                 requester=requester, agency_id=output.agency_id,
                 authored=output.requested_at, modified=output.decided_at, need=output.need)
    return _bundle(derive_id(output.id, "hub-bundle", output.version), output.decided_at,
                   [(sr_url, sr), (task_url, task)])


def agency_bundle(copy: AgencyReferral) -> dict[str, Any]:
    """The agency copy: Patient (minimum necessary), ServiceRequest (the need category
    only) and Task, as a collection Bundle.

    Patient: ``id`` and ``identifier`` (:data:`REFERRAL_PATIENT_SYSTEM`, the agency Task
    id), ``name`` (family, given), ``birthDate``, ``telecom`` (phone), ``address``
    (line, city, state, postalCode), ``communication[0]`` (language, preferred). The
    ServiceRequest and Task are as in :func:`hub_bundle` except: subject/for is this
    Patient, no ``encounter`` and no ``reasonCode``.
    """
    p = copy.patient
    patient_id = derive_id(copy.id, "referral-patient")
    patient_url = f"urn:uuid:{patient_id}"
    sr_url = f"urn:uuid:{derive_id(copy.referral_id, 'ServiceRequest')}"
    task_url = f"urn:uuid:{derive_id(copy.id, 'Task')}"
    address = None
    if p.address is not None:
        address = [{"use": "home", "line": list(p.address.line), "city": p.address.city,
                    "state": p.address.state, "postalCode": p.address.postal_code}]
    patient = _build(Patient, {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": REFERRAL_PATIENT_SYSTEM, "value": copy.id}],
        "name": [{"family": p.family_name, "given": list(p.given_names)}]
        if p.family_name or p.given_names else None,
        "birthDate": p.birth_date.isoformat() if p.birth_date else None,
        "telecom": [{"system": "phone", "value": p.phone}] if p.phone else None,
        "address": address,
        "communication": [{"language": _concept(BCP47_SYSTEM, p.preferred_language, None),
                           "preferred": True}] if p.preferred_language else None,
    })
    subject = {"reference": patient_url, "type": "Patient"}
    requester = None
    if copy.referring.name:
        requester = {"display": copy.referring.name}
    sr = _service_request(
        referral_id=copy.referral_id, need=copy.need,
        status=service_request_status(copy.status), subject=subject, requester=requester,
        agency_id=copy.agency_id, authored=copy.authored_at, discharge=copy.discharge_date,
        encounter=None, reason_codes=[])
    task = _task(task_id=copy.id, status=copy.status, status_reason=copy.status_reason,
                 focus={"reference": sr_url, "type": "ServiceRequest"}, subject=subject,
                 requester=requester, agency_id=copy.agency_id, authored=copy.authored_at,
                 modified=copy.updated_at, need=copy.need)
    return _bundle(derive_id(copy.id, "agency-bundle", copy.version), copy.updated_at,
                   [(patient_url, patient), (sr_url, sr), (task_url, task)])
