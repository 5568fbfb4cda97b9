"""Wiring of the ops endpoints for ``hub run`` / ``hub ingest`` / ``hub worker``.

One :class:`~hub.web.Ops` per process. Where it is served:

* a process with the ingest role: on the ingest HTTP server (``HUB_HTTP_PORT``),
  including the worker's figures when ``hub run`` runs both roles in one process;
* a worker-only process: on its own small server (``HUB_WORKER_WEB_PORT``).

The worker's figures come from three providers (:class:`hub.metrics.FiguresProvider`):
normalize's counters (duplicates, canonical events), the care stages' figures
(caseloads, tasks, outputs) and :class:`StreamsSensor`, a faust sensor that watches
every agent alike: records per stage, dead letters by stage and code, end-to-end
latency and unassigned escalations. A new agent (referrals...) shows up in the stage
table without any code of its own.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust
import mode
import orjson

from hub.dashboard import worker_input_topics
from hub.health import BrokerProbe, LagProbe, faust_check, flag_check
from hub.logging import get_logger
from hub.metrics import CountersFigures, HubMetrics
from hub.settings import Settings
from hub.web import Ops, OpsServer
from schemas.care import TICK_KEY
from schemas.errors import ErrorCode
from schemas.records import HEADER_RECEIVED_AT
from schemas.topics import CARE_ASSIGNMENTS, CARE_EVENTS, EHR_FHIR, EHR_HL7V2, HUB_DLQ

log = get_logger("hub.observe")


def build_ops(settings: Settings) -> Ops:
    ops = Ops(HubMetrics(settings))
    ops.readiness.add("broker", BrokerProbe(settings))
    return ops


def watch_ingest(ops: Ops, ingest: Any) -> None:
    """``ingest``: a started-or-not :class:`hub.ingest.IngestService`."""
    ops.readiness.add("ingest", flag_check(lambda: bool(ingest.started), "ingest_not_listening"))


def watch_worker(ops: Ops, settings: Settings, app: Any, counters: Any) -> None:
    """The faust app's readiness, the group's lag and the streams' figures.

    ``counters`` is what ``streams.app.create_app`` returns next to the app
    (``NormalizeCounters``); a ``counters.care`` with a ``figures()`` method (the care
    stages, see :class:`hub.metrics.FiguresProvider`) is read too. Call before the app
    starts (the sensor must see the first records).
    """
    ops.readiness.add("worker", faust_check(app))
    sensor = StreamsSensor(settings.topic_prefix)
    app.sensors.add(sensor)
    app.on_produce_message.connect(sensor.on_produce_message)
    ops.metrics.add_provider(sensor)
    # Processed and dead-letter counts come from the sensor (by stage and code);
    # normalize's own counters add what only it knows.
    ops.metrics.add_provider(CountersFigures(counters, stage_counts=False))
    care = getattr(counters, "care", None)
    if care is not None and callable(getattr(care, "figures", None)):
        ops.metrics.add_provider(CareFiguresAdapter(care))
    ops.lag = LagProbe(settings, worker_input_topics(app, settings.topic_prefix))


class CareFiguresAdapter:
    """Reads ``streams.care_agents.CareFigures`` into the documented provider shape.

    ``CareFigures.figures()`` returns the documented keys; this adapter also accepts
    the earlier shape (caseloads keyed ``"team|manager"``, ``care_inputs``), so a
    worker and a hub of different versions still render.
    """

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def figures(self) -> dict[str, Any]:
        raw = dict(self.provider.figures())
        points = raw.pop("caseload_points", None)
        caps = raw.pop("caseload_cap_points", None) or {}
        if points is not None and "caseloads" not in raw:
            rows = []
            for key in sorted(set(points) | set(caps)):
                team, _, manager = str(key).partition("|")
                rows.append({"team": team, "manager": manager,
                             "points": points.get(key, 0), "cap_points": caps.get(key)})
            raw["caseloads"] = rows
        # Stage inputs and failures: the sensor counts them per stage and code.
        raw.pop("care_inputs", None)
        raw.pop("care_failures", None)
        raw.pop("unassigned_points", None)
        return raw


# End-to-end latency, received by ingest -> output published: a few ms on a quiet
# hub, seconds under a backlog, minutes when a stage is stuck behind a rebalance.
E2E_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                  10.0, 30.0, 60.0, 300.0, math.inf)
_REMEMBERED_SOURCES = 50_000
_RECENT = 20
# Escalation outputs are the only records carrying this (orjson writes no spaces).
_ESCALATION_MARK = b'"type":"escalation"'
# Escalation rule -> the dashboard's kind; the unassigned ones come from assignments.
_ESCALATION_KINDS = {"task.overdue": "overdue_task", "referral.no_agency": "no_agency"}


class LatencyHistogram:
    """Cumulative-bucket histogram, in the FiguresProvider shape."""

    def __init__(self, bounds: tuple[float, ...] = E2E_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def figures(self) -> dict[str, Any]:
        running, buckets = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            buckets.append([bound, running])
        return {"buckets": buckets, "sum": self.sum, "count": self.count}


def _received_epoch(event: Any) -> float | None:
    """When ingest received the raw record: its header, else the record's timestamp."""
    headers = getattr(event, "headers", None) or {}
    raw = headers.get(HEADER_RECEIVED_AT)
    if isinstance(raw, bytes):
        try:
            return datetime.fromisoformat(raw.decode()).timestamp()
        except (UnicodeDecodeError, ValueError):
            pass
    ts = getattr(event.message, "timestamp", None)
    return float(ts) if ts else None


class StreamsSensor(faust.Sensor):
    """Stage figures of the faust app, observed from outside the agents.

    * ``processed`` per stage: records an agent finished (the stage is the agent's
      name; the care timer's tick records are not counted);
    * dead letters by stage and code: read from the (PHI-free) records sent to
      ``hub.dlq``, counted once the broker has them; mapping failures are the
      normalize dead letters other than ``internal_error``;
    * end-to-end latency, received by ingest -> output published, by stage:
      ``normalize`` when a raw record's canonical events are out, ``care`` when the
      episodes stage has published its decisions on one of them (care.events records
      name their raw record in ``hub-source``, whose receipt time is remembered here;
      the two topics are co-partitioned, so one worker sees both);
    * unassigned escalations, from the assignment outputs the episodes stage reads
      back (team and reason code only);
    * the other escalations (overdue tasks, referrals with no agency left), from the
      produce path: no agent reads ``care.escalations`` back, and the care stages
      publish through the app's producer, which faust's send sensors do not see, so
      :meth:`on_produce_message` is connected to the app's ``on_produce_message``
      signal (see :func:`watch_worker`).

    Hooks run on the event loop for every record, so each is a few dict operations.
    """

    def __init__(self, prefix: str = "", *, clock: Callable[[], float] = time.time,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.clock = clock
        self.raw_topics = {prefix + EHR_HL7V2.name, prefix + EHR_FHIR.name}
        self.events_topic = prefix + CARE_EVENTS.name
        self.assignments_topic = prefix + CARE_ASSIGNMENTS.name
        self.dlq_topic = prefix + HUB_DLQ.name
        self.processed: dict[str, int] = {}
        self.dead_letters: dict[tuple[str, str], int] = {}
        self.latency: dict[str, LatencyHistogram] = {}
        self.unassigned = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=_RECENT)
        self._seen_outputs: OrderedDict[str, None] = OrderedDict()
        self._received: OrderedDict[bytes, float] = OrderedDict()

    # ------------------------------------------------------------ faust hooks
    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any
                           ) -> dict[str, Any] | None:
        try:
            if event.key == TICK_KEY:
                return None
            topic = tp.topic
            received: float | None = None
            if topic in self.raw_topics:
                received = _received_epoch(event)
                if received is not None:
                    coords = f"{topic}:{tp.partition}:{offset}".encode()
                    self._remember(coords, received)
            elif topic == self.events_topic:
                source = (event.headers or {}).get("hub-source")
                received = self._received.get(source) if isinstance(source, bytes) else None
            elif topic == self.assignments_topic:
                self._assignment(event.value)
            return {"stage": _stage(stream, topic), "received": received,
                    "latency": "normalize" if topic in self.raw_topics else "care"}
        except Exception as exc:  # a sensor must never disturb the stream
            log.warning("sensor_failed", reason=type(exc).__name__, stage="event_in")
            return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: dict[str, Any] | None = None) -> None:
        if not state:
            return
        stage = state["stage"]
        self.processed[stage] = self.processed.get(stage, 0) + 1
        received = state.get("received")
        if received is not None:
            name = state["latency"]
            hist = self.latency.get(name)
            if hist is None:
                hist = self.latency[name] = LatencyHistogram()
            hist.observe(self.clock() - received)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        if topic != self.dlq_topic:
            return None
        try:
            value = message.message.value
            letter = orjson.loads(value) if isinstance(value, bytes | str) else {}
            return (str(letter.get("stage") or "unknown"),
                    str(letter.get("error_code") or "unknown"))
        except Exception:  # unreadable: still a dead letter
            return ("unknown", "unknown")

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        if state is not None:
            self.dead_letters[state] = self.dead_letters.get(state, 0) + 1

    # ----------------------------------------------------- app signal (producer)
    def on_produce_message(self, sender: Any = None, key: bytes | None = None,
                           value: bytes | None = None, *args: Any, **kwargs: Any) -> None:
        """Every record the app's producer sends (the signal carries no topic): the
        escalation outputs among them go to the recent list. Runs in the send path, so
        a substring test first, and it never raises."""
        try:
            if not isinstance(value, bytes) or _ESCALATION_MARK not in value:
                return
            out = orjson.loads(value)
            if not isinstance(out, dict) or out.get("type") != "escalation":
                return
            rule = str(out.get("rule") or "")
            if rule.startswith("assignment."):
                return  # counted from its assignment output, see _assignment
            if not self._first_time(str(out.get("id") or "")):
                return
            entry = {"at": out.get("decided_at"), "team": out.get("team"),
                     "reason": out.get("reason"), "kind": _ESCALATION_KINDS.get(rule, "other")}
            if out.get("task_kind"):
                entry["task_kind"] = out["task_kind"]
            self.recent.append(entry)
        except Exception as exc:  # a sensor must never disturb the stream
            log.warning("sensor_failed", reason=type(exc).__name__, stage="produce")

    # ---------------------------------------------------------------- figures
    def figures(self) -> dict[str, Any]:
        stages: dict[str, dict[str, Any]] = {
            name: {"processed": n} for name, n in self.processed.items()}
        for (stage, code), n in self.dead_letters.items():
            f = stages.setdefault(stage, {})
            f.setdefault("dead_letters", {})[code] = n
            if stage == "normalize" and code != ErrorCode.INTERNAL_ERROR.value:
                f.setdefault("mapping_failures", {})[code] = n
        out: dict[str, Any] = {"stages": stages}
        if self.latency:
            out["end_to_end_latency_s"] = {k: h.figures() for k, h in self.latency.items()}
        if self.processed.get("episodes") or self.unassigned or self.recent:
            out["escalations_unassigned"] = self.unassigned
            out["recent_escalations"] = list(reversed(self.recent))
        return out

    # ---------------------------------------------------------------- helpers
    def _remember(self, coords: bytes, received: float) -> None:
        self._received[coords] = received
        if len(self._received) > _REMEMBERED_SOURCES:
            self._received.popitem(last=False)

    def _first_time(self, output_id: str) -> bool:
        """False for an output seen before (a redelivery or a resend after a crash:
        the same deterministic id)."""
        if output_id in self._seen_outputs:
            return False
        self._seen_outputs[output_id] = None
        if len(self._seen_outputs) > _REMEMBERED_SOURCES:
            self._seen_outputs.popitem(last=False)
        return True

    def _assignment(self, value: Any) -> None:
        if not isinstance(value, bytes | str):
            return
        out = orjson.loads(value)
        if not isinstance(out, dict) or out.get("status") != "unassigned":
            return
        if not self._first_time(str(out.get("id") or "")):
            return
        self.unassigned += 1
        self.recent.append({"at": out.get("decided_at"), "team": out.get("team"),
                            "reason": out.get("reason"), "kind": "unassigned"})


def _stage(stream: Any, topic: str) -> str:
    # An agent's stream is prefixed with the agent's name, a state identity that
    # never changes (streams.app, streams.care_agents).
    name = getattr(stream, "prefix", "") or ""
    return str(name) or topic


class OpsRole(mode.Service):
    """The worker's ops web server as a mode service (started with the app)."""

    def __init__(self, ops: Ops, settings: Settings, **kwargs: Any) -> None:
        self.server = OpsServer(ops, settings)
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.server.start()

    async def on_stop(self) -> None:
        await self.server.stop()
