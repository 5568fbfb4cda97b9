"""The webhook sender: one POST per call, under the hub's URL policy. Owns the aiohttp client.

The pure rules (signature, what an answer means, when to retry) are in
:mod:`streams.referrals.delivery`; this module only makes the request and reports an
:class:`~streams.referrals.delivery.AttemptOutcome`. It never raises for a failed
delivery: every failure is an outcome.

URL policy, checked on every attempt (the directory can change between attempts):

* ``https://`` only. Plain ``http://`` only when ``webhook_allow_insecure_loopback`` is
  on (tests; the production profile refuses it) and every address the host resolves to
  is a loopback address.
* No credentials in the URL (``https://user:pw@...``): secrets belong in the environment.
* In the production profile every address of the host must be public: private
  (RFC 1918, ULA), loopback, link-local (cloud metadata at 169.254.169.254), shared
  (100.64/10), multicast, unspecified and reserved ranges are refused, so an agency entry
  cannot point the hub at its own network (SSRF).
* DNS rebinding: the check runs inside the connector's resolver and aiohttp connects to
  exactly the addresses it returned (DNS cache off), so a second lookup that answers
  differently can never be the one connected to. IP-literal hosts bypass aiohttp's
  resolver, so they are checked before the request.
* Redirects are never followed (``allow_redirects=False``): a 3xx is reported as such.
* No proxies from the environment (``trust_env=False``), TLS verification always on.
* Each attempt is bounded by ``webhook_timeout_s`` (connect, TLS and answer together).

The secret is read at send time from the environment variable the agency's
``secret_env`` names, held as a ``SecretStr`` and never logged. A webhook without
``secret_env`` is sent unsigned in development and refused in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import mode
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from pydantic import SecretStr

from hub.ingest.deadletter import Sender
from hub.kafka import HubKafkaError
from hub.logging import get_logger
from hub.settings import Settings
from schemas.records import DeadLetter
from schemas.referrals import DeliveryJob
from schemas.topics import REFERRALS_DELIVERIES
from streams.referrals.delivery import (
    ATTEMPT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    AttemptOutcome,
    DeliveryPolicy,
    replay_job,
    signature_header,
)

__all__ = ["PolicyError", "TargetRefusedError", "WebhookRole", "WebhookSender",
           "check_address", "check_url", "delivery_policy", "requeue_delivery"]

log = get_logger("hub.webhooks")

USER_AGENT = "care-transitions-hub-webhooks/1"
AddressPolicy = Literal["any", "public", "loopback"]


class PolicyError(ValueError):
    """A webhook URL the policy refuses; ``code`` is a short reason for logs and letters."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


class TargetRefusedError(OSError):
    """Raised inside the resolver when an address is refused (aiohttp wraps OSErrors from
    the resolver, so the sender finds it as the cause of the connector error)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


def check_address(address: str, policy: AddressPolicy) -> str | None:
    """The refusal code for connecting to ``address`` under ``policy``, or None if allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "bad_address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if policy == "any":
        return None
    if policy == "loopback":
        return None if ip.is_loopback else "not_loopback"
    if ip.is_loopback:
        return "loopback_target"
    if ip.is_link_local:
        return "link_local_target"
    if ip.is_private:
        return "private_target"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "reserved_target"
    return None


def check_url(url: str, settings: Settings) -> tuple[str, AddressPolicy]:
    """``(host, address policy)`` for a URL the policy allows; raises :class:`PolicyError`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise PolicyError("bad_url", "the webhook URL cannot be parsed") from exc
    if not host:
        raise PolicyError("bad_url", "the webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise PolicyError("credentials_in_url", "credentials in a webhook URL are refused")
    production = settings.profile == "production"
    if parts.scheme == "https":
        policy: AddressPolicy = "public" if production else "any"
    elif parts.scheme == "http":
        if production or not settings.webhook_allow_insecure_loopback:
            raise PolicyError("not_https", "webhooks are HTTPS only")
        policy = "loopback"
    else:
        raise PolicyError("not_https", "webhooks are HTTPS only")
    if _is_ip(host):
        code = check_address(host, policy)
        if code is not None:
            raise PolicyError(code, f"the webhook target is refused ({code})")
    return host, policy


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class _CheckingResolver(AbstractResolver):
    """Resolves with the default resolver, then refuses the whole answer if any address
    breaks the policy (a mixed answer is how rebinding attacks hide a private address)."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for r in results:
            code = check_address(r["host"], self.policy)
            if code is not None:
                raise TargetRefusedError(code, f"the webhook target is refused ({code})")
        return results

    async def close(self) -> None:
        await self.inner.close()


class WebhookSender:
    """``await sender(job, attempt)`` -> :class:`AttemptOutcome` (the streams layer's
    ``StreamsConfig.webhook_sender``). Call :meth:`close` when done."""

    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 resolver_factory: Callable[[AddressPolicy], AbstractResolver] | None = None
                 ) -> None:
        self.settings = settings
        self._environ = environ if environ is not None else os.environ
        self._clock = clock
        self._resolver_factory = resolver_factory or _CheckingResolver
        self._sessions: dict[AddressPolicy, aiohttp.ClientSession] = {}

    def _session(self, policy: AddressPolicy) -> aiohttp.ClientSession:
        # One session per address policy: the policy lives in the connector's resolver.
        session = self._sessions.get(policy)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver_factory(policy), use_dns_cache=False,
                limit=64, limit_per_host=8, enable_cleanup_closed=True)
            session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False,
                headers={"User-Agent": USER_AGENT})
            self._sessions[policy] = session
        return session

    def _secret(self, job: DeliveryJob) -> SecretStr | None:
        if job.secret_env is None:
            return None
        value = self._environ.get(job.secret_env)
        return SecretStr(value) if value else None

    async def __call__(self, job: DeliveryJob, attempt: int) -> AttemptOutcome:
        started = time.perf_counter()
        outcome = await self._send(job, attempt)
        log.info("webhook_attempted", agency_id=job.agency_id, delivery_id=job.id,
                 attempt=attempt, outcome=outcome.kind, http_status=outcome.status,
                 reason=outcome.reason, latency_ms=round((time.perf_counter() - started)
                                                         * 1000, 1))
        return outcome

    async def _send(self, job: DeliveryJob, attempt: int) -> AttemptOutcome:
        try:
            _host, policy = check_url(job.url, self.settings)
        except PolicyError as exc:
            return AttemptOutcome("refused", code=exc.code)
        body = job.body.encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: job.id,
                   ATTEMPT_HEADER: str(attempt)}
        secret = self._secret(job)
        if job.secret_env is not None and secret is None:
            return AttemptOutcome("missing_secret", code="missing_secret")
        if secret is None and self.settings.profile == "production":
            return AttemptOutcome("refused", code="unsigned_webhook")
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature_header(
                secret.get_secret_value().encode(), body, int(self._clock()))
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        try:
            # The outer bound is a belt: aiohttp's total timeout covers the request, this
            # also covers resolving and anything else that might hang.
            async with asyncio.timeout(self.settings.webhook_timeout_s + 1):
                async with self._session(policy).post(
                        job.url, data=body, headers=headers, allow_redirects=False,
                        timeout=timeout) as resp:
                    return AttemptOutcome("http", resp.status)
        except TimeoutError:
            return AttemptOutcome("timeout", code="timeout")
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal(exc)
            if refused is not None:
                return AttemptOutcome("refused", code=refused)
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                return AttemptOutcome("dns_error", code="dns_error")
            if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
                return AttemptOutcome("connect_error", code="tls_error")
            return AttemptOutcome("connect_error", code="connect_failed")
        except aiohttp.InvalidURL:
            return AttemptOutcome("refused", code="bad_url")
        except aiohttp.ClientError as exc:
            return AttemptOutcome("connect_error", code=_client_code(exc))
        except OSError:
            return AttemptOutcome("connect_error", code="connect_failed")

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


def _refusal(exc: BaseException) -> str | None:
    seen: set[int] = set()
    cur: Any = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TargetRefusedError):
            return cur.code
        os_error = getattr(cur, "os_error", None)
        if isinstance(os_error, TargetRefusedError):
            return os_error.code
        cur = cur.__cause__ or cur.__context__
    return None


def _client_code(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server_disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "bad_response"
    return "connect_failed"


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """The pure retry policy from the hub's settings."""
    return DeliveryPolicy(
        backoff_base_s=settings.webhook_backoff_base_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        max_age_s=settings.webhook_max_age_s,
        client_error_attempts=settings.webhook_client_error_attempts)


class WebhookRole(mode.Service):
    """Closes the sender's HTTP sessions when the worker stops (a mode service)."""

    def __init__(self, sender: WebhookSender, **kwargs: Any) -> None:
        self.sender = sender
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        await self.sender.close()


async def requeue_delivery(settings: Settings, producer: Sender | None, letter: DeadLetter,
                           payload: bytes | None, *, now: datetime | None = None
                           ) -> tuple[str, str]:
    """``hub dlq replay`` of a dead letter of the ``deliveries`` stage: put the delivery
    back on referrals.deliveries (:func:`streams.referrals.delivery.replay_job`: same id
    and body, a fresh 24 h of retries), where the delivery stage starts it again once per
    dead letter. ``producer`` None is a dry run. Returns ``(outcome, detail)`` as the
    command reports them: ``replayed`` with the coordinates written, ``dry_run`` with the
    topic, or ``skipped`` with a code (``payload_missing``,
    ``still_fails:invalid_resource``, ``write_failed``)."""
    if payload is None:
        return "skipped", "payload_missing"
    try:
        job = replay_job(payload, letter.id, now or datetime.now(UTC))
    except ValueError:
        return "skipped", "still_fails:invalid_resource"
    topic = settings.topic(REFERRALS_DELIVERIES.name)
    if producer is None:
        return "dry_run", topic
    try:
        partition, offset = await producer.send(
            topic, job.model_dump_json(exclude_none=True).encode(), key=job.id.encode(),
            timeout=settings.ack_timeout_s)
    except HubKafkaError:
        return "skipped", "write_failed"
    log.info("delivery_requeued", dead_letter_id=letter.id, agency_id=job.agency_id,
             delivery_id=job.id, topic=topic, partition=partition, offset=offset)
    return "replayed", f"{topic}/{partition}/{offset}"
