"""The agency API on a real broker, through ``hub run`` as users run it.

1. The API alone: a referral on care.referrals -> the agency's GET shows it -> POST
   accepted -> referrals.updates has the update, keyed by the patient key; another
   agency's token gets 404 on every endpoint, no token 401.
2. The closed loop with the referrals stage: an HL7 discharge with a housing need ->
   referral on care.referrals -> the agency reads it with its token, accepts it, completes
   it -> care.referrals and the staff view show each step with the times recorded.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hub.kafka import DurableProducer, read_topic
from hub.mllp_client import MllpClient
from hub.settings import Settings
from schemas.referrals import (
    AgencyPatient,
    AgencyReferral,
    Contact,
    ReferralOutput,
    ReferralUpdate,
)
from streams.referrals.directory import token_sha256

from .apiclient import eventually, live_call
from .hubproc import HubProcess, hub_process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOKEN_A, TOKEN_B, STAFF = "e2e-token-housing", "e2e-token-pantry", "e2e-staff-token"
DIRECTORY = f"""
agencies:
  - id: e2e-housing
    name: E2E Housing
    services: [housing]
    service_area: {{zip: ["01103"]}}
    api: {{token_sha256: "{token_sha256(TOKEN_A)}"}}
  - id: e2e-pantry
    name: E2E Pantry
    services: [food]
    service_area: {{zip: ["01103"]}}
    api: {{token_sha256: "{token_sha256(TOKEN_B)}"}}
"""
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
KEY = "GENHOSP|E2E-MRN-5511"


def _env(tmp_path: Path) -> dict[str, str]:
    agencies = tmp_path / "agencies.yaml"
    agencies.write_text(DIRECTORY)
    return {"HUB_AGENCIES_FILE": str(agencies),
            "HUB_STAFF_API_TOKEN_SHA256": token_sha256(STAFF)}


async def _call(http: aiohttp.ClientSession, hub: HubProcess, method: str, path: str,
                token: str | None = None, body: Any = None) -> tuple[int, Any]:
    return await live_call(http, hub.http, method, path, token, body)


def _referral(status: str = "requested", version: int = 1) -> ReferralOutput:
    copy = AgencyReferral(
        id="e2e-task-1", referral_id="e2e-ref-1", agency_id="e2e-housing", status=status,
        need="housing", patient=AgencyPatient(family_name="Canary", birth_date=date(1950, 1, 2)),
        referring=Contact(name="Case Manager"), authored_at=T0, updated_at=T0, version=version)
    return ReferralOutput(
        id="e2e-task-1", referral_id="e2e-ref-1", cause_event_id="ev", rule="referral.new",
        patient_key=KEY, decided_at=T0, agency_id="e2e-housing", need="housing",
        status=status, version=version, requested_at=T0, agency_copy=copy)


async def test_agency_api_status_round_trip(kafka_bootstrap: str, kafka_idempotent: bool,
                                            tmp_path: Path) -> None:
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=_env(tmp_path),
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        settings: Settings = hub.settings
        async with DurableProducer(settings, idempotent=kafka_idempotent) as producer:
            await producer.send("care.referrals", _referral().model_dump_json().encode(),
                                key=KEY.encode(), timeout=30)
        async with aiohttp.ClientSession() as http:
            async def listed() -> Any:
                status, body = await _call(http, hub, "GET", "/agency/referrals", TOKEN_A)
                return body["referrals"] if status == 200 and body["referrals"] else None

            [row] = await eventually(listed, 60, "the referral in the agency's list")
            assert row["id"] == "e2e-task-1" and row["status"] == "requested"
            assert "E2E-MRN-5511" not in orjson.dumps(row).decode()
            # Agency B and no token: refused everywhere.
            for method, path, body in (
                    ("GET", "/agency/referrals/e2e-task-1", None),
                    ("POST", "/agency/referrals/e2e-task-1/status", {"status": "accepted"})):
                assert (await _call(http, hub, method, path, TOKEN_B, body))[0] == 404
                assert (await _call(http, hub, method, path, None, body))[0] == 401
            status, body = await _call(http, hub, "GET", "/agency/referrals", TOKEN_B)
            assert status == 200 and body["referrals"] == []
            status, body = await _call(http, hub, "POST",
                                       "/agency/referrals/e2e-task-1/status", TOKEN_A,
                                       {"status": "accepted"})
            assert status == 202, body
            update_id = body["id"]
        records = await read_topic(settings, "referrals.updates", timeout=10, min_records=1)
        [rec] = [r for r in records if r.value]
        update = ReferralUpdate.model_validate_json(rec.value or b"")
        assert rec.key == KEY.encode()
        assert (update.id, update.status, update.agency_id) == (update_id, "accepted",
                                                                "e2e-housing")


ADT_A03 = (
    "MSH|^~\\&|EPICADT|GENHOSP|HUB|HUB|20261102090000||ADT^A03|E2EREF{n}|P|2.5.1\r"
    "EVN|A03|20261102090000\r"
    "PID|1||E2E-MRN-5511^^^GENHOSP^MR||CANARY^ZED||19500102|M|||"
    "1 E2E ST^^SPRINGFIELD^MA^01103||^^PH^^^413^5550123|||||||||||||||||N\r"
    "PV1|1|I|4W^401^1^GENHOSP||||1234^WELBY^MARCUS|||MED||||7|||1234^WELBY^MARCUS||"
    "E2EVISIT1|||||||||||||||||01|||||||||20261030080000|20261102090000\r"
    "DG1|1||Z59.01^Sheltered homelessness^I10|||F\r"
)


async def test_closed_loop_with_the_referrals_stage(kafka_bootstrap: str,
                                                    kafka_idempotent: bool,
                                                    tmp_path: Path) -> None:
    env = {**_env(tmp_path), "HUB_CARE_TICK_INTERVAL_S": "1"}
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        settings = hub.settings
        async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
            ack = await client.send(ADT_A03.format(n=1).encode())
        assert b"MSA|AA" in ack, ack
        async with aiohttp.ClientSession() as http:
            async def listed() -> Any:
                status, body = await _call(http, hub, "GET", "/agency/referrals", TOKEN_A)
                return body["referrals"] if status == 200 and body["referrals"] else None

            [row] = await eventually(listed, 90, "the referral from the HL7 discharge")
            assert row["need"] == "housing" and row["status"] == "requested"
            task = row["id"]
            for step in ("accepted", "completed"):
                status, body = await _call(http, hub, "POST",
                                           f"/agency/referrals/{task}/status", TOKEN_A,
                                           {"status": step})
                assert status == 202, body

                async def shown(step: str = step) -> Any:
                    status, body = await _call(http, hub, "GET", "/care/referrals", STAFF)
                    rows = [r for r in body["referrals"] if r["id"] == task] \
                        if status == 200 else []
                    return rows if rows and rows[0]["status"] == step else None

                [staff_row] = await eventually(shown, 60, f"the staff view showing {step}")
            assert staff_row["accepted_at"] and staff_row["completed_at"]
            assert staff_row["time_to_accept_s"] is not None
            assert staff_row["time_to_complete_s"] is not None
            status, body = await _call(http, hub, "GET", f"/agency/referrals/{task}", TOKEN_A)
            assert status == 200 and body["status"] == "completed"
        outputs = [ReferralOutput.model_validate_json(r.value or b"") for r in
                   await read_topic(settings, "care.referrals", timeout=10, min_records=3)]
        assert [o.status for o in outputs if o.id == task][-3:] == [
            "requested", "accepted", "completed"]
        log = hub.log_text()
        for token in ("E2E-MRN-5511", "CANARY", "E2E ST", TOKEN_A, STAFF):
            assert token not in log, f"{token!r} leaked into the log"
