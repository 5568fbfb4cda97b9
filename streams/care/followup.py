"""Post-discharge follow-up rules: which tasks a discharge creates, and when they fall due.

Pure: no faust, no Kafka, no environment, no clock (times come in as arguments).

The community rules implement CMS Transitional Care Management (TCM), CPT 99495
(moderate complexity, face-to-face visit within 14 days) and 99496 (high complexity,
within 7 days); see REFERENCE.md section 1 and the CMS MLN booklet "Transitional Care
Management Services":

* interactive contact (phone, direct or electronic) within 2 business days of the
  discharge date (business days: :mod:`streams.care.calendar`);
* face-to-face visit within 7 calendar days for a high-risk patient, 14 otherwise;
* medication reconciliation no later than the face-to-face visit;
* notification of the primary care provider (DESIGN.md "Care rules"; not a TCM billing
  element, the hub's own rule, due within 1 business day).

TCM applies only to discharges to a community setting (home, domiciliary, rest home,
assisted living). A discharge to a skilled-nursing or other post-acute facility, or a
transfer to another acute hospital, gets a single handoff task instead; death or hospice
gets no outreach (the caller cancels any open tasks).

The disposition comes from HL7 v2 ``PV1-36`` (Discharge Disposition, user table 0112, in
US practice the NUBC UB-04 patient discharge status codes) or FHIR
``Encounter.hospitalization.dischargeDisposition`` (R4; ``Encounter.admission.
dischargeDisposition`` in R5), CodeSystem
``http://terminology.hl7.org/CodeSystem/discharge-disposition``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.care.calendar import business_day_deadline, calendar_day_deadline

__all__ = [
    "DISPOSITION_CLASSES",
    "FHIR_DISCHARGE_DISPOSITION_SYSTEM",
    "HOME_HEALTH_CODES",
    "DispositionClass",
    "FollowupConfig",
    "Priority",
    "TaskKind",
    "TaskPlan",
    "classify_disposition",
    "home_health_disposition",
    "is_overdue",
    "plan_followup",
]

FHIR_DISCHARGE_DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"


class DispositionClass(StrEnum):
    """Where the patient went, as far as follow-up is concerned."""

    COMMUNITY = "community"
    """Home, self-care, home health, alternative home, and custodial or supportive care
    (assisted living, domiciliary, rest home): TCM applies."""
    POST_ACUTE = "post_acute"
    """SNF, inpatient rehab (IRF), LTCH, nursing facility, swing bed, other institutions:
    handoff to the receiving facility, no TCM."""
    ACUTE_TRANSFER = "acute_transfer"
    """Another short-term/acute hospital (incl. cancer/children's, federal, critical
    access, psychiatric hospital) or admission as an inpatient here: handoff, no TCM."""
    HOSPICE = "hospice"
    DEATH = "death"
    AMA = "ama"
    """Left against medical advice / discontinued care: still a community discharge for
    TCM purposes (the patient went home)."""
    UNKNOWN = "unknown"
    """Absent, unrecognised, or a code that does not say where the patient went."""


_C = DispositionClass

_NUBC_BASE: dict[str, DispositionClass] = {
    "01": _C.COMMUNITY,  # Discharged to home or self-care (routine discharge)
    "02": _C.ACUTE_TRANSFER,  # to a short-term general hospital for inpatient care
    "03": _C.POST_ACUTE,  # to a SNF with Medicare certification
    # 04: to a facility that provides custodial or supportive care (assisted living,
    # domiciliary, rest home, residential care): CMS counts these as the community for
    # TCM (REFERENCE.md section 1), unlike the skilled and certified facilities here.
    "04": _C.COMMUNITY,
    "05": _C.ACUTE_TRANSFER,  # to a designated cancer center or children's hospital
    "06": _C.COMMUNITY,  # to home under care of an organized home health service org.
    "07": _C.AMA,  # Left against medical advice or discontinued care
    "09": _C.ACUTE_TRANSFER,  # Admitted as an inpatient to this hospital (still in acute care)
    "20": _C.DEATH,  # Expired
    "21": _C.UNKNOWN,  # to court/law enforcement (custody: not community, not a care facility)
    "30": _C.UNKNOWN,  # Still patient (not a discharge)
    "40": _C.DEATH,  # Expired at home (hospice claims)
    "41": _C.DEATH,  # Expired in a medical facility (hospice claims)
    "42": _C.DEATH,  # Expired, place unknown (hospice claims)
    "43": _C.ACUTE_TRANSFER,  # to a federal health care facility (VA, DoD hospital)
    "50": _C.HOSPICE,  # Hospice - home
    "51": _C.HOSPICE,  # Hospice - medical facility (certified) providing hospice care
    "61": _C.POST_ACUTE,  # to a hospital-based Medicare-approved swing bed
    "62": _C.POST_ACUTE,  # to an inpatient rehabilitation facility (IRF)
    "63": _C.POST_ACUTE,  # to a Medicare-certified long-term care hospital (LTCH)
    "64": _C.POST_ACUTE,  # to a nursing facility certified under Medicaid, not Medicare
    "65": _C.ACUTE_TRANSFER,  # to a psychiatric hospital or psychiatric distinct part unit
    "66": _C.ACUTE_TRANSFER,  # to a critical access hospital (CAH)
    "69": _C.POST_ACUTE,  # to a designated disaster alternative care site
    "70": _C.POST_ACUTE,  # to another type of health care institution not defined elsewhere
}

_NUBC_PLANNED_READMISSION_BASE: dict[str, str] = {
    # 81-95: the same destinations "with a planned acute care hospital inpatient
    # readmission" (NUBC, effective 2013-10-01): classified by the base code.
    "81": "01",
    "82": "02",
    "83": "03",
    "84": "04",
    "85": "05",
    "86": "06",
    "87": "21",
    "88": "43",
    "89": "61",
    "90": "62",
    "91": "63",
    "92": "64",
    "93": "65",
    "94": "66",
    "95": "70",
}

_FHIR_DISCHARGE_DISPOSITION: dict[str, DispositionClass] = {
    "home": _C.COMMUNITY,  # Home
    "alt-home": _C.COMMUNITY,  # Alternative home (e.g. a family member's home)
    "other-hcf": _C.POST_ACUTE,  # Other healthcare facility
    "hosp": _C.HOSPICE,  # Hospice (not "hospital")
    "long": _C.POST_ACUTE,  # Long-term care
    "aadvice": _C.AMA,  # Left against advice
    "exp": _C.DEATH,  # Expired
    "psy": _C.ACUTE_TRANSFER,  # Psychiatric hospital
    "rehab": _C.POST_ACUTE,  # Rehabilitation
    "snf": _C.POST_ACUTE,  # Skilled nursing facility
    "oth": _C.UNKNOWN,  # Other
}

DISPOSITION_CLASSES: MappingProxyType[str, DispositionClass] = MappingProxyType(
    {
        **_NUBC_BASE,
        **{code: _NUBC_BASE[base] for code, base in _NUBC_PLANNED_READMISSION_BASE.items()},
        **_FHIR_DISCHARGE_DISPOSITION,
    }
)
"""Discharge disposition code -> :class:`DispositionClass` (read-only).

Sources: NUBC UB-04 Data Specifications Manual, Form Locator 17 "Patient Discharge
Status" (the codes sent in HL7 v2 PV1-36, user-defined table 0112, by US hospitals; code
list as published by CMS contractors, e.g. Noridian JF Part A "Patient Discharge Status
Codes", and ResDAC); HL7 Terminology (THO) CodeSystem
http://terminology.hl7.org/CodeSystem/discharge-disposition (FHIR
Encounter.hospitalization.dischargeDisposition). Codes not listed here (reserved,
discontinued such as 08, 71, 72, or local) classify as ``unknown``.

Decisions: 04 (custodial or supportive care: assisted living, domiciliary, rest home)
is ``community``: CMS TCM counts those settings as the community, so the patient gets
the TCM outreach, not a facility handoff. 09 (admitted as an inpatient here) is
``acute_transfer``: the patient is still in acute care. 21 (court/law enforcement) and
30 (still a patient) are ``unknown``: TCM does not apply to custody and 30 is not a
discharge, so what happens is left to
:attr:`FollowupConfig.unknown_disposition_is_community`. 69 and 70 are ``post_acute``:
an institution receives the patient and gets the handoff.
"""

HOME_HEALTH_CODES: frozenset[str] = frozenset({"06", "86"})
"""NUBC codes for discharge home under an organized home health service (06, and 86
with a planned readmission). FHIR discharge-disposition has no home-health code."""


def _normalise_code(code: str | None) -> str | None:
    """The code part of a PV1-36 value or FHIR code: first HL7 component (``01^Home``),
    surrounding blanks removed, single digits zero-padded (``1`` -> ``01``), FHIR codes
    lower-cased. None for absent or blank values."""
    if code is None:
        return None
    value = code.split("^", 1)[0].strip()
    if not value:
        return None
    if value.isdigit() and len(value) == 1:
        return "0" + value
    return value.lower()


def classify_disposition(code: str | None) -> DispositionClass:
    """Classify a discharge disposition code from HL7 v2 ``PV1-36`` (NUBC patient
    discharge status, table 0112) or FHIR ``Encounter.hospitalization.dischargeDisposition``
    (discharge-disposition CodeSystem). Absent or unrecognised codes -> ``unknown``.
    The table is :data:`DISPOSITION_CLASSES`."""
    normalised = _normalise_code(code)
    if normalised is None:
        return DispositionClass.UNKNOWN
    return DISPOSITION_CLASSES.get(normalised, DispositionClass.UNKNOWN)


def home_health_disposition(code: str | None) -> bool:
    """True when the ``PV1-36`` code says discharge home under a home health agency
    (NUBC 06, or 86 with a planned readmission): a community discharge that also signals
    a home-health referral need."""
    return _normalise_code(code) in HOME_HEALTH_CODES


class FollowupConfig(BaseModel):
    """Follow-up thresholds (from the rules YAML). Defaults follow CMS TCM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_business_days: int = Field(
        default=2,
        ge=1,
        description="Interactive contact due by the end of this business day after the "
        "discharge date (CMS TCM: 2).",
    )
    visit_days_high: int = Field(
        default=7,
        ge=0,
        description="Face-to-face visit due this many calendar days after the discharge "
        "date for a high-risk patient (CPT 99496: 7).",
    )
    visit_days_other: int = Field(
        default=14,
        ge=0,
        description="Face-to-face visit due this many calendar days after the discharge "
        "date otherwise (CPT 99495: 14).",
    )
    pcp_notification_business_days: int = Field(
        default=1,
        ge=1,
        description="PCP notification due by the end of this business day after the "
        "discharge date (the hub's rule; CMS asks for 'immediately').",
    )
    handoff_hours: float = Field(
        default=24,
        gt=0,
        description="Handoff to a post-acute facility or receiving hospital due this many "
        "hours after the discharge instant.",
    )
    country: str = Field(
        default="US",
        description="Holiday calendar (ISO 3166 alpha-2, public holidays of the `holidays` "
        "package; US = federal).",
    )
    unknown_disposition_is_community: bool = Field(
        default=True,
        description="Treat an absent or unrecognised disposition as a community discharge "
        "and plan TCM tasks: a needless call costs less than a missed TCM window. When "
        "false, an unknown disposition plans no tasks.",
    )
    escalate_after_hours: float = Field(
        default=0,
        ge=0,
        description="Grace period after a task's due time before it counts as overdue "
        "(0: overdue as soon as the due time passes).",
    )

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in holidays.list_supported_countries():
            raise ValueError(f"no holiday calendar for country {value!r}")
        return code


class TaskKind(StrEnum):
    """What a follow-up task asks for (same values as ``schemas.care.TaskKind``)."""

    CONTACT = "contact"
    VISIT = "visit"
    MED_REC = "med_rec"
    PCP_NOTIFICATION = "pcp_notification"
    HANDOFF = "handoff"


Priority = Literal["routine", "urgent", "asap", "stat"]
"""FHIR request-priority codes (http://hl7.org/fhir/request-priority)."""


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A task the discharge calls for (before ids, owners and FHIR rendering)."""

    kind: TaskKind
    due: datetime
    """Aware; day-granular deadlines are 23:59:59 local time in the facility's zone."""
    priority: Priority
    rule: str
    """Stable rule id, e.g. ``tcm.contact.2bd``, ``tcm.visit.7d``, ``handoff.post_acute``."""
    description: str
    """PHI-free, fixed text."""


def _after_hours(start: datetime, hours: float, tz: str) -> datetime:
    """``hours`` of elapsed time after ``start``, expressed in ``tz`` (UTC arithmetic: adding
    a timedelta to a zoned datetime would move the wall clock, wrong across DST)."""
    return (start.astimezone(UTC) + timedelta(hours=hours)).astimezone(ZoneInfo(tz))


def _business_days_text(days: int) -> str:
    return "1 business day" if days == 1 else f"{days} business days"


def _community_tasks(
    discharge_at: datetime, high_risk: bool, tz: str, has_pcp: bool, cfg: FollowupConfig
) -> list[TaskPlan]:
    # The deadlines are day-granular: the plans depend on the discharge's local date only,
    # so they are memoized on it (plans are frozen values).
    day = discharge_at.astimezone(ZoneInfo(tz)).date()
    return list(_community_plans(day, high_risk, tz, has_pcp, cfg))


@lru_cache(maxsize=4096)
def _community_plans(
    day: date, high_risk: bool, tz: str, has_pcp: bool, cfg: FollowupConfig
) -> tuple[TaskPlan, ...]:
    # Noon: an instant of that local date (the deadlines below read only its date).
    discharge_at = datetime.combine(day, time(12), tzinfo=ZoneInfo(tz))
    priority: Priority = "urgent" if high_risk else "routine"
    contact_days = cfg.contact_business_days
    visit_days = cfg.visit_days_high if high_risk else cfg.visit_days_other
    pcp_days = cfg.pcp_notification_business_days
    visit_due = calendar_day_deadline(discharge_at, visit_days, tz)
    pcp_text = _business_days_text(pcp_days)
    if has_pcp:
        pcp_description = f"Notify the primary care provider of the discharge within {pcp_text}"
    else:
        pcp_description = (
            f"Identify the patient's primary care provider and notify them of the discharge "
            f"within {pcp_text} (no PCP on record)"
        )
    return (
        TaskPlan(
            kind=TaskKind.CONTACT,
            due=business_day_deadline(discharge_at, contact_days, tz, cfg.country),
            priority=priority,
            rule=f"tcm.contact.{contact_days}bd",
            description=(
                f"Interactive contact within {_business_days_text(contact_days)} "
                "of discharge (CMS TCM)"
            ),
        ),
        TaskPlan(
            kind=TaskKind.VISIT,
            due=visit_due,
            priority=priority,
            rule=f"tcm.visit.{visit_days}d",
            description=(
                f"Face-to-face visit within {visit_days} days of discharge "
                f"(CMS TCM, {'high' if high_risk else 'moderate'} complexity)"
            ),
        ),
        TaskPlan(
            kind=TaskKind.MED_REC,
            due=visit_due,
            priority="routine",
            rule="tcm.med_rec",
            description="Medication reconciliation no later than the face-to-face visit (CMS TCM)",
        ),
        TaskPlan(
            kind=TaskKind.PCP_NOTIFICATION,
            due=business_day_deadline(discharge_at, pcp_days, tz, cfg.country),
            priority="routine",
            rule="tcm.pcp_notification",
            description=pcp_description,
        ),
    )


def plan_followup(
    *,
    discharge_at: datetime,
    disposition: str | None,
    risk_level: str,
    tz: str,
    has_pcp: bool,
    cfg: FollowupConfig,
) -> tuple[DispositionClass, list[TaskPlan]]:
    """The follow-up tasks a discharge calls for, and the disposition class they follow.

    ``discharge_at``: aware discharge time (HL7 ``PV1-45``, FHIR ``Encounter.period.end``);
    ``disposition``: HL7 ``PV1-36`` or FHIR ``Encounter.hospitalization.dischargeDisposition``
    code (see :func:`classify_disposition`); ``risk_level``: the readmission-risk band
    (``"high"``, case-insensitive, selects the high-complexity rules); ``tz``: the
    facility's IANA time zone (its local dates are the ones that count); ``has_pcp``: a
    primary care provider is on record (HL7 ``PD1-4``, FHIR
    ``Patient.generalPractitioner``).

    * community, ama, and unknown (when ``cfg.unknown_disposition_is_community``): in this
      order, contact (``contact_business_days`` business days), visit (``visit_days_high``
      calendar days if high risk, else ``visit_days_other``), medication reconciliation
      (due with the visit), PCP notification (``pcp_notification_business_days``). The
      PCP task is planned even with no PCP on record, as "identify the PCP and notify":
      the patient needs one and TCM needs someone to do the visit. Contact and visit are
      ``urgent`` for a high-risk patient, otherwise every task is ``routine``.
    * post_acute or acute_transfer: one ``urgent`` handoff task due ``handoff_hours``
      of elapsed time after the discharge instant (in ``tz``; rule ``handoff.<class>``);
      no TCM.
    * death, hospice, and unknown otherwise: no tasks (the caller cancels open ones).

    The returned class is the classification itself (``ama``/``unknown`` are not
    rewritten to ``community``).
    """
    if discharge_at.tzinfo is None or discharge_at.utcoffset() is None:
        raise ValueError("discharge_at must be an aware datetime")
    cls = classify_disposition(disposition)
    community = cls in (DispositionClass.COMMUNITY, DispositionClass.AMA) or (
        cls is DispositionClass.UNKNOWN and cfg.unknown_disposition_is_community
    )
    if community:
        high_risk = risk_level.strip().lower() == "high"
        return cls, _community_tasks(discharge_at, high_risk, tz, has_pcp, cfg)
    if cls in (DispositionClass.POST_ACUTE, DispositionClass.ACUTE_TRANSFER):
        destination = (
            "post-acute facility"
            if cls is DispositionClass.POST_ACUTE
            else "receiving acute care hospital"
        )
        return cls, [
            TaskPlan(
                kind=TaskKind.HANDOFF,
                due=_after_hours(discharge_at, cfg.handoff_hours, tz),
                priority="urgent",
                rule=f"handoff.{cls.value}",
                description=f"Care handoff to the {destination} (no TCM outreach)",
            )
        ]
    return cls, []


def is_overdue(due: datetime, now: datetime, cfg: FollowupConfig) -> bool:
    """True once ``now`` is later than ``due`` plus ``cfg.escalate_after_hours`` (both
    aware; with the default 0 a task is overdue the moment its due time has passed)."""
    if due.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("due and now must be aware datetimes")
    return now.astimezone(UTC) > due.astimezone(UTC) + timedelta(hours=cfg.escalate_after_hours)
