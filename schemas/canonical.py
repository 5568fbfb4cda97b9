"""The canonical care event (topic ``care.events``; the output of ``hub map``).

Field names and meanings are the contract of DESIGN.md ("Canonical event"). Every
timestamp is an aware ``datetime`` (ISO-8601 with offset on the wire); absent values are
``None`` and are omitted when serialised with :func:`dump_event`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class EventKind(StrEnum):
    PREADMIT = "preadmit"
    ADMIT = "admit"
    REGISTER = "register"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"
    UPDATE = "update"
    CANCEL_ADMIT = "cancel_admit"
    CANCEL_TRANSFER = "cancel_transfer"
    CANCEL_DISCHARGE = "cancel_discharge"
    LEAVE_OF_ABSENCE = "leave_of_absence"
    RETURN_FROM_LEAVE = "return_from_leave"
    CLASS_CHANGE = "class_change"
    MERGE = "merge"


class EncounterClass(StrEnum):
    INPATIENT = "inpatient"
    EMERGENCY = "emergency"
    OBSERVATION = "observation"
    OUTPATIENT = "outpatient"
    PREADMIT = "preadmit"
    RECURRING = "recurring"
    OTHER = "other"


def _require_aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("timestamps must carry a UTC offset")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Source(_Model):
    format: Literal["hl7v2", "fhir"]
    system: str | None = None
    """HL7: MSH-3 sending application; FHIR: MessageHeader.source.endpoint or Meta.source."""
    facility: str | None = None
    """HL7: MSH-4 sending facility; FHIR: Encounter.serviceProvider or MessageHeader.sender."""
    message_id: str | None = None
    """HL7: MSH-10 control id; FHIR: Bundle.id / resource id + version."""
    version: str | None = None
    """HL7: MSH-12; FHIR: "4.0.1"."""


class Identifier(_Model):
    system: str | None = None
    value: str
    type: str | None = None


class Address(_Model):
    line: list[str] = Field(default_factory=list)
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    county: str | None = None
    """County or parish (HL7 XAD-9 county/parish code; FHIR Address.district): agencies'
    service areas are often counties."""


class Patient(_Model):
    key: str
    """Canonical patient key: ``<assigning authority>|<mrn>`` (see :func:`patient_key`)."""
    mrn: str
    assigning_authority: str
    identifiers: list[Identifier] = Field(default_factory=list)
    family_name: str | None = None
    given_names: list[str] = Field(default_factory=list)
    birth_date: date | None = None
    sex: str | None = None
    """administrative-gender: male, female, other, unknown."""
    address: Address | None = None
    phone: str | None = None
    language: str | None = None
    primary_care_provider: Practitioner | None = None
    """HL7 PD1-4; FHIR Patient.generalPractitioner."""
    protection_indicator: bool | None = None
    """HL7 PD1-12 (Y/N)."""
    deceased: bool | None = None
    deceased_at: AwareDatetime | None = None


class Practitioner(_Model):
    id: str | None = None
    name: str | None = None


class Location(_Model):
    facility: str | None = None
    unit: str | None = None
    room: str | None = None
    bed: str | None = None


class Encounter(_Model):
    id: str | None = None
    """Visit number (HL7 PV1-19; FHIR Encounter.identifier or id), scoped by facility."""
    class_: EncounterClass | None = Field(default=None, alias="class")
    admit_at: AwareDatetime | None = None
    discharge_at: AwareDatetime | None = None
    admission_type: str | None = None
    admit_source: str | None = None
    discharge_disposition: str | None = None
    hospital_service: str | None = None
    location: Location | None = None
    prior_location: Location | None = None
    attending: Practitioner | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Diagnosis(_Model):
    code: str
    system: str | None = None
    display: str | None = None
    type: str | None = None


class Coverage(_Model):
    payer_id: str | None = None
    payer_name: str | None = None
    plan_id: str | None = None


class Merge(_Model):
    prior_patient_key: str
    prior_mrn: str
    prior_assigning_authority: str | None = None
    prior_encounter_id: str | None = None


class CanonicalEvent(_Model):
    event_id: str
    kind: EventKind
    trigger: str
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    source: Source
    patient: Patient
    encounter: Encounter | None = None
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    coverage: list[Coverage] = Field(default_factory=list)
    merge: Merge | None = None


Patient.model_rebuild()


def patient_key(assigning_authority: str, mrn: str) -> str:
    """The canonical patient key: assigning authority and MRN joined by ``|``.

    Used as the Kafka key of every per-patient topic, so one patient's events stay in
    order on one partition. It carries the MRN, so it is PHI: never log it (log
    :func:`patient_ref` instead).
    """
    return f"{assigning_authority}|{mrn}"


def patient_ref(key: str) -> str:
    """A short, non-reversible reference to a patient key, safe for logs and metrics."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


_EVENT_NAMESPACE = uuid.UUID("8f0d6a5e-3c1b-4f5e-9a43-7c2b1d0e6f11")
_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes
_VARIANT_NIBBLE = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def derive_id(*parts: str | int | None) -> str:
    """A deterministic id (UUID v5) from the parts that identify an output.

    The same source message and rule always give the same id, so at-least-once delivery
    plus dedup on this id gives effectively-once results downstream.
    """
    try:
        # Strings joined as they are (a StrEnum member as its value, which is also its
        # str()); the general form when a part is None or a number.
        text = "\x1f".join(parts)  # type: ignore[arg-type]
    except TypeError:
        text = "\x1f".join(["" if p is None else str(p) for p in parts])
    # uuid.uuid5 (RFC 4122 section 4.3) spelled out: SHA-1 of namespace + name, version
    # nibble 5, variant bits 10. Same ids, a third of the cost (the care stages derive
    # several per event); tests/streams/care/test_fast_paths.py pins it to uuid.uuid5.
    x = hashlib.sha1(_NAMESPACE_BYTES + text.encode()).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT_NIBBLE[x[16]]}{x[17:20]}-{x[20:32]}"


def dump_event(event: CanonicalEvent) -> dict[str, Any]:
    """The wire form of an event: JSON-compatible, ``class`` not ``class_``, nulls omitted."""
    return event.model_dump(mode="json", by_alias=True, exclude_none=True)
