"""The timers' per-row isolation (:mod:`streams.rows`): one row that raises is logged
and counted, and every other row is still handled, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from streams.rows import handle_row, handle_rows, marked_elsewhere


class Boom(Exception):
    pass


def test_a_failing_row_is_logged_and_counted_and_the_others_run_in_order() -> None:
    seen: list[str] = []

    async def handle(row: tuple[str, int]) -> None:
        if row[1] < 0:
            raise Boom("secret detail never logged")
        seen.append(row[0])

    rows = [("a", 1), ("b", -1), ("c", 2), ("d", -2), ("e", 3)]
    with capture_logs() as logs:
        failed = asyncio.run(handle_rows(rows, handle, event="thing_row_failed",
                                         partition=4, ref=lambda r: {"row_ref": r[0]}))
    assert failed == 2
    assert seen == ["a", "c", "e"]
    assert logs == [
        {"event": "thing_row_failed", "log_level": "error", "partition": 4,
         "exc_type": "Boom", "row_ref": "b"},
        {"event": "thing_row_failed", "log_level": "error", "partition": 4,
         "exc_type": "Boom", "row_ref": "d"},
    ]


def test_a_reference_that_fails_too_still_logs_the_row_failure() -> None:
    async def handle(row: Any) -> None:
        raise ValueError

    def ref(row: Any) -> dict[str, str]:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")

    with capture_logs() as logs:
        ok = asyncio.run(handle_row(b"\xff", handle, event="x_failed", partition=0, ref=ref))
    assert ok is False
    assert logs == [{"event": "x_failed", "log_level": "error", "partition": 0,
                     "exc_type": "ValueError"}]


def test_cancellation_is_not_swallowed() -> None:
    async def handle(row: int) -> None:
        raise asyncio.CancelledError

    async def run() -> int:
        return await handle_rows([1], handle, event="x", partition=0, ref=lambda r: {})

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        return
    raise AssertionError("CancelledError was swallowed")


def test_marked_elsewhere_only_for_a_readable_other_partition() -> None:
    assert marked_elsewhere(b"3|123|1", 2)
    assert not marked_elsewhere(b"2|123|1", 2)
    assert marked_elsewhere(b"12|123|1", 1)  # the whole number, not a prefix
    assert not marked_elsewhere(b"12|123|1", 12)
    assert not marked_elsewhere(None, 2)
    assert not marked_elsewhere(b"", 2)
    assert not marked_elsewhere(b"garbage", 2)
    assert not marked_elsewhere(b"x|1|2", 2)
