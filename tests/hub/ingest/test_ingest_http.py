"""HTTP ingest over a real socket on a real broker: HL7 v2 and FHIR endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from hub.settings import Settings

from .ingest_helpers import CANARIES, Stack, adt, msa, running_stack

pytestmark = pytest.mark.kafka

HL7 = {"Content-Type": "x-application/hl7-v2+er7"}
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
async def stack(kafka_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    async with running_stack(kafka_settings(http_max_body_bytes=64 * 1024), http=True) as st:
        yield st


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    assert stack.http is not None
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{stack.http.port}"


def _corpus(corpus_dir: Path, rel: str) -> bytes:
    return (corpus_dir / "fhir" / rel).read_bytes()


async def test_health(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/health/live") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_hl7v2_post_aa(stack: Stack, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    raw = adt("HTTP1")
    async with session.post(f"{base}/hl7v2", data=raw, headers=HL7) as r:
        assert r.status == 200
        assert r.content_type == "x-application/hl7-v2+er7"
        ack = await r.read()
    assert msa(ack) == ("AA", "HTTP1")
    recs = await stack.read("ehr.hl7v2", min_records=1)
    assert recs[0].value == raw and recs[0].headers["hub-transport"] == b"http"
    # text/plain works too, and a duplicate gets the same ACK.
    async with session.post(f"{base}/hl7v2", data=raw,
                            headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200 and await r.read() == ack


async def test_hl7v2_post_errors(stack: Stack, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.post(f"{base}/hl7v2", data=adt("HTTP2", mrn=""), headers=HL7) as r:
        assert r.status == 400
        assert msa(await r.read()) == ("AE", "HTTP2")
    async with session.post(f"{base}/hl7v2", data=b"not hl7", headers=HL7) as r:
        assert r.status == 400
        assert msa(await r.read()) == ("AR", "")
    async with session.post(f"{base}/hl7v2", data=adt("X"),
                            headers={"Content-Type": "application/pdf"}) as r:
        assert r.status == 415
    async with session.post(f"{base}/hl7v2", data=b"MSH" + b"x" * 70_000, headers=HL7) as r:
        assert r.status == 413
    dlq = await stack.read("hub.dlq", min_records=2)
    assert sorted(json.loads(d.value or b"")["error_code"] for d in dlq) == [
        "missing_msh", "missing_patient_identifier"]


async def test_fhir_encounter_accepted(stack: Stack, http: tuple[aiohttp.ClientSession, str],
                                       corpus_dir: Path) -> None:
    session, base = http
    body = _corpus(corpus_dir, "r4-core-examples/Encounter-f201.json")
    async with session.post(f"{base}/fhir/Encounter", data=body, headers=FHIR) as r:
        assert r.status == 202
        ids = (await r.json())["event_ids"]
    assert len(ids) == 1
    recs = await stack.read("ehr.fhir", min_records=1)
    assert recs[0].value == body and recs[0].key == b"urn:fhir/Patient|f201"


async def test_fhir_bundle_on_generic_endpoint(
    stack: Stack, http: tuple[aiohttp.ClientSession, str], corpus_dir: Path
) -> None:
    session, base = http
    body = _corpus(corpus_dir, "davinci-alerts/admit-notification-message-bundle-01.json")
    async with session.post(f"{base}/fhir", data=body, headers=FHIR) as r:
        assert r.status == 202 and len((await r.json())["event_ids"]) == 1
    # The Encounter endpoint takes Encounters only.
    async with session.post(f"{base}/fhir/Encounter", data=body, headers=FHIR) as r:
        assert r.status == 422
        outcome = await r.json()
    assert outcome["resourceType"] == "OperationOutcome"


async def test_fhir_unsupported_resource_422_and_dead_letter(
    stack: Stack, http: tuple[aiohttp.ClientSession, str], corpus_dir: Path
) -> None:
    session, base = http
    body = _corpus(corpus_dir, "us-core/condition-encounter-diagnosis-example1.json")
    async with session.post(f"{base}/fhir", data=body, headers=FHIR) as r:
        assert r.status == 422
        assert r.content_type == "application/fhir+json"
        outcome = await r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    async with session.post(f"{base}/fhir", data=b"{not json", headers=FHIR) as r:
        assert r.status == 400
        assert (await r.json())["resourceType"] == "OperationOutcome"
    async with session.post(f"{base}/fhir", data=b"{}",
                            headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415
        assert (await r.json())["resourceType"] == "OperationOutcome"
    async with session.post(f"{base}/fhir", data=b"{" + b" " * 70_000 + b"}",
                            headers=FHIR) as r:
        assert r.status == 413
    dlq = await stack.read("hub.dlq", min_records=2)
    codes = sorted(json.loads(d.value or b"")["error_code"] for d in dlq)
    assert codes == ["invalid_json", "unsupported_resource"]
    payloads = await stack.read("hub.dlq-payloads", min_records=2)
    assert body in [p.value for p in payloads]


async def test_fhir_handshake_is_not_an_error(
    stack: Stack, http: tuple[aiohttp.ClientSession, str], corpus_dir: Path
) -> None:
    session, base = http
    body = _corpus(corpus_dir, "fhir-candle-r4/Bundle-notification-handshake.json")
    async with session.post(f"{base}/fhir", data=body, headers=FHIR) as r:
        assert r.status == 200 and (await r.json()) == {"event_ids": []}


async def test_fhir_errors_carry_no_phi(stack: Stack,
                                        http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    patient = {"resourceType": "Patient", "name": [{"family": CANARIES[0]}],
               "identifier": [{"value": CANARIES[2]}], "birthDate": "not-a-date"}
    async with session.post(f"{base}/fhir", data=json.dumps(patient), headers=FHIR) as r:
        assert r.status in (400, 422)
        text = await r.text()
    dlq = await stack.read("hub.dlq", min_records=1)
    for blob in (text, (dlq[0].value or b"").decode()):
        for token in CANARIES:
            assert token not in blob
