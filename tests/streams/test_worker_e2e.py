"""End to end on a real broker: the hub's processes, real sockets, real topics.

`hub run` is started as a subprocess (the way users run it), bound to the test broker
with a unique topic prefix and consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from hub.feed import FeedConfig, generate
from hub.kafka import read_topic
from hub.mllp_client import MllpClient
from hub.settings import Settings
from mappers.hl7v2 import split_messages

from ..hub.hubproc import hub_process as start_hub

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _msa(ack: bytes) -> list[str]:
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            return seg.decode().split("|")
    raise AssertionError("no MSA segment in the ACK")


@contextmanager
def hub_process(bootstrap: str, *, idempotent: bool, roles: str = "run",
                extra_env: dict[str, str] | None = None) -> Iterator[Settings]:
    """tests/hub/hubproc.py's hub, once its MLLP port listens; on the way out, the log of
    the whole run must hold no PHI from the feed."""
    with start_hub(bootstrap, idempotent=idempotent, role=roles, env=extra_env) as hub:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if hub.proc.poll() is not None:
                raise AssertionError(f"hub exited early:\n{hub.log_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", hub.settings.mllp_port), 0.5).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"MLLP never listened:\n{hub.log_text()[-3000:]}")
        try:
            yield hub.settings
        finally:
            hub.proc.send_signal(signal.SIGTERM)
            try:
                hub.proc.wait(30)
            except subprocess.TimeoutExpired:
                hub.proc.kill()
            log = hub.log_text()
            for token in ("MAIN ST", "WELBY", "MRN100"):
                assert token not in log, f"PHI token {token!r} leaked into the log"


async def _wait_for(settings: Settings, topic: str, n: int, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        records = await read_topic(settings, settings.topic(topic), timeout=5, min_records=n)
        if len(records) >= n:
            return records
        await asyncio.sleep(0.5)
    return records


async def _flow(settings: Settings) -> None:
    good = list(generate(FeedConfig(patients=3, bad_messages=False)))
    bad = (b"MSH|^~\\&|EPICADT|GENHOSP|HUB|HUB|20261102080000||ADT^A01|BADPID|P|2.5.1\r"
           b"EVN|A01|20261102080000\rPID|1||||NOBODY\rPV1|1|I\r")
    async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
        acks = [await client.send(m) for m in good]
        bad_ack = await client.send(bad)
        dup_ack = await client.send(good[0])
    for msg, ack in zip(good, acks, strict=True):
        msa = _msa(ack)
        control = msg.split(b"\r")[0].split(b"|")[9].decode()
        assert msa[1] == "AA" and msa[2] == control
    assert _msa(bad_ack)[1] == "AE" and b"ERR|" in bad_ack
    assert dup_ack == acks[0], "a duplicate control id gets the stored ACK"

    events = await _wait_for(settings, "care.events", len(good))
    assert len(events) == len(good)
    decoded = [orjson.loads(r.value) for r in events]
    assert {e["source"]["message_id"] for e in decoded} == {
        m.split(b"\r")[0].split(b"|")[9].decode() for m in good}
    for rec, ev in zip(events, decoded, strict=True):
        assert rec.key.decode() == ev["patient"]["key"]
    dlq = await _wait_for(settings, "hub.dlq", 1)
    letters = [orjson.loads(r.value) for r in dlq]
    assert [dl["error_code"] for dl in letters] == ["missing_patient_identifier"]
    payloads = await _wait_for(settings, "hub.dlq-payloads", 1)
    assert payloads[0].value == bad and payloads[0].key.decode() == letters[0]["id"]


async def test_mllp_to_care_events_on_the_test_broker(kafka_bootstrap: str,
                                                       kafka_idempotent: bool) -> None:
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent) as settings:
        await _flow(settings)


async def test_fhir_over_http_and_direct_kafka_producers(
        kafka_bootstrap: str, kafka_idempotent: bool, corpus_dir: Path) -> None:
    """FHIR over HTTP -> care.events; a producer writing to ehr.hl7v2 directly gets
    normalize's dedup (facility + control id) and dead letters with coordinates."""
    import aiohttp

    from hub.kafka import DurableProducer

    bundle = (corpus_dir / "fhir/davinci-alerts/admit-notification-message-bundle-01.json"
              ).read_bytes()
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent) as settings:
        url = f"http://127.0.0.1:{settings.http_port}/fhir"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=bundle,
                                 headers={"Content-Type": "application/fhir+json"}) as resp:
                assert resp.status == 202, await resp.text()
                ids = (await resp.json())["event_ids"]
            async with http.post(url, data=b'{"resourceType": "Observation", "id": "x"}',
                                 headers={"Content-Type": "application/fhir+json"}) as resp:
                assert resp.status in (400, 422)
                outcome = await resp.json()
                assert outcome["resourceType"] == "OperationOutcome"

        good = next(iter(generate(FeedConfig(patients=1, seed=99, bad_messages=False))))
        bad = b"MSH|^~\\&|X|GENHOSP|H|H|20261102||ADT^A01|K2|P|2.5.1\rPID|1\r"
        producer = DurableProducer(settings, idempotent=kafka_idempotent)
        await producer.start()
        try:
            topic = settings.topic("ehr.hl7v2")
            for value in (good, good, bad):  # the second is a sender's resend
                await producer.send(topic, value, key=b"k", headers=None, timeout=30)
        finally:
            await producer.stop()

        events = await _wait_for(settings, "care.events", 2)
        decoded = [orjson.loads(r.value) for r in events]
        assert sorted(e["event_id"] for e in decoded if e["source"]["format"] == "fhir") == \
            sorted(ids)
        hl7 = [e for e in decoded if e["source"]["format"] == "hl7v2"]
        assert len(hl7) == 1, "the resent control id was dropped by normalize's dedup"
        letters = [orjson.loads(r.value) for r in await _wait_for(settings, "hub.dlq", 2)]
        normalize_letters = [dl for dl in letters if dl["stage"] == "normalize"]
        assert len(normalize_letters) == 1
        src = normalize_letters[0]["source"]
        assert src["topic"] == settings.topic("ehr.hl7v2") and src["offset"] == 2


async def test_same_flow_on_the_embedded_broker(embedded_bootstrap: str) -> None:
    with hub_process(embedded_bootstrap, idempotent=False) as settings:
        await _flow(settings)


JOURNEYS = REPO / "tests" / "streams" / "care" / "journeys"
CARE_TOPICS = ("care.flags", "care.assignments", "care.tasks", "care.notifications")


def _offline_ids(files: list[str]
                 ) -> tuple[dict[str, set[str]], dict[str, tuple[str, str | None]]]:
    from hub.commands.decide_cmd import load_roster, load_rules
    from hub.commands.map_cmd import map_files
    from streams.care.engine import OUTPUT_TOPICS, CareContext
    from streams.care.offline import OfflineRun

    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=load_roster(JOURNEYS / "roster.yaml"))
    run = OfflineRun(ctx)
    for ev in map_files([str(JOURNEYS / f) for f in files], default_tz="America/New_York",
                        received_at=datetime(1970, 1, 1, tzinfo=UTC)):
        run.event(ev, tick=False)  # type: ignore[arg-type]
    ids: dict[str, set[str]] = {t: set() for t in CARE_TOPICS}
    tasks: dict[str, tuple[str, str | None]] = {}
    for out in run.outputs:
        topic = OUTPUT_TOPICS[out.type]
        if topic in ids and out.rule != "task.owner":
            ids[topic].add(out.id)
        if out.type == "task":
            tasks[out.task_id] = (out.status, out.owner)
    return ids, tasks


async def _care_journeys(settings: Settings) -> None:
    files = ["j1_hf_admission.hl7", "j1_readmission.hl7", "j2_cancel_discharge.hl7",
             "j3_merge.hl7", "j4_off_shift.hl7"]
    messages = [m for f in files for m in split_messages((JOURNEYS / f).read_bytes())]
    # All at once, no pause after j3's A40: the surviving key's next admission races the
    # merge's two hops (handover, absorb) and must wait for the history, not miss it
    # (streams.care.state.MergeWait). The expected ids below have the readmission flag
    # and the continuity assignment that only the merged history gives.
    async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
        for m in messages:
            assert _msa(await client.send(m))[1] == "AA"
    expected, expected_tasks = _offline_ids(files)
    for topic, ids in expected.items():
        records = await _wait_for(settings, topic, len(ids), timeout=90)
        values = [orjson.loads(r.value or b"{}") for r in records]
        # Tasks opened before the case manager's assignment came back are re-published
        # with the manager as owner ("task.owner"): how often depends on timing, so
        # those are compared by the tasks' final owners below, not by count.
        got = {v["id"] for v in values if v["rule"] != "task.owner"}
        assert got == ids, (f"{topic}: missing {sorted(ids - got)[:3]}, "
                            f"extra {sorted(got - ids)[:3]}")
        if topic == "care.tasks":
            # Read partition by partition; a merge moves tasks to another key's partition,
            # so the last word on a task is the latest by decision time.
            final = {v["task_id"]: (v["status"], v.get("owner"))
                     for v in sorted(values, key=lambda v: v["decided_at"])}
            # A task closed before the assignment came back keeps the team queue as owner.
            assert {k: v[0] for k, v in final.items()} == {
                k: v[0] for k, v in expected_tasks.items()}
            assert {k: v for k, v in final.items() if v[0] == "requested"} == {
                k: v for k, v in expected_tasks.items() if v[0] == "requested"}
    # Every output carries its FHIR rendering; keys are patient keys.
    flags = await read_topic(settings, settings.topic("care.flags"), timeout=5)
    assert all(orjson.loads(r.value or b"{}")["fhir"]["resourceType"] == "RiskAssessment"
               for r in flags)
    dlq = await read_topic(settings, settings.topic("hub.dlq"), timeout=3)
    assert [orjson.loads(r.value or b"{}").get("stage") for r in dlq] == []


def test_care_journeys_on_the_test_broker(kafka_bootstrap: str, kafka_idempotent: bool) -> None:
    """Scripted journeys over MLLP: the streamed flags, assignments, tasks and notifications
    are exactly the ones ``hub decide`` computes offline, ids included."""
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent,
                     extra_env=_CARE_ENV) as settings:
        asyncio.run(_care_journeys(settings))


def test_care_state_survives_a_worker_restart(kafka_bootstrap: str, kafka_idempotent: bool,
                                             tmp_path: Path) -> None:
    """The episodes and caseloads tables recover from their changelogs: a readmission
    sent to a restarted hub is decided with the history the first hub stored (the
    readmission flag, the same case manager), exactly as offline."""
    tag = f"r{int(time.time() * 1000) % 10**8}."
    env = {**_CARE_ENV, "HUB_TOPIC_PREFIX": tag, "HUB_APP_ID": f"hub-{tag}",
           "HUB_STATE_DIR": str(tmp_path / "state")}
    first, second = "j1_hf_admission.hl7", "j1_readmission.hl7"
    expected_first, _ = _offline_ids([str(JOURNEYS / first)])
    expected_all, _ = _offline_ids([str(JOURNEYS / first), str(JOURNEYS / second)])

    async def send(settings: Settings, name: str) -> None:
        async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
            for m in split_messages((JOURNEYS / name).read_bytes()):
                assert _msa(await client.send(m))[1] == "AA"

    async def outputs(settings: Settings, expected: dict[str, set[str]]) -> None:
        for topic, ids in expected.items():
            records = await _wait_for(settings, topic, len(ids), timeout=90)
            got = {orjson.loads(r.value or b"{}")["id"] for r in records
                   if orjson.loads(r.value or b"{}")["rule"] != "task.owner"}
            assert got == ids, (f"{topic}: missing {sorted(ids - got)[:3]}, "
                                f"extra {sorted(got - ids)[:3]}")

    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, extra_env=env) as settings:
        asyncio.run(send(settings, first))
        asyncio.run(outputs(settings, expected_first))
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent, extra_env=env) as settings:
        asyncio.run(send(settings, second))
        asyncio.run(outputs(settings, expected_all))


_CARE_ENV = {"HUB_ROSTER_FILE": str(JOURNEYS / "roster.yaml"),
             "HUB_DEFAULT_TIMEZONE": "America/New_York", "HUB_CARE_TICK_INTERVAL_S": "3600"}


def _cap_admissions(n: int) -> list[bytes]:
    """``n`` admissions of different patients to the medsurg team (j1's Monday admission,
    moderate risk: 2 points each against caps of 6), as HL7 messages."""
    template = split_messages((JOURNEYS / "j1_hf_admission.hl7").read_bytes())[6]
    assert b"|ADT^A01^" in template
    return [template.replace(b"|J1-07|", f"|CAP-{i}|".encode())
            .replace(b"|J1001^^^", f"|CAP{i}^^^".encode())
            .replace(b"|V1|", f"|CAPV{i}|".encode()) for i in range(n)]


async def _cap_journey(settings: Settings, path: Path) -> None:
    admissions = _cap_admissions(7)
    path.write_bytes(b"\r\n".join(admissions) + b"\r\n")
    async with MllpClient("127.0.0.1", settings.mllp_port, timeout=30) as client:
        for sent, m in enumerate(admissions, 1):
            assert _msa(await client.send(m))[1] == "AA"
            # One at a time: which patient finds everyone at cap depends on the order the
            # team's partition reads them, as it would offline.
            got = await _wait_for(settings, "care.assignments", sent, timeout=60)
            assert len(got) >= sent, f"no assignment for admission {sent}"
    expected, _ = _offline_ids([str(path)])
    expected["care.escalations"] = _offline_escalations([str(path)])
    for topic, ids in expected.items():
        records = await _wait_for(settings, topic, len(ids), timeout=60)
        got = {orjson.loads(r.value or b"{}")["id"] for r in records}
        assert got == ids, (f"{topic}: missing {sorted(ids - got)[:3]}, "
                            f"extra {sorted(got - ids)[:3]}")
    values = [orjson.loads(r.value or b"{}") for r in
              await read_topic(settings, settings.topic("care.assignments"), timeout=5)]
    by_patient = {v["patient_key"]: (v["status"], v["reason"], v.get("manager_id"))
                  for v in values}
    assert sorted(by_patient.values(), key=str) == sorted(
        [("assigned", "least_loaded", "cm-ana")] * 3 +
        [("assigned", "least_loaded", "cm-ben")] * 3 +
        [("unassigned", "all_at_cap", None)], key=str)
    escalations = [orjson.loads(r.value or b"{}") for r in
                   await read_topic(settings, settings.topic("care.escalations"), timeout=5)]
    assert [(e["reason"], e["supervisor"]) for e in escalations] == [("all_at_cap", "sup-lee")]


def _offline_escalations(files: list[str]) -> set[str]:
    from hub.commands.decide_cmd import load_roster, load_rules
    from hub.commands.map_cmd import map_files
    from streams.care.engine import CareContext
    from streams.care.offline import OfflineRun

    run = OfflineRun(CareContext(config=load_rules(None, default_tz="America/New_York"),
                                 roster=load_roster(JOURNEYS / "roster.yaml")))
    for ev in map_files(files, default_tz="America/New_York",
                        received_at=datetime(1970, 1, 1, tzinfo=UTC)):
        run.event(ev, tick=False)  # type: ignore[arg-type]
    return {o.id for o in run.outputs if o.type == "escalation"}


def test_caseload_cap_journey_on_the_test_broker(kafka_bootstrap: str, kafka_idempotent: bool,
                                                 tmp_path: Path) -> None:
    """Caseload cap reached -> the next admission is unassigned and escalated to the
    team's supervisor; streamed ids are the ones ``hub decide`` computes offline."""
    with hub_process(kafka_bootstrap, idempotent=kafka_idempotent,
                     extra_env=_CARE_ENV) as settings:
        asyncio.run(_cap_journey(settings, tmp_path / "cap.hl7"))
