"""Throughput of the HL7 v2 hot path on the corpus ADT messages (single core).

Run: ``.venv/bin/python bench/bench_map.py [--messages 20000] [--corpus DIR]``.
Prints messages/s for ``map_hl7v2`` (parse + map + canonical model build), for
``map_hl7v2`` plus JSON serialisation (what ``hub map`` does per message) and for
``read_header`` (what ingest does per message to build the ACK).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from mappers.hl7v2 import map_hl7v2, read_header, split_messages
from schemas.canonical import CanonicalEvent, dump_event
from schemas.errors import MappingError

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    env = os.environ.get("HUB_CORPUS_DIR")
    return Path(env) if env else (REPO.parent / "shared" / "corpus").resolve()


def adt_messages(root: Path) -> list[bytes]:
    """Every corpus message that maps (the ADT messages the hub accepts)."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".hl7", ".txt") or not path.is_file():
            continue
        for raw in split_messages(path.read_bytes()):
            try:
                map_hl7v2(raw, received_at=at)
            except MappingError:
                continue
            out.append(raw)
    return out


def rate(label: str, fn: Callable[[bytes], object], messages: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in messages:
        fn(raw)
    elapsed = time.perf_counter() - start
    per_s = len(messages) / elapsed
    print(f"{label:<34} {len(messages):>7} msgs  {elapsed:6.2f} s  {per_s:>10,.0f} msg/s")
    return per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    base = adt_messages(args.corpus or corpus_dir())
    if not base:
        raise SystemExit("no mappable corpus messages found")
    messages = (base * (args.messages // len(base) + 1))[: args.messages]
    print(f"{len(base)} distinct corpus ADT messages, repeated to {len(messages)}")
    at = datetime(2024, 1, 1, tzinfo=UTC)

    def mapped(raw: bytes) -> list[CanonicalEvent]:
        return map_hl7v2(raw, received_at=at, default_tz="Europe/London")

    def mapped_json(raw: bytes) -> object:
        return [orjson.dumps(dump_event(e)) for e in mapped(raw)]

    rate("read_header", read_header, messages)
    rate("map_hl7v2", mapped, messages)
    rate("map_hl7v2 + dump_event + orjson", mapped_json, messages)


if __name__ == "__main__":
    main()
