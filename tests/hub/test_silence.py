"""Feed silence: the threshold depends on the feed's local hour; time is passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from hub.settings import FeedSilenceRule, Settings
from hub.silence import feed_status, in_hours, rule_for, threshold_s

RULE = FeedSilenceRule(default_s=900, night_s=3600, night_hours=(0, 6))
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(("hour", "hours", "inside"), [
    (0, (0, 6), True), (5, (0, 6), True), (6, (0, 6), False), (23, (0, 6), False),
    (22, (22, 6), True), (2, (22, 6), True), (6, (22, 6), False), (21, (22, 6), False),
])
def test_hours_window_wraps_midnight(hour: int, hours: tuple[int, int], inside: bool) -> None:
    assert in_hours(hour, hours) is inside


def test_threshold_follows_the_feeds_local_hour() -> None:
    assert threshold_s(RULE, at(3), "UTC") == 3600
    assert threshold_s(RULE, at(12), "UTC") == 900
    # 03:00 UTC is 22:00 in New York (EST, UTC-5): daytime rule there.
    assert threshold_s(RULE, at(3), "America/New_York") == 900
    assert threshold_s(RULE, at(7), "America/New_York") == 3600
    assert threshold_s(FeedSilenceRule(default_s=60), at(3), "UTC") == 60


def test_silent_only_past_the_threshold() -> None:
    last = at(12)
    quiet = feed_status("GENHOSP", last_seen=last, started_at=START,
                        now=last + timedelta(seconds=899), rule=RULE, tz="UTC")
    assert (quiet.age_s, quiet.threshold_s, quiet.silent, quiet.seen) == (899, 900, False, True)
    late = feed_status("GENHOSP", last_seen=last, started_at=START,
                       now=last + timedelta(seconds=901), rule=RULE, tz="UTC")
    assert late.silent


def test_night_allows_longer_quiet_and_morning_tightens_it() -> None:
    last = at(1)
    assert not feed_status("G", last_seen=last, started_at=START, now=at(1, 50), rule=RULE,
                           tz="UTC").silent
    # 06:10: daytime threshold applies to a feed quiet since 01:00.
    assert feed_status("G", last_seen=last, started_at=START, now=at(6, 10), rule=RULE,
                       tz="UTC").silent


def test_never_seen_feed_is_measured_from_start() -> None:
    started = at(12)
    early = feed_status("G", last_seen=None, started_at=started, now=at(12, 5), rule=RULE,
                        tz="UTC")
    assert (early.age_s, early.silent, early.seen) == (300, False, False)
    assert feed_status("G", last_seen=None, started_at=started, now=at(12, 16), rule=RULE,
                       tz="UTC").silent


def test_unwatched_feed_is_never_silent() -> None:
    status = feed_status("G", last_seen=at(1), started_at=START, now=at(12), rule=None, tz="UTC")
    assert status.silent is False and status.threshold_s is None and status.age_s == 11 * 3600


def test_rule_lookup_and_settings_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_FEED_SILENCE", '{"GENHOSP": {"default_s": 900, "night_s": 3600, '
                       '"night_hours": [0, 6]}, "*": {"default_s": 7200}}')
    rules = Settings().feed_silence
    assert rules["GENHOSP"] == RULE
    assert rule_for("GENHOSP", rules) == RULE
    assert rule_for("OTHERHOSP", rules) == FeedSilenceRule(default_s=7200)
    assert rule_for("X", {}) is None


@pytest.mark.parametrize("bad", [
    {"default_s": 0}, {"default_s": 10, "night_hours": [0, 6]},
    {"default_s": 10, "night_s": 5, "night_hours": [3, 3]},
    {"default_s": 10, "night_s": 5, "night_hours": [25, 3]},
])
def test_invalid_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeedSilenceRule(**bad)  # type: ignore[arg-type]
