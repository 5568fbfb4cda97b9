"""The ops dashboard's data: one JSON document built from the process's metrics.

``/dashboard`` is a static page (``hub/static/dashboard.html``, vanilla JS, no build
step) that polls ``/dashboard/data.json``. Same figures as ``/metrics``, shaped for
people: per-feed rate and silence, per-stage rate, lag and dead letters, caseloads
against caps, overdue tasks, recent escalations. ``None`` (JSON null) means "no data
yet" (e.g. the care stages are not running in this process) and the page says so
rather than showing a reassuring 0.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from hub.metrics import HubMetrics, latency_by_stage
from schemas.topics import (
    CARE_ASSIGNMENT_REQUESTS,
    CARE_ASSIGNMENTS,
    CARE_EPISODE_COMMANDS,
    CARE_EVENTS,
    CARE_TASK_UPDATES,
    EHR_FHIR,
    EHR_HL7V2,
)

# Which topics feed which stage (agent), for the stage table's lag column. A stage not
# listed shows no lag there (the per-topic table has everything).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "normalize": (EHR_HL7V2.name, EHR_FHIR.name),
    "episodes": (CARE_EVENTS.name, CARE_ASSIGNMENTS.name, CARE_TASK_UPDATES.name,
                 CARE_EPISODE_COMMANDS.name),
    "caseloads": (CARE_ASSIGNMENT_REQUESTS.name,),
}
# End-to-end latency series (hub.observe.StreamsSensor) shown on a stage's row: the
# stage whose outputs end that path.
STAGE_LATENCY: dict[str, str] = {"normalize": "normalize", "episodes": "care"}
_WINDOW_S = 60.0


def worker_input_topics(app: Any | None = None, prefix: str = "") -> list[str]:
    """Topics the worker group consumes: its agents' topics (unprefixed), else the
    known stages' inputs."""
    names: set[str] = set()
    agents = getattr(app, "agents", None) or {}
    for agent in agents.values():
        for topic in getattr(getattr(agent, "channel", None), "topics", ()) or ():
            names.add(str(topic).removeprefix(prefix))
    return sorted(names or {t for ts in STAGE_INPUTS.values() for t in ts})


def quantile(hist: Mapping[str, Any] | None, q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile (Prometheus'
    histogram_quantile without interpolation: an honest "at most")."""
    if not hist or not hist.get("count"):
        return None
    want = q * float(hist["count"])
    for bound, cumulative in hist.get("buckets", ()):
        if cumulative >= want:
            return float(bound) if float(bound) != float("inf") else None
    return None


class RateTracker:
    """Per-minute rates of cumulative counters, from samples taken at each poll."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: dict[str, deque[tuple[float, float]]] = {}

    def rate_per_min(self, name: str, total: float) -> float | None:
        now = self.clock()
        samples = self.samples.setdefault(name, deque())
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= _WINDOW_S:
            samples.popleft()
        first_at, first = samples[0]
        if now - first_at < 1.0:
            return None  # one sample: no rate yet
        return max(0.0, (total - first) * 60.0 / (now - first_at))


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def dashboard_data(metrics: HubMetrics, rates: RateTracker, *,
                   lag: Mapping[tuple[str, int], int] | None = None) -> dict[str, Any]:
    now = metrics.clock()
    figs = metrics.figures()
    prefix = metrics.settings.topic_prefix

    received_by_feed: dict[str, int] = {}
    for (feed, _trigger, _transport), n in metrics.received.items():
        received_by_feed[feed] = received_by_feed.get(feed, 0) + n
    feeds = []
    for status in metrics.feeds(now):
        feeds.append({
            "feed": status.feed,
            "received": received_by_feed.get(status.feed, 0),
            "rate_per_min": metrics.feed_rate_per_min(status.feed, now),
            "age_s": _round(status.age_s, 0),
            "threshold_s": status.threshold_s,
            "silent": status.silent,
            "seen": status.seen,
        })

    lag = dict(lag if lag is not None else metrics.consumer_lag)
    lag_rows: list[dict[str, Any]] = [
        {"topic": t.removeprefix(prefix), "partition": p, "lag": n}
        for (t, p), n in sorted(lag.items())]
    lag_by_topic: dict[str, int] = {}
    lag_topics: dict[str, dict[str, Any]] = {}
    for (t, _p), n in lag.items():
        name = t.removeprefix(prefix)
        lag_by_topic[name] = lag_by_topic.get(name, 0) + n
        row = lag_topics.setdefault(name, {"topic": name, "partitions": 0, "lag": 0,
                                           "max_lag": 0})
        row["partitions"] += 1
        row["lag"] += n
        row["max_lag"] = max(row["max_lag"], n)

    latency = latency_by_stage(figs.get("end_to_end_latency_s"))
    stages = []
    ingest_total = sum(metrics.received.values())
    if metrics.received or metrics.frames or metrics.acks or metrics.fhir:
        stages.append({
            "stage": "ingest", "processed": ingest_total,
            "rate_per_min": _round(rates.rate_per_min("stage:ingest", ingest_total)),
            "lag": None,
            "dead_letters": sum(n for (s, _), n in metrics.dead_letters.items() if s == "ingest"),
            "duplicates": metrics.duplicates.get("ingest", 0),
            "latency_p50_s": None, "latency_p95_s": None,
        })
    for name, f in sorted((figs.get("stages") or {}).items()):
        processed = int(f.get("processed", 0))
        inputs = STAGE_INPUTS.get(name, ())
        stage_lag = (sum(lag_by_topic.get(t, 0) for t in inputs)
                     if inputs and lag_by_topic else None)
        hist = latency.get(STAGE_LATENCY.get(name, name))
        stages.append({
            "stage": name, "processed": processed,
            "rate_per_min": _round(rates.rate_per_min(f"stage:{name}", processed)),
            "lag": stage_lag,
            "dead_letters": sum((f.get("dead_letters") or {}).values()),
            "duplicates": int(f.get("duplicates", 0)),
            "latency_p50_s": quantile(hist, 0.5),
            "latency_p95_s": quantile(hist, 0.95),
        })

    caseloads = None
    if "caseloads" in figs:
        caseloads = [{"team": r.get("team"), "manager": r.get("manager"),
                      "points": r.get("points"), "cap_points": r.get("cap_points")}
                     for r in figs["caseloads"]]
        caseloads.sort(key=lambda r: (str(r["team"]), str(r["manager"])))

    return {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "ready": metrics.ready,
        "feeds": feeds,
        "acks": dict(sorted(metrics.acks.items())),
        "fhir_responses": dict(sorted(metrics.fhir.items())),
        "stages": stages,
        "lag": lag_rows,
        "lag_topics": [lag_topics[t] for t in sorted(lag_topics)],
        "outputs": dict(sorted((figs.get("outputs") or {}).items())),
        "caseloads": caseloads,
        "tasks_open": figs.get("tasks_open"),
        "tasks_overdue": figs.get("tasks_overdue"),
        "escalations_unassigned": figs.get("escalations_unassigned"),
        "recent_escalations": (_escalations(figs["recent_escalations"])
                               if "recent_escalations" in figs else None),
        "referrals": ({str(k): int(v) for k, v in sorted(figs["referrals"].items())}
                      if isinstance(figs.get("referrals"), Mapping) else None),
        "webhooks": _webhooks(figs.get("webhook_deliveries")),
    }


WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "exhausted")
# What a recent escalation may show: when, the roster team, codes. An entry's other
# keys (a provider handing over a whole output by mistake) never reach the page.
ESCALATION_KEYS = ("at", "team", "kind", "reason", "task_kind")
_RECENT_SHOWN = 20


def _escalations(raw: Any) -> list[dict[str, str | None]]:
    rows = []
    for entry in list(raw or ())[:_RECENT_SHOWN]:
        if isinstance(entry, Mapping):
            rows.append({k: (None if entry.get(k) is None else str(entry[k]))
                         for k in ESCALATION_KEYS})
    return rows


def _webhooks(raw: Any) -> list[dict[str, Any]] | None:
    """One row per agency: delivered, retried, failed, exhausted (None: no figures)."""
    if not isinstance(raw, Mapping):
        return None
    rows = []
    for agency, outcomes in sorted(raw.items()):
        row: dict[str, Any] = {"agency": str(agency)}
        for outcome in WEBHOOK_OUTCOMES:
            row[outcome] = int((outcomes or {}).get(outcome, 0))
        rows.append(row)
    return rows
