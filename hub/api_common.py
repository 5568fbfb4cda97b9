"""What the hub's bearer-token APIs (hub.agency_api, hub.care_api) share: the error
answers (FHIR OperationOutcome), bearer-token parsing and the token-guessing throttle,
the JSON body reader, the code regexes, and :class:`TopicView`, the loop that tails
topics into an in-memory view.

One copy, so the two APIs cannot drift apart: a client sees the same 401, 413, 415,
429 and 503 answers, and one throttle budget, whichever endpoint it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from hub.ingest.core import FHIR_CONTENT_TYPE, _operation_outcome
from hub.ingest.deadletter import Sender
from hub.kafka import DurableWriteError, HubKafkaError, Record, TopicTail
from hub.settings import Settings
from streams.referrals.directory import token_sha256

__all__ = ["CODE", "MAX_BODY", "AuthThrottle", "Retention", "TokenApi", "TokenGate",
           "TopicView", "bad", "bearer", "client_address", "conflict", "not_found",
           "outcome", "past_retention", "read_json_body", "run_view_with", "unauthorized",
           "unavailable", "view_retention"]

MAX_BODY = 16 * 1024
"""Status and consent bodies are a few dozen bytes; anything big is refused unread."""
CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""A client-chosen code (a consent source, a task update reason): never a sentence."""
JSON_CONTENT_TYPES = ("application/json", "application/fhir+json")
RETRY_AFTER_S = 5
STOP_WAIT_S = 15.0
"""How long stopping a view waits for its tail task (each consumer's close is capped
too): a broker that vanished must not hold an app's shutdown."""
RETRY_S = 2.0


# ---------------------------------------------------------------------------- errors


def outcome(status: int, code: str, detail: str, issue_type: str,
            headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(_operation_outcome(code, detail, issue_type=issue_type),
                             status=status, headers=headers, content_type=FHIR_CONTENT_TYPE)


def unauthorized(realm: str, error: str | None) -> web.Response:
    challenge = f'Bearer realm="{realm}"'
    if error:
        challenge += f', error="{error}"'
    return outcome(401, "unauthorized", "A valid bearer token is required.", "login",
                   {"WWW-Authenticate": challenge})


def not_found(detail: str) -> web.Response:
    return outcome(404, "not_found", detail, "not-found")


def conflict(code: str, detail: str) -> web.Response:
    return outcome(409, code, detail, "business-rule")


def throttled(retry_after: int) -> web.Response:
    return outcome(429, "too_many_failed_authentications",
                   "Too many requests with an invalid bearer token from this address; "
                   "retry after the time in Retry-After.", "throttled",
                   {"Retry-After": str(retry_after)})


def unavailable(detail: str) -> web.Response:
    return outcome(503, "unavailable", detail, "transient",
                   {"Retry-After": str(RETRY_AFTER_S)})


def bad(detail: str, code: str = "invalid_request", status: int = 400) -> web.Response:
    """400 (or 422 with ``status``): ``detail`` is ours, never an echo of the input."""
    return outcome(status, code, detail, "invalid")


# ------------------------------------------------------------------------ requests


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def read_json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    """``(parsed body, None)`` or ``(None, the 400/413/415 answer)``; a body over
    :data:`MAX_BODY` is refused without reading more than one byte past the limit."""
    if request.content_type not in JSON_CONTENT_TYPES:
        return None, outcome(415, "unsupported_media_type",
                             "Content-Type must be application/json.", "not-supported")
    too_big = outcome(413, "request_too_large", f"The body exceeds {MAX_BODY} bytes.",
                      "too-costly")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None, too_big
    try:
        raw = await request.content.read(MAX_BODY + 1)
    except Exception:
        return None, bad("The body could not be read.")
    if len(raw) > MAX_BODY:
        return None, too_big
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return None, bad("The body is not valid JSON.", "invalid_json")


# ------------------------------------------------------------------------ throttle


class AuthThrottle:
    """Failed authentications per client address in a sliding window (in memory, per
    process). ``clock`` is monotonic seconds."""

    def __init__(self, max_failures: int, window_s: float, *,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000
                 ) -> None:
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}
        self.refused = 0
        """Requests answered 429 (for metrics)."""
        self.failed_total = 0
        """Bad tokens counted (for metrics)."""

    def _recent(self, client: str, now: float) -> deque[float] | None:
        q = self._failures.get(client)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[client]
            return None
        return q

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again, or None when it may now."""
        now = self.clock()
        q = self._recent(client, now)
        if q is None or len(q) < self.max_failures:
            return None
        return max(1, math.ceil(q[-self.max_failures] + self.window_s - now))

    def failed(self, client: str) -> bool:
        """Count one bad token; True when this one reached the limit."""
        now = self.clock()
        q = self._recent(client, now)
        if q is None:
            if len(self._failures) >= self.max_clients:
                # Bounded memory under a spray from many addresses: forget the oldest.
                del self._failures[next(iter(self._failures))]
            q = self._failures[client] = deque()
        self.failed_total += 1
        q.append(now)
        return len(q) == self.max_failures

    def figures(self) -> dict[str, Any]:
        """For /metrics (a :class:`hub.metrics.FiguresProvider`): counts only."""
        return {"api_auth": {"failed": self.failed_total, "throttled": self.refused}}


class TokenGate:
    """The throttle in front of token checks, and the staff token check itself.

    ``log`` is the calling API's logger, so its events keep their module's name."""

    def __init__(self, throttle: AuthThrottle, log: Any) -> None:
        self.throttle = throttle
        self.log = log

    def throttled(self, request: web.Request) -> web.Response | None:
        """The 429 for a client over its budget (before its token is looked at)."""
        wait = self.throttle.retry_after(client_address(request))
        if wait is None:
            return None
        self.throttle.refused += 1
        return throttled(wait)

    def refused(self, request: web.Request, realm: str) -> web.Response:
        """Count a bad token against the client; the 401 to answer it with."""
        if self.throttle.failed(client_address(request)):
            # Once per client and window, not per refused request (no log flood).
            self.log.warning("api_auth_throttled", realm=realm, path=request.path,
                             failures=self.throttle.max_failures,
                             window_s=self.throttle.window_s)
        return unauthorized(realm, "invalid_token")

    def staff(self, request: web.Request, want_sha256: str | None) -> web.Response | None:
        """None when the request carries the staff token, else the 401/429 answer."""
        if (denied := self.throttled(request)) is not None:
            return denied
        token = bearer(request)
        if token is None:
            return unauthorized("staff", None)
        # Compared even when unset, so an unconfigured hub takes as long to say no.
        if not hmac.compare_digest(token_sha256(token).encode(),
                                   (want_sha256 or "-" * 64).encode()) \
                or want_sha256 is None:
            self.log.info("staff_token_refused", path=request.path)
            return self.refused(request, "staff")
        return None


# ------------------------------------------------------------------------- the view

K = TypeVar("K")


def past_retention(last_at: datetime, now: datetime, retain: timedelta) -> bool:
    """True when an item last recorded at ``last_at`` is past ``retain`` at ``now``
    (strictly: exactly at the retention it is still kept)."""
    return now - last_at > retain


def view_retention(settings: Settings | None) -> timedelta:
    """``HUB_API_VIEW_RETAIN_DAYS`` (its default for a view built without settings)."""
    days = settings.api_view_retain_days if settings is not None else \
        Settings.model_fields["api_view_retain_days"].default
    return timedelta(days=days)


class Retention(Generic[K]):
    """Which closed items a view forgets, and when: each close time in a heap, so a
    record costs one push and each entry is popped once (no scan of the view).

    "Now" is the newest record time the view has seen, not the wall clock: the rule is
    then a function of the records alone, so a replay from the start forgets exactly
    what the live tail forgot and a test needs no clock. A view whose topics fall
    silent forgets nothing more (it does not grow either). The price: a record stamped
    far ahead (a sender's skewed clock) moves "now" on for good, and closed items go
    early; never an open one.

    An entry may be stale (the item got a later record): :meth:`due` hands out
    ``(closed at, key)`` and the caller drops the item only if it still holds that
    record and is still closed.

    Nothing is forgotten before :meth:`arm` (a view arms it once it has read every
    topic to its end). While catching up, partitions are read at different paces: an
    item forgotten on the strength of one partition's records could come back as a
    stale older record from a partition read later (a merge republishes a patient's
    open tasks and referrals under the surviving key, on another partition), and the
    view, no longer holding the newer record, would take it. Once caught up, every
    partition is read as it is written.
    """

    def __init__(self, retain: timedelta) -> None:
        self.retain = retain
        self.armed = False
        self.now: datetime | None = None
        self._heap: list[tuple[datetime, int, K]] = []
        self._seq = 0
        """Tie-breaker: keys are never compared."""

    def __len__(self) -> int:
        return len(self._heap)

    def saw(self, at: datetime) -> None:
        if self.now is None or at > self.now:
            self.now = at

    def arm(self) -> None:
        self.armed = True

    def expired(self, last_at: datetime) -> bool:
        return self.armed and self.now is not None and \
            past_retention(last_at, self.now, self.retain)

    def closed(self, at: datetime, key: K) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, key))

    def due(self) -> Iterator[tuple[datetime, K]]:
        """Pop the entries now past the retention, oldest first (entries pushed while
        iterating are seen too)."""
        while self._heap and self.expired(self._heap[0][0]):
            at, _, key = heapq.heappop(self._heap)
            yield at, key


class TopicView:
    """Topics tailed into memory by one background task; ``ready`` once every topic was
    read up to its end once.

    A subclass names its topics in :meth:`_topics` (polled in that order, each with its
    wait and record handler) and says what its ready event counts. Handlers are the
    pure parts (tests call them directly); a record that does not validate is counted
    in ``rejected`` and logged by coordinates, never by content. Errors never end the
    task: a broker error drops the consumers and retries, anything else is logged and
    retried.
    """

    event_prefix = "view"
    """``<prefix>_ready``, ``<prefix>_read_failed``, ``<prefix>_failed``,
    ``<prefix>_record_rejected``; also the task's name (``-`` for ``_``)."""

    def __init__(self, settings: Settings | None, *, poll_s: float, log: Any) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.log = log
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self.rejected = 0

    def _topics(self) -> Sequence[tuple[str, float, Callable[[Record], object]]]:
        """``(topic, poll wait in seconds, handler)`` in polling order."""
        raise NotImplementedError

    def _ready_fields(self) -> dict[str, Any]:
        return {}

    @property
    def ready(self) -> bool:
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    async def start(self) -> None:
        if self._task is None and self.settings is not None:
            self._task = asyncio.create_task(
                self._run(), name=self.event_prefix.replace("_", "-"))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(task, STOP_WAIT_S)

    async def _run(self) -> None:
        assert self.settings is not None
        plan = self._topics()
        tails = [TopicTail(self.settings, topic) for topic, _, _ in plan]
        me = asyncio.current_task()
        try:
            # Not ``while True``: aiokafka's bootstrap can swallow a CancelledError, and
            # the loop would then run on until stop()'s second cancel. cancelling() stays
            # set once stop() has asked, whoever swallowed the exception.
            while me is None or not me.cancelling():
                try:
                    await self._poll_once(tails, plan)
                except HubKafkaError as exc:
                    self.log.warning(f"{self.event_prefix}_read_failed",
                                     exc_type=type(exc).__name__)
                    for tail in tails:
                        await tail.stop()
                    await asyncio.sleep(RETRY_S)
                except Exception as exc:  # the view must keep running whatever arrives
                    self.log.error(f"{self.event_prefix}_failed", exc_type=type(exc).__name__)
                    await asyncio.sleep(RETRY_S)
        finally:
            for tail in tails:
                await tail.stop()

    async def _poll_once(self, tails: Sequence[TopicTail],
                         plan: Sequence[tuple[str, float, Callable[[Record], object]]]
                         ) -> None:
        for tail, (_, wait, handle) in zip(tails, plan, strict=True):
            for rec in await tail.poll(timeout=wait):
                if not rec.value:
                    continue
                try:
                    handle(rec)
                except ValidationError:
                    self.rejected += 1
                    self.log.warning(f"{self.event_prefix}_record_rejected", topic=rec.topic,
                                     partition=rec.partition, offset=rec.offset)
        if not self._ready and await _all_caught_up(tails):
            self._ready = True
            self.log.info(f"{self.event_prefix}_ready", **self._ready_fields())


async def _all_caught_up(tails: Sequence[TopicTail]) -> bool:
    for tail in tails:  # one at a time: no end-offset request once one is behind
        if not await tail.caught_up():
            return False
    return True


# ------------------------------------------------------------------------- the api

V = TypeVar("V", bound=TopicView)


class TokenApi(Generic[V]):
    """The routes' state both APIs have: settings, the durable producer, the view, the
    clock and the throttle (pass one throttle to several APIs for one shared budget)."""

    not_ready_detail = "The view is still loading."

    def __init__(self, settings: Settings, producer: Sender, view: V, *,
                 clock: Callable[[], datetime] | None = None,
                 throttle: AuthThrottle | None = None, log: Any) -> None:
        self.settings = settings
        self.producer = producer
        self.view = view
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.throttle = throttle or AuthThrottle(settings.api_auth_failures_max,
                                                 settings.api_auth_window_s)
        self.gate = TokenGate(self.throttle, log)

    def _staff(self, request: web.Request) -> web.Response | None:
        return self.gate.staff(request, self.settings.staff_api_token_sha256)

    def _not_ready(self) -> web.Response | None:
        if not self.view.ready:
            return unavailable(self.not_ready_detail)
        return None

    async def _store(self, topic: str, record: BaseModel, key: str) -> bool:
        """Write ``record`` with acks=all within the bounded wait; False when Kafka did
        not take it (the caller answers 503: the client sends it again)."""
        try:
            await self.producer.send(topic, record.model_dump_json(exclude_none=True).encode(),
                                     key=key.encode(), timeout=self.settings.ack_timeout_s)
        except DurableWriteError:
            return False
        return True


def run_view_with(app: web.Application, view: TopicView) -> None:
    """Start ``view`` with ``app`` and stop it on the app's cleanup."""
    async def _start(_: web.Application) -> None:
        await view.start()

    async def _stop(_: web.Application) -> None:
        await view.stop()

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
