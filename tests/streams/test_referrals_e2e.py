"""Referrals end to end on a real broker (embedded, or Apache Kafka with
HUB_TEST_KAFKA=apache): ADT with a housing Z code -> care.referrals and the agency's
topic; the agency's rejection -> the next agency; accepted, completed -> the statuses and
times on care.referrals. Then a new stay, an A08 moving the patient out of the first
agency's area (cancelled there, referred to the next one), and an A40 merging the
patient into another MRN: the open referral moves to the surviving key with its id, and
an agency update still addressed to the old key lands."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.kafka import DurableProducer, read_topic
from hub.mllp_client import MllpClient
from hub.settings import Settings
from schemas.referrals import ReferralUpdate

from .test_worker_e2e import _msa, hub_process

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DIRECTORY = """
agencies:
  - id: first-housing
    name: First Housing
    services: [housing]
    service_area: {zip: ["01103"]}
    languages: [en, es]
  - id: second-housing
    name: Second Housing
    services: [housing]
    service_area: {counties: [Hampden]}
"""
ADMIT = (
    b"MSH|^~\\&|EPICADT|GENHOSP|CAREHUB|HUB|20261102090000-0500||ADT^A01^ADT_A01|RF1|P|2.5.1\r"
    b"EVN|A01|20261102090000-0500\r"
    b"PID|1||MRN100777^^^GENHOSP^MR||RIVERA^ALEX^Q||19600101|F|||12 MAIN ST^^SPRINGFIELD^MA^"
    b"01103^^^^HAMPDEN||^PRN^PH^^1^413^5550142||spa\r"
    b"PV1|1|I|4WEST^101^A^GENHOSP|E||||||MED||||7|||||V900777|||||||||||||||||||||||||"
    b"20261102090000-0500\r"
    b"DG1|1||Z59.01^Sheltered homelessness^I10||20261102090000-0500|A\r"
)
KEY = "GENHOSP|MRN100777"
SURVIVOR = "GENHOSP|MRN200777"
READMIT = (ADMIT.replace(b"|RF1|", b"|RF2|").replace(b"V900777", b"V900778")
           .replace(b"20261102", b"20261104"))
MOVED = (
    b"MSH|^~\\&|EPICADT|GENHOSP|CAREHUB|HUB|20261104100000-0500||ADT^A08^ADT_A01|RF3|P|2.5.1\r"
    b"EVN|A08|20261104100000-0500\r"
    b"PID|1||MRN100777^^^GENHOSP^MR||RIVERA^ALEX^Q||19600101|F|||99 OAK ST^^SPRINGFIELD^MA^"
    b"01199^^^^HAMPDEN||^PRN^PH^^1^413^5550142||spa\r"
    b"PV1|1|I|4WEST^101^A^GENHOSP|E||||||MED||||7|||||V900778|||||||||||||||||||||||||"
    b"20261104090000-0500\r"
    b"DG1|1||Z59.01^Sheltered homelessness^I10||20261104090000-0500|A\r"
)
MERGE = (
    b"MSH|^~\\&|EPICADT|GENHOSP|CAREHUB|HUB|20261104110000-0500||ADT^A40^ADT_A39|RF4|P|2.5.1\r"
    b"EVN|A40|20261104110000-0500\r"
    b"PID|1||MRN200777^^^GENHOSP^MR||RIVERA^ALEX^Q||19600101|F|||99 OAK ST^^SPRINGFIELD^MA^"
    b"01199^^^^HAMPDEN||^PRN^PH^^1^413^5550142||spa\r"
    b"MRG|MRN100777^^^GENHOSP^MR\r"
)


async def _records(settings: Settings, topic: str, want: Any, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    values: list = []
    while time.monotonic() < deadline:
        recs = await read_topic(settings, settings.topic(topic), timeout=5)
        values = [(r.key.decode(), orjson.loads(r.value)) for r in recs]
        if want(values):
            return values
        await asyncio.sleep(0.5)
    raise AssertionError(f"{topic}: condition not met; have {[v for _, v in values]!r}"[:3000])


async def _update(settings: Settings, task_id: str, agency: str, status: str,
                  minutes: int) -> None:
    u = ReferralUpdate(id=f"e2e-{task_id}-{status}", referral_task_id=task_id,
                       agency_id=agency, patient_key=KEY, status=status,  # type: ignore[arg-type]
                       reason="no_capacity" if status == "rejected" else None,
                       at=datetime(2026, 11, 2, 14, 0, tzinfo=UTC) + timedelta(minutes=minutes))
    async with DurableProducer(settings) as producer:
        await producer.send("referrals.updates", u.model_dump_json().encode(),
                            key=KEY.encode(),
                            timeout=settings.ack_timeout_s)


def _status(values: list, agency: str, status: str) -> list[dict[str, Any]]:
    return [v for _, v in values if v["agency_id"] == agency and v["status"] == status]


async def test_referral_round_trip(kafka_bootstrap: str, kafka_idempotent: bool,
                                   tmp_path: Path) -> None:
    directory = tmp_path / "agencies.yaml"
    directory.write_text(DIRECTORY)
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent,
                     extra_env={"HUB_AGENCIES_FILE": str(directory)}) as settings:
        async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
            assert _msa(await client.send(ADMIT))[1] == "AA"
        refs = await _records(settings, "care.referrals",
                              lambda v: _status(v, "first-housing", "requested"))
        first = _status(refs, "first-housing", "requested")[0]
        assert refs[0][0] == KEY
        assert (first["need"], first["attempt"], first["need_codes"][0]) == (
            "housing", 1, "Z59.01")
        copies = await _records(settings, "referrals.first-housing", lambda v: v)
        key, copy = copies[0]
        assert key == first["id"] == copy["id"]
        assert "MRN100777" not in orjson.dumps(copy).decode()
        assert copy["patient"]["address"]["postal_code"] == "01103"

        await _update(settings, first["id"], "first-housing", "rejected", 0)
        refs = await _records(settings, "care.referrals",
                              lambda v: _status(v, "second-housing", "requested"))
        second = _status(refs, "second-housing", "requested")[0]
        assert (second["attempt"], second["referral_id"]) == (2, first["referral_id"])
        assert _status(refs, "first-housing", "rejected")[0]["status_reason"] == "no_capacity"
        await _records(settings, "referrals.second-housing", lambda v: v)

        await _update(settings, second["id"], "second-housing", "accepted", 30)
        await _update(settings, second["id"], "second-housing", "completed", 90)
        refs = await _records(settings, "care.referrals",
                              lambda v: _status(v, "second-housing", "completed"))
        accepted = _status(refs, "second-housing", "accepted")[0]
        done = _status(refs, "second-housing", "completed")[0]
        assert accepted["time_to_accept_s"] == 1800.0
        assert done["completed_at"].startswith("2026-11-02T15:30")
        assert done["time_to_complete_s"] is not None
        assert done["version"] > accepted["version"]

        # A new stay, then the patient moves out of first-housing's ZIPs (still in
        # Hampden county): cancelled there, referred to second-housing.
        async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
            assert _msa(await client.send(READMIT))[1] == "AA"
            refs = await _records(settings, "care.referrals", lambda v: [
                r for r in _status(v, "first-housing", "requested")
                if r["referral_id"] != first["referral_id"]])
            again = next(r for r in _status(refs, "first-housing", "requested")
                         if r["referral_id"] != first["referral_id"])
            assert _msa(await client.send(MOVED))[1] == "AA"
        refs = await _records(settings, "care.referrals", lambda v: [
            r for r in _status(v, "second-housing", "requested")
            if r["referral_id"] == again["referral_id"]])
        (cancelled,) = [r for r in _status(refs, "first-housing", "cancelled")
                        if r["id"] == again["id"]]
        assert cancelled["status_reason"] == "patient_moved_out_of_area"
        # The first record of it (a case manager assigned to the stay meanwhile sends
        # another version with the new contact).
        moved = min((r for r in _status(refs, "second-housing", "requested")
                     if r["referral_id"] == again["referral_id"]), key=lambda r: r["version"])
        assert moved["attempt"] == 2
        assert moved["agency_copy"]["patient"]["address"]["postal_code"] == "01199"

        # Merged into another MRN: the open referral moves to the surviving key (same id)
        # and an update the agency sends while the view still says the old key lands.
        async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
            assert _msa(await client.send(MERGE))[1] == "AA"
        refs = await _records(settings, "care.referrals", lambda v: [
            r for k, r in v if k == SURVIVOR and r["id"] == moved["id"]])
        rekeyed = min((r for k, r in refs if k == SURVIVOR and r["id"] == moved["id"]),
                      key=lambda r: r["version"])
        assert (rekeyed["patient_key"], rekeyed["status"], rekeyed["rule"]) == (
            SURVIVOR, "requested", "referral.merge")
        await _update(settings, moved["id"], "second-housing", "accepted", 200)
        refs = await _records(settings, "care.referrals", lambda v: [
            r for k, r in v if k == SURVIVOR and r["id"] == moved["id"]
            and r["status"] == "accepted"])
        # Nothing referred twice: one record id per agency Task, one housing referral
        # per stay.
        stays = {r["referral_id"] for _, r in refs}
        assert len(stays) == 2
