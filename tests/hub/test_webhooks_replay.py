"""``hub dlq replay`` of a ``deliveries`` dead letter re-queues the delivery (the broker
round trip is in test_webhooks_e2e.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from hub.commands.dlq_cmd import add_parser
from hub.settings import Settings
from hub.webhooks import requeue_delivery
from schemas.records import DeadLetter
from schemas.referrals import DeliveryJob

from .test_agency_api import RecordingProducer

NOW = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
JOB = DeliveryJob(id="job-7", agency_id="springfield-housing",
                  url="https://agency.example/referrals", secret_env="X_SECRET",
                  body='{"id":"task-7"}', created_at=datetime(2026, 3, 1, tzinfo=UTC),
                  referral_task_id="task-7", version=3)
LETTER = DeadLetter(id="dl-7", stage="deliveries", error_code="webhook_exhausted",
                    detail="given up", transport="webhook", listener="springfield-housing",
                    message_id="job-7", received_at=JOB.created_at, dead_lettered_at=NOW,
                    original_size=10)
SETTINGS = Settings(topic_prefix="t1.", ack_timeout_s=1.0)


async def test_requeued_on_the_deliveries_topic_keyed_by_the_same_id() -> None:
    producer = RecordingProducer()
    outcome, detail = await requeue_delivery(SETTINGS, producer, LETTER,
                                             JOB.model_dump_json().encode(), now=NOW)
    assert (outcome, detail) == ("replayed", "t1.referrals.deliveries/0/0")
    ((topic, value, key),) = producer.sent
    assert (topic, key) == ("t1.referrals.deliveries", b"job-7")
    sent = DeliveryJob.model_validate_json(value)
    assert sent == JOB.model_copy(update={"created_at": NOW, "replay_of": "dl-7"})


async def test_dry_run_missing_or_unreadable_payload_and_write_failure() -> None:
    payload = JOB.model_dump_json().encode()
    assert await requeue_delivery(SETTINGS, None, LETTER, payload) == (
        "dry_run", "t1.referrals.deliveries")
    assert await requeue_delivery(SETTINGS, RecordingProducer(), LETTER, None) == (
        "skipped", "payload_missing")
    assert await requeue_delivery(SETTINGS, RecordingProducer(), LETTER, b"MSH|^~\\&|") == (
        "skipped", "still_fails:invalid_resource")
    assert await requeue_delivery(SETTINGS, RecordingProducer(fail=True), LETTER,
                                  payload) == ("skipped", "write_failed")


def test_the_command_accepts_the_deliveries_stage_and_says_what_replay_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="hub")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dlq", "replay", "--all", "--stage", "deliveries"])
    assert (args.action, args.stage, args.all) == ("replay", "deliveries", True)
    assert parser.parse_args(["dlq", "list", "--stage", "deliveries"]).stage == "deliveries"
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "replay", "--help"])
    assert "re-queued on referrals.deliveries" in " ".join(capsys.readouterr().out.split())
