"""Every FHIR file of the shared corpus maps, or is rejected with the code named here.

The corpus lives beside the repository (``<repo>/../shared/corpus``) or where
``HUB_CORPUS_DIR`` points. Golden files (``golden/fhir/<dir>__<file>.jsonl``) pin the
full output of every file, events or the error object ``hub map`` would print;
regenerate them with ``UPDATE_GOLDEN=1 pytest tests/mappers/test_fhir_corpus.py``.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from mappers.fhir import map_fhir
from schemas.canonical import CanonicalEvent, EncounterClass, EventKind, dump_event
from schemas.errors import MappingError

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HUB_CORPUS_DIR") or REPO.parent / "shared" / "corpus").resolve()
FHIR = CORPUS / "fhir"
GOLDEN = Path(__file__).resolve().parent / "golden" / "fhir"
RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not FHIR.is_dir(), reason=f"FHIR corpus not found at {FHIR}")

# Files that must be rejected, with the reason. Everything else must map without error.
EXPECTED_REJECTIONS: dict[str, str] = {
    # A SubscriptionTopic (as an R4 Basic) and a Subscription: configuration, not events.
    "fhir-candle-r4/Basic-topic-encounter-complete.json": "unsupported_resource",
    "fhir-candle-r4/Subscription-encounter-complete.json": "unsupported_resource",
    # A MessageHeader on its own (not in a message Bundle) carries no resources.
    "r4-core-examples/MessageHeader-1cbdfb97-5859-48a4-8301-d54eab818d68.json":
        "unsupported_resource",
    # A dog (patient-animal extension): veterinary patients are out of scope.
    "r4-core-examples/Patient-animal.json": "unsupported_resource",
    # Identifier without system or assigner: the MRN cannot be scoped.
    "r4-core-examples/Patient-ihe-pcd.json": "missing_patient_identifier",
    # Only a Social Security number: never used as the patient key.
    "r4-core-examples/Patient-mom.json": "missing_patient_identifier",
    # No identifier at all.
    "r4-core-examples/Patient-newborn.json": "missing_patient_identifier",
    # A Condition alone has no admission to attach to.
    "us-core/condition-encounter-diagnosis-example1.json": "unsupported_resource",
    "us-core/condition-encounter-diagnosis-example2.json": "unsupported_resource",
}

# Files that are valid but mean "nothing happened": no events, no error.
EXPECTED_EMPTY = {"fhir-candle-r4/Bundle-notification-handshake.json"}


def _corpus_files() -> list[str]:
    if not FHIR.is_dir():
        return []
    return sorted(p.relative_to(FHIR).as_posix() for p in FHIR.rglob("*.json"))


def _map(rel: str) -> list[CanonicalEvent]:
    return map_fhir((FHIR / rel).read_bytes(), received_at=RECEIVED_AT)


def test_corpus_is_present() -> None:
    files = _corpus_files()
    assert len(files) >= 29
    assert set(EXPECTED_REJECTIONS) <= set(files)
    assert set(files) >= EXPECTED_EMPTY


@pytest.mark.parametrize("rel", _corpus_files())
def test_corpus_file_maps_or_is_rejected_as_expected(rel: str) -> None:
    expected = EXPECTED_REJECTIONS.get(rel)
    if expected is not None:
        with pytest.raises(MappingError) as err:
            _map(rel)
        assert err.value.code.value == expected
        return
    events = _map(rel)
    if rel in EXPECTED_EMPTY:
        assert events == []
        return
    assert events, f"{rel} mapped to no events"
    for event in events:
        assert event.source.format == "fhir"
        assert event.source.version == "4.0.1"
        assert event.patient.key == f"{event.patient.assigning_authority}|{event.patient.mrn}"
        assert event.occurred_at.tzinfo is not None and event.recorded_at.tzinfo is not None
    assert len({e.event_id for e in events}) == len(events)


@pytest.mark.parametrize("rel", _corpus_files())
def test_corpus_mapping_is_deterministic(rel: str) -> None:
    """Redelivery gives the same event ids (downstream dedup depends on it)."""
    if rel in EXPECTED_REJECTIONS:
        return
    assert [dump_event(e) for e in _map(rel)] == [dump_event(e) for e in _map(rel)]


def test_encounter_example() -> None:
    (event,) = _map("r4-core-examples/Encounter-example.json")
    assert event.kind is EventKind.ADMIT  # status in-progress
    assert event.trigger == "encounter-in-progress"
    assert event.encounter is not None
    assert event.encounter.class_ is EncounterClass.INPATIENT  # IMP
    assert event.encounter.id == "example"  # no identifier: the resource id
    # The Patient is not in the input: keyed by its logical id on the sending server.
    assert event.patient.key == "urn:fhir/Patient|example"
    assert event.patient.identifiers[0].type == "RI"
    assert event.occurred_at == RECEIVED_AT  # no meta, no period
    assert event.source.message_id == "Encounter/example"


def test_encounter_f201() -> None:
    (event,) = _map("r4-core-examples/Encounter-f201.json")
    assert event.kind is EventKind.DISCHARGE  # finished
    enc = event.encounter
    assert enc is not None
    assert enc.id == "Encounter_Roel_20130404"  # Encounter.identifier value
    assert enc.class_ is EncounterClass.OUTPATIENT  # AMB
    assert enc.admission_type == "R"  # SNOMED 17621005 "Normal" -> HL7 0007 routine
    assert enc.admit_at is None and enc.discharge_at is None  # no period
    assert event.patient.key == "urn:fhir/Patient|f201"


def test_encounter_f002_codes_kept() -> None:
    (event,) = _map("r4-core-examples/Encounter-f002.json")
    enc = event.encounter
    assert enc is not None
    assert enc.id == "v3251"
    assert enc.admit_source == "305997006"
    assert enc.discharge_disposition == "306689006"
    assert enc.admission_type == "U"  # SNOMED 103391001 Urgent
    assert event.source.facility == "BMC"  # serviceProvider.display
    assert enc.location is not None and enc.location.facility == "BMC"


def test_us_core_encounter_period_with_offset() -> None:
    (event,) = _map("us-core/encounter-example-1.json")
    enc = event.encounter
    assert enc is not None
    assert enc.admit_at is not None and enc.admit_at.isoformat() == "2015-11-01T17:00:14-05:00"
    assert enc.discharge_at is not None
    assert enc.discharge_at.isoformat() == "2015-11-01T18:00:14-05:00"
    assert enc.location is not None and enc.location.facility == "Holy Family Hospital"
    assert event.recorded_at.isoformat() == "2024-01-28T16:06:21-08:00"  # meta.lastUpdated


def test_davinci_admit_bundle() -> None:
    (event,) = _map("davinci-alerts/admit-notification-message-bundle-01.json")
    assert event.kind is EventKind.ADMIT
    assert event.trigger == "notification-admit"
    assert event.patient.key == "http://example.org/fhir/mrn|06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"
    assert event.patient.family_name == "Halvorson124"
    assert event.patient.given_names == ["Elden718"]
    assert event.patient.birth_date == date(2000, 10, 15)
    assert event.patient.sex == "male"
    assert event.patient.language == "en-US"
    # The SSN is neither the key nor copied.
    assert all(i.system != "http://hl7.org/fhir/sid/us-ssn" for i in event.patient.identifiers)
    enc = event.encounter
    assert enc is not None
    assert enc.class_ is EncounterClass.EMERGENCY
    assert enc.id == "Elden718Halvorson12420181021T2122150700"
    assert enc.admit_at is not None and enc.admit_at.isoformat() == "2018-10-21T21:22:15-07:00"
    assert enc.discharge_at is None  # status in-progress: period.end is not a discharge
    assert enc.location is not None and enc.location.facility == "HOLY FAMILY HOSPITAL"
    assert event.source.facility == "HOLY FAMILY HOSPITAL"
    assert event.source.system == "https://example.org/Endpoints/P456"
    assert event.source.message_id == "admit-notification-message-bundle-01"
    assert event.occurred_at.isoformat() == "2020-08-17T17:15:12.011868+00:00"
    assert [d.code for d in event.diagnoses] == ["1234"]
    assert event.diagnoses[0].type == "encounter-diagnosis"
    assert [(c.payer_name, c.payer_id) for c in event.coverage] == [
        ("Blue Cross Blue Shield", "0000010005")  # payor Organization NPI
    ]


def test_davinci_translate_bundle_without_coverage() -> None:
    (event,) = _map("davinci-alerts/admit-notification-intermediate-translate-bundle.json")
    assert event.kind is EventKind.ADMIT
    assert event.coverage == []  # the intermediary removed it (see its Provenance)


def test_message_bundle_with_patient_focus_gives_updates() -> None:
    events = _map("r4-core-examples/Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json")
    assert [(e.kind, e.trigger, e.patient.mrn) for e in events] == [
        (EventKind.UPDATE, "patient-link", "654321"),
        (EventKind.UPDATE, "patient-link", "123456"),
    ]
    assert events[0].source.system == "http://acme.com/ehr/fhir"


def test_patient_example_demographics() -> None:
    (event,) = _map("r4-core-examples/Patient-example.json")
    p = event.patient
    assert event.kind is EventKind.UPDATE and event.encounter is None
    assert p.key == "urn:oid:1.2.36.146.595.217.0.1|12345"
    assert (p.family_name, p.given_names) == ("Chalmers", ["Peter", "James"])  # official
    assert p.birth_date == date(1974, 12, 25)
    assert p.address is not None and p.address.city == "PleasantVille"
    assert p.phone == "(03) 5555 6473"  # rank 1
    assert p.deceased is False


def test_us_core_patient_current_name_and_address() -> None:
    (event,) = _map("us-core/patient-example.json")
    p = event.patient
    assert p.family_name == "Baxter"  # "old" Shaw skipped
    assert p.address is not None and p.address.line == ["183 MOUNTAIN VIEW ST"]
    assert p.language == "es"


def _golden_lines(rel: str) -> list[dict[str, Any]]:
    try:
        return [dump_event(e) for e in _map(rel)]
    except MappingError as exc:
        return [{**exc.as_dict(), "file": rel}]


@pytest.mark.parametrize("rel", _corpus_files())
def test_golden(rel: str) -> None:
    path = GOLDEN / (rel.replace("/", "__").removesuffix(".json") + ".jsonl")
    lines = _golden_lines(rel)
    text = "".join(orjson.dumps(line, option=orjson.OPT_SORT_KEYS).decode() + "\n"
                   for line in lines)
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text
