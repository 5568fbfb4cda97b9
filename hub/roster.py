"""The live roster: tail config.roster for the workers, and push a new one.

Ops change the roster (who is on which team, shifts, PTO, caps) by pushing the YAML file
with ``hub roster push FILE``: it is validated here, then written as JSON to the
compacted config.roster topic (key ``roster``, latest value wins). Every worker tails the
topic through :class:`RosterWatcher` and the care stages use the new roster from their
next input on, without a restart. The file named by ``HUB_ROSTER_FILE`` is only the
starting point until a roster has been pushed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mode

from hub.kafka import DurableProducer, KafkaUnavailableError, read_topic
from hub.logging import get_logger
from hub.settings import Settings
from schemas.topics import CONFIG_ROSTER
from streams.care.roster import Roster, RosterError, parse_roster

log = get_logger("hub.roster")
ROSTER_KEY = b"roster"


class RosterWatcher(mode.Service):
    """Keeps :meth:`latest` at the newest roster on config.roster (a streams RosterFeed).

    Polling a one-partition compacted topic every few seconds is cheap and needs no
    consumer group (every worker must see every change, which a group would prevent).
    """

    def __init__(self, settings: Settings, *, interval_s: float = 10.0, **kwargs: Any) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._latest: bytes | None = None
        super().__init__(**kwargs)

    def latest(self) -> bytes | None:
        return self._latest

    async def refresh(self) -> None:
        try:
            records = await read_topic(self.settings, CONFIG_ROSTER.name, timeout=5.0)
        except KafkaUnavailableError as exc:
            log.warning("roster_read_failed", exc_type=type(exc).__name__)
            return
        values = [r.value for r in records if r.key == ROSTER_KEY and r.value]
        if values and values[-1] != self._latest:
            self._latest = values[-1]
            log.info("roster_received", bytes=len(values[-1]))

    @mode.Service.task
    async def _poll(self) -> None:
        while not self.should_stop:
            await self.refresh()
            await asyncio.sleep(self.interval_s)


def load_roster_file(path: Path) -> Roster:
    """Parse and validate a roster file; raises RosterError (or OSError) with a clear reason."""
    return parse_roster(path.read_text(encoding="utf-8"))


async def push_roster(settings: Settings, roster: Roster) -> tuple[int, int]:
    async with DurableProducer(settings) as producer:
        return await producer.send(CONFIG_ROSTER.name, roster.to_json().encode(),
                                   key=ROSTER_KEY, timeout=settings.ack_timeout_s)


__all__ = ["ROSTER_KEY", "RosterError", "RosterWatcher", "load_roster_file", "push_roster"]
