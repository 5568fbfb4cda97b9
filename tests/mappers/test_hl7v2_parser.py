"""Unit tests of the HL7 v2 parser wrapper, header reader and file splitter."""

from __future__ import annotations

import pytest

from mappers.hl7v2 import parse_message, read_header, split_messages
from mappers.hl7v2.parser import (
    _CHARSETS,
    Encoding,
    charset_codec,
    codec_exists,
    unescape,
    validate_with_hl7apy,
)
from schemas.errors import ErrorCode, MappingError

MSH = b"MSH|^~\\&|APP|FAC|RAPP|RFAC|20240301101500||ADT^A01^ADT_A01|CTRL1|P|2.5.1"
PID = b"PID|1||123^^^HOSP^MR||Doe^Jane^Q||19800101|F"


def msg(*segments: bytes, sep: bytes = b"\r") -> bytes:
    return sep.join(segments) + sep


def code_of(raw: bytes) -> ErrorCode:
    with pytest.raises(MappingError) as info:
        parse_message(raw)
    return info.value.code


# ------------------------------------------------------------------ separators


@pytest.mark.parametrize("sep", [b"\r", b"\n", b"\r\n"])
def test_segment_separators(sep: bytes) -> None:
    m = parse_message(msg(MSH, PID, sep=sep))
    assert [s.id for s in m.segments] == ["MSH", "PID"]
    pid = m.first("PID")
    assert pid is not None and pid.value(5, 2) == "Jane"


def test_bom_mllp_and_blank_lines() -> None:
    raw = b"\x0b\xef\xbb\xbf" + msg(MSH, b"", PID, b"  ") + b"\x1c\r"
    m = parse_message(raw)
    assert [s.id for s in m.segments] == ["MSH", "PID"]


def test_literal_backslash_r_separates_segments() -> None:
    raw = MSH + b"\\r" + PID + b"\\r"
    assert [s.id for s in parse_message(raw).segments] == ["MSH", "PID"]


def test_msh_field_numbering() -> None:
    msh = parse_message(msg(MSH)).msh
    assert msh.value(1) == "|" and msh.value(2) == "^~\\&"
    assert msh.value(3) == "APP" and msh.value(9, 2) == "A01" and msh.value(12) == "2.5.1"


# ------------------------------------------------------------------ encoding characters


def test_non_default_encoding_characters() -> None:
    raw = msg(b"MSH#*!@$|APP|FAC|||2024||ADT*A01|C1|P|2.5".replace(b"|", b"#"),
              b"PID#1##123***HOSP*MR!456***X##Doe*Jane")
    m = parse_message(raw)
    pid = m.first("PID")
    assert m.encoding == Encoding("#", "*", "!", "@", "$")
    assert pid is not None
    assert pid.value(3, 1, rep=1) == "456" and pid.value(5, 2) == "Jane"


def test_three_character_encoding() -> None:
    m = parse_message(msg(b"MSH|^~}|A|F|||2024||BAR^P01|C|P|2.4", b"PID|1||12^^^H"))
    assert m.encoding.subcomponent == "" and m.encoding.escape == "}"
    pid = m.first("PID")
    assert pid is not None and pid.value(3, 4) == "H"


def test_doubled_backslash_msh2() -> None:
    m = parse_message(msg(b"MSH|^~\\\\&|A|F|||2024||ADT^A01|C|P|2.6", PID))
    assert m.encoding == Encoding()


@pytest.mark.parametrize("msh", [
    b"MSH|^~|A|F",  # too short
    b"MSH|^^\\&|A|F|||2024||ADT^A01|C|P|2.5",  # repeated
    b"MSH|^~\\&&|A|F|||2024||ADT^A01|C|P|2.5",  # truncation character reused
    b"MSHA^~\\&",  # alphanumeric field separator
    b"MSH|^~a&|A|F|||2024||ADT^A01|C|P|2.5",  # letter
])
def test_bad_encoding_characters(msh: bytes) -> None:
    assert code_of(msg(msh, PID)) == ErrorCode.BAD_ENCODING_CHARACTERS


# ------------------------------------------------------------------ escapes and nulls


@pytest.mark.parametrize(("raw", "text"), [
    ("A\\T\\E", "A&E"),
    ("a\\F\\b\\S\\c\\R\\d\\E\\e", "a|b^c~d\\e"),
    ("caf\\XC3A9\\", "café"),
    ("line1\\.br\\line2", "line1 line2"),
    ("\\H\\bold\\N\\", "bold"),
    ("unterminated\\T", "unterminated\\T"),
    ("bad\\XZZ\\hex", "bad\\XZZ\\hex"),
    ("\\Q\\", "\\Q\\"),
])
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw, Encoding(), "utf-8") == text


def test_hex_escape_uses_message_charset() -> None:
    assert unescape("\\XE9\\", Encoding(), "iso8859-1") == "é"


def test_escapes_and_nulls_in_fields() -> None:
    m = parse_message(msg(MSH, b'PID|1||""^^^X~9^^^A\\T\\B||""|""|'))
    pid = m.first("PID")
    assert pid is not None
    assert pid.value(3, 1) is None  # explicit null
    assert pid.value(3, 4, rep=1) == "A&B"
    assert pid.value(5) is None and pid.value(6) is None and pid.value(40) is None


def test_z_segments_kept() -> None:
    m = parse_message(msg(MSH, PID, b"ZPD|1|x"))
    assert m.segments[-1].id == "ZPD"


# ------------------------------------------------------------------ charsets


def test_invalid_utf8_without_charset() -> None:
    assert code_of(msg(MSH, b"PID|1||1^^^H||M\xfcller")) == ErrorCode.INVALID_CHARSET


def test_declared_latin1() -> None:
    msh = MSH + b"||||||8859/1"
    m = parse_message(msg(msh, b"PID|1||1^^^H||M\xfcller"))
    pid = m.first("PID")
    assert pid is not None and pid.value(5) == "Müller"
    assert read_header(msg(msh)).charset == "8859/1"


def test_unicode_utf8_declared() -> None:
    m = parse_message(msg(MSH + b"||||||UNICODE UTF-8", "PID|1||1||Ä".encode()))
    assert m.charset == "utf-8"


def test_unknown_charset() -> None:
    assert code_of(msg(MSH + b"||||||KLINGON", PID)) == ErrorCode.UNKNOWN_CHARSET
    # read_header still answers, so ingest can send an error ACK.
    assert read_header(msg(MSH + b"||||||KLINGON")).control_id == "CTRL1"


def test_ascii_declared_but_high_bytes() -> None:
    raw = msg(MSH + b"||||||ASCII", b"PID|1||1||\xe9")
    assert code_of(raw) == ErrorCode.INVALID_CHARSET


def test_every_charset_codec_exists() -> None:
    assert all(codec_exists(c) for c in _CHARSETS.values())
    assert charset_codec(None) == "utf-8" and charset_codec("8859/15") == "iso8859-15"


# ------------------------------------------------------------------ structural errors


def test_empty_and_missing_msh() -> None:
    assert code_of(b"") == ErrorCode.EMPTY_MESSAGE
    assert code_of(b"\x0b\x1c\r") == ErrorCode.EMPTY_MESSAGE
    assert code_of(b"  \r\n") == ErrorCode.EMPTY_MESSAGE
    assert code_of(msg(PID)) == ErrorCode.MISSING_MSH


def test_bad_segment_id() -> None:
    assert code_of(msg(MSH, b"pid|1", PID)) == ErrorCode.BAD_SEGMENT
    assert code_of(msg(MSH, b"P1D1|1", PID)) == ErrorCode.BAD_SEGMENT


def test_truncated_last_segment() -> None:
    assert code_of(msg(MSH, PID, b"PV")) == ErrorCode.TRUNCATED_SEGMENT
    assert code_of(b"MSH|^~\\&|APP|FAC|R") == ErrorCode.TRUNCATED_SEGMENT


def test_second_msh_inside_a_message() -> None:
    assert code_of(msg(MSH, PID, MSH)) == ErrorCode.BAD_SEGMENT


def test_details_never_quote_values() -> None:
    raw = msg(MSH + b"||||||SECRETCHARSET", b"PID|1||SECRETMRN")
    with pytest.raises(MappingError) as info:
        parse_message(raw)
    assert "SECRET" not in info.value.detail and "SECRET" not in str(info.value)


# ------------------------------------------------------------------ read_header


def test_read_header_fields() -> None:
    raw = msg(b"MSH|^~\\&|APP^1.2^ISO|FAC|RAPP|RFAC|20240301101500+0100||adt^a03^ADT_A03|C9|"
              b"P^T|2.5.1^USA|||AL|NE||UNICODE UTF-8", PID)
    h = read_header(raw)
    assert (h.field_separator, h.encoding_characters) == ("|", "^~\\&")
    assert (h.sending_application, h.sending_facility) == ("APP", "FAC")
    assert (h.receiving_application, h.receiving_facility) == ("RAPP", "RFAC")
    assert (h.message_type, h.trigger, h.structure) == ("ADT", "A03", "ADT_A03")
    assert (h.control_id, h.processing_id, h.version) == ("C9", "P", "2.5.1")
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert h.charset == "UNICODE UTF-8" and h.timestamp == "20240301101500+0100"


def test_read_header_tolerates_bad_content_after_msh() -> None:
    raw = msg(MSH, b"pid|\xff\xfe broken", b"PV")
    assert read_header(raw).control_id == "CTRL1"


def test_read_header_errors() -> None:
    for raw, code in [(b"", ErrorCode.EMPTY_MESSAGE), (PID, ErrorCode.MISSING_MSH),
                      (b"MSH|^|", ErrorCode.BAD_ENCODING_CHARACTERS)]:
        with pytest.raises(MappingError) as info:
            read_header(raw)
        assert info.value.code == code


def test_read_header_literal_backslash_r() -> None:
    h = read_header(MSH + b"\\rEVN|A01")
    assert h.version == "2.5.1"


# ------------------------------------------------------------------ split_messages


def test_split_plain_and_batch() -> None:
    data = b"\n".join([b"BHS|^~\\&|X", MSH, PID, MSH.replace(b"CTRL1", b"CTRL2"), PID,
                       b"BTS|2", b""])
    parts = split_messages(data)
    assert [read_header(p).control_id for p in parts] == ["CTRL1", "CTRL2"]


def test_split_comments_and_blank_lines() -> None:
    data = b"/*\n * header\n */\n// note\n\n" + MSH + b"\n" + PID + b"\n\n// x\n" + MSH
    parts = split_messages(data)
    assert len(parts) == 2 and parts[0].startswith(b"MSH")


def test_split_mllp_frames() -> None:
    data = b"\x0b" + msg(MSH, PID) + b"\x1c\r\x0b" + msg(MSH, PID) + b"\x1c\r"
    assert len(split_messages(data)) == 2


def test_split_keeps_leading_garbage_as_a_message() -> None:
    parts = split_messages(b"garbage\r" + msg(MSH, PID))
    assert len(parts) == 2
    assert code_of(parts[0]) == ErrorCode.MISSING_MSH


def test_split_empty() -> None:
    assert split_messages(b"") == [] and split_messages(b"\n\n// only a comment\n") == []


# ------------------------------------------------------------------ hl7apy wrapper


def test_validate_with_hl7apy_converts_errors() -> None:
    with pytest.raises(MappingError) as info:
        validate_with_hl7apy(msg(MSH, b"ZZZ|1", b"PID|1||x"))
    assert info.value.code == ErrorCode.BAD_SEGMENT
