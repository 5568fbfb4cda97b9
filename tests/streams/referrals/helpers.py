"""Builders for referral tests: canonical events, directories, contexts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.canonical import (
    Address,
    CanonicalEvent,
    Diagnosis,
    Encounter,
    EncounterClass,
    EventKind,
    Location,
    Patient,
    Source,
    derive_id,
    patient_key,
)
from streams.care.roster import parse_roster
from streams.referrals.config import ReferralsConfig
from streams.referrals.directory import parse_directory
from streams.referrals.engine import ReferralContext

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MRN = "MRN-UNIQUE-7731"
KEY = patient_key("GENHOSP", MRN)

DIRECTORY = """
agencies:
  - id: housing-a
    name: Housing A
    services: [housing]
    service_area: {zip: ["01103", "01104"]}
    languages: [en, es]
    delivery: {webhook: {url: "https://a.example/hook", secret_env: HOUSING_A_SECRET}}
    contact: {phone: "+1-413-555-0100"}
  - id: housing-b
    name: Housing B
    services: [housing]
    service_area: {counties: [Hampden]}
  - id: pantry
    name: Pantry
    services: [food]
    service_area: {zip: ["01103"]}
  - id: mind
    name: Mind Center
    services: [behavioral-health]
  - id: home-care
    name: Home Care
    services: [home-health]
    service_area: {}
    languages: [en]
"""

ROSTER = """
teams:
  - {id: medsurg, facility: GENHOSP, supervisor: sup-lee, name: Med-surg team}
managers:
  - id: cm-ana
    name: Ana Ruiz
    teams: [medsurg]
    cap_points: 20
    timezone: America/New_York
    phone: "+1-413-555-0111"
    email: ana@hospital.example
  - id: sup-lee
    name: Lee Park
    teams: [medsurg]
    cap_points: 5
    timezone: America/New_York
    phone: "+1-413-555-0199"
"""


def ctx(directory: str = DIRECTORY, **cfg: Any) -> ReferralContext:
    return ReferralContext(config=ReferralsConfig(**cfg), directory=parse_directory(directory),
                           roster=parse_roster(ROSTER))


def event(kind: EventKind = EventKind.ADMIT, *, n: int = 1, at: datetime = T0,
          dx: tuple[str, ...] = ("Z59.01",), cls: EncounterClass = EncounterClass.INPATIENT,
          visit: str = "V1", postal: str | None = "01103", county: str | None = None,
          language: str | None = "es", protection: bool | None = None,
          discharge_at: datetime | None = None, disposition: str | None = None,
          deceased: bool | None = None, trigger: str = "A01") -> CanonicalEvent:
    return CanonicalEvent(
        event_id=derive_id("test-event", n, kind.value, visit),
        kind=kind, trigger=trigger, occurred_at=at, recorded_at=at,
        source=Source(format="hl7v2", facility="GENHOSP", message_id=f"M{n}"),
        patient=Patient(
            key=KEY, mrn=MRN, assigning_authority="GENHOSP", family_name="ZEBULONSKI",
            given_names=["QUINCEY"], birth_date=date(1961, 4, 5), sex="female",
            address=Address(line=["12 ELM ST"], city="SPRINGFIELD", state="MA",
                            postal_code=postal, county=county),
            phone="(413)555-0142", language=language, protection_indicator=protection,
            deceased=deceased),
        encounter=Encounter(id=visit, class_=cls, admit_at=T0, discharge_at=discharge_at,
                            discharge_disposition=disposition,
                            location=Location(facility="GENHOSP", unit="4WEST")),
        diagnoses=[Diagnosis(code=c, system="I10") for c in dx],
    )


def discharge(n: int = 2, *, at: datetime | None = None, disposition: str = "01",
              **kw: Any) -> CanonicalEvent:
    when = at or T0 + timedelta(days=3)
    return event(EventKind.DISCHARGE, n=n, at=when, discharge_at=when, disposition=disposition,
                 trigger="A03", **kw)
