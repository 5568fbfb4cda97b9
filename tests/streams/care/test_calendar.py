"""Business-day and calendar-day deadlines (CMS TCM "2 business days of the discharge date").

Expected dates are written out by hand from the OPM federal holiday calendar, not derived
from the ``holidays`` package the code uses.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.care.calendar import (
    business_day_deadline,
    calendar_day_deadline,
    end_of_local_day,
    holiday_dates,
    is_business_day,
)

NY = "America/New_York"
LA = "America/Los_Angeles"
HNL = "Pacific/Honolulu"


def at(d: date, hour: int = 10, minute: int = 0, tz: str = NY) -> datetime:
    return datetime.combine(d, time(hour, minute), tzinfo=ZoneInfo(tz))


def eod(d: date, offset_hours: int) -> tuple[date, time, timedelta]:
    return d, time(23, 59, 59), timedelta(hours=offset_hours)


def parts(dt: datetime) -> tuple[date, time, timedelta | None]:
    return dt.date(), dt.timetz().replace(tzinfo=None), dt.utcoffset()


# --- weekends and the day that counts ---------------------------------------------------


@pytest.mark.parametrize(
    ("discharge", "due"),
    [
        (date(2026, 1, 5), date(2026, 1, 7)),  # Mon -> Wed
        (date(2026, 1, 6), date(2026, 1, 8)),  # Tue -> Thu
        (date(2026, 1, 7), date(2026, 1, 9)),  # Wed -> Fri
        (date(2026, 1, 8), date(2026, 1, 12)),  # Thu -> Mon
        (date(2026, 1, 9), date(2026, 1, 13)),  # Fri -> Tue
        (date(2026, 1, 10), date(2026, 1, 13)),  # Sat -> Tue
        (date(2026, 1, 11), date(2026, 1, 13)),  # Sun -> Tue
    ],
)
def test_two_business_days_across_weekends(discharge: date, due: date) -> None:
    got = business_day_deadline(at(discharge), 2, NY)
    assert parts(got) == eod(due, -5)
    assert got.tzinfo == ZoneInfo(NY)


def test_one_business_day() -> None:
    assert business_day_deadline(at(date(2026, 1, 9)), 1, NY).date() == date(2026, 1, 12)
    assert business_day_deadline(at(date(2026, 1, 8)), 1, NY).date() == date(2026, 1, 9)


def test_discharge_on_a_holiday_counts_from_that_date() -> None:
    # Labor Day 2026 (Mon Sep 7) is day 0 -> Tue (1), Wed (2).
    assert business_day_deadline(at(date(2026, 9, 7)), 2, NY).date() == date(2026, 9, 9)


def test_late_evening_in_new_york_uses_the_local_date() -> None:
    # Thursday 8 January 2026, 21:30 EST is already Friday 02:30 in UTC. Thursday counts:
    # Fri (1), Mon (2). Counting the UTC date would give Tuesday.
    local = at(date(2026, 1, 8), 21, 30)
    as_utc = local.astimezone(UTC)
    assert as_utc.date() == date(2026, 1, 9)
    for start in (local, as_utc):
        assert parts(business_day_deadline(start, 2, NY)) == eod(date(2026, 1, 12), -5)
        assert parts(calendar_day_deadline(start, 7, NY)) == eod(date(2026, 1, 15), -5)


def test_just_after_local_midnight_is_the_next_day() -> None:
    start = at(date(2026, 1, 9), 0, 5)  # Friday 00:05 local, still Thursday in Honolulu
    assert business_day_deadline(start, 2, NY).date() == date(2026, 1, 13)
    assert business_day_deadline(start, 2, HNL).date() == date(2026, 1, 12)


def test_naive_start_is_rejected() -> None:
    with pytest.raises(ValueError):
        business_day_deadline(datetime(2026, 1, 9, 10), 2, NY)
    with pytest.raises(ValueError):
        calendar_day_deadline(datetime(2026, 1, 9, 10), 7, NY)


def test_bad_day_counts_are_rejected() -> None:
    with pytest.raises(ValueError):
        business_day_deadline(at(date(2026, 1, 9)), 0, NY)
    with pytest.raises(ValueError):
        calendar_day_deadline(at(date(2026, 1, 9)), -1, NY)


def test_calendar_day_zero_is_end_of_discharge_day() -> None:
    assert parts(calendar_day_deadline(at(date(2026, 1, 9), 8), 0, NY)) == eod(date(2026, 1, 9), -5)


# --- US federal holidays, 2026 and 2027 --------------------------------------------------

HOLIDAY_WINDOWS = [
    # (holiday, discharge date, 2-business-day due date)
    ("New Year's Day 2026 (Thu)", date(2025, 12, 31), date(2026, 1, 5)),
    ("MLK Day 2026", date(2026, 1, 16), date(2026, 1, 21)),
    ("Presidents Day 2026", date(2026, 2, 13), date(2026, 2, 18)),
    ("Memorial Day 2026", date(2026, 5, 22), date(2026, 5, 27)),
    ("Juneteenth 2026 (Fri)", date(2026, 6, 18), date(2026, 6, 23)),
    ("July 4 2026 (Sat) observed Fri Jul 3", date(2026, 7, 2), date(2026, 7, 7)),
    ("Labor Day 2026", date(2026, 9, 4), date(2026, 9, 9)),
    ("Columbus Day 2026", date(2026, 10, 9), date(2026, 10, 14)),
    ("Veterans Day 2026 (Wed)", date(2026, 11, 10), date(2026, 11, 13)),
    ("Thanksgiving 2026 (Wed before -> Mon)", date(2026, 11, 25), date(2026, 11, 30)),
    ("Christmas 2026 (Fri)", date(2026, 12, 24), date(2026, 12, 29)),
    ("New Year's Day 2027 (Fri)", date(2026, 12, 31), date(2027, 1, 5)),
    ("MLK Day 2027", date(2027, 1, 15), date(2027, 1, 20)),
    ("Presidents Day 2027", date(2027, 2, 12), date(2027, 2, 17)),
    ("Memorial Day 2027", date(2027, 5, 28), date(2027, 6, 2)),
    ("Juneteenth 2027 (Sat) observed Fri Jun 18", date(2027, 6, 17), date(2027, 6, 22)),
    ("July 4 2027 (Sun) observed Mon Jul 5", date(2027, 7, 2), date(2027, 7, 7)),
    ("Labor Day 2027", date(2027, 9, 3), date(2027, 9, 8)),
    ("Columbus Day 2027", date(2027, 10, 8), date(2027, 10, 13)),
    ("Veterans Day 2027 (Thu)", date(2027, 11, 10), date(2027, 11, 15)),
    ("Thanksgiving 2027 (Wed before -> Mon)", date(2027, 11, 24), date(2027, 11, 29)),
    ("Christmas 2027 (Sat) observed Fri Dec 24", date(2027, 12, 23), date(2027, 12, 28)),
    ("New Year's Day 2028 (Sat) observed Fri Dec 31", date(2027, 12, 30), date(2028, 1, 4)),
]


@pytest.mark.parametrize(
    ("discharge", "due"),
    [(d, due) for _, d, due in HOLIDAY_WINDOWS],
    ids=[name for name, _, _ in HOLIDAY_WINDOWS],
)
def test_federal_holidays_extend_the_window(discharge: date, due: date) -> None:
    got = business_day_deadline(at(discharge, 16), 2, NY)
    assert got.date() == due
    assert got.timetz().replace(tzinfo=None) == time(23, 59, 59)


FEDERAL_HOLIDAYS_2026_2027 = [
    date(2026, 1, 1),
    date(2026, 1, 19),
    date(2026, 2, 16),
    date(2026, 5, 25),
    date(2026, 6, 19),
    date(2026, 7, 3),  # observed
    date(2026, 9, 7),
    date(2026, 10, 12),
    date(2026, 11, 11),
    date(2026, 11, 26),
    date(2026, 12, 25),
    date(2027, 1, 1),
    date(2027, 1, 18),
    date(2027, 2, 15),
    date(2027, 5, 31),
    date(2027, 6, 18),  # observed
    date(2027, 7, 5),  # observed
    date(2027, 9, 6),
    date(2027, 10, 11),
    date(2027, 11, 11),
    date(2027, 11, 25),
    date(2027, 12, 24),  # observed
    date(2027, 12, 31),  # observed (New Year's Day 2028)
]


@pytest.mark.parametrize("d", FEDERAL_HOLIDAYS_2026_2027, ids=str)
def test_federal_holiday_weekdays_are_not_business_days(d: date) -> None:
    assert d.weekday() < 5
    assert not is_business_day(d)


@pytest.mark.parametrize(
    "d",
    [
        date(2026, 11, 27),  # day after Thanksgiving: not a federal holiday
        date(2026, 12, 24),  # Christmas Eve (Thu): not a federal holiday
        date(2026, 12, 31),  # New Year's Eve 2026 (Thu)
        date(2026, 4, 3),  # Good Friday: not federal
        date(2026, 1, 2),
    ],
    ids=str,
)
def test_ordinary_weekdays_are_business_days(d: date) -> None:
    assert is_business_day(d)


def test_weekends_are_not_business_days() -> None:
    assert not is_business_day(date(2026, 1, 10))
    assert not is_business_day(date(2026, 1, 11))
    assert not is_business_day(date(2026, 7, 4))  # the holiday itself, on a Saturday


def test_holiday_calendar_has_exactly_the_federal_weekday_holidays() -> None:
    weekday_holidays = sorted(
        d for y in (2026, 2027) for d in holiday_dates("US", y) if d.weekday() < 5
    )
    assert weekday_holidays == FEDERAL_HOLIDAYS_2026_2027


def test_is_business_day_rejects_datetimes() -> None:
    with pytest.raises(TypeError):
        is_business_day(datetime(2026, 1, 5, 10, tzinfo=UTC))


def test_other_country_calendar() -> None:
    # Canada Day (Wed 1 July 2026) is a CA holiday, not a US one.
    assert not is_business_day(date(2026, 7, 1), "CA")
    assert is_business_day(date(2026, 7, 1), "US")
    assert business_day_deadline(at(date(2026, 6, 30)), 2, NY, "CA").date() == date(2026, 7, 3)


# --- DST --------------------------------------------------------------------------------


def test_dst_start_week_new_york() -> None:
    # DST starts Sun 8 March 2026. Friday 6 March discharge (EST) -> due Tue 10 March EDT.
    start = at(date(2026, 3, 6), 15)
    assert start.utcoffset() == timedelta(hours=-5)
    assert parts(business_day_deadline(start, 2, NY)) == eod(date(2026, 3, 10), -4)
    assert parts(calendar_day_deadline(start, 7, NY)) == eod(date(2026, 3, 13), -4)
    # The day of the change itself ends at 23:59:59 EDT.
    assert parts(calendar_day_deadline(at(date(2026, 3, 7)), 1, NY)) == eod(date(2026, 3, 8), -4)


def test_dst_end_week_new_york() -> None:
    # DST ends Sun 1 November 2026. Friday 30 October discharge (EDT) -> Tue 3 Nov EST.
    start = at(date(2026, 10, 30), 15)
    assert start.utcoffset() == timedelta(hours=-4)
    assert parts(business_day_deadline(start, 2, NY)) == eod(date(2026, 11, 3), -5)
    assert parts(calendar_day_deadline(start, 14, NY)) == eod(date(2026, 11, 13), -5)
    assert parts(calendar_day_deadline(at(date(2026, 10, 31)), 1, NY)) == eod(date(2026, 11, 1), -5)


def test_dst_los_angeles() -> None:
    start = at(date(2026, 3, 6), 18, tz=LA)
    assert parts(business_day_deadline(start, 2, LA)) == eod(date(2026, 3, 10), -7)
    start = at(date(2026, 10, 30), 18, tz=LA)
    assert parts(business_day_deadline(start, 2, LA)) == eod(date(2026, 11, 3), -8)


def test_honolulu_has_no_dst_and_uses_the_federal_calendar() -> None:
    # Thu 2 July 2026 20:00 HST (Fri 06:00 UTC); Fri 3 July is the observed Independence
    # Day -> Mon 6 (1), Tue 7 (2). Hawaii's state holidays are not applied.
    start = at(date(2026, 7, 2), 20, tz=HNL)
    assert start.astimezone(UTC).date() == date(2026, 7, 3)
    assert parts(business_day_deadline(start, 2, HNL)) == eod(date(2026, 7, 7), -10)
    assert parts(calendar_day_deadline(start, 7, HNL)) == eod(date(2026, 7, 9), -10)
    # Kamehameha Day (Thu 11 June 2026) is a Hawaii state holiday only.
    assert is_business_day(date(2026, 6, 11))


def test_los_angeles_evening_is_next_day_in_new_york_and_utc() -> None:
    # Thu 8 Jan 2026 22:00 PST = Fri 01:00 EST = Fri 06:00 UTC: Thursday counts in LA.
    start = at(date(2026, 1, 8), 22, tz=LA)
    assert parts(business_day_deadline(start, 2, LA)) == eod(date(2026, 1, 12), -8)
    assert business_day_deadline(start, 2, NY).date() == date(2026, 1, 13)


def test_end_of_day_in_zones_with_transitions_at_midnight() -> None:
    # Santiago falls back at 24:00 on Sat 4 April 2026: 23:xx happens twice; the later one.
    got = end_of_local_day(date(2026, 4, 4), "America/Santiago")
    assert parts(got) == eod(date(2026, 4, 4), -4)
    # Nuuk springs forward at 23:00 on Sat 28 March 2026 (tzdata 2023c and later): the
    # day's last second is 22:59:59.
    nuuk = ZoneInfo("America/Nuuk")
    if datetime(2026, 3, 29, 12, tzinfo=nuuk).utcoffset() != timedelta(hours=-1):
        pytest.skip("tz database older than the 2023 Greenland rules")
    got = end_of_local_day(date(2026, 3, 28), "America/Nuuk")
    assert got.date() == date(2026, 3, 28)
    assert got.timetz().replace(tzinfo=None) == time(22, 59, 59)
    next_second = got.astimezone(UTC) + timedelta(seconds=1)
    assert next_second.astimezone(nuuk).date() == date(2026, 3, 29)


# --- properties -------------------------------------------------------------------------

ZONES = [NY, LA, HNL, "America/Chicago", "America/Denver", "America/Anchorage", "UTC"]


@st.composite
def starts(draw: st.DrawFn) -> tuple[datetime, str]:
    tz = draw(st.sampled_from(ZONES))
    naive = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 1)))
    start_zone = draw(st.sampled_from([tz, "UTC", "Asia/Tokyo"]))
    return naive.replace(tzinfo=ZoneInfo(start_zone)), tz


def _business_days_between(after: date, through: date) -> int:
    n, d = 0, after
    while d < through:
        d += timedelta(days=1)
        if d.weekday() < 5 and is_business_day(d):
            n += 1
    return n


@settings(max_examples=300, deadline=None)
@given(start_tz=starts(), days=st.integers(min_value=1, max_value=30))
def test_deadline_is_exactly_n_business_days_after_the_local_date(
    start_tz: tuple[datetime, str], days: int
) -> None:
    start, tz = start_tz
    zone = ZoneInfo(tz)
    local_date = start.astimezone(zone).date()
    due = business_day_deadline(start, days, tz)
    assert due.tzinfo == zone
    assert due.timetz().replace(tzinfo=None) == time(23, 59, 59)
    assert due.utcoffset() == due.astimezone(UTC).astimezone(zone).utcoffset()
    assert due.date() > local_date
    assert due.weekday() < 5
    assert is_business_day(due.date())
    assert _business_days_between(local_date, due.date()) == days
    assert due > start


@settings(max_examples=200, deadline=None)
@given(start_tz=starts(), days=st.integers(min_value=0, max_value=60))
def test_calendar_deadline_is_end_of_local_day(start_tz: tuple[datetime, str], days: int) -> None:
    start, tz = start_tz
    zone = ZoneInfo(tz)
    due = calendar_day_deadline(start, days, tz)
    assert due.date() == start.astimezone(zone).date() + timedelta(days=days)
    assert due.timetz().replace(tzinfo=None) == time(23, 59, 59)
    # The offset is the one in force at that instant (a round trip through UTC keeps it).
    assert due.astimezone(UTC).astimezone(zone).utcoffset() == due.utcoffset()
    assert due >= start
