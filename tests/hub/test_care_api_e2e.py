"""The staff task API on a real broker, through ``hub run`` as users run it.

An HL7 admission and discharge home -> follow-up tasks on care.tasks -> the staff list
shows them (no patient data) -> a case-management system POSTs ``completed`` for each
over HTTP -> care.task-updates -> the episodes stage republishes each task completed on
care.tasks, the episode closes and its caseload is released (care.assignments).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hub.kafka import read_topic
from hub.mllp_client import MllpClient
from schemas.care import AssignmentOutput, TaskOutput, TaskUpdate
from streams.referrals.directory import token_sha256

from .apiclient import eventually, live_call
from .hubproc import HubProcess, hub_process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STAFF = "e2e-task-staff-token"
MRN, VISIT = "E2E-TASK-MRN-8812", "E2ETASKV1"
KEY, EPISODE = f"GENHOSP|{MRN}", f"GENHOSP|{VISIT}"


def _adt(trigger: str, control: str, at: datetime, admitted: datetime,
         discharged: datetime | None) -> bytes:
    def ts(d: datetime) -> str:
        return d.strftime("%Y%m%d%H%M%S+0000")

    structure = "ADT_A03" if trigger == "A03" else "ADT_A01"
    return (
        f"MSH|^~\\&|EPICADT|GENHOSP|HUB|HUB|{ts(at)}||ADT^{trigger}^{structure}|{control}|P|"
        "2.5.1\r"
        f"EVN|{trigger}|{ts(at)}\r"
        f"PID|1||{MRN}^^^GENHOSP^MR||TASKCANARY^ZOE||19470203|F|||"
        "9 TASKCANARY RD^^SPRINGFIELD^MA^01103||^^PH^^^413^5550177\r"
        "PD1||||1234567890^WELBY^MARCUS^^^DR^MD\r"
        "PV1|1|I|4WEST^401^1^GENHOSP||||1234^WELBY^MARCUS|||MED||||7|||1234^WELBY^MARCUS||"
        f"{VISIT}|||||||||||||||||{'01' if discharged else ''}|||||||||{ts(admitted)}|"
        f"{ts(discharged) if discharged else ''}\r"
        "DG1|1||I50.9^Heart failure, unspecified^I10|||F\r"
    ).encode()


async def _admit_and_discharge(hub: HubProcess, control: str, admitted: datetime,
                               discharged: datetime) -> None:
    async with MllpClient("127.0.0.1", hub.settings.mllp_port, timeout=30) as client:
        for msg in (_adt("A01", f"{control}1", admitted, admitted, None),
                    _adt("A03", f"{control}2", discharged, admitted, discharged)):
            ack = await client.send(msg)
            assert b"MSA|AA" in ack, ack


async def _call(http: aiohttp.ClientSession, hub: HubProcess, method: str, path: str,
                body: Any = None, token: str | None = STAFF) -> tuple[int, Any]:
    return await live_call(http, hub.http, method, path, token, body)


async def test_tasks_completed_over_http_close_the_episode(kafka_bootstrap: str,
                                                           kafka_idempotent: bool,
                                                           tmp_path: Path) -> None:
    # A view retention of ~86 s of record time: the open tasks (and their episode's team),
    # decided hours to days ago, must all stay listed however far past it they are.
    env = {"HUB_STAFF_API_TOKEN_SHA256": token_sha256(STAFF), "HUB_CARE_TICK_INTERVAL_S": "1",
           "HUB_API_VIEW_RETAIN_DAYS": "0.001"}
    # Live times: a discharge months ago would close by the 30-day rule on the first tick.
    now = datetime.now(UTC).replace(microsecond=0)
    admitted, discharged = now - timedelta(days=3), now - timedelta(hours=1)
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        settings = hub.settings
        await _admit_and_discharge(hub, "E2ETASK", admitted, discharged)
        async with aiohttp.ClientSession() as http:
            async def open_tasks() -> Any:
                status, body = await _call(http, hub, "GET", "/care/tasks?status=open")
                # Contact, visit, med rec and PCP notification all published.
                return body["tasks"] if status == 200 and len(body["tasks"]) >= 4 else None

            tasks = await eventually(open_tasks, 90, "the discharge's follow-up tasks")
            assert {t["kind"] for t in tasks} >= {"contact", "visit", "med_rec"}
            assert all(t["team"] for t in tasks), tasks
            listed = orjson.dumps(tasks).decode()
            assert MRN not in listed and "TASKCANARY" not in listed
            assert (await _call(http, hub, "GET", "/care/tasks", token=None))[0] == 401
            assert (await _call(http, hub, "POST", "/care/tasks/no-such-task/status",
                                {"status": "completed"}))[0] == 404

            ids: dict[str, str] = {}
            for t in tasks:
                status, body = await _call(http, hub, "POST",
                                           f"/care/tasks/{t['task_id']}/status",
                                           {"status": "completed", "reason": "done_by_phone"})
                assert status == 202, body
                ids[t["task_id"]] = body["id"]

            async def all_completed() -> Any:
                status, body = await _call(http, hub, "GET", "/care/tasks?status=completed")
                done = {r["task_id"] for r in body["tasks"]} if status == 200 else set()
                return done >= set(ids)

            await eventually(all_completed, 60, "every task completed in the staff list")
            # The same POST again: the task is closed, nothing more is sent.
            first = next(iter(ids))
            status, body = await _call(http, hub, "POST", f"/care/tasks/{first}/status",
                                       {"status": "completed", "reason": "done_by_phone"})
            assert status == 200 and body["unchanged"] is True

        updates = [TaskUpdate.model_validate_json(r.value or b"") for r in await read_topic(
            settings, "care.task-updates", timeout=10, min_records=len(ids))]
        assert sorted(u.id or "" for u in updates) == sorted(ids.values())
        assert {u.patient_key for u in updates} == {KEY}
        latest: dict[str, TaskOutput] = {}
        for rec in await read_topic(settings, "care.tasks", timeout=10,
                                    min_records=2 * len(ids)):
            out = TaskOutput.model_validate_json(rec.value or b"")
            latest[out.task_id] = out
        assert {t: (o.status, o.status_reason, o.rule) for t, o in latest.items()} == {
            t: ("completed", "done_by_phone", "task.update.completed") for t in ids}

        async def released() -> Any:
            rows = [AssignmentOutput.model_validate_json(r.value or b"") for r in
                    await read_topic(settings, "care.assignments", timeout=5)]
            return [a for a in rows if a.encounter_key == EPISODE
                    and a.status == "released"]

        [release] = await eventually(released, 60, "the caseload release")
        assert release.reason == "episode_closed"
        log = hub.log_text()
        assert "task_update_accepted" in log
        for token in (MRN, "TASKCANARY", STAFF):
            assert token not in log, f"{token!r} leaked into the log"


async def test_the_timer_escalates_tasks_that_fall_due_after_its_first_pass(
        kafka_bootstrap: str, kafka_idempotent: bool, tmp_path: Path) -> None:
    """After its first full pass the timer reads only the patients due
    (``episodes-due``): a discharge arriving later, its contact task already overdue,
    must still be escalated, once."""
    env = {"HUB_CARE_TICK_INTERVAL_S": "1"}
    now = datetime.now(UTC).replace(microsecond=0)
    # Discharged a week ago: the 2-business-day contact is overdue, the 30-day follow-up
    # period is not over (the episode stays open).
    admitted, discharged = now - timedelta(days=10), now - timedelta(days=7)
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        await eventually(_async(lambda: "care_tick_swept" in hub.log_text()), 60,
                         "the timer's first full pass")
        await asyncio.sleep(2)  # every partition's first pass is behind us
        settings = hub.settings
        await _admit_and_discharge(hub, "E2EDUE", admitted, discharged)

        async def overdue() -> Any:
            rows = [orjson.loads(r.value or b"") for r in
                    await read_topic(settings, "care.escalations", timeout=5)]
            return [e for e in rows if e["encounter_key"] == EPISODE
                    and e["rule"] == "task.overdue"]

        found = await eventually(overdue, 60, "the overdue task's escalation")
        await asyncio.sleep(3)  # more ticks: none may escalate it again
        again = await overdue()
        assert len({e["task_id"] for e in found}) == len(again) >= 1, again
        assert "care_tick_swept" in hub.log_text()


def _async(fn: Any) -> Any:
    async def call() -> Any:
        return fn()
    return call
