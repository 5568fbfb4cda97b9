"""The dashboard in headless Chromium: the page renders what data.json says.

No broker: an ops server over a HubMetrics fed by the ingest hooks and a fake care
figures provider (the shape the care stages hand over). Chromium (Debian's package)
loads /dashboard, lets the page poll, and dumps the rendered DOM; the test reads the
numbers out of the cells (``data-k`` attributes) and compares them with data.json.
A screenshot is saved next to the test's tmp files.
"""

from __future__ import annotations

import asyncio
import html
import math
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hub.metrics import HubMetrics
from hub.observe import StreamsSensor
from hub.settings import Settings
from hub.web import Ops, OpsServer
from schemas.care import EscalationOutput, dump_output

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _chromium_required() -> None:
    # Locally a missing browser skips; CI (.ci/run) installs it and must not skip.
    if CHROMIUM is None:
        if os.environ.get("HUB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required (HUB_REQUIRE_CHROMIUM=1) but not installed")
        pytest.skip("chromium not installed (.ci/run installs it)")


class Care:
    def figures(self) -> dict[str, Any]:
        return {
            "stages": {"normalize": {"processed": 40, "duplicates": 2,
                                     "dead_letters": {"missing_msh": 3}},
                       "assignment": {"processed": 12}},
            "outputs": {"canonical_event": 35, "task": 9},
            "tasks_open": 9, "tasks_overdue": 2, "escalations_unassigned": 1,
            "caseloads": [{"team": "med", "manager": "cm-ana", "points": 18, "cap_points": 30},
                          {"team": "med", "manager": "cm-bo", "points": 31, "cap_points": 30}],
            "recent_escalations": [{"at": "2026-03-02T10:00:00+00:00", "team": "med",
                                    "reason": "no_capacity", "kind": "unassigned"}],
            "end_to_end_latency_s": {"normalize": {
                "buckets": [[0.01, 3], [0.05, 39], [1.0, 40], [math.inf, 40]],
                "sum": 1.2, "count": 40}},
            "referrals": {"requested": 4, "accepted": 2, "completed": 1},
            "webhook_deliveries": {"foodbank": {"delivered": 5, "retried": 2, "failed": 2,
                                                "exhausted": 1}},
        }


def _chromium(*args: str, profile: Path) -> list[str]:
    assert CHROMIUM
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]


async def _run(cmd: list[str], timeout: float = 90) -> bytes:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out


def cells(dom: str) -> dict[str, str]:
    return {k: html.unescape(v).strip()
            for k, v in re.findall(r'data-k="([^"]+)"[^>]*>([^<]*)<', dom)}


@pytest.mark.slow
async def test_dashboard_shows_the_figures_of_data_json(tmp_path: Path) -> None:
    settings = Settings(feed_silence={"GENHOSP": {"default_s": 900},
                                      "QUIETHOSP": {"default_s": 1}})
    metrics = HubMetrics(settings)
    for i in range(5):
        metrics.message_handled(transport="mllp", listener="mllp", ack_code="AA",
                                error_code=None, duplicate=False, latency_s=0.01,
                                feed="GENHOSP", trigger="A01" if i % 2 else "A03")
    metrics.message_handled(transport="mllp", listener="mllp", ack_code="AE",
                            error_code="missing_patient_identifier", duplicate=False,
                            latency_s=0.01, feed="GENHOSP", trigger="A01", dead_lettered=True)
    metrics.add_provider(Care())
    # An overdue task escalated by the care timer, seen on its way to the producer.
    sensor = StreamsSensor()
    sensor.on_produce_message(None, key=b"GENHOSP|MRN424242", value=orjson.dumps(dump_output(
        EscalationOutput(id="e1", cause_event_id="ev1", rule="task.overdue",
                         patient_key="GENHOSP|MRN424242", encounter_key="GENHOSP|V1",
                         facility="GENHOSP", decided_at=datetime(2026, 11, 24, 13, 0, tzinfo=UTC),
                         reason="task_overdue", team="med", supervisor="sup-lee", task_id="t1",
                         task_kind="contact", due=datetime(2026, 11, 20, 17, 0, tzinfo=UTC)))))
    metrics.add_provider(sensor)
    metrics.set_consumer_lag({("ehr.hl7v2", 0): 4, ("ehr.hl7v2", 1): 3})
    server = OpsServer(Ops(metrics), settings, host="127.0.0.1", port=0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        await asyncio.sleep(1.1)  # QUIETHOSP's 1 s passes: it must show as silent
        shot = tmp_path / "dashboard.png"
        dom = (await _run(_chromium("--virtual-time-budget=5000", "--dump-dom",
                                    f"{base}/dashboard", profile=tmp_path / "p1"))).decode()
        await _run(_chromium("--virtual-time-budget=5000", "--window-size=1400,1000",
                             f"--screenshot={shot}", f"{base}/dashboard",
                             profile=tmp_path / "p2"))
        async with aiohttp.ClientSession() as http, http.get(f"{base}/dashboard/data.json") as r:
            data = await r.json()
    finally:
        await server.stop()

    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
    shown = cells(dom)
    assert shown, dom[:2000]
    feeds = {f["feed"]: f for f in data["feeds"]}
    assert shown["feeds.GENHOSP.received"] == str(feeds["GENHOSP"]["received"]) == "6"
    assert shown["feeds.GENHOSP.silent"] == "flowing"
    assert shown["feeds.QUIETHOSP.silent"] == "SILENT" and feeds["QUIETHOSP"]["silent"]
    assert shown["feeds.QUIETHOSP.age_s"] == "none since start"
    stages = {s["stage"]: s for s in data["stages"]}
    for stage in ("ingest", "normalize", "assignment"):
        assert shown[f"stages.{stage}.processed"] == str(stages[stage]["processed"])
        assert shown[f"stages.{stage}.dead_letters"] == str(stages[stage]["dead_letters"])
    assert shown["stages.normalize.lag"] == str(stages["normalize"]["lag"]) == "7"
    assert shown["acks.AA.n"] == str(data["acks"]["AA"]) == "5"
    assert shown["work.tasks_overdue"] == str(data["tasks_overdue"]) == "2"
    assert shown["work.tasks_open"] == "9"
    for row in data["caseloads"]:
        key = f"caseloads.{row['team']}/{row['manager']}"
        assert shown[f"{key}.points"] == str(row["points"])
        assert shown[f"{key}.cap_points"] == str(row["cap_points"])
    assert shown["escalations.0.reason"] == "no_capacity"
    assert shown["escalations.0.kind"] == "unassigned patient"
    assert [e["kind"] for e in data["recent_escalations"]] == ["unassigned", "overdue_task"]
    assert shown["escalations.1.kind"] == "overdue task"
    assert shown["escalations.1.reason"] == "task_overdue"
    assert shown["escalations.1.task_kind"] == "contact"
    assert shown["escalations.1.team"] == "med"
    assert shown["escalations.1.at"] == "2026-11-24 13:00:00 UTC"
    assert "MRN424242" not in dom
    assert shown["lag.ehr.hl7v2.lag"] == "7" and shown["lag.ehr.hl7v2.max_lag"] == "4"
    # End-to-end latency: p50 and p95 fall in the 50 ms bucket.
    assert stages["normalize"]["latency_p95_s"] == 0.05
    assert shown["stages.normalize.latency_p95_s"] == "≤ 50 ms"
    assert shown["stages.ingest.latency_p95_s"] == "—"
    # Referrals by status and webhook outcomes (the referral stages' figures).
    assert data["referrals"] == {"accepted": 2, "completed": 1, "requested": 4}
    assert shown["referrals.requested.n"] == "4" and shown["referrals.completed.n"] == "1"
    assert shown["webhooks.foodbank.delivered"] == "5"
    assert shown["webhooks.foodbank.retried"] == "2"
    assert shown["webhooks.foodbank.exhausted"] == "1"
    assert shown["outputs.task.n"] == "9"


@pytest.mark.slow
async def test_dashboard_says_when_care_stages_have_no_data(tmp_path: Path) -> None:
    metrics = HubMetrics(Settings())
    server = OpsServer(Ops(metrics), Settings(), host="127.0.0.1", port=0)
    await server.start()
    try:
        dom = (await _run(_chromium("--virtual-time-budget=5000", "--dump-dom",
                                    f"http://127.0.0.1:{server.port}/dashboard",
                                    profile=tmp_path / "p"))).decode()
    finally:
        await server.stop()
    assert "has not reported caseloads yet" in dom, dom[dom.find("<header"):][:3000]
    assert "have not reported yet (no task or escalation data)" in dom
    assert "No feed has sent anything yet" in dom
    assert "The referral stages have not reported yet." in dom
    assert "No webhook delivery figures yet." in dom
    assert 'data-k="work.' not in dom
