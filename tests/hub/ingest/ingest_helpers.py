"""Helpers for the ingest tests: messages, a running ingest stack, a raw MLLP client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hub.ingest import INGEST_TOPICS, AckStore, Ingestor, MllpServer
from hub.ingest.http import HttpServer
from hub.kafka import DurableProducer, Record, ensure_topics, read_topic
from hub.settings import Settings
from mappers.mllp import Frame, MllpDecoder, encode_frame

# A synthetic patient with unique canary tokens: they must never show up in ACKs,
# dead-letter records or logs (REFERENCE.md section 5, PHI canary).
CANARY_FAMILY = "ZQXCANARYFAM"
CANARY_GIVEN = "ZQXCANARYGIV"
CANARY_MRN = "ZQX7731MRN"
CANARIES = (CANARY_FAMILY, CANARY_GIVEN, CANARY_MRN)


def adt(
    control_id: str | None = None,
    *,
    trigger: str = "A01",
    msg_type: str = "ADT",
    version: str = "2.5.1",
    facility: str = "GENHOSP",
    mrn: str = CANARY_MRN,
    msh15: str = "",
    msh16: str = "",
    extra: str = "",
) -> bytes:
    control_id = control_id or uuid.uuid4().hex[:16]
    return (
        f"MSH|^~\\&|EPIC|{facility}|HUB|CM|20260301120000-0500||{msg_type}^{trigger}^ADT_A01|"
        f"{control_id}|P|{version}|||{msh15}|{msh16}\r"
        f"EVN|{trigger}|20260301120000-0500\r"
        f"PID|1||{mrn}^^^GENHOSP^MR||{CANARY_FAMILY}^{CANARY_GIVEN}||19600101|F\r"
        f"PV1|1|I|4W^401^A^GENHOSP||||1234^WELBY^MARCUS|||MED||||||||||V{control_id}|||||||||"
        f"||||||||||||||||20260301115500-0500\r{extra}"
    ).encode()


def segments(ack: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for seg in ack.decode().split("\r"):
        if seg:
            out[seg[:3]] = seg.split(seg[3]) if len(seg) > 3 else [seg]
    return out


def msa(ack: bytes) -> tuple[str, str]:
    f = segments(ack)["MSA"]
    return f[1], f[2] if len(f) > 2 else ""


@dataclass
class Stack:
    settings: Settings
    producer: DurableProducer
    ingestor: Ingestor
    mllp: MllpServer
    http: HttpServer | None

    async def read(self, name: str, *, min_records: int = 0, timeout: float = 10.0
                   ) -> list[Record]:
        return await read_topic(self.settings, name, timeout=timeout, min_records=min_records)


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, *, http: bool = False,
                        create_topics: bool = True) -> AsyncIterator[Stack]:
    producer = DurableProducer(settings)
    await producer.start()
    if create_topics:
        await ensure_topics(settings, INGEST_TOPICS)
    store = AckStore(settings, producer)
    ingestor = Ingestor(settings, producer, ack_store=store)
    mllp = MllpServer(ingestor, settings, port=0)
    await mllp.start()
    http_server = HttpServer(ingestor, settings, port=0) if http else None
    if http_server is not None:
        await http_server.start()
    try:
        yield Stack(settings, producer, ingestor, mllp, http_server)
    finally:
        await mllp.stop(drain_timeout=5)
        if http_server is not None:
            await http_server.stop()
        await store.drain(timeout=5)
        await producer.stop()


class RawClient:
    """A deliberately dumb MLLP client: write any bytes, read ACK frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = MllpDecoder(1 << 24)
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, **kw: Any) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kw)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: bytes, timeout: float = 20.0) -> bytes:
        await self.write(encode_frame(message))
        return await self.ack(timeout)

    async def ack(self, timeout: float = 20.0) -> bytes:
        async def next_frame() -> bytes:
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed before an ACK")
                self.pending += [e.payload for e in self.decoder.feed(data)
                                 if isinstance(e, Frame)]
            return self.pending.pop(0)

        return await asyncio.wait_for(next_frame(), timeout)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True when the server closed the connection (EOF or reset) within ``timeout``."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
