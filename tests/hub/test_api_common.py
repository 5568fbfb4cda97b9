"""TopicView's lifecycle: stop() is prompt even when a library swallows the cancel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from hub.api_common import TopicView
from hub.kafka import Record, TopicTail
from hub.logging import get_logger
from hub.settings import Settings


class _SwallowingView(TopicView):
    """Its poll behaves like aiokafka's bootstrap did: a CancelledError raised inside is
    caught and the call returns normally."""

    event_prefix = "test_view"

    def __init__(self) -> None:
        super().__init__(Settings(kafka_bootstrap="127.0.0.1:9"), poll_s=0.05,
                         log=get_logger("test"))
        self.polls = 0

    def _topics(self) -> Sequence[tuple[str, float, Callable[[Record], object]]]:
        return [("care.tasks", 0.05, lambda _: None)]

    async def _poll_once(self, tails: Sequence[TopicTail],
                         plan: Sequence[tuple[str, float, Callable[[Record], object]]]
                         ) -> None:
        self.polls += 1
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as a library might
            await asyncio.sleep(0.05)


async def test_stop_is_prompt_when_a_cancel_is_swallowed() -> None:
    view: Any = _SwallowingView()
    await view.start()
    await asyncio.sleep(0.2)
    assert view.polls > 0
    started = time.monotonic()
    await view.stop()
    # Not STOP_WAIT_S (15 s): the loop sees cancelling() and ends after one more poll.
    assert time.monotonic() - started < 2.0


def test_throttle_figures_reach_metrics() -> None:
    from hub.api_common import AuthThrottle
    from hub.metrics import HubMetrics

    now = [0.0]
    throttle = AuthThrottle(2, 60.0, clock=lambda: now[0])
    metrics = HubMetrics(Settings())
    metrics.add_provider(throttle)
    assert throttle.failed("10.0.0.1") is False
    assert throttle.failed("10.0.0.1") is True
    throttle.refused += 1  # the gate counts the 429 it answers
    text = metrics.render().decode()
    assert "hub_api_auth_failures_total 2.0" in text
    assert "hub_api_auth_throttled_total 1.0" in text
