"""MLLP ingest over real sockets on a real broker (REFERENCE.md section 2 ACK table)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time
from collections.abc import Callable

import pytest

from hub.brokers.embedded import EmbeddedBroker
from hub.logging import configure
from hub.settings import Settings
from mappers.hl7v2 import read_header
from mappers.mllp import encode_frame
from schemas.errors import MappingError
from streams.normalize import RawRecord, dedup_key

from .ingest_helpers import CANARIES, RawClient, adt, msa, running_stack, segments

pytestmark = pytest.mark.kafka

SettingsFactory = Callable[..., Settings]


async def test_success_aa_after_durable_write(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        raw = adt("OK0001")
        ack = await client.send(raw)
        assert msa(ack) == ("AA", "OK0001")
        h = read_header(ack)
        assert (h.sending_facility, h.receiving_facility) == ("CM", "GENHOSP")
        assert h.message_type == "ACK" and h.trigger == "A01"
        assert "ERR" not in segments(ack)
        recs = await st.read("ehr.hl7v2", min_records=1)
        assert len(recs) == 1
        assert recs[0].value == raw  # the bytes exactly as received
        assert recs[0].key == b"GENHOSP|ZQX7731MRN"
        # The same key normalize computes for a record produced without our header.
        assert recs[0].headers["hub-dedup-key"] == b"hl7v2|GENHOSP|OK0001"
        assert dedup_key(RawRecord("hl7v2", raw, {})) == "hl7v2|GENHOSP|OK0001"
        assert recs[0].headers["hub-transport"] == b"mllp"
        assert recs[0].headers["hub-default-tz"] == b"UTC"
        await client.close()


async def test_feed_timezone_header(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings(feed_timezones={"GENHOSP": "America/New_York"})
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        assert msa(await client.send(adt("TZ1")))[0] == "AA"
        recs = await st.read("ehr.hl7v2", min_records=1)
        assert recs[0].headers["hub-default-tz"] == b"America/New_York"
        await client.close()


async def test_unusable_content_ae_and_dead_letter(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        bad = adt("BAD0001", mrn="")  # no patient identifier
        ack = await client.send(bad)
        assert msa(ack) == ("AE", "BAD0001")
        err = segments(ack)["ERR"]
        assert err[3].endswith("^HL70357") and err[4] == "E" and err[8]
        dlq = await st.read("hub.dlq", min_records=1)
        payloads = await st.read("hub.dlq-payloads", min_records=1)
        record = json.loads(dlq[0].value or b"")
        assert record["stage"] == "ingest" and record["message_id"] == "BAD0001"
        assert record["sending_facility"] == "GENHOSP"
        assert record["error_code"] == "missing_patient_identifier"
        assert payloads[0].key == dlq[0].key == record["id"].encode()
        assert payloads[0].value == bad
        assert await st.read("ehr.hl7v2") == []
        # A resend of the same bad message gets the same answer, not a second dead letter.
        assert await client.send(bad) == ack
        await client.close()


async def test_non_adt_is_rejected_ar(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        ack = await client.send(adt("ORU1", msg_type="ORU", trigger="R01"))
        assert msa(ack) == ("AR", "ORU1")
        assert segments(ack)["ERR"][3].startswith("200^")
        dlq = await st.read("hub.dlq", min_records=1)
        assert json.loads(dlq[0].value or b"")["error_code"] == "unsupported_message_type"
        await client.close()


async def test_duplicate_gets_identical_ack_and_one_record(
    kafka_settings: SettingsFactory,
) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        c1 = await RawClient.connect(st.mllp.port)
        c2 = await RawClient.connect(st.mllp.port)
        raw = adt("DUP0001")
        first = await c1.send(raw)
        again = await c2.send(raw)  # another connection, as after a lost ACK
        assert first == again and msa(first) == ("AA", "DUP0001")
        # Concurrent copies of a new message: one write, same ACK for both.
        raw2 = adt("DUP0002")
        a, b = await asyncio.gather(c1.send(raw2), c2.send(raw2))
        assert a == b
        recs = await st.read("ehr.hl7v2", min_records=2)
        assert sorted(r.headers["hub-dedup-key"] for r in recs) == [
            b"hl7v2|GENHOSP|DUP0001", b"hl7v2|GENHOSP|DUP0002"]
        for c in (c1, c2):
            await c.close()


async def test_duplicate_replayed_after_restart(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    raw = adt("RESTART1")
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        first = await client.send(raw)
        await client.close()
    # A fresh process: the ACK store is reloaded from hub.acks.
    async with running_stack(settings) as st:
        assert await st.ingestor.ack_store.load() >= 1
        client = await RawClient.connect(st.mllp.port)
        assert await client.send(raw) == first
        assert len(await st.read("ehr.hl7v2", min_records=1)) == 1
        await client.close()


async def test_enhanced_mode(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        assert msa(await client.send(adt("ENH1", msh15="AL", msh16="NE"))) == ("CA", "ENH1")
        # Unusable content: committed to the DLQ, so CA (with the ERR saying why).
        ack = await client.send(adt("ENH2", msh15="AL", mrn=""))
        assert msa(ack) == ("CA", "ENH2") and "ERR" in segments(ack)
        # Unsupported type: CR.
        ack = await client.send(adt("ENH3", msh15="AL", msg_type="ORU", trigger="R01"))
        assert msa(ack) == ("CR", "ENH3")
        await client.close()


def _bad_inputs() -> list[tuple[str, bytes, str, str]]:
    """(name, bytes on the wire, expected ACK code or "" for none, dead-letter code)."""
    return [
        ("empty_frame", encode_frame(b""), "AR", "empty_message"),
        ("no_msh", encode_frame(b"PID|1||123^^^H^MR\rPV1|1|I\r"), "AR", "missing_msh"),
        ("truncated_segment", encode_frame(adt("TRUNC1") + b"PV"), "AE", "truncated_segment"),
        ("wrong_encoding_characters",
         encode_frame(adt("ENC1").replace(b"^~\\&", b"^^\\&", 1)), "AR",
         "bad_encoding_characters"),
        ("non_adt", encode_frame(adt("NONADT1", msg_type="ORU", trigger="R01")), "AR",
         "unsupported_message_type"),
        ("invalid_utf8", encode_frame(adt("UTF1").replace(b"ZQXCANARYFAM", b"ZQX\xff\xfeFAM")),
         "AE", "invalid_charset"),
    ]


@pytest.mark.parametrize("name,wire,code,error", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
async def test_bad_input_clear_error_dead_letter_and_others_served(
    kafka_settings: SettingsFactory, name: str, wire: bytes, code: str, error: str
) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        bad = await RawClient.connect(st.mllp.port)
        good = await RawClient.connect(st.mllp.port)
        await bad.write(wire)
        bad_ack, good_ack = await asyncio.gather(bad.ack(), good.send(adt(f"G-{name}")))
        assert msa(good_ack)[0] == "AA"
        assert msa(bad_ack)[0] == code
        err = segments(bad_ack)["ERR"]
        assert err[3].endswith("HL70357") and err[8]  # a code and a sentence
        dlq = await st.read("hub.dlq", min_records=1)
        assert [json.loads(r.value or b"")["error_code"] for r in dlq] == [error]
        # The bad connection keeps serving.
        assert msa(await bad.send(adt(f"B-{name}")))[0] == "AA"
        for c in (bad, good):
            await c.close()


async def test_twenty_megabyte_frame(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()  # default 4 MiB limit
    async with running_stack(settings) as st:
        good = await RawClient.connect(st.mllp.port)
        big = await RawClient.connect(st.mllp.port)
        huge = adt("HUGE1", extra="NTE|1||" + "x" * (20 * 1024 * 1024) + "\r")

        async def push() -> None:
            # The server closes on us mid-frame: expected.
            with contextlib.suppress(ConnectionError, OSError):
                await big.write(encode_frame(huge))

        writer = asyncio.create_task(push())
        assert msa(await good.send(adt("BIGG1")))[0] == "AA"
        assert await big.closed_by_server(timeout=30)  # no ACK, connection closed
        assert not big.pending
        await writer
        dlq = await st.read("hub.dlq", min_records=1)
        record = json.loads(dlq[0].value or b"")
        assert record["error_code"] == "frame_too_large"
        assert record["payload_stored"] is False
        assert record["payload_truncated_to"] <= 900 * 1024
        assert record["original_size"] > settings.mllp_max_frame_bytes
        payloads = await st.read("hub.dlq-payloads", min_records=1)
        assert payloads[0].value == huge[: record["payload_truncated_to"]]
        assert msa(await good.send(adt("BIGG2")))[0] == "AA"
        for c in (good, big):
            await c.close()


async def test_garbage_between_frames(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings()
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        stream = (encode_frame(adt("GB1")) + b"\x00\x01 junk bytes \xff" +
                  encode_frame(adt("GB2")) + b"\r\n")
        await client.write(stream)
        assert msa(await client.ack()) == ("AA", "GB1")
        assert msa(await client.ack()) == ("AA", "GB2")
        assert msa(await client.send(adt("GB3"))) == ("AA", "GB3")  # connection kept
        dlq = await st.read("hub.dlq", min_records=1)
        record = json.loads(dlq[0].value or b"")
        assert record["error_code"] == "garbage_between_frames"
        assert record["original_size"] == 15
        assert len(dlq) == 1  # the trailing CR/LF is only counted
        assert st.ingestor.stats["garbage_bytes"] == 17
        await client.close()


async def test_broker_down_answers_ar_ce_in_bounded_time() -> None:
    broker = EmbeddedBroker()
    await broker.astart()
    try:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_idempotence=False,
                            topic_prefix="down.", partitions=1, ack_timeout_s=2.0)
        async with running_stack(settings) as st:
            client = await RawClient.connect(st.mllp.port)
            assert msa(await client.send(adt("UP1")))[0] == "AA"
            await broker.astop()
            started = time.monotonic()
            ack = await client.send(adt("DOWN1"), timeout=30)
            elapsed = time.monotonic() - started
            assert msa(ack) == ("AR", "DOWN1")
            assert segments(ack)["ERR"][5].startswith("durable_write_failed")
            assert elapsed < settings.ack_timeout_s + 2
            ack = await client.send(adt("DOWN2", msh15="AL"), timeout=30)
            assert msa(ack) == ("CE", "DOWN2")
            # A content error cannot be dead-lettered either: AR, not AE.
            ack = await client.send(adt("DOWN3", mrn=""), timeout=30)
            assert msa(ack) == ("AR", "DOWN3")
            # Not remembered: the retry is processed again, not answered from the store.
            assert st.ingestor.ack_store.get("GENHOSP", "DOWN1") is None
            await client.close()
            # Nothing ACKed AA that was not written: only UP1 got AA.
            assert st.ingestor.stats["ack.AA"] == 1
    finally:
        await broker.astop()


async def test_idle_connection_closed(kafka_settings: SettingsFactory) -> None:
    settings = kafka_settings(mllp_idle_timeout_s=0.5)
    async with running_stack(settings) as st:
        client = await RawClient.connect(st.mllp.port)
        assert msa(await client.send(adt("IDLE1")))[0] == "AA"
        assert await client.closed_by_server(timeout=5)


async def test_phi_canary_never_in_acks_dead_letters_or_logs(
    kafka_settings: SettingsFactory,
) -> None:
    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    try:
        settings = kafka_settings()
        async with running_stack(settings) as st:
            client = await RawClient.connect(st.mllp.port)
            acks = [
                await client.send(adt("PHI1")),
                await client.send(adt("PHI2", msg_type="ORU", trigger="R01")),
                await client.send(adt("PHI3") + b"PV"),
                await client.send(adt("PHI4").replace(b"ZQXCANARYGIV", b"\xffZQXCANARYGIV")),
                await client.send(adt("PHI1")),
                await client.send(b"PID|1||ZQX7731MRN^^^H^MR||ZQXCANARYFAM\r"),
            ]
            await client.write(b"ZQXCANARYFAM garbage")
            await client.send(adt("PHI5"))
            dlq = await st.read("hub.dlq", min_records=5)
            await client.close()
    finally:
        configure("INFO", "console")
    text = out.getvalue()
    assert "ack_sent" in text and "frame_rejected" in text
    for blob in [*(a.decode() for a in acks), *((r.value or b"").decode() for r in dlq), text]:
        for token in CANARIES:
            assert token not in blob


async def test_mutated_messages_always_get_a_parseable_ack(
    kafka_settings: SettingsFactory,
) -> None:
    """Robustness: whatever the bytes, handle_hl7 answers with an ACK that re-parses, whose
    MSA-2 is the inbound MSH-10 when that is readable (else empty), and never raises."""
    rng = random.Random(20260301)
    base = adt("MUT0")
    settings = kafka_settings()
    async with running_stack(settings) as st:
        for i in range(150):
            data = bytearray(base.replace(b"MUT0", f"MUT{i}".encode()))
            for _ in range(rng.randint(1, 6)):
                op = rng.random()
                pos = rng.randrange(len(data) + 1)
                if op < 0.3 and data:
                    del data[pos:pos + rng.randint(1, 40)]
                elif op < 0.6:
                    data[pos:pos] = bytes([rng.choice(b"|^~\\&\r\n\x00\xff\xc3")])
                elif data:
                    data[min(pos, len(data) - 1)] = rng.randrange(256)
            raw = bytes(data)
            ack = await st.ingestor.handle_hl7(raw, transport="test", listener="fuzz", peer=None)
            header = read_header(ack)
            assert header.message_type == "ACK"
            code, msa2 = msa(ack)
            assert code in ("AA", "AE", "AR", "CA", "CE", "CR")
            try:
                inbound = read_header(raw).control_id or ""
            except MappingError:
                inbound = ""
            if not any(c in inbound for c in "|^~\\&"):
                assert msa2 == inbound
