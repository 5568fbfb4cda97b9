"""The MLLP listener (asyncio): HL7 v2 over TCP, optionally TLS / mutual TLS.

One message at a time per connection, in order: a frame is handled and its ACK written
before the next bytes are read, as MLLP requires (a sender waits for each ACK, and the
order of one feed is the order of its patients' events). Parallelism comes from
connections: each has its own task.

Framing problems, per REFERENCE.md section 2 and the issue's "Bad input" list:
- over-size frame: dead letter (truncated payload), no ACK, close the connection (the
  rest of a 20 MB frame is never read into memory);
- garbage between frames: dead letter, counted, connection kept (CR/LF alone, which
  some senders put after each frame, is only counted);
- empty frame or no MSH: handled by the ingestor (dead letter + minimal AR NAK), the
  connection keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

from hub.logging import get_logger
from hub.settings import Settings
from mappers.mllp import Frame, Garbage, MllpDecoder, Oversize, encode_frame
from schemas.errors import ErrorCode, MappingError

from .core import Ingestor

log = get_logger("hub.ingest.mllp")

READ_CHUNK = 64 * 1024


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the listener when a certificate is configured; mutual TLS with a client CA."""
    if settings.mllp_tls_certfile is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(
        str(settings.mllp_tls_certfile),
        str(settings.mllp_tls_keyfile) if settings.mllp_tls_keyfile else None,
    )
    if settings.mllp_tls_client_cafile is not None:
        ctx.load_verify_locations(cafile=str(settings.mllp_tls_client_cafile))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(eq=False)
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    busy: bool = False
    """True while a frame is being handled (its ACK is owed): stop() waits for it."""
    frames: int = field(default=0)


class MllpServer:
    def __init__(self, ingestor: Ingestor, settings: Settings, *, host: str | None = None,
                 port: int | None = None, listener: str = "mllp") -> None:
        self.ingestor = ingestor
        self.settings = settings
        self.host = host if host is not None else settings.mllp_host
        self._port = port if port is not None else settings.mllp_port
        self.listener = listener
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self.tls = False

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 = ephemeral was asked for)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        ctx = server_ssl_context(self.settings)
        self.tls = ctx is not None
        self._stopping = False
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, ssl=ctx, limit=READ_CHUNK,
            ssl_handshake_timeout=30.0 if ctx else None,
        )
        log.info("listener_started", transport="mllp", listener=self.listener,
                 host=self.host, port=self.port, reason="tls" if self.tls else "plaintext")

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight messages get their ACK (bounded), close the rest."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        # An in-flight message waits at most ack_timeout_s for Kafka (plus a DLQ write).
        bound = drain_timeout if drain_timeout is not None else 2 * self.settings.ack_timeout_s + 1
        idle = [c for c in self._connections if not c.busy and c.task is not None]
        for conn in idle:
            assert conn.task is not None
            conn.task.cancel()
        busy = [c.task for c in self._connections if c.busy and c.task is not None]
        if busy:
            _, late = await asyncio.wait(busy, timeout=bound)
            for task in late:
                task.cancel()
        tasks = [c.task for c in list(self._connections) if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None
        log.info("listener_stopped", transport="mllp", listener=self.listener)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        conn = _Connection(peer=peer, writer=writer, task=asyncio.current_task())  # type: ignore[arg-type]
        if self._stopping:
            writer.close()
            return
        self._connections.add(conn)
        log.info("connection_opened", transport="mllp", listener=self.listener, peer=peer)
        reason = "closed_by_peer"
        try:
            reason = await self._loop(conn, reader, writer)
        except asyncio.CancelledError:
            reason = "server_stopping"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = type(exc).__name__
        finally:
            self._connections.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
            log.info("connection_closed", transport="mllp", listener=self.listener, peer=peer,
                     reason=reason, count=conn.frames)
        return

    async def _loop(self, conn: _Connection, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> str:
        decoder = MllpDecoder(self.settings.mllp_max_frame_bytes)
        idle = self.settings.mllp_idle_timeout_s
        while not self._stopping:
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), idle)
            except TimeoutError:
                return "idle_timeout"
            events = decoder.feed(data) if data else decoder.finish()
            for event in events:
                if isinstance(event, Frame):
                    conn.busy = True
                    try:
                        conn.frames += 1
                        ack = await self.ingestor.handle_hl7(
                            event.payload, transport="mllp", listener=self.listener,
                            peer=conn.peer)
                        writer.write(encode_frame(ack))
                        await writer.drain()
                    finally:
                        conn.busy = False
                elif isinstance(event, Oversize):
                    conn.busy = True
                    try:
                        err = MappingError(
                            ErrorCode.FRAME_TOO_LARGE,
                            f"The frame exceeds the limit of {decoder.max_frame_bytes} bytes.")
                        await self.ingestor.reject_bytes(
                            event.head, err, transport="mllp", listener=self.listener,
                            peer=conn.peer, original_size=event.size)
                    finally:
                        conn.busy = False
                    # No ACK: the frame was never read whole, so there is no trustworthy
                    # MSH to answer; closing tells the sender something is wrong.
                    return "frame_too_large"
                elif isinstance(event, Garbage):
                    await self._garbage(conn, event)
            if not data:
                return "closed_by_peer"
        return "server_stopping"

    async def _garbage(self, conn: _Connection, event: Garbage) -> None:
        self.ingestor.stats["garbage_bytes"] += event.size
        if event.whitespace_only:
            # Trailing CR/LF after frames is a common sender quirk, not an error.
            self.ingestor.stats["whitespace_runs"] += 1
            return
        if event.reason == "unterminated_frame":
            err = MappingError(ErrorCode.TRUNCATED_SEGMENT,
                               "A frame started but never ended (no 0x1C 0x0D end block).")
        else:
            err = MappingError(ErrorCode.GARBAGE_BETWEEN_FRAMES,
                               "Bytes outside MLLP framing (0x0B ... 0x1C 0x0D) were discarded.")
        conn.busy = True
        try:
            await self.ingestor.reject_bytes(event.head, err, transport="mllp",
                                             listener=self.listener, peer=conn.peer,
                                             original_size=event.size)
        finally:
            conn.busy = False
