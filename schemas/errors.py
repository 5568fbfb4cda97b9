"""Error codes the hub gives for input it cannot use.

One :class:`MappingError` type crosses every boundary (parser, mappers, ingest); its
``code`` is stable (it appears in ``hub map`` output, ACK ERR segments, dead letters and
metrics) and its ``detail`` is a sentence written by the hub, never a copy of field
values, so it is safe to log and to send back to a sender.
"""

from __future__ import annotations

from enum import StrEnum


class AckCode(StrEnum):
    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"


class ErrorCode(StrEnum):
    # framing / transport
    EMPTY_MESSAGE = "empty_message"
    FRAME_TOO_LARGE = "frame_too_large"
    GARBAGE_BETWEEN_FRAMES = "garbage_between_frames"
    # header
    MISSING_MSH = "missing_msh"
    BAD_ENCODING_CHARACTERS = "bad_encoding_characters"
    INVALID_CHARSET = "invalid_charset"
    UNKNOWN_CHARSET = "unknown_charset"
    MISSING_CONTROL_ID = "missing_control_id"
    UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
    UNSUPPORTED_TRIGGER = "unsupported_trigger"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_PROCESSING_ID = "unsupported_processing_id"
    # content
    TRUNCATED_SEGMENT = "truncated_segment"
    BAD_SEGMENT = "bad_segment"
    MISSING_SEGMENT = "missing_segment"
    MISSING_PATIENT_IDENTIFIER = "missing_patient_identifier"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_FIELD = "bad_field"
    # FHIR
    INVALID_JSON = "invalid_json"
    UNSUPPORTED_RESOURCE = "unsupported_resource"
    INVALID_RESOURCE = "invalid_resource"
    UNSUPPORTED_EVENT = "unsupported_event"
    UNRESOLVED_REFERENCE = "unresolved_reference"
    ID_ONLY_NOTIFICATION = "id_only_notification"
    # files (hub map)
    UNREADABLE_FILE = "unreadable_file"
    # delivery
    DURABLE_WRITE_FAILED = "durable_write_failed"
    INTERNAL_ERROR = "internal_error"


# HL7 table 0357 (message error condition codes) for the ERR segment.
HL7_ERROR_CODES: dict[ErrorCode, str] = {
    ErrorCode.EMPTY_MESSAGE: "100",
    ErrorCode.FRAME_TOO_LARGE: "207",
    ErrorCode.GARBAGE_BETWEEN_FRAMES: "100",
    ErrorCode.MISSING_MSH: "100",
    ErrorCode.BAD_ENCODING_CHARACTERS: "102",
    ErrorCode.INVALID_CHARSET: "102",
    ErrorCode.UNKNOWN_CHARSET: "103",
    ErrorCode.MISSING_CONTROL_ID: "101",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "200",
    ErrorCode.UNSUPPORTED_TRIGGER: "201",
    ErrorCode.UNSUPPORTED_VERSION: "203",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "202",
    ErrorCode.TRUNCATED_SEGMENT: "100",
    ErrorCode.BAD_SEGMENT: "100",
    ErrorCode.MISSING_SEGMENT: "100",
    ErrorCode.MISSING_PATIENT_IDENTIFIER: "101",
    ErrorCode.BAD_TIMESTAMP: "102",
    ErrorCode.BAD_FIELD: "102",
    ErrorCode.DURABLE_WRITE_FAILED: "207",
    ErrorCode.INTERNAL_ERROR: "207",
}

# REFERENCE.md section 2: unsupported type/version/processing id -> AR (reject: do not
# resend as is); a readable header with unusable content -> AE (error).
REJECT_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
        ErrorCode.UNSUPPORTED_TRIGGER,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNSUPPORTED_PROCESSING_ID,
        ErrorCode.DURABLE_WRITE_FAILED,
    }
)


class MappingError(Exception):
    """Input the hub cannot use. ``detail`` never contains field values (no PHI)."""

    def __init__(self, code: ErrorCode, detail: str, *, segment: str | None = None,
                 position: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.segment = segment
        """Segment id and sequence of the fault, e.g. ``PID`` (for ERR-2)."""
        self.position = position
        """Field position of the fault, e.g. ``PID-3`` (for ERR-2)."""

    @property
    def hl7_code(self) -> str:
        return HL7_ERROR_CODES.get(self.code, "207")

    @property
    def is_reject(self) -> bool:
        return self.code in REJECT_CODES

    def as_dict(self) -> dict[str, str]:
        out = {"error": self.code.value, "detail": self.detail}
        if self.position:
            out["position"] = self.position
        return out
