"""Unit tests of the ADT -> canonical mapping rules (mappers.hl7v2.adt)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from mappers.hl7v2 import map_hl7v2
from mappers.hl7v2.adt import SUPPORTED_VERSIONS, TRIGGER_KINDS
from schemas.canonical import derive_id
from schemas.errors import ErrorCode, MappingError

AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def build(trigger: str = "A01", *, msh7: str = "20240301101500", version: str = "2.5.1",
          proc: str = "P", ctrl: str = "C1", msg_type: str = "ADT", evn: str | None = None,
          pid: str = "PID|1||123^^^HOSP^MR~999^^^SSA^SS||Doe^Jane^Q||19800101|F",
          extra: tuple[str, ...] = ()) -> bytes:
    msh = f"MSH|^~\\&|APP|FAC|R|RF|{msh7}||{msg_type}^{trigger}|{ctrl}|{proc}|{version}"
    segs = [msh, evn if evn is not None else f"EVN|{trigger}|{msh7}", pid, *extra]
    return ("\r".join(segs) + "\r").encode()


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with the given fields set (field number -> raw value)."""
    values = [""] * max(fields)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


def one(raw: bytes, tz: str = "UTC"):  # type: ignore[no-untyped-def]
    (event,) = map_hl7v2(raw, received_at=AT, default_tz=tz)
    return event


def error(raw: bytes) -> MappingError:
    with pytest.raises(MappingError) as info:
        map_hl7v2(raw, received_at=AT)
    return info.value


@pytest.mark.parametrize(("trigger", "kind"), sorted(TRIGGER_KINDS.items()))
def test_trigger_kinds(trigger: str, kind: str) -> None:
    extra = ("MRG|456^^^HOSP^MR",) if trigger in ("A40", "A47") else ()
    event = one(build(trigger, extra=extra))
    assert event.kind == kind and event.trigger == trigger


def test_trigger_from_evn_when_msh9_has_none() -> None:
    raw = build("", evn="EVN|A03|20240301101500")
    assert one(raw).trigger == "A03"


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"msg_type": "ORU", "trigger": "R01"}, ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
    ({"msg_type": "ACK", "trigger": ""}, ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
    ({"trigger": "A09"}, ErrorCode.UNSUPPORTED_TRIGGER),
    ({"version": "2.2"}, ErrorCode.UNSUPPORTED_VERSION),
    ({"version": "2.9"}, ErrorCode.UNSUPPORTED_VERSION),
    ({"proc": "X"}, ErrorCode.UNSUPPORTED_PROCESSING_ID),
    ({"ctrl": ""}, ErrorCode.MISSING_CONTROL_ID),
    ({"pid": "PID|1||^^^HOSP~\"\"||Doe"}, ErrorCode.MISSING_PATIENT_IDENTIFIER),
    ({"pid": "PV1|1|I"}, ErrorCode.MISSING_SEGMENT),
    ({"pid": "PID|1||"}, ErrorCode.TRUNCATED_SEGMENT),
    ({"trigger": "A40"}, ErrorCode.MISSING_SEGMENT),
])
def test_header_and_content_errors(kwargs: dict[str, str], code: ErrorCode) -> None:
    exc = error(build(**kwargs))  # type: ignore[arg-type]
    assert exc.code == code
    assert "Doe" not in exc.detail and "123" not in exc.detail


def test_reject_codes_are_ar() -> None:
    assert error(build(msg_type="ORU")).is_reject
    assert not error(build(pid="PID|1||^^^X||Doe")).is_reject


def test_all_versions() -> None:
    for version in SUPPORTED_VERSIONS:
        assert one(build(version=f"{version}^USA")).source.version == version


def test_processing_id_first_component() -> None:
    assert one(build(proc="P^T")).source.message_id == "C1"


def test_patient_fields() -> None:
    pid = ("PID|1||X9^^^OTHER^PI~123^^^HOSP&1.2.3&ISO^MR||Doe^Jane^Q^^Dr~Alias^A||"
           "19800101|F|||1 Main St^Apt 2^Town^ST^12345^USA~Other^^C||555-1234~^^^^^617^5551234|"
           "|en^English||||||||||||||20240301|Y")
    event = one(build(pid=pid, extra=(seg("PD1", {4: "77^Who^Doctor", 12: "Y"}),)))
    p = event.patient
    assert (p.key, p.mrn, p.assigning_authority) == ("HOSP|123", "123", "HOSP")
    assert [(i.system, i.value, i.type) for i in p.identifiers] == [
        ("OTHER", "X9", "PI"), ("HOSP", "123", "MR")]
    assert (p.family_name, p.given_names) == ("Doe", ["Jane", "Q"])
    assert p.birth_date == date(1980, 1, 1) and p.sex == "female"
    assert p.address is not None and p.address.line == ["1 Main St", "Apt 2"]
    assert (p.address.city, p.address.state, p.address.postal_code) == ("Town", "ST", "12345")
    assert p.phone == "555-1234" and p.language == "en"
    assert p.primary_care_provider is not None
    assert (p.primary_care_provider.id, p.primary_care_provider.name) == ("77", "Doctor Who")
    assert p.protection_indicator is True
    assert p.deceased is True and p.deceased_at == datetime(2024, 3, 1, tzinfo=UTC)


def test_mrn_without_mr_type_is_first_and_authority_falls_back() -> None:
    event = one(build(pid="PID|1||555~666^^^B||Doe"))
    assert event.patient.key == "FAC|555"  # no CX-4: MSH-4


def test_authority_universal_id_when_no_namespace() -> None:
    event = one(build(pid="PID|1||555^^^&1.2.3&ISO||Doe"))
    assert event.patient.assigning_authority == "1.2.3"


def test_pid2_fallback_for_v23() -> None:
    event = one(build(version="2.3", pid="PID|1|777^^^OLD||||Doe"))
    assert event.patient.key == "OLD|777"


@pytest.mark.parametrize(("code", "sex"), [("M", "male"), ("F", "female"), ("O", "other"),
                                          ("U", "unknown"), ("Z", None), ("", None)])
def test_sex(code: str, sex: str | None) -> None:
    assert one(build(pid=f"PID|1||1^^^H||D||1980|{code}")).patient.sex == sex


def test_encounter_fields() -> None:
    pv1 = seg("PV1", {1: "1", 2: "I", 3: "W1^101^B^GENHOSP", 4: "E", 6: "W0^100^A",
                      7: "12^Kildare^James", 10: "MED", 14: "7", 18: "INP",
                      19: "V77^^^H^VN", 36: "HOME", 44: "20240301101500",
                      45: "20240305~20240306"})
    event = one(build(extra=(pv1,)))
    e = event.encounter
    assert e is not None
    assert (e.id, e.class_, e.admission_type, e.admit_source) == ("V77", "inpatient", "E", "7")
    assert e.hospital_service == "MED" and e.discharge_disposition == "HOME"
    assert e.location is not None
    assert (e.location.facility, e.location.unit, e.location.room, e.location.bed) == (
        "GENHOSP", "W1", "101", "B")
    assert e.prior_location is not None and e.prior_location.facility == "FAC"
    assert e.attending is not None and e.attending.name == "James Kildare"
    assert e.admit_at == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert e.discharge_at == datetime(2024, 3, 5, tzinfo=UTC)  # date only: midnight


@pytest.mark.parametrize(("cls", "ptype", "want"), [
    ("I", "", "inpatient"), ("E", "", "emergency"), ("O", "", "outpatient"),
    ("O", "OBS", "observation"), ("P", "", "preadmit"), ("R", "", "recurring"),
    ("B", "", "other"), ("Q", "", "other"), ("N", "", None),
])
def test_encounter_class(cls: str, ptype: str, want: str | None) -> None:
    pv1 = seg("PV1", {2: cls, 3: "W", 18: ptype})
    e = one(build(extra=(pv1,))).encounter
    assert e is not None and e.class_ == want


def test_diagnoses_and_coverage() -> None:
    extra = ("DG1|1|I10|I50.9^Heart failure^i10|||A", "DG1|2||||",
             "IN1|1|PLAN1|PAYER9^^^X|Acme Health", "IN1|2")
    event = one(build(extra=extra))
    assert [(d.code, d.system, d.display, d.type) for d in event.diagnoses] == [
        ("I50.9", "I10", "Heart failure", "A")]
    assert [(c.payer_id, c.payer_name, c.plan_id) for c in event.coverage] == [
        ("PAYER9", "Acme Health", "PLAN1")]


def test_a40_groups_give_one_event_each() -> None:
    extra = ("MRG|2^^^H^MR||||V1", "PID|1||3^^^H^MR||Doe", "MRG|4^^^K")
    events = map_hl7v2(build("A40", extra=extra), received_at=AT)
    assert [e.merge.prior_patient_key for e in events if e.merge] == ["H|2", "K|4"]
    assert events[0].merge is not None and events[0].merge.prior_encounter_id == "V1"
    assert [e.event_id for e in events] == [derive_id("hl7v2", "FAC", "C1", i)
                                            for i in range(2)]


def test_a06_mrg_with_prior_visit_only() -> None:
    event = one(build("A06", extra=("MRG|||ACCT||V0",)))
    assert event.merge is not None
    assert event.merge.prior_patient_key == event.patient.key
    assert event.merge.prior_encounter_id == "V0"


def test_non_merge_ignores_later_pids() -> None:
    assert len(map_hl7v2(build("A01", extra=("PID|1||9^^^H",)), received_at=AT)) == 1


# ------------------------------------------------------------------ time handling


def test_occurred_and_recorded_sources() -> None:
    raw = build(evn="EVN|A01|20240301100000||||20240301090000+0100")
    event = one(raw)
    assert event.recorded_at == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert event.occurred_at == datetime(2024, 3, 1, 9, tzinfo=timezone(timedelta(hours=1)))
    no_evn = one(build(evn="EVN|A01"))
    assert no_evn.occurred_at == no_evn.recorded_at == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    nothing = one(build(evn="EVN|A01", msh7="garbage"))
    assert nothing.occurred_at == AT and nothing.recorded_at == AT


def test_offsets_are_kept_not_converted() -> None:
    event = one(build(msh7="20240301101500-0500", evn="EVN|A01"), tz="Europe/Paris")
    assert event.recorded_at.utcoffset() == timedelta(hours=-5)
    assert event.recorded_at.hour == 10


def test_zone_less_uses_default_tz_with_dst() -> None:
    summer = one(build(msh7="20240701120000", evn="EVN|A01"), tz="America/New_York")
    winter = one(build(msh7="20240101120000", evn="EVN|A01"), tz="America/New_York")
    assert summer.recorded_at.utcoffset() == timedelta(hours=-4)
    assert winter.recorded_at.utcoffset() == timedelta(hours=-5)


def test_bad_optional_timestamp_is_dropped() -> None:
    pv1 = seg("PV1", {2: "I", 44: "2024-03-01", 45: "20241399"})
    e = one(build(extra=(pv1,))).encounter
    assert e is not None and e.admit_at is None and e.discharge_at is None


def test_unknown_default_tz_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as info:
        map_hl7v2(build(), received_at=AT, default_tz="Mars/Olympus")
    assert info.value.code == ErrorCode.INTERNAL_ERROR


def test_naive_received_at_is_utc() -> None:
    (event,) = map_hl7v2(build(evn="EVN|A01", msh7=""), received_at=datetime(2024, 1, 1))
    assert event.recorded_at == datetime(2024, 1, 1, tzinfo=UTC)
