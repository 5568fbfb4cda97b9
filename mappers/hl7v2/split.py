"""Split a file's bytes into HL7 v2 messages (``hub map``, replay, sample feeds).

Accepts MLLP-framed streams (0x0B ... 0x1C 0x0D, several frames) and plain text with CR,
LF or CRLF separators; one message or several concatenated (a new message starts at
each ``MSH`` segment); batch envelopes (FHS/BHS/BTS/FTS lines are dropped); ``//`` and
``/* ... */`` comment lines and blank lines (as in HAPI's test files); byte-order marks.
Text before the first MSH that is not a comment is returned as its own "message", so the
parser reports it (MISSING_MSH) instead of the splitter silently dropping data.
"""

from __future__ import annotations

import re

_BOM = b"\xef\xbb\xbf"
_LINES = re.compile(rb"\r\n|\r|\n")
_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_messages(data: bytes) -> list[bytes]:
    """A file's bytes -> the raw bytes of each message (segments joined by CR).

    Never raises: content problems are left for the parser to report per message.
    """
    if b"\x0b" in data:
        out: list[bytes] = []
        for frame in _mllp_frames(data):
            out.extend(_split_plain(frame))
        return out
    return _split_plain(data)


def _mllp_frames(data: bytes) -> list[bytes]:
    """Payloads between 0x0B and 0x1C; bytes outside frames are kept as text too."""
    frames = []
    for chunk in data.split(b"\x0b"):
        end = chunk.find(b"\x1c")
        payload = chunk if end == -1 else chunk[:end]
        if payload.strip():
            frames.append(payload)
        rest = b"" if end == -1 else chunk[end + 1:]
        if rest.strip():
            frames.append(rest)
    return frames


def _split_plain(data: bytes) -> list[bytes]:
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    in_comment = False
    for line in _LINES.split(data):
        line = _clean(line)
        if in_comment:
            in_comment = b"*/" not in line
            continue
        if not line or line.startswith(b"//"):
            continue
        if line.startswith(b"/*"):
            in_comment = b"*/" not in line[2:]
            continue
        if line.startswith(_ENVELOPE):
            current = None  # a batch trailer/header ends the message before it
            continue
        if line.startswith(b"MSH") or current is None:
            current = []
            messages.append(current)
        current.append(line)
    return [b"\r".join(lines) + b"\r" for lines in messages]


def _clean(line: bytes) -> bytes:
    line = line.strip(b" \t\x1c\x0b")
    while line.startswith(_BOM):
        line = line[len(_BOM):].lstrip()
    return line
