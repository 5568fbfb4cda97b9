"""The webhook sender against real local HTTP receivers: headers, signature, URL policy,
redirects, timeouts. No broker needed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from hub.settings import Settings
from hub.webhooks import PolicyError, WebhookSender, check_address, check_url
from schemas.referrals import DeliveryJob
from streams.referrals.delivery import classify, verify_signature

SECRET = "whsec-test-0123456789"
PROD = {"profile": "production", "kafka_bootstrap": "kafka:9092", "replication_factor": 3,
        "min_insync_replicas": 2, "store": "rocksdb://"}


@dataclass
class Receiver:
    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(base="")
    delay = {"s": 0.0}

    async def hook(request: web.Request) -> web.Response:
        rec.hits["/hook"] = rec.hits.get("/hook", 0) + 1
        rec.requests.append({"headers": dict(request.headers), "body": await request.read()})
        await asyncio.sleep(delay["s"])
        return web.Response(status=204)

    async def redirect(_: web.Request) -> web.Response:
        rec.hits["/moved"] = rec.hits.get("/moved", 0) + 1
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(_: web.Request) -> web.Response:
        rec.hits["/elsewhere"] = rec.hits.get("/elsewhere", 0) + 1
        return web.Response(status=200)

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    async def gone(_: web.Request) -> web.Response:
        return web.Response(status=410)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/moved", redirect)
    app.router.add_route("*", "/elsewhere", elsewhere)
    app.router.add_post("/slow", slow)
    app.router.add_post("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


def _job(url: str, *, secret_env: str | None = "AGENCY_SECRET", job_id: str = "job-1"
         ) -> DeliveryJob:
    return DeliveryJob(id=job_id, agency_id="springfield-housing", url=url,
                       secret_env=secret_env, body='{"id":"task-1","status":"requested"}',
                       created_at=datetime(2026, 3, 2, tzinfo=UTC), referral_task_id="task-1")


def _sender(**settings: Any) -> WebhookSender:
    values: dict[str, Any] = {"webhook_allow_insecure_loopback": True,
                              "webhook_timeout_s": 1.0, **settings}
    return WebhookSender(Settings(**values), environ={"AGENCY_SECRET": SECRET})


async def test_post_carries_signature_idempotency_key_and_the_exact_body(
        receiver: Receiver) -> None:
    sender = _sender()
    try:
        outcome = await sender(_job(f"{receiver.base}/hook"), 1)
    finally:
        await sender.close()
    assert (outcome.kind, outcome.status, classify(outcome)) == ("http", 204, "delivered")
    [req] = receiver.requests
    headers, body = req["headers"], req["body"]
    assert body == b'{"id":"task-1","status":"requested"}'
    assert headers["Idempotency-Key"] == "job-1"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Hub-Delivery-Attempt"] == "1"
    assert verify_signature(SECRET, headers["X-Hub-Signature"], body, now=time.time())
    assert not verify_signature("wrong", headers["X-Hub-Signature"], body, now=time.time())


async def test_a_redirect_is_a_failure_and_its_target_never_gets_a_request(
        receiver: Receiver) -> None:
    sender = _sender()
    try:
        outcome = await sender(_job(f"{receiver.base}/moved"), 1)
    finally:
        await sender.close()
    assert (outcome.kind, outcome.status) == ("http", 302)
    assert classify(outcome) != "delivered"
    assert receiver.hits.get("/moved") == 1
    assert receiver.hits.get("/elsewhere", 0) == 0


async def test_410_gives_up_and_a_slow_receiver_is_a_timeout(receiver: Receiver) -> None:
    sender = _sender(webhook_timeout_s=0.3)
    try:
        gone = await sender(_job(f"{receiver.base}/gone"), 1)
        started = time.monotonic()
        slow = await sender(_job(f"{receiver.base}/slow"), 1)
        took = time.monotonic() - started
    finally:
        await sender.close()
    assert classify(gone) == "give_up"
    assert slow.kind == "timeout" and classify(slow) == "retry"
    assert took < 2.0


async def test_connection_refused_and_missing_secret_are_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = _sender()
    try:
        refused = await sender(_job(f"http://127.0.0.1:{port}/hook"), 1)
        missing = await sender(_job(f"http://127.0.0.1:{port}/hook",
                                    secret_env="NOT_SET_ANYWHERE"), 1)
    finally:
        await sender.close()
    assert refused.kind == "connect_error" and classify(refused) == "retry"
    assert missing.kind == "missing_secret" and classify(missing) == "retry"


async def test_plain_http_needs_the_test_flag(receiver: Receiver) -> None:
    sender = _sender(webhook_allow_insecure_loopback=False)
    try:
        outcome = await sender(_job(f"{receiver.base}/hook"), 1)
    finally:
        await sender.close()
    assert (outcome.kind, outcome.code, classify(outcome)) == ("refused", "not_https", "give_up")
    assert receiver.hits.get("/hook", 0) == 0


# ------------------------------------------------------------------------ URL policy


def test_url_policy_dev() -> None:
    dev = Settings()
    assert check_url("https://agency.example/hook", dev) == ("agency.example", "any")
    with pytest.raises(PolicyError, match="HTTPS only"):
        check_url("http://127.0.0.1:8080/hook", dev)
    loop_ok = Settings(webhook_allow_insecure_loopback=True)
    assert check_url("http://127.0.0.1:8080/hook", loop_ok)[1] == "loopback"
    assert check_url("http://localhost:8080/hook", loop_ok)[1] == "loopback"
    with pytest.raises(PolicyError) as exc:
        check_url("http://10.1.2.3/hook", loop_ok)
    assert exc.value.code == "not_loopback"
    for bad, code in [("ftp://agency.example/x", "not_https"),
                      ("https://user:pw@agency.example/x", "credentials_in_url"),
                      ("https:///nohost", "bad_url"), ("https://agency.example:99999/", "bad_url")]:
        with pytest.raises(PolicyError) as exc:
            check_url(bad, dev)
        assert exc.value.code == code


def test_production_refuses_the_insecure_flag() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_ALLOW_INSECURE_LOOPBACK"):
        Settings(**PROD, webhook_allow_insecure_loopback=True)


@pytest.mark.parametrize(("address", "code"), [
    ("127.0.0.1", "loopback_target"), ("::1", "loopback_target"),
    ("::ffff:127.0.0.1", "loopback_target"), ("10.0.0.5", "private_target"),
    ("192.168.1.1", "private_target"), ("172.16.0.1", "private_target"),
    ("fd00::1", "private_target"), ("169.254.169.254", "link_local_target"),
    ("fe80::1", "link_local_target"), ("100.64.0.1", "reserved_target"),
    ("0.0.0.0", "private_target"), ("224.0.0.1", "reserved_target"),
    ("240.0.0.1", "private_target"), ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_production_address_policy(address: str, code: str | None) -> None:
    got = check_address(address, "public")
    if code is None:
        assert got is None
    else:
        assert got is not None, address
    assert check_address(address, "any") is None


def test_production_refuses_ip_literal_private_targets() -> None:
    prod = Settings(**PROD)
    for url in ("https://127.0.0.1/hook", "https://10.0.0.1/hook",
                "https://169.254.169.254/latest", "https://[::1]/hook"):
        with pytest.raises(PolicyError):
            check_url(url, prod)
    assert check_url("https://8.8.8.8/hook", prod)[1] == "public"
    with pytest.raises(PolicyError):
        check_url("http://8.8.8.8/hook", prod)


class _FakeResolver(AbstractResolver):
    """Answers like a rebinding DNS server: a public address first, then a private one."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addrs = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in addrs]

    async def close(self) -> None:
        return None


async def test_production_checks_every_resolved_address_at_send_time(
        receiver: Receiver) -> None:
    """A host resolving to a loopback address (alone, or hidden behind a public one) is
    refused before any connection: the receiver on 127.0.0.1 gets nothing."""
    port = int(receiver.base.rsplit(":", 1)[1])
    from hub.webhooks import _CheckingResolver

    for answers in ([["127.0.0.1"]], [["93.184.216.34", "127.0.0.1"]]):
        fake = _FakeResolver(answers)

        def factory(policy: Any, fake: _FakeResolver = fake) -> AbstractResolver:
            return _CheckingResolver(policy, fake)

        sender = WebhookSender(Settings(**PROD, webhook_timeout_s=1.0),
                               environ={"AGENCY_SECRET": SECRET}, resolver_factory=factory)
        try:
            outcome = await sender(_job(f"https://agency.example:{port}/hook"), 1)
        finally:
            await sender.close()
        assert outcome.kind == "refused", outcome
        assert outcome.code == "loopback_target"
        assert fake.calls == 1
    assert receiver.hits.get("/hook", 0) == 0


async def test_production_refuses_unsigned_webhooks() -> None:
    sender = WebhookSender(Settings(**PROD), environ={})
    try:
        outcome = await sender(_job("https://8.8.8.8/hook", secret_env=None), 1)
    finally:
        await sender.close()
    assert (outcome.kind, outcome.code) == ("refused", "unsigned_webhook")
