"""Case-manager assignment: precedence, eligibility, shifts, caps, queue, release."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.care.assignment import (
    AssignmentConfig,
    AssignmentRequest,
    Decision,
    EpisodeLoad,
    TeamState,
    assign,
    eligibility_skip,
    normalize_language,
    release,
    team_figures,
    update_points,
)
from streams.care.roster import Roster

NY = ZoneInfo("America/New_York")
MONDAY_NOON = datetime(2026, 11, 2, 12, 0, tzinfo=NY)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
CFG = AssignmentConfig()


def mgr(id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": id, "teams": ["ms"], "cap_points": 10, "timezone": "America/New_York",
        "shifts": [{"days": WEEKDAYS, "start": "08:00", "end": "17:00"}],
    }
    base.update(fields)
    return base


def roster_of(*managers: dict[str, Any]) -> Roster:
    return Roster.model_validate({
        "teams": [
            {"id": "ms", "facility": "GENHOSP", "units": ["4WEST"], "supervisor": "sup-lee"},
            {"id": "empty", "facility": "GENHOSP", "supervisor": "sup-empty"},
        ],
        "managers": list(managers),
    })


def req(key: str = "GENHOSP|V1", **fields: Any) -> AssignmentRequest:
    base = AssignmentRequest(
        episode_key=key, team_id="ms", risk_level="high", payer_ids=(), language=None,
        specialty=None, continuity_manager_id=None, continuity_at=None,
        cause_event_id=f"ev-{key}",
    )
    return replace(base, **fields)


def loaded(**loads: int) -> TeamState:
    """A team state where each manager holds one episode of the given points."""
    return TeamState(team_id="ms", episodes={
        f"old-{m}": EpisodeLoad(manager_id=m.replace("_", "-"), points=p,
                                assigned_at=MONDAY_NOON - timedelta(days=1))
        for m, p in loads.items()
    })


def run(state: TeamState | None, r: AssignmentRequest, roster: Roster, *,
        now: datetime = MONDAY_NOON, cfg: AssignmentConfig = CFG) -> tuple[TeamState, Decision]:
    return assign(state, r, now=now, roster=roster, cfg=cfg)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_validation() -> None:
    assert CFG.points == {"high": 3, "moderate": 2, "low": 1}
    assert CFG.continuity_days == 90
    assert CFG.continuity_shift_window_hours == 12
    assert CFG.continuity_respects_cap is True
    assert CFG.points_for("HIGH") == 3 and CFG.points_for(" low ") == 1
    assert CFG.points_for("unknown") == 3  # unknown acuity counts as the highest
    assert AssignmentConfig(default_points=2).points_for(None) == 2
    with pytest.raises(ValidationError):
        AssignmentConfig(continuity_dayz=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AssignmentConfig(points={"high": 0})
    with pytest.raises(ValidationError):
        CFG.continuity_days = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- basics


def test_least_loaded_with_deterministic_tie_break_by_id() -> None:
    roster = roster_of(mgr("cm-b"), mgr("cm-a"))
    state, d = run(None, req(), roster)
    assert (d.status, d.manager_id, d.reason) == ("assigned", "cm-a", "least_loaded")
    assert d.considered == (("cm-a", "chosen"), ("cm-b", "not_least_loaded"))
    assert (d.points, d.load_after, d.cap, d.supervisor) == (3, 3, 10, "sup-lee")
    assert (d.episode_key, d.cause_event_id, d.continuity) == ("GENHOSP|V1", "ev-GENHOSP|V1", None)
    assert state.episodes["GENHOSP|V1"] == EpisodeLoad(
        manager_id="cm-a", points=3, assigned_at=MONDAY_NOON, reason="least_loaded")
    # The next one goes to the other manager (cm-a now carries 3 points).
    state, d = run(state, req("GENHOSP|V2", risk_level="low"), roster)
    assert (d.manager_id, d.load_after) == ("cm-b", 1)


def test_lowest_load_first_then_lowest_ratio_then_id() -> None:
    roster = roster_of(mgr("cm-a", cap_points=10), mgr("cm-b", cap_points=100),
                       mgr("cm-c", cap_points=20))
    # Lowest load wins even with a worse ratio: 1/10 beats 2/100.
    _, d = run(loaded(cm_a=1, cm_b=2, cm_c=2), req(), roster)
    assert d.manager_id == "cm-a"
    # Equal loads: the lower load ratio wins (2/100 < 2/20 < 2/10).
    _, d = run(loaded(cm_a=2, cm_b=2, cm_c=2), req(), roster)
    assert d.manager_id == "cm-b"
    assert dict(d.considered) == {"cm-a": "not_least_loaded", "cm-b": "chosen",
                                  "cm-c": "not_least_loaded"}
    # Equal load and ratio: the id decides, whatever the roster order.
    roster2 = roster_of(mgr("cm-z", cap_points=10), mgr("cm-y", cap_points=10))
    _, d = run(None, req(), roster2)
    assert d.manager_id == "cm-y"


def test_inputs_are_not_mutated_and_results_are_deterministic() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b"))
    state = loaded(cm_a=2)
    before = state.model_dump()
    first = run(state, req(), roster)
    second = run(state, req(), roster)
    assert first == second
    assert state.model_dump() == before


# --------------------------------------------------------------------------- capacity


def test_cap_boundary_exactly_at_cap_is_allowed() -> None:
    roster = roster_of(mgr("cm-a", cap_points=10))
    _, d = run(loaded(cm_a=7), req(risk_level="high"), roster)
    assert (d.status, d.manager_id, d.load_after, d.cap) == ("assigned", "cm-a", 10, 10)


def test_cap_boundary_one_over_is_refused() -> None:
    roster = roster_of(mgr("cm-a", cap_points=10))
    state, d = run(loaded(cm_a=8), req(risk_level="high"), roster)
    assert (d.status, d.reason, d.manager_id) == ("unassigned", "all_at_cap", None)
    assert d.considered == (("cm-a", "at_cap"),)
    # A lighter patient still fits.
    _, d = run(loaded(cm_a=8), req(risk_level="moderate"), roster)
    assert (d.status, d.load_after) == ("assigned", 10)
    assert state.episodes["GENHOSP|V1"].manager_id is None


def test_acuity_weights_the_caseload() -> None:
    # cm-a: three low-risk patients (3 points); cm-b: one high-risk patient (3 points).
    state = TeamState(team_id="ms", episodes={
        **{f"a{i}": EpisodeLoad(manager_id="cm-a", points=1, assigned_at=MONDAY_NOON)
           for i in range(3)},
        "b": EpisodeLoad(manager_id="cm-b", points=3, assigned_at=MONDAY_NOON),
    })
    assert state.load("cm-a") == state.load("cm-b") == 3
    assert state.open_episodes("cm-a") == 3 and state.open_episodes("cm-b") == 1


# --------------------------------------------------------------------------- eligibility


@pytest.mark.parametrize("language", ["es", "ES", "spa", "es-MX", "es_US", "Spanish",
                                      "español", "es^Spanish^ISO639"])
def test_language_ignores_case_region_and_code_system(language: str) -> None:
    roster = roster_of(mgr("cm-a", languages=["en", "spa"]), mgr("cm-b", languages=["en"]))
    _, d = run(loaded(cm_a=6), req(language=language), roster)
    assert d.manager_id == "cm-a"
    assert dict(d.considered)["cm-b"] == "language"


def test_unknown_language_or_empty_list_means_any() -> None:
    roster = roster_of(mgr("cm-a", languages=["en"]), mgr("cm-b"))
    for language in (None, "", "und", "UNK"):
        _, d = run(loaded(cm_b=5), req(language=language), roster)
        assert d.manager_id == "cm-a", language
    _, d = run(loaded(cm_a=5), req(language="vi"), roster)
    assert d.manager_id == "cm-b"  # no language list: speaks to anyone (interpreter)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("en", "en"), ("ENG", "en"), ("en-GB", "en"), ("English", "en"), ("es-419", "es"),
     ("spa", "es"), ("zh-Hant-TW", "zh"), ("yue", "zh"), ("fre", "fr"), ("fra", "fr"),
     ("Haitian Creole", "ht"), ("hmn", "hmn"), ("und", None), ("  ", None), (None, None)],
)
def test_normalize_language(value: str | None, expected: str | None) -> None:
    assert normalize_language(value) == expected


def test_payer_eligibility() -> None:
    roster = roster_of(mgr("cm-a", payers=["PAYER3"]), mgr("cm-b", payers=[]))
    _, d = run(loaded(cm_b=5), req(payer_ids=("payer3",)), roster)
    assert d.manager_id == "cm-a"
    _, d = run(loaded(cm_b=5), req(payer_ids=("PAYER1", "PAYER3")), roster)
    assert d.manager_id == "cm-a"  # any of the patient's payers will do
    _, d = run(loaded(cm_b=5), req(payer_ids=("PAYER1",)), roster)
    assert d.manager_id == "cm-b" and dict(d.considered)["cm-a"] == "payer"
    # No known coverage yet: payer-restricted managers are not withheld.
    _, d = run(loaded(cm_b=5), req(payer_ids=()), roster)
    assert d.manager_id == "cm-a"


def test_specialty_eligibility() -> None:
    roster = roster_of(mgr("cm-a", specialties=["behavioral"]), mgr("cm-b"))
    _, d = run(loaded(cm_b=5), req(specialty="Behavioral"), roster)
    assert d.manager_id == "cm-a"
    _, d = run(loaded(cm_b=5), req(specialty="oncology"), roster)
    assert d.manager_id == "cm-b" and dict(d.considered)["cm-a"] == "specialty"
    # Empty specialties on the manager = any.
    _, d = run(loaded(cm_a=5), req(specialty="behavioral"), roster)
    assert d.manager_id == "cm-b"


def test_eligibility_reports_the_first_failing_rule() -> None:
    m = roster_of(mgr("cm-a", languages=["en"], payers=["P1"], specialties=["x"])).managers[0]
    assert eligibility_skip(m, req(language="es", payer_ids=("P2",), specialty="y")) == "language"
    assert eligibility_skip(m, req(language="en", payer_ids=("P2",), specialty="y")) == "payer"
    assert eligibility_skip(m, req(language="en", payer_ids=("P1",), specialty="y")) == "specialty"
    assert eligibility_skip(m, req(language="en", payer_ids=("P1",), specialty="x")) is None


# --------------------------------------------------------------------------- shifts


def test_only_managers_on_shift_get_work() -> None:
    night = {"days": WEEKDAYS, "start": "19:00", "end": "07:00"}
    roster = roster_of(mgr("cm-day"), mgr("cm-night", shifts=[night]),
                       mgr("cm-off", pto=["2026-11-02"]))
    _, d = run(None, req(), roster)
    assert d.manager_id == "cm-day"
    assert dict(d.considered) == {"cm-day": "chosen", "cm-night": "off_shift", "cm-off": "pto"}
    _, d = run(None, req(), roster, now=datetime(2026, 11, 2, 23, 0, tzinfo=NY))
    assert d.manager_id == "cm-night"
    _, d = run(None, req(), roster, now=datetime(2026, 11, 3, 12, 0, tzinfo=NY))
    assert d.manager_id == "cm-day"  # cm-off is back from PTO; equal loads: id order
    _, d = run(loaded(cm_day=3), req(), roster, now=datetime(2026, 11, 3, 12, 0, tzinfo=NY))
    assert d.manager_id == "cm-off"


def test_now_in_utc_is_evaluated_in_manager_zone() -> None:
    roster = roster_of(mgr("cm-a"))
    _, d = run(None, req(), roster, now=datetime(2026, 11, 2, 12, 59, tzinfo=UTC))  # 07:59 NY
    assert d.reason == "none_on_shift"
    _, d = run(None, req(), roster, now=datetime(2026, 11, 2, 13, 0, tzinfo=UTC))  # 08:00 NY
    assert d.manager_id == "cm-a"


# --------------------------------------------------------------------------- unassigned


def test_unassigned_none_eligible_team_without_members() -> None:
    roster = roster_of(mgr("cm-a"))
    state, d = run(None, req(team_id="empty"), roster)
    assert (d.status, d.reason, d.supervisor, d.considered) == (
        "unassigned", "none_eligible", "sup-empty", ())
    assert state.team_id == "empty"
    assert state.episodes["GENHOSP|V1"].manager_id is None


def test_unassigned_none_eligible_nobody_matches() -> None:
    roster = roster_of(mgr("cm-a", languages=["en"]), mgr("cm-b", languages=["en"]))
    # Ineligible beats off shift: the report says "language", not "off_shift".
    _, d = run(None, req(language="ar"), roster, now=datetime(2026, 11, 1, 3, tzinfo=NY))
    assert (d.status, d.reason, d.manager_id, d.load_after, d.cap) == (
        "unassigned", "none_eligible", None, None, None)
    assert d.considered == (("cm-a", "language"), ("cm-b", "language"))


def test_unassigned_none_on_shift() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b", languages=["fr"]))
    sunday = datetime(2026, 11, 1, 3, 0, tzinfo=NY)
    _, d = run(None, req(language="en"), roster, now=sunday)
    assert (d.status, d.reason) == ("unassigned", "none_on_shift")
    assert d.considered == (("cm-a", "off_shift"), ("cm-b", "language"))


def test_unassigned_all_at_cap() -> None:
    roster = roster_of(mgr("cm-a", cap_points=4), mgr("cm-b", cap_points=4),
                       mgr("cm-c", shifts=[]))
    # Off shift beats at cap: cm-c is reported "off_shift" even though it has room.
    _, d = run(loaded(cm_a=2, cm_b=2), req(), roster)
    assert (d.status, d.reason) == ("unassigned", "all_at_cap")
    assert d.considered == (("cm-a", "at_cap"), ("cm-b", "at_cap"), ("cm-c", "off_shift"))


def test_unassigned_no_team() -> None:
    roster = roster_of(mgr("cm-a"))
    state, d = run(None, req(team_id="ghost"), roster)
    assert (d.status, d.reason, d.supervisor, d.team_id) == ("unassigned", "no_team", None, "ghost")
    assert state.episodes["GENHOSP|V1"].manager_id is None


def test_unassigned_counts_as_team_backlog_and_is_retried() -> None:
    roster = roster_of(mgr("cm-a"))
    night = datetime(2026, 11, 2, 22, 0, tzinfo=NY)
    state, d = run(None, req("k1"), roster, now=night)
    state, _ = run(state, req("k2", risk_level="low"), roster, now=night + timedelta(minutes=5))
    state, _ = run(state, req("k3", risk_level="high"), roster, now=night + timedelta(minutes=9))
    figures = team_figures(state, roster)
    assert figures["team"]["unassigned"] == 3
    assert figures["team"]["unassigned_points"] == 7
    assert figures["managers"]["cm-a"]["load"] == 0
    assert state.queue() == ["k1", "k3", "k2"]  # highest points first, then oldest
    # Next morning the queued episode is tried again and assigned.
    morning = datetime(2026, 11, 3, 8, 0, tzinfo=NY)
    state, d = run(state, req("k1"), roster, now=morning)
    assert (d.status, d.manager_id) == ("assigned", "cm-a")
    assert state.episodes["k1"] == EpisodeLoad(manager_id="cm-a", points=3,
                                               assigned_at=morning, reason="least_loaded")
    assert team_figures(state, roster)["team"]["unassigned"] == 2


# --------------------------------------------------------------------------- precedence


def test_already_assigned_beats_everything_and_is_idempotent() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b"))
    state, first = run(loaded(cm_a=5), req(), roster)
    assert first.manager_id == "cm-b"
    # Redelivered: same manager, same state, even off shift, with continuity to cm-a and
    # a different risk level (use update_points for acuity changes).
    later = datetime(2026, 11, 8, 3, 0, tzinfo=NY)
    again, d = run(state, req(continuity_manager_id="cm-a", continuity_at=later,
                              risk_level="low", cause_event_id="ev-redelivered"),
                   roster, now=later)
    assert again == state
    assert (d.status, d.manager_id, d.reason, d.points, d.load_after, d.cap) == (
        "already_assigned", "cm-b", "least_loaded", 3, 3, 10)
    assert d.cause_event_id == "ev-redelivered"
    # Assigning twice from scratch gives the same state as once.
    twice, _ = run(state, req(), roster)
    assert twice == state


def test_continuity_beats_least_loaded() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b"))
    r = req(continuity_manager_id="cm-a", continuity_at=MONDAY_NOON - timedelta(days=30))
    state, d = run(loaded(cm_a=6), r, roster)
    assert (d.status, d.manager_id, d.reason, d.continuity) == (
        "assigned", "cm-a", "continuity", "chosen")
    assert (d.load_after, d.cap, d.considered) == (9, 10, (("cm-a", "chosen"),))
    assert state.episodes["GENHOSP|V1"].reason == "continuity"


def test_continuity_window_in_days() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b"))
    at_limit = req(continuity_manager_id="cm-a", continuity_at=MONDAY_NOON - timedelta(days=90))
    _, d = run(loaded(cm_a=6), at_limit, roster)
    assert d.reason == "continuity"
    too_old = replace(at_limit, continuity_at=MONDAY_NOON - timedelta(days=90, seconds=1))
    _, d = run(loaded(cm_a=6), too_old, roster)
    assert (d.manager_id, d.reason, d.continuity) == ("cm-b", "least_loaded", "expired")
    no_date = replace(at_limit, continuity_at=None)
    _, d = run(loaded(cm_a=6), no_date, roster)
    assert (d.manager_id, d.continuity) == ("cm-b", "expired")
    _, d = run(loaded(cm_a=6), at_limit, roster, cfg=AssignmentConfig(continuity_days=30))
    assert d.continuity == "expired"


def test_continuity_manager_off_shift_but_starting_soon() -> None:
    night = {"days": WEEKDAYS, "start": "19:00", "end": "07:00"}
    roster = roster_of(mgr("cm-a"), mgr("cm-n", shifts=[night]))
    r = req(continuity_manager_id="cm-a", continuity_at=MONDAY_NOON - timedelta(days=3))
    # Monday 22:00: cm-a's next shift is Tuesday 08:00, 10 hours away -> waits for cm-a.
    evening = datetime(2026, 11, 2, 22, 0, tzinfo=NY)
    _, d = run(None, r, roster, now=evening)
    assert (d.manager_id, d.reason) == ("cm-a", "continuity")
    # Monday 19:59: 12h01 away -> outside the 12-hour window; the night manager takes it.
    _, d = run(None, r, roster, now=datetime(2026, 11, 2, 19, 59, tzinfo=NY))
    assert (d.manager_id, d.reason, d.continuity) == ("cm-n", "least_loaded", "off_shift")
    # Exactly 12 hours away is inside the window.
    _, d = run(None, r, roster, now=datetime(2026, 11, 2, 20, 0, tzinfo=NY))
    assert d.manager_id == "cm-a"
    # A zero window means on shift now.
    _, d = run(None, r, roster, now=evening,
               cfg=AssignmentConfig(continuity_shift_window_hours=0))
    assert d.manager_id == "cm-n"


def test_continuity_manager_on_pto() -> None:
    roster = roster_of(mgr("cm-a", pto=["2026-11-02", "2026-11-03"]), mgr("cm-b"))
    r = req(continuity_manager_id="cm-a", continuity_at=MONDAY_NOON - timedelta(days=3))
    _, d = run(None, r, roster)
    assert (d.manager_id, d.continuity) == ("cm-b", "pto")


def test_continuity_respects_cap_unless_configured() -> None:
    roster = roster_of(mgr("cm-a"), mgr("cm-b"))
    r = req(continuity_manager_id="cm-a", continuity_at=MONDAY_NOON - timedelta(days=1))
    _, d = run(loaded(cm_a=8), r, roster)
    assert (d.manager_id, d.continuity) == ("cm-b", "at_cap")
    assert dict(d.considered)["cm-a"] == "at_cap"
    _, d = run(loaded(cm_a=8), r, roster, cfg=AssignmentConfig(continuity_respects_cap=False))
    assert (d.manager_id, d.reason, d.load_after, d.cap) == ("cm-a", "continuity", 11, 10)


def test_continuity_requires_team_membership_and_eligibility() -> None:
    roster = Roster.model_validate({
        "teams": [{"id": "ms", "facility": "G"}, {"id": "icu", "facility": "G"}],
        "managers": [mgr("cm-a", languages=["en"]), mgr("cm-b"), mgr("cm-icu", teams=["icu"])],
    })
    since = MONDAY_NOON - timedelta(days=1)
    _, d = run(None, req(continuity_manager_id="cm-icu", continuity_at=since), roster)
    assert (d.manager_id, d.continuity) == ("cm-a", "not_in_team")
    _, d = run(None, req(continuity_manager_id="cm-gone", continuity_at=since), roster)
    assert (d.manager_id, d.continuity) == ("cm-a", "unknown_manager")
    _, d = run(None, req(continuity_manager_id="cm-a", continuity_at=since, language="es"),
               roster)
    assert (d.manager_id, d.continuity) == ("cm-b", "language")


def test_full_precedence_order() -> None:
    """Each rule decides only when the ones before it leave a choice."""
    night = {"days": WEEKDAYS, "start": "19:00", "end": "07:00"}
    roster = roster_of(
        mgr("cm-1-lang", languages=["fr"]),  # (3) eligibility
        mgr("cm-2-night", shifts=[night]),  # (4) on shift
        mgr("cm-3-full", cap_points=4),  # (5) capacity
        mgr("cm-4-busy", cap_points=40),  # (6) higher load
        mgr("cm-5-free", cap_points=40),  # (6) lowest load -> chosen
        mgr("cm-6-known", cap_points=40),  # (2) continuity, most loaded of all
    )
    state = loaded(cm_3_full=2, cm_4_busy=5, cm_6_known=20)
    r = req(language="en")
    _, d = run(state, r, roster)
    assert d.considered == (
        ("cm-1-lang", "language"), ("cm-2-night", "off_shift"), ("cm-3-full", "at_cap"),
        ("cm-4-busy", "not_least_loaded"), ("cm-5-free", "chosen"),
        ("cm-6-known", "not_least_loaded"),
    )
    cont = replace(r, continuity_manager_id="cm-6-known", continuity_at=MONDAY_NOON)
    state2, d = run(state, cont, roster)
    assert (d.manager_id, d.reason) == ("cm-6-known", "continuity")
    _, d = run(state2, replace(r, continuity_manager_id="cm-5-free"), roster)
    assert (d.status, d.manager_id) == ("already_assigned", "cm-6-known")


# --------------------------------------------------------------------------- release, points


def test_release_frees_caseload_and_is_idempotent() -> None:
    roster = roster_of(mgr("cm-a"))
    state, _ = run(None, req("k1"), roster)
    state, _ = run(state, req("k2", risk_level="moderate"), roster)
    assert state.load("cm-a") == 5
    freed, d = release(state, "k1")
    assert d == Decision(status="released", manager_id="cm-a", team_id="ms", supervisor=None,
                         reason="episode_closed", points=3, load_after=2, cap=None,
                         episode_key="k1")
    assert freed.load("cm-a") == 2 and "k1" not in freed.episodes
    assert state.load("cm-a") == 5  # the input is unchanged
    again, none = release(freed, "k1")
    assert none is None and again == freed
    # A queued episode can be released too (the patient left before anyone was free).
    queued, _ = run(freed, req("k3"), roster, now=datetime(2026, 11, 2, 23, tzinfo=NY))
    after, d2 = release(queued, "k3")
    assert d2 is not None and d2.manager_id is None and d2.load_after is None
    assert after == freed


def test_update_points() -> None:
    roster = roster_of(mgr("cm-a", cap_points=4))
    state, _ = run(None, req("k1", risk_level="low"), roster)
    state = update_points(state, "k1", "high", CFG)
    assert state.episodes["k1"].points == 3 and state.load("cm-a") == 3
    assert update_points(state, "nope", "low", CFG) is state
    assert update_points(state, "k1", "HIGH", CFG) is state
    # Acuity may push a manager over the cap: the patient stays, the figures show it.
    state, _ = run(state, req("k2", risk_level="low"), roster)
    state = update_points(state, "k2", "moderate", CFG)
    row = team_figures(state, roster)["managers"]["cm-a"]
    assert (row["load"], row["cap"], row["headroom"], row["over_cap"]) == (5, 4, -1, True)


def test_team_figures() -> None:
    roster = roster_of(mgr("cm-a", cap_points=10, languages=["en"]),
                       mgr("cm-b", cap_points=20, shifts=[]))
    state = loaded(cm_a=4, cm_gone=2)  # cm-gone left the roster but still holds a patient
    state, d = run(state, req("q", language="fr"), roster)
    assert d.reason == "none_on_shift"
    figures = team_figures(state, roster, now=MONDAY_NOON)
    assert figures["team_id"] == "ms" and figures["supervisor"] == "sup-lee"
    assert figures["managers"]["cm-a"] == {"load": 4, "cap": 10, "open_episodes": 1,
                                           "headroom": 6, "over_cap": False, "member": True,
                                           "on_shift": True}
    assert figures["managers"]["cm-b"]["load"] == 0
    assert figures["managers"]["cm-b"]["on_shift"] is False
    assert figures["managers"]["cm-gone"] == {"load": 2, "cap": None, "open_episodes": 1,
                                              "headroom": None, "over_cap": False,
                                              "member": False, "on_shift": False}
    assert figures["team"] == {"unassigned": 1, "unassigned_points": 3, "assigned_points": 6,
                               "cap_points": 30, "open_episodes": 3, "on_shift": 1,
                               "on_shift_headroom": 6}
    json.dumps(figures)
    assert "on_shift" not in team_figures(state, roster)["team"]


# --------------------------------------------------------------------------- contracts


def test_team_state_json_round_trip() -> None:
    roster = roster_of(mgr("cm-a"))
    state, d = run(None, req(), roster)
    state, _ = run(state, req("k2"), roster, now=datetime(2026, 11, 2, 23, tzinfo=NY))
    assert TeamState.from_json(state.to_json()) == state
    assert TeamState.model_validate_json(state.model_dump_json()) == state
    json.dumps(d.to_dict())
    assert d.to_dict()["considered"] == [["cm-a", "chosen"]]


def test_refuses_naive_now_and_foreign_state() -> None:
    roster = roster_of(mgr("cm-a"))
    with pytest.raises(ValueError, match="aware"):
        run(None, req(), roster, now=datetime(2026, 11, 2, 12, 0))
    with pytest.raises(ValueError, match="another team"):
        run(TeamState(team_id="icu"), req(), roster)


# --------------------------------------------------------------------------- property

DAY_AND_NIGHT = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                  "start": "00:00", "end": "24:00"}]
PROPERTY_ROSTER = roster_of(
    mgr("cm-a", cap_points=5, languages=["en", "es"], shifts=DAY_AND_NIGHT),
    mgr("cm-b", cap_points=7, payers=["P1"], shifts=DAY_AND_NIGHT),
    mgr("cm-c", cap_points=4),
    mgr("cm-d", cap_points=6, shifts=[{"days": WEEKDAYS, "start": "19:00", "end": "07:00"}],
        pto=["2026-11-03"]),
)
CAPS = {m.id: m.cap_points for m in PROPERTY_ROSTER.managers}

assign_op = st.tuples(
    st.just("assign"),
    st.integers(0, 11),  # episode
    st.sampled_from(["high", "moderate", "low", "unscored"]),
    st.sampled_from([None, "en", "es-MX", "fr"]),
    st.sampled_from([(), ("P1",), ("P2",)]),
    st.sampled_from([None, "cm-a", "cm-b", "cm-c", "cm-d", "cm-x"]),
    st.integers(0, 7 * 24 * 4),  # quarter hours after the start
)
release_op = st.tuples(st.just("release"), st.integers(0, 11))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(assign_op, release_op), max_size=60))
def test_property_caps_hold_and_load_is_the_sum_of_points(ops: list[tuple[Any, ...]]) -> None:
    start = datetime(2026, 11, 1, 0, 0, tzinfo=NY)
    state: TeamState | None = None
    held: dict[str, tuple[str | None, int]] = {}  # an independent model of the caseload
    for op in ops:
        key = f"E{op[1]}"
        if op[0] == "release":
            if state is None:
                continue
            state, d = release(state, key)
            assert (d is None) == (key not in held)
            held.pop(key, None)
        else:
            _, _, risk, lang, payers, cont, quarter = op
            now = start + timedelta(minutes=15 * quarter)
            r = req(key, risk_level=risk, language=lang, payer_ids=payers,
                    continuity_manager_id=cont, continuity_at=now - timedelta(days=10))
            state, d = assign(state, r, now=now, roster=PROPERTY_ROSTER, cfg=CFG)
            if key in held and held[key][0] is not None:
                assert d.status == "already_assigned" and d.manager_id == held[key][0]
            else:
                held[key] = (d.manager_id, d.points)
                assert d.status == ("assigned" if d.manager_id else "unassigned")
            if d.manager_id is not None:
                assert d.load_after == state.load(d.manager_id)
        assert state is not None
        assert {k: (e.manager_id, e.points) for k, e in state.episodes.items()} == held
        for manager_id, cap in CAPS.items():
            expected = sum(p for m, p in held.values() if m == manager_id)
            assert state.load(manager_id) == expected
            assert state.load(manager_id) <= cap
        figures = team_figures(state, PROPERTY_ROSTER)
        assert figures["team"]["unassigned_points"] == sum(
            p for m, p in held.values() if m is None)
        assert not any(row["over_cap"] for row in figures["managers"].values())
