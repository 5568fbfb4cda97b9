"""``make demo``: the replay, the summary, the referral loop and the live trickle.

The slow tests run the real command in a subprocess (the demo always uses the embedded
broker: it is what a newcomer gets with nothing configured). The fast ones check the
trickle generator, the demo's settings and the trickle's sender against a stub MLLP
listener.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.demo import (
    DEMO_FEED_SILENCE,
    CaseManagerConfig,
    _case_manager_round,
    _Desk,
    demo_overrides,
    run_case_manager,
    run_trickle,
)
from hub.feed import FeedConfig, TrickleConfig, generate, trickle
from hub.settings import Settings
from mappers.hl7v2 import map_hl7v2
from mappers.mllp import Frame, MllpDecoder, encode_frame

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _field(message: bytes, segment: str, index: int) -> str:
    for seg in message.decode().split("\r"):
        if seg.startswith(segment + "|"):
            parts = seg.split("|")
            # MSH-1 is the separator itself: MSH fields are shifted by one.
            i = index - 1 if segment == "MSH" else index
            return parts[i] if i < len(parts) else ""
    return ""


# ------------------------------------------------------------------ the trickle
def test_trickle_is_deterministic_for_a_start() -> None:
    first = list(islice(trickle(START), 50))
    assert first == list(islice(trickle(START), 50))
    later = list(islice(trickle(START + timedelta(hours=1)), 50))
    assert {_field(m, "MSH", 10) for _, m in first}.isdisjoint(
        {_field(m, "MSH", 10) for _, m in later}), "control ids must differ across runs"


def test_trickle_sends_new_patients_in_whole_journeys_that_map() -> None:
    items = list(islice(trickle(START), 400))
    gaps = [g for g, _ in items]
    assert min(gaps) >= 1.0 and max(gaps) <= 3.0
    controls = [_field(m, "MSH", 10) for _, m in items]
    assert len(set(controls)) == len(controls) and all(len(c) <= 20 for c in controls)
    replay_mrns = {_field(m, "PID", 3).split("^")[0] for m in generate(FeedConfig(patients=200))}
    journeys: dict[str, list[str]] = {}
    for _, m in items:
        mrn = _field(m, "PID", 3).split("^")[0]
        assert mrn not in replay_mrns
        journeys.setdefault(mrn, []).append(_field(m, "EVN", 1))
    assert len(journeys) > 50  # new patients keep coming
    done = [j for j in journeys.values() if j[-1] == "A03"]
    assert len(done) >= len(journeys) - TrickleConfig().census  # only the census still in
    for j in done:
        assert j[-2:] == ["A08", "A03"] and "A01" in j and j.count("A03") == 1
    # Stamped with the start plus the gaps (the sender paces by them: wall-clock time).
    elapsed = 0.0
    for gap, m in items:
        elapsed += gap
        stamp = datetime.strptime(_field(m, "MSH", 7), "%Y%m%d%H%M%S%z")
        assert abs((stamp - START).total_seconds() - elapsed) < 1.0
        events = map_hl7v2(m, received_at=START, default_tz="UTC")
        assert events and events[0].patient.mrn.startswith("MRN9")


def test_trickle_keeps_the_census_bounded() -> None:
    in_house: set[str] = set()
    peak = 0
    for _, m in islice(trickle(START, TrickleConfig(census=4)), 1000):
        mrn = _field(m, "PID", 3)
        in_house.add(mrn)
        if _field(m, "EVN", 1) == "A03":
            in_house.discard(mrn)
        peak = max(peak, len(in_house))
    assert peak <= 4


# ------------------------------------------------------------ demo settings
def test_demo_sets_a_silence_rule_and_a_fast_timer_unless_configured() -> None:
    assert demo_overrides({}) == {"feed_silence": DEMO_FEED_SILENCE,
                                  "care_tick_interval_s": 5.0, "log_level": "WARNING"}
    assert demo_overrides({"HUB_FEED_SILENCE": "{}", "HUB_CARE_TICK_INTERVAL_S": "60",
                           "HUB_LOG_LEVEL": "INFO"}) == {}
    settings = Settings(**demo_overrides({}))  # type: ignore[arg-type]
    assert settings.feed_silence[FeedConfig().facility].default_s == 30.0
    assert Settings().feed_silence == {}  # production gets nothing from the demo


# ----------------------------------------------------- the trickle's sender
async def _stub_mllp(received: list[bytes], close_after: int | None = None
                     ) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = MllpDecoder(max_frame_bytes=1 << 20)
        while data := await reader.read(65536):
            for item in decoder.feed(data):
                if not isinstance(item, Frame):
                    continue
                received.append(item.payload)
                if close_after is not None and len(received) >= close_after:
                    writer.close()
                    return
                control = _field(item.payload, "MSH", 10)
                writer.write(encode_frame(
                    f"MSH|^~\\&|HUB|HUB|X|X|20261124||ACK|A{control}|P|2.5.1\r"
                    f"MSA|AA|{control}\r".encode()))
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_run_trickle_sends_paced_messages_and_stops_on_a_closed_connection() -> None:
    fast = TrickleConfig(min_gap_s=0.01, max_gap_s=0.02)
    received: list[bytes] = []
    server = await _stub_mllp(received)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    acked = await run_trickle("127.0.0.1", port, start=START, cfg=fast, limit=30)
    assert acked == 30 and len(received) == 30
    assert time.monotonic() - started >= 0.25  # paced by the gaps, not a burst
    assert received == [m for _, m in islice(trickle(START, fast), 30)]
    server.close()
    await server.wait_closed()

    # The hub stopping (its listener gone) ends the trickle quietly.
    received.clear()
    server = await _stub_mllp(received, close_after=5)
    port = server.sockets[0].getsockname()[1]
    acked = await asyncio.wait_for(run_trickle("127.0.0.1", port, start=START, cfg=fast), 10)
    assert acked == 4 and len(received) == 5
    server.close()
    await server.wait_closed()


async def test_run_trickle_stops_when_cancelled() -> None:
    received: list[bytes] = []
    server = await _stub_mllp(received)
    port = server.sockets[0].getsockname()[1]
    task = asyncio.create_task(run_trickle(
        "127.0.0.1", port, cfg=TrickleConfig(min_gap_s=0.01, max_gap_s=0.02)))
    while len(received) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.close()
    await server.wait_closed()


# ------------------------------------------------------------ the case manager
class StubTaskApi:
    """The staff task API's two endpoints over a dict (task id -> kind, status)."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[str, str]] = {}
        self.posts: list[tuple[str, str | None, str | None, dict[str, Any]]] = []
        self.answer: int | None = None
        app = web.Application()
        app.router.add_get("/care/tasks", self.list)
        app.router.add_post("/care/tasks/{task_id}/status", self.post)
        self.server = TestServer(app)

    async def list(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        rows = [{"task_id": t, "kind": k, "status": s, "owner": "cm-ana", "team": "medsurg",
                 "due": "2026-11-26T23:59:59+00:00", "overdue": False}
                for t, (k, s) in sorted(self.tasks.items())
                if status is None or (status == "open" and s == "requested")]
        return web.json_response({"tasks": rows, "total": len(rows)})

    async def post(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        self.posts.append((task_id, request.headers.get("Authorization"),
                           request.headers.get("Idempotency-Key"), await request.json()))
        if self.answer is not None:
            return web.json_response({}, status=self.answer)
        kind, _ = self.tasks[task_id]
        self.tasks[task_id] = (kind, "completed")
        return web.json_response({"id": "u", "task_id": task_id, "status": "completed"},
                                 status=202)


async def test_case_manager_completes_new_tasks_by_kind_and_leaves_the_replays_alone(
        ) -> None:
    stub = StubTaskApi()
    stub.tasks["replay-1"] = ("contact", "requested")
    await stub.server.start_server()
    cfg = CaseManagerConfig(per_round=2)
    desk = _Desk()
    try:
        async with aiohttp.ClientSession(base_url=str(stub.server.make_url("/")),
                                         headers={"Authorization": "Bearer s"}) as http:
            await _case_manager_round(http, desk, cfg, 0.0)  # what was there before
            assert desk.leave_alone == {"replay-1"} and stub.posts == []
            stub.tasks.update({"c1": ("contact", "requested"), "v1": ("visit", "requested"),
                               "m1": ("med_rec", "requested"),
                               "h1": ("handoff", "requested")})
            await _case_manager_round(http, desk, cfg, 1.0)  # first seen
            await _case_manager_round(http, desk, cfg, 10.9)
            assert stub.posts == []
            await _case_manager_round(http, desk, cfg, 11.0)  # contact, handoff: 10 s
            assert [p[0] for p in stub.posts] == ["c1", "h1"]
            assert stub.posts[0][1:] == ("Bearer s", "demo-c1-completed",
                                         {"status": "completed"})
            stub.answer = 503  # the hub busy: tried again next round
            await _case_manager_round(http, desk, cfg, 21.0)
            assert [p[0] for p in stub.posts] == ["c1", "h1", "m1"]
            stub.answer = None
            await _case_manager_round(http, desk, cfg, 26.0)
            assert [p[0] for p in stub.posts] == ["c1", "h1", "m1", "m1", "v1"]
            await _case_manager_round(http, desk, cfg, 60.0)
            assert len(stub.posts) == 5 and desk.completed == 4
            assert stub.tasks["replay-1"] == ("contact", "requested")
            assert desk.first_seen == {} and desk.sent == set()  # nothing open: forgotten
    finally:
        await stub.server.close()


async def test_case_manager_keeps_going_through_errors_and_stops_when_cancelled() -> None:
    stub = StubTaskApi()
    await stub.server.start_server()
    url = str(stub.server.make_url("/"))
    await stub.server.close()  # nobody listening: every round fails, quietly
    task = asyncio.create_task(run_case_manager(url, "s",
                                                cfg=CaseManagerConfig(interval_s=0.01)))
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------ the real demo
def _demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUB_") and k not in ("KAFKA_BOOTSTRAP",)}
    env.update({"HUB_STATE_DIR": str(tmp_path / "state"), "HUB_MLLP_PORT": "0",
                "HUB_HTTP_PORT": "0", "HUB_WORKER_WEB_PORT": str(_free_port()),
                "COLUMNS": "120", "HUB_LOG_LEVEL": "INFO"})
    return env


@pytest.mark.slow
def test_demo_exits_zero_after_closing_the_referral_loop(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "run", "--demo", "--exit"],
                          cwd=ROOT, env=_demo_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "care.referrals" in out and "care.flags" in out
    # The summary waits for the care stages, not just care.events: the demo shows flags,
    # assignments and tasks (it once printed care.flags 0 by reading too early).
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"│ (care\.[a-z-]+)\s+│\s+(\d+) │", out)}
    for topic in ("care.flags", "care.assignments", "care.tasks", "care.notifications"):
        assert counts.get(topic, 0) > 0, (topic, counts)
    assert "Referral loop over the agency API: housing" in out
    loop = out[out.index("Referral loop over the agency API"):]
    for step in ("referred", "agency read it", "accepted", "completed"):
        assert step in loop
    # The agency's copy: the minimum-necessary field set, nothing else.
    for name in ("agency_id", "discharge_date", "need", "patient", "referring"):
        assert name in loop
    assert "patient_key" not in loop and "need_codes" not in loop
    assert "trickle" not in out  # --exit: straight out after the summary


def _received(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith('hub_messages_received_total{feed="GENHOSP"'))


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, url
        return await (resp.json() if url.endswith(".json") else resp.text())


async def _case_manager_closes_trickle_episodes(err_path: Path) -> None:
    """The demo's case manager completes the trickle's tasks over the staff API: a task
    reaches completed on care.tasks and a trickle patient's episode closes (its caseload
    released). The replay's tasks stay open (the overdue escalations above)."""
    from hub.kafka import read_topic

    started = [json.loads(line) for line in err_path.read_text().splitlines()
               if '"embedded_broker_started"' in line]
    settings = Settings(kafka_bootstrap=started[0]["bootstrap"], topic_prefix="")
    trickle_mrn = re.compile(r"\|MRN9\d{5}$")
    completed: list[Any] = []
    released: list[Any] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not (completed and released):
        tasks = [orjson.loads(r.value or b"{}")
                 for r in await read_topic(settings, "care.tasks", timeout=5)]
        completed = [t for t in tasks if t.get("rule") == "task.update.completed"]
        assignments = [orjson.loads(r.value or b"{}")
                       for r in await read_topic(settings, "care.assignments", timeout=5)]
        released = [a for a in assignments if a.get("status") == "released"
                    and a.get("reason") == "episode_closed"
                    and trickle_mrn.search(a.get("patient_key", ""))]
        await asyncio.sleep(2)
    assert completed, "no task was completed by the demo's case manager"
    assert all(trickle_mrn.search(t["patient_key"]) for t in completed)
    assert released, "no trickle episode closed"


@pytest.mark.slow
async def test_demo_keeps_a_live_trickle_until_ctrl_c(tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "--demo"], cwd=ROOT,
                                env=_demo_env(tmp_path), stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 240
        url = None
        while url is None and time.monotonic() < deadline:
            assert proc.poll() is None, (out_path.read_text()[-3000:],
                                         err_path.read_text()[-3000:])
            found = re.search(r"Dashboard: (http://\S+)/dashboard", out_path.read_text())
            url = found.group(1) if found else None
            await asyncio.sleep(0.5)
        assert url, out_path.read_text()[-3000:]
        assert "trickle of synthetic ADT" in out_path.read_text()
        async with aiohttp.ClientSession() as http:
            first = _received(await _get(http, f"{url}/metrics"))
            data = await _get(http, f"{url}/dashboard/data.json")
            await asyncio.sleep(8)
            second = _received(await _get(http, f"{url}/metrics"))
            later = await _get(http, f"{url}/dashboard/data.json")
            # The timer (every 5 s in the demo) escalates the replay's overdue tasks
            # (their due dates are November 2026, before the wall clock).
            for _ in range(30):
                kinds = Counter(e["kind"] for e in later["recent_escalations"] or ())
                if kinds["overdue_task"]:
                    break
                await asyncio.sleep(1)
                later = await _get(http, f"{url}/dashboard/data.json")
        assert second >= first + 2, (first, second)  # 1-3 s per message
        feed = {f["feed"]: f for f in later["feeds"]}["GENHOSP"]
        assert feed["threshold_s"] == 30.0 and feed["silent"] is False and feed["seen"]
        assert feed["received"] > {f["feed"]: f for f in data["feeds"]}["GENHOSP"]["received"]
        stages = {s["stage"]: s["processed"] for s in later["stages"]}
        assert stages["normalize"] > {s["stage"]: s["processed"] for s in data["stages"]}[
            "normalize"]
        assert later["caseloads"], later
        overdue = [e for e in later["recent_escalations"] if e["kind"] == "overdue_task"]
        assert overdue and overdue[0]["reason"] == "task_overdue", later["recent_escalations"]
        assert later["tasks_overdue"]
        await _case_manager_closes_trickle_episodes(err_path)

        # Ctrl-C: the trickle stops, the hub stops, the embedded broker with it.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, err_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in err_path.read_text().splitlines()
             if line.startswith("{")]
    events = {line["event"]: line for line in lines}
    assert "demo_trickle_stopped" in events and "embedded_broker_stopped" in events
    assert "demo_task_completed" in events and "demo_case_manager_stopped" in events
    host, _, port = events["embedded_broker_started"]["bootstrap"].rpartition(":")
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect((host, int(port)))  # nobody listens there any more
