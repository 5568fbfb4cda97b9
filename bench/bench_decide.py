"""Pure care-decision step throughput (no Kafka, no FHIR rendering unless --fhir).

``python bench/bench_decide.py [--patients N] [--mix journeys|hospital] [--fhir]
[--profile]``: maps the synthetic feed once, then times the in-memory topology
(streams.care.offline: episodes + caseloads stages, the same functions the agents run)
over the canonical events, on one core. Only the care step is inside the timed region:
mapping happens before it. ``--profile`` runs the same loop under cProfile and prints
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
import time
from datetime import UTC, datetime
from pathlib import Path

from hub.commands.decide_cmd import load_roster, load_rules
from hub.feed import FeedConfig, generate
from mappers.hl7v2 import map_hl7v2
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
    args = parser.parse_args()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    events = [e for m in generate(FeedConfig(patients=args.patients, bad_messages=False,
                                                mix=args.mix))
              for e in map_hl7v2(m, received_at=at, default_tz="America/New_York")]
    ctx = CareContext(config=load_rules(None, default_tz="America/New_York"),
                      roster=load_roster(SAMPLES / "roster.yaml"), render_fhir=args.fhir)
    run = OfflineRun(ctx)
    profiler = cProfile.Profile() if args.profile else None
    # The pre-mapped feed is scaffolding a worker never holds (it reads one record at a
    # time): keep it out of the cyclic GC's generations, which otherwise rescan it.
    gc.collect()
    gc.freeze()
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    produced = 0
    if args.keep_outputs:
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
    print(f"decide (pure step, 1 core, {args.mix} mix, FHIR {'on' if args.fhir else 'off'}"
          f"{', profiled' if profiler else ''}"
          f"{', outputs kept' if args.keep_outputs else ''}): "
          f"{len(events)} events -> {produced} outputs in {cpu:.2f} CPU s = "
          f"{len(events) / cpu:,.0f} events/s")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
