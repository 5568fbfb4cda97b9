"""Pure care-decision step throughput (no Kafka, no FHIR rendering unless --fhir).

``python bench/bench_decide.py [--patients N] [--mix journeys|hospital] [--fhir]
[--repeat R] [--profile]``: maps the synthetic feed once, then times the in-memory
topology (streams.care.offline: episodes + caseloads stages, the same functions the
agents run) over the canonical events, on one core, R times (default 5), each from empty
state with a fresh context, and prints the best and the median. Only the care step is
inside the timed region: mapping happens before it. The heap is settled as the worker
settles its own (hub.heap). ``--profile`` runs the same loop under cProfile and prints
where the time went (the figure then includes the profiler's own overhead: compare it
only with other profiled runs). Each event's outputs are dropped once counted, as a
worker drops them once published; ``--keep-outputs`` keeps them all, as ``hub decide``
does (the collector then rescans thousands of live outputs: about a tenth slower).

``--mix`` picks the feed (hub.feed): ``journeys`` (the default) is inpatient journeys
only, every message one the rules act on: the costly end, and the figure tracked across
versions. ``hospital`` puts the same journeys inside a hospital's everyday traffic in the
proportions REFERENCE.md records (A08 48%, A31 30%, A04 17%, A01 1%): about 100 messages
per journey, so ``--patients`` is best kept to a few hundred there.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from hub import heap
from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
from schemas.canonical import CanonicalEvent
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun

SAMPLES = Path(__file__).resolve().parents[1] / "hub" / "samples"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=2000,
                        help="inpatient journeys in the feed")
    parser.add_argument("--mix", choices=["journeys", "hospital"], default="journeys",
                        help="inpatient journeys only, or inside a hospital's everyday "
                             "traffic (module docstring)")
    parser.add_argument("--fhir", action="store_true", help="also render FHIR resources")
    parser.add_argument("--profile", action="store_true",
                        help="profile the timed loop (cProfile) and print the top functions")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep every output alive to the end, as hub decide does "
                             "(the figure then includes the collector rescanning them)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs, each from empty state and a fresh context (cold "
                             "memos); the best and the median are printed")
    args = parser.parse_args()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    events = [e for m in generate(FeedConfig(patients=args.patients, bad_messages=False,
                                                mix=args.mix))
              for e in map_hl7v2(m, received_at=at, default_tz="America/New_York")]
    rules = load_rules(None, default_tz="America/New_York")
    roster = load_roster(SAMPLES / "roster.yaml")
    runs = 1 if args.profile else max(1, args.repeat)
    times: list[float] = []
    produced = 0
    for _ in range(runs):
        profiler = cProfile.Profile() if args.profile else None
        cpu, produced = _timed(events, CareContext(config=rules, roster=roster,
                                                   render_fhir=args.fhir),
                               keep_outputs=args.keep_outputs, profiler=profiler)
        times.append(cpu)
    best, median = min(times), statistics.median(times)
    print(f"decide (pure step, 1 core, {args.mix} mix, FHIR {'on' if args.fhir else 'off'}"
          f"{', profiled' if args.profile else ''}"
          f"{', outputs kept' if args.keep_outputs else ''}): "
          f"{len(events)} events -> {produced} outputs in {best:.2f} CPU s = "
          f"{len(events) / best:,.0f} events/s (best of {runs}; median "
          f"{len(events) / median:,.0f})")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def _timed(events: list[CanonicalEvent], ctx: CareContext, *, keep_outputs: bool,
           profiler: cProfile.Profile | None) -> tuple[float, int]:
    """One run over ``events`` from empty state: (CPU seconds, outputs produced)."""
    run = OfflineRun(ctx)
    # As the worker settles its heap once started (hub.heap): the pre-mapped feed is
    # scaffolding a worker never holds (it reads one record at a time), and frozen with
    # the rest it is not rescanned.
    heap.settle()
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    produced = 0
    if keep_outputs:
        for ev in events:
            run.event(ev, tick=False)
        produced = len(run.outputs)
    else:
        # As a worker does: each event's outputs are handed on (published), then let go.
        outputs = run.outputs
        for ev in events:
            run.event(ev, tick=False)
            produced += len(outputs)
            outputs.clear()
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - start
    # The previous run's state is garbage now: unfreeze so the next settle collects it
    # instead of keeping it frozen.
    gc.unfreeze()
    return cpu, produced


if __name__ == "__main__":
    main()
