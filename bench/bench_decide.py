"""Pure care-decision step throughput (no Kafka, no FHIR rendering unless --fhir).

``python bench/bench_decide.py [--patients N] [--fhir] [--profile]``: maps the synthetic
feed once, then times the in-memory topology (streams.care.offline: episodes + caseloads
stages, the same functions the agents run) over the canonical events, on one core. Only
the care step is inside the timed region: mapping happens before it. ``--profile`` runs
the same loop under cProfile and prints where the time went (the figure then includes
the profiler's own overhead: compare it only with other profiled runs).
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
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--fhir", action="store_true", help="also render FHIR resources")
    parser.add_argument("--profile", action="store_true",
                        help="profile the timed loop (cProfile) and print the top functions")
    args = parser.parse_args()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    events = [e for m in generate(FeedConfig(patients=args.patients, bad_messages=False))
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
    for ev in events:
        run.event(ev, tick=False)
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - start
    print(f"decide (pure step, 1 core, FHIR {'on' if args.fhir else 'off'}"
          f"{', profiled' if profiler else ''}): "
          f"{len(events)} events -> {len(run.outputs)} outputs in {cpu:.2f} CPU s = "
          f"{len(events) / cpu:,.0f} events/s")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
