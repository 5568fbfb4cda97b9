"""The live agency directory: tail config.agencies for the workers, push a new one, and
keep every agency's ``referrals.<id>`` topic in existence.

Ops change the directory with ``hub agencies push FILE``: validated here, then written
as JSON to the compacted config.agencies topic (key ``agencies``, latest value wins).
Every worker tails it through :class:`AgencyWatcher`; the referrals stage uses the new
directory from its next input on, without a restart. Before a directory becomes
visible (``latest()``), the watcher creates the topics of the agencies it names, so the
agent never publishes to a topic that does not exist (or gets auto-created with the
wrong settings). ``HUB_AGENCIES_FILE`` is only the starting point until one is pushed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mode

from hub.kafka import DurableProducer, KafkaUnavailableError, ensure_topics, read_topic
from hub.logging import get_logger
from hub.settings import Settings
from schemas.topics import CONFIG_AGENCIES, DAY_MS, TopicSpec, agency_topic
from streams.referrals.directory import (
    Directory,
    DirectoryError,
    parse_directory,
    token_sha256,
)

log = get_logger("hub.agencies")
AGENCIES_KEY = b"agencies"
AGENCY_TOPIC_PARTITIONS = 3


def agency_topic_spec(agency_id: str) -> TopicSpec:
    """``referrals.<id>``: the agency's copies keyed by Task id, latest version wins
    (compacted), kept 90 days like care.referrals."""
    return TopicSpec(
        name=agency_topic(agency_id), key="agency task id", value="AgencyReferral",
        partitions=AGENCY_TOPIC_PARTITIONS, cleanup_policy="compact,delete",
        retention_ms=90 * DAY_MS,
        description="One agency's referrals (minimum-necessary copies), by task id.")


def agency_topic_specs(directory: Directory) -> list[TopicSpec]:
    return [agency_topic_spec(a.id) for a in directory.agencies]


async def ensure_agency_topics(settings: Settings, directory: Directory) -> None:
    """Create the missing ``referrals.<id>`` topics of every agency in ``directory``."""
    await ensure_topics(settings, agency_topic_specs(directory))


class AgencyWatcher(mode.Service):
    """Keeps :meth:`latest` at the newest directory on config.agencies whose agency topics
    exist (a streams feed: ``latest() -> bytes | None``). Polls like the RosterWatcher:
    a one-partition compacted topic, no consumer group (every worker sees every change).
    """

    def __init__(self, settings: Settings, *, interval_s: float = 10.0, **kwargs: Any) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._latest: bytes | None = None
        self._seen: bytes | None = None
        super().__init__(**kwargs)

    def latest(self) -> bytes | None:
        return self._latest

    async def refresh(self) -> None:
        try:
            records = await read_topic(self.settings, CONFIG_AGENCIES.name, timeout=5.0)
        except KafkaUnavailableError as exc:
            log.warning("agencies_read_failed", exc_type=type(exc).__name__)
            return
        values = [r.value for r in records if r.key == AGENCIES_KEY and r.value]
        if not values or values[-1] in (self._latest, self._seen):
            return
        raw = values[-1]
        self._seen = raw
        try:
            directory = Directory.from_json(raw)
        except DirectoryError as exc:
            log.error("agencies_rejected", problems=len(exc.problems))
            return
        try:
            await ensure_agency_topics(self.settings, directory)
        except KafkaUnavailableError as exc:
            log.warning("agency_topics_failed", exc_type=type(exc).__name__)
            self._seen = None  # try again next poll
            return
        self._latest = raw
        log.info("agencies_received", agencies=len(directory.agencies), bytes=len(raw))

    @mode.Service.task
    async def _poll(self) -> None:
        while not self.should_stop:
            await self.refresh()
            await asyncio.sleep(self.interval_s)


def load_directory_file(path: Path) -> Directory:
    """Parse and validate a directory file; raises DirectoryError (or OSError)."""
    return parse_directory(path.read_text(encoding="utf-8"))


async def push_directory(settings: Settings, directory: Directory) -> tuple[int, int]:
    """Create the agencies' topics, then write the directory to config.agencies."""
    await ensure_agency_topics(settings, directory)
    async with DurableProducer(settings) as producer:
        return await producer.send(CONFIG_AGENCIES.name, directory.to_json().encode(),
                                   key=AGENCIES_KEY, timeout=settings.ack_timeout_s)


def new_token() -> tuple[str, str]:
    """A new random bearer token (256 bits, URL-safe) and its SHA-256 for the directory."""
    token = secrets.token_urlsafe(32)
    return token, token_sha256(token)


def summary(directory: Directory) -> Iterable[str]:
    """One line per agency for ``hub agencies check`` (ids and codes only)."""
    for a in directory.agencies:
        area = ",".join(a.service_area.zip + a.service_area.counties) or "anywhere"
        hook = "webhook" if a.delivery.webhook else "topic only"
        api = "api token" if a.api.token_sha256 else "no api token"
        state = "accepting" if a.accepting else "not accepting"
        yield (f"  {a.id}: {','.join(a.services)}; area {area}; "
               f"languages {','.join(a.languages) or 'any'}; {state}; {hook}; {api}")


__all__ = ["AGENCIES_KEY", "AgencyWatcher", "DirectoryError", "agency_topic_spec",
           "ensure_agency_topics", "load_directory_file", "new_token", "push_directory"]
