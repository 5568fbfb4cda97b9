"""A small MLLP client: send messages one at a time and collect the ACKs.

Used by the demo, ``hub send``, benchmarks and tests. One message in flight per
connection, as MLLP requires; parallelism comes from several connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable

from mappers.mllp import Frame, MllpDecoder, encode_frame


class MllpClient:
    def __init__(self, host: str, port: int, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout, self.ssl = host, port, timeout, ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = MllpDecoder(max_frame_bytes=16 * 1024 * 1024)
        self._pending: list[bytes] = []

    async def __aenter__(self) -> MllpClient:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl), self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()

    async def send(self, message: bytes) -> bytes:
        """Send one message and return its ACK payload (unframed)."""
        assert self._reader is not None and self._writer is not None
        self._writer.write(encode_frame(message))
        await self._writer.drain()
        return await asyncio.wait_for(self._next_frame(), self.timeout)

    async def _next_frame(self) -> bytes:
        assert self._reader is not None
        while not self._pending:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before an ACK arrived")
            self._pending.extend(
                item.payload for item in self._decoder.feed(data) if isinstance(item, Frame))
        return self._pending.pop(0)


async def send_all(host: str, port: int, messages: Iterable[bytes], *,
                   timeout: float = 30.0) -> list[bytes]:
    async with MllpClient(host, port, timeout=timeout) as client:
        return [await client.send(m) for m in messages]
