"""Normalize throughput: prints figures, asserts nothing (speed lives here, not in tests).

1. The pure step (``streams.normalize.normalize``: header, dedup key, full ADT mapping)
   over the synthetic feed, single core.
2. With ``--stream``: the faust worker end to end on a broker (``--bootstrap``, else the
   embedded one): N raw messages are produced to ``ehr.hl7v2`` first, then the worker
   is started and timed until ``care.events`` holds N events.

    python bench/bench_normalize.py [--messages 20000] [--stream] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hub.feed import FeedConfig, generate  # noqa: E402
from streams.normalize import RawRecord, dedup_key, normalize  # noqa: E402


def pure(n: int) -> float:
    feed = list(generate(FeedConfig(patients=200, bad_messages=False)))
    records = [RawRecord("hl7v2", feed[i % len(feed)], {}) for i in range(n)]
    now = datetime.now(UTC)
    start = time.perf_counter()
    for rec in records:
        dedup_key(rec)
        normalize(rec, now=now, default_tz="UTC", feed_timezones={})
    return n / (time.perf_counter() - start)


async def _produce(settings, messages: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    from hub.kafka import DurableProducer, ensure_topics
    from schemas.topics import CATALOGUE

    await ensure_topics(settings, CATALOGUE)
    producer = DurableProducer(settings, idempotent=settings.kafka_idempotence)
    await producer.start()
    try:
        for i, msg in enumerate(messages):
            await producer.send(settings.topic("ehr.hl7v2"), msg, key=str(i % 97).encode(),
                                headers=[("hub-dedup-key", f"bench|{i}".encode())], timeout=30)
    finally:
        await producer.stop()


async def _count(settings, topic: str, n: int, timeout: float) -> int:  # type: ignore[no-untyped-def]
    from hub.kafka import read_topic

    records = await read_topic(settings, settings.topic(topic), timeout=timeout, min_records=n)
    return len(records)


def stream(n: int, bootstrap: str | None) -> float:
    from hub.brokers.embedded import EmbeddedBroker
    from hub.settings import Settings

    feed = list(generate(FeedConfig(patients=200, bad_messages=False)))
    messages = [feed[i % len(feed)] for i in range(n)]
    embedded = None
    if bootstrap is None:
        embedded = EmbeddedBroker()
        embedded.start()
        bootstrap = embedded.bootstrap
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    idem = embedded is None
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=1,
                        kafka_idempotence=idem)
    try:
        asyncio.run(_produce(settings, messages))
        env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": bootstrap, "HUB_TOPIC_PREFIX": prefix,
               "HUB_APP_ID": f"bench-{prefix}", "HUB_PARTITIONS": "1", "HUB_LOG_LEVEL": "WARNING",
               "HUB_KAFKA_IDEMPOTENCE": str(idem).lower()}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "worker"], cwd=REPO, env=env)
        try:
            got = asyncio.run(_count(settings, "care.events", n, timeout=600))
            elapsed = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(30)
        print(f"stream: {got}/{n} events in {elapsed:.1f}s (includes worker start-up)")
        return got / elapsed
    finally:
        if embedded is not None:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    print(f"normalize (pure step, 1 core): {pure(args.messages):,.0f} ADT messages/s")
    if args.stream:
        rate = stream(args.messages, args.bootstrap)
        print(f"normalize (faust worker, 1 partition, 1 process): {rate:,.0f} ADT messages/s")


if __name__ == "__main__":
    main()
