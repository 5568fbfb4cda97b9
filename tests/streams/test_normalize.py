"""The pure normalize step (no broker)."""

from datetime import UTC, datetime

import pytest

from hub.feed import FeedConfig, bad_messages, generate
from schemas.errors import ErrorCode, MappingError
from schemas.records import HEADER_DEDUP_KEY, HEADER_DEFAULT_TZ, HEADER_RECEIVED_AT
from streams.normalize import RawRecord, dedup_key, normalize, received_at

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_every_good_feed_message_normalizes_to_one_event() -> None:
    for raw in generate(FeedConfig(patients=5, bad_messages=False)):
        events = normalize(RawRecord("hl7v2", raw, {}), now=NOW, default_tz="UTC",
                           feed_timezones={})
        assert len(events) == 1
        assert events[0].patient.key.startswith("GENHOSP|MRN")


def test_bad_feed_messages_raise_mapping_errors() -> None:
    codes = []
    for raw in bad_messages():
        with pytest.raises(MappingError) as err:
            normalize(RawRecord("hl7v2", raw, {}), now=NOW, default_tz="UTC", feed_timezones={})
        codes.append(err.value.code)
    assert codes == [ErrorCode.UNSUPPORTED_MESSAGE_TYPE, ErrorCode.MISSING_PATIENT_IDENTIFIER]


def test_dedup_key_is_facility_and_control_id_unless_ingest_gave_one() -> None:
    raw = next(iter(generate(FeedConfig(patients=1))))
    assert dedup_key(RawRecord("hl7v2", raw, {})).startswith("hl7v2|GENHOSP|C")
    given = RawRecord("hl7v2", raw, {HEADER_DEDUP_KEY: b"x|y"})
    assert dedup_key(given) == "x|y"
    assert dedup_key(RawRecord("fhir", b"{}", {})) == dedup_key(RawRecord("fhir", b"{}", {}))


def test_received_at_header_wins_over_the_clock() -> None:
    rec = RawRecord("hl7v2", b"", {HEADER_RECEIVED_AT: b"2026-11-02T08:00:00-05:00"})
    assert received_at(rec, NOW).isoformat() == "2026-11-02T08:00:00-05:00"
    assert received_at(RawRecord("hl7v2", b"", {HEADER_RECEIVED_AT: b"junk"}), NOW) == NOW


def test_feed_zone_header_is_used_for_zone_less_timestamps() -> None:
    raw = (b"MSH|^~\\&|A|GENHOSP|B|C|20260701120000||ADT^A01|Z1|P|2.5.1\r"
           b"EVN|A01|20260701120000\rPID|1||M1^^^GENHOSP^MR||X^Y\rPV1|1|I\r")
    ny = normalize(RawRecord("hl7v2", raw, {HEADER_DEFAULT_TZ: b"America/New_York"}), now=NOW,
                   default_tz="UTC", feed_timezones={})[0]
    assert ny.occurred_at.isoformat() == "2026-07-01T12:00:00-04:00"
    by_feed = normalize(RawRecord("hl7v2", raw, {}), now=NOW, default_tz="UTC",
                        feed_timezones={"GENHOSP": "America/Chicago"})[0]
    assert by_feed.occurred_at.isoformat() == "2026-07-01T12:00:00-05:00"
