"""MLLP decoder: examples and hypothesis properties (REFERENCE.md section 5)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mappers.mllp import Event, Frame, Garbage, MllpDecoder, Oversize, encode_frame

MAX = 256

# Payloads never contain the framing bytes 0x0B / 0x1C (HL7 escapes them).
payloads = st.binary(max_size=MAX).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
# Garbage between frames: anything but a start block (0x0B would open a frame).
garbage = st.binary(min_size=1, max_size=64).map(lambda b: b.replace(b"\x0b", b"")).filter(bool)


def decode(stream: bytes, cuts: list[int], max_frame: int = MAX) -> list[Event]:
    dec = MllpDecoder(max_frame, garbage_keep_bytes=32)
    out: list[Event] = []
    pos = 0
    for cut in sorted(set(cuts)):
        out += dec.feed(stream[pos:cut])
        pos = cut
        # Memory bound: one frame (capped) plus the kept head of a garbage run.
        assert dec.buffered_bytes <= max_frame + 32
    out += dec.feed(stream[pos:])
    out += dec.finish()
    return out


def frames(events: list[Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_single_frame() -> None:
    dec = MllpDecoder(1024)
    assert dec.feed(encode_frame(b"MSH|^~\\&|A\r")) == [Frame(b"MSH|^~\\&|A\r")]
    assert dec.finish() == []


def test_empty_frame_is_a_frame() -> None:
    assert MllpDecoder(1024).feed(b"\x0b\x1c\x0d") == [Frame(b"")]


def test_lone_end_block_is_payload() -> None:
    assert MllpDecoder(1024).feed(b"\x0bA\x1cB\x1c\x0d") == [Frame(b"A\x1cB")]


def test_garbage_between_frames_reported_once_with_size() -> None:
    out = MllpDecoder(1024).feed(encode_frame(b"A") + b"junk" + encode_frame(b"B"))
    assert out == [Frame(b"A"), Garbage(4, b"junk"), Frame(b"B")]


def test_trailing_newline_is_whitespace_garbage() -> None:
    dec = MllpDecoder(1024)
    out = dec.feed(encode_frame(b"A") + b"\r\n") + dec.finish()
    assert out == [Frame(b"A"), Garbage(2, b"\r\n", whitespace_only=True)]


def test_unterminated_frame_does_not_swallow_next() -> None:
    out = MllpDecoder(1024).feed(b"\x0bbroken" + encode_frame(b"good"))
    assert out == [Garbage(7, b"\x0bbroken", reason="unterminated_frame"), Frame(b"good")]


def test_oversize_reported_then_discarded_until_end_block() -> None:
    dec = MllpDecoder(1024)
    big = encode_frame(b"x" * 5000)
    out = dec.feed(big[:3000])
    assert len(out) == 1 and isinstance(out[0], Oversize)
    assert out[0].size == 1025 and out[0].head == b"x" * 1024
    assert dec.buffered_bytes == 0
    assert dec.feed(big[3000:] + encode_frame(b"next")) == [Frame(b"next")]


def test_twenty_megabytes_in_small_chunks_stays_bounded() -> None:
    dec = MllpDecoder(4096)
    chunk = b"y" * 65536
    events = dec.feed(b"\x0b")
    for _ in range(20 * 16):
        events += dec.feed(chunk)
        assert dec.buffered_bytes <= 4096
    events += dec.feed(b"\x1c\x0d" + encode_frame(b"ok"))
    assert [type(e) for e in events] == [Oversize, Frame]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(payloads.map(lambda p: ("f", p)), garbage.map(lambda g: ("g", g))),
                   max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
def test_same_events_under_any_chunking(parts: list[tuple[str, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) if kind == "f" else p for kind, p in parts)
    whole = decode(stream, [])
    assert decode(stream, [c % (len(stream) + 1) for c in cuts]) == whole
    byte_by_byte = decode(stream, list(range(len(stream))))
    assert byte_by_byte == whole


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(payloads.map(lambda p: ("f", p)), garbage.map(lambda g: ("g", g))),
                   max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
def test_garbage_never_corrupts_neighbouring_frames(
    parts: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(p) if kind == "f" else p for kind, p in parts)
    events = decode(stream, [c % (len(stream) + 1) for c in cuts])
    assert frames(events) == [p for kind, p in parts if kind == "f"]
    # Every garbage byte is accounted for (adjacent garbage parts merge into one run).
    assert sum(e.size for e in events if isinstance(e, Garbage)) == sum(
        len(p) for kind, p in parts if kind == "g"
    )


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_arbitrary_bytes_never_raise_and_stay_bounded(stream: bytes, cuts: list[int]) -> None:
    small = 64
    events = decode(stream, [c % (len(stream) + 1) for c in cuts], max_frame=small)
    assert events == decode(stream, [], max_frame=small)
    for e in events:
        if isinstance(e, Frame):
            assert len(e.payload) <= small
        elif isinstance(e, Oversize):
            assert len(e.head) == small


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * MAX), min_size=1, max_size=8))
def test_oversize_frames_isolated(sizes: list[int]) -> None:
    stream = b"".join(encode_frame(bytes([65 + i % 26]) * n) for i, n in enumerate(sizes))
    events = decode(stream, list(range(0, len(stream), 97)))
    kinds = ["f" if n <= MAX else "o" for n in sizes]
    assert ["f" if isinstance(e, Frame) else "o" for e in events] == kinds
