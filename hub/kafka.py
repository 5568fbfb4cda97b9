"""All Kafka client plumbing of the hub; the only module that imports aiokafka.

aiokafka's exceptions stop here: callers see :class:`DurableWriteError` (a write was
not acknowledged by the in-sync replicas in time) or :class:`KafkaUnavailableError`
(the cluster could not be reached or refused an admin request).

Topic names: every function takes either a catalogue name (``"ehr.hl7v2"``) or the
already prefixed name; ``settings.topic_prefix`` is applied exactly once (see
:func:`full_topic`), so tests isolated by a prefix and production code read the same.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from hub.settings import Settings
from schemas.topics import TopicSpec

__all__ = [
    "DurableProducer",
    "DurableWriteError",
    "HubKafkaError",
    "KafkaUnavailableError",
    "Record",
    "TopicTail",
    "broker_ready",
    "client_kwargs",
    "end_offsets",
    "ensure_topics",
    "faust_credentials",
    "fetch_record",
    "full_topic",
    "group_lag",
    "max_record_bytes",
    "read_topic",
    "ssl_context",
]

log = logging.getLogger(__name__)

# Kafka protocol error codes we act on (CreateTopics response).
_TOPIC_ALREADY_EXISTS = 36
_INVALID_CONFIG_CODES = {
    40,  # INVALID_CONFIG
    42,  # INVALID_REQUEST
    35,  # UNSUPPORTED_VERSION
    44,  # POLICY_VIOLATION
}
# Room for the record key, headers and batch framing around the largest MLLP frame.
_RECORD_OVERHEAD_BYTES = 64 * 1024


class HubKafkaError(Exception):
    """Base of the errors this module raises (aiokafka's never leave it)."""


class DurableWriteError(HubKafkaError):
    """A record was not acknowledged by all in-sync replicas within the bound.

    It may still land later (at-least-once): callers answer "not accepted" (AR/CE)
    and the sender retries; downstream dedup absorbs the duplicate.
    """


class KafkaUnavailableError(HubKafkaError):
    """The cluster could not be reached, or refused an admin request."""


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int
    timestamp: int
    """Milliseconds since the epoch (CreateTime unless the topic says otherwise)."""
    topic: str = ""


def full_topic(settings: Settings, name: str) -> str:
    """``settings.topic(name)`` unless ``name`` already carries the prefix."""
    prefix = settings.topic_prefix
    if prefix and name.startswith(prefix):
        return name
    return settings.topic(name)


def max_record_bytes(settings: Settings) -> int:
    """Largest record the hub writes: a whole MLLP frame plus key/headers/framing."""
    return max(1024 * 1024, settings.mllp_max_frame_bytes + _RECORD_OVERHEAD_BYTES)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context for SSL / SASL_SSL (None for plaintext protocols)."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if not settings.kafka_ssl_verify:
        # Refused by the production profile; lets a lab cluster with a self-signed
        # certificate work without a CA file.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _sasl_password(settings: Settings) -> str | None:
    pw = settings.kafka_sasl_password
    return pw.get_secret_value() if pw is not None else None


def faust_credentials(settings: Settings) -> Any:
    """The same TLS/SASL settings as faust ``broker_credentials`` (None = plaintext)."""
    import faust  # local: only the worker needs it, and it is heavy to import

    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=_sasl_password(settings),
        ssl_context=ssl_context(settings),  # None for SASL_PLAINTEXT
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
    )


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments shared by producers, consumers and admin clients."""
    if not settings.kafka_bootstrap:
        raise KafkaUnavailableError(
            "no Kafka bootstrap servers configured (start the embedded broker first)"
        )
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = _sasl_password(settings)
    return kw


# ---------------------------------------------------------------------- producer


class DurableProducer:
    """acks=all producer whose every send is bounded by a timeout.

    ``idempotent=True`` on Apache Kafka (no duplicates from producer retries);
    ``False`` on the embedded Tansu broker, which lacks InitProducerId; ``None`` means
    ``settings.kafka_idempotence``. An idempotent aiokafka producer retries forever,
    hence the explicit ``timeout`` on each send.
    """

    def __init__(self, settings: Settings, *, idempotent: bool | None = None) -> None:
        self._settings = settings
        self.idempotent = settings.kafka_idempotence if idempotent is None else idempotent
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self, timeout: float = 30.0) -> None:
        if self._producer is not None:
            return
        s = self._settings
        producer = AIOKafkaProducer(
            **client_kwargs(s),
            client_id=f"{s.app_id}-producer",
            acks="all",
            enable_idempotence=self.idempotent,
            # A slow request is retried (non-idempotent: until the send's timeout
            # cancels it); keep one attempt well inside the ACK bound.
            request_timeout_ms=max(5000, int(s.ack_timeout_s * 1000)),
            # ACK latency matters more than batching for an interactive HL7 feed.
            linger_ms=2,
            max_request_size=max_record_bytes(s),
            max_batch_size=64 * 1024,
            retry_backoff_ms=100,
        )
        try:
            await asyncio.wait_for(producer.start(), timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _quiet_stop(producer)
            raise KafkaUnavailableError(
                f"producer could not connect to {s.kafka_bootstrap}: {exc!r}"
            ) from exc
        self._producer = producer

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush and close; bounded, because a dead broker would hold the flush forever."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.flush(), timeout)
        except (KafkaError, OSError, TimeoutError):
            # Undeliverable batches (broker gone): their senders already got
            # DurableWriteError and answered AR/CE. aiokafka's stop() would wait for
            # them forever, so abort instead of leaking its tasks and connections.
            await _abort_producer(producer)
            return
        await _quiet_stop(producer, timeout)

    async def __aenter__(self) -> DurableProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float,
    ) -> tuple[int, int]:
        """Write one record; return (partition, offset) once all ISRs have it.

        Raises :class:`DurableWriteError` on any failure or when ``timeout`` elapses.
        """
        if self._producer is None:
            raise DurableWriteError("producer is not started")
        name = full_topic(self._settings, topic)
        try:
            md = await asyncio.wait_for(
                self._producer.send_and_wait(name, value, key=key, headers=headers),
                timeout,
            )
        except TimeoutError as exc:
            raise DurableWriteError(
                f"write to {name} not acknowledged within {timeout:g}s"
            ) from exc
        except (KafkaError, OSError, ValueError, TypeError, AssertionError) as exc:
            # ValueError/TypeError/AssertionError: aiokafka's checks on sizes/types.
            raise DurableWriteError(f"write to {name} failed: {exc!r}") from exc
        return md.partition, md.offset


async def _abort_producer(producer: AIOKafkaProducer) -> None:
    # Private aiokafka internals (pinned at 0.14.0): what stop() does, minus the flush.
    producer._closed = True
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=2)
    await _quiet_close(producer.client)


async def _quiet_stop(client: Any, timeout: float = 10.0) -> None:
    # Producers and consumers have stop(); the admin client only close().
    closer = client.stop if hasattr(client, "stop") else client.close
    try:
        await asyncio.wait_for(closer(), timeout)
    except Exception as exc:  # stopping must never mask the error that led here
        log.debug("kafka client stop failed: %r", exc)


# ------------------------------------------------------------------------- admin


def _topic_configs(settings: Settings, spec: TopicSpec) -> dict[str, str]:
    configs = dict(spec.topic_config())
    # acks=all means "all in-sync replicas"; without a floor that can be just one.
    # Clamped to the replication factor, or every acks=all write would fail.
    min_isr = min(settings.min_insync_replicas, settings.replication_factor)
    configs.setdefault("min.insync.replicas", str(min_isr))
    # Raw topics carry whole MLLP frames, which can exceed the broker's 1 MiB default.
    configs.setdefault("max.message.bytes", str(max_record_bytes(settings)))
    return configs


async def _start_admin(settings: Settings, timeout: float) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        **client_kwargs(settings),
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        await _quiet_stop(admin)
        raise KafkaUnavailableError(
            f"admin client could not connect to {settings.kafka_bootstrap}: {exc!r}"
        ) from exc
    return admin


def _topic_errors(response: Any) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        out[name] = (code, message)
    return out


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], *, timeout: float = 30.0
) -> None:
    """Create the missing topics of ``specs``; existing ones are left alone.

    Idempotent and safe to race with another process doing the same. A broker that
    rejects a topic config (Tansu knows fewer than Apache Kafka) gets the topic
    without the configs it rejected, and we log which.
    """
    specs = list(specs)
    if not specs:
        return
    admin = await _start_admin(settings, timeout)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        wanted = {full_topic(settings, s.name): s for s in specs}
        missing = {n: s for n, s in wanted.items() if n not in existing}
        pending: dict[str, dict[str, str]] = {
            n: _topic_configs(settings, s) for n, s in missing.items()
        }
        # Each round drops, per topic, the configs the broker said no to. Config-less
        # creation must succeed, so this ends after at most len(configs)+1 rounds.
        dropped: dict[str, list[str]] = {}
        while pending:
            new = [
                NewTopic(
                    name=n,
                    num_partitions=settings.partitions or missing[n].partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=cfg,
                )
                for n, cfg in pending.items()
            ]
            response = await asyncio.wait_for(
                admin.create_topics(new, timeout_ms=int(timeout * 1000)), timeout + 5
            )
            errors = _topic_errors(response)
            retry: dict[str, dict[str, str]] = {}
            for name, cfg in pending.items():
                code, message = errors.get(name, (0, ""))
                if code in (0, _TOPIC_ALREADY_EXISTS):
                    continue
                if code in _INVALID_CONFIG_CODES and cfg:
                    bad = [k for k in cfg if k in message] or list(cfg)
                    # Unknown which one offended: drop the least essential first.
                    victim = bad[-1]
                    dropped.setdefault(name, []).append(victim)
                    retry[name] = {k: v for k, v in cfg.items() if k != victim}
                    continue
                raise KafkaUnavailableError(
                    f"creating topic {name} failed: error {code} {message}".strip()
                )
            pending = retry
        for name, keys in dropped.items():
            log.warning(
                "broker rejected topic configs %s for %s; created without them",
                ", ".join(keys),
                name,
            )
        if missing:
            await _wait_for_topics(admin, set(missing), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailableError(f"ensure_topics failed: {exc!r}") from exc
    finally:
        await _quiet_stop(admin)


async def _wait_for_topics(admin: AIOKafkaAdminClient, names: set[str], timeout: float) -> None:
    # Creation is asynchronous on Apache Kafka: wait until metadata lists the topics so
    # a producer or consumer started right after us finds them.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if names <= set(await admin.list_topics()):
            return
        if loop.time() >= deadline:
            raise KafkaUnavailableError(f"topics not visible after {timeout:g}s: {names}")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------ reading


async def read_topic(
    settings: Settings, topic: str, *, timeout: float, min_records: int = 0
) -> list[Record]:
    """Everything currently in ``topic``, from the beginning, without a consumer group.

    Returns once every partition is read up to its end offset and at least
    ``min_records`` were seen, or when ``timeout`` elapses (then with what was read,
    possibly fewer than ``min_records``: callers assert on the count). A topic that
    does not exist yet reads as empty. For tests, the CLI and demo summaries.
    """
    name = full_topic(settings, topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        client_id=f"{settings.app_id}-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=max(52428800, max_record_bytes(settings)),
        max_partition_fetch_bytes=max_record_bytes(settings),
        request_timeout_ms=max(5000, int(timeout * 1000) + 1000),
    )
    records: list[Record] = []
    try:
        await asyncio.wait_for(consumer.start(), max(0.1, deadline - loop.time()))
        tps: list[TopicPartition] = []
        while not tps:
            # The consumer's own metadata only covers assigned topics; ask the cluster.
            parts = await _partitions(settings, name, max(0.1, deadline - loop.time()))
            if parts:
                tps = [TopicPartition(name, p) for p in sorted(parts)]
                break
            if min_records <= 0 or loop.time() >= deadline:
                return records
            await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            ends = await consumer.end_offsets(tps)
            caught_up = all(await _positions_reached(consumer, ends))
            if caught_up and len(records) >= min_records:
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return records
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            records.extend(_record(m) for tp_records in batch.values() for m in tp_records)
    except TimeoutError:
        return records
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailableError(f"reading {name} failed: {exc!r}") from exc
    finally:
        await _quiet_stop(consumer)


async def _partitions(settings: Settings, topic: str, timeout: float) -> set[int]:
    client = AIOKafkaClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000) + 1)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout)
        return set(metadata.partitions_for_topic(topic) or ())
    finally:
        await _quiet_close(client)


def _record(m: Any) -> Record:
    """An aiokafka ConsumerRecord as the hub's :class:`Record`."""
    return Record(key=m.key, value=m.value,
                  headers={k: bytes(v) for k, v in (m.headers or ())},
                  partition=m.partition, offset=m.offset, timestamp=m.timestamp,
                  topic=m.topic)


async def _positions_reached(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> list[bool]:
    return [await consumer.position(tp) >= end for tp, end in ends.items()]


# ---------------------------------------------------------------------- readiness


async def broker_ready(bootstrap: str, timeout: float, *, settings: Settings | None = None) -> bool:
    """True once a broker at ``bootstrap`` answers a metadata request, else False.

    ``settings`` supplies TLS/SASL when the cluster needs them (plaintext otherwise).
    """
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap}
    if settings is not None:
        kw = {**client_kwargs(settings), "bootstrap_servers": bootstrap}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        client = AIOKafkaClient(**kw, request_timeout_ms=max(1000, int(remaining * 1000)))
        try:
            await asyncio.wait_for(client.bootstrap(), remaining)
            return True
        except (KafkaError, OSError, TimeoutError):
            pass
        finally:
            await _quiet_close(client)
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))


async def _quiet_close(client: Any) -> None:
    try:
        await client.close()
    except Exception as exc:
        log.debug("kafka client close failed: %r", exc)


# ------------------------------------------------------------- offsets and lag


def _offsets_consumer(settings: Settings, timeout: float) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        client_id=f"{settings.app_id}-offsets",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=max(5000, int(timeout * 1000) + 1000),
    )


async def end_offsets(settings: Settings, topics: Iterable[str], *, timeout: float = 10.0
                      ) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (beginning offset, end offset) for every partition of
    ``topics`` (catalogue names or prefixed). Topics that do not exist are left out."""
    names = [full_topic(settings, t) for t in topics]
    consumer = _offsets_consumer(settings, timeout)
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        tps: list[TopicPartition] = []
        for name in names:
            tps += [TopicPartition(name, p)
                    for p in sorted(await _partitions(settings, name, timeout))]
        if not tps:
            return {}
        begin = await asyncio.wait_for(consumer.beginning_offsets(tps), timeout)
        end = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        return {(tp.topic, tp.partition): (int(begin[tp]), int(end[tp])) for tp in tps}
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailableError(f"reading offsets failed: {exc!r}") from exc
    finally:
        await _quiet_stop(consumer)


_NO_ADMIN_OFFSETS: set[str] = set()
"""Bootstrap strings whose brokers refused the admin OffsetFetch (the embedded one)."""


async def group_lag(settings: Settings, group: str, topics: Iterable[str], *,
                    timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """Consumer lag of ``group``: end offset minus committed offset, per partition.

    Covers every partition of ``topics`` (a partition without a commit yet lags by
    everything still retained in it, as the group reads from the earliest offset) and
    any other partition the group has committed on. The same definition as Kafka's
    ``kafka-consumer-groups --describe``: records not yet committed, not "not yet read".
    """
    names = [full_topic(settings, t) for t in topics]
    done: dict[tuple[str, int], int] | None = None
    bootstrap = settings.kafka_bootstrap or ""
    if bootstrap not in _NO_ADMIN_OFFSETS:
        admin = await _start_admin(settings, timeout)
        try:
            committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group),
                                               timeout)
            done = {(tp.topic, tp.partition): int(m.offset) for tp, m in committed.items()}
        except (KafkaError, OSError, TimeoutError):
            # The embedded broker drops the admin OffsetFetch (all partitions) request;
            # remember, so every scrape does not log aiokafka's error again.
            _NO_ADMIN_OFFSETS.add(bootstrap)
        finally:
            await _quiet_stop(admin)
    if done is None:
        # Partition by partition, as a consumer of the group would (without joining).
        done = await _committed(settings, group, names, timeout)
    wanted = set(names) | {t for t, _ in done}
    offsets = await end_offsets(settings, sorted(wanted), timeout=timeout)
    lag: dict[tuple[str, int], int] = {}
    for tp, (begin, end) in offsets.items():
        at = done.get(tp, -1)
        lag[tp] = max(0, end - (at if at >= 0 else begin))
    return lag


async def fetch_record(settings: Settings, topic: str, partition: int, offset: int, *,
                       timeout: float = 10.0) -> Record | None:
    """The record at (topic, partition, offset), or None if it is gone (retention)."""
    name = full_topic(settings, topic)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        client_id=f"{settings.app_id}-fetch",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=max_record_bytes(settings),
        fetch_max_bytes=max(52428800, max_record_bytes(settings)),
        request_timeout_ms=max(5000, int(timeout * 1000) + 1000),
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        tp = TopicPartition(name, partition)
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not begin <= offset < end:
            return None
        consumer.seek(tp, offset)
        while loop.time() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for m in batch.get(tp, ()):
                if m.offset == offset:
                    return _record(m)
                if m.offset > offset:  # compacted away
                    return None
        return None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailableError(f"fetching {name}/{partition}/{offset} failed: {exc!r}"
                                    ) from exc
    finally:
        await _quiet_stop(consumer)


async def _committed(settings: Settings, group: str, topics: list[str], timeout: float
                     ) -> dict[tuple[str, int], int]:
    # group_id set but never subscribed: committed() asks the coordinator, no join.
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), client_id=f"{settings.app_id}-lag", group_id=group,
        enable_auto_commit=False, request_timeout_ms=max(5000, int(timeout * 1000) + 1000))
    out: dict[tuple[str, int], int] = {}
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        for name in topics:
            for p in sorted(await _partitions(settings, name, timeout)):
                at = await asyncio.wait_for(consumer.committed(TopicPartition(name, p)),
                                            timeout)
                if at is not None:
                    out[(name, p)] = int(at)
        return out
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailableError(f"reading offsets of group {group} failed: {exc!r}"
                                    ) from exc
    finally:
        await _quiet_stop(consumer)


# ------------------------------------------------------------------------ tailing


class TopicTail:
    """Follow a topic from the beginning, without a consumer group (every process that
    keeps a view sees every record). ``poll`` returns what arrived since the last call.

    For in-memory views (hub.api_common.TopicView: the referral and task views); a
    topic that does not exist yet is looked for again on every poll. Errors are
    :class:`KafkaUnavailableError`.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self.topic = full_topic(settings, topic)
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[int] = set()

    async def start(self, timeout: float = 30.0) -> None:
        if self._consumer is not None:
            return
        s = self._settings
        consumer = AIOKafkaConsumer(
            **client_kwargs(s), client_id=f"{s.app_id}-tail", group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=max_record_bytes(s),
            fetch_max_bytes=max(52428800, max_record_bytes(s)))
        try:
            await asyncio.wait_for(consumer.start(), timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _quiet_stop(consumer)
            raise KafkaUnavailableError(f"tailing {self.topic} failed: {exc!r}") from exc
        self._consumer = consumer

    async def _assign(self, timeout: float) -> None:
        assert self._consumer is not None
        # Only called while nothing is assigned (poll): every partition starts at the
        # beginning. Partitions added later are not picked up until the tail restarts.
        parts = await _partitions(self._settings, self.topic, timeout)
        if parts:
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            self._assigned = parts

    async def poll(self, timeout: float = 1.0, max_records: int = 10_000) -> list[Record]:
        """Records since the last poll (waits up to ``timeout`` when there are none)."""
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        try:
            if not self._assigned:
                await self._assign(max(1.0, timeout))
                if not self._assigned:
                    await asyncio.sleep(timeout)
                    return []
            batch = await self._consumer.getmany(timeout_ms=int(timeout * 1000),
                                                 max_records=max_records)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailableError(f"tailing {self.topic} failed: {exc!r}") from exc
        return [_record(m) for tp_records in batch.values() for m in tp_records]

    async def caught_up(self) -> bool:
        """Every partition read up to the end offset it had when asked."""
        if self._consumer is None or not self._assigned:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(self._assigned)]
        try:
            ends = await self._consumer.end_offsets(tps)
            return all(await _positions_reached(self._consumer, ends))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailableError(f"tailing {self.topic} failed: {exc!r}") from exc

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._assigned = set()
        if consumer is not None:
            await _quiet_stop(consumer)
