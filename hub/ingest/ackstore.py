"""The ACKs already sent, so a duplicate (sending facility + MSH-10) gets the same ACK.

Senders resend when an ACK is lost (REFERENCE.md section 3: "duplicates after lost
ACKs"); answering with the stored ACK, byte for byte, and writing nothing new keeps the
raw topic free of the copy. Memory is bounded twice: entries expire after
``settings.dedup_window_s`` and the oldest are evicted beyond ``max_entries`` (LRU).

The map is mirrored to the compacted topic ``hub.acks`` so it survives a restart
(:meth:`AckStore.load`). That write is best effort and off the ACK path: the message is
already durable on the raw topic, so losing a mirror write only means a later duplicate
is written twice, which the normalize stage's own dedup absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hub.kafka import HubKafkaError, read_topic
from hub.logging import get_logger
from hub.settings import Settings
from schemas.records import HEADER_RECEIVED_AT
from schemas.topics import HUB_ACKS

from .deadletter import Sender

log = get_logger("hub.ingest.ackstore")


def ack_key(facility: str | None, control_id: str) -> str:
    return f"{facility or ''}|{control_id}"


class AckStore:
    def __init__(
        self,
        settings: Settings,
        producer: Sender | None = None,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._mirror_tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ttl_s(self) -> float:
        return float(self.settings.dedup_window_s)

    def get(self, facility: str | None, control_id: str) -> bytes | None:
        key = ack_key(facility, control_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, ack = entry
        if self._clock() - stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return ack

    def remember(self, facility: str | None, control_id: str, ack: bytes,
                 stored_at: float | None = None) -> None:
        """Store in memory only (also used by :meth:`load`)."""
        self._remember(ack_key(facility, control_id), ack, stored_at)

    def _remember(self, key: str, ack: bytes, stored_at: float | None) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self._clock() if stored_at is None else stored_at, ack)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def put(self, facility: str | None, control_id: str, ack: bytes) -> None:
        """Store, and mirror to ``hub.acks`` in the background (best effort)."""
        self.remember(facility, control_id, ack)
        if self.producer is None or self.ttl_s <= 0:
            return
        task = asyncio.get_running_loop().create_task(
            self._mirror(ack_key(facility, control_id), ack)
        )
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    async def _mirror(self, key: str, ack: bytes) -> None:
        assert self.producer is not None
        try:
            await self.producer.send(
                self.settings.topic(HUB_ACKS.name),
                ack,
                key=key.encode(),
                headers=[(HEADER_RECEIVED_AT, str(self._clock()).encode())],
                timeout=self.settings.ack_timeout_s,
            )
        except HubKafkaError as exc:
            log.warning("ack_mirror_failed", reason=type(exc).__name__)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for pending mirror writes (called before the producer stops)."""
        if self._mirror_tasks:
            await asyncio.wait(set(self._mirror_tasks), timeout=timeout)

    async def load(self, settings: Settings | None = None, *, timeout: float = 10.0) -> int:
        """Reload the unexpired ACKs from ``hub.acks``; returns how many were kept."""
        settings = settings or self.settings
        records = await read_topic(settings, HUB_ACKS.name, timeout=timeout)
        now = self._clock()
        for rec in sorted(records, key=lambda r: r.timestamp):
            if rec.key is None:
                continue
            key = rec.key.decode("utf-8", "replace")
            if rec.value is None:  # tombstone
                self._entries.pop(key, None)
                continue
            stored_at = rec.timestamp / 1000.0
            raw = rec.headers.get(HEADER_RECEIVED_AT)
            if raw:
                with contextlib.suppress(ValueError):
                    stored_at = float(raw.decode())
            if now - stored_at > self.ttl_s:
                continue
            self._remember(key, rec.value, stored_at)
        log.info("ack_store_loaded", records=len(records), count=len(self._entries))
        return len(self._entries)
