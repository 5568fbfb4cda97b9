"""Times in the timers' due marks (``episodes-due``, ``deliveries-due``), pure.

A mark names the first instant a timer pass could act on a row, in microseconds since
the Unix epoch. Exact integers, not ``datetime.timestamp()``'s float: a mark rounded up
would make the timer one tick late for that row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["epoch_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def epoch_us(at: datetime) -> int:
    """Microseconds since the Unix epoch of an aware ``at``, exactly."""
    return (at - _EPOCH) // _MICRO
