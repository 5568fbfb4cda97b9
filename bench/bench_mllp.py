"""MLLP ingest throughput: ACKed messages/s over N concurrent connections.

    .venv/bin/python bench/bench_mllp.py --bootstrap 127.0.0.1:9092   # a running cluster
    .venv/bin/python bench/bench_mllp.py --apache                      # start Apache Kafka
    .venv/bin/python bench/bench_mllp.py                             # embedded Tansu

Starts the real ingest stack in-process (DurableProducer acks=all, MLLP server on an
ephemeral port), sends --messages distinct ADT^A01 messages over --connections
connections (one in flight per connection, as MLLP requires) and prints messages/s and
ACK latency percentiles. Every message must come back AA; the run fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.brokers.apache import ApacheKafkaCluster
from hub.brokers.embedded import EmbeddedBroker
from hub.ingest import INGEST_TOPICS, AckStore, Ingestor, MllpServer
from hub.kafka import DurableProducer, ensure_topics
from hub.logging import configure
from hub.settings import Settings
from mappers.mllp import Frame, MllpDecoder, encode_frame


def message(i: int, run: str) -> bytes:
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|HUB|CM|20260301120000-0500||ADT^A01^ADT_A01|{run}-{i}|P|2.5.1\r"
        f"EVN|A01|20260301120000-0500\r"
        f"PID|1||MRN{i % 5000:06d}^^^GENHOSP^MR||DOE^JANE||19600101|F\r"
        f"PV1|1|I|4W^401^A^GENHOSP||||1234^WELBY^MARCUS|||MED||||||||||V{run}{i}|||||||||"
        f"||||||||||||||||20260301115500-0500\r"
    ).encode()


async def connection(port: int, messages: list[bytes], latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = MllpDecoder(1 << 20)
    ok = 0
    try:
        for msg in messages:
            t0 = time.perf_counter()
            writer.write(encode_frame(msg))
            await writer.drain()
            frame: bytes | None = None
            while frame is None:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                for ev in decoder.feed(data):
                    if isinstance(ev, Frame):
                        frame = ev.payload
            latencies.append(time.perf_counter() - t0)
            if b"\rMSA|AA|" in frame:
                ok += 1
    finally:
        writer.close()
    return ok


async def run(bootstrap: str, *, idempotent: bool, connections: int, total: int,
              warmup: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap=bootstrap, kafka_idempotence=idempotent,
                        topic_prefix=f"bench{tag}.", partitions=6, mllp_port=0)
    producer = DurableProducer(settings)
    await producer.start()
    await ensure_topics(settings, INGEST_TOPICS)
    ingestor = Ingestor(settings, producer, ack_store=AckStore(settings, producer))
    server = MllpServer(ingestor, settings, port=0)
    await server.start()
    try:
        # The senders run in another process, as real EHRs do: the hub's process
        # measures only the hub's work.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client-port", str(server.port), "--run-tag", tag,
            "--connections", str(connections), "--messages", str(total),
            "--warmup", str(warmup), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        res = json.loads(out)
    finally:
        await server.stop()
        await producer.stop()
    return res


async def client_main(port: int, tag: str, connections: int, total: int,
                      warmup: int) -> dict[str, float]:
    warm = [message(i, f"w{tag}") for i in range(warmup)]
    await connection(port, warm, [])
    msgs = [message(i, tag) for i in range(total)]
    shards = [msgs[i::connections] for i in range(connections)]
    latencies: list[float] = []
    t0 = time.perf_counter()
    oks = await asyncio.gather(*(connection(port, s, latencies) for s in shards))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    acked = sum(oks)
    return {
        "messages": total,
        "acked_aa": acked,
        "elapsed_s": elapsed,
        "acked_per_s": acked / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start embedded Tansu)")
    p.add_argument("--apache", action="store_true",
                   help="start the project's single-broker Apache Kafka (KRaft) for the run")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--no-idempotence", action="store_true",
                   help="plain acks=all producer (forced for the embedded broker)")
    p.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run-tag", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client_port:
        print(json.dumps(asyncio.run(client_main(args.client_port, args.run_tag,
                                                 args.connections, args.messages,
                                                 args.warmup))))
        return 0
    configure("WARNING", "console")  # per-message log lines out of the measurement

    broker: EmbeddedBroker | ApacheKafkaCluster | None = None
    bootstrap = args.bootstrap
    idempotent = not args.no_idempotence
    kind = f"Kafka at {bootstrap}"
    if bootstrap is None and args.apache:
        broker = ApacheKafkaCluster(brokers=1)
        bootstrap = broker.start()
        kind = "Apache Kafka (1 broker, KRaft)"
    elif bootstrap is None:
        broker = EmbeddedBroker()
        bootstrap = broker.start()
        idempotent = False
        kind = "embedded Tansu"
    try:
        res = asyncio.run(run(bootstrap, idempotent=idempotent, connections=args.connections,
                              total=args.messages, warmup=args.warmup))
    finally:
        if broker is not None:
            broker.stop()
    print(f"MLLP ingest on {kind}: {args.connections} connections, acks=all, "
          f"idempotent={idempotent}")
    print(f"  sent {res['messages']:.0f}, AA {res['acked_aa']:.0f}, "
          f"{res['elapsed_s']:.2f} s -> {res['acked_per_s']:.0f} ACKed messages/s")
    print(f"  ACK latency p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms")
    return 0 if res["acked_aa"] == res["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
