"""The case-management roster: teams, managers, shifts, caps (pure; no I/O, no clock).

Ops teams write the roster as YAML (``hub/samples/roster.yaml`` is the documented
example); it also travels as JSON on a compacted config topic, so it can change without a
restart. The field names below are a contract with those files: add optional fields,
never rename.

Shift semantics (all in the manager's own IANA time zone):

* A shift ``{days: [mon], start: "22:00", end: "06:00"}`` crosses midnight and belongs to
  the day it starts: it runs Monday 22:00 to Tuesday 06:00. ``end: "24:00"`` means the
  end of the start day; ``start == end`` is refused as ambiguous.
* A shift is the half-open interval ``[start, end)`` of real instants, so the times keep
  their wall-clock meaning across DST changes (a 22:00-06:00 night shift lasts 9 hours on
  the night clocks fall back). A wall-clock time skipped by a spring-forward change is
  read with the offset in force before the change (02:30 on that night is 03:30
  daylight time); a repeated wall-clock time (fall back) is its first occurrence.
* A PTO date (the manager's local calendar date) is off for the whole day, including the
  part of a night shift that started the evening before; a shift that starts on a PTO
  date is not worked at all, including its hours after midnight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.configfile import load_yaml, validation_problems

__all__ = [
    "DAYS",
    "Manager",
    "Roster",
    "RosterError",
    "Shift",
    "Team",
    "next_shift_start",
    "on_pto",
    "on_shift",
    "parse_roster",
    "shift_occurrences",
    "teams_for",
]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in ``date.weekday()`` order."""

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class RosterError(ValueError):
    """A roster that cannot be used. The message names every problem by its path
    (``managers[2].timezone``) and never echoes a value other than an id."""

    def __init__(self, problems: str | list[str] | tuple[str, ...]) -> None:
        # A plain string is one problem.
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems))
        count = len(self.problems)
        head = "invalid roster" if count == 1 else f"invalid roster ({count} problems)"
        super().__init__(f"{head}: " + "; ".join(self.problems))

    def __reduce__(self) -> tuple[type[RosterError], tuple[tuple[str, ...]]]:
        # Rebuild from the problems, not from the formatted message.
        return (type(self), (self.problems,))


class _Model(BaseModel):
    # frozen: a roster is shared by every decision of a worker and must not be changed
    # behind its back; extra=forbid: a typo in ops' YAML (``cap_point``) is an error, not a
    # silently ignored field; numbers coerced to strings because unit and payer ids are
    # often numeric in YAML (``units: [4]``).
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    # Derived values (indexes, memos) are cached_property entries in __dict__: never
    # fields, never stored, ignored by equality and hashing. A copy with other fields
    # must not inherit them.
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False
                   ) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        fields = type(self).model_fields
        for name in [n for n in copied.__dict__ if n not in fields]:
            del copied.__dict__[name]
        return copied


def _minutes(hhmm: str) -> int:
    """``"HH:MM"`` (or ``"24:00"``) -> minutes after midnight (validated upstream)."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Shift(_Model):
    """A weekly shift in the manager's time zone (see the module docstring)."""

    days: tuple[Day, ...] = Field(min_length=1)
    start: str
    end: str

    @field_validator("days", mode="before")
    @classmethod
    def _lower_days(cls, value: Any) -> Any:
        # "Mon" and "MON" are what people type; the contract is the lower-case name.
        if isinstance(value, list | tuple):
            return [v.strip().lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be a time HH:MM between 00:00 and 23:59")
        return value

    @field_validator("end")
    @classmethod
    def _check_end(cls, value: str) -> str:
        if value != "24:00" and not _HHMM.match(value):
            raise ValueError("must be a time HH:MM between 00:00 and 24:00")
        return value

    @model_validator(mode="after")
    def _check_length(self) -> Self:
        if _minutes(self.start) == _minutes(self.end):
            raise ValueError("start and end are the same time (use 00:00 to 24:00 for a whole day)")
        return self

    def crosses_midnight(self) -> bool:
        """True when the shift ends on the day after it starts."""
        return _minutes(self.end) <= _minutes(self.start)


class Team(_Model):
    """A case-management team covering a facility (all of it, or some units)."""

    id: str = Field(min_length=1)
    facility: str = Field(min_length=1)
    """Sending facility as it appears in the feed (MSH-4 / PV1-3.4); compared ignoring case."""
    units: tuple[str, ...] = ()
    """Units covered; empty means every unit of the facility (a catch-all team)."""
    supervisor: str | None = None
    """Who gets the team's unassigned queue (an escalation target id)."""
    specialty: str | None = None
    """E.g. ``behavioral``: the team serves patients needing that specialty."""
    name: str | None = None


class Manager(_Model):
    """A case manager: who they serve, when they work, how much they can carry."""

    id: str = Field(min_length=1)
    name: str | None = None
    teams: tuple[str, ...] = Field(min_length=1)
    languages: tuple[str, ...] = ()
    """Languages spoken (ISO 639 codes or names); empty means no restriction."""
    payers: tuple[str, ...] = ()
    """Payer ids served; empty means every payer."""
    specialties: tuple[str, ...] = ()
    """Specialties (e.g. ``behavioral``); empty means any."""
    cap_points: int = Field(strict=True, gt=0)
    """Maximum acuity-weighted caseload (points, not patients)."""
    timezone: str
    """IANA zone the shifts and PTO dates are written in."""
    shifts: tuple[Shift, ...] = ()
    """No shifts means never on shift (e.g. on leave)."""
    pto: tuple[date, ...] = ()
    """Local dates off for the whole day."""
    phone: str | None = None
    """Work phone: community agencies get it as the referring case manager's contact."""
    email: str | None = None
    """Work email, for the same purpose."""

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            # ValueError covers malformed keys ("../x", ""), which ZoneInfo refuses.
            raise ValueError("not a valid IANA time zone (e.g. America/New_York)") from None
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        """The manager's time zone."""
        return ZoneInfo(self.timezone)

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """Values pure functions derive from this manager (shift occurrences by local day:
        :func:`shift_windows`; normalised eligibility lists: streams.care.assignment),
        kept with the frozen
        value they come from. Not a field: never stored, ignored by equality."""
        return {}


class Roster(_Model):
    """Teams and managers; see :func:`parse_roster` for the YAML form."""

    version: str | None = None
    teams: tuple[Team, ...] = ()
    managers: tuple[Manager, ...] = ()

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        # Cross-field checks run after field validation, so the location has to be spelled
        # out in the message; ids are safe to echo (they are what ops need to fix).
        problems: list[str] = []
        seen_teams: dict[str, int] = {}
        for i, team in enumerate(self.teams):
            if team.id in seen_teams:
                problems.append(
                    f"teams[{i}].id: duplicate team id {team.id!r} "
                    f"(also teams[{seen_teams[team.id]}])"
                )
            else:
                seen_teams[team.id] = i
        seen_managers: dict[str, int] = {}
        for i, manager in enumerate(self.managers):
            if manager.id in seen_managers:
                problems.append(
                    f"managers[{i}].id: duplicate manager id {manager.id!r} "
                    f"(also managers[{seen_managers[manager.id]}])"
                )
            else:
                seen_managers[manager.id] = i
            for j, team_id in enumerate(manager.teams):
                if team_id not in seen_teams:
                    problems.append(f"managers[{i}].teams[{j}]: unknown team {team_id!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def team(self, team_id: str) -> Team | None:
        """The team with this id, or None."""
        return self._teams_by_id.get(team_id)

    def manager(self, manager_id: str) -> Manager | None:
        """The manager with this id, or None."""
        return self._managers_by_id.get(manager_id)

    def members(self, team_id: str) -> tuple[Manager, ...]:
        """Managers of a team, ordered by id (deterministic whatever the file order)."""
        found = self._members.get(team_id)
        if found is None:
            found = tuple(sorted((m for m in self.managers if team_id in m.teams),
                                 key=lambda m: m.id))
        return found

    # Indexes (ids are unique: the validator refuses duplicates). Every decision looks
    # teams and managers up; the roster is a frozen value, so they are built once.
    @cached_property
    def _teams_by_id(self) -> dict[str, Team]:
        return {t.id: t for t in self.teams}

    @cached_property
    def _managers_by_id(self) -> dict[str, Manager]:
        return {m.id: m for m in self.managers}

    @cached_property
    def _members(self) -> dict[str, tuple[Manager, ...]]:
        return {t.id: tuple(sorted((m for m in self.managers if t.id in m.teams),
                                   key=lambda m: m.id)) for t in self.teams}

    @cached_property
    def eligibility_memo(self) -> dict[Any, Any]:
        """Memo of each team member's eligibility for a request's language, payers and
        specialty (streams.care.assignment): kept with the roster value, so a new roster
        version starts afresh."""
        return {}

    @cached_property
    def teams_for_memo(self) -> dict[tuple[str, str | None, str | None], tuple[Team, ...]]:
        """Memo of :func:`teams_for` by (facility, unit, specialty)."""
        return {}

    def to_json(self) -> str:
        """Compact JSON, as carried on the config topic; :meth:`from_json` reads it back."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Roster:
        """Read :meth:`to_json` output; raises :class:`RosterError` when invalid."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise RosterError(_problems(exc)) from None


def _problems(exc: ValidationError) -> list[str]:
    return validation_problems(exc, "roster")


def parse_roster(text: str) -> Roster:
    """Read a roster YAML text into a :class:`Roster`.

    Raises :class:`RosterError` for text that is not YAML (with the line and column, but
    not the offending text), is not a mapping, or fails validation (unique ids, managers'
    teams exist, IANA zones, HH:MM times, mon..sun days, ``cap_points > 0``, no unknown
    fields); the message names each problem's path.
    """
    data, problem = load_yaml(text, "roster")
    if problem is not None:
        raise RosterError([problem])
    if data is None:
        raise RosterError(["roster: the document is empty"])
    if not isinstance(data, dict):
        raise RosterError(["roster: expected a mapping with 'teams' and 'managers'"])
    try:
        return Roster.model_validate(data)
    except ValidationError as exc:
        raise RosterError(_problems(exc)) from None


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a naive datetime is ambiguous here; pass an aware datetime")


def shift_occurrences(manager: Manager, first: date, last: date
                      ) -> Iterator[tuple[datetime, datetime]]:
    """Shift occurrences starting on local dates ``first..last`` (PTO start dates skipped),
    as (start, end) in UTC."""
    zone = manager.zone
    pto = frozenset(manager.pto)
    day = first
    while day <= last:
        if day not in pto:
            name = DAYS[day.weekday()]
            for shift in manager.shifts:
                if name not in shift.days:
                    continue
                start_min, end_min = _minutes(shift.start), _minutes(shift.end)
                midnight = datetime.combine(day, time())
                start = midnight + timedelta(minutes=start_min)
                if end_min <= start_min:  # crosses midnight: ends the next day
                    end = midnight + timedelta(days=1, minutes=end_min)
                else:  # "24:00" is 1440 minutes: the next midnight
                    end = midnight + timedelta(minutes=end_min)
                # Attach the zone to the wall-clock times and compare in UTC: aware
                # datetimes sharing a tzinfo compare by wall clock, which is wrong across
                # a DST change.
                yield (start.replace(tzinfo=zone).astimezone(UTC),
                       end.replace(tzinfo=zone).astimezone(UTC))
        day += timedelta(days=1)


def on_pto(manager: Manager, at: datetime) -> bool:
    """True when ``at`` falls on one of the manager's PTO dates (their local date)."""
    _require_aware(at)
    return at.astimezone(manager.zone).date() in manager.pto


def on_shift(manager: Manager, at: datetime) -> bool:
    """Is the manager working at the aware instant ``at``?

    Evaluated in the manager's time zone; a PTO date is off for the whole local day (see
    the module docstring for overnight shifts and DST). Raises ValueError for a naive
    ``at``.
    """
    _require_aware(at)
    return shift_skip(manager, at.astimezone(UTC), at.astimezone(manager.zone).date()) is None


def shift_skip(manager: Manager, instant: datetime, local_day: date) -> str | None:
    """Why the manager is not working at ``instant`` (UTC), whose date in their zone is
    ``local_day``: ``pto``, ``off_shift``, or None when working (:func:`on_shift`'s
    rules; callers checking many managers at one instant share the date conversion)."""
    if local_day in manager.pto:
        return "pto"
    windows = manager.memo.get(local_day)  # shift_windows' memo read in line: a hit is usual
    if windows is None:
        windows = shift_windows(manager, local_day)
    for start, end in windows:
        if start <= instant < end:
            return None
    return "off_shift"


def shift_windows(manager: Manager, local_day: date) -> tuple[tuple[datetime, datetime], ...]:
    """The shift occurrences that may cover an instant of ``local_day``: those starting
    that day or the day before (overnight shifts), as UTC (start, end) pairs.

    Memoized on the (frozen) manager: computing them was most of an assignment's cost."""
    memo = manager.memo
    windows: tuple[tuple[datetime, datetime], ...] | None = memo.get(local_day)
    if windows is None:
        if len(memo) >= 512:  # a long-running worker sees every day: keep it bounded
            memo.clear()
        windows = memo[local_day] = tuple(
            shift_occurrences(manager, local_day - timedelta(days=1), local_day))
    return windows


def next_shift_start(manager: Manager, at: datetime, within: timedelta) -> datetime | None:
    """The earliest shift start ``s`` with ``at <= s <= at + within``, or None.

    A shift already running at ``at`` does not count (its start is in the past); use
    :func:`on_shift` for that. Shifts starting on PTO dates are skipped. The result is an
    aware datetime in the manager's zone. Raises ValueError for a naive ``at`` or a
    negative ``within``.
    """
    _require_aware(at)
    if within < timedelta(0):
        raise ValueError("within must not be negative")
    zone = manager.zone
    instant = at.astimezone(UTC)
    limit = instant + within
    first = at.astimezone(zone).date()
    last = limit.astimezone(zone).date()
    starts = [s for s, _ in shift_occurrences(manager, first, last) if instant <= s <= limit]
    return min(starts).astimezone(zone) if starts else None


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def teams_for(
    roster: Roster, facility: str | None, unit: str | None, *, specialty: str | None = None
) -> list[Team]:
    """Teams that cover ``unit`` of ``facility``, best first.

    A team matches when its facility equals ``facility`` (ignoring case and surrounding
    spaces) and its unit list contains ``unit`` or is empty (a catch-all team). Teams
    listing the unit come before catch-all teams; within each group the roster's order is
    kept, so ops decide precedence by ordering the file. An unknown facility (None) matches
    nothing; an unknown unit matches only catch-all teams.

    Among teams equally specific, general teams (no ``specialty``) come before specialty
    teams, so a patient with no specialty need is not routed to, say, a catch-all
    behavioral team because it happens to be listed first. A unit-specific specialty team
    still comes before a catch-all general team (a psychiatric unit's patients go to the
    team that covers that unit).

    ``specialty`` (optional, e.g. ``behavioral``) moves the teams of that specialty to the
    front, keeping the order above among them. No team is ever filtered out by specialty.
    """
    if facility is None:
        return []
    memo = roster.teams_for_memo
    found = memo.get((facility, unit, specialty))
    if found is None:
        if len(memo) >= 4096:  # units come from the feed: bound the memo
            memo.clear()
        found = memo[(facility, unit, specialty)] = tuple(
            _teams_for(roster, facility, unit, specialty))
    return list(found)


def _teams_for(roster: Roster, facility: str, unit: str | None, specialty: str | None
               ) -> list[Team]:
    ranked: list[tuple[int, int, int, int, Team]] = []
    for index, team in enumerate(roster.teams):
        if not _same(team.facility, facility):
            continue
        if team.units:
            if not any(_same(u, unit) for u in team.units):
                continue
            unit_rank = 0
        else:
            unit_rank = 1
        wanted_rank = 0 if specialty is None or _same(team.specialty, specialty) else 1
        general_rank = 0 if team.specialty is None else 1
        ranked.append((wanted_rank, unit_rank, general_rank, index, team))
    ranked.sort(key=lambda r: r[:4])
    return [r[4] for r in ranked]
