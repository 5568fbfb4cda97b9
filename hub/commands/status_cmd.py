"""``hub status``: the dashboard's figures as rich tables, read from a running hub.

Sources, each optional so the command works from wherever ops stand:

* the ``/metrics`` of the ingest HTTP server and of the worker's web server (Prometheus
  text, parsed; the same numbers Grafana and the dashboard show);
* the broker, when ``HUB_KAFKA_BOOTSTRAP`` is set: the worker group's lag (end offset
  minus committed offset) and each topic's record count, through ``hub.kafka``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import aiohttp
from rich.console import Console
from rich.table import Table

from hub.dashboard import WEBHOOK_OUTCOMES, quantile, worker_input_topics
from hub.kafka import HubKafkaError, end_offsets, group_lag
from hub.metrics import parse_metrics_text
from hub.settings import Settings
from schemas.topics import CATALOGUE

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def fetch_metrics(url: str, timeout: float = 5.0) -> str | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(url.rstrip("/") + "/metrics") as resp:
            if resp.status != 200:
                return None
            return await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


def merge_samples(texts: Sequence[str]) -> Samples:
    """Several processes' /metrics in one: counters and gauges add up per label set
    (one ingest + one worker, or several of each behind the same dashboard)."""
    merged: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for text in texts:
        for name, rows in parse_metrics_text(text).items():
            bucket = merged.setdefault(name, {})
            for labels, value in rows:
                key = tuple(sorted(labels.items()))
                if name.startswith("hub_feed_last_message_age"):
                    # Ages: the freshest process tells when the feed last sent.
                    bucket[key] = min(bucket.get(key, value), value)
                else:
                    bucket[key] = bucket.get(key, 0.0) + value
    return {name: [(dict(k), v) for k, v in rows.items()] for name, rows in merged.items()}


def _sum(samples: Samples, name: str, **match: str) -> float | None:
    rows = [v for labels, v in samples.get(name, [])
            if all(labels.get(k) == want for k, want in match.items())]
    return sum(rows) if rows else None


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out


def histograms(samples: Samples, name: str, label: str) -> dict[str, dict[str, Any]]:
    """A histogram family's samples -> {label value: {"buckets", "count"}}, in the
    shape :func:`hub.dashboard.quantile` reads."""
    out: dict[str, dict[str, Any]] = {}
    for labels, v in samples.get(f"{name}_bucket", []):
        h = out.setdefault(labels.get(label, ""), {"buckets": [], "count": 0.0})
        h["buckets"].append([float(labels.get("le", "inf").replace("+Inf", "inf")), v])
    for labels, v in samples.get(f"{name}_count", []):
        out.setdefault(labels.get(label, ""), {"buckets": [], "count": 0.0})["count"] = v
    for h in out.values():
        h["buckets"].sort(key=lambda b: b[0])
    return out


def _n(value: float | None) -> str:
    if value is None:
        return "—"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def render(samples: Samples, console: Console, *, sources: dict[str, bool],
           lag: dict[tuple[str, int], int] | None, topics: dict[str, int] | None,
           prefix: str = "") -> None:
    src = Table(title="Sources")
    src.add_column("source")
    src.add_column("state")
    for name, ok in sources.items():
        src.add_row(name, "ok" if ok else "unreachable")
    console.print(src)

    feeds = Table(title="Feeds")
    feeds.add_column("feed")
    for col in ("received", "last message (s ago)", "allowed quiet (s)"):
        feeds.add_column(col, justify="right")
    feeds.add_column("state")
    received = _by(samples, "hub_messages_received_total", "feed")
    ages = _by(samples, "hub_feed_last_message_age_seconds", "feed")
    limits = _by(samples, "hub_feed_silence_threshold_seconds", "feed")
    silent = _by(samples, "hub_feed_silent", "feed")
    for feed in sorted(set(received) | set(ages) | set(limits)):
        state = "—" if feed not in silent else ("SILENT" if silent[feed] else "flowing")
        age = ages.get(feed)
        feeds.add_row(feed, _n(received.get(feed, 0)), _n(None if age is None else round(age)),
                      _n(limits.get(feed)), state)
    console.print(feeds)

    stages = Table(title="Stages")
    stages.add_column("stage")
    for col in ("processed", "dead letters", "mapping failures", "duplicates"):
        stages.add_column(col, justify="right")
    processed = _by(samples, "hub_stage_processed_total", "stage")
    ingest_total = _sum(samples, "hub_messages_received_total")
    if ingest_total is not None:
        processed = {"ingest": ingest_total, **processed}
    dead = _by(samples, "hub_dead_letters_total", "stage")
    failures = _by(samples, "hub_mapping_failures_total", "stage")
    dups = _by(samples, "hub_duplicates_total", "stage")
    for stage in sorted(set(processed) | set(dead) | set(dups),
                        key=lambda s: (s != "ingest", s)):
        stages.add_row(stage, _n(processed.get(stage)), _n(dead.get(stage, 0)),
                       _n(failures.get(stage, 0)), _n(dups.get(stage, 0)))
    console.print(stages)

    answers = Table(title="ACKs and answers")
    answers.add_column("answer")
    answers.add_column("count", justify="right")
    for code, n in sorted(_by(samples, "hub_acks_total", "code").items()):
        answers.add_row(f"HL7 {code}", _n(n))
    for status, n in sorted(_by(samples, "hub_fhir_responses_total", "status").items()):
        answers.add_row(f"FHIR {status}", _n(n))
    console.print(answers)

    work = Table(title="Outputs and work")
    work.add_column("figure")
    work.add_column("value", justify="right")
    for kind, n in sorted(_by(samples, "hub_outputs_total", "type").items()):
        work.add_row(f"outputs: {kind}", _n(n))
    for label, name in (("tasks open", "hub_tasks_open"), ("tasks overdue", "hub_tasks_overdue"),
                        ("unassigned escalations", "hub_escalations_unassigned_total")):
        work.add_row(label, _n(_sum(samples, name)))
    console.print(work)

    latency = Table(title="End-to-end latency (received -> published)")
    latency.add_column("path")
    for col in ("messages", "p50 at most (s)", "p95 at most (s)"):
        latency.add_column(col, justify="right")
    for stage, hist in sorted(histograms(samples, "hub_end_to_end_latency_seconds",
                                         "stage").items()):
        latency.add_row(stage, _n(hist["count"]), _n(quantile(hist, 0.5)),
                        _n(quantile(hist, 0.95)))
    if latency.row_count:
        console.print(latency)

    referrals = _by(samples, "hub_referrals", "status")
    hooks: dict[str, dict[str, float]] = {}
    for labels, v in samples.get("hub_webhook_deliveries_total", []):
        row = hooks.setdefault(labels.get("agency", ""), {})
        row[labels.get("outcome", "")] = row.get(labels.get("outcome", ""), 0.0) + v
    if referrals or hooks:
        ref = Table(title="Referrals and webhooks")
        ref.add_column("figure")
        ref.add_column("value", justify="right")
        for status, n in sorted(referrals.items()):
            ref.add_row(f"referrals {status}", _n(n))
        for agency, outcomes in sorted(hooks.items()):
            for outcome in WEBHOOK_OUTCOMES:
                ref.add_row(f"webhooks {agency} {outcome}", _n(outcomes.get(outcome, 0)))
        console.print(ref)

    caseloads = Table(title="Caseloads against caps")
    for col in ("team", "manager"):
        caseloads.add_column(col)
    for col in ("points", "cap"):
        caseloads.add_column(col, justify="right")
    caps = {(lb.get("team"), lb.get("manager")): v
            for lb, v in samples.get("hub_caseload_cap_points", [])}
    rows = sorted(samples.get("hub_caseload_points", []),
                  key=lambda r: (r[0].get("team", ""), r[0].get("manager", "")))
    for labels, points in rows:
        key = (labels.get("team"), labels.get("manager"))
        caseloads.add_row(str(key[0]), str(key[1]), _n(points), _n(caps.get(key)))
    if not rows:
        caseloads.add_row("(no caseload figures yet)", "", "", "")
    console.print(caseloads)

    lag_table = Table(title="Consumer lag (worker group)")
    lag_table.add_column("topic")
    lag_table.add_column("lag", justify="right")
    per_topic: dict[str, float] = {}
    if lag is not None:
        for (topic, _), n in lag.items():
            per_topic[topic.removeprefix(prefix)] = per_topic.get(topic.removeprefix(prefix),
                                                                  0) + n
    else:
        for labels, n in samples.get("hub_consumer_lag", []):
            t = labels.get("topic", "").removeprefix(prefix)
            per_topic[t] = per_topic.get(t, 0) + n
    for topic, n in sorted(per_topic.items()):
        lag_table.add_row(topic, _n(n))
    if not per_topic:
        lag_table.add_row("(no lag figures: no worker reachable, no broker configured)", "")
    console.print(lag_table)

    if topics is not None:
        sizes = Table(title="Topics (records retained)")
        sizes.add_column("topic")
        sizes.add_column("records", justify="right")
        for name, n in sorted(topics.items()):
            sizes.add_row(name, str(n))
        console.print(sizes)


async def _broker_figures(settings: Settings) -> tuple[dict[tuple[str, int], int],
                                                       dict[str, int]]:
    lag = await group_lag(settings, settings.app_id, worker_input_topics(), timeout=10)
    offsets = await end_offsets(settings, [t.name for t in CATALOGUE], timeout=10)
    counts: dict[str, int] = {}
    for (full, _), (begin, end) in offsets.items():
        name = full.removeprefix(settings.topic_prefix)
        counts[name] = counts.get(name, 0) + end - begin
    return lag, counts


async def _status(urls: list[str], settings: Settings, use_kafka: bool, console: Console,
                  err: TextIO) -> int:
    texts: list[str] = []
    sources: dict[str, bool] = {}
    for url in urls:
        text = await fetch_metrics(url)
        sources[f"{url}/metrics"] = text is not None
        if text is not None:
            texts.append(text)
    lag: dict[tuple[str, int], int] | None = None
    topics: dict[str, int] | None = None
    if use_kafka and settings.kafka_bootstrap:
        try:
            lag, topics = await _broker_figures(settings)
            sources[f"kafka {settings.kafka_bootstrap}"] = True
        except HubKafkaError:
            sources[f"kafka {settings.kafka_bootstrap}"] = False
    if not any(sources.values()):
        for name in sources:
            print(f"hub status: {name} unreachable", file=err)
        print("hub status: no source answered (is the hub running? see --url)", file=err)
        return 1
    render(merge_samples(texts), console, sources=sources, lag=lag, topics=topics,
           prefix=settings.topic_prefix)
    return 0


def run_status(args: Any, settings: Settings, *, console: Console | None = None,
               err: TextIO | None = None) -> int:
    urls = list(args.url or [])
    if not urls:
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        whost = ("127.0.0.1" if settings.worker_web_host in ("0.0.0.0", "::")
                 else settings.worker_web_host)
        urls = [f"http://{host}:{settings.http_port}",
                f"http://{whost}:{settings.worker_web_port}"]
    return asyncio.run(_status(urls, settings, not args.no_kafka, console or Console(),
                               err or sys.stderr))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="stream health figures from a running hub")
    p.add_argument("--url", action="append",
                   help="base URL of a hub HTTP server (repeatable); default: this "
                        "host's ingest (HUB_HTTP_PORT) and worker (HUB_WORKER_WEB_PORT)")
    p.add_argument("--no-kafka", action="store_true",
                   help="do not read lag and topic sizes from the broker")
