"""``make demo``: replay the synthetic feed through MLLP and show what came out, then
keep a gentle live trickle of new patients going so the dashboard moves, with a case
manager completing the new patients' follow-up tasks over the staff task API so
episodes close and caseloads come back down."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from hub.feed import FeedConfig, TrickleConfig, bad_messages, generate, trickle
from hub.logging import get_logger
from hub.mllp_client import MllpClient
from hub.settings import Settings
from schemas.topics import (
    CARE_ASSIGNMENTS,
    CARE_ESCALATIONS,
    CARE_EVENTS,
    CARE_FLAGS,
    CARE_NOTIFICATIONS,
    CARE_REFERRALS,
    CARE_TASKS,
    HUB_DLQ,
)

log = get_logger("hub.demo")

# The demo feed's silence expectation: the trickle sends every 1-3 s, so half a minute
# without a message means it stopped (``--no-trickle`` shows the flag turning red).
DEMO_FEED_SILENCE = {FeedConfig.facility: {"default_s": 30.0}}
# The care timer escalates overdue tasks and closes episodes; a minute (the production
# default) is long to stare at a dashboard for.
DEMO_TICK_INTERVAL_S = 5.0


# The summary's output topics, in the order shown.
_OUTPUT_TOPICS = (CARE_FLAGS, CARE_ASSIGNMENTS, CARE_TASKS, CARE_ESCALATIONS,
                  CARE_NOTIFICATIONS, CARE_REFERRALS)


def demo_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    """Settings the demo sets unless the environment already does: a silence rule for
    its feed and a faster care timer. Production never gets them (only ``--demo``)."""
    out: dict[str, object] = {}
    if "HUB_FEED_SILENCE" not in environ:
        out["feed_silence"] = DEMO_FEED_SILENCE
    if "HUB_CARE_TICK_INTERVAL_S" not in environ:
        out["care_tick_interval_s"] = DEMO_TICK_INTERVAL_S
    if "HUB_LOG_LEVEL" not in environ:
        # A newcomer's terminal is for the summary; one JSON line per ACK buries it.
        # HUB_LOG_LEVEL=INFO brings the hub's full log back.
        out["log_level"] = "WARNING"
    return out


def _ack_code(ack: bytes) -> str:
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            return seg.split(seg[3:4])[1].decode("ascii", "replace")
    return "??"


async def replay_and_summarise(settings: Settings, ingest_role: Any, *, exit_after: bool,
                               patients: int = 20, console: Console | None = None,
                               staff_token: str | None = None, live: bool = True
                               ) -> int | None:
    """Send the feed, wait for the events, print a summary. Returns an exit status when
    ``exit_after`` (0 = every good message became an event); else, with ``live``,
    trickles new patients until cancelled (the hub stopping), and returns None (keep
    serving) if the trickle ends by itself."""
    from hub.kafka import read_topic

    console = console or Console()
    cfg = FeedConfig(patients=patients)
    messages = list(generate(cfg))
    expected_bad = len(list(bad_messages(cfg)))
    port = ingest_role.ingest.mllp_port
    started = time.monotonic()
    acks: Counter[str] = Counter()
    async with MllpClient(settings.mllp_host, port) as client:
        for msg in messages:
            acks[_ack_code(await client.send(msg))] += 1
    ack_s = time.monotonic() - started
    expected = len(messages) - expected_bad
    events: list[Any] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        events = await read_topic(settings, settings.topic(CARE_EVENTS.name), timeout=5,
                                  min_records=expected)
        if len(events) >= expected:
            break
        await asyncio.sleep(0.5)
    latency = time.monotonic() - started
    dlq = await read_topic(settings, settings.topic(HUB_DLQ.name), timeout=3)
    kinds = Counter(orjson.loads(r.value or b"{}").get("kind") for r in events)
    codes = Counter(orjson.loads(r.value or b"{}").get("error_code") for r in dlq)

    table = Table(title="Care transitions hub: demo feed replayed over MLLP")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("messages sent", str(len(messages)))
    for code, n in sorted(acks.items()):
        table.add_row(f"ACK {code}", str(n))
    table.add_row("canonical events on care.events", str(len(events)))
    for kind, n in sorted(kinds.items()):
        table.add_row(f"  {kind}", str(n))
    table.add_row("dead letters on hub.dlq", str(len(dlq)))
    for code, n in sorted(codes.items()):
        table.add_row(f"  {code}", str(n))
    outputs = await _settled_outputs(settings)
    for name, records in outputs.items():
        values = [orjson.loads(r.value or b"{}") for r in records]
        table.add_row(name, str(len(values)))
        detail: Counter[str] = Counter(
            str(v.get("risk_level") or v.get("reason") or v.get("kind") or v.get("event_code")
                or (f"{v.get('need')} -> {v.get('agency_id')}" if v.get("need") else None))
            + (f" ({v['status']})" if v.get("status") in ("unassigned", "withdrawn") else "")
            for v in values)
        for what, n in sorted(detail.items()):
            table.add_row(f"  {what}", str(n))
    table.add_row("seconds to ACK everything", f"{ack_s:.2f}")
    table.add_row("seconds until every event was out", f"{latency:.2f}")
    console.print(table)
    ok = len(events) >= expected and acks.get("AA", 0) == expected
    loop_ok = await _referral_loop(settings, ingest_role, staff_token, console)
    ok = ok and loop_ok
    log.info("demo_summarised", sent=len(messages), events=len(events),
             dead_letters=len(dlq), status="ok" if ok else "incomplete")
    if not exit_after:
        http_port = getattr(ingest_role.ingest, "http_port", None) or settings.http_port
        console.print(f"Serving: MLLP on {settings.mllp_host}:{port}, HTTP on "
                      f"{settings.http_host}:{http_port}. Ctrl-C to stop.")
        console.print(f"Dashboard: http://{_browsable(settings.http_host)}:{http_port}"
                      f"/dashboard")
        if live:
            console.print("A trickle of synthetic ADT (new patients, one message every "
                          "1-3 s) keeps the dashboard moving.")
            await _trickle_with_case_manager(settings, ingest_role, port, staff_token,
                                             console)
        return None
    return 0 if ok else 1


async def _settled_outputs(settings: Settings, *, quiet_s: float = 3.0,
                           limit_s: float = 60.0) -> dict[str, list[Any]]:
    """The care output topics once the stages are done with the feed.

    care.events being complete says nothing about the stages after it (episodes, the
    caseloads hop through care.assignment-requests, referrals): the counts are read again
    until they have not moved for ``quiet_s``, so the summary shows what the feed caused,
    not a snapshot of work in flight."""
    from hub.kafka import read_topic

    deadline = time.monotonic() + limit_s
    last: tuple[int, ...] = ()
    still_since = time.monotonic()
    out: dict[str, list[Any]] = {}
    while True:
        for topic in _OUTPUT_TOPICS:
            out[topic.name] = await read_topic(settings, settings.topic(topic.name),
                                               timeout=1)
        counts = tuple(len(records) for records in out.values())
        now = time.monotonic()
        if counts != last:
            last, still_since = counts, now
        elif now - still_since >= quiet_s or now >= deadline:
            return out
        await asyncio.sleep(0.5)


def _browsable(host: str) -> str:
    # A wildcard bind address is not something a browser can open.
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


async def run_trickle(host: str, port: int, *, start: datetime | None = None,
                      cfg: TrickleConfig | None = None, limit: int | None = None) -> int:
    """Send ``hub.feed.trickle`` over MLLP, pacing by its gaps, until cancelled (or
    ``limit`` messages). A lost connection (the hub stopping) ends it quietly; returns
    the number of messages ACKed."""
    start = start or datetime.now(UTC)
    cfg = cfg or TrickleConfig()
    sent = 0
    acks: Counter[str] = Counter()
    log.info("demo_trickle_started", facility=cfg.facility)
    try:
        async with MllpClient(host, port, timeout=30.0) as client:
            for gap, message in trickle(start, cfg):
                if limit is not None and sent >= limit:
                    break
                await asyncio.sleep(gap)
                acks[_ack_code(await client.send(message))] += 1
                sent += 1
                if sent % 100 == 0:
                    log.info("demo_trickle_progressed", sent=sent,
                             acked=acks["AA"] + acks["CA"])
    except asyncio.CancelledError:  # the hub is stopping (Ctrl-C)
        log.info("demo_trickle_stopped", sent=sent, acked=acks["AA"] + acks["CA"],
                 reason="cancelled")
        raise
    except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
        log.info("demo_trickle_stopped", sent=sent, acked=acks["AA"] + acks["CA"],
                 reason=type(exc).__name__)
        return acks["AA"] + acks["CA"]
    log.info("demo_trickle_stopped", sent=sent, acked=acks["AA"] + acks["CA"], reason="limit")
    return acks["AA"] + acks["CA"]


async def _referral_loop(settings: Settings, ingest_role: Any, staff_token: str | None,
                         console: Console) -> bool:
    """Play a housing agency over the agency API; True when the loop closed (or when
    there is nothing to play: no staff token, no HTTP listener, care stages off)."""
    from hub.commands.decide_cmd import DEFAULT_AGENCIES
    from hub.demo_referrals import LoopError, render, run_loop
    from streams.referrals.directory import parse_directory

    port = getattr(ingest_role.ingest, "http_port", None)
    if staff_token is None or port is None or not settings.care_enabled:
        return True
    path = settings.agencies_file or DEFAULT_AGENCIES
    directory = parse_directory(path.read_text(encoding="utf-8"))
    try:
        result = await run_loop(settings, f"http://127.0.0.1:{port}", directory, staff_token)
    except (LoopError, OSError) as exc:
        console.print(f"[red]Referral loop did not close: {exc}[/red]")
        log.warning("demo_referral_loop_failed", exc_type=type(exc).__name__)
        return False
    render(result, console)
    log.info("demo_referral_loop_closed", agency_id=result.agency_id, steps=len(result.steps))
    return True


# --------------------------------------------------------------- the case manager


@dataclass(frozen=True)
class CaseManagerConfig:
    """How the demo's case manager works the new patients' follow-up tasks."""

    interval_s: float = 3.0
    """How often the task list is read."""
    delays_s: Mapping[str, float] = field(default_factory=lambda: {
        "contact": 10.0, "handoff": 10.0, "pcp_notification": 15.0, "med_rec": 20.0,
        "visit": 25.0})
    """Seconds from a task first being listed to its completion, by kind: the call
    first, the visit last (a demo minute stands for the weeks of a real follow-up)."""
    default_delay_s: float = 25.0
    per_round: int = 4
    """At most this many completions per read: gentle on the hub, easy on the eye."""

    def delay(self, kind: str) -> float:
        return self.delays_s.get(kind, self.default_delay_s)


@dataclass
class _Desk:
    """What the case manager remembers between reads."""

    leave_alone: set[str] | None = None
    """The tasks listed before the trickle began (the replay's: left open, so the
    dashboard keeps showing overdue work)."""
    first_seen: dict[str, float] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    completed: int = 0


async def run_case_manager(base_url: str, staff_token: str, *,
                           cfg: CaseManagerConfig | None = None,
                           clock: Callable[[], float] = time.monotonic) -> None:
    """Play a case manager over the staff task API until cancelled: tasks listed after
    the first read are completed (``POST /care/tasks/{id}/status``) once they have been
    open for their kind's delay, soonest-seen first. A failed round (the hub busy or
    stopping) is logged and the next one tries again."""
    cfg = cfg or CaseManagerConfig()
    desk = _Desk()
    log.info("demo_case_manager_started")
    try:
        async with aiohttp.ClientSession(
                base_url=base_url, headers={"Authorization": f"Bearer {staff_token}"},
                timeout=aiohttp.ClientTimeout(total=15)) as http:
            while True:
                try:
                    await _case_manager_round(http, desk, cfg, clock())
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    # The hub busy or restarting: the next round tries again.
                    log.info("demo_case_manager_round_failed", exc_type=type(exc).__name__)
                await asyncio.sleep(cfg.interval_s)
    except asyncio.CancelledError:  # the hub is stopping (Ctrl-C) or the trickle ended
        log.info("demo_case_manager_stopped", completed=desk.completed, reason="cancelled")
        raise


async def _case_manager_round(http: aiohttp.ClientSession, desk: _Desk,
                              cfg: CaseManagerConfig, now: float) -> None:
    if desk.leave_alone is None:
        async with http.get("/care/tasks", params={"limit": "5000"}) as resp:
            if resp.status != 200:  # the task view still loading (503)
                return
            desk.leave_alone = {t["task_id"] for t in (await resp.json())["tasks"]}
        return
    async with http.get("/care/tasks", params={"status": "open", "limit": "5000"}) as resp:
        if resp.status != 200:
            return
        rows = [t for t in (await resp.json())["tasks"]
                if t["task_id"] not in desk.leave_alone]
    listed = {t["task_id"] for t in rows}
    # Forget what left the open list (closed, by this desk or anyone): bounded memory.
    desk.first_seen = {k: v for k, v in desk.first_seen.items() if k in listed}
    desk.sent &= listed
    ready = []
    for t in rows:
        seen = desk.first_seen.setdefault(t["task_id"], now)
        if t["task_id"] not in desk.sent and now - seen >= cfg.delay(t["kind"]):
            ready.append((seen, t["due"], t["task_id"], t["kind"]))
    for _, _, task_id, kind in sorted(ready)[:cfg.per_round]:
        # The key makes a resend (lost answer) the same update, applied once.
        async with http.post(f"/care/tasks/{task_id}/status", json={"status": "completed"},
                             headers={"Idempotency-Key": f"demo-{task_id}-completed"}
                             ) as resp:
            if resp.status in (200, 202, 404, 409):  # done, or not ours to do any more
                desk.sent.add(task_id)
            if resp.status == 202:
                desk.completed += 1
                log.info("demo_task_completed", task_id=task_id, kind=kind,
                         completed=desk.completed)


async def _trickle_with_case_manager(settings: Settings, ingest_role: Any, mllp_port: int,
                                     staff_token: str | None, console: Console) -> None:
    """The live trickle, and beside it the case manager when the demo has the staff
    token and an HTTP listener (both stop when the trickle does: Ctrl-C)."""
    http_port = getattr(ingest_role.ingest, "http_port", None)
    desk: asyncio.Task[None] | None = None
    if staff_token is not None and http_port is not None and settings.care_enabled:
        console.print("A case manager completes the new patients' follow-up tasks over "
                      "the staff API (POST /care/tasks/{id}/status): the call ~10 s after "
                      "discharge, the rest within ~25 s, so episodes close and caseloads "
                      "come back down.")
        desk = asyncio.create_task(run_case_manager(f"http://127.0.0.1:{http_port}",
                                                    staff_token), name="demo-case-manager")
    try:
        await run_trickle(settings.mllp_host, mllp_port)
    finally:
        if desk is not None:
            desk.cancel()
            await asyncio.gather(desk, return_exceptions=True)
