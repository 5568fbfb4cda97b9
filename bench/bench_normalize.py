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


async def _outputs(settings, topic: str, n: int, timeout: float) -> list:  # type: ignore[no-untyped-def]
    from hub.kafka import read_topic

    return await read_topic(settings, settings.topic(topic), timeout=timeout, min_records=n)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream(n: int, bootstrap: str | None, partitions: int = 1) -> float:
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
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions,
                        kafka_idempotence=idem)
    try:
        asyncio.run(_produce(settings, messages))
        env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": bootstrap, "HUB_TOPIC_PREFIX": prefix,
               "HUB_APP_ID": f"bench-{prefix}", "HUB_PARTITIONS": str(partitions),
               "HUB_LOG_LEVEL": "WARNING",
               "HUB_KAFKA_IDEMPOTENCE": str(idem).lower()}
        if embedded is not None:  # see hub.runner.broker: Tansu holds joins for the timeout
            env.update(HUB_GROUP_SESSION_TIMEOUT_S="6", HUB_GROUP_REBALANCE_TIMEOUT_S="3")
        start = time.perf_counter()
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get(
            "BENCH_PROFILE") else []
        proc = subprocess.Popen([sys.executable, *profile, "-m", "hub.cli", "worker"], cwd=REPO,
                                env=env)
        try:
            records = asyncio.run(_outputs(settings, "care.events", n, timeout=600))
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        stamps = sorted(r.timestamp for r in records)
        busy = max((stamps[-1] - stamps[0]) / 1000, 1e-3) if stamps else float("nan")
        print(f"stream: {len(records)}/{n} events; {elapsed:.1f}s wall including worker "
              f"start-up; first to last output {busy:.1f}s; worker CPU {cpu:.1f}s "
              f"(start-up included) -> {len(records) / cpu:,.0f} events per CPU-second")
        return len(records) / busy
    finally:
        if embedded is not None:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--bootstrap")
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()
    print(f"normalize (pure step, 1 core): {pure(args.messages):,.0f} ADT messages/s")
    if args.stream:
        rate = stream(args.messages, args.bootstrap, args.partitions)
        print(f"normalize (faust worker, {args.partitions} partition(s), 1 process): "
              f"{rate:,.0f} ADT messages/s")


if __name__ == "__main__":
    main()
