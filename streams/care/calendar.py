"""Business-day and calendar-day deadlines for care follow-up (pure: time comes in as arguments).

Interpretation of "within N business days of the discharge date" (CMS Transitional Care
Management, CPT 99495/99496; see REFERENCE.md section 1):

* The day that counts is the **local calendar date** of the discharge in the facility's
  time zone ``tz`` (a discharge at 21:00 in New York on a Thursday is a Thursday
  discharge even though it is already Friday in UTC).
* That date is day 0, **whatever day it is** (a weekday, a weekend day or a holiday).
  The deadline is the N-th business day *after* it: business day 1 is the first business
  day strictly after the discharge date. Discharge Friday -> Monday (1), Tuesday (2);
  discharge Saturday -> Monday (1), Tuesday (2); discharge on the Wednesday before
  Thanksgiving -> Friday (1), Monday (2).
* Business days are Monday to Friday, minus the public holidays of ``country`` from the
  ``holidays`` package (for ``"US"`` with no subdivision: the federal holidays of
  5 U.S.C. 6103). Observed dates count as holidays (Independence Day on a Saturday makes
  the Friday before a non-business day). State holidays are not applied.
* The deadline is the **end of that local day**: 23:59:59 local time, an aware datetime
  in ``tz`` whose UTC offset is the one in force at that moment (so a due date in the
  week after a DST change carries the new offset). CMS counts business days "without
  respect to normal practice hours", so the whole day is available.

Holiday calendars are cached per (country, year) with :func:`functools.lru_cache`; the
cache holds immutable frozensets, so the module has no mutable global state.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "business_day_deadline",
    "calendar_day_deadline",
    "end_of_local_day",
    "holiday_dates",
    "is_business_day",
]

END_OF_DAY = time(23, 59, 59)
"""Wall-clock time a day-granular deadline falls due (local to the facility)."""


@lru_cache(maxsize=256)
def holiday_dates(country: str, year: int) -> frozenset[date]:
    """The public holidays of ``country`` (ISO 3166 alpha-2, no subdivision) that fall in
    ``year``, observed dates included (for ``"US"``: the federal calendar).

    Neighbouring years are generated too and filtered by date, so an observed date that
    falls in ``year`` for a holiday of the next year (New Year's Day 2028, a Saturday, is
    observed on Friday 31 December 2027) is included whichever year the package files it
    under.
    """
    calendar = holidays.country_holidays(
        country.upper(), years=(year - 1, year, year + 1), observed=True
    )
    return frozenset(d for d in calendar if d.year == year)


def is_business_day(d: date, country: str = "US") -> bool:
    """True for Monday-Friday dates that are not public holidays (observed dates included)
    of ``country``. ``d`` must be a :class:`date`, not a :class:`datetime` (convert to the
    local date first: which day an instant falls on depends on the time zone)."""
    if isinstance(d, datetime):
        raise TypeError("is_business_day takes a local date, not a datetime")
    return d.weekday() < 5 and d not in holiday_dates(country, d.year)


def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _local_date(start: datetime, zone: ZoneInfo) -> date:
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be an aware datetime (naive times are ambiguous)")
    return start.astimezone(zone).date()


def end_of_local_day(d: date, tz: str) -> datetime:
    """23:59:59 on local date ``d`` in ``tz``, aware, with the offset in force then.

    Where 23:59:59 occurs twice (a zone that falls back at midnight) the later instant is
    taken. Where it does not exist (a DST gap at the end of the day, as in America/Nuuk
    since 2024, 23:00 -> 00:00) the last whole second of the local day is returned
    (22:59:59 there).
    """
    zone = _zone(tz)
    candidate = datetime.combine(d, END_OF_DAY, tzinfo=zone).replace(fold=1)
    normalised = candidate.astimezone(UTC).astimezone(zone)
    if normalised.date() == d and normalised.time() == END_OF_DAY:
        return normalised
    # 23:59:59 falls in a gap: find the last whole second whose local date is still ``d``.
    # (A date the zone skipped altogether ends where the day before it ended.)
    noon = int(datetime.combine(d, time(12), tzinfo=zone).timestamp())
    lo, hi = noon - 36 * 3600, noon + 36 * 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).date() <= d:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(lo, zone)


def business_day_deadline(start: datetime, days: int, tz: str, country: str = "US") -> datetime:
    """End (23:59:59 local, aware in ``tz``) of the ``days``-th business day after the local
    calendar date of ``start`` in ``tz``; see the module docstring for the interpretation.

    ``start`` must be aware (any offset: it is converted to ``tz`` first); ``days`` >= 1.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    zone = _zone(tz)
    current = _local_date(start, zone)
    remaining = days
    while remaining:
        current += timedelta(days=1)
        if is_business_day(current, country):
            remaining -= 1
    return end_of_local_day(current, tz)


def calendar_day_deadline(start: datetime, days: int, tz: str) -> datetime:
    """End (23:59:59 local, aware in ``tz``) of the local day ``days`` calendar days after
    the local date of ``start`` (the discharge date is day 0; ``days`` >= 0). The result's
    UTC offset is the one in force on that day, so DST changes in between are handled."""
    if days < 0:
        raise ValueError("days must not be negative")
    zone = _zone(tz)
    return end_of_local_day(_local_date(start, zone) + timedelta(days=days), tz)
