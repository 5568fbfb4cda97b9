"""What the streams layer needs from the outside, passed in (streams never reads env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
    broker_kwargs: dict[str, object] = field(default_factory=dict)
    """Extra faust broker settings (security), built by the hub from its settings."""

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
