"""ACK builder: every ACK re-parses (our header reader and hl7apy) with MSA-2 = MSH-10."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers.hl7v2 import read_header
from mappers.hl7v2.ack import ack_mode, build_ack
from schemas.errors import AckCode, ErrorCode, MappingError

NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Header:
    """Just the fields build_ack reads (structural type HeaderLike)."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str | None = "EPIC"
    sending_facility: str | None = "GENHOSP"
    receiving_application: str | None = "HUB"
    receiving_facility: str | None = "CM"
    trigger: str | None = "A01"
    control_id: str | None = "MSG00001"
    processing_id: str | None = "P"
    version: str | None = "2.5.1"
    accept_ack_type: str | None = None
    application_ack_type: str | None = None
    charset: str | None = None


def inbound(
    *,
    fs: str = "|",
    enc: str = "^~\\&",
    control_id: str = "MSG00001",
    version: str = "2.5.1",
    trigger: str = "A01",
    msh15: str = "",
    msh16: str = "",
    sending: tuple[str, str] = ("EPIC", "GENHOSP"),
) -> bytes:
    c = enc[0]
    msh = fs.join(
        [
            "MSH", enc, sending[0], sending[1], "HUB", "CM", "20260301120000", "",
            f"ADT{c}{trigger}{c}ADT_A01", control_id, "P", version, "", "", msh15, msh16,
        ]
    )
    pid = fs.join(["PID", "1", "", f"12345{c}{c}{c}MRN{c}MR"])
    return f"{msh}\rEVN{fs}{trigger}{fs}20260301120000\r{pid}\r".encode()


def test_original_mode_aa() -> None:
    raw = inbound()
    ack = build_ack(read_header(raw), AckCode.AA, now=NOW, ack_control_id="ACK1")
    segs = ack.decode().split("\r")
    assert segs[0] == "MSH|^~\\&|HUB|CM|EPIC|GENHOSP|20260301123005+0000||ACK^A01^ACK|ACK1|P|2.5.1"
    assert segs[1] == "MSA|AA|MSG00001"
    assert segs[2:] == [""]
    assert ack_mode(read_header(raw)) == "original"


def test_error_carries_code_and_detail_never_values() -> None:
    err = MappingError(ErrorCode.MISSING_PATIENT_IDENTIFIER, "PID-3 has no identifier",
                       position="PID-3")
    ack = build_ack(read_header(inbound()), AckCode.AE, now=NOW, ack_control_id="A2", error=err)
    text = ack.decode()
    assert "MSA|AE|MSG00001" in text
    assert "ERR||PID^1^3|101^Required field missing^HL70357|E|missing_patient_identifier^^99HUB|||PID-3 has no identifier" in text  # noqa: E501
    assert "12345" not in text


def test_legacy_version_uses_err1() -> None:
    err = MappingError(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, "ORU is not an ADT message")
    ack = build_ack(read_header(inbound(version="2.3")), AckCode.AR, now=NOW,
                    ack_control_id="A3", error=err)
    segs = ack.decode().split("\r")
    assert segs[0].split("|")[8] == "ACK^A01"
    assert segs[1] == "MSA|AR|MSG00001|ORU is not an ADT message"
    assert segs[2] == "ERR|^^^200&Unsupported message type&HL70357"
    parse_message(ack.decode(), find_groups=False)


def test_minimal_ack_without_header() -> None:
    err = MappingError(ErrorCode.MISSING_MSH, "no MSH segment")
    ack = build_ack(None, AckCode.AR, now=NOW, ack_control_id="A4", error=err)
    segs = ack.decode().split("\r")
    assert segs[1] == "MSA|AR|"
    assert segs[2].startswith("ERR||")
    msg = parse_message(ack.decode(), find_groups=False)
    assert msg.msa.msa_1.value == "AR"
    assert read_header(ack).control_id == "A4"


def test_enhanced_mode_detected() -> None:
    assert ack_mode(read_header(inbound(msh15="AL"))) == "enhanced"
    assert ack_mode(read_header(inbound(msh16="ER"))) == "enhanced"
    assert ack_mode(None) == "original"


def test_non_default_delimiters_echoed() -> None:
    raw = inbound(fs="#", enc="$~!@")
    ack = build_ack(read_header(raw), AckCode.CA, now=NOW, ack_control_id="A|5")
    text = ack.decode()
    assert text.startswith("MSH#$~!@#HUB#CM#EPIC#GENHOSP#")
    h = read_header(ack)
    assert h.control_id in ("A|5",)
    assert text.split("\r")[1] == "MSA#CA#MSG00001"


# -- properties ---------------------------------------------------------------------

ids = st.text(alphabet=string.ascii_letters + string.digits + "-._", min_size=1, max_size=20)
names = st.text(alphabet=string.ascii_uppercase + string.digits + " ", min_size=1, max_size=15)
versions = st.sampled_from(["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"])
codes = st.sampled_from(list(AckCode))
errors = st.one_of(
    st.none(),
    st.builds(
        MappingError,
        st.sampled_from(list(ErrorCode)),
        st.text(alphabet=string.printable, max_size=60),
        position=st.one_of(st.none(), st.sampled_from(["PID-3", "PV1-19", "MSH-9", "EVN"])),
    ),
)
delims = st.sampled_from([("|", "^~\\&"), ("#", "$~!@"), ("|", "^~\\&#")])


@settings(max_examples=150, deadline=None)
@given(control_id=ids, version=versions, code=codes, error=errors, trigger=st.sampled_from(
    ["A01", "A03", "A08", "A40"]), app=names, fac=names, d=delims, ack_id=ids)
def test_every_ack_reparses_with_msa2_equal_msh10(
    control_id: str, version: str, code: AckCode, error: MappingError | None, trigger: str,
    app: str, fac: str, d: tuple[str, str], ack_id: str,
) -> None:
    raw = inbound(fs=d[0], enc=d[1], control_id=control_id, version=version, trigger=trigger,
                  sending=(app, fac))
    header = read_header(raw)
    ack = build_ack(header, code, now=NOW, ack_control_id=ack_id, error=error)
    assert b"\n" not in ack and ack.endswith(b"\r")
    back = read_header(ack)
    assert back.control_id == ack_id
    assert back.message_type == "ACK"
    assert back.version == version
    assert back.sending_facility == header.receiving_facility
    assert back.receiving_facility == header.sending_facility
    fs = d[0]
    msa = next(s for s in ack.decode().split("\r") if s.startswith("MSA"))
    assert msa.split(fs)[1] == code.value
    assert msa.split(fs)[2] == control_id
    if error is not None:
        assert any(s.startswith("ERR") for s in ack.decode().split("\r"))
    if d == ("|", "^~\\&") and version in SUPPORTED_LIBRARIES:
        msg = parse_message(ack.decode(), find_groups=False)
        assert msg.msa.msa_2.value == control_id
        assert msg.msh.msh_10.value == ack_id


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.5", "2.8"])
def test_hl7apy_reads_err(version: str) -> None:
    err = MappingError(ErrorCode.TRUNCATED_SEGMENT, "segment PV1 ends early", position="PV1")
    ack = build_ack(read_header(inbound(version=version)), AckCode.AE, now=NOW,
                    ack_control_id="X", error=err)
    msg = parse_message(ack.decode(), find_groups=False)
    assert msg.err is not None
