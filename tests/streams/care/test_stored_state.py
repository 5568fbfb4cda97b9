"""The episodes and caseloads table values are a contract with every worker that ever
restores them: a state written by an older engine must load and decide the same.

fixtures/stored_state_v1.json was written by the engine as of commit ff5bfd7 (before the
copy-on-write state and the merge wait) after journeys j1, j2, j3 and j4 and a task
update; ``next_outputs`` is what that engine published for j1_readmission.hl7 applied to
those states. Never regenerate it: it stands for what an old worker left in the
changelog topic.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from hub.commands.map_cmd import map_files
from schemas.canonical import CanonicalEvent
from streams.care.assignment import TeamState
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun, summary_line
from streams.care.state import PatientState

HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "stored_state_v1.json"
T0 = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())
    return data


def test_old_states_load_and_store_back_byte_for_byte(stored: dict[str, Any]) -> None:
    for raw in stored["patients"].values():
        state = PatientState.model_validate_json(raw)
        assert state.merge_wait is None and state.merge_waits_expired is None
        # What the agent writes back (exclude_none): the new fields add nothing.
        assert state.model_dump_json(exclude_none=True) == raw
    for raw in stored["teams"].values():
        assert TeamState.model_validate_json(raw).model_dump_json() == raw


def test_old_states_decide_what_the_old_engine_decided(stored: dict[str, Any]) -> None:
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=load_roster(HERE / "journeys" / "roster.yaml"))
    run = OfflineRun(ctx)
    for key, raw in stored["patients"].items():
        run.patients[key] = PatientState.model_validate_json(raw)
    for raw in stored["teams"].values():
        run.load_team(TeamState.model_validate_json(raw))
    run.clock = datetime.fromisoformat(stored["clock"])
    events = list(map_files([str(HERE / "journeys" / f) for f in stored["next_files"]],
                            default_tz="America/New_York", received_at=T0))
    assert all(isinstance(e, CanonicalEvent) for e in events)
    got = [summary_line(o) for o in run.run(events)]  # type: ignore[arg-type]
    assert orjson.loads(orjson.dumps(got)) == stored["next_outputs"]
