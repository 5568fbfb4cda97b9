"""HL7 v2 acknowledgements (ACK / NAK), built from the inbound header only.

Pure: no clock (``now`` is passed in), no I/O. The ACK policy itself (which code for
which situation) lives in ``hub.ingest.core``; this module only renders one ACK:

- ``MSH`` with the inbound field separator and encoding characters, MSH-3/4 = inbound
  MSH-5/6 and MSH-5/6 = inbound MSH-3/4, MSH-9 ``ACK^<trigger>^ACK``, MSH-10 a fresh
  control id, MSH-11/12 echoed;
- ``MSA`` with the code and MSA-2 = inbound MSH-10 (senders match ACKs on it);
- ``ERR`` when there is an error: HL7 table 0357 code, severity ``E`` and the hub's own
  detail sentence. Field values are never copied into an ACK (senders log ACKs, and the
  ACK travels back over links that may not be meant for PHI); ``MappingError.detail``
  is written by the hub and safe by contract (schemas/errors.py).

Versions 2.5+ use ERR-2..ERR-8; 2.3 and 2.4 only know ERR-1 (ELD: segment^sequence^
field^code&text&HL70357), so those get ERR-1 plus MSA-3 with the detail.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Protocol

from schemas.errors import AckCode, MappingError

DEFAULT_FIELD_SEPARATOR = "|"
DEFAULT_ENCODING_CHARACTERS = "^~\\&"
DEFAULT_VERSION = "2.5"
HUB_APPLICATION = "CARE-HUB"

# HL7 table 0357 texts, for ERR-3 / ERR-1 (the code is what receivers act on).
HL7_ERROR_TEXT: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

_POSITION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:[-.](\d+))?(?:[-.](\d+))?")


class HeaderLike(Protocol):
    """What the ACK needs from ``mappers.hl7v2.MessageHeader`` (structural type)."""

    @property
    def field_separator(self) -> str: ...
    @property
    def encoding_characters(self) -> str: ...
    @property
    def sending_application(self) -> str | None: ...
    @property
    def sending_facility(self) -> str | None: ...
    @property
    def receiving_application(self) -> str | None: ...
    @property
    def receiving_facility(self) -> str | None: ...
    @property
    def trigger(self) -> str | None: ...
    @property
    def control_id(self) -> str | None: ...
    @property
    def processing_id(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def accept_ack_type(self) -> str | None: ...
    @property
    def application_ack_type(self) -> str | None: ...
    @property
    def charset(self) -> str | None: ...


def ack_mode(header: HeaderLike | None) -> Literal["original", "enhanced"]:
    """Enhanced mode when MSH-15 or MSH-16 is valued (HL7 v2 2.9 section 2.9.1)."""
    if header is None:
        return "original"
    if (header.accept_ack_type or "").strip() or (header.application_ack_type or "").strip():
        return "enhanced"
    return "original"


def _version_tuple(version: str | None) -> tuple[int, ...]:
    out: list[int] = []
    for part in (version or "").split("^")[0].split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


class _Delims:
    def __init__(self, field: str, encoding: str) -> None:
        if (
            len(field) != 1
            or len(encoding) < 4
            or len(set(field + encoding[:4])) != 5
            or any(c.isalnum() or c in "\r\n" for c in field + encoding[:4])
        ):
            field, encoding = DEFAULT_FIELD_SEPARATOR, DEFAULT_ENCODING_CHARACTERS
        self.field = field
        self.encoding = encoding
        self.component = encoding[0]
        self.repetition = encoding[1]
        self.escape = encoding[2]
        self.subcomponent = encoding[3]

    def escape_text(self, text: str) -> str:
        """Escape delimiters in hub-written text (HL7 v2 section 2.7)."""
        e = self.escape
        out = text.replace(e, f"{e}E{e}")
        out = out.replace(self.field, f"{e}F{e}")
        out = out.replace(self.component, f"{e}S{e}")
        out = out.replace(self.subcomponent, f"{e}T{e}")
        out = out.replace(self.repetition, f"{e}R{e}")
        return out.replace("\r", " ").replace("\n", " ")

    def echo(self, value: str | None) -> str:
        """An inbound field value copied back (``read_header`` gives unescaped values)."""
        return self.escape_text(value) if value else ""


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        return now.strftime("%Y%m%d%H%M%S")
    return now.strftime("%Y%m%d%H%M%S%z")


def build_ack(
    header: HeaderLike | None,
    code: AckCode,
    *,
    now: datetime,
    ack_control_id: str,
    error: MappingError | None = None,
) -> bytes:
    """Render one ACK (segments separated by CR, no MLLP framing), UTF-8 encoded.

    ``header`` None means the inbound message had no readable MSH: the ACK is minimal
    (default delimiters, empty MSA-2) and always carries an ERR when ``error`` is given.
    """
    if header is not None:
        d = _Delims(header.field_separator or "", header.encoding_characters or "")
        version = d.echo(header.version) or DEFAULT_VERSION
        processing = d.echo(header.processing_id) or "P"
        sending_app = d.echo(header.receiving_application)
        sending_fac = d.echo(header.receiving_facility)
        receiving_app = d.echo(header.sending_application)
        receiving_fac = d.echo(header.sending_facility)
        trigger = d.echo(header.trigger)
        inbound_id = d.echo(header.control_id)
        charset = (header.charset or "").strip()
    else:
        d = _Delims(DEFAULT_FIELD_SEPARATOR, DEFAULT_ENCODING_CHARACTERS)
        version, processing = DEFAULT_VERSION, "P"
        sending_app, sending_fac, receiving_app, receiving_fac = HUB_APPLICATION, "", "", ""
        trigger, inbound_id, charset = "", "", ""

    vt = _version_tuple(version)
    c = d.component
    if trigger:
        # 2.3 has no message structure component (MSG.3 arrived in 2.3.1).
        msh9 = f"ACK{c}{trigger}" if vt and vt < (2, 3, 1) else f"ACK{c}{trigger}{c}ACK"
    else:
        msh9 = "ACK"
    msh = [
        "MSH",
        d.encoding,
        sending_app,
        sending_fac,
        receiving_app,
        receiving_fac,
        _timestamp(now),
        "",
        msh9,
        d.escape_text(ack_control_id),
        processing,
        version,
    ]
    # The ACK is encoded as UTF-8; say so when the sender declared UTF-8 itself.
    if charset.upper() == "UNICODE UTF-8":
        msh += ["", "", "", "", "", charset]
    # MSH-1 is the field separator itself: "MSH" + "|" + "^~\&" + "|" + MSH-3 ...
    segments = [d.field.join(msh)]

    legacy_err = bool(vt) and vt < (2, 5)
    msa = ["MSA", code.value, inbound_id]
    if error is not None and legacy_err:
        msa.append(d.escape_text(error.detail))
    segments.append(d.field.join(msa))

    if error is not None:
        hl7_code = error.hl7_code
        text = HL7_ERROR_TEXT.get(hl7_code, "")
        seg, seq, fld = _location(error)
        if legacy_err:
            s = d.subcomponent
            eld = c.join([seg, seq, fld, f"{hl7_code}{s}{text}{s}HL70357"]).rstrip(c)
            segments.append(d.field.join(["ERR", eld]))
        else:
            erl = c.join([seg, seq, fld]).rstrip(c) if seg else ""
            segments.append(
                d.field.join(
                    [
                        "ERR",
                        "",  # ERR-1 (ELD) is for 2.4 and earlier
                        erl,  # ERR-2 error location
                        f"{hl7_code}{c}{text}{c}HL70357",  # ERR-3 HL7 error code (CWE)
                        "E",  # ERR-4 severity
                        f"{error.code.value}{c}{c}99HUB",  # ERR-5 application error code
                        "",
                        "",
                        d.escape_text(error.detail),  # ERR-8 user message
                    ]
                )
            )
    return ("\r".join(segments) + "\r").encode("utf-8")


def _location(error: MappingError) -> tuple[str, str, str]:
    """(segment id, sequence, field position) from ``MappingError.position``/``segment``."""
    for ref in (error.position, error.segment):
        if not ref:
            continue
        m = _POSITION.match(ref.strip())
        if m:
            return m.group(1), "1", m.group(2) or ""
    return "", "", ""
