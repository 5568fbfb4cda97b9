"""`hub dlq` and `hub status` against a running `hub run` on the test broker."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from rich.console import Console

from hub.cli import build_parser
from hub.commands.dlq_cmd import load_dead_letters, parse_since, run_dlq
from hub.commands.status_cmd import run_status
from hub.ingest.deadletter import dead_letter
from hub.kafka import DurableProducer, read_topic
from hub.metrics import parse_metrics_text
from hub.mllp_client import MllpClient
from mappers.hl7v2 import map_hl7v2, read_header
from schemas.errors import ErrorCode, MappingError

from .hubproc import HubProcess, hub_process, wait_ready

FAMILY = "Zqxdlqfam"


def adt(control: str, pid3: str = "DLQ555^^^GENHOSP^MR") -> bytes:
    return (f"MSH|^~\\&|EPIC|GENHOSP|HUB|CM|20260301120000-0500||ADT^A01^ADT_A01|{control}|P|"
            f"2.5.1\rEVN|A01|20260301120000-0500\rPID|1||{pid3}||{FAMILY}^Ann||19400101|F\r"
            f"PV1|1|I|4W^401^A^GENHOSP||||||||MED||||||||||V{control}\r").encode()


def test_parse_since() -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-03-01T00:00:00", now) == datetime(2026, 3, 1, tzinfo=UTC)


def cli(hub: HubProcess, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["dlq", *argv])
    out, err = io.StringIO(), io.StringIO()
    rc = run_dlq(args, hub.settings, out=Console(file=out, width=250), err=err)
    return rc, out.getvalue(), err.getvalue()


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    # The CLI runs its own event loop (asyncio.run), so not on the test's loop.
    return await asyncio.to_thread(fn, *args)


async def _events_with(hub: HubProcess, ids: set[str], n_min: int, timeout: float = 60
                       ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        recs = await read_topic(hub.settings, hub.settings.topic("care.events"), timeout=5)
        found = [e for e in (orjson.loads(r.value or b"{}") for r in recs)
                 if e.get("event_id") in ids]
        if len(found) >= n_min:
            return found
        await asyncio.sleep(0.5)
    return found


async def _metric(hub: HubProcess, name: str, want: float, timeout: float = 60,
                  **labels: str) -> float | None:
    deadline = time.monotonic() + timeout
    value: float | None = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{hub.http}/metrics") as r:
                samples = parse_metrics_text(await r.text())
            rows = [v for lb, v in samples.get(name, [])
                    if all(lb.get(k) == x for k, x in labels.items())]
            value = sum(rows) if rows else None
            if value == want:
                return value
            await asyncio.sleep(0.5)
    return value


@pytest.mark.kafka
@pytest.mark.slow
async def test_dlq_list_show_replay_and_status(kafka_bootstrap: str,
                                               kafka_idempotent: bool) -> None:
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent) as hub:
        await wait_ready(hub, hub.http)
        # A message an older hub could not map (dead-lettered at ingest), which the
        # current mappers do map: written as ingest would have written it.
        fixed = adt("DLQFIX1")
        async with DurableProducer(hub.settings) as producer:
            fixed_id = await dead_letter(
                producer, hub.settings, stage="ingest",
                error=MappingError(ErrorCode.BAD_FIELD, "PV1-3 could not be read."),
                original=fixed, transport="mllp", listener="mllp",
                content_type="x-application/hl7-v2+er7", header=read_header(fixed))
        async with MllpClient("127.0.0.1", hub.settings.mllp_port, timeout=30) as client:
            await client.send(adt("DLQBAD1", pid3=""))  # AE: still fails today

        letters: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(letters) < 2:
            letters = await load_dead_letters(hub.settings)
        assert len(letters) == 2
        bad_id = next(d.id for d in letters if d.id != fixed_id)

        rc, out, _ = await in_thread(cli, hub, "list")
        assert rc == 0 and fixed_id in out and bad_id in out
        assert "bad_field" in out and "missing_patient_identifier" in out
        assert FAMILY not in out
        rc, out, _ = await in_thread(cli, hub, "list", "--code", "bad_field")
        assert fixed_id in out and bad_id not in out

        rc, out, err = await in_thread(cli, hub, "show", bad_id[:12])
        assert rc == 0 and bad_id in out and FAMILY not in out and not err
        rc, out, err = await in_thread(cli, hub, "show", bad_id, "--payload")
        assert rc == 0 and FAMILY in out and "PHI" in err

        expected = {e.event_id for e in map_hl7v2(fixed, received_at=datetime.now(UTC),
                                                  default_tz="UTC")}
        rc, out, _ = await in_thread(cli, hub, "replay", fixed_id)
        assert rc == 0 and "replayed" in out
        events = await _events_with(hub, expected, len(expected))
        assert {e["event_id"] for e in events} == expected, "same ids as a first-time mapping"

        # A second replay of the same letter is dropped by normalize's dedup.
        rc, out, _ = await in_thread(cli, hub, "replay", "--all")
        assert rc == 0 and "still_fails:missing_patient_identifier" in out
        assert await _metric(hub, "hub_duplicates_total", 1, stage="normalize") == 1
        events = await _events_with(hub, expected, len(expected))
        assert len(events) == len(expected), "a replay never duplicates outputs"
        # The same message from a third-party producer (no hub headers) gets the dedup
        # key ingest and replay use (format + facility + control id): dropped too.
        async with DurableProducer(hub.settings) as producer:
            await producer.send(hub.settings.topic("ehr.hl7v2"), fixed,
                                key=events[0]["patient"]["key"].encode(), headers=None,
                                timeout=30)
        assert await _metric(hub, "hub_duplicates_total", 2, stage="normalize") == 2
        # The stages as the worker's sensor sees them: records, dead letters by code,
        # end-to-end latency (received -> published).
        assert (await _metric(hub, "hub_stage_processed_total", 3, stage="normalize")) == 3
        assert await _metric(hub, "hub_end_to_end_latency_seconds_count", 3,
                             stage="normalize") == 3
        if not hub.settings.kafka_idempotence:
            # The embedded broker has no InitProducerId: replay falls back by itself.
            strict = hub.settings.model_copy(update={"kafka_idempotence": True})
            args = build_parser().parse_args(["dlq", "replay", fixed_id])
            buf = io.StringIO()
            rc = await in_thread(lambda: run_dlq(args, strict, out=Console(file=buf, width=250),
                                                 err=io.StringIO()))
            assert rc == 0 and "replayed" in buf.getvalue(), buf.getvalue()
            assert await _metric(hub, "hub_duplicates_total", 3, stage="normalize") == 3

        rc, out, _ = await in_thread(cli, hub, "replay", bad_id)
        assert rc == 1 and "still_fails" in out
        rc, _, err = await in_thread(cli, hub, "replay")
        assert rc == 2

        # hub status reads the same figures from /metrics and the broker.
        args = argparse.Namespace(url=[hub.http], no_kafka=False)
        buf = io.StringIO()
        rc = await in_thread(lambda: run_status(args, hub.settings,
                                                console=Console(file=buf, width=200)))
        text = buf.getvalue()
        assert rc == 0
        received = await _metric(hub, "hub_messages_received_total", 1, feed="GENHOSP")
        assert received == 1
        assert re.search(r"│ GENHOSP\s*│\s*1 │", text), text
        assert "ehr.hl7v2" in text and "Topics" in text and FAMILY not in text
