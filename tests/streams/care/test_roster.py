"""Roster model: YAML contract, validation messages, shift windows, team lookup."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.care.roster import (
    Manager,
    Roster,
    RosterError,
    Shift,
    Team,
    next_shift_start,
    on_pto,
    on_shift,
    parse_roster,
    teams_for,
)

REPO = Path(__file__).resolve().parents[3]
NY = ZoneInfo("America/New_York")
CHI = ZoneInfo("America/Chicago")

BASE = """
teams:
  - id: medsurg
    facility: GENHOSP
    units: [4WEST, 5EAST]
    supervisor: sup-lee
managers:
  - id: cm-ana
    name: Ana Ruiz
    teams: [medsurg]
    languages: [en, es]
    payers: []
    specialties: []
    cap_points: 45
    timezone: America/New_York
    shifts: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "17:00"}]
    pto: ["2026-12-24"]
"""


def manager(shifts: list[dict[str, Any]], *, tz: str = "America/New_York",
            pto: tuple[str, ...] = ()) -> Manager:
    return Manager.model_validate({"id": "m", "teams": ["t"], "cap_points": 10,
                                   "timezone": tz, "shifts": shifts, "pto": list(pto)})


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=NY)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# --------------------------------------------------------------------------- parsing


def test_parse_contract_example() -> None:
    r = parse_roster(BASE)
    assert r.teams[0].units == ("4WEST", "5EAST")
    m = r.managers[0]
    assert (m.id, m.name, m.cap_points) == ("cm-ana", "Ana Ruiz", 45)
    assert m.timezone == "America/New_York"
    assert m.shifts == (Shift(days=("mon", "tue", "wed", "thu", "fri"), start="08:00",
                              end="17:00"),)
    assert m.pto == (date(2026, 12, 24),)
    assert r.version is None
    assert r.team("medsurg") is r.teams[0] and r.team("nope") is None
    assert r.manager("cm-ana") is m and r.members("medsurg") == (m,)


def test_sample_roster_parses_and_covers_the_feed() -> None:
    r = parse_roster((REPO / "hub" / "samples" / "roster.yaml").read_text())
    assert r.version
    assert 4 <= len(r.managers) <= 6
    # The synthetic feed (hub/feed.py) sends GENHOSP with these units plus ED visits.
    from hub.feed import UNITS, FeedConfig

    for unit in [*UNITS, "ED"]:
        assert teams_for(r, FeedConfig().facility, unit), unit
    assert any("es" in m.languages for m in r.managers)
    assert any(m.pto for m in r.managers)
    assert any(s.crosses_midnight() for m in r.managers for s in m.shifts)
    assert all(30 <= m.cap_points <= 50 for m in r.managers)
    assert Roster.from_json(r.to_json()) == r


def test_json_round_trip() -> None:
    r = parse_roster("version: v7\n" + BASE)
    text = r.to_json()
    assert Roster.from_json(text) == r
    assert Roster.from_json(text.encode()) == r
    assert '"pto":["2026-12-24"]' in text


def test_optional_fields_and_absent_units() -> None:
    r = parse_roster("""
teams: [{id: bh, facility: GENHOSP, specialty: behavioral}]
managers: [{id: m, teams: [bh], cap_points: 5, timezone: UTC}]
""")
    assert r.teams[0].units == () and r.teams[0].specialty == "behavioral"
    assert r.teams[0].supervisor is None
    assert r.managers[0].shifts == () and r.managers[0].languages == ()


def test_unquoted_times_and_norwegian_stay_strings() -> None:
    # YAML 1.1 would read 17:00 as 1020 and "no" as False.
    r = parse_roster("""
teams: [{id: t, facility: F, units: [4]}]
managers:
  - {id: m, teams: [t], cap_points: 5, timezone: UTC, languages: [no, en],
     shifts: [{days: [Mon, TUE], start: 08:00, end: 17:00}], pto: [2026-12-24]}
""")
    m = r.managers[0]
    assert m.shifts[0].start == "08:00" and m.shifts[0].end == "17:00"
    assert m.shifts[0].days == ("mon", "tue")
    assert m.languages == ("no", "en")
    assert r.teams[0].units == ("4",)
    assert m.pto == (date(2026, 12, 24),)


def _error(text: str) -> RosterError:
    with pytest.raises(RosterError) as info:
        parse_roster(text)
    return info.value


def _with_manager(**fields: object) -> str:
    import yaml

    data = yaml.safe_load(BASE)
    data["managers"][0].update(fields)
    extra = dict(data["managers"][0], id="cm-b")
    extra2 = dict(data["managers"][0], id="cm-c")
    data["managers"] = [extra, extra2, data["managers"][0]]
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"timezone": "Secret/Nowhere"}, "managers[2].timezone"),
        ({"timezone": "../../etc/passwd"}, "managers[2].timezone"),
        ({"cap_points": 0}, "managers[2].cap_points"),
        ({"cap_points": -4}, "managers[2].cap_points"),
        ({"cap_points": "lots"}, "managers[2].cap_points"),
        ({"shifts": [{"days": ["mon"], "start": "25:61", "end": "17:00"}]},
         "managers[2].shifts[0].start"),
        ({"shifts": [{"days": ["mon"], "start": "8:00", "end": "17:00"}]},
         "managers[2].shifts[0].start"),
        ({"shifts": [{"days": ["mon"], "start": "08:00", "end": "17h"}]},
         "managers[2].shifts[0].end"),
        ({"shifts": [{"days": ["mon", "funday"], "start": "08:00", "end": "17:00"}]},
         "managers[2].shifts[0].days[1]"),
        ({"shifts": [{"days": [], "start": "08:00", "end": "17:00"}]},
         "managers[2].shifts[0].days"),
        ({"shifts": [{"days": ["mon"], "start": "08:00", "end": "08:00"}]},
         "managers[2].shifts[0]"),
        ({"teams": ["medsurg", "nosuchteam"]}, "managers[2].teams[1]"),
        ({"teams": []}, "managers[2].teams"),
        ({"cap_point": 45}, "managers[2].cap_point"),
        ({"pto": ["not-a-date"]}, "managers[2].pto[0]"),
    ],
)
def test_validation_errors_name_the_path(fields: dict[str, object], path: str) -> None:
    err = _error(_with_manager(**fields))
    assert any(p.startswith(path + ":") for p in err.problems), err.problems
    assert path in str(err)
    # Values other than ids are never echoed.
    for value in ("Secret/Nowhere", "passwd", "25:61", "17h", "funday", "lots", "not-a-date"):
        assert value not in str(err)


def test_missing_required_field() -> None:
    err = _error("teams: [{id: t}]\nmanagers: []\n")
    assert err.problems == ("teams[0].facility: required field is missing",)


def test_duplicate_ids_and_unknown_team_are_all_reported() -> None:
    err = _error("""
teams: [{id: a, facility: F}, {id: a, facility: G}]
managers:
  - {id: m, teams: [a], cap_points: 1, timezone: UTC}
  - {id: m, teams: [zz], cap_points: 1, timezone: UTC}
""")
    assert err.problems == (
        "teams[1].id: duplicate team id 'a' (also teams[0])",
        "managers[1].id: duplicate manager id 'm' (also managers[0])",
        "managers[1].teams[0]: unknown team 'zz'",
    )
    assert str(err).startswith("invalid roster (3 problems): ")


def test_unknown_top_level_field() -> None:
    err = _error(BASE + "manager: []\n")
    assert err.problems == ("manager: unknown field (a typo?)",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "roster: the document is empty"),
        ("- a\n- b\n", "roster: expected a mapping"),
        ("teams: [\n", "not valid YAML at line 2"),
        ("teams: []\nteams: []\n", "duplicate key"),
        ("teams: {id: x: y}\n", "not valid YAML at line 1"),
    ],
)
def test_bad_documents(text: str, expected: str) -> None:
    assert expected in str(_error(text))


def test_yaml_error_does_not_echo_the_text() -> None:
    err = _error("teams:\n  - id: SECRETVALUE: oops\n")
    assert "SECRETVALUE" not in str(err)
    assert "line 2" in str(err)


def test_from_json_invalid_raises_roster_error() -> None:
    with pytest.raises(RosterError, match=r"managers\[0\]\.timezone"):
        Roster.from_json('{"teams":[{"id":"t","facility":"F"}],'
                         '"managers":[{"id":"m","teams":["t"],"cap_points":1,"timezone":"X/Y"}]}')
    with pytest.raises(RosterError):
        Roster.from_json("not json")


def test_models_are_frozen() -> None:
    r = parse_roster(BASE)
    with pytest.raises(ValueError):
        r.managers[0].cap_points = 99  # type: ignore[misc]


# --------------------------------------------------------------------------- shifts

DAY: list[dict[str, Any]] = [
    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00"}]
# 2026-11-02 is a Monday (the synthetic feed's first day), in EST (UTC-5).


def test_day_shift_boundaries_start_inclusive_end_exclusive() -> None:
    m = manager(DAY)
    assert not on_shift(m, ny(2026, 11, 2, 7, 59, 59))
    assert on_shift(m, ny(2026, 11, 2, 8, 0))
    assert on_shift(m, ny(2026, 11, 2, 16, 59, 59))
    assert not on_shift(m, ny(2026, 11, 2, 17, 0))
    assert not on_shift(m, ny(2026, 11, 7, 12, 0))  # Saturday


def test_evaluated_in_manager_zone_whatever_the_input_zone() -> None:
    m = manager(DAY, tz="America/Chicago")  # CST = UTC-6 in November
    assert not on_shift(m, utc(2026, 11, 2, 13, 59))
    assert on_shift(m, utc(2026, 11, 2, 14, 0))
    assert on_shift(m, ny(2026, 11, 2, 17, 30))  # 16:30 in Chicago
    assert not on_shift(m, ny(2026, 11, 2, 18, 0))  # 17:00 in Chicago
    assert on_shift(m, utc(2026, 11, 6, 22, 59))  # Friday 16:59 CST
    assert not on_shift(m, utc(2026, 11, 7, 0, 30))  # Friday 18:30 CST, Saturday in UTC


def test_overnight_shift_belongs_to_the_day_it_starts() -> None:
    m = manager([{"days": ["mon"], "start": "22:00", "end": "06:00"}])
    assert not on_shift(m, ny(2026, 11, 2, 5, 0))  # Monday early morning: Sunday's shift
    assert not on_shift(m, ny(2026, 11, 2, 21, 59))
    assert on_shift(m, ny(2026, 11, 2, 22, 0))
    assert on_shift(m, ny(2026, 11, 3, 0, 0))
    assert on_shift(m, ny(2026, 11, 3, 5, 59))
    assert not on_shift(m, ny(2026, 11, 3, 6, 0))
    assert not on_shift(m, ny(2026, 11, 3, 22, 30))  # Tuesday night is not listed
    assert m.shifts[0].crosses_midnight()


def test_midnight_end_and_whole_day() -> None:
    evening = manager([{"days": ["mon"], "start": "16:00", "end": "24:00"}])
    assert on_shift(evening, ny(2026, 11, 2, 23, 59, 59))
    assert not on_shift(evening, ny(2026, 11, 3, 0, 0))
    assert not evening.shifts[0].crosses_midnight()
    whole = manager([{"days": ["tue"], "start": "00:00", "end": "24:00"}])
    assert on_shift(whole, ny(2026, 11, 3, 0, 0))
    assert on_shift(whole, ny(2026, 11, 3, 23, 59))
    assert not on_shift(whole, ny(2026, 11, 4, 0, 0))


def test_dst_fall_back_night_shift_lasts_nine_hours() -> None:
    # US DST ends Sunday 2026-11-01 02:00 EDT -> 01:00 EST.
    m = manager([{"days": ["sat"], "start": "22:00", "end": "06:00"}])
    start = utc(2026, 11, 1, 2, 0)  # Sat 22:00 EDT
    end = utc(2026, 11, 1, 11, 0)  # Sun 06:00 EST
    assert not on_shift(m, start - timedelta(seconds=1))
    assert on_shift(m, start)
    assert on_shift(m, utc(2026, 11, 1, 5, 30))  # first 01:30
    assert on_shift(m, utc(2026, 11, 1, 6, 30))  # second 01:30
    assert on_shift(m, end - timedelta(seconds=1))
    assert not on_shift(m, end)
    assert next_shift_start(m, utc(2026, 10, 31, 12, 0), timedelta(days=1)) == start


def test_dst_spring_forward() -> None:
    # US DST starts Sunday 2026-03-08 02:00 EST -> 03:00 EDT.
    day = manager([{"days": ["sun"], "start": "08:00", "end": "17:00"}])
    assert not on_shift(day, utc(2026, 3, 8, 11, 59))  # 07:59 EDT
    assert on_shift(day, utc(2026, 3, 8, 12, 0))  # 08:00 EDT
    assert not on_shift(day, utc(2026, 3, 8, 21, 0))  # 17:00 EDT
    night = manager([{"days": ["sat"], "start": "22:00", "end": "06:00"}])
    assert on_shift(night, utc(2026, 3, 8, 3, 0))  # Sat 22:00 EST
    assert on_shift(night, utc(2026, 3, 8, 9, 59))  # 05:59 EDT: 7 hours in all
    assert not on_shift(night, utc(2026, 3, 8, 10, 0))  # 06:00 EDT
    # A start inside the skipped hour is read with the pre-change offset.
    gap = manager([{"days": ["sun"], "start": "02:30", "end": "10:00"}])
    assert not on_shift(gap, utc(2026, 3, 8, 7, 29))
    assert on_shift(gap, utc(2026, 3, 8, 7, 30))  # 03:30 EDT


def test_pto_is_off_the_whole_local_day() -> None:
    m = manager(DAY, pto=("2026-11-04",))
    assert on_shift(m, ny(2026, 11, 3, 12, 0))
    assert not on_shift(m, ny(2026, 11, 4, 12, 0))
    assert on_pto(m, ny(2026, 11, 4, 0, 0)) and on_pto(m, ny(2026, 11, 4, 23, 59))
    assert not on_pto(m, ny(2026, 11, 5, 0, 0))
    # The PTO date is the manager's local date: 2026-11-05 02:00 UTC is the 4th in NY.
    assert on_pto(m, utc(2026, 11, 5, 2, 0))
    assert not on_pto(m, utc(2026, 11, 4, 4, 59))  # 23:59 on the 3rd in NY


def test_pto_and_overnight_shifts() -> None:
    m = manager([{"days": ["mon", "tue"], "start": "22:00", "end": "06:00"}],
                pto=("2026-11-03",))  # Tuesday
    # Monday's night shift stops at midnight: Tuesday is off all day.
    assert on_shift(m, ny(2026, 11, 2, 23, 0))
    assert not on_shift(m, ny(2026, 11, 3, 1, 0))
    # Tuesday's night shift starts on the PTO date: not worked, even after midnight.
    assert not on_shift(m, ny(2026, 11, 3, 23, 0))
    assert not on_shift(m, ny(2026, 11, 4, 1, 0))


def test_no_shifts_means_never_on_shift() -> None:
    m = manager([])
    assert not on_shift(m, ny(2026, 11, 2, 12, 0))
    assert next_shift_start(m, ny(2026, 11, 2, 12, 0), timedelta(days=30)) is None


def test_naive_datetimes_are_refused() -> None:
    m = manager(DAY)
    with pytest.raises(ValueError, match="naive"):
        on_shift(m, datetime(2026, 11, 2, 12, 0))
    with pytest.raises(ValueError, match="naive"):
        next_shift_start(m, datetime(2026, 11, 2, 12, 0), timedelta(hours=1))
    with pytest.raises(ValueError, match="naive"):
        on_pto(m, datetime(2026, 11, 2, 12, 0))


def test_next_shift_start() -> None:
    m = manager(DAY, pto=("2026-11-03",))
    at = ny(2026, 11, 2, 18, 0)  # Monday evening; Tuesday is PTO
    assert next_shift_start(m, at, timedelta(hours=12)) is None
    found = next_shift_start(m, at, timedelta(days=2))
    assert found == ny(2026, 11, 4, 8, 0)
    assert found is not None and found.tzinfo == NY
    # Boundaries: a start exactly at `at` or at `at + within` counts.
    assert next_shift_start(m, ny(2026, 11, 4, 8, 0), timedelta(0)) == ny(2026, 11, 4, 8, 0)
    assert next_shift_start(m, ny(2026, 11, 4, 7, 0), timedelta(hours=1)) == ny(2026, 11, 4, 8)
    assert next_shift_start(m, ny(2026, 11, 4, 7, 0), timedelta(minutes=59)) is None
    # A running shift does not count as "next".
    assert next_shift_start(m, ny(2026, 11, 4, 9, 0), timedelta(hours=12)) is None
    with pytest.raises(ValueError):
        next_shift_start(m, at, timedelta(hours=-1))


def test_next_shift_start_in_another_zone() -> None:
    m = manager(DAY, tz="America/Chicago")
    found = next_shift_start(m, utc(2026, 11, 2, 12, 0), timedelta(hours=3))
    assert found == datetime(2026, 11, 2, 8, 0, tzinfo=CHI)
    assert found is not None and found.utcoffset() == timedelta(hours=-6)


# --------------------------------------------------------------------------- teams


TEAMS = parse_roster("""
teams:
  - {id: catchall, facility: GENHOSP}
  - {id: bh, facility: GENHOSP, specialty: behavioral}
  - {id: medsurg, facility: GENHOSP, units: [4WEST, 5EAST]}
  - {id: icu, facility: GENHOSP, units: [ICU]}
  - {id: medsurg2, facility: genhosp, units: [4west]}
  - {id: psych, facility: GENHOSP, units: [PSYCH], specialty: behavioral}
  - {id: other, facility: OTHERHOSP}
managers: []
""")


def _ids(teams: list[Team]) -> list[str]:
    return [t.id for t in teams]


def test_teams_for_specific_before_catch_all_in_roster_order() -> None:
    assert _ids(teams_for(TEAMS, "GENHOSP", "4WEST")) == ["medsurg", "medsurg2", "catchall", "bh"]
    assert _ids(teams_for(TEAMS, "GENHOSP", "ICU")) == ["icu", "catchall", "bh"]
    assert _ids(teams_for(TEAMS, " genhosp ", "ed")) == ["catchall", "bh"]
    assert _ids(teams_for(TEAMS, "GENHOSP", None)) == ["catchall", "bh"]
    assert _ids(teams_for(TEAMS, "OTHERHOSP", "4WEST")) == ["other"]
    assert teams_for(TEAMS, None, "4WEST") == []
    assert teams_for(TEAMS, "NOWHERE", "4WEST") == []


def test_teams_for_specialty_units_and_requests() -> None:
    # A unit-specific specialty team still beats a catch-all general team.
    assert _ids(teams_for(TEAMS, "GENHOSP", "PSYCH")) == ["psych", "catchall", "bh"]
    assert _ids(teams_for(TEAMS, "GENHOSP", "4WEST", specialty="Behavioral")) == [
        "bh", "medsurg", "medsurg2", "catchall"]
    assert _ids(teams_for(TEAMS, "GENHOSP", "PSYCH", specialty="behavioral")) == [
        "psych", "bh", "catchall"]


def test_teams_for_is_deterministic() -> None:
    assert all(teams_for(TEAMS, "GENHOSP", "4WEST") == teams_for(TEAMS, "GENHOSP", "4WEST")
               for _ in range(3))
