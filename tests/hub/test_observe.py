"""hub.observe: the care stages' figures and the streams sensor, in the documented shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import faust
import orjson

from hub.dashboard import RateTracker, dashboard_data, quantile
from hub.metrics import HubMetrics, parse_metrics_text
from hub.observe import CareFiguresAdapter, StreamsSensor, build_ops, watch_worker
from hub.settings import Settings
from schemas.care import TICK_KEY, EscalationOutput, dump_output
from streams.care_agents import CareFigures


class LeadShape:
    """The shape CareFigures had before it returned documented keys."""

    def figures(self) -> dict[str, Any]:
        return {"care_inputs": 5, "care_failures": 1, "outputs": {"task": 3},
                "tasks_open": 3, "tasks_overdue": 0,
                "caseload_points": {"med|cm-ana": 4}, "caseload_cap_points": {"med|cm-ana": 30,
                                                                              "med|cm-bo": 30},
                "unassigned_points": {"med": 2}}


def test_care_figures_adapter_reads_the_earlier_shape() -> None:
    figs = CareFiguresAdapter(LeadShape()).figures()
    assert figs["caseloads"] == [
        {"team": "med", "manager": "cm-ana", "points": 4, "cap_points": 30},
        {"team": "med", "manager": "cm-bo", "points": 0, "cap_points": 30}]
    assert "stages" not in figs and "care_inputs" not in figs  # the sensor counts stages
    m = HubMetrics(Settings())
    m.add_provider(CareFiguresAdapter(LeadShape()))
    text = m.render().decode()
    assert 'hub_caseload_points{manager="cm-ana",team="med"} 4.0' in text
    assert 'hub_caseload_cap_points{manager="cm-bo",team="med"} 30.0' in text


def test_care_figures_return_the_documented_keys() -> None:
    care = CareFigures()
    assert care.figures() == {"outputs": {}}  # nothing yet: absent, not zeros
    care.outputs["task"] = 4
    care.caseload_points[("med", "cm-ana")] = 6
    care.caseload_caps[("med", "cm-ana")] = 45
    care.caseload_caps[("med", "cm-bo")] = 40
    care.open_tasks, care.overdue_tasks = 3, 1  # as the tick assigns them
    figs = CareFiguresAdapter(care).figures()
    assert figs == {
        "outputs": {"task": 4}, "tasks_open": 3, "tasks_overdue": 1,
        "stages": {"episodes": {"timer_row_failures": 0}},
        "caseloads": [{"team": "med", "manager": "cm-ana", "points": 6, "cap_points": 45},
                      {"team": "med", "manager": "cm-bo", "points": 0, "cap_points": 40}]}


# ----------------------------------------------------------------- the sensor
@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Message:
    timestamp: float


@dataclass
class Event:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    message: Message = field(default_factory=lambda: Message(0.0))


@dataclass
class Stream:
    prefix: str


@dataclass
class Pending:
    value: bytes


@dataclass
class FutureMessage:
    message: Pending


class Clock:
    t = 1_772_000_000.0

    def __call__(self) -> float:
        return self.t


def _through(sensor: StreamsSensor, tp: TP, offset: int, stage: str, event: Event,
             clock: Clock, took: float) -> None:
    state = sensor.on_stream_event_in(tp, offset, Stream(stage), event)
    clock.t += took
    sensor.on_stream_event_out(tp, offset, Stream(stage), event, state)


def test_sensor_counts_stages_dead_letters_latency_and_escalations() -> None:
    clock = Clock()
    sensor = StreamsSensor("p.", clock=clock)
    received = b"2026-03-02T10:00:00+00:00"
    clock.t = 1_772_445_600.0  # 2026-03-02T10:00:00Z
    raw = Event(b"GENHOSP|1", b"MSH|...", {"hub-received-at": received})
    _through(sensor, TP("p.ehr.hl7v2", 2), 7, "normalize", raw, clock, 0.02)
    # The canonical event names its raw record; the care decisions come 0.3 s later.
    ev = Event(b"GENHOSP|1", b"{}", {"hub-source": b"p.ehr.hl7v2:2:7"})
    _through(sensor, TP("p.care.events", 2), 0, "episodes", ev, clock, 0.28)
    # A care.events record from elsewhere (no remembered source): counted, not timed.
    _through(sensor, TP("p.care.events", 3), 0, "episodes", Event(b"k", b"{}"), clock, 0.1)
    # The timer's ticks are not work.
    _through(sensor, TP("p.care.episode-commands", 0), 0, "episodes",
             Event(TICK_KEY, b"{}"), clock, 0.1)
    # An unassigned escalation comes back on care.assignments, twice (redelivery).
    out = orjson.dumps({"id": "a1", "status": "unassigned", "team": "medsurg",
                        "reason": "no_capacity", "decided_at": "2026-03-02T10:00:01+00:00",
                        "patient_key": "GENHOSP|MRN"})
    for offset in (0, 1):
        _through(sensor, TP("p.care.assignments", 1), offset, "episodes",
                 Event(b"k", out), clock, 0.01)
    # Dead letters, counted once the broker has them.
    for stage, code in (("normalize", "missing_msh"), ("normalize", "internal_error"),
                        ("episodes", "invalid_resource")):
        letter = orjson.dumps({"stage": stage, "error_code": code})
        state = sensor.on_send_initiated(None, "p.hub.dlq", FutureMessage(Pending(letter)), 0, 0)
        sensor.on_send_completed(None, state, None)
    assert sensor.on_send_initiated(None, "p.care.tasks", FutureMessage(Pending(b"x")), 0,
                                    0) is None

    figs = sensor.figures()
    assert figs["stages"]["normalize"] == {
        "processed": 1, "dead_letters": {"missing_msh": 1, "internal_error": 1},
        "mapping_failures": {"missing_msh": 1}}
    assert figs["stages"]["episodes"] == {"processed": 4,
                                          "dead_letters": {"invalid_resource": 1}}
    assert figs["escalations_unassigned"] == 1
    assert figs["recent_escalations"] == [{"at": "2026-03-02T10:00:01+00:00",
                                           "team": "medsurg", "reason": "no_capacity",
                                           "kind": "unassigned"}]
    lat = figs["end_to_end_latency_s"]
    assert lat["normalize"]["count"] == 1 and lat["care"]["count"] == 1
    assert quantile(lat["normalize"], 0.5) == 0.025
    assert quantile(lat["care"], 0.5) == 0.5  # 0.3 s after receipt: in the 0.5 s bucket

    m = HubMetrics(Settings())
    m.add_provider(sensor)
    text = m.render().decode()
    samples = parse_metrics_text(text)
    assert ({"stage": "care", "le": "0.5"}, 1.0) in samples[
        "hub_end_to_end_latency_seconds_bucket"]
    assert ({"stage": "episodes", "code": "invalid_resource"}, 1.0) in samples[
        "hub_dead_letters_total"]
    assert "MRN" not in text and "GENHOSP" not in text


def test_sensor_never_disturbs_the_stream() -> None:
    sensor = StreamsSensor()
    bad = Event(b"k", b"not json")
    state = sensor.on_stream_event_in(TP("care.assignments", 0), 0, Stream("episodes"), bad)
    assert state is None  # logged, skipped
    sensor.on_stream_event_out(TP("care.assignments", 0), 0, Stream("episodes"), bad, state)
    state = sensor.on_send_initiated(None, "hub.dlq", FutureMessage(Pending(b"{")), 0, 0)
    assert state == ("unknown", "unknown")


# -------------------------------------------- escalations from the produce path
def _escalation(rule: str, reason: str, *, task: str | None = None,
                kind: str | None = None, team: str | None = "medsurg") -> bytes:
    """An escalation as the care engine publishes it (orjson of the wire form)."""
    esc = EscalationOutput(
        id=f"esc-{rule}-{task}", cause_event_id="ev1", rule=rule,
        patient_key="GENHOSP|MRN424242", encounter_key="GENHOSP|V1", facility="GENHOSP",
        decided_at=datetime(2026, 11, 24, 13, 0, tzinfo=UTC), reason=reason, team=team,
        supervisor="sup-lee", task_id=task, task_kind=kind,
        due=datetime(2026, 11, 20, 17, 0, tzinfo=UTC) if task else None)
    return orjson.dumps(dump_output(esc))


def test_sensor_lists_overdue_and_no_agency_escalations_from_the_producer() -> None:
    sensor = StreamsSensor("p.")
    assert "recent_escalations" not in sensor.figures()  # nothing yet: no data
    overdue = _escalation("task.overdue", "task_overdue", task="t1", kind="contact")
    for _ in range(2):  # a resend after a crash: same deterministic id, listed once
        sensor.on_produce_message(object(), key=b"GENHOSP|MRN424242", value=overdue,
                                  partition=None, timestamp=None, headers=None, signal=None)
    sensor.on_produce_message(object(), key=b"k", value=_escalation(
        "referral.no_agency", "no_agency_available", kind="referral:housing"))
    # Unassigned escalations are listed from their assignment output, not twice.
    sensor.on_produce_message(object(), key=b"k", value=_escalation(
        "assignment.all_at_cap", "all_at_cap"))
    # Other outputs, ticks and garbage pass by (the signal never raises).
    sensor.on_produce_message(object(), key=b"k", value=b'{"type":"task","rule":"x"}')
    sensor.on_produce_message(object(), key=TICK_KEY, value=None)
    sensor.on_produce_message(object(), key=b"k", value=b'{"type":"escalation",')

    figs = sensor.figures()
    assert figs["recent_escalations"] == [
        {"at": "2026-11-24T13:00:00Z", "team": "medsurg", "reason": "no_agency_available",
         "kind": "no_agency", "task_kind": "referral:housing"},
        {"at": "2026-11-24T13:00:00Z", "team": "medsurg", "reason": "task_overdue",
         "kind": "overdue_task", "task_kind": "contact"}]
    assert figs["escalations_unassigned"] == 0
    assert "MRN424242" not in orjson.dumps(figs).decode()


def test_watch_worker_connects_the_sensor_to_the_apps_producer_signal() -> None:
    app = faust.App("test-observe-signal", broker="memory://", store="memory://")
    ops = build_ops(Settings())
    watch_worker(ops, Settings(), app, SimpleNamespace(duplicates=0, events=0))
    # What faust's producer does before every send (faust/transport/drivers/aiokafka.py).
    app.on_produce_message.send(key=b"k", value=_escalation(
        "task.overdue", "task_overdue", task="t9", kind="visit"),
        partition=None, timestamp=None, headers=None)
    data = dashboard_data(ops.metrics, ops.rates)
    assert data["recent_escalations"] == [
        {"at": "2026-11-24T13:00:00Z", "team": "medsurg", "kind": "overdue_task",
         "reason": "task_overdue", "task_kind": "visit"}]


class Leaky:
    """A provider handing whole outputs over by mistake."""

    def figures(self) -> dict[str, Any]:
        return {"recent_escalations": [
            {"at": "2026-11-24T13:00:00Z", "team": "med", "kind": "overdue_task",
             "reason": "task_overdue", "patient_key": "GENHOSP|MRN424242",
             "supervisor": "sup-lee"}] * 25}


def test_dashboard_shows_escalations_as_codes_only_and_at_most_twenty() -> None:
    m = HubMetrics(Settings())
    m.add_provider(Leaky())
    rows = dashboard_data(m, RateTracker())["recent_escalations"]
    assert len(rows) == 20
    assert rows[0] == {"at": "2026-11-24T13:00:00Z", "team": "med", "kind": "overdue_task",
                       "reason": "task_overdue", "task_kind": None}
    assert dashboard_data(HubMetrics(Settings()), RateTracker())["recent_escalations"] is None
