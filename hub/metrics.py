"""Prometheus metrics: the one module of the hub that imports prometheus-client.

One :class:`HubMetrics` per process, each with its own registry (never the global
default: tests build several side by side, and a library's default metrics have no
place on a hub's ``/metrics``).

Two kinds of figures end up on ``/metrics``:

* ingest figures, counted here as traffic passes (:class:`HubMetrics` implements
  :class:`hub.ingest.core.IngestMetrics`);
* worker figures, kept by the streams layer in plain Python objects (streams must not
  import hub nor prometheus-client) and read at scrape time through
  :class:`FiguresProvider`: a method returning a plain dict, documented below.

Both are rendered by one collector, so a family such as ``hub_dead_letters_total``
(ingest and normalize stages) is written once, as the exposition format requires.

Label values are codes only: ACK and error codes, stage names, topic names, feed ids
(the sending facility, MSH-4), team/manager/agency ids. Never PHI. Feed and trigger
values come from the sender, so they are checked against a pattern and bounded in
number (``settings.max_feed_labels``); anything else is counted as ``other``.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from hub.logging import get_logger
from hub.settings import Settings
from hub.silence import FeedStatus, feed_status, rule_for

__all__ = [
    "CONTENT_TYPE",
    "METRICS",
    "CountersFigures",
    "FiguresProvider",
    "HubMetrics",
    "exported_names",
    "merge_figures",
    "parse_metrics_text",
]

log = get_logger("hub.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

# ACK latency: an MLLP sender waits for each ACK, so the interesting range is a few ms
# (local broker) to the ACK timeout (10 s default).
ACK_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class MetricSpec:
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    help: str
    labels: tuple[str, ...] = ()


# Every family the hub exports, by its exposition name. Counters end in ``_total``; the
# Grafana dashboard test checks its queries against this table.
METRICS: dict[str, MetricSpec] = {
    # ingest
    "hub_messages_received_total": MetricSpec(
        "counter", "Messages received, by feed (sending facility), trigger and transport.",
        ("feed", "trigger", "transport")),
    "hub_acks_total": MetricSpec("counter", "HL7 v2 ACKs sent, by MSA-1 code.", ("code",)),
    "hub_fhir_responses_total": MetricSpec(
        "counter", "FHIR REST answers, by HTTP status.", ("status",)),
    "hub_ack_latency_seconds": MetricSpec(
        "histogram", "Time from a message read to its ACK/answer being ready.", ("transport",)),
    "hub_frames_rejected_total": MetricSpec(
        "counter", "MLLP bytes that never became a message (over size, garbage).",
        ("transport", "code")),
    "hub_durable_write_failures_total": MetricSpec(
        "counter", "Messages answered 'send again' because Kafka did not confirm in time.",
        ("transport",)),
    "hub_feed_last_message_age_seconds": MetricSpec(
        "gauge", "Seconds since the feed's last message (since start if none yet).", ("feed",)),
    "hub_feed_silence_threshold_seconds": MetricSpec(
        "gauge", "Quiet time allowed for the feed at this hour.", ("feed",)),
    "hub_feed_silent": MetricSpec(
        "gauge", "1 when the feed is quiet longer than its configured expectation.", ("feed",)),
    # both roles
    "hub_mapping_failures_total": MetricSpec(
        "counter", "Messages that could not be parsed or mapped, by error code and stage.",
        ("code", "stage")),
    "hub_dead_letters_total": MetricSpec(
        "counter", "Records written to hub.dlq, by stage and error code.", ("stage", "code")),
    "hub_duplicates_total": MetricSpec(
        "counter", "Resent messages absorbed (stored ACK replayed, dedup drop), by stage.",
        ("stage",)),
    "hub_ready": MetricSpec("gauge", "1 when /health/ready answers 200.", ()),
    # worker
    "hub_stage_processed_total": MetricSpec(
        "counter", "Records consumed by a stream stage.", ("stage",)),
    "hub_timer_row_failures_total": MetricSpec(
        "counter", "Stored rows a stage's timer pass could not handle (left as stored; "
        "the pass went on with the others), by stage.", ("stage",)),
    "hub_consumer_lag": MetricSpec(
        "gauge", "Records not yet committed by the worker group, per topic and partition.",
        ("topic", "partition")),
    "hub_end_to_end_latency_seconds": MetricSpec(
        "histogram", "Time from a message received by ingest to its outputs published, by "
        "the stage that published them (normalize: canonical events; care: decisions).",
        ("stage",)),
    "hub_outputs_total": MetricSpec("counter", "Records published, by output type.", ("type",)),
    "hub_tasks_open": MetricSpec("gauge", "Follow-up tasks open.", ()),
    "hub_tasks_overdue": MetricSpec("gauge", "Follow-up tasks past due.", ()),
    "hub_escalations_unassigned_total": MetricSpec(
        "counter", "Patients escalated to a supervisor queue for want of capacity.", ()),
    "hub_caseload_points": MetricSpec(
        "gauge", "Acuity-weighted caseload of a case manager.", ("team", "manager")),
    "hub_caseload_cap_points": MetricSpec(
        "gauge", "Caseload cap of a case manager.", ("team", "manager")),
    "hub_webhook_deliveries_total": MetricSpec(
        "counter", "Webhook deliveries, by agency and outcome (delivered; failed: an "
        "attempt failed; retried: an attempt scheduled again; exhausted: given up).",
        ("agency", "outcome")),
    "hub_webhook_deliveries_pending": MetricSpec(
        "gauge", "Webhook deliveries not yet delivered nor given up (as of each "
        "partition's last timer pass).", ()),
    "hub_referrals": MetricSpec(
        "gauge", "Referrals currently in each status (requested, accepted, ...).",
        ("status",)),
    "hub_api_auth_failures_total": MetricSpec(
        "counter", "Bad bearer tokens presented to the agency and staff APIs.", ()),
    "hub_api_auth_throttled_total": MetricSpec(
        "counter", "Agency/staff API requests refused 429 after too many bad tokens from "
        "one client address.", ()),
    "hub_api_view_items": MetricSpec(
        "gauge", "Items the agency/staff APIs' in-memory views hold (referrals, tasks, "
        "teams); closed ones leave after HUB_API_VIEW_RETAIN_DAYS.", ("view",)),
    "hub_api_view_forgotten_total": MetricSpec(
        "counter", "Closed items the APIs' views forgot after the retention.", ("view",)),
}


def exported_names() -> set[str]:
    """Every sample name the hub can put on /metrics (``_bucket``/``_sum``/``_count``
    for histograms), for checking dashboards' queries."""
    out: set[str] = set()
    for name, spec in METRICS.items():
        if spec.kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            out.add(name)
    return out


class FiguresProvider(Protocol):
    """Worker-side figures read at scrape time (and by the dashboard).

    ``figures()`` is called from the event loop on every scrape: it must be cheap
    (read counters, never I/O) and return plain Python values. Every key is optional;
    an absent key means "this stage is not running / has no data yet" and its metrics
    are left out (an absent gauge, not a misleading 0). Counters are cumulative since
    the process started. Label-like values (stage, code, type, team, manager, agency,
    outcome) must be codes or ids, never PHI. The shape::

        {
          "stages": {                     # per stage: normalize, episodes, risk, ...
            "<stage>": {
              "processed": int,           # records consumed
              "duplicates": int,          # dropped by dedup
              "dead_letters": {"<error_code>": int},
              "mapping_failures": {"<error_code>": int},   # stages that parse/map
              "timer_row_failures": int,  # stored rows a timer pass could not handle
            },
          },
          "outputs": {"<type>": int},     # records published: canonical_event, flag,
                                          # assignment, task, escalation, notification,
                                          # referral, webhook ...
          "end_to_end_latency_s": {       # received by ingest -> outputs published,
            "<stage>": {                  # by the path's last stage: normalize, care...
              "buckets": [[upper_bound_s, cumulative_count], ..., [inf, count]],
              "sum": float, "count": int,
            },
          },                              # (one histogram without stages: "pipeline")
          "tasks_open": int,              # gauges: current values
          "tasks_overdue": int,
          "escalations_unassigned": int,  # cumulative
          "caseloads": [                  # one per (team, manager)
            {"team": str, "manager": str, "points": float, "cap_points": float},
          ],
          "webhook_deliveries": {"<agency>": {"<outcome>": int}},  # cumulative; outcomes
                                          # delivered, failed, retried, exhausted
          "webhook_deliveries_pending": int,  # gauge: not yet delivered nor given up
          "referrals": {"<status>": int},  # gauge: referrals now in each status
          "api_auth": {"failed": int, "throttled": int},  # cumulative: bad bearer
                                          # tokens, and requests refused 429 for them
          "api_views": {"<view>": {"held": int, "forgotten": int}},  # the APIs' views:
                                          # items held now, closed ones forgotten so far
          "recent_escalations": [         # newest first, at most 20; dashboard only
            {"at": "<ISO-8601>", "team": str, "reason": "<code>",
             "kind": "unassigned" | "overdue_task" | "no_agency", "task_kind": str},
          ],
        }

    Several providers may be registered; their figures are merged (numbers added,
    dicts merged, lists concatenated).
    """

    def figures(self) -> Mapping[str, Any]: ...


class CountersFigures:
    """A :class:`FiguresProvider` over ``streams.app.NormalizeCounters``.

    Duck-typed (attributes ``mapped``, ``events``, ``duplicates``, ``dead_letters``,
    and optionally ``dead_letters_by_code``: a dict code -> count), so hub does not
    depend on that class's module.
    """

    def __init__(self, counters: Any, stage: str = "normalize", *,
                 stage_counts: bool = True) -> None:
        self.counters = counters
        self.stage = stage
        self.stage_counts = stage_counts
        """False when another provider (``hub.observe.StreamsSensor``) counts records
        and dead letters per stage: then only duplicates and outputs come from here."""

    def figures(self) -> dict[str, Any]:
        c = self.counters
        if not self.stage_counts:
            return {"stages": {self.stage: {"duplicates": int(c.duplicates)}},
                    "outputs": {"canonical_event": int(c.events)}}
        dead = int(getattr(c, "dead_letters", 0))
        by_code = getattr(c, "dead_letters_by_code", None)
        stage: dict[str, Any] = {
            "processed": int(c.mapped) + int(c.duplicates) + dead,
            "duplicates": int(c.duplicates),
        }
        if by_code:
            stage["dead_letters"] = dict(by_code)
            stage["mapping_failures"] = {k: v for k, v in by_code.items()
                                         if k != "internal_error"}
        elif dead:
            stage["dead_letters"] = {"unknown": dead}
        return {"stages": {self.stage: stage}, "outputs": {"canonical_event": int(c.events)}}


def _merge_histograms(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
    """Two cumulative histograms with the same bounds add up; else the first wins."""
    ba, bb = list(a.get("buckets", ())), list(b.get("buckets", ()))
    if [x[0] for x in ba] != [x[0] for x in bb]:
        return a
    return {"buckets": [[x[0], x[1] + y[1]] for x, y in zip(ba, bb, strict=True)],
            "sum": a.get("sum", 0.0) + b.get("sum", 0.0),
            "count": a.get("count", 0) + b.get("count", 0)}


def merge_figures(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge providers' figures: numbers add up, dicts merge, lists concatenate,
    histograms (a dict with ``buckets``) add bucket by bucket."""

    def merge(a: Any, b: Any, key: str) -> Any:
        if isinstance(a, Mapping) and isinstance(b, Mapping) and "buckets" in a \
                and "buckets" in b:
            return _merge_histograms(a, b)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(out[k], v, k) if k in out else v
            return out
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a + b
        return b

    merged: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            merged[k] = merge(merged[k], v, k) if k in merged else v
    return merged


_FEED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,79}$")
OTHER = "other"
UNKNOWN = "unknown"
_RATE_WINDOW_S = 60


class _BoundedLabels:
    """Sender-controlled label values: well-formed and at most ``limit`` distinct."""

    def __init__(self, limit: int, pattern: re.Pattern[str], always: Iterable[str] = ()
                 ) -> None:
        self.limit = limit
        self.pattern = pattern
        self.always = frozenset(always)
        self.known: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNKNOWN
        if value in self.always or value in self.known:
            return value
        if not self.pattern.match(value) or len(self.known) >= self.limit:
            return OTHER
        self.known.add(value)
        return value


def safe_label(value: Any) -> str:
    """A provider's label value, if it looks like a code; ``other`` otherwise."""
    text = str(value) if value is not None else ""
    return text if _CODE_RE.match(text) else OTHER


class HubMetrics:
    """The process's metrics; implements :class:`hub.ingest.core.IngestMetrics`.

    All mutation happens on the event loop (ingest handlers, scrapes), so plain
    counters suffice.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.registry = CollectorRegistry()
        self.ack_latency = Histogram(
            "hub_ack_latency_seconds", METRICS["hub_ack_latency_seconds"].help,
            ["transport"], registry=self.registry, buckets=ACK_BUCKETS)
        configured = [f for f in settings.feed_silence if f != "*"]
        self._feed_label = _BoundedLabels(settings.max_feed_labels, _FEED_RE, configured)
        self._trigger_label = _BoundedLabels(100, _CODE_RE)
        self.received: Counter[tuple[str, str, str]] = Counter()
        self.acks: Counter[str] = Counter()
        self.fhir: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        """(stage, code) -> count, ingest stage (worker stages come from providers)."""
        self.dead_letters: Counter[tuple[str, str]] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.frames: Counter[tuple[str, str]] = Counter()
        self.write_failures: Counter[str] = Counter()
        self.last_seen: dict[str, float] = {}
        self._per_second: dict[str, deque[list[int]]] = {}
        self.providers: list[FiguresProvider] = []
        self.consumer_lag: dict[tuple[str, int], int] = {}
        self.ready: bool | None = None
        self.registry.register(_HubCollector(self))

    # --------------------------------------------------------------- ingest hooks
    def message_handled(self, *, transport: str, listener: str, ack_code: str,
                        error_code: str | None, duplicate: bool, latency_s: float,
                        feed: str | None = None, trigger: str | None = None,
                        protocol: str = "hl7v2", dead_lettered: bool = False) -> None:
        feed_label = self._feed_label(feed)
        self.received[(feed_label, self._trigger_label(trigger), transport)] += 1
        if protocol == "fhir":
            self.fhir[ack_code] += 1
        else:
            self.acks[ack_code] += 1
        self.ack_latency.labels(transport).observe(latency_s)
        if duplicate:
            self.duplicates["ingest"] += 1
        if error_code == "durable_write_failed":
            self.write_failures[transport] += 1
        elif error_code is not None:
            self.failures[("ingest", error_code)] += 1
        if dead_lettered and error_code is not None:
            self.dead_letters[("ingest", error_code)] += 1
        if feed_label not in (OTHER, UNKNOWN):
            self._seen(feed_label)

    def frame_rejected(self, *, transport: str, listener: str, error_code: str,
                       size: int, dead_lettered: bool = True) -> None:
        self.frames[(transport, error_code)] += 1
        if dead_lettered:
            self.dead_letters[("ingest", error_code)] += 1

    def _seen(self, feed: str) -> None:
        now = self.clock()
        self.last_seen[feed] = now
        second = int(now)
        buckets = self._per_second.setdefault(feed, deque())
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
            while buckets and buckets[0][0] <= second - _RATE_WINDOW_S:
                buckets.popleft()

    # -------------------------------------------------------------- worker side
    def add_provider(self, provider: FiguresProvider) -> None:
        self.providers.append(provider)

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        self.consumer_lag = dict(lag)

    def figures(self) -> dict[str, Any]:
        """The providers' figures merged; a failing provider is logged and skipped."""
        parts: list[Mapping[str, Any]] = []
        for provider in self.providers:
            try:
                parts.append(provider.figures())
            except Exception as exc:  # a scrape must never fail because of one stage
                log.warning("figures_failed", reason=type(exc).__name__)
        return merge_figures(parts)

    # ------------------------------------------------------------------- feeds
    def feeds(self, now: float | None = None) -> list[FeedStatus]:
        """Every feed seen or configured, with its age and silence flag at ``now``."""
        at = self.clock() if now is None else now
        when = datetime.fromtimestamp(at, UTC)
        started = datetime.fromtimestamp(self.started_at, UTC)
        rules = self.settings.feed_silence
        names = set(self.last_seen) | {f for f in rules if f != "*"}
        out = []
        for feed in sorted(names):
            seen = self.last_seen.get(feed)
            out.append(feed_status(
                feed, last_seen=datetime.fromtimestamp(seen, UTC) if seen is not None else None,
                started_at=started, now=when, rule=rule_for(feed, rules),
                tz=self.settings.timezone_for(feed)))
        return out

    def feed_rate_per_min(self, feed: str, now: float | None = None) -> float:
        """Messages per minute over the last minute."""
        at = int(self.clock() if now is None else now)
        buckets = self._per_second.get(feed, ())
        return float(sum(n for second, n in buckets if second > at - _RATE_WINDOW_S))

    # ------------------------------------------------------------------ output
    def render(self) -> bytes:
        return generate_latest(self.registry)


def _family(name: str) -> Metric:
    spec = METRICS[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=spec.labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(name, spec.help, labels=spec.labels)
    return HistogramMetricFamily(name, spec.help, labels=spec.labels)


def _add(family: Metric, labels: Sequence[str], value: float) -> None:
    family.add_metric(list(labels), value)  # type: ignore[attr-defined]


class _HubCollector(Collector):
    """Renders :class:`HubMetrics` and the providers' figures at scrape time."""

    def __init__(self, metrics: HubMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return [_family(n) for n, s in METRICS.items() if n != "hub_ack_latency_seconds"]

    def collect(self) -> Iterator[Metric]:
        m = self.m
        fam = {n: _family(n) for n in METRICS if n != "hub_ack_latency_seconds"}
        for (feed, trigger, transport), n in m.received.items():
            _add(fam["hub_messages_received_total"], (feed, trigger, transport), n)
        for code, n in m.acks.items():
            _add(fam["hub_acks_total"], (code,), n)
        for status, n in m.fhir.items():
            _add(fam["hub_fhir_responses_total"], (status,), n)
        for (transport, code), n in m.frames.items():
            _add(fam["hub_frames_rejected_total"], (transport, code), n)
        for transport, n in m.write_failures.items():
            _add(fam["hub_durable_write_failures_total"], (transport,), n)
        for fs in m.feeds():
            if fs.age_s is not None:
                _add(fam["hub_feed_last_message_age_seconds"], (fs.feed,), fs.age_s)
            if fs.threshold_s is not None:
                _add(fam["hub_feed_silence_threshold_seconds"], (fs.feed,), fs.threshold_s)
                _add(fam["hub_feed_silent"], (fs.feed,), 1.0 if fs.silent else 0.0)
        if m.ready is not None:
            _add(fam["hub_ready"], (), 1.0 if m.ready else 0.0)
        for (topic, partition), lag in sorted(m.consumer_lag.items()):
            _add(fam["hub_consumer_lag"], (topic, str(partition)), lag)

        failures = Counter(m.failures)
        dead = Counter(m.dead_letters)
        dups = Counter(m.duplicates)
        figs = m.figures()
        for stage, f in (figs.get("stages") or {}).items():
            stage_label = safe_label(stage)
            if "processed" in f:
                _add(fam["hub_stage_processed_total"], (stage_label,), f["processed"])
            if "duplicates" in f:
                dups[stage_label] += f["duplicates"]
            if "timer_row_failures" in f:
                _add(fam["hub_timer_row_failures_total"], (stage_label,),
                     f["timer_row_failures"])
            for code, n in (f.get("mapping_failures") or {}).items():
                failures[(stage_label, safe_label(code))] += n
            for code, n in (f.get("dead_letters") or {}).items():
                dead[(stage_label, safe_label(code))] += n
        for (stage, code), n in failures.items():
            _add(fam["hub_mapping_failures_total"], (code, stage), n)
        for (stage, code), n in dead.items():
            _add(fam["hub_dead_letters_total"], (stage, code), n)
        for stage, n in dups.items():
            _add(fam["hub_duplicates_total"], (stage,), n)
        for kind, n in (figs.get("outputs") or {}).items():
            _add(fam["hub_outputs_total"], (safe_label(kind),), n)
        for key, name in (("tasks_open", "hub_tasks_open"), ("tasks_overdue", "hub_tasks_overdue"),
                          ("escalations_unassigned", "hub_escalations_unassigned_total")):
            if key in figs:
                _add(fam[name], (), figs[key])
        for row in figs.get("caseloads") or ():
            labels = (safe_label(row.get("team")), safe_label(row.get("manager")))
            if "points" in row:
                _add(fam["hub_caseload_points"], labels, row["points"])
            if row.get("cap_points") is not None:
                _add(fam["hub_caseload_cap_points"], labels, row["cap_points"])
        for agency, outcomes in (figs.get("webhook_deliveries") or {}).items():
            for outcome, n in (outcomes or {}).items():
                _add(fam["hub_webhook_deliveries_total"],
                     (safe_label(agency), safe_label(outcome)), n)
        if "webhook_deliveries_pending" in figs:
            _add(fam["hub_webhook_deliveries_pending"], (), figs["webhook_deliveries_pending"])
        for status, n in (figs.get("referrals") or {}).items():
            _add(fam["hub_referrals"], (safe_label(status),), n)
        auth = figs.get("api_auth") or {}
        if "failed" in auth:
            _add(fam["hub_api_auth_failures_total"], (), auth["failed"])
        if "throttled" in auth:
            _add(fam["hub_api_auth_throttled_total"], (), auth["throttled"])
        for view, f in sorted((figs.get("api_views") or {}).items()):
            if "held" in f:
                _add(fam["hub_api_view_items"], (safe_label(view),), f["held"])
            if "forgotten" in f:
                _add(fam["hub_api_view_forgotten_total"], (safe_label(view),), f["forgotten"])
        latency = latency_by_stage(figs.get("end_to_end_latency_s"))
        for stage, hist in sorted(latency.items()):
            buckets = [(_le(le), float(n)) for le, n in hist.get("buckets", ())]
            if buckets and buckets[-1][0] == "+Inf":
                fam["hub_end_to_end_latency_seconds"].add_metric(  # type: ignore[attr-defined]
                    [safe_label(stage)], buckets, float(hist.get("sum", 0.0)))
        yield from fam.values()


def latency_by_stage(raw: Any) -> dict[str, Mapping[str, Any]]:
    """The provider's ``end_to_end_latency_s``: ``{stage: histogram}``, or one
    histogram for the whole pipeline (the earlier shape, named ``pipeline``)."""
    if not isinstance(raw, Mapping) or not raw:
        return {}
    if "buckets" in raw:
        return {"pipeline": raw}
    return {str(k): v for k, v in raw.items() if isinstance(v, Mapping)}


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(float(bound)) else repr(float(bound))


def parse_metrics_text(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> sample name -> [(labels, value)] (``hub status``)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out
