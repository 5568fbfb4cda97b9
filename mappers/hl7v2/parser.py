"""A fast, tolerant HL7 v2 parser (the hot path of ingest and normalize).

hl7apy parses about 55 ADT messages/s per core on this machine, so the hot path uses a
hand-written ``str.split`` parser instead; hl7apy is only used by the optional
:func:`validate_with_hl7apy` (strict structure checks, never on the hot path).

What this parser accepts, because real feeds and the test corpus send it:

- CR, LF and CRLF segment separators; a UTF-8 byte-order mark; MLLP framing bytes
  (0x0B ... 0x1C 0x0D) left in the payload; blank lines.
- The literal two characters ``\\r`` used as a segment separator and MSH-2 written as
  ``^~\\\\&`` (Java string copy artefacts, LinuxForHealth samples).
- Any encoding characters declared in MSH-1/MSH-2, including 3-character MSH-2
  (component, repetition, escape; no subcomponents) and a 5th truncation character.
- Escape sequences ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\`` (hex bytes decoded in the
  message charset); formatting escapes (``\\.br\\``, ``\\.sp\\`` become a space, the
  others and ``\\H\\ \\N\\ \\Cxxyy\\ \\Mxxyyzz\\ \\Z..\\`` are dropped); an unterminated
  or unknown escape is kept as literal text.
- The explicit HL7 null ``""``: read as "no value".
- Z-segments (kept; the mapper ignores them).
- MSH-18 character sets (first repetition); without MSH-18 the bytes must be UTF-8.

Every failure is a :class:`schemas.errors.MappingError` with a stable code. Details are
sentences written here, never field values (senders log ACKs; the hub logs details).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache

from schemas.errors import ErrorCode, MappingError

_BOM = b"\xef\xbb\xbf"
_MLLP_START = b"\x0b"
_MLLP_END = b"\x1c"

# A segment id: three characters, an upper-case letter then upper-case letters/digits.
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
# The literal two characters "\r" followed by what looks like the start of a segment.
_LITERAL_CR_SPLIT = re.compile(r"\\r(?=[A-Z][A-Z0-9]{2}[^A-Za-z0-9\s])")

# HL7 table 0211 (alternate character sets) and common non-standard spellings.
_CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "US-ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO-8859-1": "iso8859-1",
    "ISO8859-1": "iso8859-1",
    "ISO-8859-15": "iso8859-15",
    "LATIN1": "iso8859-1",
    "LATIN-1": "iso8859-1",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "ISO IR87": "iso2022_jp",
    "ISO IR14": "shift_jis",
}

# Formatting escapes that read as a line break (mapped to a space in plain text).
_BREAKS = frozenset({".br", ".sp"})


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of one message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def specials(self) -> str:
        """The characters that make a value need splitting or unescaping."""
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_ENCODING = Encoding()


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """MSH read cheaply (ingest builds ACKs and routes with it). Values unescaped."""

    field_separator: str
    encoding_characters: str
    sending_application: str | None
    sending_facility: str | None
    receiving_application: str | None
    receiving_facility: str | None
    message_type: str | None
    trigger: str | None
    structure: str | None
    control_id: str | None
    processing_id: str | None
    version: str | None
    accept_ack_type: str | None
    application_ack_type: str | None
    charset: str | None
    timestamp: str | None
    """MSH-7 as sent (not parsed; see ``mappers.hl7v2.timestamps``)."""


class Segment:
    """One segment: ``fields[n]`` is field n (``fields[0]`` is the id).

    For MSH, ``fields[1]`` is MSH-1 (the field separator) and ``fields[2]`` MSH-2, so
    ``fields[n]`` is MSH-n for every n, like every other segment. Field strings are kept
    escaped; the accessors split and unescape on demand (most fields are never read).
    """

    __slots__ = ("_charset", "enc", "fields", "id")

    def __init__(self, seg_id: str, fields: list[str], enc: Encoding, charset: str) -> None:
        self.id = seg_id
        self.fields = fields
        self.enc = enc
        self._charset = charset

    def __repr__(self) -> str:  # never show values (PHI)
        return f"<Segment {self.id} fields={len(self.fields) - 1}>"

    def raw(self, n: int) -> str:
        """Field n as sent (escaped, all repetitions); empty string when absent."""
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        """The raw repetitions of field n (empty list when the field is empty)."""
        raw = self.raw(n)
        if not raw:
            return []
        if self.id == "MSH" and n <= 2:
            return [raw]
        return raw.split(self.enc.repetition)

    def components(self, rep: str) -> list[str]:
        """The raw components of one repetition."""
        return rep.split(self.enc.component)

    def value(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str | None:
        """Field n, repetition ``rep`` (0-based), component and subcomponent (1-based),
        unescaped and stripped; ``None`` when empty or the explicit null ``""``."""
        raw = self.raw(n)
        if not raw:
            return None
        if self.id == "MSH" and n <= 2:
            return raw
        enc = self.enc
        if rep or enc.repetition in raw:
            reps = raw.split(enc.repetition)
            if rep >= len(reps):
                return None
            raw = reps[rep]
        return self.pick(raw, comp, sub)

    def pick(self, raw: str, comp: int = 1, sub: int = 1) -> str | None:
        """Component ``comp`` / subcomponent ``sub`` of one raw repetition, as text."""
        enc = self.enc
        if comp > 1 or enc.component in raw:
            parts = raw.split(enc.component)
            if comp > len(parts):
                return None
            raw = parts[comp - 1]
        if enc.subcomponent and (sub > 1 or enc.subcomponent in raw):
            parts = raw.split(enc.subcomponent)
            if sub > len(parts):
                return None
            raw = parts[sub - 1]
        return self.text(raw)

    def text(self, raw: str) -> str | None:
        """A leaf value: unescaped and stripped, ``None`` when empty or ``""``."""
        esc = self.enc.escape
        if esc and esc in raw:
            raw = unescape(raw, self.enc, self._charset)
        raw = raw.strip()
        if not raw or raw == '""':
            return None
        return raw


class Message:
    """A parsed message: segments in order, the encoding and the charset used."""

    __slots__ = ("charset", "encoding", "segments")

    def __init__(self, segments: list[Segment], encoding: Encoding, charset: str) -> None:
        self.segments = segments
        self.encoding = encoding
        self.charset = charset

    def __repr__(self) -> str:
        return f"<Message segments={[s.id for s in self.segments]}>"

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, seg_id: str) -> Segment | None:
        """The first segment with this id, or ``None``."""
        for seg in self.segments:
            if seg.id == seg_id:
                return seg
        return None

    def all(self, seg_id: str) -> list[Segment]:
        """Every segment with this id, in order."""
        return [seg for seg in self.segments if seg.id == seg_id]


# --------------------------------------------------------------------------- escapes


def unescape(raw: str, enc: Encoding, charset: str = "utf-8") -> str:
    """Decode HL7 escape sequences in one leaf value (see the module docstring)."""
    esc = enc.escape
    parts = raw.split(esc)
    # parts alternate text, sequence, text, ...; an even count means an unterminated one.
    out: list[str] = [parts[0]]
    i = 1
    n = len(parts)
    while i < n:
        if i + 1 >= n:  # no closing escape character: keep literally
            out.append(esc + parts[i])
            break
        out.append(_decode_sequence(parts[i], enc, charset))
        out.append(parts[i + 1])
        i += 2
    return "".join(out)


def _decode_sequence(seq: str, enc: Encoding, charset: str) -> str:
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
    }
    if seq in simple:
        return simple[seq]
    if not seq:
        # "\\" is not a valid sequence; keep both characters.
        return enc.escape + enc.escape
    head = seq[0]
    if head == "X":
        return _decode_hex(seq[1:], enc, charset)
    if head == ".":
        return " " if seq[:3] in _BREAKS else ""
    if head in "HNCMZ":
        return ""
    return enc.escape + seq + enc.escape


def _decode_hex(digits: str, enc: Encoding, charset: str) -> str:
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return enc.escape + "X" + digits + enc.escape
    return data.decode(charset, errors="replace")


# --------------------------------------------------------------------------- framing


def _strip_frame(raw: bytes) -> bytes:
    """Remove MLLP framing bytes, a BOM and surrounding whitespace."""
    data = raw.strip()
    if data.startswith(_MLLP_START):
        data = data.lstrip(_MLLP_START).lstrip()
    if data.startswith(_BOM):
        data = data[len(_BOM):].lstrip()
    end = data.rfind(_MLLP_END)
    if end != -1 and not data[end + 1:].strip():
        data = data[:end].rstrip()
    return data


def _segment_lines(text: str) -> list[str]:
    """Split decoded text into segment strings (CR, LF, CRLF, literal ``\\r``)."""
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    if "\\r" in text:
        text = _LITERAL_CR_SPLIT.sub("\r", text)
    return [line for line in text.split("\r") if line.strip()]


# --------------------------------------------------------------------------- header


def _read_encoding(msh: str) -> Encoding:
    """MSH-1 and MSH-2 -> :class:`Encoding`; BAD_ENCODING_CHARACTERS when unusable."""
    if len(msh) < 4:
        raise MappingError(ErrorCode.BAD_ENCODING_CHARACTERS,
                           "MSH is too short to hold the field separator (MSH-1).",
                           segment="MSH", position="MSH-1")
    fsep = msh[3]
    if fsep.isalnum() or fsep.isspace():
        raise MappingError(ErrorCode.BAD_ENCODING_CHARACTERS,
                           "MSH-1 field separator is a letter, digit or space.",
                           segment="MSH", position="MSH-1")
    end = msh.find(fsep, 4)
    chars = msh[4:] if end == -1 else msh[4:end]
    # "^~\\&": a Java-string copy doubled the escape character; undo it.
    if len(chars) == 5 and chars[2] == chars[3]:
        chars = chars[:3] + chars[4]
    if len(chars) not in (3, 4, 5):
        raise MappingError(ErrorCode.BAD_ENCODING_CHARACTERS,
                           "MSH-2 must hold 4 encoding characters.",
                           segment="MSH", position="MSH-2")
    all_chars = fsep + chars  # a 5th (v2.7+ truncation) character must be distinct too
    if len(set(all_chars)) != len(all_chars) or any(
        c.isalnum() or c.isspace() or c == '"' for c in chars
    ):
        raise MappingError(ErrorCode.BAD_ENCODING_CHARACTERS,
                           "MSH-2 encoding characters must be distinct punctuation "
                           "different from the field separator.",
                           segment="MSH", position="MSH-2")
    sub = chars[3] if len(chars) >= 4 else ""  # the truncation character is not used
    return Encoding(fsep, chars[0], chars[1], chars[2], sub)


def _msh_fields(msh: str, enc: Encoding) -> list[str]:
    """MSH split so that index n is MSH-n (MSH-1 and MSH-2 are kept whole)."""
    rest = msh[4:].split(enc.field)
    # rest[0] is MSH-2 as sent; keep it raw for the header record.
    return ["MSH", enc.field, *rest]


def _first_line(data: bytes) -> bytes:
    """The bytes of the first segment (up to CR or LF)."""
    cut = len(data)
    for sep in (b"\r", b"\n"):
        i = data.find(sep)
        if i != -1 and i < cut:
            cut = i
    line = data[:cut]
    lit = line.find(b"\\r", 8)
    while lit != -1:
        if re.match(rb"[A-Z][A-Z0-9]{2}[^A-Za-z0-9\s]", line[lit + 2:lit + 6]):
            return line[:lit]
        lit = line.find(b"\\r", lit + 2)
    return line


def _locate_msh(raw: bytes) -> bytes:
    """The message bytes starting at MSH; EMPTY_MESSAGE or MISSING_MSH otherwise."""
    data = _strip_frame(raw)
    if not data:
        raise MappingError(ErrorCode.EMPTY_MESSAGE, "The message is empty.")
    if not data.startswith(b"MSH"):
        raise MappingError(ErrorCode.MISSING_MSH,
                           "The message does not start with an MSH segment.",
                           segment="MSH")
    return data


def charset_codec(declared: str | None) -> str:
    """The Python codec for an MSH-18 value (first repetition); UTF-8 when empty.

    Raises UNKNOWN_CHARSET for a value this hub cannot decode.
    """
    if not declared:
        return "utf-8"
    name = declared.strip().upper()
    codec = _CHARSETS.get(name)
    if codec is None:
        codec = _CHARSETS.get(name.replace("_", " "))
    if codec is None:
        raise MappingError(ErrorCode.UNKNOWN_CHARSET,
                           "MSH-18 names a character set this hub does not support.",
                           segment="MSH", position="MSH-18")
    return codec


def read_header(raw: bytes) -> MessageHeader:
    """Read MSH only (cheap; ingest calls it for every message to build the ACK).

    Reads MSH-1, MSH-2, MSH-3.1 sending application, MSH-4.1 sending facility, MSH-5.1,
    MSH-6.1, MSH-7 (raw), MSH-9.1/9.2/9.3 type, trigger and structure, MSH-10 control
    id, MSH-11.1 processing id, MSH-12.1 version, MSH-15/16 ack types and MSH-18 (first
    repetition). Content after MSH is not looked at, and MSH is decoded leniently
    (undecodable bytes replaced) so a bad byte later in the message still gets an ACK.
    Raises :class:`MappingError` (EMPTY_MESSAGE, MISSING_MSH, BAD_ENCODING_CHARACTERS).
    """
    line = _first_line(_locate_msh(raw))
    head = line.decode("latin-1")
    enc = _read_encoding(head)
    charset = _charset_of(head, enc)
    codec = _CHARSETS.get(charset.upper(), "utf-8") if charset else "utf-8"
    try:
        text = line.decode(codec, errors="replace")
    except LookupError:  # pragma: no cover - every codec in the table exists
        text = head
    seg = Segment("MSH", _msh_fields(text, enc), enc, codec)
    return _header_from_segment(seg, enc, charset)


def _charset_of(msh_latin1: str, enc: Encoding) -> str | None:
    fields = msh_latin1.split(enc.field)
    if len(fields) <= 17:
        return None
    value = fields[17].split(enc.repetition)[0].split(enc.component)[0].strip()
    return value or None


def _header_from_segment(msh: Segment, enc: Encoding, charset: str | None) -> MessageHeader:
    return MessageHeader(
        field_separator=enc.field,
        encoding_characters=enc.component + enc.repetition + enc.escape + enc.subcomponent,
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        receiving_application=msh.value(5),
        receiving_facility=msh.value(6),
        message_type=_upper(msh.value(9, 1)),
        trigger=_upper(msh.value(9, 2)),
        structure=_upper(msh.value(9, 3)),
        control_id=msh.value(10),
        processing_id=_upper(msh.value(11, 1)),
        version=msh.value(12, 1),
        accept_ack_type=_upper(msh.value(15)),
        application_ack_type=_upper(msh.value(16)),
        charset=charset,
        timestamp=msh.value(7, 1),
    )


def _upper(value: str | None) -> str | None:
    return value.upper() if value else value


# --------------------------------------------------------------------------- message


def parse_message(raw: bytes) -> Message:
    """Parse one message's bytes into segments (see the module docstring).

    Raises :class:`MappingError`: EMPTY_MESSAGE, MISSING_MSH, BAD_ENCODING_CHARACTERS,
    UNKNOWN_CHARSET (MSH-18), INVALID_CHARSET (bytes not valid in the declared charset,
    or not UTF-8 when none is declared), BAD_SEGMENT (a segment id that is not three
    upper-case letters/digits), TRUNCATED_SEGMENT (MSH cut before MSH-12, or a last
    segment cut inside its id).
    """
    data = _locate_msh(raw)
    head = _first_line(data).decode("latin-1")
    enc = _read_encoding(head)
    codec = charset_codec(_charset_of(head, enc))
    text = _decode(data, codec)
    lines = _segment_lines(text)
    segments = [_make_msh(lines[0], enc, codec, len(lines) == 1)]
    last = len(lines) - 1
    for i in range(1, len(lines)):
        segments.append(_make_segment(lines[i], enc, codec, i == last))
    return Message(segments, enc, codec)


def _decode(data: bytes, codec: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        if codec == "utf-8":
            detail = "The message is not valid UTF-8 and MSH-18 declares no other charset."
        else:
            detail = "The message bytes are not valid in the charset MSH-18 declares."
        raise MappingError(ErrorCode.INVALID_CHARSET, detail, segment="MSH",
                           position="MSH-18") from None


def _make_msh(line: str, enc: Encoding, codec: str, only: bool) -> Segment:
    fields = _msh_fields(line, enc)
    if len(fields) <= 12 and only:
        raise MappingError(ErrorCode.TRUNCATED_SEGMENT,
                           "MSH ends before MSH-12 (version) and nothing follows it.",
                           segment="MSH")
    return Segment("MSH", fields, enc, codec)


def _make_segment(line: str, enc: Encoding, codec: str, last: bool) -> Segment:
    line = line.strip(" \t")
    seg_id = line[:3]
    ok_id = _SEGMENT_ID.match(seg_id) is not None
    if ok_id and len(line) > 3 and line[3] != enc.field:
        ok_id = False
    if not ok_id:
        if last and len(line) < 3:
            raise MappingError(ErrorCode.TRUNCATED_SEGMENT,
                               "The last segment is cut off inside its segment id.")
        raise MappingError(ErrorCode.BAD_SEGMENT,
                           "A segment id is not three upper-case letters or digits.")
    if seg_id == "MSH":
        raise MappingError(ErrorCode.BAD_SEGMENT,
                           "A second MSH segment appears inside one message; split the "
                           "file into messages first.", segment="MSH")
    return Segment(seg_id, line.split(enc.field), enc, codec)


# --------------------------------------------------------------------------- hl7apy


def validate_with_hl7apy(raw: bytes) -> None:
    """Strict structure validation with hl7apy (slow: about 55 messages/s; never on the
    hot path). Raises :class:`MappingError` (BAD_SEGMENT) for anything hl7apy rejects.
    """
    message = parse_message(raw)  # our own checks (charset, MSH) first
    text = "\r".join(
        seg.enc.field.join(seg.fields[:1] + seg.fields[2:]) if seg.id == "MSH"
        else seg.enc.field.join(seg.fields)
        for seg in message.segments
    )
    try:
        from hl7apy.parser import parse_message as hl7apy_parse
        from hl7apy.validation import VALIDATION_LEVEL

        msg = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT,
                           find_groups=True)
        msg.validate()
    except Exception as exc:  # hl7apy raises many unrelated types; all mean "invalid"
        raise MappingError(ErrorCode.BAD_SEGMENT,
                           "The message structure does not validate against the HL7 "
                           f"v2 standard ({type(exc).__name__}).") from None


@lru_cache(maxsize=64)
def codec_exists(name: str) -> bool:
    """True when Python knows the codec (used by tests of the charset table)."""
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True
