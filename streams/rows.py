"""One stored row at a time, for the timers' passes over their tables.

A timer pass (the care tick, the webhook delivery tick) walks stored rows of its
partition. A row that cannot be handled (a value this worker cannot parse, written by a
newer or buggy worker; a rule raising for that one patient or delivery) must not end
the pass: the pass would stop there on every tick, and every other row of the partition
behind it would never be escalated or retried again. So each row's work runs here on
its own: a failure is logged with the partition and a PHI-free reference to the row,
counted by the caller, and the row is left as stored for the next pass (or a fixed
worker) to handle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import structlog

log = structlog.stdlib.get_logger("streams.rows")

R = TypeVar("R")

RowRef = Callable[[R], Mapping[str, Any]]
"""A row's log fields naming it without PHI (``patient_ref``, ``delivery_id``)."""


async def handle_row(row: R, handle: Callable[[R], Awaitable[None]], *, event: str,
                     partition: int, ref: RowRef[R]) -> bool:
    """``handle(row)``; False (after logging ``event``) if it raised."""
    try:
        await handle(row)
    except Exception as exc:
        try:
            fields = dict(ref(row))
        except Exception:  # the reference is for the log only: never a second failure
            fields = {}
        log.error(event, partition=partition, exc_type=type(exc).__name__, **fields)
        return False
    return True


async def handle_rows(rows: Iterable[R], handle: Callable[[R], Awaitable[None]], *,
                      event: str, partition: int, ref: RowRef[R]) -> int:
    """``handle`` each row in order, each on its own (:func:`handle_row`); how many
    failed. An iterator that itself raises is not caught: pass a list."""
    failed = 0
    for row in rows:
        if not await handle_row(row, handle, event=event, partition=partition, ref=ref):
            failed += 1
    return failed


def marked_elsewhere(mark: bytes | None, partition: int) -> bool:
    """Does a row's due mark (``partition|...``: ``episodes-due``, ``deliveries-due``)
    put it on another partition? A first-tick sweep reads a table's items, which span
    every partition this process holds: it leaves such a row to its own partition's
    sweep, so a row that fails is reported once, under its own partition."""
    if not mark:
        return False
    part, sep, _ = mark.partition(b"|")
    return bool(sep) and part.isdigit() and int(part) != partition
