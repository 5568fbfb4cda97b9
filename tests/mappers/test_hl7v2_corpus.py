"""Every HL7 v2 file of the shared corpus maps, or is rejected with the code named here.

The corpus lives beside the repository (``<repo>/../shared/corpus``; CI clones the repo
into a temporary directory with ``shared/`` next to it) or where ``HUB_CORPUS_DIR``
points. Golden files pin the full canonical output of a representative set; regenerate
them with ``UPDATE_GOLDEN=1 pytest tests/mappers/test_hl7v2_corpus.py``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from mappers.hl7v2 import map_hl7v2, parse_message, read_header, split_messages
from schemas.canonical import CanonicalEvent, dump_event
from schemas.errors import MappingError

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HUB_CORPUS_DIR") or REPO.parent / "shared" / "corpus").resolve()
GOLDEN = Path(__file__).resolve().parent / "golden" / "hl7v2"
RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")

UNSUPPORTED_TRIGGER = "unsupported_trigger"

# Files that must be rejected, with the code for each message in the file (in order).
# Everything else under corpus/hl7v2 and corpus/pairs must map without error.
EXPECTED_REJECTIONS: dict[str, list[str]] = {
    # 18 non-ADT messages (ORU, BAR, ACK, ORM, QRY) with odd encoding characters.
    "hl7v2/hapi-hl7v2/util_messages.txt": ["unsupported_message_type"] * 18,
    # ADT triggers the hub does not map (A15 pending transfer, A45 move visit,
    # A60 allergy update).
    "hl7v2/emap-uclh/Adt/generic/A45.txt": [UNSUPPORTED_TRIGGER],
    "hl7v2/emap-uclh/Adt/pending/A15.txt": [UNSUPPORTED_TRIGGER],
    "hl7v2/emap-uclh/Adt/pending/A15_null_pending_location.txt": [UNSUPPORTED_TRIGGER],
    "hl7v2/emap-uclh/PatientAllergies/2019_05_multiple_allergies.txt": [UNSUPPORTED_TRIGGER],
    # HL7 v2.2 (the hub supports 2.3 to 2.8).
    "hl7v2/ipf/camel-hl7-message_msg-01-utf8.hl7": ["unsupported_version"],
    "hl7v2/ipf/modules-hl7_msg-01.hl7": ["unsupported_version"],
    # An A01 with MSH, EVN and PV1 but no PID: nobody to admit.
    "hl7v2/ipf/mllp-iti8_iti8-a01-incomplete.hl7": ["missing_segment"],
    # FHIR-Converter samples of triggers the hub does not map: A09/A10 patient
    # departing/arriving (tracking), A14 pending admit, A15 pending transfer, A25-A27
    # pending-event cancels, A29 delete person, A41 merge account, A45 move visit,
    # A60 allergy update.
    **{
        f"pairs/fhir-converter/ADT_{t}/ADT-{t}-{n}.hl7": [UNSUPPORTED_TRIGGER]
        for t, n in [
            ("A09", "01"), ("A09", "02"), ("A10", "01"), ("A10", "02"), ("A14", "01"),
            ("A14", "02"), ("A15", "01"), ("A15", "02"), ("A25", "01"), ("A25", "02"),
            ("A26", "01"), ("A26", "02"), ("A27", "01"), ("A27", "02"), ("A29", "01"),
            ("A29", "02"), ("A41", "01"), ("A41", "02"), ("A45", "02"), ("A60", "01"),
            ("A60", "02"),
        ]
    },
}


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    files = [p for sub in ("hl7v2", "pairs") for p in (CORPUS / sub).rglob("*")
             if p.is_file() and p.suffix in (".hl7", ".txt")]
    return sorted(files)


def rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def map_file(data: bytes, default_tz: str = "UTC") -> list[list[CanonicalEvent] | str]:
    """Per message: its events, or the error code it was rejected with."""
    out: list[list[CanonicalEvent] | str] = []
    for raw in split_messages(data):
        try:
            out.append(map_hl7v2(raw, received_at=RECEIVED_AT, default_tz=default_tz))
        except MappingError as exc:
            out.append(exc.code.value)
    return out


def test_corpus_is_complete() -> None:
    files = corpus_files()
    assert len(files) >= 100, f"expected the whole corpus, found {len(files)} files"
    names = {rel(p) for p in files}
    stale = set(EXPECTED_REJECTIONS) - names
    assert not stale, f"expected rejections name files that do not exist: {stale}"


@pytest.mark.parametrize("path", corpus_files(), ids=rel)
def test_corpus_file(path: Path) -> None:
    results = map_file(path.read_bytes())
    assert results, "no message found in the file"
    expected = EXPECTED_REJECTIONS.get(rel(path))
    if expected is not None:
        assert results == expected
        return
    for raw, result in zip(split_messages(path.read_bytes()), results, strict=True):
        assert not isinstance(result, str), f"rejected with {result}"
        assert result, "a mapped message gave no event"
        header = read_header(raw)
        for event in result:
            check_event(event, header.control_id)


def check_event(event: CanonicalEvent, control_id: str | None) -> None:
    assert event.source.format == "hl7v2"
    assert event.source.message_id == control_id
    assert event.patient.key == f"{event.patient.assigning_authority}|{event.patient.mrn}"
    assert event.occurred_at.tzinfo is not None and event.recorded_at.tzinfo is not None
    if event.kind == "merge":
        assert event.merge is not None
    wire = dump_event(event)
    assert CanonicalEvent.model_validate(wire) == event  # the wire form round-trips


def test_embedded_fhir_converter_request() -> None:
    """The HL7 inside the FHIR-Converter API request maps (LF separators, v2.3)."""
    request = orjson.loads((CORPUS / "pairs/fhir-converter-docs/Request_ADT_A01.json")
                           .read_bytes())
    events = map_hl7v2(request["InputDataString"].encode(), received_at=RECEIVED_AT)
    assert [e.trigger for e in events] == ["A01"]
    assert events[0].patient.mrn == "3735064194"
    assert events[0].recorded_at == datetime(2020, 5, 8, 13, 10, 15, tzinfo=UTC)


# ----------------------------------------------------------------- specific quirks


def events_of(name: str, default_tz: str = "UTC") -> list[CanonicalEvent]:
    results = map_file((CORPUS / name).read_bytes(), default_tz)
    out: list[CanonicalEvent] = []
    for r in results:
        assert not isinstance(r, str), r
        out.extend(r)
    return out


def test_batch_file_gives_both_messages() -> None:
    events = events_of("hl7v2/extracted/python-hl7_sample_batch1.hl7")
    assert [e.source.message_id for e in events] == ["12334456778890", "12334456778891"]
    assert all(e.kind == "register" for e in events)


def test_a40_repeating_mrg_prefers_patient_domain() -> None:
    (event,) = events_of("hl7v2/ipf/mllp-iti8_iti8-a40.hl7")
    assert event.kind == "merge"
    assert event.patient.key == "MPI-NS-P|305014"
    assert event.merge is not None
    assert event.merge.prior_mrn == "305010"
    assert event.merge.prior_patient_key == "MPI-NS-P|305010"


def test_explicit_null_identifier_is_skipped() -> None:
    (event,) = events_of("hl7v2/ipf/pixsource-v2_A01.hl7")
    assert event.patient.key == "MPI|306563"
    assert '""' not in [i.value for i in event.patient.identifiers]


def test_escape_in_admit_source() -> None:
    (event,) = events_of("pairs/fhir-converter/ADT_A02/ADT-A02-02.hl7")
    assert event.encounter is not None
    assert event.encounter.admit_source == "NHS Provider-General (inc.A&E-this Hosp)"


def test_msh9_trigger_wins_over_stale_evn1() -> None:
    (event,) = events_of("pairs/fhir-converter/ADT_A13/ADT-A13-01.hl7")
    assert event.trigger == "A13" and event.kind == "cancel_discharge"


def test_bom_file_maps() -> None:
    (event,) = events_of("pairs/fhir-converter/ADT_A04/ADT04-23.hl7")
    assert event.source.system == "NES" and event.source.version == "2.3"


def test_linuxforhealth_java_string_quirks() -> None:
    for name in ("hl7v2/linuxforhealth/sample_unix.hl7", "hl7v2/linuxforhealth/sample_win.hl7"):
        (event,) = events_of(name)
        assert event.patient.mrn == "PID1234"
        assert event.source.version == "2.6"


def test_utf8_umlauts_decode() -> None:
    msg = parse_message((CORPUS / "hl7v2/ipf/camel-hl7-message_msg-01-utf8.hl7").read_bytes())
    pid = msg.first("PID")
    assert pid is not None and pid.value(5, 1) == "Nächname"


def test_non_ascii_apostrophe() -> None:
    msg = parse_message((CORPUS / "hl7v2/extracted/elixir-hl7_wikipedia_ADT_A01.hl7")
                        .read_bytes())
    pid = msg.first("PID")
    assert pid is not None and pid.value(11, 1, rep=1) == "NICKELL\u2019S PICKLES"


def test_discharge_with_diagnoses_and_disposition() -> None:
    (event,) = events_of("hl7v2/extracted/elixir-hl7_nist_syndromic_ADT_A03.hl7")
    assert [d.code for d in event.diagnoses] == ["0074", "27651", "78791"]
    assert {d.system for d in event.diagnoses} == {"I9CDX"}
    assert event.encounter is not None and event.encounter.discharge_disposition == "09"
    # PID-3 has no CX-4: the authority falls back to MSH-4.1.
    assert event.patient.key == "LakeMichMC|33333"


def test_zone_less_times_take_the_feed_zone() -> None:
    (event,) = events_of("hl7v2/emap-uclh/Adt/generic/A01.txt", "Europe/London")
    assert event.occurred_at.tzinfo is not None
    assert event.occurred_at.utcoffset() is not None


# ----------------------------------------------------------------- golden files

GOLDEN_FILES = [
    "hl7v2/emap-uclh/Adt/DoubleA01WithA13/A03.txt",  # A03 with a Z-segment (ZLW)
    "hl7v2/emap-uclh/Adt/generic/A40.txt",
    "hl7v2/emap-uclh/Adt/generic/A13.txt",
    "hl7v2/extracted/python-hl7_sample_batch1.hl7",  # BHS/BTS batch of two
    "hl7v2/extracted/elixir-hl7_nist_syndromic_ADT_A03.hl7",  # DG1 x3, PV1-36
    "hl7v2/hapi-hl7v2/docs_examples_ADT_A01.txt",
    "hl7v2/ipf/mllp-iti8_iti8-a40.hl7",  # repeating MRG-1
    "hl7v2/ipf/pixsource-v2_A01.hl7",  # explicit nulls
    "hl7v2/linuxforhealth/sample_unix.hl7",  # MSH-2 "^~\\&", literal "\r"
    "pairs/fhir-converter/ADT_A01/ADT-A01-01.hl7",  # v2.8, everything filled
    "pairs/fhir-converter/ADT_A02/ADT-A02-02.hl7",  # \T\ escape
    "pairs/fhir-converter/ADT_A04/ADT04-23.hl7",  # UTF-8 BOM, v2.3
    "pairs/fhir-converter/ADT_A47/ADT-A47-01.hl7",
    "pairs/v2-to-fhir-ig/ADT_A01.hl7",
]
# Inputs written for this test suite (the corpus has no multi-group A40).
LOCAL_INPUTS = ["a40_two_groups.hl7"]


def golden_name(name: str) -> str:
    return name.replace("/", "__").rsplit(".", 1)[0] + ".jsonl"


def render(data: bytes) -> bytes:
    lines = []
    for result in map_file(data, default_tz="Europe/London"):
        if isinstance(result, str):
            lines.append(orjson.dumps({"error": result}))
        else:
            lines.extend(orjson.dumps(dump_event(e)) for e in result)
    return b"\n".join(lines) + b"\n"


def golden_cases() -> list[tuple[str, Path]]:
    cases = [(n, CORPUS / n) for n in GOLDEN_FILES]
    cases += [(n, GOLDEN / "inputs" / n) for n in LOCAL_INPUTS]
    return cases


@pytest.mark.parametrize(("name", "source"), golden_cases(), ids=[n for n, _ in golden_cases()])
def test_golden(name: str, source: Path) -> None:
    got = render(source.read_bytes())
    target = GOLDEN / golden_name(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        target.write_bytes(got)
    assert target.exists(), f"missing golden file {target.name}; run with UPDATE_GOLDEN=1"
    want = target.read_bytes()
    assert [orjson.loads(x) for x in got.splitlines()] == [
        orjson.loads(x) for x in want.splitlines()
    ]
