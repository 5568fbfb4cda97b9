"""The synthetic feed's two mixes (hub.feed): the journeys the demo replays, and the same
journeys inside a hospital's everyday traffic (REFERENCE.md's measured day)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.care import dump_output
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun

SAMPLES = Path(__file__).resolve().parents[2] / "hub" / "samples"
AT = datetime(2026, 11, 1, tzinfo=UTC)


def _trigger(message: bytes) -> str:
    return message.split(b"\r", 1)[0].split(b"|")[8].split(b"^")[1].decode()


def test_the_hospital_mix_has_the_reference_proportions() -> None:
    messages = list(generate(FeedConfig(patients=200, bad_messages=False, mix="hospital")))
    share = {k: v / len(messages) for k, v in Counter(map(_trigger, messages)).items()}
    # REFERENCE.md: A08 48%, A31 30%, A04 17%, A01 1% of one hospital's day.
    assert abs(share["A08"] - 0.48) < 0.02
    assert abs(share["A31"] - 0.30) < 0.02
    assert abs(share["A04"] - 0.17) < 0.02
    assert abs(share["A01"] - 0.01) < 0.002


def test_the_journeys_are_the_same_in_either_mix() -> None:
    journeys = list(generate(FeedConfig(patients=50, bad_messages=False)))
    hospital = list(generate(FeedConfig(patients=50, bad_messages=False, mix="hospital")))
    assert set(journeys) < set(hospital)
    assert [m for m in hospital if m in set(journeys)] == journeys  # same order too
    # Every message maps: the everyday traffic is well-formed ADT.
    assert all(map_hl7v2(m, received_at=AT, default_tz="America/New_York")
               for m in hospital)


def test_everyday_traffic_changes_no_care_decision() -> None:
    def decided(mix: str) -> list[dict[str, object]]:
        ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                          roster=load_roster(SAMPLES / "roster.yaml"), render_fhir=False)
        run = OfflineRun(ctx)
        for m in generate(FeedConfig(patients=40, bad_messages=False, mix=mix)):  # type: ignore[arg-type]
            for ev in map_hl7v2(m, received_at=AT, default_tz="America/New_York"):
                run.event(ev, tick=False)
        return [dump_output(o) for o in run.outputs]

    journeys = decided("journeys")
    assert journeys and decided("hospital") == journeys
