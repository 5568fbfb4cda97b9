"""``hub map`` (hub.commands.map_cmd.run_map): JSON Lines shape, errors, exit status."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.commands.map_cmd import run_map
from schemas.canonical import CanonicalEvent

A01 = (b"MSH|^~\\&|APP|FAC|R|RF|20240301101500||ADT^A01|C1|P|2.5.1\r"
       b"EVN|A01|20240301101500\rPID|1||123^^^HOSP^MR||Doe^Jane||19800101|F\rPV1|1|I|W^1^2\r")
A40 = (b"MSH|^~\\&|APP|FAC|R|RF|20240301101500||ADT^A40|C2|P|2.5.1\r"
       b"PID|1||1^^^H^MR\rMRG|2^^^H^MR\rPID|1||1^^^H^MR\rMRG|3^^^H^MR\r")
ORU = b"MSH|^~\\&|LAB|FAC|R|RF|20240301||ORU^R01|C3|P|2.5.1\rPID|1||1\r"


def run(paths: list[Path | str], tz: str = "UTC") -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    status = run_map([str(p) for p in paths], default_tz=tz, out=out)
    text = out.getvalue()
    assert text.endswith("\n") or text == ""
    return status, [orjson.loads(line) for line in text.splitlines()]


def test_success_prints_one_event_per_line(tmp_path: Path) -> None:
    f = tmp_path / "a.hl7"
    f.write_bytes(A01.replace(b"\r", b"\n") + A40)
    status, lines = run([f])
    assert status == 0
    assert [line["kind"] for line in lines] == ["admit", "merge", "merge"]
    for line in lines:
        CanonicalEvent.model_validate(line)  # the contract, field for field
        assert "error" not in line
    assert list(lines[0])[:5] == ["event_id", "kind", "trigger", "occurred_at", "recorded_at"]
    assert lines[0]["encounter"]["class"] == "inpatient"  # wire name, not class_


def test_output_is_compact_json(tmp_path: Path) -> None:
    f = tmp_path / "a.hl7"
    f.write_bytes(A01)
    out = io.StringIO()
    run_map([str(f)], default_tz="UTC", out=out)
    assert ", " not in out.getvalue() and '": ' not in out.getvalue()


def test_rejected_message_gives_error_object_and_status_1(tmp_path: Path) -> None:
    f = tmp_path / "mixed.hl7"
    f.write_bytes(b"garbage before MSH\r" + A01 + ORU)
    status, lines = run([f])
    assert status == 1
    assert lines[0]["error"] == "missing_msh" and lines[0]["index"] == 0
    assert "message_id" not in lines[0]
    assert lines[1]["kind"] == "admit"
    assert lines[2] == {"error": "unsupported_message_type", "detail": lines[2]["detail"],
                        "file": str(f), "index": 2, "message_id": "C3"}
    assert "garbage" not in lines[0]["detail"]  # details never quote content


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"\n\n")
    status, lines = run([tmp_path / "missing.hl7", empty, tmp_path])
    assert status == 1
    assert [line["error"] for line in lines] == ["unreadable_file", "empty_message",
                                                 "unreadable_file"]
    assert all(isinstance(line["detail"], str) and line["detail"] for line in lines)


def test_fhir_json_goes_to_the_fhir_mapper(tmp_path: Path) -> None:
    f = tmp_path / "enc.json"
    f.write_bytes(b'\n  {"resourceType": "Basic"}')
    status, lines = run([f])
    assert status == 1
    (line,) = lines
    assert line["file"] == str(f) and line["index"] == 0
    # FHIR mappers absent -> unsupported_resource; present -> their own code for Basic.
    assert line["error"] in ("unsupported_resource", "invalid_resource")


def test_default_tz_applies(tmp_path: Path) -> None:
    f = tmp_path / "a.hl7"
    f.write_bytes(A01)
    _, lines = run([f], tz="America/New_York")
    assert lines[0]["recorded_at"] == "2024-03-01T10:15:00-05:00"


def test_mllp_framed_batch(tmp_path: Path) -> None:
    f = tmp_path / "framed.hl7"
    f.write_bytes(b"\x0b" + A01 + b"\x1c\r" + b"\x0b" + A01.replace(b"C1", b"C9") + b"\x1c\r")
    status, lines = run([f])
    assert status == 0
    assert [line["source"]["message_id"] for line in lines] == ["C1", "C9"]


@pytest.mark.parametrize("junk", [b"\x00\xff\xfe", b"MSH|", b"{not json"])
def test_junk_never_crashes(tmp_path: Path, junk: bytes) -> None:
    f = tmp_path / "junk"
    f.write_bytes(junk)
    status, lines = run([f])
    assert status == 1 and len(lines) == 1 and "error" in lines[0]
