"""Feed silence: is a sending facility quieter than ops expect at this hour?

Pure functions (time is passed in), so the rule is tested without clocks or sockets.
Integration engines rarely notice an idle feed (REFERENCE.md section 3): an interface
that stopped at 02:00 is found at 09:00 by a case manager missing her discharges. An
ADT feed is never truly idle in daytime, but a small hospital may send nothing for an
hour at night, hence a threshold that depends on the feed's local hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.settings import FeedSilenceRule


@dataclass(frozen=True)
class FeedStatus:
    feed: str
    age_s: float | None
    """Seconds since the last message (None: never seen and no rule to judge by)."""
    threshold_s: float | None
    """Quiet time allowed right now (None: no rule configured for this feed)."""
    silent: bool
    seen: bool
    """False when the feed has not sent anything since this process started (its age
    is then measured from the start: a lower bound, not the real age)."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_hours(hour: int, hours: tuple[int, int]) -> bool:
    """``hour`` within ``[start, end)``, wrapping midnight when ``start > end``."""
    start, end = hours
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def threshold_s(rule: FeedSilenceRule, now: datetime, tz: str) -> float:
    """The quiet time allowed for a feed at ``now`` (aware), judged in its local hour."""
    if rule.night_hours is not None and rule.night_s is not None:
        hour = now.astimezone(_zone(tz)).hour
        if in_hours(hour, rule.night_hours):
            return rule.night_s
    return rule.default_s


def feed_status(feed: str, *, last_seen: datetime | None, started_at: datetime,
                now: datetime, rule: FeedSilenceRule | None, tz: str) -> FeedStatus:
    """Age of ``feed``'s last message and whether it counts as silent at ``now``.

    A feed never seen since ``started_at`` is measured from the start: a configured
    feed that sends nothing after a restart must still raise the flag, just not before
    its threshold has had time to pass.
    """
    since = last_seen if last_seen is not None else started_at
    age = max(0.0, (now - since).total_seconds())
    if rule is None:
        return FeedStatus(feed, age if last_seen is not None else None, None, False,
                          last_seen is not None)
    limit = threshold_s(rule, now, tz)
    return FeedStatus(feed, age, limit, age > limit, last_seen is not None)


def rule_for(feed: str, rules: dict[str, FeedSilenceRule]) -> FeedSilenceRule | None:
    """The feed's own rule, else the ``"*"`` default, else None (not watched)."""
    return rules.get(feed) or rules.get("*")
