"""HL7 v2 DTM/TS values -> aware datetimes and dates.

``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. An offset in the value is kept as
is (never converted to UTC or to the hub's zone: a downstream reader sees what the
sender said). A value without an offset is localised in the feed's zone (``default_tz``,
an IANA name) because HL7 says a missing offset means the sender's local time. A time
that does not exist (spring-forward gap) or is ambiguous (fall-back) is resolved by
``zoneinfo``'s ``fold=0`` rule: the earlier offset.

Malformed values return ``None``: a bad timestamp in a non-essential field must not
cost the whole message (REFERENCE.md section 3: do not reject what can be used).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?\Z"
)


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA zone name; ``ValueError`` for an unknown name."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


@lru_cache(maxsize=64)
def _offset(text: str) -> tzinfo | None:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59:
        return None
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_datetime(value: str | None, tz: tzinfo) -> datetime | None:
    """An HL7 DTM/TS value -> aware datetime, or ``None`` when absent or malformed.

    Missing month/day default to 1 and missing time to midnight (so a date-only value
    becomes local midnight). ``tz`` applies only when the value carries no offset.
    """
    if not value:
        return None
    m = _DTM.match(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, off = m.groups()
    try:
        micro = int((frac or "0").ljust(6, "0")[:6])
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                         int(minute or 0), int(second or 0), micro)
    except ValueError:
        return None
    if off is None:
        return naive.replace(tzinfo=tz)
    offset_tz = _offset(off)
    if offset_tz is None:
        return None
    return naive.replace(tzinfo=offset_tz)


def parse_date(value: str | None) -> date | None:
    """The calendar date of an HL7 DT/DTM value (PID-7 birth date), as written.

    The date part is taken literally, offset or not: a birth date is a civil date, not
    an instant, so it is never shifted between zones. Year-only or year-month values
    return ``None`` rather than invent a day.
    """
    if not value:
        return None
    m = _DTM.match(value.strip())
    if m is None or m.group(3) is None:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
