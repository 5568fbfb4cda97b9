"""Start the hub's roles: ingest (MLLP + HTTP), worker (the faust app), or both.

Order of start-up, and why:
1. Resolve the broker: the configured cluster, or the embedded Tansu broker started here
   (and stopped on any exit; the broker also dies with us through PDEATHSIG).
2. Create the catalogue's topics before any role starts, so neither ingest nor faust
   auto-creates one with the wrong partition count or cleanup policy.
3. Start the worker (faust) and/or ingest as services of one mode Worker, which owns
   signal handling: SIGINT/SIGTERM stop ingest first (no new ACKs), then the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mode

from hub import heap
from hub.commands.decide_cmd import DEFAULT_AGENCIES, DEFAULT_ROSTER, DEFAULT_RULES
from hub.logging import configure, get_logger
from hub.settings import Settings
from schemas.topics import CATALOGUE
from streams.config import StreamsConfig

log = get_logger("hub.runner")


@contextlib.contextmanager
def broker(settings: Settings) -> Iterator[Settings]:
    """Yield settings bound to a live broker: the configured one or an embedded one."""
    if settings.kafka_bootstrap:
        yield settings
        return
    from hub.brokers.embedded import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        log.info("embedded_broker_started", bootstrap=embedded.bootstrap)
        # Tansu has no InitProducerId (no idempotent producer), and it holds a group join
        # for the whole session/rebalance timeouts even with a single member: a demo
        # should not wait 30 s for that.
        yield settings.model_copy(update={
            "kafka_bootstrap": embedded.bootstrap, "kafka_idempotence": False,
            "group_session_timeout_s": 6.0, "group_rebalance_timeout_s": 3.0})
    log.info("embedded_broker_stopped")


def streams_config(settings: Settings) -> StreamsConfig:
    assert settings.kafka_bootstrap
    broker_kwargs: dict[str, Any] = {}
    if settings.kafka_security_protocol != "PLAINTEXT":
        from hub.kafka import faust_credentials

        broker_kwargs["broker_credentials"] = faust_credentials(settings)
    return StreamsConfig(
        bootstrap=settings.kafka_bootstrap,
        app_id=settings.app_id,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        store=settings.store,
        state_dir=settings.state_dir.resolve(),
        default_timezone=settings.default_timezone,
        feed_timezones=dict(settings.feed_timezones),
        dedup_window_s=settings.dedup_window_s,
        web_port=settings.worker_web_port,
        consumer_instance_id=settings.consumer_instance_id,
        broker_kwargs=broker_kwargs,
        rebalance_timeout_s=settings.group_rebalance_timeout_s,
        session_timeout_s=settings.group_session_timeout_s,
        care=settings.care_enabled,
        rules_yaml=_read_text(settings.rules_file, DEFAULT_RULES),
        roster_yaml=_read_text(settings.roster_file, DEFAULT_ROSTER),
        agencies_yaml=_read_text(settings.agencies_file, DEFAULT_AGENCIES),
        tick_interval_s=settings.care_tick_interval_s,
        webhook_tick_interval_s=settings.webhook_tick_interval_s,
        webhook_attempt_timeout_s=settings.webhook_timeout_s,
        webhook_concurrency=settings.webhook_concurrency,
    )


def _read_text(path: Path | None, default: Path) -> str | None:
    source = path or default
    return source.read_text(encoding="utf-8") if source.exists() or path else None


class IngestRole(mode.Service):
    """Ingest (MLLP + HTTP) as a mode service, so one Worker runs every role."""

    def __init__(self, settings: Settings, ops: Any = None, **kwargs: Any) -> None:
        from hub.ingest import IngestService

        # ops (hub.web.Ops): metrics hooks, /metrics, /health/ready, /dashboard.
        self.ingest = IngestService(settings, metrics=ops.metrics if ops else None, ops=ops)
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.ingest.start()

    async def on_stop(self) -> None:
        await self.ingest.stop()


class AfterStart(mode.Service):
    """Runs a coroutine once everything else is up (the demo's replay and summary)."""

    def __init__(self, job: Callable[[], Any], **kwargs: Any) -> None:
        self.job = job
        super().__init__(**kwargs)

    @mode.Service.task
    async def _run(self) -> None:
        await self.job()


def run(settings: Settings, *, roles: set[str], after_start: Callable[..., Any] | None = None
        ) -> int:
    """Run ``roles`` (``ingest``, ``worker``) until a signal; returns the exit status."""
    configure(settings.log_level, settings.log_format)
    with broker(settings) as live:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        from hub.kafka import ensure_topics

        loop.run_until_complete(ensure_topics(live, CATALOGUE))
        log.info("topics_ensured", count=len(CATALOGUE), role=",".join(sorted(roles)))
        services: list[mode.ServiceT] = []
        app = None
        from hub.observe import OpsRole, build_ops, watch_ingest, watch_worker

        ops = build_ops(live)
        if "worker" in roles:
            from streams.app import create_app

            # faust creates only the last level of its data directory.
            live.state_dir.mkdir(parents=True, exist_ok=True)
            scfg = streams_config(live)
            if scfg.care:
                from hub.roster import RosterWatcher

                watcher = RosterWatcher(live, loop=loop)
                services.append(watcher)
                scfg = dataclasses.replace(scfg, roster_feed=watcher)
                from hub.agencies import AgencyWatcher, ensure_agency_topics
                from streams.referrals.directory import parse_directory

                try:
                    directory = parse_directory(scfg.agencies_yaml or "agencies: []")
                except ValueError as exc:  # DirectoryError
                    log.error("worker_config_rejected", reason=str(exc))
                    print(f"hub: {exc}", file=sys.stderr)
                    return 2
                # The file's agencies get their referrals.<id> topics before the agent can
                # publish to them; pushed directories get theirs in the watcher.
                loop.run_until_complete(ensure_agency_topics(live, directory))
                agencies = AgencyWatcher(live, loop=loop)
                services.append(agencies)
                scfg = dataclasses.replace(scfg, agencies_feed=agencies)
            from hub.webhooks import WebhookRole, WebhookSender, delivery_policy

            sender = WebhookSender(live)
            services.append(WebhookRole(sender, loop=loop))
            scfg = dataclasses.replace(scfg, webhook_sender=sender,
                                       webhook_policy=delivery_policy(live))
            try:
                app, counters = create_app(scfg)
            except ValueError as exc:  # a bad rules or roster file (RulesError, RosterError)
                log.error("worker_config_rejected", reason=str(exc))
                print(f"hub: {exc}", file=sys.stderr)
                return 2
            watch_worker(ops, live, app, counters)
            if counters.deliveries is not None:  # webhook_deliveries figures
                ops.metrics.add_provider(counters.deliveries)
            if counters.referrals is not None:  # referrals figures ({status: count})
                ops.metrics.add_provider(counters.referrals)
            if "ingest" not in roles:  # else the ingest HTTP server serves ops
                services.append(OpsRole(ops, live, loop=loop))
        ingest = IngestRole(live, ops, loop=loop) if "ingest" in roles else None
        if ingest is not None:
            watch_ingest(ops, ingest.ingest)
        holder: dict[str, Any] = {"status": 0}
        if after_start is not None:
            async def job() -> None:
                stop = True
                try:
                    result = await after_start(live, ingest)
                    # A job returning None keeps serving until a signal (the demo
                    # without EXIT=1); an int is an exit status to stop with.
                    stop = result is not None
                    holder["status"] = int(result or 0)
                except Exception as exc:
                    log.error("after_start_failed", exc_type=type(exc).__name__)
                    holder["status"] = 1
                if stop:
                    # The signal path of mode's Worker: stops every service in order
                    # from outside this task (which is itself one of them).
                    holder["worker"]._schedule_shutdown(signal.SIGTERM)
            services.append(AfterStart(job, loop=loop))
        if ingest is not None:
            services.insert(0, ingest)
        if app is not None:
            from faust import Worker

            app_worker = Worker(app, *services, loop=loop, loglevel=settings.log_level,
                                quiet=True, override_logging=False, redirect_stdouts=False)
            # faust's start-up spinner writes terminal control codes to stdout even when
            # it is not a terminal (a cursor-show code once started): in a log collector
            # that merges stdout and stderr, they would prefix the next JSON log line.
            app_worker.spinner = None
            worker: mode.Worker = app_worker
        else:
            worker = mode.Worker(*services, loop=loop, loglevel=settings.log_level,
                                 override_logging=False, redirect_stdouts=False)
        holder["worker"] = worker
        # Everything loaded so far lives as long as the process (hub.heap says why, and
        # the pure-step benchmark settles its heap the same way).
        heap.settle(settings.gc_gen0_threshold)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code or int(holder["status"])
