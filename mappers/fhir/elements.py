"""FHIR R4 elements -> canonical parts (patient, encounter, location, diagnoses, coverage).

Pure functions over validated R4B models (see ``schemas.fhir``). Each function's
docstring names the FHIR paths it reads. Values are copied, never invented: where the
source is silent the canonical field stays ``None``.
"""

from __future__ import annotations

from datetime import date, datetime, time
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from schemas.canonical import (
    Address,
    Coverage,
    Diagnosis,
    EncounterClass,
    Identifier,
    Location,
    Patient,
    Practitioner,
    patient_key,
)
from schemas.errors import ErrorCode, MappingError
from schemas.fhir import (
    CodeableConcept,
    Coding,
    Condition,
    Encounter,
    EncounterLocation,
    HumanName,
    Organization,
    Reference,
    Resource,
)
from schemas.fhir import Coverage as FhirCoverage
from schemas.fhir import Identifier as FhirIdentifier
from schemas.fhir import Location as FhirLocation
from schemas.fhir import Patient as FhirPatient
from schemas.fhir import Practitioner as FhirPractitioner

from .references import ResourceIndex, parse_reference

AUTHORITY_URN_PREFIX = "urn:care-hub:authority:"
"""Kept equal to ``mappers.fhir_out.AUTHORITY_URN_PREFIX`` (a test checks it): the
inbound mappers must not depend on the outbound renderers."""

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
US_SSN = "http://hl7.org/fhir/sid/us-ssn"
US_NPI = "http://hl7.org/fhir/sid/us-npi"
PATIENT_ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"

# Encounter.class (v3 ActCode, R4 binding "extensible") -> canonical class.
CLASS_MAP: dict[str, EncounterClass] = {
    "IMP": EncounterClass.INPATIENT,
    "ACUTE": EncounterClass.INPATIENT,
    "NONAC": EncounterClass.INPATIENT,
    "EMER": EncounterClass.EMERGENCY,
    "OBSENC": EncounterClass.OBSERVATION,
    "AMB": EncounterClass.OUTPATIENT,
    "PRENC": EncounterClass.PREADMIT,
}

# Encounter.priority -> HL7 table 0007 admission type, so that the risk rules (LACE
# "acuity": emergent admission) read one vocabulary for HL7 v2 and FHIR feeds. v3
# ActPriority codes and the SNOMED CT priority codes seen in R4 examples; any other code
# is kept as sent.
PRIORITY_TO_0007: dict[str, str] = {
    "EM": "E",  # emergency
    "UR": "U",  # urgent
    "EL": "C",  # elective
    "R": "R",  # routine
    "25876001": "E",  # SNOMED CT Emergency
    "103391001": "U",  # SNOMED CT Urgent
    "17621005": "R",  # SNOMED CT Normal
}

CODE_SYSTEM_NAMES: dict[str, str] = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
    "http://snomed.info/sct": "SNOMED-CT",
}
# Which coding of a Condition.code is the canonical one: risk rules (Charlson, CMS
# conditions, social Z codes) are written against ICD-10(-CM).
_DIAGNOSIS_SYSTEM_RANK = [
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
    "http://snomed.info/sct",
]

# Location.physicalType (location-physical-type) -> canonical location slot.
_PHYSICAL_SLOT = {"si": "facility", "bu": "facility", "wa": "unit", "wi": "unit",
                  "ro": "room", "bd": "bed"}


# --- time ---------------------------------------------------------------------------


def to_datetime(value: object, zone: ZoneInfo) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware datetime.

    A value with an offset keeps it. A date-only value is midnight in ``zone`` (the
    feed's default zone, UTC unless configured). A partial date (``2013``, ``2013-04``)
    is too vague to be an event time and gives ``None``.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=zone)
    return None


def to_date(value: object) -> date | None:
    """A FHIR date as ``date``; partial dates (year, year-month) give ``None``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return None


# --- codes --------------------------------------------------------------------------


def codings(concept: CodeableConcept | None) -> list[Coding]:
    """``CodeableConcept.coding`` entries that carry a code."""
    if concept is None:
        return []
    return [c for c in concept.coding or [] if c.code]


def first_code(concept: CodeableConcept | None, system: str | None = None) -> str | None:
    """``CodeableConcept.coding[].code`` (of ``system`` when given), else None."""
    for coding in codings(concept):
        if system is None or coding.system == system:
            return str(coding.code)
    return None


def has_code(concept: CodeableConcept | None, code: str) -> bool:
    return any(c.code == code for c in codings(concept))


# --- people -------------------------------------------------------------------------


def format_name(name: HumanName | None) -> str | None:
    """``HumanName.text``, else ``given family`` (prefix/suffix dropped)."""
    if name is None:
        return None
    if name.text:
        return str(name.text)
    parts = [*(name.given or []), *([name.family] if name.family else [])]
    return " ".join(str(p) for p in parts) or None


def pick_name(names: list[HumanName] | None) -> HumanName | None:
    """The current name: ``official``, then ``usual``, then unlabelled, ``old``/``maiden`` last."""
    order = {"official": 0, "usual": 1, None: 2, "temp": 3, "nickname": 4, "anonymous": 5,
             "old": 6, "maiden": 7}
    candidates = [n for n in names or [] if n.family or n.given or n.text]
    if not candidates:
        return None
    return min(candidates, key=lambda n: order.get(n.use, 5))


def practitioner(ref: Reference | None, index: ResourceIndex,
                 container: Resource | None) -> Practitioner | None:
    """A canonical practitioner from a Reference(Practitioner|PractitionerRole).

    Reads ``Reference.display`` / ``Reference.identifier.value`` and, when the
    Practitioner is in the input, ``Practitioner.identifier`` (NPI first) and
    ``Practitioner.name``. Without either, the reference's logical id is the id.
    """
    if ref is None:
        return None
    found = index.find(ref, container=container)
    pid: str | None = None
    name: str | None = str(ref.display) if ref.display else None
    if isinstance(found, FhirPractitioner):
        idents = [i for i in found.identifier or [] if i.value]
        npi = next((i for i in idents if i.system == US_NPI), None)
        chosen = npi or (idents[0] if idents else None)
        pid = str(chosen.value) if chosen else None
        name = name or format_name(pick_name(found.name))
    if pid is None and ref.identifier is not None and ref.identifier.value:
        pid = str(ref.identifier.value)
    if pid is None and ref.reference:
        parsed = parse_reference(ref.reference)
        pid = parsed.id if parsed else None
    if pid is None and name is None:
        return None
    return Practitioner(id=pid, name=name)


# --- patient ------------------------------------------------------------------------


def _is_ssn(ident: FhirIdentifier) -> bool:
    return ident.system == US_SSN or first_code(ident.type, V2_0203) == "SS"


def _authority(ident: FhirIdentifier) -> str | None:
    """Who issued the identifier: ``Identifier.system``, else ``assigner.display`` /
    ``assigner.identifier.value``.

    A system the hub itself minted for an HL7 namespace id
    (``urn:care-hub:authority:<id>``, :func:`mappers.fhir_out.authority_system`) maps back
    to that id, so a hub FHIR output fed back in names the same patient key.
    """
    if ident.system:
        system = str(ident.system)
        if system.startswith(AUTHORITY_URN_PREFIX) and len(system) > len(AUTHORITY_URN_PREFIX):
            return unquote(system[len(AUTHORITY_URN_PREFIX):])
        return system
    if ident.assigner is not None:
        if ident.assigner.display:
            return str(ident.assigner.display)
        if ident.assigner.identifier is not None and ident.assigner.identifier.value:
            return str(ident.assigner.identifier.value)
    return None


def map_patient(res: FhirPatient, index: ResourceIndex, zone: ZoneInfo) -> Patient:
    """Patient resource -> canonical patient.

    Reads ``Patient.identifier`` (the one typed ``MR`` in v2-0203 is the MRN, else the
    first usable one; its ``system`` or ``assigner`` is the assigning authority; Social
    Security numbers are neither used as key nor copied), ``name``, ``birthDate``,
    ``gender``, ``address`` (home preferred, ``old`` and ended ones skipped),
    ``telecom`` (phone; by rank, then home/mobile), ``communication`` (preferred
    language), ``generalPractitioner``, ``deceased[x]``. Raises
    ``MISSING_PATIENT_IDENTIFIER`` when no identifier can key the patient and
    ``UNSUPPORTED_RESOURCE`` for a veterinary patient (patient-animal extension).
    """
    if any(ext.url == PATIENT_ANIMAL for ext in res.extension or []):
        raise MappingError(
            ErrorCode.UNSUPPORTED_RESOURCE,
            "Patient carries the patient-animal extension: veterinary patients are not "
            "handled by the hub",
        )
    usable = [i for i in res.identifier or [] if i.value and i.use != "old"]
    not_ssn = [i for i in usable if not _is_ssn(i)]
    scoped = [i for i in not_ssn if _authority(i)]
    if not scoped:
        if not usable:
            reason = "Patient.identifier is missing: the hub keys patients by MRN"
        elif not not_ssn:
            reason = ("Patient.identifier holds only a Social Security number, which the "
                      "hub does not use as a patient key")
        else:
            reason = ("Patient.identifier has no system or assigner, so the MRN cannot be "
                      "scoped to an assigning authority")
        raise MappingError(ErrorCode.MISSING_PATIENT_IDENTIFIER, reason,
                           position="Patient.identifier")
    mrn_ident = next((i for i in scoped if has_code(i.type, "MR")), scoped[0])
    authority = _authority(mrn_ident) or ""
    mrn = str(mrn_ident.value)

    name = pick_name(res.name)
    deceased_at = None
    deceased: bool | None = None
    if res.deceasedBoolean is not None:
        deceased = bool(res.deceasedBoolean)
    if res.deceasedDateTime is not None:
        deceased = True
        deceased_at = to_datetime(res.deceasedDateTime, zone)
    pcp = None
    for gp in res.generalPractitioner or []:
        pcp = practitioner(gp, index, res)
        if pcp:
            break
    return Patient(
        key=patient_key(authority, mrn),
        mrn=mrn,
        assigning_authority=authority,
        identifiers=[
            Identifier(system=str(i.system) if i.system else _authority(i), value=str(i.value),
                       type=first_code(i.type))
            for i in not_ssn
        ],
        family_name=str(name.family) if name and name.family else None,
        given_names=[str(g) for g in (name.given or [])] if name else [],
        birth_date=to_date(res.birthDate),
        sex=str(res.gender) if res.gender else None,
        address=_address(res),
        phone=_phone(res),
        language=_language(res),
        primary_care_provider=pcp,
        deceased=deceased,
        deceased_at=deceased_at,
    )


def patient_from_reference(ref: Reference, base: str | None) -> Patient | None:
    """A minimal patient keyed by a reference when the Patient itself is not available.

    ``Reference.identifier`` (a logical reference with ``system``) is used as the MRN
    when present. Otherwise the Patient's logical id on the sending server is the
    identifier: its assigning authority is ``<server base>/Patient`` (the base from an
    absolute reference, else ``base``, the sender's ``meta.source`` / MessageHeader
    endpoint, else ``urn:fhir``), type ``RI`` (v2-0203 resource identifier). Such keys
    are stable for one server but do not match the MRN keys of an HL7 v2 feed for the
    same person; configure a resolver to get the Patient and its MRN instead.
    """
    ident = ref.identifier
    if ident is not None and ident.value and not _is_ssn(ident) and _authority(ident):
        authority = _authority(ident) or ""
        return Patient(
            key=patient_key(authority, str(ident.value)), mrn=str(ident.value),
            assigning_authority=authority,
            identifiers=[Identifier(system=authority, value=str(ident.value),
                                    type=first_code(ident.type))],
        )
    parsed = parse_reference(ref.reference) if ref.reference else None
    if parsed is None or parsed.type != "Patient":
        return None
    server = (parsed.base or base or "urn:fhir").rstrip("/")
    authority = f"{server}/Patient"
    return Patient(
        key=patient_key(authority, parsed.id), mrn=parsed.id, assigning_authority=authority,
        identifiers=[Identifier(system=authority, value=parsed.id, type="RI")],
    )


def _current(period_end: object) -> bool:
    return period_end is None


def _address(res: FhirPatient) -> Address | None:
    """``Patient.address``: home first, skipping ``old`` and ended (``period.end``) ones;
    line, city, state, postalCode, country and district (the county)."""
    candidates = [a for a in res.address or []
                  if a.use != "old" and (a.period is None or _current(a.period.end))
                  and (a.line or a.city or a.state or a.postalCode or a.district)]
    if not candidates:
        return None
    best = min(candidates, key=lambda a: {"home": 0, None: 1}.get(a.use, 2))
    return Address(
        line=[str(x) for x in best.line or []],
        city=str(best.city) if best.city else None,
        state=str(best.state) if best.state else None,
        postal_code=str(best.postalCode) if best.postalCode else None,
        country=str(best.country) if best.country else None,
        county=str(best.district) if best.district else None,
    )


def _phone(res: FhirPatient) -> str | None:
    """``Patient.telecom`` with system phone: lowest ``rank``, then home, mobile, other."""
    phones = [t for t in res.telecom or []
              if t.system == "phone" and t.value and t.use != "old"
              and (t.period is None or _current(t.period.end))]
    if not phones:
        return None
    use_order = {"home": 0, "mobile": 1, None: 2, "work": 3, "temp": 4}
    best = min(phones, key=lambda t: (t.rank or 1_000_000, use_order.get(t.use, 5)))
    return str(best.value)


def _language(res: FhirPatient) -> str | None:
    """``Patient.communication.language``: the preferred one, else the first (BCP-47 code,
    else text)."""
    comms = res.communication or []
    chosen = next((c for c in comms if c.preferred), comms[0] if comms else None)
    if chosen is None:
        return None
    return first_code(chosen.language) or (
        str(chosen.language.text) if chosen.language.text else None)


# --- encounter pieces ---------------------------------------------------------------


def encounter_class(enc: Encounter) -> EncounterClass | None:
    """``Encounter.class.code`` (v3 ActCode) -> canonical class; unknown codes -> other."""
    coding = enc.class_fhir
    if coding is None or not coding.code:
        return None
    return CLASS_MAP.get(str(coding.code), EncounterClass.OTHER)


def visit_number(enc: Encounter) -> str | None:
    """``Encounter.identifier`` typed VN, else the first current one, else ``Encounter.id``."""
    idents = [i for i in enc.identifier or [] if i.value and i.use != "old"]
    vn = next((i for i in idents if has_code(i.type, "VN")), None)
    chosen = vn or (idents[0] if idents else None)
    if chosen is not None:
        return str(chosen.value)
    return str(enc.id) if enc.id else None


def admission_type(enc: Encounter) -> str | None:
    """``Encounter.priority`` (mapped to HL7 0007 where known), else ``Encounter.type`` code."""
    code = first_code(enc.priority)
    if code:
        return PRIORITY_TO_0007.get(code, code)
    for concept in enc.type or []:
        code = first_code(concept)
        if code:
            return code
    return None


def organization_name(ref: Reference | None, index: ResourceIndex,
                      container: Resource | None) -> str | None:
    """``Reference.display``, else ``Organization.name`` of the referenced Organization,
    else an identifier value (``Reference.identifier`` / ``Organization.identifier``)."""
    if ref is None:
        return None
    if ref.display:
        return str(ref.display)
    found = index.find(ref, container=container)
    if isinstance(found, Organization):
        if found.name:
            return str(found.name)
        ident = next((i for i in found.identifier or [] if i.value), None)
        if ident is not None:
            return str(ident.value)
    if ref.identifier is not None and ref.identifier.value:
        return str(ref.identifier.value)
    return None


def _location_slots(entry: EncounterLocation, index: ResourceIndex,
                    container: Resource) -> dict[str, str]:
    """Fill facility/unit/room/bed from one ``Encounter.location`` and its ``partOf`` chain.

    Reads ``Location.physicalType`` (si/bu -> facility, wa/wi -> unit, ro -> room,
    bd -> bed), ``Location.name`` and ``Location.partOf``; for a Location not in the
    input, ``Encounter.location.physicalType`` and ``location.display``. A Location
    without a physical type is taken as the facility when it is the top of its chain
    (ADT notifications name the hospital that way) and as the unit otherwise.
    """
    slots: dict[str, str] = {}
    found = index.find(entry.location, container=container)
    if not isinstance(found, FhirLocation):
        name = entry.location.display if entry.location else None
        if name:
            code = first_code(entry.physicalType)
            target = _PHYSICAL_SLOT.get(code) if code else "facility"
            if target:
                slots[target] = str(name)
        return slots
    seen: set[int] = set()
    loc: FhirLocation | None = found
    while loc is not None and id(loc) not in seen and len(seen) < 8:
        seen.add(id(loc))
        parent = index.find(loc.partOf, container=container)
        parent_loc = parent if isinstance(parent, FhirLocation) else None
        code = first_code(loc.physicalType) or (
            first_code(entry.physicalType) if loc is found else None)
        slot: str | None
        if code:
            slot = _PHYSICAL_SLOT.get(code)
        else:
            slot = "unit" if loc.partOf is not None else "facility"
        label = loc.name or (loc.identifier[0].value if loc.identifier else None)
        if slot and label and slot not in slots:
            slots[slot] = str(label)
        loc = parent_loc
    return slots


def locations(enc: Encounter, index: ResourceIndex,
              facility: str | None) -> tuple[Location | None, Location | None]:
    """(current, prior) location from ``Encounter.location``.

    Current: the last entry with ``status`` active; else the last planned/unlabelled
    one; else the last one. Prior: the last ``completed`` entry before it. The facility
    defaults to ``facility`` (the serviceProvider) when no Location names one.
    """
    entries = list(enc.location or [])
    current_i: int | None = None
    for wanted in (("active",), ("planned", None, "reserved"), None):
        for i in range(len(entries) - 1, -1, -1):
            if wanted is None or entries[i].status in wanted:
                current_i = i
                break
        if current_i is not None:
            break
    current = prior = None
    if current_i is not None:
        current = _to_location(_location_slots(entries[current_i], index, enc), facility)
        for i in range(current_i - 1, -1, -1):
            if entries[i].status == "completed":
                prior = _to_location(_location_slots(entries[i], index, enc), facility)
                break
    elif facility:
        current = Location(facility=facility)
    return current, prior


def _to_location(slots: dict[str, str], facility: str | None) -> Location | None:
    if not slots and not facility:
        return None
    return Location(facility=slots.get("facility") or facility, unit=slots.get("unit"),
                    room=slots.get("room"), bed=slots.get("bed"))


def attending(enc: Encounter, index: ResourceIndex) -> Practitioner | None:
    """``Encounter.participant`` whose ``type`` has code ATND (v3 ParticipationType).

    Untyped participants are not guessed to be the attending physician.
    """
    for part in enc.participant or []:
        if any(has_code(t, "ATND") for t in part.type or []):
            found = practitioner(part.individual, index, enc)
            if found:
                return found
    return None


def diagnoses(enc: Encounter, index: ResourceIndex) -> list[Diagnosis]:
    """Conditions of this encounter -> canonical diagnoses.

    Sources: ``Encounter.diagnosis.condition`` (type = ``diagnosis.use`` code, e.g. AD,
    DD, CC) and every Condition in the input whose ``Condition.encounter`` points at
    this Encounter (type = ``Condition.category`` code). The coding used is ICD-10-CM,
    else ICD-10, else SNOMED CT, else the first; a Condition with text only is skipped.
    """
    found: list[tuple[Condition, str | None]] = []
    seen: set[int] = set()
    for diag in enc.diagnosis or []:
        cond = index.find(diag.condition, container=enc)
        if isinstance(cond, Condition) and id(cond) not in seen:
            seen.add(id(cond))
            found.append((cond, first_code(diag.use)))
    for res in index.resources:
        if (isinstance(res, Condition) and id(res) not in seen
                and index.find(res.encounter) is enc):
            seen.add(id(res))
            found.append((res, None))
    out: list[Diagnosis] = []
    for cond, use in found:
        if cond.verificationStatus is not None and has_code(cond.verificationStatus,
                                                            "entered-in-error"):
            continue
        options = codings(cond.code)
        if not options:
            continue

        def rank(c: Coding) -> int:
            system = str(c.system) if c.system else ""
            return (_DIAGNOSIS_SYSTEM_RANK.index(system) if system in _DIAGNOSIS_SYSTEM_RANK
                    else len(_DIAGNOSIS_SYSTEM_RANK))

        best = min(options, key=rank)
        system = str(best.system) if best.system else None
        display = best.display or (cond.code.text if cond.code else None)
        category = next((first_code(c) for c in cond.category or [] if first_code(c)), None)
        out.append(Diagnosis(
            code=str(best.code),
            system=CODE_SYSTEM_NAMES.get(system, system) if system else None,
            display=str(display) if display else None,
            type=use or category,
        ))
    return out


def coverages(patient_res: Resource | None, index: ResourceIndex) -> list[Coverage]:
    """Coverage resources of the patient -> canonical coverage.

    Reads ``Coverage.beneficiary`` (must point at ``patient_res``, or be unresolvable in
    an input that has a single Patient), ``Coverage.status`` (cancelled /
    entered-in-error skipped), ``Coverage.payor[0]`` (display or Organization name;
    Organization / Reference identifier as payer id) and ``Coverage.class`` of type
    ``plan`` (plan id).
    """
    patients = [r for r in index.resources if isinstance(r, FhirPatient)]
    out: list[Coverage] = []
    for res in index.resources:
        if not isinstance(res, FhirCoverage) or res.status in ("cancelled", "entered-in-error"):
            continue
        beneficiary = index.find(res.beneficiary)
        if beneficiary is None:
            if len(patients) > 1:
                continue
        elif beneficiary is not patient_res:
            continue
        payer_id = payer_name = None
        if res.payor:
            payor = res.payor[0]
            payer_name = organization_name(payor, index, res)
            org = index.find(payor, container=res)
            if isinstance(org, Organization):
                ident = next((i for i in org.identifier or [] if i.value), None)
                payer_id = str(ident.value) if ident else None
            if payer_id is None and payor.identifier is not None and payor.identifier.value:
                payer_id = str(payor.identifier.value)
        plan_id = next((str(c.value) for c in res.class_fhir or []
                        if has_code(c.type, "plan") and c.value), None)
        if payer_id or payer_name or plan_id:
            out.append(Coverage(payer_id=payer_id, payer_name=payer_name, plan_id=plan_id))
    return out
