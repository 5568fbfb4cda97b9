"""Care-decision records -> FHIR R4 (4.0.1-compatible) JSON resources.

Pure functions: no I/O, no clock, no randomness. Every time written comes from the
record (``decided_at``, ``due``) or the canonical event, and every id is the record's
own deterministic id or :func:`schemas.canonical.derive_id` of it, so the same inputs
give byte-identical JSON (the property downstream dedup relies on).

Each resource is built as a plain dict, validated with the ``fhir.resources`` R4B model
(through :mod:`schemas.fhir`, the only module that imports that package) and dumped
back with nulls and empty lists omitted. A validation failure becomes
``MappingError(ErrorCode.INTERNAL_ERROR)`` whose detail names FHIR paths and error
types only: pydantic messages quote the offending value, which may be PHI.

References. The hub has no FHIR server, so resources point at each other by
*logical* references (``Reference.identifier``), never by server ids:

- patient: ``{system: <assigning authority as a URI>, value: <MRN>}``; see
  :func:`authority_system` for how an authority becomes a URI;
- encounter: ``{system: urn:care-hub:visit:<facility>, value: <visit number>}``;
- case manager and supervisor: Practitioner ``{system: urn:care-hub:manager}``
  (roster person ids: supervisors share the managers' id space);
- team queue: Organization ``{system: urn:care-hub:team}``. R4 allows neither Group
  for ``CareTeam.participant.member`` nor for ``Task.owner``, so a team (a
  case-management department) is an Organization;
- attending / PCP: Practitioner ``{system: urn:care-hub:practitioner}``;
- facility: Organization ``{system: urn:care-hub:facility}``.

Inside the notification Bundle, entries reference each other by ``urn:uuid:`` fullUrls.

PHI. RiskAssessment, Flag, CareTeam and Task carry the patient only as the identifier
reference above (MRN, like the canonical records beside them): no name, birth date or
free text; factor and reason *codes* are copied, ``Factor.detail`` is not. The
notification Bundle is the exception by design: it is addressed to the patient's own
care team and CMS e-notification (42 CFR 482.24(d)) requires patient name, treating
practitioner and sending institution; it carries those and no more (no address, phone,
diagnoses or coverage).

Decisions (documented here so reviewers can argue with them in one place):

- Flag category is ``clinical`` for every reason, social needs included: the flags
  are readmission-risk flags for the clinical care team, the Z55-Z65 codes come from
  the clinical record, and ``admin`` in flag-category means administrative and
  financial processes, which receivers commonly filter out of clinical views.
- A withdrawn flag record renders as Flag ``inactive`` with ``period.end`` =
  ``decided_at`` (the withdrawal time) and no ``start`` (this record does not know
  it), and as RiskAssessment ``entered-in-error``.
- An escalation renders as a Task (code ``escalation``, priority ``urgent``) owned by
  the supervisor (else the team), ``focus`` = the overdue Task (``Task/<task_id>``)
  when there is one, else the Encounter; see :func:`escalation_task`.
- Ids that are not valid FHIR ids (``[A-Za-z0-9\\-.]{1,64}``) are replaced by
  ``derive_id("fhir-id", <id>)``, deterministically, instead of failing the output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Final
from urllib.parse import quote

import pydantic

from schemas.canonical import CanonicalEvent, derive_id
from schemas.care import (
    AssignmentOutput,
    EscalationOutput,
    FlagOutput,
    NotificationOutput,
    TaskOutput,
)
from schemas.errors import ErrorCode, MappingError
from schemas.fhir import Bundle, CareTeam, Flag, RiskAssessment, Task

__all__ = [
    "AUTHORITY_URN_PREFIX",
    "CARE_FLAG_SYSTEM",
    "CARE_TASK_SYSTEM",
    "ESCALATION_REASON_SYSTEM",
    "FACILITY_SYSTEM",
    "HUB_ENDPOINT",
    "MANAGER_SYSTEM",
    "NOTIFICATION_EVENT_SYSTEM",
    "PRACTITIONER_SYSTEM",
    "RISK_ASSESSMENT_SYSTEM",
    "RISK_METHOD_SYSTEM",
    "TEAM_SYSTEM",
    "authority_system",
    "care_team",
    "encounter_reference",
    "escalation_task",
    "flags",
    "notification_bundle",
    "patient_reference",
    "render",
    "risk_assessment",
    "task",
    "visit_system",
]

# --- code systems and identifier systems -----------------------------------------------

_PROJECT_CS: Final = "https://care-hub.example/fhir/CodeSystem"
RISK_METHOD_SYSTEM: Final = f"{_PROJECT_CS}/risk-method"
"""``RiskAssessment.method``: ``lace``."""
RISK_ASSESSMENT_SYSTEM: Final = f"{_PROJECT_CS}/risk-assessment"
"""``RiskAssessment.code``: ``readmission-30d``."""
CARE_FLAG_SYSTEM: Final = f"{_PROJECT_CS}/care-flag"
"""``Flag.code``: the reason codes of :class:`schemas.care.Reason`."""
CARE_TASK_SYSTEM: Final = f"{_PROJECT_CS}/care-task"
"""``Task.code``: the task kinds of :data:`schemas.care.TaskKind` plus ``escalation``."""
ESCALATION_REASON_SYSTEM: Final = f"{_PROJECT_CS}/escalation-reason"
"""``Task.reasonCode`` of an escalation: ``task_overdue``, ``all_at_cap``, ..."""

NOTIFICATION_EVENT_SYSTEM: Final = (
    "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
)
RISK_PROBABILITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/risk-probability"
FLAG_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
PARTICIPATION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V2_0203_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0112_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0112"
DISCHARGE_DISPOSITION_SYSTEM: Final = (
    "http://terminology.hl7.org/CodeSystem/discharge-disposition"
)
SNOMED_SYSTEM: Final = "http://snomed.info/sct"
LOCATION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/location-physical-type"

HUB_ENDPOINT: Final = "urn:care-hub"
"""``MessageHeader.source.endpoint``."""
HUB_NAME: Final = "care-transitions-hub"
AUTHORITY_URN_PREFIX: Final = "urn:care-hub:authority:"
"""Identifier system of an assigning authority that is not already an OID or URI."""
MANAGER_SYSTEM: Final = "urn:care-hub:manager"
TEAM_SYSTEM: Final = "urn:care-hub:team"
PRACTITIONER_SYSTEM: Final = "urn:care-hub:practitioner"
FACILITY_SYSTEM: Final = "urn:care-hub:facility"
VISIT_SYSTEM: Final = "urn:care-hub:visit"
NOTIFICATION_ID_SYSTEM: Final = "urn:care-hub:notification"
PCP_ENDPOINT_PREFIX: Final = "urn:care-hub:pcp:"

# --- value maps --------------------------------------------------------------------------

_RISK_PROBABILITY_DISPLAY: Final = {
    "low": "Low likelihood",
    "moderate": "Moderate likelihood",
    "high": "High likelihood",
}

_CARE_TEAM_STATUS: Final = {"assigned": "active", "unassigned": "proposed",
                            "released": "inactive"}

_TASK_DISPLAY: Final = {
    "contact": "Interactive contact after discharge",
    "visit": "Face-to-face visit after discharge",
    "med_rec": "Medication reconciliation",
    "pcp_notification": "Primary care provider notification",
    "handoff": "Care handoff to the receiving facility",
    "escalation": "Escalation",
}

_ESCALATION_TEXT: Final = {
    "task_overdue": "A follow-up task is overdue",
    "none_eligible": "No eligible case manager: assign manually",
    "all_at_cap": "Every eligible case manager is at caseload cap: assign manually",
    "none_on_shift": "No eligible case manager on shift: assign manually",
    "no_team": "No case-management team covers this episode: assign manually",
}

# canonical encounter class -> v3 ActCode (the inverse of mappers.fhir CLASS_MAP)
_ENCOUNTER_CLASS: Final = {
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
    "observation": ("OBSENC", "observation encounter"),
    "outpatient": ("AMB", "ambulatory"),
    "preadmit": ("PRENC", "pre-admission"),
    "recurring": ("AMB", "ambulatory"),
}

_EVENT_DISPLAY: Final = {
    "notification-admit": "Admit Notification",
    "notification-discharge": "Discharge Notification",
    "notification-transfer": "Transfer Notification",
}

_DISCHARGE_DISPOSITION_CODES: Final = frozenset(
    {"home", "alt-home", "other-hcf", "hosp", "long", "aadvice", "exp", "psy", "rehab",
     "snf", "oth"}
)
_GENDERS: Final = frozenset({"male", "female", "other", "unknown"})

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_URI = re.compile(r"(?:urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:|https?://)\S+")
_ELEMENT_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}")
# RFC 8141 NSS characters kept as is when an authority goes into a URN.
_URN_SAFE: Final = "-._~!$&'()*+,;=:@/"

CareRecord = FlagOutput | AssignmentOutput | TaskOutput | EscalationOutput | NotificationOutput


# --- references -------------------------------------------------------------------------


def authority_system(authority: str) -> str:
    """The ``Identifier.system`` URI for an assigning authority.

    An authority that already is a URI (``urn:...``, ``http(s)://...``, as FHIR feeds
    send) is kept; a bare OID becomes ``urn:oid:<oid>`` and a bare UUID
    ``urn:uuid:<uuid>`` (HL7 v2 HD universal ids); anything else (an HL7 namespace id
    such as ``HOSP``) becomes ``urn:care-hub:authority:<authority>``, percent-encoded
    where a URN cannot hold the character.
    """
    value = authority.strip()
    if _URI.fullmatch(value):
        return value
    if _OID.fullmatch(value):
        return f"urn:oid:{value}"
    if _UUID.fullmatch(value):
        return f"urn:uuid:{value.lower()}"
    return AUTHORITY_URN_PREFIX + quote(value, safe=_URN_SAFE)


def visit_system(facility: str | None) -> str:
    """``Identifier.system`` of a visit number: ``urn:care-hub:visit:<facility>`` (visit
    numbers are scoped by facility), ``urn:care-hub:visit`` when the facility is unknown."""
    if not facility:
        return VISIT_SYSTEM
    return f"{VISIT_SYSTEM}:{quote(facility, safe=_URN_SAFE)}"


def patient_reference(patient_key: str, assigning_authority: str, mrn: str) -> dict[str, Any]:
    """A logical Reference to the patient by MRN (the hub has no FHIR server ids).

    Writes ``Reference.type`` (``Patient``), ``Reference.identifier.type`` (v2-0203
    ``MR``), ``Reference.identifier.system`` (:func:`authority_system` of the assigning
    authority) and ``Reference.identifier.value`` (the MRN). When ``assigning_authority``
    or ``mrn`` is empty they are read from ``patient_key`` (``<authority>|<mrn>``, split
    at the first ``|``: neither an authority URI nor an HL7 namespace id holds one).
    Raises ``MappingError(MISSING_PATIENT_IDENTIFIER)`` when no MRN is known.
    """
    if not assigning_authority or not mrn:
        key_authority, sep, key_mrn = patient_key.partition("|")
        if sep:
            assigning_authority = assigning_authority or key_authority
            mrn = mrn or key_mrn
    if not assigning_authority.strip() or not mrn.strip():
        raise MappingError(
            ErrorCode.MISSING_PATIENT_IDENTIFIER,
            "the patient has no assigning authority and MRN to reference",
        )
    return {
        "type": "Patient",
        "identifier": {
            "type": _concept(V2_0203_SYSTEM, "MR", "Medical record number"),
            "system": authority_system(assigning_authority),
            "value": mrn,
        },
    }


def encounter_reference(
    encounter_key: str | None, facility: str | None, visit_number: str | None
) -> dict[str, Any] | None:
    """A logical Reference to the encounter by visit number, or ``None`` when unknown.

    Writes ``Reference.type`` (``Encounter``), ``Reference.identifier.type`` (v2-0203
    ``VN``), ``.system`` (:func:`visit_system` of the facility) and ``.value`` (the
    visit number). ``facility`` and ``visit_number`` win when given; otherwise they are
    read from ``encounter_key`` (``<facility>|<visit number>``, split at the first
    ``|``). Outputs of one episode therefore all reference it the same way when built
    from the same key.
    """
    key_facility: str | None = None
    key_visit: str | None = None
    if encounter_key:
        head, sep, tail = encounter_key.partition("|")
        if sep:
            key_facility, key_visit = head or None, tail or None
        else:
            key_visit = head or None
    facility = facility or key_facility
    visit_number = visit_number or key_visit
    if not visit_number or not visit_number.strip():
        return None
    return {
        "type": "Encounter",
        "identifier": {
            "type": _concept(V2_0203_SYSTEM, "VN", "Visit number"),
            "system": visit_system(facility),
            "value": visit_number,
        },
    }


def _subject(output: Any, event: CanonicalEvent | None) -> dict[str, Any]:
    """The output's patient: the event's MRN and authority when it is the same patient,
    else the output's own key (after a merge the record's key is the one that counts)."""
    key: str = output.patient_key
    if event is not None and event.patient.key == key:
        return patient_reference(key, event.patient.assigning_authority, event.patient.mrn)
    return patient_reference(key, "", "")


def _encounter_of(output: Any, event: CanonicalEvent | None) -> dict[str, Any] | None:
    """The output's episode: from its ``encounter_key`` when set (the same for every
    output of the episode), else from the event's visit number."""
    if output.encounter_key:
        return encounter_reference(output.encounter_key, output.facility, None)
    visit = event.encounter.id if event is not None and event.encounter is not None else None
    return encounter_reference(None, output.facility, visit)


def _practitioner_ref(system: str, value: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"type": "Practitioner",
                           "identifier": {"system": system, "value": value}}
    if display:
        ref["display"] = display
    return ref


def _team_ref(team: str) -> dict[str, Any]:
    return {"type": "Organization", "identifier": {"system": TEAM_SYSTEM, "value": team}}


def _owner_ref(owner: str | None) -> dict[str, Any] | None:
    """``team:<id>`` -> the team Organization; anything else -> the manager."""
    if not owner:
        return None
    if owner.startswith("team:"):
        team = owner.removeprefix("team:")
        return _team_ref(team) if team else None
    return _practitioner_ref(MANAGER_SYSTEM, owner)


# --- RiskAssessment and Flag -------------------------------------------------------------


def risk_assessment(flag: FlagOutput, event: CanonicalEvent | None) -> dict[str, Any]:
    """The readmission-risk record as a FHIR RiskAssessment.

    Writes ``RiskAssessment.id`` (``flag.id``), ``.status`` (``final`` at discharge,
    ``preliminary`` at admission, ``entered-in-error`` when withdrawn), ``.method``
    (LACE index, :data:`RISK_METHOD_SYSTEM` ``lace``), ``.code``
    (:data:`RISK_ASSESSMENT_SYSTEM` ``readmission-30d``), ``.subject`` (patient
    identifier reference), ``.encounter`` (visit identifier reference),
    ``.occurrenceDateTime`` (``decided_at``), ``.prediction[0].outcome.text``,
    ``.prediction[0].qualitativeRisk`` (risk-probability ``low``/``moderate``/``high``),
    ``.prediction[0].rationale`` (scores only: LACE and its components, Charlson) and
    ``.note[].text`` (one per factor: code and points, then each reason's factor codes;
    ``Factor.detail`` is never copied). ``event`` may be ``None``: the patient and
    encounter are then read from the record's keys.
    """
    if flag.status == "withdrawn":
        status = "entered-in-error"
    elif flag.stage == "discharge":
        status = "final"
    else:
        status = "preliminary"
    lace = flag.lace
    when = "at discharge" if flag.stage == "discharge" else "on admission (estimate)"
    rationale = (
        f"LACE index {lace.score} (L {lace.l}, A {lace.a}, C {lace.c}, E {lace.e}) "
        f"{when}: {flag.risk_level} risk; Charlson comorbidity score {flag.charlson.score}"
    )
    notes = [{"text": _factor_text(f.code, f.points)} for f in flag.factors]
    notes += [
        {"text": _factor_text(f"{reason.code}: {f.code}", f.points)}
        for reason in flag.reasons
        for f in reason.factors
    ]
    data: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": _fhir_id(flag.id),
        "status": status,
        "method": _concept(RISK_METHOD_SYSTEM, "lace", "LACE index",
                           text="LACE index for readmission (van Walraven 2010)"),
        "code": _concept(RISK_ASSESSMENT_SYSTEM, "readmission-30d",
                         "30-day readmission risk"),
        "subject": _subject(flag, event),
        "encounter": _encounter_of(flag, event),
        "occurrenceDateTime": _dt(flag.decided_at),
        "prediction": [{
            "outcome": {"text": "Death or unplanned readmission within 30 days of "
                                "discharge"},
            "qualitativeRisk": _concept(RISK_PROBABILITY_SYSTEM, flag.risk_level,
                                        _RISK_PROBABILITY_DISPLAY[flag.risk_level]),
            "rationale": rationale,
        }],
        "note": notes,
    }
    return _build(RiskAssessment, data)


def flags(flag: FlagOutput, event: CanonicalEvent | None) -> list[dict[str, Any]]:
    """One FHIR Flag per reason that fired, in the record's order.

    Writes ``Flag.id`` (``derive_id(flag.id, reason.code)``), ``.status`` (``active``,
    ``inactive`` when the record is withdrawn), ``.category`` (flag-category
    ``clinical``, for every reason: see the module docstring), ``.code``
    (:data:`CARE_FLAG_SYSTEM` reason code and display, ``text`` = display),
    ``.subject``, ``.encounter`` (identifier references) and ``.period`` (``start`` =
    ``decided_at``; for a withdrawn record ``end`` = ``decided_at`` and no ``start``).
    """
    if flag.status == "withdrawn":
        status, period = "inactive", {"end": _dt(flag.decided_at)}
    else:
        status, period = "active", {"start": _dt(flag.decided_at)}
    subject = _subject(flag, event)
    encounter = _encounter_of(flag, event)
    out = []
    for reason in flag.reasons:
        data: dict[str, Any] = {
            "resourceType": "Flag",
            "id": _fhir_id(derive_id(flag.id, reason.code)),
            "status": status,
            "category": [_concept(FLAG_CATEGORY_SYSTEM, "clinical", "Clinical")],
            "code": _concept(CARE_FLAG_SYSTEM, reason.code, reason.display,
                             text=reason.display),
            "subject": subject,
            "period": period,
            "encounter": encounter,
        }
        out.append(_build(Flag, data))
    return out


# --- CareTeam ----------------------------------------------------------------------------


def care_team(assignment: AssignmentOutput, event: CanonicalEvent | None) -> dict[str, Any]:
    """The case-manager assignment as a FHIR CareTeam.

    Writes ``CareTeam.id`` (``assignment.id``), ``.status`` (``active`` assigned,
    ``proposed`` unassigned, ``inactive`` released), ``.subject``, ``.encounter``
    (identifier references), ``.period`` (``start`` = ``decided_at``; ``end`` when
    released), ``.participant[0].role`` (SNOMED CT 768820003 Care coordinator, text
    "case manager"), ``.participant[0].member`` (the manager, Practitioner by
    identifier :data:`MANAGER_SYSTEM`; for an unassigned record the team queue,
    Organization by identifier :data:`TEAM_SYSTEM`), ``.participant[0].onBehalfOf``
    (the team, only with a Practitioner member, as invariant ctm-1 asks),
    ``.participant[0].period`` and ``.note[0].text`` (the assignment reason code, points
    and caseload numbers; not ``reasonCode``, which says why a care team exists). No
    ``name`` and no ``managingOrganization`` (a name would identify the patient).
    """
    when = _dt(assignment.decided_at)
    released = assignment.status == "released"
    period = {"end": when} if released else {"start": when}
    participant: dict[str, Any] = {
        "role": [_concept(SNOMED_SYSTEM, "768820003", "Care coordinator",
                          text="case manager")],
        "period": period,
    }
    if assignment.status != "unassigned" and assignment.manager_id:
        participant["member"] = _practitioner_ref(MANAGER_SYSTEM, assignment.manager_id)
        if assignment.team:
            participant["onBehalfOf"] = _team_ref(assignment.team)
    elif assignment.team:
        participant["member"] = _team_ref(assignment.team)
    note = f"reason: {assignment.reason}; points: {assignment.points}"
    if assignment.load_after is not None:
        note += f"; caseload after: {assignment.load_after}"
    if assignment.cap is not None:
        note += f"; cap: {assignment.cap}"
    data: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": _fhir_id(assignment.id),
        "status": _CARE_TEAM_STATUS[assignment.status],
        "subject": _subject(assignment, event),
        "encounter": _encounter_of(assignment, event),
        "period": period,
        "participant": [participant],
        "note": [{"text": note}],
    }
    return _build(CareTeam, data)


# --- Task --------------------------------------------------------------------------------


def task(task: TaskOutput, event: CanonicalEvent | None) -> dict[str, Any]:
    """A follow-up task as a FHIR Task.

    Writes ``Task.id`` (``task.task_id``: stable across the task's updates),
    ``.status`` (requested, in-progress, completed, cancelled, failed, on-hold: the
    same codes), ``.statusReason.text`` (when set), ``.intent`` (``order``),
    ``.priority``, ``.code`` (:data:`CARE_TASK_SYSTEM` ``kind``), ``.description``,
    ``.focus`` and ``.encounter`` (Encounter identifier reference), ``.for`` (Patient
    identifier reference), ``.authoredOn`` and ``.lastModified`` (``decided_at``),
    ``.owner`` (Practitioner by :data:`MANAGER_SYSTEM` identifier, or the team
    Organization for ``team:<id>``) and ``.restriction.period.end`` (``due``).
    """
    encounter = _encounter_of(task, event)
    data: dict[str, Any] = {
        "resourceType": "Task",
        "id": _fhir_id(task.task_id),
        "status": task.status,
        "statusReason": {"text": task.status_reason} if task.status_reason else None,
        "intent": "order",
        "priority": task.priority,
        "code": _concept(CARE_TASK_SYSTEM, task.kind, _TASK_DISPLAY.get(task.kind)),
        "description": task.description,
        "focus": encounter,
        "for": _subject(task, event),
        "encounter": encounter,
        "authoredOn": _dt(task.decided_at),
        "lastModified": _dt(task.decided_at),
        "owner": _owner_ref(task.owner),
        "restriction": {"period": {"end": _dt(task.due)}},
    }
    return _build(Task, data)


def escalation_task(escalation: EscalationOutput, event: CanonicalEvent | None) -> dict[str, Any]:
    """An escalation as a FHIR Task for the supervisor's queue.

    Writes ``Task.id`` (``escalation.id``), ``.status`` (``requested``), ``.intent``
    (``order``), ``.priority`` (``urgent``), ``.code`` (:data:`CARE_TASK_SYSTEM`
    ``escalation``), ``.description`` (a fixed sentence per reason, naming the overdue
    task's kind), ``.reasonCode`` (:data:`ESCALATION_REASON_SYSTEM` reason), ``.focus``
    (the overdue Task, ``Task/<task_id>``, when the escalation is about one, else the
    Encounter), ``.for`` (the same patient), ``.encounter``, ``.authoredOn`` and
    ``.lastModified`` (``decided_at``), ``.owner`` (the supervisor, Practitioner by
    :data:`MANAGER_SYSTEM` identifier; else the team Organization). The overdue task's
    ``due`` is not a deadline for the escalation, so no ``restriction`` is written.
    """
    encounter = _encounter_of(escalation, event)
    text = _ESCALATION_TEXT.get(escalation.reason, f"Escalation: {escalation.reason}")
    if escalation.task_kind:
        text += f" (task: {escalation.task_kind})"
    focus: dict[str, Any] | None = encounter
    if escalation.task_id:
        focus = {"reference": f"Task/{_fhir_id(escalation.task_id)}", "type": "Task"}
    owner = None
    if escalation.supervisor:
        owner = _practitioner_ref(MANAGER_SYSTEM, escalation.supervisor)
    elif escalation.team:
        owner = _team_ref(escalation.team)
    data: dict[str, Any] = {
        "resourceType": "Task",
        "id": _fhir_id(escalation.id),
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": _concept(CARE_TASK_SYSTEM, "escalation", _TASK_DISPLAY["escalation"]),
        "description": text,
        "focus": focus,
        "for": _subject(escalation, event),
        "encounter": encounter,
        "authoredOn": _dt(escalation.decided_at),
        "lastModified": _dt(escalation.decided_at),
        "owner": owner,
        "reasonCode": _concept(ESCALATION_REASON_SYSTEM, escalation.reason, None,
                               text=escalation.reason),
    }
    return _build(Task, data)


# --- notification Bundle -----------------------------------------------------------------


def notification_bundle(n: NotificationOutput, event: CanonicalEvent) -> dict[str, Any]:
    """A Da Vinci Unsolicited Notification: a FHIR ``message`` Bundle.

    Writes ``Bundle.id`` (``n.id``), ``.identifier`` (:data:`NOTIFICATION_ID_SYSTEM`,
    ``n.id``), ``.type`` (``message``), ``.timestamp`` (``decided_at``) and
    ``.entry[].fullUrl`` (``urn:uuid:derive_id(n.id, <resource type>)``; the resource
    ids are the same uuids), with entries in this order:

    1. MessageHeader: ``eventCoding`` (notification-event ``n.event_code``),
       ``destination[0]`` (when ``n.recipient``: ``endpoint``
       ``urn:care-hub:pcp:<id>``, ``receiver`` Practitioner by
       :data:`PRACTITIONER_SYSTEM` identifier), ``sender`` and ``responsible`` (the
       facility Organization entry), ``author`` (the attending's Practitioner entry),
       ``source`` (``name``, ``endpoint`` :data:`HUB_ENDPOINT`), ``focus[0]`` (the
       Encounter entry);
    2. Encounter: ``identifier`` (visit number), ``status`` (``finished`` for a
       discharge notification, else ``in-progress``), ``class`` (v3 ActCode IMP, EMER,
       OBSENC, AMB, PRENC; NullFlavor UNK when unknown), ``subject`` (Patient entry),
       ``participant[0]`` (ATND, the Practitioner entry), ``period`` (admit, discharge),
       ``hospitalization.dischargeDisposition`` (the source code; v2-0112 for HL7 v2
       codes, discharge-disposition for FHIR ones), ``location[0]`` (the unit only:
       ``location.display``, ``physicalType`` ``wa``, ``status`` active/completed, so
       :mod:`mappers.fhir` reads it back as the unit), ``serviceProvider``
       (Organization entry);
    3. Patient: ``identifier`` (the MRN only), ``name`` (family, given), ``gender``,
       ``birthDate``: the CMS minimum content; no address, phone or other ids;
    4. Organization (when the facility is known): ``identifier``
       (:data:`FACILITY_SYSTEM`), ``name``;
    5. Practitioner (when the attending is known): ``identifier``
       (:data:`PRACTITIONER_SYSTEM`), ``name[0].text``.
    """
    enc_in = event.encounter
    patient = event.patient
    facility = (
        n.facility
        or (enc_in.location.facility if enc_in and enc_in.location else None)
        or event.source.facility
    )
    ids = {rtype: derive_id(n.id, rtype) for rtype in
           ("MessageHeader", "Encounter", "Patient", "Organization", "Practitioner")}
    urls = {rtype: f"urn:uuid:{uid}" for rtype, uid in ids.items()}

    org: dict[str, Any] | None = None
    if facility:
        org = {"resourceType": "Organization", "id": ids["Organization"],
               "identifier": [{"system": FACILITY_SYSTEM, "value": facility}],
               "name": facility}
    att = enc_in.attending if enc_in else None
    prac: dict[str, Any] | None = None
    if att is not None and (att.id or att.name):
        prac = {"resourceType": "Practitioner", "id": ids["Practitioner"],
                "identifier": [{"system": PRACTITIONER_SYSTEM, "value": att.id}]
                if att.id else None,
                "name": [{"text": att.name}] if att.name else None}

    pat: dict[str, Any] = {
        "resourceType": "Patient",
        "id": ids["Patient"],
        "identifier": [{
            "type": _concept(V2_0203_SYSTEM, "MR", "Medical record number"),
            "system": authority_system(patient.assigning_authority),
            "value": patient.mrn,
        }],
        "name": [{"family": patient.family_name, "given": list(patient.given_names)}]
        if patient.family_name or patient.given_names else None,
        "gender": patient.sex if patient.sex in _GENDERS else None,
        "birthDate": _d(patient.birth_date),
    }

    discharge = n.event_code == "notification-discharge"
    cls = enc_in.class_.value if enc_in and enc_in.class_ else None
    class_code = _ENCOUNTER_CLASS.get(cls or "")
    visit = enc_in.id if enc_in else None
    if not visit and n.encounter_key:
        visit = n.encounter_key.partition("|")[2] or None
    period = {
        "start": _dt(enc_in.admit_at) if enc_in else None,
        "end": _dt(enc_in.discharge_at) if enc_in else None,
    }
    unit = enc_in.location.unit if enc_in and enc_in.location else None
    disposition = enc_in.discharge_disposition if enc_in else None
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": ids["Encounter"],
        "identifier": [{"type": _concept(V2_0203_SYSTEM, "VN", "Visit number"),
                        "system": visit_system(facility), "value": visit}]
        if visit else None,
        "status": "finished" if discharge else "in-progress",
        "class": {"system": ACT_CODE_SYSTEM, "code": class_code[0], "display": class_code[1]}
        if class_code else {"system": NULL_FLAVOR_SYSTEM, "code": "UNK", "display": "unknown"},
        "subject": {"reference": urls["Patient"]},
        "participant": [{
            "type": [_concept(PARTICIPATION_TYPE_SYSTEM, "ATND", "attender")],
            "individual": {"reference": urls["Practitioner"]},
        }] if prac else None,
        "period": period if period["start"] or period["end"] else None,
        "hospitalization": {"dischargeDisposition": _disposition(disposition, event)}
        if disposition else None,
        "location": [{
            "location": {"display": unit},
            "status": "completed" if discharge else "active",
            "physicalType": _concept(LOCATION_TYPE_SYSTEM, "wa", "Ward"),
        }] if unit else None,
        "serviceProvider": {"reference": urls["Organization"]} if org else None,
    }

    destination = None
    if n.recipient:
        pcp = patient.primary_care_provider
        name = pcp.name if pcp is not None and pcp.id == n.recipient else None
        destination = [{
            "name": "primary care provider",
            "endpoint": PCP_ENDPOINT_PREFIX + quote(n.recipient, safe=_URN_SAFE),
            "receiver": _practitioner_ref(PRACTITIONER_SYSTEM, n.recipient, name),
        }]
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": ids["MessageHeader"],
        "eventCoding": {"system": NOTIFICATION_EVENT_SYSTEM, "code": n.event_code,
                        "display": _EVENT_DISPLAY[n.event_code]},
        "destination": destination,
        "sender": {"reference": urls["Organization"]} if org else None,
        "author": {"reference": urls["Practitioner"]} if prac else None,
        "source": {"name": HUB_NAME, "endpoint": HUB_ENDPOINT},
        "responsible": {"reference": urls["Organization"]} if org else None,
        "focus": [{"reference": urls["Encounter"]}],
    }

    resources = [header, enc, pat, org, prac]
    data: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": _fhir_id(n.id),
        "identifier": {"system": NOTIFICATION_ID_SYSTEM, "value": n.id},
        "type": "message",
        "timestamp": _dt(n.decided_at),
        "entry": [
            {"fullUrl": urls[r["resourceType"]], "resource": _prune(r)}
            for r in resources if r is not None
        ],
    }
    return _build(Bundle, data)


def _disposition(code: str, event: CanonicalEvent) -> dict[str, Any]:
    """The source's discharge disposition code, with its code system when it is known."""
    system: str | None = None
    if event.source.format == "hl7v2" and re.fullmatch(r"\d{2}", code):
        system = V2_0112_SYSTEM
    elif event.source.format == "fhir" and code in _DISCHARGE_DISPOSITION_CODES:
        system = DISCHARGE_DISPOSITION_SYSTEM
    return {"coding": [{"system": system, "code": code}]}


# --- dispatch ----------------------------------------------------------------------------


def render(output: CareRecord, event: CanonicalEvent | None) -> dict[str, Any] | None:
    """The FHIR rendering of any care record (what goes in the record's ``fhir``).

    FlagOutput -> RiskAssessment (its Flags come from :func:`flags`, for
    ``flag_resources``); AssignmentOutput -> CareTeam; TaskOutput -> Task;
    EscalationOutput -> Task (:func:`escalation_task`); NotificationOutput -> message
    Bundle. Returns ``None`` for a notification without its event (the Bundle needs the
    patient's name and the encounter, which the record does not carry) and for a type it
    does not know.
    """
    if isinstance(output, FlagOutput):
        return risk_assessment(output, event)
    if isinstance(output, AssignmentOutput):
        return care_team(output, event)
    if isinstance(output, TaskOutput):
        return task(output, event)
    if isinstance(output, EscalationOutput):
        return escalation_task(output, event)
    if isinstance(output, NotificationOutput):
        return notification_bundle(output, event) if event is not None else None
    return None


# --- helpers -----------------------------------------------------------------------------


def _concept(system: str, code: str, display: str | None, *,
             text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    concept: dict[str, Any] = {"coding": [coding]}
    if text:
        concept["text"] = text
    return concept


def _factor_text(code: str, points: int | None) -> str:
    if points is None:
        return code
    return f"{code}: {points} point" + ("" if points in (1, -1) else "s")


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _d(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _fhir_id(value: str) -> str:
    """``value`` when it is a valid FHIR id, else a deterministic uuid derived from it."""
    return value if _FHIR_ID.fullmatch(value) else derive_id("fhir-id", value)


def _prune(node: Any) -> Any:
    """Drop ``None`` values and empty lists/dicts (FHIR elements are never empty)."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            pruned = _prune(value)
            if pruned is None or pruned == [] or pruned == {}:
                continue
            out[key] = pruned
        return out
    if isinstance(node, list):
        items = [_prune(v) for v in node]
        return [v for v in items if v is not None and v != [] and v != {}]
    return node


def _plain(node: Any) -> Any:
    """Plain ``dict``/``list`` copies (the models dump ``OrderedDict``s)."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _build(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` with the R4B model and dump it back as plain JSON.

    Validation errors stop here: they become ``MappingError(INTERNAL_ERROR)`` naming
    the FHIR paths and error types, never values (pydantic messages quote the input).
    """
    rtype = str(data.get("resourceType", "resource"))
    try:
        resource = model.model_validate(_prune(data))
        dumped = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    except pydantic.ValidationError as exc:
        problems = [
            f"{_path(rtype, err.get('loc', ()))}: {err.get('type', 'invalid')}"
            for err in exc.errors(include_url=False, include_context=False,
                                  include_input=False)
        ]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise MappingError(
            ErrorCode.INTERNAL_ERROR,
            f"the {rtype} built from a care record is not valid FHIR R4: "
            + "; ".join(problems[:5]) + more,
            position=problems[0].split(":", 1)[0] if problems else None,
        ) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise MappingError(
            ErrorCode.INTERNAL_ERROR,
            f"the {rtype} built from a care record could not be validated "
            f"({type(exc).__name__})",
        ) from None
    plain: dict[str, Any] = _plain(dumped)
    return plain


def _path(root: str, loc: Any) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _ELEMENT_NAME.fullmatch(part):
            path += f".{part}"
        else:
            path += ".<element>"
    return path
