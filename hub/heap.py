"""The process heap's garbage-collector settings, shared by the worker and the benchmark.

The care stages allocate several small models per event, almost none of them in
reference cycles (reference counting frees them). CPython's default first-generation
threshold (700 net allocations) makes the collector scan young objects thousands of
times a second for cycles that are not there; each scan also walks into the older
generations every 10th time. A higher threshold does the same work less often: on the
pure-step benchmark (bench/bench_decide.py) the collector's share of the step fell from
5.5% to none with 1,000 journeys, and from 12% to 6% with 10,000 (whose states the
benchmark holds in memory, where a worker keeps them in its store). Memory held in
cyclic garbage can grow by at most that many objects between collections.

The benchmark calls :func:`settle` exactly as the worker does, so its figure is the
worker's configuration, not a tuned special case.
"""

from __future__ import annotations

import gc

DEFAULT_GEN0_THRESHOLD = 50_000


def settle(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> None:
    """Call once start-up has loaded what lives as long as the process (modules, rules,
    roster, FHIR models): collect, move all of it out of the collector's generations
    (``gc.freeze``, so no full collection rescans it), and set the first generation's
    threshold (the older generations keep theirs)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
