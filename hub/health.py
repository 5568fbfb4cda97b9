"""Readiness: is this process able to do its job right now?

``/health/live`` says the process serves HTTP (restart it if not); ``/health/ready``
says it should get traffic: the broker answers, ingest listens, and a worker holds
partitions with its tables recovered (a worker mid-rebalance or replaying changelogs
would only queue work, and a load balancer or an orchestrator should know).

Checks return codes, not prose, so the answer is safe to log and to show anyone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hub.kafka import broker_ready, group_lag
from hub.logging import get_logger
from hub.settings import Settings

log = get_logger("hub.health")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = "ok"


Check = Callable[[], Awaitable[CheckResult]]


class BrokerProbe:
    """The broker answers a metadata request. Cached for ``ttl_s``: orchestrators
    probe often, and each probe would otherwise open a connection to the cluster."""

    def __init__(self, settings: Settings, *, ttl_s: float = 5.0, timeout_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._cached: tuple[float, CheckResult] | None = None

    async def __call__(self) -> CheckResult:
        now = self.clock()
        if self._cached is not None and now - self._cached[0] < self.ttl_s:
            return self._cached[1]
        bootstrap = self.settings.kafka_bootstrap
        ok = bool(bootstrap) and await broker_ready(
            bootstrap or "", self.timeout_s, settings=self.settings)
        result = CheckResult(ok, "ok" if ok else "broker_unreachable")
        self._cached = (self.clock(), result)
        return result


def faust_check(app: Any) -> Check:
    """Partitions assigned and tables recovered (faust: ``app.rebalancing``,
    ``app.in_recovery``, ``app.tables.recovery.completed``, ``consumer.assignment()``).

    A worker with no partitions (more workers than partitions) reports not ready: it
    takes no share of the work, and the issue defines ready that way.
    """

    async def check() -> CheckResult:
        if getattr(app, "_consumer", None) is None:
            return CheckResult(False, "worker_not_started")
        if app.rebalancing:
            return CheckResult(False, "rebalancing")
        if app.in_recovery or not app.tables.recovery.completed.is_set():
            return CheckResult(False, "recovering_tables")
        if not app.consumer.assignment():
            return CheckResult(False, "no_partitions_assigned")
        return CheckResult(True)

    return check


def flag_check(started: Callable[[], bool], reason: str) -> Check:
    """Ready once ``started()`` is true (ingest listening, ...)."""

    async def check() -> CheckResult:
        return CheckResult(True) if started() else CheckResult(False, reason)

    return check


class Readiness:
    """Named checks, all of which must pass."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def evaluate(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        results: dict[str, dict[str, Any]] = {}
        ready = True
        for name, check in self.checks.items():
            try:
                result = await check()
            except Exception as exc:  # a check that crashes says "not ready", not 500
                log.warning("readiness_check_failed", reason=type(exc).__name__, stage=name)
                result = CheckResult(False, "check_failed")
            results[name] = {"ok": result.ok, "reason": result.reason}
            ready = ready and result.ok
        return ready, results


class LagProbe:
    """The worker group's consumer lag, refreshed at most every ``min_interval_s``
    (scrapes every few seconds must not each hit the broker's admin API)."""

    def __init__(self, settings: Settings, topics: list[str], *, min_interval_s: float = 5.0,
                 timeout_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.topics = topics
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._at: float | None = None
        self.lag: dict[tuple[str, int], int] = {}

    async def refresh(self) -> dict[tuple[str, int], int]:
        now = self.clock()
        if self._at is not None and now - self._at < self.min_interval_s:
            return self.lag
        self._at = now
        try:
            self.lag = await group_lag(self.settings, self.settings.app_id, self.topics,
                                       timeout=self.timeout_s)
        except Exception as exc:  # keep the last figures; the broker check reports it
            log.warning("lag_refresh_failed", reason=type(exc).__name__)
        return self.lag
