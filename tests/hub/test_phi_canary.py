"""PHI canary (REFERENCE.md section 5): a synthetic patient with unique tokens, driven
through every success and failure path we can reach on a real `hub run` process, and
then searched for in everything ops can see: the rendered JSON log (the process's real
stderr, not structlog's capture_logs(), which bypasses the redacting processors), the
/metrics text, /dashboard/data.json, /health/ready, the hub.dlq records and every ACK
and HTTP answer.

Deliberately excluded: hub.dlq-payloads (the restricted topic whose job is to keep the
original bytes), the raw topics ehr.hl7v2/ehr.fhir and care.* outputs (PHI by design,
for the downstream systems). The test checks the canary really reached those, so a
path that silently dropped the patient cannot pass for a clean one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hub.kafka import DurableProducer, read_topic
from hub.mllp_client import MllpClient
from mappers.mllp import encode_frame
from schemas.canonical import patient_key
from streams.referrals.directory import token_sha256

from .hubproc import HubProcess, hub_process, wait_ready

STAFF_TOKEN = "canary-staff-token-" + "s" * 24
SAMPLES = Path(__file__).resolve().parents[2] / "hub" / "samples"

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FAMILY, GIVEN, MRN = "Zqxcanaryfam", "Zqxcanarygiv", "CANARY99173"
DOB_HL7, DOB_ISO = "19310203", "1931-02-03"
PHONE, STREET = "555-013-9471", "77 Canarystreet"
TOKENS = (FAMILY, GIVEN, MRN, DOB_HL7, DOB_ISO, PHONE, "5550139471", "013-9471",
          "Canarystreet")
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in TOKENS), re.IGNORECASE)


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return sorted({m.group(0) for m in _TOKEN_RE.finditer(text)})


def adt(control: str, *, pid3: str = f"{MRN}^^^GENHOSP^MR", msg: str = "ADT^A01^ADT_A01",
        trigger: str = "A01") -> bytes:
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|HUB|CM|20260301120000-0500||{msg}|{control}|P|2.5.1\r"
        f"EVN|{trigger}|20260301120000-0500\r"
        f"PID|1||{pid3}||{FAMILY}^{GIVEN}||{DOB_HL7}|F|||{STREET}^^Springfield^IL^62701||"
        f"{PHONE}\r"
        f"PV1|1|I|4W^401^A^GENHOSP||||1234^WELBY^MARCUS|||MED||||||||||V{control}\r"
    ).encode()


PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "cp1",
    "identifier": [{"type": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": "urn:oid:2.16.840.1.113883.19.5", "value": MRN}],
    "name": [{"family": FAMILY, "given": [GIVEN]}], "gender": "female",
    "birthDate": DOB_ISO, "telecom": [{"system": "phone", "value": PHONE}],
    "address": [{"line": [STREET], "city": "Springfield", "state": "IL",
                 "postalCode": "62701"}],
}
BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle", "id": "canary-bundle-1", "type": "transaction", "entry": [
        {"fullUrl": "http://ehr.example/fhir/Encounter/ce1", "resource": {
            "resourceType": "Encounter", "id": "ce1", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP"},
            "subject": {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"},
            "period": {"start": "2026-03-10T08:00:00-04:00"}}},
        {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222", "resource": PATIENT},
    ]}
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}
FHIR = {"Content-Type": "application/fhir+json"}


async def _wait_for(hub: HubProcess, topic: str, n: int, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = await read_topic(hub.settings, hub.settings.topic(topic), timeout=5,
                                   min_records=n)
        if len(records) >= n:
            return records
        await asyncio.sleep(0.5)
    return records


async def _drive(hub: HubProcess, answers: list[bytes]) -> None:
    """Every path: MLLP AA/AE/AR/duplicate/garbage, HTTP hl7v2, FHIR 202/422/400, a
    direct producer's bad record (normalize dead letter) and resend (dedup)."""
    async with MllpClient("127.0.0.1", hub.settings.mllp_port, timeout=30) as client:
        answers.append(await client.send(adt("CAN1")))                       # AA
        answers.append(await client.send(adt("CAN2", pid3="")))              # AE
        answers.append(await client.send(adt("CAN3", msg="ORU^R01^ORU_R01")))  # AR
        answers.append(await client.send(adt("CAN1")))                       # duplicate
        answers.append(await client.send(adt("CAN4", trigger="A03",
                                              msg="ADT^A03^ADT_A03")))       # AA, discharge
    # Garbage between frames that carries the canary: dead-lettered, no ACK.
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.settings.mllp_port)
    writer.write(f"{FAMILY} {MRN} {STREET}\r".encode() + encode_frame(adt("CAN5")))
    await writer.drain()
    answers.append(await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 30))
    writer.close()

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{hub.http}/hl7v2", data=adt("CAN6"), headers=HL7) as r:
            assert r.status == 200
            answers.append(await r.read())
        async with http.post(f"{hub.http}/hl7v2", data=adt("CAN7", pid3=""), headers=HL7) as r:
            assert r.status == 400
            answers.append(await r.read())
        async with http.post(f"{hub.http}/fhir", data=json.dumps(BUNDLE), headers=FHIR) as r:
            assert r.status == 202, await r.text()
            answers.append(await r.read())
        bad = {**PATIENT, "resourceType": "Observation"}
        async with http.post(f"{hub.http}/fhir", data=json.dumps(bad), headers=FHIR) as r:
            assert r.status == 422, await r.text()
            answers.append(await r.read())
        async with http.post(f"{hub.http}/fhir/Encounter", data=json.dumps(PATIENT),
                             headers=FHIR) as r:
            assert r.status == 422
            answers.append(await r.read())
        async with http.post(f"{hub.http}/fhir", data=f'{{"name": "{FAMILY}", "dob": "{DOB_ISO}"'
                             .encode(), headers=FHIR) as r:
            assert r.status == 400
            answers.append(await r.read())

    producer = DurableProducer(hub.settings)
    await producer.start()
    try:
        topic = hub.settings.topic("ehr.hl7v2")
        good = adt("CAN8")
        for value in (good, good, adt("CAN9", pid3="")):  # resend -> dedup; bad -> DLQ
            await producer.send(topic, value, key=MRN.encode(), headers=None, timeout=30)
    finally:
        await producer.stop()


def referral_adt(control: str, trigger: str) -> bytes:
    """The canary with a housing need (Z59.0) at an address a housing agency serves."""
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|HUB|CM|20260302120000-0500||ADT^{trigger}^ADT_{trigger}|"
        f"{control}|P|2.5.1\r"
        f"EVN|{trigger}|20260302120000-0500\r"
        f"PID|1||{MRN}^^^GENHOSP^MR||{FAMILY}^{GIVEN}||{DOB_HL7}|F|||"
        f"{STREET}^^Springfield^MA^01103^^^^Hampden||{PHONE}\r"
        f"PV1|1|I|4W^401^A^GENHOSP||||1234^WELBY^MARCUS|||MED||||||||||VR{MRN[-4:]}|||||||||||"
        f"||||||||01|||||||20260301080000-0500|20260302110000-0500\r"
        f"DG1|1||Z59.00^Homelessness, unspecified^I10||20260301|F\r"
    ).encode()


async def _drive_referrals(hub: HubProcess, answers: list[bytes],
                           by_design: list[bytes]) -> None:
    """The referral paths: need detected -> referral; the agency reads it (its copy is
    PHI by design: ``by_design``), accepts it with a free-text-looking body, is refused
    with a wrong token and a bad body; consent with a bad and a good body."""
    from hub.agencies import load_directory_file, push_directory
    from hub.demo_referrals import with_tokens

    directory = load_directory_file(SAMPLES / "agencies.yaml")
    live, tokens = with_tokens(directory, ["springfield-housing"])
    await push_directory(hub.settings, live)
    async with MllpClient("127.0.0.1", hub.settings.mllp_port, timeout=30) as client:
        answers.append(await client.send(referral_adt("CANR1", "A01")))
        answers.append(await client.send(referral_adt("CANR2", "A03")))
    agency = {"Authorization": f"Bearer {tokens['springfield-housing']}"}
    wrong = {"Authorization": "Bearer " + "x" * 43}
    async with aiohttp.ClientSession(base_url=hub.http) as http:
        deadline = time.monotonic() + 90
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not rows:
            async with http.get("/agency/referrals", headers=agency) as r:
                if r.status == 200:
                    body = await r.read()
                    rows = orjson.loads(body)["referrals"]
                    if rows:
                        by_design.append(body)
            await asyncio.sleep(0.5)
        assert rows, "the canary's housing referral never reached the agency API"
        ref_id = rows[0]["id"]
        async with http.post(f"/agency/referrals/{ref_id}/status", headers=agency,
                             json={"status": "accepted", "note": f"{FAMILY} {PHONE}"}) as r:
            answers.append(await r.read())
        async with http.post(f"/agency/referrals/{ref_id}/status", headers=agency,
                             json={"status": "accepted"}) as r:
            assert r.status == 202, await r.text()
            answers.append(await r.read())
        async with http.post(f"/agency/referrals/{ref_id}/status", headers=agency,
                             json={"status": "rejected", "reason": f"{FAMILY} moved to "
                                   f"{STREET}"}) as r:
            answers.append(await r.read())
        async with http.get("/agency/referrals", headers=wrong) as r:
            assert r.status == 401
            answers.append(await r.read())
        staff = {"Authorization": f"Bearer {STAFF_TOKEN}"}
        async with http.get("/care/referrals", headers=staff) as r:
            assert r.status == 200, await r.text()
            answers.append(await r.read())  # the staff view carries ids and codes only
        async with http.post("/consent", headers=staff,
                             json={"patient": {"assigning_authority": "GENHOSP", "mrn": MRN},
                                   "referrals": "maybe", "source": f"{FAMILY}"}) as r:
            assert r.status == 400, await r.text()
            answers.append(await r.read())
        async with http.post("/consent", headers=staff,
                             json={"patient": {"assigning_authority": "GENHOSP", "mrn": MRN},
                                   "referrals": "opt-out", "source": "front-desk"}) as r:
            assert r.status in (200, 201, 202), await r.text()
            answers.append(await r.read())


async def _drive_tasks(hub: HubProcess, answers: list[bytes]) -> None:
    """The staff task API after the canary's discharge (CANR2, disposition home -> TCM
    tasks): the open-work list, a completion for one of the canary's tasks, and a status
    with a reason carrying the canary's name (422, not echoed)."""
    key = patient_key("GENHOSP", MRN)
    deadline = time.monotonic() + 90
    ids: set[str] = set()
    while time.monotonic() < deadline and not ids:
        # care.tasks is PHI by design; only the canary's task ids are taken from it.
        for rec in await read_topic(hub.settings, hub.settings.topic("care.tasks"),
                                    timeout=5, min_records=1):
            task = orjson.loads(rec.value or b"{}")
            if task.get("type") == "task" and task.get("patient_key") == key:
                ids.add(task["task_id"])
        if not ids:
            await asyncio.sleep(0.5)
    assert ids, "the canary's discharge made no follow-up tasks"
    staff = {"Authorization": f"Bearer {STAFF_TOKEN}"}
    async with aiohttp.ClientSession(base_url=hub.http) as http:
        deadline = time.monotonic() + 60
        mine: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not mine:
            async with http.get("/care/tasks?status=open", headers=staff) as r:
                if r.status == 200:
                    body = await r.read()
                    mine = [t for t in orjson.loads(body)["tasks"] if t["task_id"] in ids]
                    answers.append(body)  # ids, kinds, owners, teams, due times only
            if not mine:
                await asyncio.sleep(0.5)
        assert mine, "the canary's open tasks never reached the staff task list"
        task_id = mine[0]["task_id"]
        async with http.post(f"/care/tasks/{task_id}/status", headers=staff,
                             json={"status": "completed",
                                   "reason": f"{FAMILY} at {STREET}"}) as r:
            assert r.status == 422, await r.text()
            body = await r.read()
            assert FAMILY.encode() not in body
            answers.append(body)
        async with http.post(f"/care/tasks/{task_id}/status", headers=staff,
                             json={"status": "completed", "reason": "reached_by_phone"}) as r:
            assert r.status == 202, await r.text()
            answers.append(await r.read())
        async with http.get("/care/tasks", headers=staff) as r:
            assert r.status == 200, await r.text()
            answers.append(await r.read())


async def test_phi_canary_never_reaches_ops_outputs(kafka_bootstrap: str,
                                                    kafka_idempotent: bool,
                                                    tmp_path: Path) -> None:
    env = {"HUB_LOG_LEVEL": "DEBUG", "HUB_STAFF_API_TOKEN_SHA256": token_sha256(STAFF_TOKEN),
           "HUB_FEED_SILENCE": '{"GENHOSP": {"default_s": 900}}'}
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, env=env,
                     tmp=tmp_path) as hub:
        await wait_ready(hub, hub.http)
        answers: list[bytes] = []
        by_design: list[bytes] = []
        await _drive(hub, answers)
        await _drive_referrals(hub, answers, by_design)
        await _drive_tasks(hub, answers)

        # Positive controls: the canary did flow (else a clean result would mean nothing).
        events = await _wait_for(hub, "care.events", 5)
        assert any(MRN.encode() in (r.value or b"") for r in events)
        # 7 at ingest (AE, AR, garbage, HTTP AE, 2 x FHIR 422, FHIR 400) + 1 normalize.
        letters = await _wait_for(hub, "hub.dlq", 8)
        stages = {orjson.loads(r.value or b"{}")["stage"] for r in letters}
        assert {"ingest", "normalize"} <= stages, stages
        referrals = await _wait_for(hub, "care.referrals", 1)
        assert any(b"springfield-housing" in (r.value or b"") for r in referrals)
        assert by_design and FAMILY.encode() in by_design[0]
        payloads = await read_topic(hub.settings, hub.settings.topic("hub.dlq-payloads"),
                                    timeout=10, min_records=len(letters))
        assert any(FAMILY.encode() in (r.value or b"") for r in payloads)

        async with aiohttp.ClientSession() as http:
            # Wait until normalize has counted the duplicate (the last record written).
            deadline = time.monotonic() + 60
            metrics = ""
            while time.monotonic() < deadline:
                async with http.get(f"{hub.http}/metrics") as r:
                    metrics = await r.text()
                if 'hub_duplicates_total{stage="normalize"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.5)
            assert 'hub_duplicates_total{stage="normalize"} 1.0' in metrics
            async with http.get(f"{hub.http}/dashboard/data.json") as r:
                dashboard = await r.text()
            async with http.get(f"{hub.http}/health/ready") as r:
                ready = await r.text()

    log = hub.log_text()
    # stdout and stderr together, as a log collector reads them: JSON lines and nothing
    # else (no banner, no terminal control codes before a line).
    for line in log.splitlines():
        assert not line.strip() or isinstance(json.loads(line), dict), repr(line[:200])
    assert '"event": "ack_sent"' in log and '"event": "frame_rejected"' in log
    assert '"event": "record_dead_lettered"' in log and '"event": "duplicate_dropped"' in log
    assert '"event": "referral_update_accepted"' in log and '"event": "consent_recorded"' in log
    assert '"event": "task_update_accepted"' in log
    for name, text in [("log", log), ("metrics", metrics), ("dashboard", dashboard),
                       ("ready", ready)]:
        assert not leaks(text), f"PHI canary in the {name}: {leaks(text)}"
    for i, answer in enumerate(answers):
        assert not leaks(answer), f"PHI canary in answer {i}: {answer!r}"
    for rec in letters:
        assert not leaks(rec.value or b"") and not leaks(rec.key or b""), rec.value
        assert not any(leaks(v) for v in rec.headers.values())
