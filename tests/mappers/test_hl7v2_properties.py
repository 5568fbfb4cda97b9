"""Property tests: the HL7 v2 wrapper raises nothing but MappingError, whatever it gets;
timestamps keep their offsets."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers.hl7v2 import map_hl7v2, parse_message, read_header, split_messages
from mappers.hl7v2.timestamps import parse_datetime
from schemas.errors import MappingError

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HUB_CORPUS_DIR") or REPO.parent / "shared" / "corpus").resolve()
AT = datetime(2024, 1, 1, tzinfo=UTC)

FALLBACK = [
    b"MSH|^~\\&|APP|FAC|R|RF|20240301101500+0100||ADT^A01|C1|P|2.5.1\rEVN|A01|20240301\r"
    b"PID|1||123^^^HOSP^MR||Doe^Jane||19800101|F\rPV1|1|I|W^1^2\rDG1|1||I10^HTN^I10\r",
]


def corpus_messages() -> list[bytes]:
    if not CORPUS.is_dir():
        return FALLBACK
    out = []
    for path in sorted(CORPUS.glob("hl7v2/**/*.*")) + sorted(CORPUS.glob("pairs/**/*.hl7")):
        if path.suffix in (".hl7", ".txt"):
            out.extend(split_messages(path.read_bytes()))
    return out or FALLBACK


MESSAGES = corpus_messages()


def only_mapping_errors(raw: bytes) -> None:
    for fn in (parse_message, read_header):
        with contextlib.suppress(MappingError):
            fn(raw)
    try:
        map_hl7v2(raw, received_at=AT, default_tz="America/Chicago")
    except MappingError as exc:
        assert exc.detail and exc.code


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes(raw: bytes) -> None:
    only_mapping_errors(raw)
    only_mapping_errors(b"MSH" + raw)
    split_messages(raw)


HL7ISH = st.text(alphabet=st.sampled_from(list("MSHPIDVEN123|^~\\&\r\n\"XTF.br#ZA ")),
                 max_size=400)


@settings(max_examples=400, deadline=None)
@given(HL7ISH)
def test_any_hl7ish_text(text: str) -> None:
    only_mapping_errors(("MSH|^~\\&|" + text).encode())
    only_mapping_errors(text.encode())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MESSAGES)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.sampled_from(list(b"|^~\\&\r\n\"\x00\xff\xc3 A0")))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_messages(raw: bytes) -> None:
    only_mapping_errors(raw)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
       st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
       st.booleans())
def test_timestamps_keep_offsets(naive: datetime, tz: timezone, seconds: bool) -> None:
    value = naive.replace(microsecond=0, tzinfo=tz)
    if not seconds:
        value = value.replace(second=0)
    offset = value.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    text = value.strftime("%Y%m%d%H%M" + ("%S" if seconds else "")) + (
        f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}")
    parsed = parse_datetime(text, UTC)
    assert parsed == value
    assert parsed is not None and parsed.utcoffset() == offset
