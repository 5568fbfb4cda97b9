"""``hub map FILE [FILE...]``: dry-run mapping, the analyst's tool (DESIGN.md "hub map").

Prints JSON Lines on ``out``: one canonical event per line (a message may give several,
e.g. an A40 with two merge groups), or for a message that cannot be mapped one object
``{"error", "detail", "file", "index", "message_id"?}``. Exit status 0 when everything
mapped, 1 when anything was rejected. No broker, no settings file.

HL7 v2 files go through :func:`mappers.hl7v2.split_messages` (MLLP-framed or plain,
CR/LF/CRLF, batches, comments) and :func:`mappers.hl7v2.map_hl7v2`; a file whose first
non-whitespace byte is ``{`` is FHIR JSON for :func:`mappers.fhir.map_fhir`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from mappers.hl7v2 import map_hl7v2, read_header, split_messages
from schemas.canonical import CanonicalEvent, dump_event
from schemas.errors import ErrorCode, MappingError

_BOM = b"\xef\xbb\xbf"

Line = dict[str, Any]


def run_map(paths: list[str], *, default_tz: str, out: TextIO) -> int:
    """Map every file in ``paths`` and write JSON Lines to ``out``.

    ``default_tz`` (IANA name) localises HL7 timestamps sent without an offset. A path
    of ``-`` reads standard input. Returns the exit status: 0 when every message mapped,
    1 when anything (a message or a whole file) was rejected.
    """
    ok = True
    for item in map_files(paths, default_tz=default_tz, received_at=datetime.now(UTC)):
        line = dump_event(item) if isinstance(item, CanonicalEvent) else item
        ok = ok and "error" not in line
        out.write(orjson.dumps(line).decode())
        out.write("\n")
    out.flush()
    return 0 if ok else 1


def map_files(paths: list[str], *, default_tz: str, received_at: datetime
              ) -> Iterator[CanonicalEvent | Line]:
    """Every message of every file in order: its events, or an error line for it."""
    for path in paths:
        yield from _map_file(path, default_tz, received_at)


def _map_file(path: str, default_tz: str, received_at: datetime
              ) -> Iterator[CanonicalEvent | Line]:
    try:
        data = _read(path)
    except OSError as exc:
        yield _error(ErrorCode.UNREADABLE_FILE,
                     f"The file cannot be read ({exc.strerror or type(exc).__name__}).",
                     path, 0)
        return
    if _is_json(data):
        yield from _map_fhir_file(data, path, default_tz, received_at)
    else:
        yield from _map_hl7_file(data, path, default_tz, received_at)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as fh:
        return fh.read()


def _is_json(data: bytes) -> bool:
    head = data.lstrip()
    if head.startswith(_BOM):
        head = head[len(_BOM):].lstrip()
    return head.startswith(b"{")


def _map_hl7_file(data: bytes, path: str, default_tz: str,
                  received_at: datetime) -> Iterator[CanonicalEvent | Line]:
    messages = split_messages(data)
    if not messages:
        yield _error(ErrorCode.EMPTY_MESSAGE, "The file holds no HL7 message.", path, 0)
        return
    for index, raw in enumerate(messages):
        try:
            events = map_hl7v2(raw, received_at=received_at, default_tz=default_tz)
        except MappingError as exc:
            yield _error(exc.code, exc.detail, path, index, _message_id(raw))
            continue
        except Exception as exc:  # an analyst tool reports a bug per message, not a crash
            yield _internal(exc, path, index, _message_id(raw))
            continue
        yield from _events(events)


def _map_fhir_file(data: bytes, path: str, default_tz: str,
                   received_at: datetime) -> Iterator[CanonicalEvent | Line]:
    mapper = _fhir_mapper()
    if mapper is None:
        yield _error(ErrorCode.UNSUPPORTED_RESOURCE,
                     "FHIR mapping is not available in this installation.", path, 0)
        return
    try:
        events = mapper(data, received_at=received_at, default_tz=default_tz)
    except MappingError as exc:
        yield _error(exc.code, exc.detail, path, 0)
        return
    except Exception as exc:
        yield _internal(exc, path, 0)
        return
    yield from _events(events)


def _fhir_mapper() -> Callable[..., list[CanonicalEvent]] | None:
    """``mappers.fhir.map_fhir`` adapted to always accept ``default_tz``; ``None`` when
    the FHIR mappers are not installed (imported lazily: HL7-only use stays light)."""
    try:
        from mappers.fhir import map_fhir
    except ImportError:
        return None
    try:
        takes_tz = "default_tz" in inspect.signature(map_fhir).parameters
    except (TypeError, ValueError):
        takes_tz = False
    if takes_tz:
        return map_fhir

    def call(data: bytes, *, received_at: datetime, default_tz: str) -> list[CanonicalEvent]:
        return map_fhir(data, received_at=received_at)

    return call


def _events(events: list[CanonicalEvent]) -> Iterator[CanonicalEvent]:
    yield from events


def _message_id(raw: bytes) -> str | None:
    """MSH-10 when the header is readable (so the analyst can find the message)."""
    try:
        return read_header(raw).control_id
    except MappingError:
        return None


def _error(code: ErrorCode, detail: str, path: str, index: int,
           message_id: str | None = None) -> Line:
    line: Line = {"error": code.value, "detail": detail, "file": path, "index": index}
    if message_id:
        line["message_id"] = message_id
    return line


def _internal(exc: Exception, path: str, index: int, message_id: str | None = None) -> Line:
    # Only the exception type: its text could quote message content (PHI).
    return _error(ErrorCode.INTERNAL_ERROR,
                  f"The mapper failed unexpectedly ({type(exc).__name__}).",
                  path, index, message_id)
