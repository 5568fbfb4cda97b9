"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 1/2 block format).

A frame is ``0x0B <payload> 0x1C 0x0D``. :class:`MllpDecoder` is a pure, incremental
decoder: bytes go in as they arrive from a socket, in chunks of any size, and whole
events come out. It never blocks, never raises on bad input, and keeps memory bounded:

- at most ``max_frame_bytes`` of one frame are buffered; a longer frame is reported once
  as :class:`Oversize` and the rest of it is discarded until its end block;
- bytes outside frames are reported as :class:`Garbage` when the run ends (at the next
  start block or at :meth:`MllpDecoder.finish`), keeping only the first
  ``garbage_keep_bytes`` of them for the dead-letter payload.

The events produced do not depend on how the stream was chunked (property-tested), so
a TCP segment boundary can never change what the hub ACKs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
_SB = b"\x0b"
_EB = b"\x1c"
_WHITESPACE = b"\r\n\t "


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame's payload (without the framing bytes)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that did not belong to any complete frame.

    ``reason`` is ``between_frames`` for bytes outside ``0x0B ... 0x1C 0x0D``, or
    ``unterminated_frame`` for a frame whose end block never came (a new start block or
    the end of the stream arrived first). ``head`` holds the first bytes only (bounded);
    ``size`` counts them all. ``whitespace_only`` marks runs of CR/LF/space/tab, which
    some senders emit after each frame and which callers may choose to tolerate.
    """

    size: int
    head: bytes
    reason: Literal["between_frames", "unterminated_frame"] = "between_frames"
    whitespace_only: bool = False


@dataclass(frozen=True, slots=True)
class Oversize:
    """A frame longer than ``max_frame_bytes``.

    Reported as soon as the limit is crossed (``size`` = ``max_frame_bytes + 1``, i.e.
    "more than the limit"; the true length is unknown because the rest is never
    buffered). ``head`` holds the first ``max_frame_bytes`` bytes for the dead letter.
    """

    size: int
    head: bytes


Event = Frame | Garbage | Oversize

_OUTSIDE = 0
_INSIDE = 1
_DISCARDING = 2


class MllpDecoder:
    """Incremental MLLP decoder. Not thread-safe; one instance per connection."""

    def __init__(self, max_frame_bytes: int, *, garbage_keep_bytes: int = 64 * 1024) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self.garbage_keep_bytes = garbage_keep_bytes
        self._state = _OUTSIDE
        self._frame = bytearray()
        self._frame_size = 0
        self._pending_end = False
        """The last byte seen inside a frame was 0x1C; the next decides if it ends it."""
        self._garbage = bytearray()
        self._garbage_size = 0
        self._garbage_ws = True

    # -- introspection (tests assert memory stays bounded) --------------------------
    @property
    def buffered_bytes(self) -> int:
        return len(self._frame) + len(self._garbage)

    @property
    def in_frame(self) -> bool:
        return self._state != _OUTSIDE

    # -- decoding --------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        i = 0
        n = len(data)
        while i < n:
            if self._state == _OUTSIDE:
                j = data.find(_SB, i)
                if j < 0:
                    self._add_garbage(data[i:])
                    break
                if j > i:
                    self._add_garbage(data[i:j])
                self._flush_garbage(out)
                self._begin_frame()
                i = j + 1
                continue

            # Inside a frame (buffering it, or discarding the rest of an oversize one).
            if self._pending_end:
                self._pending_end = False
                if data[i] == CARRIAGE_RETURN:
                    self._end_frame(out)
                    i += 1
                    continue
                # A lone 0x1C is not an end block: it is payload (strict MLLP).
                self._append(b"\x1c", out)
            k_end = data.find(_EB, i)
            k_start = data.find(_SB, i)
            if k_start >= 0 and (k_end < 0 or k_start < k_end):
                # A start block inside a frame: the previous frame never ended. Report
                # it as garbage and start over, so one broken frame does not swallow
                # the next good one.
                self._append(data[i:k_start], out)
                self._abandon_frame(out)
                self._begin_frame()
                i = k_start + 1
                continue
            if k_end < 0:
                self._append(data[i:], out)
                break
            self._append(data[i:k_end], out)
            self._pending_end = True
            i = k_end + 1
        return out

    def finish(self) -> list[Event]:
        """End of stream: report whatever is pending (garbage, an unterminated frame)."""
        out: list[Event] = []
        if self._state == _OUTSIDE:
            self._flush_garbage(out)
        else:
            if self._pending_end and self._state == _INSIDE:
                self._append(b"\x1c", out)
            self._pending_end = False
            self._abandon_frame(out)
        return out

    # -- internals -------------------------------------------------------------------
    def _begin_frame(self) -> None:
        self._state = _INSIDE
        self._frame = bytearray()
        self._frame_size = 0
        self._pending_end = False

    def _append(self, chunk: bytes, out: list[Event]) -> None:
        if not chunk:
            return
        self._frame_size += len(chunk)
        if self._state == _DISCARDING:
            return
        room = self.max_frame_bytes - len(self._frame)
        if len(chunk) <= room:
            self._frame += chunk
            return
        # Crossing the limit: report once, keep the first max_frame_bytes, drop the rest
        # of the frame as it arrives (never buffer unbounded).
        self._frame += chunk[:room]
        out.append(Oversize(size=self.max_frame_bytes + 1, head=bytes(self._frame)))
        self._frame = bytearray()
        self._state = _DISCARDING

    def _end_frame(self, out: list[Event]) -> None:
        if self._state == _INSIDE:
            out.append(Frame(bytes(self._frame)))
        self._frame = bytearray()
        self._state = _OUTSIDE

    def _abandon_frame(self, out: list[Event]) -> None:
        if self._state == _INSIDE:
            data = b"\x0b" + bytes(self._frame)
            out.append(
                Garbage(
                    size=self._frame_size + 1,
                    head=data[: self.garbage_keep_bytes],
                    reason="unterminated_frame",
                    whitespace_only=False,
                )
            )
        self._frame = bytearray()
        self._state = _OUTSIDE

    def _add_garbage(self, chunk: bytes) -> None:
        self._garbage_size += len(chunk)
        room = self.garbage_keep_bytes - len(self._garbage)
        if room > 0:
            self._garbage += chunk[:room]
        if self._garbage_ws and chunk.strip(_WHITESPACE):
            self._garbage_ws = False

    def _flush_garbage(self, out: list[Event]) -> None:
        if self._garbage_size:
            out.append(
                Garbage(
                    size=self._garbage_size,
                    head=bytes(self._garbage),
                    reason="between_frames",
                    whitespace_only=self._garbage_ws,
                )
            )
        self._garbage = bytearray()
        self._garbage_size = 0
        self._garbage_ws = True


def encode_frame(payload: bytes) -> bytes:
    """Wrap one payload in MLLP framing."""
    return b"\x0b" + payload + b"\x1c\x0d"
