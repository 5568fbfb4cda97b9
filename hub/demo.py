"""``make demo``: replay the synthetic feed through MLLP and show what came out."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from hub.feed import FeedConfig, bad_messages, generate
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


def _ack_code(ack: bytes) -> str:
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            return seg.split(seg[3:4])[1].decode("ascii", "replace")
    return "??"


async def replay_and_summarise(settings: Settings, ingest_role: Any, *, exit_after: bool,
                               patients: int = 20, console: Console | None = None,
                               staff_token: str | None = None) -> int | None:
    """Send the feed, wait for the events, print a summary. Returns an exit status when
    ``exit_after`` (0 = every good message became an event), else None (keep serving)."""
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
    for topic in (CARE_FLAGS, CARE_ASSIGNMENTS, CARE_TASKS, CARE_ESCALATIONS,
                  CARE_NOTIFICATIONS, CARE_REFERRALS):
        records = await read_topic(settings, settings.topic(topic.name), timeout=3)
        values = [orjson.loads(r.value or b"{}") for r in records]
        table.add_row(f"{topic.name}", str(len(values)))
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
        console.print(f"Serving: MLLP on {settings.mllp_host}:{port}, HTTP on "
                      f"{settings.http_host}:{settings.http_port}. Ctrl-C to stop.")
        return None
    return 0 if ok else 1


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
        log.warning("demo_referral_loop_failed", error=type(exc).__name__)
        return False
    render(result, console)
    log.info("demo_referral_loop_closed", agency_id=result.agency_id, steps=len(result.steps))
    return True
