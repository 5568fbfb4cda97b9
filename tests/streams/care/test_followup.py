"""Post-discharge follow-up rules: disposition classes, TCM tasks and their due dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from streams.care.followup import (
    DISPOSITION_CLASSES,
    DispositionClass,
    FollowupConfig,
    TaskKind,
    TaskPlan,
    classify_disposition,
    home_health_disposition,
    is_overdue,
    plan_followup,
)

NY = "America/New_York"
C = DispositionClass

EXPECTED_CLASSES: dict[str, DispositionClass] = {
    # NUBC UB-04 FL17 patient discharge status (HL7 v2 PV1-36)
    "01": C.COMMUNITY,
    "02": C.ACUTE_TRANSFER,
    "03": C.POST_ACUTE,
    "04": C.COMMUNITY,  # custodial/supportive care (assisted living): TCM community
    "05": C.ACUTE_TRANSFER,
    "06": C.COMMUNITY,
    "07": C.AMA,
    "09": C.ACUTE_TRANSFER,
    "20": C.DEATH,
    "21": C.UNKNOWN,
    "30": C.UNKNOWN,
    "40": C.DEATH,
    "41": C.DEATH,
    "42": C.DEATH,
    "43": C.ACUTE_TRANSFER,
    "50": C.HOSPICE,
    "51": C.HOSPICE,
    "61": C.POST_ACUTE,
    "62": C.POST_ACUTE,
    "63": C.POST_ACUTE,
    "64": C.POST_ACUTE,
    "65": C.ACUTE_TRANSFER,
    "66": C.ACUTE_TRANSFER,
    "69": C.POST_ACUTE,
    "70": C.POST_ACUTE,
    # planned acute readmission variants: same as the base code
    "81": C.COMMUNITY,
    "82": C.ACUTE_TRANSFER,
    "83": C.POST_ACUTE,
    "84": C.COMMUNITY,
    "85": C.ACUTE_TRANSFER,
    "86": C.COMMUNITY,
    "87": C.UNKNOWN,
    "88": C.ACUTE_TRANSFER,
    "89": C.POST_ACUTE,
    "90": C.POST_ACUTE,
    "91": C.POST_ACUTE,
    "92": C.POST_ACUTE,
    "93": C.ACUTE_TRANSFER,
    "94": C.ACUTE_TRANSFER,
    "95": C.POST_ACUTE,
    # FHIR Encounter.hospitalization.dischargeDisposition (THO discharge-disposition)
    "home": C.COMMUNITY,
    "alt-home": C.COMMUNITY,
    "other-hcf": C.POST_ACUTE,
    "hosp": C.HOSPICE,
    "long": C.POST_ACUTE,
    "aadvice": C.AMA,
    "exp": C.DEATH,
    "psy": C.ACUTE_TRANSFER,
    "rehab": C.POST_ACUTE,
    "snf": C.POST_ACUTE,
    "oth": C.UNKNOWN,
}


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED_CLASSES.items()))
def test_classify_every_code(code: str, expected: DispositionClass) -> None:
    assert classify_disposition(code) is expected


def test_table_has_exactly_the_expected_codes() -> None:
    assert dict(DISPOSITION_CLASSES) == EXPECTED_CLASSES


@pytest.mark.parametrize("code", [None, "", "  ", "08", "99", "00", "71", "xyz", "HOSPITAL"])
def test_absent_or_unknown_codes(code: str | None) -> None:
    assert classify_disposition(code) is C.UNKNOWN


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("1", C.COMMUNITY),  # sender dropped the leading zero
        (" 03 ", C.POST_ACUTE),
        ("03^Skilled nursing facility^NUBC", C.POST_ACUTE),  # CWE in v2.7+
        ("SNF", C.POST_ACUTE),
        ("Home", C.COMMUNITY),
    ],
)
def test_lenient_forms(code: str, expected: DispositionClass) -> None:
    assert classify_disposition(code) is expected


def test_home_health() -> None:
    assert home_health_disposition("06")
    assert home_health_disposition("86")
    assert home_health_disposition("6")
    for code in (None, "01", "03", "home", "07"):
        assert not home_health_disposition(code)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        DISPOSITION_CLASSES["01"] = C.DEATH  # type: ignore[index]


# --- config ----------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    cfg = FollowupConfig()
    assert cfg.contact_business_days == 2
    assert cfg.visit_days_high == 7
    assert cfg.visit_days_other == 14
    assert cfg.pcp_notification_business_days == 1
    assert cfg.handoff_hours == 24
    assert cfg.country == "US"
    assert cfg.unknown_disposition_is_community is True
    assert cfg.escalate_after_hours == 0
    assert FollowupConfig(country="ca").country == "CA"
    with pytest.raises(ValidationError):
        FollowupConfig(country="XX")
    with pytest.raises(ValidationError):
        FollowupConfig(contact_business_days=0)
    with pytest.raises(ValidationError):
        FollowupConfig.model_validate({"contact_days": 3})  # extra="forbid"
    with pytest.raises(ValidationError):
        cfg.visit_days_high = 3  # type: ignore[misc]


# --- plans -----------------------------------------------------------------------------


def _eod(d: date, offset_hours: int) -> datetime:
    return datetime.combine(d, time(23, 59, 59), tzinfo=timezone(timedelta(hours=offset_hours)))


def _by_kind(tasks: list[TaskPlan]) -> dict[TaskKind, TaskPlan]:
    by_kind = {t.kind: t for t in tasks}
    assert len(by_kind) == len(tasks)
    return by_kind


FRIDAY = datetime(2026, 1, 9, 14, 30, tzinfo=ZoneInfo(NY))


def test_friday_discharge_high_risk_exact_due_dates() -> None:
    cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition="01",
        risk_level="high",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert cls is C.COMMUNITY
    assert [t.kind for t in tasks] == [
        TaskKind.CONTACT,
        TaskKind.VISIT,
        TaskKind.MED_REC,
        TaskKind.PCP_NOTIFICATION,
    ]
    t = _by_kind(tasks)
    assert t[TaskKind.CONTACT].due == _eod(date(2026, 1, 13), -5)  # Tuesday
    assert t[TaskKind.VISIT].due == _eod(date(2026, 1, 16), -5)  # Friday + 7
    assert t[TaskKind.MED_REC].due == t[TaskKind.VISIT].due
    assert t[TaskKind.PCP_NOTIFICATION].due == _eod(date(2026, 1, 12), -5)  # Monday
    for task in tasks:
        assert task.due.tzinfo == ZoneInfo(NY)
    assert t[TaskKind.CONTACT].priority == "urgent"
    assert t[TaskKind.VISIT].priority == "urgent"
    assert t[TaskKind.MED_REC].priority == "routine"
    assert t[TaskKind.PCP_NOTIFICATION].priority == "routine"
    assert t[TaskKind.CONTACT].rule == "tcm.contact.2bd"
    assert t[TaskKind.VISIT].rule == "tcm.visit.7d"
    assert t[TaskKind.MED_REC].rule == "tcm.med_rec"
    assert t[TaskKind.PCP_NOTIFICATION].rule == "tcm.pcp_notification"
    assert t[TaskKind.CONTACT].description == (
        "Interactive contact within 2 business days of discharge (CMS TCM)"
    )
    assert "Identify" not in t[TaskKind.PCP_NOTIFICATION].description


def test_friday_discharge_before_mlk_day_moderate_risk() -> None:
    # Fri 16 Jan 2026; Mon 19 Jan is MLK Day -> contact Wed 21, PCP Tue 20, visit Fri 30.
    _, tasks = plan_followup(
        discharge_at=datetime(2026, 1, 16, 9, tzinfo=ZoneInfo(NY)),
        disposition="home",
        risk_level="moderate",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    t = _by_kind(tasks)
    assert t[TaskKind.CONTACT].due == _eod(date(2026, 1, 21), -5)
    assert t[TaskKind.PCP_NOTIFICATION].due == _eod(date(2026, 1, 20), -5)
    assert t[TaskKind.VISIT].due == _eod(date(2026, 1, 30), -5)
    assert t[TaskKind.VISIT].rule == "tcm.visit.14d"
    assert all(task.priority == "routine" for task in tasks)


@pytest.mark.parametrize("risk", ["low", "moderate", "", "HIGHISH"])
def test_non_high_risk_gets_14_days(risk: str) -> None:
    _, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition="01",
        risk_level=risk,
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert _by_kind(tasks)[TaskKind.VISIT].due.date() == date(2026, 1, 23)


def test_risk_level_is_case_insensitive() -> None:
    _, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition="01",
        risk_level=" High ",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert _by_kind(tasks)[TaskKind.VISIT].rule == "tcm.visit.7d"


def test_no_pcp_still_plans_identify_and_notify() -> None:
    _, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition="01",
        risk_level="low",
        tz=NY,
        has_pcp=False,
        cfg=FollowupConfig(),
    )
    pcp = _by_kind(tasks)[TaskKind.PCP_NOTIFICATION]
    assert pcp.description.startswith("Identify the patient's primary care provider")
    assert pcp.rule == "tcm.pcp_notification"
    assert pcp.due == _eod(date(2026, 1, 12), -5)


@pytest.mark.parametrize("code", ["07", "aadvice", "06", "86", "alt-home", "81", "04", "84"])
def test_ama_and_home_health_get_tcm(code: str) -> None:
    cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition=code,
        risk_level="low",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert cls in (C.AMA, C.COMMUNITY)
    assert {t.kind for t in tasks} == {
        TaskKind.CONTACT,
        TaskKind.VISIT,
        TaskKind.MED_REC,
        TaskKind.PCP_NOTIFICATION,
    }


@pytest.mark.parametrize("code", [None, "", "99", "oth", "21", "30"])
def test_unknown_disposition_follows_config(code: str | None) -> None:
    cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition=code,
        risk_level="low",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert cls is C.UNKNOWN
    assert len(tasks) == 4
    cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition=code,
        risk_level="low",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(unknown_disposition_is_community=False),
    )
    assert cls is C.UNKNOWN
    assert tasks == []


@pytest.mark.parametrize(
    ("code", "cls", "rule"),
    [
        ("03", C.POST_ACUTE, "handoff.post_acute"),
        ("snf", C.POST_ACUTE, "handoff.post_acute"),
        ("62", C.POST_ACUTE, "handoff.post_acute"),
        ("02", C.ACUTE_TRANSFER, "handoff.acute_transfer"),
        ("psy", C.ACUTE_TRANSFER, "handoff.acute_transfer"),
    ],
)
def test_snf_and_transfers_get_a_handoff_only(code: str, cls: DispositionClass, rule: str) -> None:
    got_cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition=code,
        risk_level="high",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert got_cls is cls
    assert len(tasks) == 1
    (handoff,) = tasks
    assert handoff.kind is TaskKind.HANDOFF
    assert handoff.priority == "urgent"
    assert handoff.rule == rule
    assert handoff.due == FRIDAY + timedelta(hours=24)
    assert handoff.due.tzinfo == ZoneInfo(NY)


def test_handoff_hours_are_elapsed_time_across_dst() -> None:
    # Sat 7 March 2026 12:00 EST + 24 h = Sun 8 March 13:00 EDT (the clock skipped an hour).
    start = datetime(2026, 3, 7, 12, tzinfo=ZoneInfo(NY))
    _, (handoff,) = plan_followup(
        discharge_at=start.astimezone(UTC),
        disposition="03",
        risk_level="low",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert handoff.due.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=24)
    assert handoff.due.replace(tzinfo=None) == datetime(2026, 3, 8, 13)
    assert handoff.due.utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize("code", ["20", "40", "41", "42", "exp", "50", "51", "hosp"])
def test_death_and_hospice_plan_nothing(code: str) -> None:
    cls, tasks = plan_followup(
        discharge_at=FRIDAY,
        disposition=code,
        risk_level="high",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    assert cls in (C.DEATH, C.HOSPICE)
    assert tasks == []


def test_expired_plans_nothing() -> None:
    assert plan_followup(
        discharge_at=FRIDAY,
        disposition="20",
        risk_level="low",
        tz=NY,
        has_pcp=False,
        cfg=FollowupConfig(),
    ) == (C.DEATH, [])


def test_custom_config_changes_rules_and_text() -> None:
    cfg = FollowupConfig(contact_business_days=3, visit_days_high=5, handoff_hours=48)
    _, tasks = plan_followup(
        discharge_at=FRIDAY, disposition="01", risk_level="high", tz=NY, has_pcp=True, cfg=cfg
    )
    t = _by_kind(tasks)
    assert t[TaskKind.CONTACT].rule == "tcm.contact.3bd"
    assert t[TaskKind.CONTACT].due.date() == date(2026, 1, 14)
    assert "3 business days" in t[TaskKind.CONTACT].description
    assert t[TaskKind.VISIT].rule == "tcm.visit.5d"
    assert t[TaskKind.VISIT].due.date() == date(2026, 1, 14)


def test_late_evening_discharge_uses_the_facility_date() -> None:
    # Thu 8 Jan 2026 22:00 EST, given in UTC (Fri 03:00Z): Thursday counts.
    discharge = datetime(2026, 1, 9, 3, 0, tzinfo=UTC)
    _, tasks = plan_followup(
        discharge_at=discharge,
        disposition="01",
        risk_level="high",
        tz=NY,
        has_pcp=True,
        cfg=FollowupConfig(),
    )
    t = _by_kind(tasks)
    assert t[TaskKind.CONTACT].due == _eod(date(2026, 1, 12), -5)
    assert t[TaskKind.PCP_NOTIFICATION].due == _eod(date(2026, 1, 9), -5)
    assert t[TaskKind.VISIT].due == _eod(date(2026, 1, 15), -5)


def test_naive_discharge_is_rejected() -> None:
    with pytest.raises(ValueError):
        plan_followup(
            discharge_at=datetime(2026, 1, 9, 10),
            disposition="01",
            risk_level="low",
            tz=NY,
            has_pcp=True,
            cfg=FollowupConfig(),
        )


def test_descriptions_do_not_depend_on_the_patient_or_the_time() -> None:
    def descriptions(discharge_at: datetime, code: str, has_pcp: bool, risk: str) -> list[str]:
        _, tasks = plan_followup(
            discharge_at=discharge_at,
            disposition=code,
            risk_level=risk,
            tz=NY,
            has_pcp=has_pcp,
            cfg=FollowupConfig(),
        )
        return [t.description for t in tasks]

    other = datetime(2027, 6, 17, 23, 15, tzinfo=UTC)
    for code in ("01", "03", "02"):
        for has_pcp in (True, False):
            for risk in ("high", "low"):
                assert descriptions(FRIDAY, code, has_pcp, risk) == descriptions(
                    other, code, has_pcp, risk
                )


# --- overdue ---------------------------------------------------------------------------


def test_is_overdue() -> None:
    due = datetime(2026, 1, 13, 23, 59, 59, tzinfo=ZoneInfo(NY))
    cfg = FollowupConfig()
    assert not is_overdue(due, due, cfg)
    assert not is_overdue(due, due - timedelta(hours=5), cfg)
    assert is_overdue(due, due + timedelta(seconds=1), cfg)
    # Different zones compare as instants.
    assert is_overdue(due, datetime(2026, 1, 14, 5, 0, tzinfo=UTC), cfg)
    assert not is_overdue(due, datetime(2026, 1, 14, 4, 59, 59, tzinfo=UTC), cfg)
    grace = FollowupConfig(escalate_after_hours=4)
    assert not is_overdue(due, due + timedelta(hours=4), grace)
    assert is_overdue(due, due + timedelta(hours=4, seconds=1), grace)


def test_is_overdue_grace_is_elapsed_time_across_dst() -> None:
    # Due Sat 31 Oct 2026 23:59:59 EDT; 24 h grace ends Sun 1 Nov 22:59:59 EST.
    due = datetime(2026, 10, 31, 23, 59, 59, tzinfo=ZoneInfo(NY))
    cfg = FollowupConfig(escalate_after_hours=24)
    end = due.astimezone(UTC) + timedelta(hours=24)
    assert not is_overdue(due, end, cfg)
    assert is_overdue(due, end + timedelta(seconds=1), cfg)


def test_is_overdue_rejects_naive() -> None:
    with pytest.raises(ValueError):
        is_overdue(datetime(2026, 1, 13), datetime(2026, 1, 14, tzinfo=UTC), FollowupConfig())


@pytest.mark.parametrize("code", ["04", "4", "84", "04^Assisted living"])
def test_assisted_living_gets_tcm_not_a_handoff(code: str) -> None:
    # NUBC 04 (custodial or supportive care: assisted living, domiciliary, rest home) is
    # a community setting for CMS TCM (REFERENCE.md section 1): the four TCM tasks, with
    # the TCM due dates, and no facility handoff.
    cls, tasks = plan_followup(discharge_at=FRIDAY, disposition=code, risk_level="high",
                               tz=NY, has_pcp=True, cfg=FollowupConfig())
    assert cls is C.COMMUNITY
    assert [(t.kind, t.rule) for t in tasks] == [
        (TaskKind.CONTACT, "tcm.contact.2bd"), (TaskKind.VISIT, "tcm.visit.7d"),
        (TaskKind.MED_REC, "tcm.med_rec"), (TaskKind.PCP_NOTIFICATION, "tcm.pcp_notification")]
    home = plan_followup(discharge_at=FRIDAY, disposition="01", risk_level="high", tz=NY,
                         has_pcp=True, cfg=FollowupConfig())[1]
    assert tasks == home
