"""HL7 v2 ADT -> canonical events (public surface of the HL7 v2 mappers).

Implemented in submodules; this package re-exports the stable API:

- ``read_header(raw: bytes) -> MessageHeader``: decode and read MSH only (fast; used by
  ingest for ACKs and routing). Raises ``schemas.errors.MappingError``.
- ``map_hl7v2(raw: bytes, *, received_at: datetime, default_tz: str = "UTC")
  -> list[CanonicalEvent]``: one message -> one or more canonical events (an A40 with two
  merge groups gives two). Raises ``MappingError`` and nothing else.
- ``split_messages(data: bytes) -> list[bytes]``: a file's bytes (MLLP-framed or plain,
  CR/LF/CRLF, BOM, BHS/BTS and FHS/FTS batches) -> the raw bytes of each message.
"""

from .adt import map_hl7v2
from .parser import MessageHeader, parse_message, read_header
from .split import split_messages

__all__ = ["MessageHeader", "map_hl7v2", "parse_message", "read_header", "split_messages"]
