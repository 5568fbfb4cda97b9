"""What the streams layer needs from the outside, passed in (streams never reads env)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from schemas.referrals import DeliveryJob
    from streams.referrals.delivery import AttemptOutcome, DeliveryPolicy

WebhookSender = Callable[["DeliveryJob", int], Awaitable["AttemptOutcome"]]
"""``await sender(job, attempt_number)`` -> the attempt's outcome; never raises for a
failed delivery (the hub's ``hub.webhooks.WebhookSender``)."""


class RosterFeed(Protocol):
    """The latest roster pushed to config.roster (JSON bytes), or None if none yet."""

    def latest(self) -> bytes | None: ...


@dataclass(frozen=True)
class StreamsConfig:
    bootstrap: str
    app_id: str = "care-hub"
    topic_prefix: str = ""
    partitions: int | None = None
    replication_factor: int = 1
    store: str = "memory://"
    state_dir: Path = Path("var/state")
    default_timezone: str = "UTC"
    feed_timezones: dict[str, str] = field(default_factory=dict)
    dedup_window_s: int = 7 * 24 * 3600
    web_port: int = 6066
    web_enabled: bool = False
    consumer_instance_id: str | None = None
    session_timeout_s: float = 30.0
    """How long the group waits for a silent worker before moving its partitions."""
    rebalance_timeout_s: float = 30.0
    """How long a rebalance waits for members to rejoin (the embedded broker waits for
    all of it even with a single member, so the runner shortens it there)."""
    care: bool = True
    """Run the care stages (episodes, caseloads) besides normalize."""
    rules_yaml: str | None = None
    """The rules file's text (the hub reads the file; streams never touch the disk)."""
    roster_yaml: str | None = None
    """The roster file's text: the starting roster until one arrives on config.roster."""
    roster_feed: RosterFeed | None = None
    """Where live roster changes come from (the hub tails config.roster)."""
    tick_interval_s: float = 60.0
    """How often the timer looks for overdue tasks and episodes to close."""
    agencies_yaml: str | None = None
    """The agency directory file's text: the starting directory until one arrives on
    config.agencies (no directory = referrals are detected but nobody is asked)."""
    agencies_feed: RosterFeed | None = None
    """Where live directory changes come from (the hub tails config.agencies; same
    ``latest() -> bytes | None`` shape as the roster feed)."""
    webhook_sender: WebhookSender | None = None
    """Makes webhook POSTs (the hub owns the HTTP client); None = no delivery agent."""
    webhook_policy: DeliveryPolicy | None = None
    """Retry policy for webhooks; None = the defaults (24 h, 30 s doubling to 1 h)."""
    webhook_tick_interval_s: float = 5.0
    """How often each partition looks for deliveries due for a retry."""
    webhook_attempt_timeout_s: float = 10.0
    """The agent's own bound on one attempt (the sender has its own too)."""
    webhook_concurrency: int = 16
    """Attempts one partition's retry pass makes at once."""
    broker_kwargs: dict[str, object] = field(default_factory=dict)
    """Extra faust broker settings (security), built by the hub from its settings."""

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
