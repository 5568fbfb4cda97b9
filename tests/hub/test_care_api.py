"""The staff task API over real HTTP (aiohttp test server), with a recording producer
instead of Kafka (the broker round trip is in test_care_api_e2e.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.agency_api import AGENCY_API_KEY, AgencyApi, ReferralView, add_agency_routes
from hub.care_api import (
    CARE_API_KEY,
    CareApi,
    TaskRow,
    TaskView,
    add_care_routes,
    update_id,
)
from hub.ingest import Ingestor, make_http_app
from hub.logging import configure
from hub.settings import Settings
from schemas.care import AssignmentOutput, TaskOutput, TaskUpdate
from streams.referrals.directory import token_sha256

from .apiclient import RecordingProducer, call_json, is_outcome

STAFF = "staff-token"
NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = "HOSP|MRN777"
CANARY = ("MRN777", "HOSP|")


def task(task_id: str, kind: str = "contact", *, status: str = "requested",
         due: datetime = T0 + timedelta(days=2), owner: str | None = "cm-ana",
         encounter: str | None = "HOSP|V1", decided_at: datetime = T0,
         key: str = KEY) -> TaskOutput:
    return TaskOutput(
        id=f"out-{task_id}-{status}", cause_event_id="ev-1", rule=f"tcm.{kind}",
        patient_key=key, encounter_key=encounter, facility="HOSP", decided_at=decided_at,
        task_id=task_id, kind=kind, due=due, status=status, owner=owner,  # type: ignore[arg-type]
        description="Interactive contact within 2 business days of discharge (CMS TCM)",
        fhir={"resourceType": "Task", "for": {"identifier": {"value": "MRN777"}}})


def load(view: TaskView, out: TaskOutput, partition: int = 0) -> bool:
    return view.apply_record(out.model_dump_json().encode(), partition)


@dataclass
class Harness:
    client: TestClient
    view: TaskView
    producer: RecordingProducer
    clock: list[datetime]

    async def call(self, method: str, path: str, token: str | None = STAFF,
                   body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        return await call_json(self.client, method, path, token, body, **kw)

    def sent(self) -> list[TaskUpdate]:
        return [TaskUpdate.model_validate_json(v) for _, v, _ in self.producer.sent]


def _view() -> TaskView:
    view = TaskView()
    load(view, task("t-contact", "contact"))
    load(view, task("t-visit", "visit", due=T0 + timedelta(days=7)))
    load(view, task("t-queue", "med_rec", owner="team:medsurg", encounter="HOSP|V2",
                    due=NOW + timedelta(days=3)))
    load(view, task("t-done", "pcp_notification", status="completed",
                    due=T0 + timedelta(days=1)))
    view.apply_assignment("HOSP|V1", "medsurg")
    view.mark_ready()
    return view


@pytest.fixture
async def api() -> AsyncIterator[Harness]:
    view = _view()
    producer = RecordingProducer()
    clock = [NOW]
    settings = Settings(staff_api_token_sha256=token_sha256(STAFF), ack_timeout_s=1.0,
                        api_auth_failures_max=3)
    app = web.Application()
    add_care_routes(app, CareApi(settings, producer, view, clock=lambda: clock[0]),
                    manage_view=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Harness(client, view, producer, clock)
    await client.close()


def _no_phi(body: Any) -> None:
    text = orjson.dumps(body).decode()
    assert "patient_key" not in text
    for token in CANARY:
        assert token not in text


# ----------------------------------------------------------------------- the list


async def test_staff_list_shows_tasks_soonest_due_first_without_patient_data(
        api: Harness) -> None:
    status, body, _ = await api.call("GET", "/care/tasks")
    assert status == 200 and body["total"] == 4
    assert [t["task_id"] for t in body["tasks"]] == ["t-done", "t-contact", "t-visit",
                                                     "t-queue"]
    contact = body["tasks"][1]
    assert contact == {"task_id": "t-contact", "kind": "contact", "status": "requested",
                       "owner": "cm-ana", "team": "medsurg",
                       "due": "2026-03-04T09:00:00+00:00", "overdue": True}
    queue = body["tasks"][3]
    assert (queue["team"], queue["overdue"]) == ("medsurg", False)  # the queue's team
    assert body["tasks"][0]["overdue"] is False  # completed is never overdue
    _no_phi(body)


@pytest.mark.parametrize(("query", "ids"), [
    ("status=open", ["t-contact", "t-visit", "t-queue"]),
    ("status=completed", ["t-done"]),
    ("status=cancelled", []),
    ("owner=team:medsurg", ["t-queue"]),
    ("owner=cm-ana&status=requested", ["t-contact", "t-visit"]),
    ("team=medsurg&overdue=true", ["t-contact", "t-visit"]),
    ("overdue=false", ["t-done", "t-queue"]),
    ("team=critical-care", []),
    ("limit=1", ["t-done"]),
])
async def test_staff_list_filters(api: Harness, query: str, ids: list[str]) -> None:
    status, body, _ = await api.call("GET", f"/care/tasks?{query}")
    assert status == 200
    assert [t["task_id"] for t in body["tasks"]] == ids


@pytest.mark.parametrize("query", ["status=done", "overdue=yes", "limit=0", "limit=x",
                                   "limit=100000"])
async def test_bad_list_filters_are_400(api: Harness, query: str) -> None:
    status, body, _ = await api.call("GET", f"/care/tasks?{query}")
    assert status == 400 and is_outcome(body)


# ------------------------------------------------------------------- auth, 404, 503


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/care/tasks", None),
    ("POST", "/care/tasks/t-contact/status", {"status": "completed"}),
])
async def test_no_token_or_a_wrong_token_is_401(api: Harness, method: str, path: str,
                                                body: Any) -> None:
    for token, error in ((None, None), ("not-the-staff-token", "invalid_token")):
        status, answer, headers = await api.call(method, path, token, body)
        assert status == 401 and is_outcome(answer)
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (error in headers["WWW-Authenticate"]) if error else True
    status, _, _ = await api.call(method, path, None, body,
                                  headers={"Authorization": f"Basic {STAFF}"})
    assert status == 401
    assert api.producer.sent == []


async def test_bad_tokens_are_throttled(api: Harness) -> None:
    for _ in range(3):
        status, _, _ = await api.call("GET", "/care/tasks", "guess")
        assert status == 401
    status, body, headers = await api.call("GET", "/care/tasks")  # even the right token
    assert status == 429 and is_outcome(body) and int(headers["Retry-After"]) > 0
    status, _, _ = await api.call("POST", "/care/tasks/t-contact/status",
                                  body={"status": "completed"})
    assert status == 429
    assert api.producer.sent == []


async def test_without_a_configured_staff_token_everyone_is_refused() -> None:
    app = web.Application()
    add_care_routes(app, CareApi(Settings(), RecordingProducer(), _view()),
                    manage_view=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/care/tasks", headers={"Authorization": "Bearer x"})
        assert resp.status == 401


async def test_an_unknown_task_is_404_before_its_body_is_looked_at(api: Harness) -> None:
    for body in ({"status": "completed"}, {"status": "nonsense"}):
        status, answer, _ = await api.call("POST", "/care/tasks/no-such-task/status",
                                           body=body)
        assert status == 404 and is_outcome(answer)
    assert api.producer.sent == []


async def test_a_loading_view_answers_503_with_retry_after() -> None:
    app = web.Application()
    settings = Settings(staff_api_token_sha256=token_sha256(STAFF))
    add_care_routes(app, CareApi(settings, RecordingProducer(), TaskView()),
                    manage_view=False)
    async with TestClient(TestServer(app)) as client:
        auth = {"Authorization": f"Bearer {STAFF}"}
        resp = await client.get("/care/tasks", headers=auth)
        assert resp.status == 503 and resp.headers["Retry-After"]
        resp = await client.post("/care/tasks/t-contact/status", headers=auth,
                                 json={"status": "completed"})
        assert resp.status == 503 and resp.headers["Retry-After"]


# ------------------------------------------------------------------------ updates


async def test_completed_writes_a_task_update_keyed_by_the_patient(api: Harness) -> None:
    status, body, _ = await api.call("POST", "/care/tasks/t-contact/status",
                                     body={"status": "completed",
                                           "reason": "reached_patient"})
    assert status == 202
    assert set(body) == {"id", "task_id", "status"}
    assert (body["task_id"], body["status"]) == ("t-contact", "completed")
    _no_phi(body)
    [(topic, value, key)] = api.producer.sent
    assert topic == "care.task-updates" and key == KEY.encode()
    update = TaskUpdate.model_validate_json(value)
    assert (update.id, update.task_id, update.patient_key, update.status, update.reason,
            update.at) == (body["id"], "t-contact", KEY, "completed", "reached_patient", NOW)


async def test_a_retried_post_has_the_same_update_id(api: Harness) -> None:
    path = "/care/tasks/t-visit/status"
    first = await api.call("POST", path, body={"status": "in-progress"})
    api.clock[0] = NOW + timedelta(seconds=20)  # same minute
    again = await api.call("POST", path, body={"status": "in-progress"})
    assert first[0] == again[0] == 202 and first[1]["id"] == again[1]["id"]
    api.clock[0] = NOW + timedelta(minutes=5)  # a minute later: a new update
    later = await api.call("POST", path, body={"status": "in-progress"})
    assert later[1]["id"] != first[1]["id"]
    # With an Idempotency-Key the client decides what "the same" is, whatever the time.
    keyed = {"Idempotency-Key": "cm-system-4711"}
    one = await api.call("POST", path, body={"status": "attempted"}, headers=keyed)
    api.clock[0] = NOW + timedelta(hours=3)
    two = await api.call("POST", path, body={"status": "attempted"}, headers=keyed)
    other = await api.call("POST", path, body={"status": "attempted"},
                           headers={"Idempotency-Key": "cm-system-4712"})
    assert one[1]["id"] == two[1]["id"] != other[1]["id"]
    assert [u.id for u in api.sent()] == [first[1]["id"], first[1]["id"], later[1]["id"],
                                          one[1]["id"], one[1]["id"], other[1]["id"]]


def test_update_ids_are_deterministic() -> None:
    a = update_id("t", "completed", None, None, NOW)
    assert a == update_id("t", "completed", None, None, NOW.replace(second=59))
    assert a != update_id("t", "completed", None, None, NOW + timedelta(minutes=1))
    assert a != update_id("t", "cancelled", None, None, NOW)
    assert a != update_id("t", "completed", "x", None, NOW)
    assert a != update_id("u", "completed", None, None, NOW)
    keyed = update_id("t", "completed", None, "k1", NOW)
    assert keyed == update_id("t", "completed", None, "k1", NOW + timedelta(days=1))
    assert keyed != update_id("t", "completed", None, "k2", NOW)
    # A key that looks like a minute is not confused with the minute form.
    assert update_id("t", "completed", None, "2026-03-10T12:00", NOW) != a


async def test_a_closed_task_stays_closed(api: Harness) -> None:
    path = "/care/tasks/t-done/status"
    status, body, _ = await api.call("POST", path, body={"status": "cancelled"})
    assert status == 409 and is_outcome(body)
    status, body, _ = await api.call("POST", path, body={"status": "completed"})
    assert status == 200 and body["unchanged"] is True
    assert api.producer.sent == []


async def test_a_second_post_is_checked_against_the_status_just_posted(api: Harness) -> None:
    path = "/care/tasks/t-contact/status"
    status, first, _ = await api.call("POST", path, body={"status": "completed"})
    assert status == 202
    # The view still shows "requested" until the episodes stage republishes the task.
    status, again, _ = await api.call("POST", path, body={"status": "completed"})
    assert status == 200 and again == {**first, "unchanged": True}
    status, _, _ = await api.call("POST", path, body={"status": "cancelled"})
    assert status == 409
    assert len(api.producer.sent) == 1
    load(api.view, task("t-contact", status="completed", decided_at=NOW))
    assert api.view.effective_status("t-contact") == "completed"


@pytest.mark.parametrize(("body", "want"), [
    ({"status": "done"}, 422),
    ({"status": "requested"}, 422),                         # the hub's to set, not a CM's
    ({}, 422),
    ({"status": "completed", "reason": "Patient said she feels fine"}, 422),  # free text
    ({"status": "completed", "reason": "x" * 65}, 422),
    ({"status": "completed", "reason": 42}, 422),
    ({"status": "completed", "note": "hello"}, 422),        # unknown field
    (["completed"], 400),
    ("completed", 400),
])
async def test_bad_bodies_get_an_operation_outcome(api: Harness, body: Any, want: int) -> None:
    status, answer, _ = await api.call("POST", "/care/tasks/t-contact/status", body=body)
    assert status == want and is_outcome(answer)
    _no_phi(answer)
    assert "feels fine" not in orjson.dumps(answer).decode()  # nothing echoed
    assert api.producer.sent == []


@pytest.mark.parametrize("reason", ["patient_declined", "SCT:183932001", "no-answer.2"])
async def test_reason_codes_are_accepted(api: Harness, reason: str) -> None:
    status, _, _ = await api.call("POST", "/care/tasks/t-visit/status",
                                  body={"status": "cancelled", "reason": reason})
    assert status == 202 and api.sent()[-1].reason == reason


async def test_unreadable_or_mistyped_bodies(api: Harness) -> None:
    path = "/care/tasks/t-contact/status"
    status, body, _ = await api.call("POST", path, data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and is_outcome(body)
    status, body, _ = await api.call("POST", path, data=b"status=completed",
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"})
    assert status == 415 and is_outcome(body)
    status, body, _ = await api.call("POST", path, data=b"{" + b" " * 20000 + b"}",
                                     headers={"Content-Type": "application/json"})
    assert status == 413 and is_outcome(body)
    for bad_key in ("has space", "x" * 256, "caf\u00e9"):
        status, body, _ = await api.call("POST", path, body={"status": "completed"},
                                         headers={"Idempotency-Key": bad_key})
        assert status == 400 and is_outcome(body)
    assert api.producer.sent == []


async def test_kafka_not_taking_the_update_is_503(api: Harness) -> None:
    api.producer.fail = True
    status, body, headers = await api.call("POST", "/care/tasks/t-contact/status",
                                           body={"status": "completed"})
    assert status == 503 and headers["Retry-After"] and is_outcome(body)
    api.producer.fail = False
    # Not remembered as posted: the retry goes out.
    status, _, _ = await api.call("POST", "/care/tasks/t-contact/status",
                                  body={"status": "completed"})
    assert status == 202 and len(api.producer.sent) == 1


async def test_logs_carry_ids_and_codes_never_the_patient_or_the_reason(
        api: Harness) -> None:
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    try:
        await api.call("POST", "/care/tasks/t-contact/status",
                       body={"status": "completed", "reason": "MRN777"})
        await api.call("POST", "/care/tasks/t-visit/status", body={"status": "failed"})
        await api.call("GET", "/care/tasks", "wrong-token")
    finally:
        configure("INFO", "console")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    accepted = [(x["task_id"], x["status"], x["kind"]) for x in lines
                if x["event"] == "task_update_accepted"]
    assert accepted == [("t-contact", "completed", "contact"), ("t-visit", "failed", "visit")]
    assert "staff_token_refused" in {x["event"] for x in lines}
    for token in (*CANARY, STAFF, "wrong-token"):
        assert token not in out.getvalue()


# ------------------------------------------------------------------------ the view


def test_view_keeps_the_latest_record_per_task() -> None:
    view = TaskView()
    assert load(view, task("t", status="requested"), partition=1)
    assert load(view, task("t", status="in-progress", decided_at=T0 - timedelta(hours=1)),
                partition=1), "one partition: the later offset wins whatever its time"
    row = view.get("t")
    assert row is not None and row.status == "in-progress"
    # A merge republished it under the surviving key (another partition), later.
    merged = task("t", key="HOSP|MRN888", decided_at=T0 + timedelta(days=1))
    assert load(view, merged, partition=4)
    # An older decision read late from the first partition does not win.
    assert not load(view, task("t", status="cancelled"), partition=1)
    row = view.get("t")
    assert row is not None and (row.patient_key, row.status) == ("HOSP|MRN888", "requested")


def test_view_finds_the_team_of_a_manager_owned_task() -> None:
    view = TaskView()
    load(view, task("t", owner="cm-ana", encounter="HOSP|V9"))
    row = view.get("t")
    assert row is not None and view.team_of(row) is None
    assignment = AssignmentOutput(
        id="a1", cause_event_id="ev", rule="assign", patient_key=KEY,
        encounter_key="HOSP|V9", decided_at=T0, status="assigned", manager_id="cm-ana",
        team="critical-care", reason="least_loaded")
    view.apply_assignment(assignment.encounter_key, assignment.team)
    assert view.team_of(row) == "critical-care"
    queue = TaskRow("q", KEY, "requested", "visit", "team:float", T0, None, T0, 0)
    assert view.team_of(queue) == "float"


def test_view_forgets_a_posted_status_once_the_task_is_closed_or_after_a_while() -> None:
    t = [0.0]
    view = TaskView(monotonic=lambda: t[0])
    load(view, task("t"))
    view.posted("t", "attempted")  # may or may not close it: not remembered
    assert view.effective_status("t") == "requested"
    view.posted("t", "completed")
    assert view.effective_status("t") == "completed"
    t[0] = 1000.0
    assert view.effective_status("t") == "requested"  # never applied: the view rules


def test_view_rejects_records_it_cannot_read() -> None:
    view = TaskView()
    with pytest.raises(ValueError):
        view.apply_record(b'{"type": "task"}', 0)
    assert not view.apply_record(task("t").model_copy(update={"type": "flag"})
                                 .model_dump_json().encode(), 0)
    assert view.get("t") is None


# ------------------------------------------------------------------------ mounting


async def test_the_ingest_http_app_serves_it_with_the_agency_apis_throttle() -> None:
    settings = Settings(staff_api_token_sha256=token_sha256(STAFF), api_auth_failures_max=2)
    producer = RecordingProducer()
    agency = AgencyApi(settings, producer, ReferralView())
    care = CareApi(settings, producer, _view(), throttle=agency.throttle)
    app = make_http_app(Ingestor(settings, producer), settings, agency=agency, care=care)
    assert app[CARE_API_KEY] is care and app[AGENCY_API_KEY] is agency
    async with TestClient(TestServer(app)) as client:
        bad = {"Authorization": "Bearer guess"}
        assert (await client.get("/care/referrals", headers=bad)).status == 401
        assert (await client.get("/care/tasks", headers=bad)).status == 401
        # Two failures in all (one per API): both APIs now refuse this address.
        good = {"Authorization": f"Bearer {STAFF}"}
        assert (await client.get("/care/tasks", headers=good)).status == 429
        assert (await client.get("/care/referrals", headers=good)).status == 429
    default = make_http_app(Ingestor(settings, producer), settings)
    assert default[CARE_API_KEY].throttle is default[AGENCY_API_KEY].throttle


def test_add_agency_routes_and_care_routes_coexist() -> None:
    app = web.Application()
    settings = Settings()
    add_agency_routes(app, AgencyApi(settings, RecordingProducer(), ReferralView()),
                      manage_view=False)
    add_care_routes(app, CareApi(settings, RecordingProducer(), TaskView()),
                    manage_view=False)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/care/referrals", "/care/tasks", "/care/tasks/{task_id}/status"} <= paths
