"""What the tests of the bearer-token APIs (agency API, staff task API) share: a
recording producer in place of Kafka, JSON calls with a bearer token (aiohttp test
client or a live ``hub run``), and waiting for an eventually-true answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient

from hub.kafka import DurableWriteError


@dataclass
class RecordingProducer:
    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    fail: bool = False

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None, timeout: float
                   ) -> tuple[int, int]:
        if self.fail:
            raise DurableWriteError("broker down")
        self.sent.append((topic, value, key))
        return 0, len(self.sent) - 1


def is_outcome(body: Any) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"


async def call_json(client: TestClient, method: str, path: str, token: str | None,
                    body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
    """``(status, parsed body or None, headers)``; ``body`` is sent as JSON, else
    ``data=`` raw."""
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = orjson.dumps(body) if body is not None else kw.pop("data", None)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    resp = await client.request(method, path, headers=headers, data=data, **kw)
    text = await resp.read()
    return resp.status, orjson.loads(text) if text else None, resp.headers



async def live_call(http: aiohttp.ClientSession, base: str, method: str, path: str,
                    token: str | None, body: Any = None) -> tuple[int, Any]:
    """``(status, parsed body or None)`` from a running hub at ``base``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = orjson.dumps(body) if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with http.request(method, f"{base}{path}", headers=headers, data=data) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None


async def eventually(fn: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """The first truthy answer of ``fn`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")
