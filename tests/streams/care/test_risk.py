"""LACE, risk level and the readmission-risk flags (pure, no broker)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.care.risk import (
    ALL_FLAGS,
    Factor,
    LaceResult,
    RiskConfig,
    RiskInput,
    RiskResult,
    assess,
    cms_conditions,
    emergent_reason,
    lace,
    length_of_stay_days,
    risk_level,
    social_needs,
)

NY = "America/New_York"
NYZ = ZoneInfo(NY)
CFG = RiskConfig()
ADMIT = datetime(2025, 6, 15, 14, 0, tzinfo=NYZ)


def make(**changes: object) -> RiskInput:
    base = RiskInput(
        admit_at=ADMIT,
        as_of=ADMIT + timedelta(days=2),
        tz=NY,
        emergent=False,
        emergent_reason=None,
        diagnoses=(),
        prior_ed_visits=(),
        prior_discharges=(),
        discharge_disposition=None,
        final=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def flag_codes(result: RiskResult) -> set[str]:
    return {f.code for f in result.flags}


def flag(result: RiskResult, code: str) -> tuple[Factor, ...]:
    return next(f.factors for f in result.flags if f.code == code)


# --- LACE components ----------------------------------------------------------------


@pytest.mark.parametrize(("days", "points"), [
    (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (6, 4), (7, 5), (13, 5), (14, 7),
    (100, 7),
])
def test_l_bands(days: int, points: int) -> None:
    assert lace(days, False, 0, 0).l == points


def test_a_emergent() -> None:
    assert lace(0, True, 0, 0) == LaceResult(score=3, l=0, a=3, c=0, e=0)
    assert lace(0, False, 0, 0).a == 0


@pytest.mark.parametrize(("points", "c"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (5, 5),
                                           (12, 5)])
def test_c_bands(points: int, c: int) -> None:
    assert lace(0, False, points, 0).c == c


@pytest.mark.parametrize(("visits", "e"), [(0, 0), (1, 1), (3, 3), (4, 4), (5, 4), (40, 4)])
def test_e_capped_at_4(visits: int, e: int) -> None:
    assert lace(0, False, 0, visits).e == e


def test_maximum_is_19() -> None:
    assert lace(30, True, 20, 10) == LaceResult(score=19, l=7, a=3, c=5, e=4)


def test_negative_inputs_rejected() -> None:
    with pytest.raises(ValueError):
        lace(-1, False, 0, 0)
    with pytest.raises(ValueError):
        lace(0, False, 0, -1)


@pytest.mark.parametrize(("score", "level"), [
    (0, "low"), (4, "low"), (5, "moderate"), (9, "moderate"), (10, "high"), (19, "high"),
])
def test_level_boundaries(score: int, level: str) -> None:
    assert risk_level(score, CFG) == level


def test_level_thresholds_configurable() -> None:
    cfg = RiskConfig(lace_moderate_at=7, lace_high_at=12)
    assert [risk_level(s, cfg) for s in (6, 7, 11, 12)] == ["low", "moderate", "moderate",
                                                             "high"]


# --- length of stay -----------------------------------------------------------------


def test_los_same_day_is_zero() -> None:
    start = datetime(2025, 1, 10, 0, 5, tzinfo=NYZ)
    assert length_of_stay_days(start, start.replace(hour=23, minute=55), NY) == 0


def test_los_counts_midnights_not_hours() -> None:
    start = datetime(2025, 1, 10, 23, 0, tzinfo=NYZ)
    assert length_of_stay_days(start, start + timedelta(hours=2), NY) == 1
    assert length_of_stay_days(start, start + timedelta(hours=47), NY) == 2


def test_los_across_spring_forward_in_new_york() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT. 33 elapsed hours are 1.375 days; two dates apart.
    admit = datetime(2024, 3, 9, 22, 0, tzinfo=NYZ)
    discharge = datetime(2024, 3, 11, 8, 0, tzinfo=NYZ)
    assert discharge.astimezone(UTC) - admit.astimezone(UTC) == timedelta(hours=33)
    assert length_of_stay_days(admit, discharge, NY) == 2
    # Same instants written in UTC give the same answer.
    assert length_of_stay_days(admit.astimezone(UTC), discharge.astimezone(UTC), NY) == 2


def test_los_across_fall_back_in_new_york() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST: a 25-hour day. 24h15m on one date is still 0.
    admit = datetime(2024, 11, 3, 0, 30, tzinfo=NYZ)
    discharge = datetime(2024, 11, 3, 23, 45, tzinfo=NYZ)
    assert discharge.astimezone(UTC) - admit.astimezone(UTC) == timedelta(hours=24, minutes=15)
    assert length_of_stay_days(admit, discharge, NY) == 0
    assert length_of_stay_days(admit, datetime(2024, 11, 4, 0, 10, tzinfo=NYZ), NY) == 1


def test_los_uses_the_facility_zone_not_utc() -> None:
    admit = datetime(2025, 1, 5, 4, 0, tzinfo=UTC)      # Jan 4 23:00 in New York
    discharge = datetime(2025, 1, 5, 6, 0, tzinfo=UTC)  # Jan 5 01:00 in New York
    assert length_of_stay_days(admit, discharge, NY) == 1
    assert length_of_stay_days(admit, discharge, "UTC") == 0


def test_los_rejects_naive_and_clamps_skew() -> None:
    with pytest.raises(ValueError):
        length_of_stay_days(datetime(2025, 1, 1), datetime(2025, 1, 2, tzinfo=UTC), NY)
    assert length_of_stay_days(ADMIT, ADMIT - timedelta(days=2), NY) == 0


# --- emergent admission -------------------------------------------------------------


@pytest.mark.parametrize(("admission_type", "admit_source", "reason"), [
    ("E", None, "admission type E"),
    ("emergency", None, "admission type EMERGENCY"),
    ("EM", "1", "admission type EM"),
    (None, "7", "admit source 7"),
    (None, "07", "admit source 7"),
    ("C", "emd", "admit source emd"),
    ("R", "ER", "admit source ER"),
    ("U", None, None),
    ("C", "1", None),
    (None, None, None),
    ("", " ", None),
])
def test_emergent_reason(admission_type: str | None, admit_source: str | None,
                         reason: str | None) -> None:
    assert emergent_reason(admission_type, admit_source, CFG) == reason


def test_urgent_can_be_made_emergent_by_config() -> None:
    cfg = RiskConfig(emergent_admission_types=("E", "U"))
    assert emergent_reason("U", None, cfg) == "admission type U"


# --- assess: LACE and factors --------------------------------------------------------


def test_assess_components_and_factors() -> None:
    inp = make(
        as_of=ADMIT + timedelta(days=5),
        emergent=True, emergent_reason="admission type E",
        diagnoses=(("I50.9", "I10"), ("E11.22", "I10")),
        prior_ed_visits=(ADMIT - timedelta(days=10), ADMIT - timedelta(days=100)),
    )
    result = assess(inp, CFG)
    assert result.lace == LaceResult(score=4 + 3 + 5 + 2, l=4, a=3, c=5, e=2)
    assert result.level == "high" and result.score == 14
    assert result.charlson_score == 2  # standard weights: chf 1 + complicated diabetes 1
    assert result.charlson.lace_points == 4  # LACE weights: chf 2 + complicated diabetes 2
    assert [(f.code, f.points) for f in result.factors] == [
        ("lace.l", 4), ("lace.a", 3), ("lace.c", 5), ("lace.e", 2)]
    details = {f.code: f.detail for f in result.factors}
    assert details["lace.l"] == "length of stay 5 days"
    assert details["lace.a"] == "emergent admission (admission type E)"
    assert "chf 2" in details["lace.c"] and "diabetes_complicated 2" in details["lace.c"]
    assert details["lace.e"] == "2 ED visits in the 183 days before admission"


def test_assess_provisional_and_unknown_admission() -> None:
    result = assess(make(final=False, as_of=ADMIT + timedelta(days=1)), CFG)
    assert result.factors[0].detail == "length of stay so far 1 day"
    assert result.final is False
    result = assess(make(admit_at=None), CFG)
    assert result.lace.l == 0
    assert "unknown" in result.factors[0].detail


def test_ed_lookback_window_and_cap() -> None:
    visits = tuple(ADMIT - timedelta(days=d) for d in (1, 20, 40, 90, 150, 183, 184, 400))
    result = assess(make(prior_ed_visits=visits), CFG)
    assert result.lace.e == 4
    assert result.factors[3].detail == (
        "6 ED visits in the 183 days before admission, capped at 4")
    # The ED visit that led to the admission is excluded by the caller; one after the
    # admission time (bad history) is never counted.
    result = assess(make(prior_ed_visits=(ADMIT + timedelta(hours=1),)), CFG)
    assert result.lace.e == 0


def test_high_lace_flag_threshold() -> None:
    # L 4 (4 days) + A 3 + E 2 = 9: moderate, no flag; one more ED visit: 10, flag.
    two = (ADMIT - timedelta(days=3), ADMIT - timedelta(days=90))
    nine = assess(make(as_of=ADMIT + timedelta(days=4), emergent=True, prior_ed_visits=two),
                  CFG)
    assert (nine.score, nine.level) == (9, "moderate")
    assert "high_lace" not in flag_codes(nine)
    three = (*two, ADMIT - timedelta(days=120))
    ten = assess(make(as_of=ADMIT + timedelta(days=4), emergent=True, prior_ed_visits=three),
                 CFG)
    assert (ten.score, ten.level) == (10, "high")
    assert [f.code for f in flag(ten, "high_lace")] == ["lace.l", "lace.a", "lace.e"]


def test_level_bands_through_assess() -> None:
    # LOS 4 -> L 4 (low); LOS 7 -> L 5 (moderate)
    assert assess(make(as_of=ADMIT + timedelta(days=4)), CFG).level == "low"
    assert assess(make(as_of=ADMIT + timedelta(days=7)), CFG).level == "moderate"


# --- flags ---------------------------------------------------------------------------


def test_readmission_day_30_fires_day_31_does_not() -> None:
    at_30 = ADMIT - timedelta(days=30) + timedelta(hours=6)  # later in the day: still day 30
    result = assess(make(prior_discharges=(at_30,)), CFG)
    assert "readmission_30d" in flag_codes(result)
    assert flag(result, "readmission_30d") == (Factor(
        "readmission.days_since_discharge", None,
        "admitted 30 days after a prior inpatient discharge (window 30 days)"),)
    at_31 = ADMIT - timedelta(days=31)
    assert "readmission_30d" not in flag_codes(assess(make(prior_discharges=(at_31,)), CFG))


def test_readmission_uses_latest_prior_discharge_only_before_admission() -> None:
    discharges = (ADMIT - timedelta(days=90), ADMIT - timedelta(days=3),
                  ADMIT + timedelta(days=1))  # after admission: not a prior discharge
    result = assess(make(prior_discharges=discharges), CFG)
    assert "3 days" in flag(result, "readmission_30d")[0].detail
    same_day = assess(make(prior_discharges=(ADMIT - timedelta(hours=2),)), CFG)
    assert "admitted 0 days" in flag(same_day, "readmission_30d")[0].detail


def test_readmission_counts_facility_days_across_dst() -> None:
    # Discharged 2024-02-10 23:30 EST, admitted 2024-03-11 00:30 EDT: 30 calendar days
    # (29 days 23 hours elapsed, an hour lost to DST).
    discharge = datetime(2024, 2, 10, 23, 30, tzinfo=NYZ)
    admit = datetime(2024, 3, 11, 0, 30, tzinfo=NYZ)
    result = assess(make(admit_at=admit, as_of=admit, prior_discharges=(discharge,)), CFG)
    assert "30 days" in flag(result, "readmission_30d")[0].detail


@pytest.mark.parametrize(("disposition", "fires"), [
    ("07", True), ("7", True), ("aadvice", True), ("AADVICE", True), ("AMA", True),
    ("01", False), ("home", False), (None, False), ("", False),
])
def test_against_medical_advice(disposition: str | None, fires: bool) -> None:
    result = assess(make(discharge_disposition=disposition), CFG)
    assert ("against_medical_advice" in flag_codes(result)) is fires


def test_ama_factor_names_the_configured_code() -> None:
    result = assess(make(discharge_disposition="7"), CFG)
    assert flag(result, "against_medical_advice")[0].detail == "discharge disposition 07"


@pytest.mark.parametrize(("code", "condition"), [
    ("I21.4", "ami"), ("I22.0", "ami"), ("I50.9", "heart_failure"), ("I11.0", "heart_failure"),
    ("I13.0", "heart_failure"), ("I13.2", "heart_failure"), ("I09.81", "heart_failure"),
    ("J12.9", "pneumonia"), ("J18.9", "pneumonia"), ("J69.0", "pneumonia"),
    ("J41.0", "copd"), ("J44.1", "copd"), ("Z95.1", "cabg"), ("Z96.641", "hip_knee"),
    ("Z96.653", "hip_knee"), ("Z47.1", "hip_knee"),
])
def test_cms_condition_codes(code: str, condition: str) -> None:
    assert [m.condition for m in cms_conditions([(code, None)])] == [condition]
    result = assess(make(diagnoses=((code, "I10"),)), CFG)
    (factor,) = flag(result, "cms_condition")
    assert factor.code == f"cms.{condition}" and factor.points is None
    assert factor.detail.endswith(code)


@pytest.mark.parametrize("code", [
    "I20.0", "I23.0", "I11.9", "I13.10", "I09.89", "J11.1", "J19", "J69.1", "J40", "J45.909",
    "J96.01", "Z95.0", "Z95.2", "Z96.63", "Z96.66", "Z47.2", "Z48.812",
])
def test_cms_condition_not_fired(code: str) -> None:
    assert cms_conditions([(code, None)]) == ()
    assert "cms_condition" not in flag_codes(assess(make(diagnoses=((code, None),)), CFG))


def test_cms_condition_ignores_non_icd10_systems() -> None:
    assert cms_conditions([("I21.4", "I9"), ("22298006", "SCT")]) == ()


def test_frequent_ed_threshold_and_window() -> None:
    within = (ADMIT - timedelta(days=1), ADMIT - timedelta(days=30),
              ADMIT - timedelta(days=60))
    result = assess(make(prior_ed_visits=within), CFG)
    assert flag(result, "frequent_ed") == (Factor(
        "ed.visits", None, "3 ED visits in the 60 days before admission (threshold 3)"),)
    # 2 visits: no flag.
    assert "frequent_ed" not in flag_codes(assess(make(prior_ed_visits=within[:2]), CFG))
    # The third 61 days before admission: does not count.
    older = (*within[:2], ADMIT - timedelta(days=61))
    assert "frequent_ed" not in flag_codes(assess(make(prior_ed_visits=older), CFG))


@pytest.mark.parametrize(("code", "category"), [
    ("Z55.0", "education_literacy"), ("Z55.6", "education_literacy"), ("Z56.0", "employment"),
    ("Z57.1", "occupational_exposure"), ("Z58.6", "physical_environment"),
    ("Z59.00", "housing"), ("Z59.01", "housing"), ("Z59.02", "housing"), ("Z59.1", "housing"),
    ("Z59.811", "housing"), ("Z59.41", "food"), ("Z59.48", "food"), ("Z59.4", "food"),
    ("Z59.82", "transportation"), ("Z59.5", "economic"), ("Z59.6", "economic"),
    ("Z59.86", "economic"), ("Z59.9", "economic"), ("Z60.2", "social_environment"),
    ("Z61.0", "childhood_events"), ("Z62.21", "upbringing"), ("Z63.4", "family"),
    ("Z64.0", "psychosocial"), ("Z65.8", "other_psychosocial"),
])
def test_social_need_categories(code: str, category: str) -> None:
    assert [m.condition for m in social_needs([(code, "ICD-10-CM")])] == [category]


@pytest.mark.parametrize("code", ["Z54", "Z66", "Z00.00", "Z91.120"])
def test_not_social_needs(code: str) -> None:
    assert social_needs([(code, None)]) == ()
    assert "social_needs" not in flag_codes(assess(make(diagnoses=((code, None),)), CFG))


def test_social_needs_flag_factors() -> None:
    result = assess(make(diagnoses=(("Z59.41", None), ("Z59.01", None), ("Z59.82", None),
                                    ("Z59.0.1", "SCT"))), CFG)
    assert flag(result, "social_needs") == (
        Factor("sdoh.housing", None, "Housing: Z59.01"),
        Factor("sdoh.food", None, "Food insecurity: Z59.41"),
        Factor("sdoh.transportation", None, "Transportation insecurity: Z59.82"),
    )


def test_no_flags_for_a_quiet_stay() -> None:
    result = assess(make(), CFG)
    assert result.flags == ()
    assert result.level == "low"


def test_flags_in_fixed_order_and_can_be_disabled() -> None:
    inp = make(
        as_of=ADMIT + timedelta(days=14), emergent=True,
        diagnoses=(("I50.9", None), ("Z59.01", None)),
        prior_ed_visits=tuple(ADMIT - timedelta(days=d) for d in (1, 2, 3)),
        prior_discharges=(ADMIT - timedelta(days=5),),
        discharge_disposition="07",
    )
    assert [f.code for f in assess(inp, CFG).flags] == list(ALL_FLAGS)
    cfg = RiskConfig(enabled_flags=("high_lace", "social_needs"))
    assert [f.code for f in assess(inp, cfg).flags] == ["high_lace", "social_needs"]


def test_details_are_phi_free() -> None:
    # A patient's name in a free-text diagnosis or a disposition never reaches a detail.
    inp = make(diagnoses=(("JOHN SMITH", None), ("I50.9 ", None)),
               discharge_disposition="DOE^JANE")
    result = assess(inp, CFG)
    text = " ".join(f.detail for f in result.factors) + " ".join(
        f.detail for fl in result.flags for f in fl.factors)
    assert "SMITH" not in text.upper() and "DOE" not in text.upper()


def test_naive_datetimes_rejected() -> None:
    with pytest.raises(ValueError):
        assess(make(prior_ed_visits=(datetime(2025, 6, 1),)), CFG)
    with pytest.raises(ValueError):
        assess(make(prior_discharges=(datetime(2025, 6, 1),)), CFG)
    with pytest.raises(ValueError):
        assess(make(admit_at=None, as_of=datetime(2025, 6, 1)), CFG)


# --- config --------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    assert (CFG.lace_moderate_at, CFG.lace_high_at, CFG.flag_lace_at) == (5, 10, 10)
    assert (CFG.readmission_days, CFG.frequent_ed_visits, CFG.frequent_ed_days,
            CFG.ed_lookback_days) == (30, 3, 60, 183)
    assert CFG.enabled_flags == ALL_FLAGS
    with pytest.raises(ValidationError):
        RiskConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RiskConfig(enabled_flags=("nope",))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RiskConfig(lace_moderate_at=11, lace_high_at=10)
    with pytest.raises(ValidationError):
        CFG.lace_high_at = 3  # type: ignore[misc]
    # YAML lists validate into tuples.
    assert RiskConfig.model_validate({"ama_dispositions": ["07"]}).ama_dispositions == ("07",)


# --- properties ----------------------------------------------------------------------


@given(
    los=st.integers(min_value=0, max_value=400),
    emergent=st.booleans(),
    points=st.integers(min_value=0, max_value=40),
    visits=st.integers(min_value=0, max_value=50),
    moderate=st.integers(min_value=0, max_value=19),
    span=st.integers(min_value=0, max_value=19),
)
def test_score_in_range_and_level_consistent(
    los: int, emergent: bool, points: int, visits: int, moderate: int, span: int
) -> None:
    result = lace(los, emergent, points, visits)
    assert 0 <= result.score <= 19
    assert result.score == result.l + result.a + result.c + result.e
    cfg = RiskConfig(lace_moderate_at=moderate, lace_high_at=min(19, moderate + span))
    level = risk_level(result.score, cfg)
    expected = ("high" if result.score >= cfg.lace_high_at
                else "moderate" if result.score >= cfg.lace_moderate_at else "low")
    assert level == expected
    default_level = risk_level(result.score, CFG)
    assert default_level == ("low" if result.score <= 4 else
                             "moderate" if result.score <= 9 else "high")


_CODES = st.sampled_from(["I21.4", "I50.9", "E11.22", "C78.0", "K70.4", "B20", "N18.6",
                          "F03.90", "M05.79", "Z59.01", "J44.1", "R69", "garbage"])


@given(
    stay_hours=st.integers(min_value=0, max_value=24 * 60),
    emergent=st.booleans(),
    codes=st.lists(_CODES, max_size=10),
    ed_days=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    discharge_days=st.lists(st.integers(min_value=0, max_value=400), max_size=4),
)
def test_assess_is_consistent(stay_hours: int, emergent: bool, codes: list[str],
                              ed_days: list[int], discharge_days: list[int]) -> None:
    inp = make(
        as_of=ADMIT + timedelta(hours=stay_hours), emergent=emergent,
        diagnoses=tuple((c, None) for c in codes),
        prior_ed_visits=tuple(ADMIT - timedelta(days=d, minutes=1) for d in ed_days),
        prior_discharges=tuple(ADMIT - timedelta(days=d, minutes=1) for d in discharge_days),
    )
    result = assess(inp, CFG)
    assert 0 <= result.score <= 19
    assert result.level == risk_level(result.score, CFG)
    assert sum(f.points or 0 for f in result.factors) == result.score
    assert ("high_lace" in flag_codes(result)) == (result.score >= CFG.flag_lace_at)
    for fl in result.flags:
        assert fl.factors
        for factor in fl.factors:
            assert not re.search(r"\d{4}-\d{2}-\d{2}", factor.detail)  # no dates
    assert assess(inp, CFG) == result  # pure: same input, same output
