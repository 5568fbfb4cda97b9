"""The caseloads agent's storage: a team's totals plus one row per open episode.

``load_caseload``/``store_caseload`` run here over dicts standing for the two tables (a
faust Table is a MutableMapping of bytes); the tables themselves are exercised by the
worker end-to-end tests. What is checked: the stored form decides exactly as the
whole-team value (``TeamState``) would, records stay small however long the queue,
released episodes leave no row behind, and a whole-team value left by an older worker is
split on first use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.care import TeamRequest
from streams.care import offline
from streams.care.assignment import CaseloadView, EpisodeLoad, TeamState, TeamTotals
from streams.care.engine import CareContext, Emit, apply_team, output_of
from streams.care.offline import OfflineRun
from streams.care_agents import load_caseload, store_caseload

SAMPLES = Path(__file__).resolve().parents[2] / "hub" / "samples"
FIXTURE = Path(__file__).parent / "care" / "fixtures" / "stored_state_v1.json"
AT = datetime(2026, 11, 1, tzinfo=UTC)


def _ctx() -> CareContext:
    return CareContext(config=load_rules(None, default_tz="America/New_York"),
                       roster=load_roster(SAMPLES / "roster.yaml"), render_fhir=False)


def _dumped(emits: list[Emit]) -> list[dict[str, Any] | None]:
    return [output_of(e) for e in emits]


class Tables:
    """The two tables as the worker keeps them: bytes in, bytes out."""

    def __init__(self) -> None:
        self.totals: dict[bytes, bytes] = {}
        self.rows: dict[bytes, bytes] = {}
        self.largest = 0

    def apply(self, req: TeamRequest, ctx: CareContext) -> list[Emit]:
        key = req.team.encode()
        view, emits = apply_team(load_caseload(self.totals, self.rows, key, req.team), req,
                                 ctx=ctx)
        assert isinstance(view, CaseloadView)
        store_caseload(self.totals, self.rows, key, view)
        self.largest = max(self.largest, len(self.totals[key]),
                           *(len(v) for v in self.rows.values()))
        return emits


@pytest.fixture(scope="module")
def replayed() -> tuple[Tables, dict[str, TeamState], int]:
    """A 600-patient synthetic feed through the offline run, every team request also
    applied to the stored form and to a whole-team value, outputs compared each time."""
    ctx = _ctx()
    tables = Tables()
    whole: dict[str, TeamState] = {}
    requests = 0
    real = offline.apply_team

    def both(state: Any, req: TeamRequest, *, ctx: CareContext) -> Any:
        nonlocal requests
        requests += 1
        new, emits = real(state, req, ctx=ctx)
        stored = tables.apply(req, ctx)
        value, from_value = real(whole.get(req.team), req, ctx=ctx)
        assert isinstance(value, TeamState)
        whole[req.team] = value
        assert _dumped(stored) == _dumped(emits) == _dumped(from_value)
        return new, emits

    run = OfflineRun(ctx)
    events = [e for m in generate(FeedConfig(patients=600, bad_messages=False))
              for e in map_hl7v2(m, received_at=AT, default_tz="America/New_York")]
    mp = pytest.MonkeyPatch()
    mp.setattr(offline, "apply_team", both)
    try:
        for ev in events:
            run.event(ev)
        run.tick(max(e.occurred_at for e in events) + (events[-1].occurred_at - AT))
    finally:
        mp.undo()
    return tables, whole, requests


def test_the_stored_form_decides_as_the_whole_team_value(
        replayed: tuple[Tables, dict[str, TeamState], int]) -> None:
    tables, whole, requests = replayed
    assert requests > 1000
    for team, value in whole.items():
        stored = TeamTotals.model_validate_json(tables.totals[team.encode()])
        assert stored == value.totals
        rows = {k.split(b"\x1f", 1)[1].decode(): EpisodeLoad.model_validate_json(v)
                for k, v in tables.rows.items() if k.startswith(team.encode() + b"\x1f")}
        assert rows == value.episodes  # released episodes left no row behind


def test_records_stay_small_however_long_the_queue(
        replayed: tuple[Tables, dict[str, TeamState], int]) -> None:
    tables, whole, _ = replayed
    assert max(len(v.episodes) for v in whole.values()) > 100
    assert max(len(v.to_json()) for v in whole.values()) > 10_000
    assert tables.largest < 1_000  # the whole-team value grew past ten times that


def test_a_whole_team_value_of_an_older_worker_is_split_on_first_use() -> None:
    stored = orjson.loads(FIXTURE.read_bytes())
    raw = next(iter(stored["teams"].values()))
    old = TeamState.model_validate_json(raw)
    assert old.episodes
    totals: dict[bytes, bytes] = {old.team_id.encode(): raw.encode()}
    rows: dict[bytes, bytes] = {}
    view = load_caseload(totals, rows, old.team_id.encode(), old.team_id)
    assert view.totals == old.totals and not view.changes
    assert TeamTotals.model_validate_json(totals[old.team_id.encode()]) == old.totals
    assert {k.split(b"\x1f", 1)[1].decode() for k in rows} == set(old.episodes)
    for key, episode in old.episodes.items():
        assert view.episode(key) == episode
    # Loading again reads the split form and writes nothing.
    before = (dict(totals), dict(rows))
    again = load_caseload(totals, rows, old.team_id.encode(), old.team_id)
    assert again.totals == old.totals and (totals, rows) == before


def test_a_new_team_starts_empty_and_an_unknown_row_is_absent() -> None:
    view = load_caseload({}, {}, b"medsurg", "medsurg")
    assert view.totals == TeamTotals(team_id="medsurg") and view.episode("x") is None
    assert view.load("cm-ana") == 0
