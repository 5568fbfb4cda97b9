"""The agency API, staff view and consent endpoint over real HTTP (aiohttp test server),
with a recording producer instead of Kafka (the broker round trip is in
test_agency_api_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.agency_api import AgencyApi, ReferralView, add_agency_routes
from hub.settings import Settings
from schemas.referrals import (
    AgencyPatient,
    AgencyReferral,
    ConsentRecord,
    Contact,
    ReferralOutput,
    ReferralUpdate,
)
from streams.referrals.directory import parse_directory, token_sha256

from .apiclient import RecordingProducer, call_json, is_outcome

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN_A, TOKEN_B, STAFF = "token-agency-a", "token-agency-b", "staff-token"
DIRECTORY = f"""
agencies:
  - id: agency-a
    name: Agency A
    services: [housing]
    api: {{token_sha256: "{token_sha256(TOKEN_A)}"}}
  - id: agency-b
    name: Agency B
    services: [housing, food]
    api: {{token_sha256: "{token_sha256(TOKEN_B)}"}}
  - id: agency-c
    name: Agency C (no API token)
    services: [food]
"""


def referral(task_id: str, agency: str, *, status: str = "requested", version: int = 1,
             manager: str | None = "m1", key: str = "HOSP|MRN777") -> ReferralOutput:
    copy = AgencyReferral(
        id=task_id, referral_id=f"ref-{task_id}", agency_id=agency, status=status,
        need="housing", patient=AgencyPatient(family_name="Canary", given_names=["Zed"],
                                              birth_date=date(1950, 1, 2)),
        referring=Contact(name="Case Manager", phone="+1-413-555-0199"),
        authored_at=T0, updated_at=T0, version=version)
    return ReferralOutput(
        id=task_id, referral_id=f"ref-{task_id}", cause_event_id="ev-1", rule="referral.new",
        patient_key=key, decided_at=T0, agency_id=agency, need="housing",
        need_codes=["Z59.01"], status=status, manager_id=manager, version=version,
        requested_at=T0, agency_copy=copy)


@dataclass
class Harness:
    client: TestClient
    view: ReferralView
    producer: RecordingProducer

    async def call(self, method: str, path: str, token: str | None = None,
                   body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        return await call_json(self.client, method, path, token, body, **kw)


@pytest.fixture
async def api() -> AsyncIterator[Harness]:
    view = ReferralView()
    view.set_directory(parse_directory(DIRECTORY))
    for r in (referral("task-a1", "agency-a"), referral("task-a2", "agency-a",
                                                        status="accepted", version=2),
              referral("task-b1", "agency-b", manager="m2")):
        view.apply(r)
    view.mark_ready()
    producer = RecordingProducer()
    settings = Settings(staff_api_token_sha256=token_sha256(STAFF), ack_timeout_s=1.0)
    app = web.Application()
    add_agency_routes(app, AgencyApi(settings, producer, view,
                                     clock=lambda: datetime(2026, 3, 2, 10, tzinfo=UTC)),
                      manage_view=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Harness(client, view, producer)
    await client.close()


async def test_an_agency_lists_only_its_own_referrals(api: Harness) -> None:
    status, body, _ = await api.call("GET", "/agency/referrals", TOKEN_A)
    assert status == 200
    assert [r["id"] for r in body["referrals"]] == ["task-a1", "task-a2"]
    assert {r["agency_id"] for r in body["referrals"]} == {"agency-a"}
    # The agency copy only: no patient key, MRN or diagnosis codes anywhere in the answer.
    text = orjson.dumps(body).decode()
    assert "MRN777" not in text and "Z59.01" not in text and "patient_key" not in text
    status, body, _ = await api.call("GET", "/agency/referrals?status=accepted", TOKEN_A)
    assert [r["id"] for r in body["referrals"]] == ["task-a2"]
    status, body, _ = await api.call("GET", "/agency/referrals", TOKEN_B)
    assert [r["id"] for r in body["referrals"]] == ["task-b1"]


async def test_an_unknown_status_filter_is_a_400(api: Harness) -> None:
    status, body, _ = await api.call("GET", "/agency/referrals?status=bogus", TOKEN_A)
    assert status == 400 and is_outcome(body)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/agency/referrals", None),
    ("GET", "/agency/referrals/task-a1", None),
    ("POST", "/agency/referrals/task-a1/status", {"status": "accepted"}),
])
async def test_no_token_or_an_unknown_token_is_401(api: Harness, method: str, path: str,
                                                   body: Any) -> None:
    for token, error in ((None, None), ("not-a-token", "invalid_token")):
        status, answer, headers = await api.call(method, path, token, body)
        assert status == 401 and is_outcome(answer)
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (error in headers["WWW-Authenticate"]) if error else True
    status, _, _ = await api.call(method, path, body=body,
                                  headers={"Authorization": f"Basic {TOKEN_A}"})
    assert status == 401
    assert api.producer.sent == []


async def test_agency_b_cannot_read_or_update_agency_a(api: Harness) -> None:
    status, body, _ = await api.call("GET", "/agency/referrals/task-a1", TOKEN_B)
    assert status == 404 and is_outcome(body)
    missing = await api.call("GET", "/agency/referrals/no-such-task", TOKEN_B)
    assert (missing[0], missing[1]) == (status, body), "another's = not existing"
    status, body, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_B,
                                     {"status": "accepted"})
    assert status == 404 and is_outcome(body)
    # Even an invalid body gets the 404 first: nothing about A's referral is revealed.
    status, _, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_B,
                                  {"status": "nonsense"})
    assert status == 404
    # Staff endpoints refuse agency tokens.
    for method, path in (("GET", "/care/referrals"), ("POST", "/consent")):
        status, _, _ = await api.call(method, path, TOKEN_A, {})
        assert status == 401
    assert api.producer.sent == []


async def test_accept_produces_a_referral_update_keyed_by_patient(api: Harness) -> None:
    status, body, _ = await api.call("GET", "/agency/referrals/task-a1", TOKEN_A)
    assert status == 200 and body["status"] == "requested"
    status, body, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                     {"status": "accepted"})
    assert status == 202 and body["status"] == "accepted"
    [(topic, value, key)] = api.producer.sent
    update = ReferralUpdate.model_validate_json(value)
    assert topic == "referrals.updates" and key == b"HOSP|MRN777"
    assert (update.id, update.referral_task_id, update.agency_id, update.status) == (
        body["id"], "task-a1", "agency-a", "accepted")
    # The same POST again (a lost answer): no second update, the status is already set.
    status, again, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                      {"status": "accepted"})
    assert status == 200 and again["unchanged"] is True
    assert len(api.producer.sent) == 1
    # Completed right after accepted is checked against the posted status, not the view's.
    status, body, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                     {"status": "completed"})
    assert status == 202
    # The republished referral (version 2) replaces the optimistic status.
    api.view.apply(referral("task-a1", "agency-a", status="completed", version=3))
    status, body, _ = await api.call("GET", "/agency/referrals/task-a1", TOKEN_A)
    assert body["status"] == "completed" and body["version"] == 3


async def test_invalid_transitions_are_409(api: Harness) -> None:
    status, body, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                     {"status": "completed"})
    assert status == 409 and is_outcome(body)
    api.view.apply(referral("task-a1", "agency-a", status="completed", version=5))
    status, _, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                  {"status": "cancelled"})
    assert status == 409
    assert api.producer.sent == []


@pytest.mark.parametrize("body", [
    {"status": "rejected"},                                   # a rejection needs a reason
    {"status": "rejected", "reason": "We are full, sorry!"},  # free text refused
    {"status": "rejected", "reason": "x" * 65},
    {"status": "requested"},                                  # not the agency's to set
    {"status": "accepted", "note": "hello"},                  # unknown field
    ["accepted"],
])
async def test_bad_status_bodies_are_400(api: Harness, body: Any) -> None:
    status, answer, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                       body)
    assert status == 400 and is_outcome(answer)
    assert api.producer.sent == []


async def test_reject_with_a_reason_code_and_kafka_failure_is_503(api: Harness) -> None:
    api.producer.fail = True
    status, body, headers = await api.call("POST", "/agency/referrals/task-a1/status",
                                           TOKEN_A, {"status": "rejected",
                                                     "reason": "no_capacity"})
    assert status == 503 and headers["Retry-After"] and is_outcome(body)
    api.producer.fail = False
    status, body, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                     {"status": "rejected", "reason": "no_capacity"})
    assert status == 202
    update = ReferralUpdate.model_validate_json(api.producer.sent[0][1])
    assert (update.status, update.reason) == ("rejected", "no_capacity")


async def test_wrong_content_type_is_415(api: Harness) -> None:
    status, _, _ = await api.call("POST", "/agency/referrals/task-a1/status", TOKEN_A,
                                  data=b"status=accepted",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


async def test_not_ready_view_answers_503() -> None:
    view = ReferralView()
    view.set_directory(parse_directory(DIRECTORY))
    app = web.Application()
    add_agency_routes(app, AgencyApi(Settings(), RecordingProducer(), view), manage_view=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/agency/referrals",
                                headers={"Authorization": f"Bearer {TOKEN_A}"})
        assert resp.status == 503 and resp.headers["Retry-After"]


async def test_staff_view_lists_every_referral_with_filters(api: Harness) -> None:
    status, body, _ = await api.call("GET", "/care/referrals", STAFF)
    assert status == 200
    rows = body["referrals"]
    assert [r["id"] for r in rows] == ["task-a1", "task-a2", "task-b1"]
    assert set(rows[0]) >= {"id", "referral_id", "agency", "need", "status", "attempt",
                            "manager", "requested_at", "accepted_at", "completed_at",
                            "time_to_accept_s", "time_to_complete_s"}
    assert "MRN777" not in orjson.dumps(body).decode()
    status, body, _ = await api.call("GET", "/care/referrals?manager=m2", STAFF)
    assert [r["id"] for r in body["referrals"]] == ["task-b1"]
    status, body, _ = await api.call("GET", "/care/referrals?status=accepted", STAFF)
    assert [r["id"] for r in body["referrals"]] == ["task-a2"]
    status, _, _ = await api.call("GET", "/care/referrals?status=nope", STAFF)
    assert status == 400
    status, _, headers = await api.call("GET", "/care/referrals")
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]


async def test_staff_endpoints_without_a_configured_token_refuse_everyone() -> None:
    app = web.Application()
    view = ReferralView()
    view.mark_ready()
    add_agency_routes(app, AgencyApi(Settings(), RecordingProducer(), view), manage_view=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/care/referrals", headers={"Authorization": "Bearer x"})
        assert resp.status == 401


async def test_consent_opt_out_and_fhir_consent(api: Harness) -> None:
    status, body, _ = await api.call("POST", "/consent", STAFF, {
        "patient": {"assigning_authority": "HOSP", "mrn": "MRN777"}, "referrals": "opt-out",
        "source": "staff-m1"})
    assert status == 202 and body["referrals"] == "opt-out"
    topic, value, key = api.producer.sent[-1]
    record = ConsentRecord.model_validate_json(value)
    assert (topic, key, record.patient_key, record.referrals, record.source) == (
        "config.consent", b"HOSP|MRN777", "HOSP|MRN777", "opt-out", "staff-m1")
    fhir = {"resourceType": "Consent", "status": "active",
            "patient": {"identifier": {"system": "urn:care-hub:authority:HOSP",
                                       "value": "MRN777"}},
            "provision": {"type": "permit"}}
    status, body, _ = await api.call("POST", "/consent", STAFF, fhir)
    assert status == 202 and body["referrals"] == "opt-in"
    record = ConsentRecord.model_validate_json(api.producer.sent[-1][1])
    assert (record.patient_key, record.referrals) == ("HOSP|MRN777", "opt-in")


@pytest.mark.parametrize("body", [
    {"patient": {"assigning_authority": "HOSP"}, "referrals": "opt-out"},
    {"patient": {"assigning_authority": "HOSP", "mrn": "1"}, "referrals": "maybe"},
    {"patient": {"assigning_authority": "HO|SP", "mrn": "1"}, "referrals": "opt-out"},
    {"patient": {"assigning_authority": "HOSP", "mrn": "1"}, "referrals": "opt-out",
     "source": "Dr. Jane Smith"},
    {"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/1"},
     "provision": {"type": "deny"}},
    "opt-out",
])
async def test_bad_consent_bodies_are_400(api: Harness, body: Any) -> None:
    status, answer, _ = await api.call("POST", "/consent", STAFF, body)
    assert status == 400 and is_outcome(answer)
    assert api.producer.sent == []


def test_view_keeps_the_higher_version() -> None:
    view = ReferralView()
    assert view.apply(referral("t", "agency-a", version=2, status="accepted"))
    assert not view.apply(referral("t", "agency-a", version=1))
    assert not view.apply(referral("t", "agency-a", version=2, status="requested"))
    got = view.get("t")
    assert got is not None and got.status == "accepted"
