"""HL7 v2 -> canonical agrees with the FHIR Bundles Microsoft FHIR-Converter expects.

For each ``corpus/pairs/fhir-converter`` input whose trigger the hub maps, compare with
the expected Bundle: patient identifiers, family/given names, birth date, sex, encounter
class, admit/discharge instants and current location.

Systematic differences, found by reading the expected Bundles (not bugs):

- Time zones. FHIR-Converter re-renders offset-bearing times in the converting machine's
  zone (``20150208113419+0110`` -> ``2015-02-08T15:54:19+05:30``) for the v2.8 samples,
  and keeps the sender's offset for others (``+0700`` in ADT04-23). The hub keeps the
  sender's offset, so instants are compared, not strings. A zone-less time is read as UTC
  by FHIR-Converter (docs pair: MSH-7 ``20200508131015`` -> Bundle.timestamp
  ``2020-05-08T13:10:15Z``), hence ``default_tz="UTC"`` here.
- Identifiers. FHIR-Converter also turns PID-2, PID-4, PID-19, GT1, IN2 and DB1 ids into
  Patient.identifier; the hub keeps PID-3 only (PID-2/4 as a fallback), so the hub's
  values must be a subset of the expected ones.
- Given names. FHIR-Converter adds XPN-14 style extras to ``given``; the hub's
  given + middle must be a prefix of the expected list.
- Location. FHIR-Converter builds a Location hierarchy from PV1-3 whose ``description``
  joins every PL component with ``--``; the hub's unit/room/bed/facility must all be
  parts of the active Encounter.location's description, and the unit its name.
- Expected discharge. When PV1-45 is empty FHIR-Converter fills Encounter.period.end
  from PV2-9 (expected discharge date: A04-01, A11-01, A16-02). The hub never reports a
  planned date as a discharge (follow-up tasks would start), so there ``discharge_at``
  must be empty.
- The V2-to-FHIR IG example writes ``birthDate`` with a time; only its date is compared.
- Merges (A40, A47) produce a Linkage (source = surviving id, historical = prior id)
  instead of a Patient; those are compared with ``merge``.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from mappers.hl7v2 import map_hl7v2, parse_message
from schemas.canonical import CanonicalEvent
from schemas.errors import MappingError

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HUB_CORPUS_DIR") or REPO.parent / "shared" / "corpus").resolve()
PAIRS = CORPUS / "pairs" / "fhir-converter"

pytestmark = pytest.mark.skipif(not PAIRS.is_dir(), reason=f"corpus not found at {CORPUS}")

CLASS_CODES = {"IMP": "inpatient", "EMER": "emergency", "AMB": "outpatient",
               "PRENC": "preadmit", "OBSENC": "observation"}


def pairs() -> list[Path]:
    if not PAIRS.is_dir():
        return []
    return sorted(PAIRS.rglob("*.hl7"))


def mapped(path: Path) -> list[CanonicalEvent] | None:
    try:
        return map_hl7v2(path.read_bytes(), received_at=datetime(2024, 1, 1, tzinfo=UTC),
                         default_tz="UTC")
    except MappingError as exc:
        assert exc.code.value == "unsupported_trigger", exc.code
        return None


def expected_bundle(path: Path) -> dict[str, Any]:
    target = path.with_name(path.name.removesuffix(".hl7") + "-expected.json")
    bundle: dict[str, Any] = orjson.loads(target.read_bytes())
    return bundle


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == kind]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def supported_pairs() -> list[Path]:
    return [p for p in pairs() if mapped(p) is not None]


def test_pairs_found() -> None:
    assert len(pairs()) >= 40
    assert len(supported_pairs()) >= 17


@pytest.mark.parametrize("path", supported_pairs(), ids=lambda p: p.name)
def test_pair(path: Path) -> None:
    events = mapped(path)
    assert events
    bundle = expected_bundle(path)
    if events[0].kind == "merge":
        compare_linkage(events, bundle)
        return
    (event,) = events
    (patient,) = resources(bundle, "Patient")
    compare_patient(event, patient)
    encounters = resources(bundle, "Encounter")
    if encounters:
        pv1 = parse_message(path.read_bytes()).first("PV1")
        discharge_sent = pv1 is not None and pv1.value(45, 1) is not None
        compare_encounter(event, encounters[0], bundle, discharge_sent)


def compare_patient(event: CanonicalEvent, patient: dict[str, Any]) -> None:
    ours = {i.value for i in event.patient.identifiers}
    theirs = {i.get("value") for i in patient.get("identifier", [])}
    assert ours <= theirs
    assert event.patient.mrn in theirs
    name = patient["name"][0]
    assert event.patient.family_name == name.get("family")
    given = name.get("given", [])
    assert event.patient.given_names == given[: len(event.patient.given_names)]
    if "birthDate" in patient:
        assert event.patient.birth_date == date.fromisoformat(patient["birthDate"][:10])
    assert event.patient.sex == patient.get("gender")


def compare_encounter(event: CanonicalEvent, encounter: dict[str, Any],
                      bundle: dict[str, Any], discharge_sent: bool) -> None:
    ours = event.encounter
    assert ours is not None
    assert ours.class_ == CLASS_CODES[encounter["class"]["code"]]
    period = encounter.get("period", {})
    assert ours.admit_at == (instant(period["start"]) if "start" in period else None)
    if discharge_sent:
        assert ours.discharge_at == instant(period["end"])
    else:  # FHIR-Converter's end, if any, is PV2-9 (expected discharge): not a discharge
        assert ours.discharge_at is None
    active = [loc for loc in encounter.get("location", []) if loc.get("status") == "active"]
    if not active:
        return
    ref = active[0]["location"]["reference"].split("/", 1)[1]
    (location,) = [r for r in resources(bundle, "Location") if r["id"] == ref]
    assert ours.location is not None
    assert ours.location.unit == location["name"]
    parts = set(location.get("description", location["name"]).split("--"))
    for value in (ours.location.unit, ours.location.room, ours.location.bed):
        assert value is None or value in parts
    if ours.location.facility != event.source.facility:  # PL-4 was sent
        assert ours.location.facility in parts


def compare_linkage(events: list[CanonicalEvent], bundle: dict[str, Any]) -> None:
    (linkage,) = resources(bundle, "Linkage")
    items = {i["type"]: i["resource"]["identifier"]["value"] for i in linkage["item"]}
    (event,) = events
    assert event.merge is not None
    assert event.patient.mrn == items["source"]
    assert event.merge.prior_mrn == items["historical"]


def test_docs_pair_reads_zone_less_times_as_utc() -> None:
    """FHIR-Converter's API example: zone-less MSH-7 becomes ``Z`` in the Bundle."""
    docs = CORPUS / "pairs" / "fhir-converter-docs"
    request = orjson.loads((docs / "Request_ADT_A01.json").read_bytes())
    result = orjson.loads((docs / "Expected_Response_ADT_A01.json").read_bytes())["result"]
    (event,) = map_hl7v2(request["InputDataString"].encode(),
                         received_at=datetime(2024, 1, 1, tzinfo=UTC), default_tz="UTC")
    assert event.recorded_at == instant(result["timestamp"])
    (patient,) = resources(result, "Patient")
    assert {i.value for i in event.patient.identifiers} <= {
        i["value"] for i in patient["identifier"]}


def test_v2_to_fhir_ig_pair() -> None:
    """The HL7 V2-to-FHIR IG's own ADT_A01 example: demographics agree."""
    ig = CORPUS / "pairs" / "v2-to-fhir-ig"
    (event,) = map_hl7v2((ig / "ADT_A01.hl7").read_bytes(),
                         received_at=datetime(2024, 1, 1, tzinfo=UTC))
    bundle = orjson.loads((ig / "FHIR_bundle.hl7_ADT_A01.json").read_bytes())
    (patient,) = resources(bundle, "Patient")
    compare_patient(event, patient)
