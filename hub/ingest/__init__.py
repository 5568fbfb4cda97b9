"""Ingest role: MLLP and HTTP listeners in front of one durable Kafka producer.

Start order (each step needs the previous): producer -> topics -> ACK store reload ->
listeners. Stop order is the reverse, so no ACK is ever promised after the producer is
gone: listeners stop accepting and drain their in-flight messages (bounded by the ACK
timeout), then pending ACK-store mirror writes finish, then the producer flushes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.kafka import DurableProducer, KafkaUnavailableError, ensure_topics
from hub.logging import get_logger
from hub.settings import Settings
from schemas.topics import EHR_FHIR, EHR_HL7V2, HUB_ACKS, HUB_DLQ, HUB_DLQ_PAYLOADS

from .ackstore import AckStore
from .core import FhirOutcome, Hl7Outcome, IngestMetrics, Ingestor
from .deadletter import dead_letter
from .http import HttpServer, make_http_app
from .mllp import MllpServer

if TYPE_CHECKING:
    from hub.web import Ops

__all__ = [
    "INGEST_TOPICS",
    "AckStore",
    "FhirOutcome",
    "Hl7Outcome",
    "HttpServer",
    "IngestMetrics",
    "IngestService",
    "Ingestor",
    "MllpServer",
    "dead_letter",
    "make_http_app",
]

log = get_logger("hub.ingest")

INGEST_TOPICS = (EHR_HL7V2, EHR_FHIR, HUB_DLQ, HUB_DLQ_PAYLOADS, HUB_ACKS)


class IngestService:
    """The whole ingest role. ``settings.kafka_bootstrap`` must name the broker to use
    (the runner resolves the embedded one first); idempotence follows
    ``settings.kafka_idempotence`` unless ``idempotent`` is given."""

    def __init__(self, settings: Settings, *, idempotent: bool | None = None,
                 metrics: IngestMetrics | None = None, http: bool = True,
                 ops: Ops | None = None) -> None:
        self.settings = settings
        self.producer = DurableProducer(settings, idempotent=idempotent)
        self.ack_store = AckStore(settings, self.producer)
        self.ingestor = Ingestor(settings, self.producer, ack_store=self.ack_store,
                                 metrics=metrics)
        self.mllp = MllpServer(self.ingestor, settings)
        self.http: HttpServer | None = (HttpServer(self.ingestor, settings, ops=ops)
                                        if http else None)
        self._started = False

    @property
    def started(self) -> bool:
        """Listening (readiness: ingest takes traffic only once this is true)."""
        return self._started

    @property
    def mllp_port(self) -> int:
        return self.mllp.port

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def start(self) -> None:
        await self.producer.start()
        try:
            await ensure_topics(self.settings, INGEST_TOPICS)
            try:
                await self.ack_store.load()
            except KafkaUnavailableError as exc:
                # Degraded, not fatal: duplicates within the window get written twice
                # and normalize's dedup drops them.
                log.warning("ack_store_load_failed", reason=type(exc).__name__)
            await self.mllp.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            await self.stop()
            raise
        self._started = True
        log.info("ingest_started", port=self.mllp_port, host=self.settings.mllp_host)

    async def stop(self) -> None:
        # 1. stop accepting and drain in-flight ACKs (each bounded by ack_timeout_s)
        await self.mllp.stop()
        if self.http is not None:
            await self.http.stop()
        # 2. finish best-effort ACK mirror writes while the producer is still up
        await self.ack_store.drain(timeout=self.settings.ack_timeout_s)
        # 3. flush and close the producer
        await self.producer.stop()
        if self._started:
            log.info("ingest_stopped", acked=self.ingestor.stats.get("ack.AA", 0))
        self._started = False
