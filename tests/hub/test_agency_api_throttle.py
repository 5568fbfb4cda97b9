"""Token guessing: after N bad bearer tokens from one client address within the window,
every agency and staff endpoint answers 429 with Retry-After and an OperationOutcome,
until the oldest failure leaves the window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.agency_api import AgencyApi, AuthThrottle, ReferralView, add_agency_routes
from hub.settings import Settings
from streams.referrals.directory import parse_directory, token_sha256

from .test_agency_api import DIRECTORY, STAFF, TOKEN_A, Harness, RecordingProducer, referral


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Throttled:
    h: Harness
    clock: Clock
    api: AgencyApi


@pytest.fixture
async def api() -> AsyncIterator[Throttled]:
    view = ReferralView()
    view.set_directory(parse_directory(DIRECTORY))
    view.apply(referral("task-a1", "agency-a"))
    view.mark_ready()
    clock = Clock()
    settings = Settings(staff_api_token_sha256=token_sha256(STAFF), ack_timeout_s=1.0,
                        api_auth_failures_max=3, api_auth_window_s=60)
    agency_api = AgencyApi(settings, RecordingProducer(), view,
                           clock=lambda: datetime(2026, 3, 2, 10, tzinfo=UTC),
                           throttle=AuthThrottle(settings.api_auth_failures_max,
                                                 settings.api_auth_window_s, clock=clock))
    app = web.Application()
    add_agency_routes(app, agency_api, manage_view=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Throttled(Harness(client, view, RecordingProducer()), clock, agency_api)
    await client.close()


async def test_bad_tokens_lead_to_429_then_the_window_lets_the_client_in(
        api: Throttled) -> None:
    h = api.h
    for i in range(3):
        status, body, _ = await h.call("GET", "/agency/referrals", f"guess-{i}")
        assert status == 401 and body["resourceType"] == "OperationOutcome"
        api.clock.t += 1
    # Blocked now, even with a valid token (checked before the token is looked at), on
    # every endpoint, agency and staff alike.
    for method, path, token in (("GET", "/agency/referrals", TOKEN_A),
                                ("GET", "/agency/referrals/task-a1", TOKEN_A),
                                ("POST", "/agency/referrals/task-a1/status", TOKEN_A),
                                ("GET", "/care/referrals", STAFF),
                                ("POST", "/consent", STAFF),
                                ("GET", "/agency/referrals", None)):
        status, body, headers = await h.call(method, path, token)
        assert status == 429, (method, path)
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "throttled"
        assert int(headers["Retry-After"]) == 57  # failures at t, t+1, t+2; now t+3
    assert api.api.throttle.refused == 6
    api.clock.t += 56.5
    assert (await h.call("GET", "/agency/referrals", TOKEN_A))[0] == 429
    api.clock.t += 1  # the first failure is out of the window: 2 of 3 left
    status, body, _ = await h.call("GET", "/agency/referrals", TOKEN_A)
    assert status == 200 and [r["id"] for r in body["referrals"]] == ["task-a1"]
    # One more bad token blocks again (two still in the window).
    assert (await h.call("GET", "/care/referrals", "not-the-staff-token"))[0] == 401
    assert (await h.call("GET", "/care/referrals", STAFF))[0] == 429


async def test_requests_without_a_token_and_good_tokens_do_not_count(api: Throttled) -> None:
    h = api.h
    for _ in range(10):
        assert (await h.call("GET", "/agency/referrals"))[0] == 401
        assert (await h.call("GET", "/agency/referrals", TOKEN_A))[0] == 200
    assert (await h.call("GET", "/care/referrals", STAFF))[0] == 200


async def test_failures_spread_wider_than_the_window_never_block(api: Throttled) -> None:
    h = api.h
    for i in range(8):
        assert (await h.call("GET", "/agency/referrals", f"guess-{i}"))[0] == 401
        api.clock.t += 31  # never 3 within 60 s
    assert (await h.call("GET", "/agency/referrals", TOKEN_A))[0] == 200


def test_throttle_is_per_client_and_bounded() -> None:
    clock = Clock()
    t = AuthThrottle(2, 10.0, clock=clock, max_clients=3)
    assert t.failed("10.0.0.1") is False and t.failed("10.0.0.1") is True
    assert t.retry_after("10.0.0.1") == 10 and t.retry_after("10.0.0.2") is None
    clock.t += 4.2
    assert t.retry_after("10.0.0.1") == 6  # whole seconds, rounded up
    for n in range(2, 6):  # a spray from many addresses: the oldest is forgotten
        t.failed(f"10.0.0.{n}")
    assert len(t._failures) == 3 and t.retry_after("10.0.0.1") is None
    clock.t += 10
    assert t.retry_after("10.0.0.5") is None and "10.0.0.5" not in t._failures
