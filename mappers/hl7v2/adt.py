"""HL7 v2 ADT -> canonical care events (DESIGN.md "Canonical event").

Triggers and the ``kind`` they give (the trigger comes from MSH-9.2; EVN-1 only when
MSH-9.2 is empty, because templated feeds leave EVN-1 stale):

=======  ==================  =====================================================
A01      admit
A02      transfer
A03      discharge
A04      register
A05      preadmit
A06      class_change        outpatient -> inpatient (MRG, when sent, -> ``merge``)
A07      class_change        inpatient -> outpatient (idem)
A08      update
A11      cancel_admit        also cancels a register (A04) in HL7; the trigger says which
A12      cancel_transfer
A13      cancel_discharge
A16      update              "pending discharge": a plan, not a discharge; downstream
                             may use it to start discharge planning early
A21      leave_of_absence
A22      return_from_leave
A28      update              "add person information": demographics only, no visit
A31      update              "update person information"
A40      merge               one event per PID/MRG group (patient id list merge)
A47      merge               change of patient identifier (PID new, MRG old)
=======  ==================  =====================================================

Other ADT triggers -> UNSUPPORTED_TRIGGER; other message types -> UNSUPPORTED_MESSAGE_TYPE
(both rejected: AR). Versions 2.3 to 2.8.2; processing id (MSH-11.1) P, T or D.

Field choices (documented because senders differ):

- Patient key: the PID-3 repetition with identifier type (CX-5) ``MR``, else the first
  with a value; PID-2 then PID-4 when PID-3 has none (v2.3 feeds). Assigning authority:
  CX-4.1 namespace, else CX-4.2 universal id, else MSH-4.1, MSH-4.2, MSH-3.1.
- MRG-1 (else MRG-4, MRG-2) picks the prior id by the same rule, preferring a
  repetition under the surviving patient's authority when none is typed ``MR``; a prior
  id without CX-4 takes the surviving patient's authority.
- ``encounter.class`` from PV1-2: I inpatient, E emergency, O outpatient (observation
  when PV1-18 patient type is OBS/OBV/OBSERVATION: HL7 has no observation class and feeds
  flag it there), P preadmit, R recurring, N (not applicable) none, anything else other.
- Timestamps: see ``mappers.hl7v2.timestamps``; a malformed optional timestamp is
  dropped, never fatal. ``occurred_at`` = EVN-6 else EVN-2 else MSH-7 else received_at;
  ``recorded_at`` = EVN-2 else MSH-7 else received_at.
- Whitespace is stripped and empty values omitted; Z-segments are ignored.

Errors are :class:`MappingError` only; their detail never quotes a field value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from schemas.canonical import (
    Address,
    CanonicalEvent,
    Coverage,
    Diagnosis,
    Encounter,
    EncounterClass,
    EventKind,
    Identifier,
    Location,
    Merge,
    Patient,
    Practitioner,
    Source,
    derive_id,
    patient_key,
)
from schemas.errors import ErrorCode, MappingError

from .parser import Message, Segment, parse_message
from .timestamps import parse_date, parse_datetime, zone

SUPPORTED_VERSIONS = frozenset(
    {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
)
PROCESSING_IDS = frozenset({"P", "T", "D"})

TRIGGER_KINDS: dict[str, EventKind] = {
    "A01": EventKind.ADMIT,
    "A02": EventKind.TRANSFER,
    "A03": EventKind.DISCHARGE,
    "A04": EventKind.REGISTER,
    "A05": EventKind.PREADMIT,
    "A06": EventKind.CLASS_CHANGE,
    "A07": EventKind.CLASS_CHANGE,
    "A08": EventKind.UPDATE,
    "A11": EventKind.CANCEL_ADMIT,
    "A12": EventKind.CANCEL_TRANSFER,
    "A13": EventKind.CANCEL_DISCHARGE,
    "A16": EventKind.UPDATE,
    "A21": EventKind.LEAVE_OF_ABSENCE,
    "A22": EventKind.RETURN_FROM_LEAVE,
    "A28": EventKind.UPDATE,
    "A31": EventKind.UPDATE,
    "A40": EventKind.MERGE,
    "A47": EventKind.MERGE,
}
MERGE_TRIGGERS = frozenset({"A40", "A47"})

_CLASSES: dict[str, EncounterClass | None] = {
    "I": EncounterClass.INPATIENT,
    "E": EncounterClass.EMERGENCY,
    "O": EncounterClass.OUTPATIENT,
    "P": EncounterClass.PREADMIT,
    "R": EncounterClass.RECURRING,
    "B": EncounterClass.OTHER,
    "C": EncounterClass.OTHER,
    "N": None,
    "U": None,
}
_OBSERVATION_TYPES = frozenset({"OBS", "OBV", "OBSERVATION"})
_SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown",
        "N": "unknown"}


@dataclass(frozen=True, slots=True)
class _Context:
    """What every group of one message shares."""

    trigger: str
    kind: EventKind
    source: Source
    facility: str | None
    fallback_authority: str | None
    occurred_at: datetime
    recorded_at: datetime
    tz: tzinfo


@dataclass(frozen=True, slots=True)
class _Cx:
    """One CX (extended composite id) repetition."""

    value: str
    authority: str | None
    type: str | None


@dataclass(slots=True)
class _Group:
    """The segments that describe one patient (one event)."""

    pid: Segment
    pd1: Segment | None = None
    mrg: Segment | None = None
    pv1: Segment | None = None


def map_hl7v2(raw: bytes, *, received_at: datetime, default_tz: str = "UTC"
              ) -> list[CanonicalEvent]:
    """Map one HL7 v2 ADT message to canonical events (one per patient group).

    Reads MSH-3/4/7/9/10/11/12, EVN-1/2/6, PID, PD1, PV1, DG1, IN1 and MRG (see the
    module docstring for the field rules). ``received_at`` is the fallback event time;
    ``default_tz`` (IANA name) localises timestamps sent without an offset. Raises
    :class:`MappingError` and nothing else: an unknown ``default_tz`` is a
    configuration fault, reported as INTERNAL_ERROR so the caller dead-letters (never
    drops) the message.
    """
    try:
        tz = zone(default_tz)
    except ValueError:
        raise MappingError(ErrorCode.INTERNAL_ERROR,
                           "The configured default time zone is not a known IANA zone."
                           ) from None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    msg = parse_message(raw)
    ctx = _context(msg, received_at, tz)
    groups = _groups(msg, ctx.trigger)
    diagnoses = _diagnoses(msg)
    coverage = _coverage(msg)
    events = []
    for index, group in enumerate(groups):
        events.append(_event(ctx, group, index, diagnoses, coverage))
    return events


# --------------------------------------------------------------------------- header


def _context(msg: Message, received_at: datetime, tz: tzinfo) -> _Context:
    msh = msg.msh
    trigger = _check_header(msg)
    evn = msg.first("EVN")
    msh_time = parse_datetime(msh.value(7, 1), tz)
    evn_recorded = parse_datetime(evn.value(2, 1), tz) if evn else None
    evn_occurred = parse_datetime(evn.value(6, 1), tz) if evn else None
    recorded = evn_recorded or msh_time or received_at
    facility = msh.value(4, 1)
    source = Source(format="hl7v2", system=msh.value(3, 1), facility=facility,
                    message_id=msh.value(10), version=msh.value(12, 1))
    fallback = facility or msh.value(4, 2) or msh.value(3, 1)
    return _Context(trigger=trigger, kind=TRIGGER_KINDS[trigger], source=source,
                    facility=facility, fallback_authority=fallback,
                    occurred_at=evn_occurred or recorded, recorded_at=recorded, tz=tz)


def _check_header(msg: Message) -> str:
    """Validate MSH-9/10/11/12 and return the trigger event."""
    msh = msg.msh
    msg_type = (msh.value(9, 1) or "").upper()
    if msg_type != "ADT":
        raise MappingError(ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                           "MSH-9 message type is not ADT; only ADT is mapped.",
                           segment="MSH", position="MSH-9")
    trigger = (msh.value(9, 2) or "").upper()
    if not trigger:
        evn = msg.first("EVN")
        trigger = ((evn.value(1) if evn else None) or "").upper()
    if trigger not in TRIGGER_KINDS:
        raise MappingError(ErrorCode.UNSUPPORTED_TRIGGER,
                           "MSH-9 trigger event is not one this hub maps.",
                           segment="MSH", position="MSH-9")
    if msh.value(12, 1) not in SUPPORTED_VERSIONS:
        raise MappingError(ErrorCode.UNSUPPORTED_VERSION,
                           "MSH-12 version is not between 2.3 and 2.8.2.",
                           segment="MSH", position="MSH-12")
    if (msh.value(11, 1) or "").upper() not in PROCESSING_IDS:
        raise MappingError(ErrorCode.UNSUPPORTED_PROCESSING_ID,
                           "MSH-11 processing id is not P, T or D.",
                           segment="MSH", position="MSH-11")
    if not msh.value(10):
        raise MappingError(ErrorCode.MISSING_CONTROL_ID,
                           "MSH-10 message control id is empty.",
                           segment="MSH", position="MSH-10")
    return trigger


# --------------------------------------------------------------------------- groups


def _groups(msg: Message, trigger: str) -> list[_Group]:
    """One group per patient: every PID for merges, else the first PID only."""
    groups: list[_Group] = []
    current: _Group | None = None
    for seg in msg.segments:
        sid = seg.id
        if sid == "PID":
            if current is not None and trigger not in MERGE_TRIGGERS:
                continue  # later PIDs (e.g. in A17-like layouts) are not this event's
            current = _Group(pid=seg)
            groups.append(current)
        elif current is None:
            continue
        elif sid == "PD1" and current.pd1 is None:
            current.pd1 = seg
        elif sid == "MRG" and current.mrg is None:
            current.mrg = seg
        elif sid == "PV1" and current.pv1 is None:
            current.pv1 = seg
    if not groups:
        raise MappingError(ErrorCode.MISSING_SEGMENT, "The message has no PID segment.",
                           segment="PID")
    _check_truncated_pid(msg, groups)
    return groups


def _check_truncated_pid(msg: Message, groups: list[_Group]) -> None:
    """A PID that is the last segment and ends before PID-5 was cut in transit."""
    last = msg.segments[-1]
    for group in groups:
        if group.pid is last and len(last.fields) <= 5 and not _pid_ids(last):
            raise MappingError(ErrorCode.TRUNCATED_SEGMENT,
                               "PID is the last segment and ends before PID-5.",
                               segment="PID")


# --------------------------------------------------------------------------- event


def _event(ctx: _Context, group: _Group, index: int, diagnoses: list[Diagnosis],
           coverage: list[Coverage]) -> CanonicalEvent:
    patient = _patient(ctx, group)
    merge = _merge(ctx, group, patient)
    if ctx.trigger in MERGE_TRIGGERS and merge is None:
        raise MappingError(ErrorCode.MISSING_SEGMENT,
                           "A merge message has a PID without an MRG naming the prior "
                           "patient identifier.", segment="MRG", position="MRG-1")
    return CanonicalEvent(
        event_id=derive_id("hl7v2", ctx.facility, ctx.source.message_id, index),
        kind=ctx.kind,
        trigger=ctx.trigger,
        occurred_at=ctx.occurred_at,
        recorded_at=ctx.recorded_at,
        source=ctx.source,
        patient=patient,
        encounter=_encounter(ctx, group.pv1),
        diagnoses=diagnoses,
        coverage=coverage,
        merge=merge,
    )


# --------------------------------------------------------------------------- patient


def _cx_list(seg: Segment, n: int) -> list[_Cx]:
    """The CX repetitions of one field that carry a value (CX-1)."""
    out = []
    for rep in seg.repetitions(n):
        value = seg.pick(rep, 1)
        if value is None:
            continue
        authority = seg.pick(rep, 4, 1) or seg.pick(rep, 4, 2)
        out.append(_Cx(value, authority, seg.pick(rep, 5)))
    return out


def _pid_ids(pid: Segment) -> list[_Cx]:
    """PID-3, else PID-2, else PID-4 (v2.3 feeds put the MRN in PID-2 or PID-4)."""
    return _cx_list(pid, 3) or _cx_list(pid, 2) or _cx_list(pid, 4)


def _choose(ids: list[_Cx], prefer_authority: str | None = None) -> _Cx:
    for cx in ids:
        if cx.type and cx.type.upper() == "MR":
            return cx
    if prefer_authority:
        for cx in ids:
            if cx.authority == prefer_authority:
                return cx
    return ids[0]


def _patient(ctx: _Context, group: _Group) -> Patient:
    pid = group.pid
    ids = _pid_ids(pid)
    if not ids:
        raise MappingError(ErrorCode.MISSING_PATIENT_IDENTIFIER,
                           "PID-3 has no identifier value (nor PID-2 or PID-4).",
                           segment="PID", position="PID-3")
    mrn = _choose(ids)
    authority = mrn.authority or ctx.fallback_authority
    if not authority:
        raise MappingError(ErrorCode.MISSING_PATIENT_IDENTIFIER,
                           "The patient identifier has no assigning authority (CX-4) "
                           "and MSH-4 names no sending facility.",
                           segment="PID", position="PID-3")
    family, given = _name(pid)
    death_at = parse_datetime(pid.value(29, 1), ctx.tz)
    return Patient(
        key=patient_key(authority, mrn.value),
        mrn=mrn.value,
        assigning_authority=authority,
        identifiers=[Identifier(system=cx.authority, value=cx.value, type=cx.type)
                     for cx in ids],
        family_name=family,
        given_names=given,
        birth_date=parse_date(pid.value(7, 1)),
        sex=_SEX.get((pid.value(8, 1) or "").upper()),
        address=_address(pid),
        phone=_phone(pid),
        language=pid.value(15, 1),
        primary_care_provider=_practitioner(group.pd1, 4) if group.pd1 else None,
        protection_indicator=_yes_no(group.pd1.value(12)) if group.pd1 else None,
        deceased=_deceased(pid.value(30), death_at),
        deceased_at=death_at,
    )


def _name(pid: Segment) -> tuple[str | None, list[str]]:
    """PID-5: the first repetition with a name. XPN-1.1 family, XPN-2 and XPN-3 given."""
    for rep in pid.repetitions(5):
        family = pid.pick(rep, 1, 1)
        given = [g for g in (pid.pick(rep, 2), pid.pick(rep, 3)) if g]
        if family or given:
            return family, given
    return None, []


def _address(pid: Segment) -> Address | None:
    """PID-11 first repetition: XAD-1.1 and XAD-2 lines, 3 city, 4 state, 5 zip, 6 country,
    9 county/parish code (kept as sent: a FIPS code or a name, per site)."""
    reps = pid.repetitions(11)
    if not reps:
        return None
    rep = reps[0]
    lines = [v for v in (pid.pick(rep, 1, 1), pid.pick(rep, 2)) if v]
    city, state = pid.pick(rep, 3), pid.pick(rep, 4)
    postal, country = pid.pick(rep, 5), pid.pick(rep, 6)
    county = pid.pick(rep, 9)
    if not (lines or city or state or postal or country or county):
        return None
    return Address(line=lines, city=city, state=state, postal_code=postal, country=country,
                   county=county)


def _phone(pid: Segment) -> str | None:
    """PID-13 first repetition with a number: XTN-1, else XTN-12, else XTN-6 + XTN-7."""
    for rep in pid.repetitions(13):
        number = pid.pick(rep, 1) or pid.pick(rep, 12)
        if number:
            return number
        local = pid.pick(rep, 7)
        if local:
            area = pid.pick(rep, 6)
            return f"{area} {local}" if area else local
    return None


def _practitioner(seg: Segment, n: int) -> Practitioner | None:
    """An XCN field's first repetition: id XCN-1, name "XCN-3 XCN-2.1"."""
    reps = seg.repetitions(n)
    if not reps:
        return None
    rep = reps[0]
    ident = seg.pick(rep, 1)
    name = " ".join(p for p in (seg.pick(rep, 3), seg.pick(rep, 2, 1)) if p) or None
    if ident is None and name is None:
        return None
    return Practitioner(id=ident, name=name)


def _yes_no(value: str | None) -> bool | None:
    if not value:
        return None
    flag = value[:1].upper()
    return True if flag == "Y" else False if flag == "N" else None


def _deceased(indicator: str | None, death_at: datetime | None) -> bool | None:
    flag = _yes_no(indicator)
    if flag is None and death_at is not None:
        return True
    return flag


# --------------------------------------------------------------------------- encounter


def _encounter(ctx: _Context, pv1: Segment | None) -> Encounter | None:
    """PV1: 19 visit number, 2 class, 3 location, 4 admission type, 6 prior location,
    7 attending, 10 hospital service, 14 admit source, 36 discharge disposition,
    44 admit time, 45 discharge time (first repetition)."""
    if pv1 is None:
        return None
    encounter = Encounter(  # type: ignore[call-arg]
        id=pv1.value(19, 1),
        class_=_class(pv1),  # populate_by_name; mypy lacks the pydantic plugin
        admit_at=parse_datetime(pv1.value(44, 1), ctx.tz),
        discharge_at=parse_datetime(pv1.value(45, 1), ctx.tz),
        admission_type=pv1.value(4, 1),
        admit_source=pv1.value(14, 1),
        discharge_disposition=pv1.value(36, 1),
        hospital_service=pv1.value(10, 1),
        location=_location(ctx, pv1, 3),
        prior_location=_location(ctx, pv1, 6),
        attending=_practitioner(pv1, 7),
    )
    # A PV1 with nothing usable (e.g. "PV1||N") is no encounter at all.
    if all(getattr(encounter, name) is None for name in Encounter.model_fields):
        return None
    return encounter


def _class(pv1: Segment) -> EncounterClass | None:
    code = (pv1.value(2, 1) or "").upper()
    if not code:
        return None
    if code == "O" and (pv1.value(18, 1) or "").upper() in _OBSERVATION_TYPES:
        return EncounterClass.OBSERVATION
    return _CLASSES.get(code, EncounterClass.OTHER)


def _location(ctx: _Context, pv1: Segment, n: int) -> Location | None:
    """A PL field: PL-1.1 unit, PL-2 room, PL-3 bed, PL-4.1 facility (else MSH-4.1)."""
    reps = pv1.repetitions(n)
    if not reps:
        return None
    rep = reps[0]
    unit, room, bed = pv1.pick(rep, 1, 1), pv1.pick(rep, 2, 1), pv1.pick(rep, 3, 1)
    if not (unit or room or bed):
        return None
    facility = pv1.pick(rep, 4, 1) or ctx.facility
    return Location(facility=facility, unit=unit, room=room, bed=bed)


# --------------------------------------------------------------------------- lists


def _diagnoses(msg: Message) -> list[Diagnosis]:
    """DG1-3 code (CE-1), display (CE-2), system (CE-3, upper-cased); DG1-6 type."""
    out = []
    for dg1 in msg.all("DG1"):
        code = dg1.value(3, 1)
        if not code:
            continue
        system = dg1.value(3, 3)
        out.append(Diagnosis(code=code, system=system.upper() if system else None,
                             display=dg1.value(3, 2) or dg1.value(4),
                             type=dg1.value(6, 1)))
    return out


def _coverage(msg: Message) -> list[Coverage]:
    """IN1-3 payer id (CX-1), IN1-4 payer name (XON-1), IN1-2 plan id (CE-1)."""
    out = []
    for in1 in msg.all("IN1"):
        payer_id, payer_name, plan_id = in1.value(3, 1), in1.value(4, 1), in1.value(2, 1)
        if payer_id or payer_name or plan_id:
            out.append(Coverage(payer_id=payer_id, payer_name=payer_name, plan_id=plan_id))
    return out


def _merge(ctx: _Context, group: _Group, patient: Patient) -> Merge | None:
    """MRG-1 (else MRG-4, MRG-2) prior patient id; MRG-5 prior visit number."""
    mrg = group.mrg
    if mrg is None:
        return None
    ids = _cx_list(mrg, 1) or _cx_list(mrg, 4) or _cx_list(mrg, 2)
    prior_visit = mrg.value(5, 1)
    if not ids:
        if prior_visit is None or ctx.trigger in MERGE_TRIGGERS:
            return None
        # A06/A07 with only a prior visit: same patient, earlier account/visit.
        return Merge(prior_patient_key=patient.key, prior_mrn=patient.mrn,
                     prior_assigning_authority=patient.assigning_authority,
                     prior_encounter_id=prior_visit)
    prior = _choose(ids, patient.assigning_authority)
    # An MRG id without CX-4 is read in the surviving patient's identifier domain: a
    # merge happens inside one domain (IHE ITI-8), and MSH-4 would split the key space.
    authority = prior.authority or patient.assigning_authority
    return Merge(prior_patient_key=patient_key(authority, prior.value), prior_mrn=prior.value,
                 prior_assigning_authority=authority, prior_encounter_id=prior_visit)
