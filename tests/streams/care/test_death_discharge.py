"""A death or hospice discharge releases the case manager's caseload at once (not after
the 30-day follow-up period), and a cancelled discharge (A13) reopens the episode and
asks for a manager again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from mappers.hl7v2 import map_hl7v2
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun, summary_line

HERE = Path(__file__).parent / "journeys"
T0 = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _journey(disposition: str, *, cancel: bool) -> list[dict[str, Any]]:
    # j2: admission, discharge home (PV1-36 = 01), then A13. The discharge's PV1-36 is
    # rewritten; the A13 is kept only when ``cancel``.
    raw = (HERE / "j2_cancel_discharge.hl7").read_text()
    messages = [m.strip() for m in raw.split("\n\n") if m.strip()]
    messages[1] = messages[1].replace("|||||||||||||||||01||||||||",
                                      f"|||||||||||||||||{disposition}||||||||")
    assert f"|{disposition}|" in messages[1]
    if not cancel:
        messages = messages[:2]
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=load_roster(HERE / "roster.yaml"))
    events = [e for m in messages
              for e in map_hl7v2(m.replace("\n", "\r").encode(), received_at=T0,
                                 default_tz="America/New_York")]
    return [summary_line(o) for o in OfflineRun(ctx).run(events)]


def _assignments(out: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["status"], o["reason"]) for o in out if o["type"] == "assignment"]


@pytest.mark.parametrize("disposition", ["20", "50"])  # expired; hospice (home)
def test_death_or_hospice_releases_the_caseload_at_discharge(disposition: str) -> None:
    out = _journey(disposition, cancel=False)
    assert [o for o in out if o["type"] == "task"] == []
    assert _assignments(out) == [("assigned", "least_loaded"), ("released", "episode_closed")]


def test_discharge_home_keeps_the_caseload() -> None:
    out = _journey("01", cancel=False)
    assert _assignments(out) == [("assigned", "least_loaded")]


def test_cancelled_death_discharge_reopens_and_asks_for_a_manager_again() -> None:
    out = _journey("20", cancel=True)
    statuses = _assignments(out)
    assert statuses[:2] == [("assigned", "least_loaded"), ("released", "episode_closed")]
    # Back in a bed: assigned again, to the manager who had the patient (continuity).
    again = [o for o in out if o["type"] == "assignment"][2:]
    assert again and again[0]["status"] == "assigned"
    first = next(o for o in out if o["type"] == "assignment")
    assert again[0]["manager_id"] == first["manager_id"]
