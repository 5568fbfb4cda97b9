"""The pure normalize step (no broker)."""

from datetime import UTC, datetime

import pytest

from hub.feed import FeedConfig, bad_messages, generate
from mappers.hl7v2 import read_header
from schemas.errors import ErrorCode, MappingError
from schemas.records import HEADER_DEDUP_KEY, HEADER_DEFAULT_TZ, HEADER_RECEIVED_AT
from streams.normalize import (
    HEADER_REPLAY_OF,
    RawRecord,
    dedup_key,
    events_dedup_key,
    message_dedup_key,
    normalize,
    received_at,
    replay_key,
)

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
    # FHIR without ingest's header: only the mapped events name the message.
    assert dedup_key(RawRecord("fhir", b"{}", {})) is None
    # Unreadable HL7: a content id, stable for the same bytes.
    assert dedup_key(RawRecord("hl7v2", b"junk", {})) == dedup_key(
        RawRecord("hl7v2", b"junk", {}))


def test_ingest_replay_and_third_parties_share_one_dedup_rule() -> None:
    raw = next(iter(generate(FeedConfig(patients=1))))
    header = read_header(raw)
    events = normalize(RawRecord("hl7v2", raw, {}), now=datetime.now(UTC), default_tz="UTC",
                       feed_timezones={})
    # What ingest writes as a header, what hub dlq replay computes from the events, and
    # what normalize computes for a record produced without headers are one key.
    assert message_dedup_key("hl7v2", header.sending_facility, header.control_id or "") == \
        events_dedup_key("hl7v2", events) == dedup_key(RawRecord("hl7v2", raw, {})) == \
        f"hl7v2|GENHOSP|{header.control_id}"
    assert events_dedup_key("fhir", []) is None
    assert replay_key(RawRecord("hl7v2", raw, {})) is None
    assert replay_key(RawRecord("hl7v2", raw, {HEADER_REPLAY_OF: b"dl-1"})) == "replay|dl-1"


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
