"""Need detection: the shipped table, diagnosis and disposition rules, flags."""

from __future__ import annotations

import pytest

from streams.referrals.config import ReferralsConfig
from streams.referrals.needs import (
    Need,
    detect_needs,
    needs_from_diagnoses,
    needs_from_disposition,
    needs_from_flag,
)

CFG = ReferralsConfig()


@pytest.mark.parametrize(
    ("code", "service"),
    [
        ("Z55.0", "education"), ("Z56.0", "employment"), ("Z57.1", "occupational-health"),
        ("Z58.6", "environmental-health"),
        ("Z59.00", "housing"), ("Z59.01", "housing"), ("Z59.02", "housing"),
        ("Z59.1", "housing"), ("Z59.811", "housing"),
        ("Z59.41", "food"), ("Z59.48", "food"),
        ("Z59.82", "transportation"),
        ("Z59.5", "financial"), ("Z59.6", "financial"), ("Z59.86", "financial"),
        ("Z60.2", "social-support"), ("Z62.21", "family-support"), ("Z63.0", "family-support"),
        ("Z64.0", "psychosocial-support"), ("Z65.1", "psychosocial-support"),
        ("F32.9", "behavioral-health"), ("F01.50", "behavioral-health"),
        ("F99", "behavioral-health"), ("F10.20", "behavioral-health"),
    ],
)
def test_need_table(code: str, service: str) -> None:
    (need,) = needs_from_diagnoses([(code, "I10")], CFG)
    assert need.service == service
    assert need.codes == (code,)


@pytest.mark.parametrize("code", ["F17.210", "Z54", "Z66", "I50.9", "E11.9"])
def test_not_a_need(code: str) -> None:
    assert needs_from_diagnoses([(code, "I10")], CFG) == ()


def test_non_icd10_systems_ignored() -> None:
    assert needs_from_diagnoses([("Z59.01", "SNOMED")], CFG) == ()


def test_merged_by_service_with_every_code() -> None:
    needs = needs_from_diagnoses([("Z59.01", None), ("Z59.1", None), ("Z59.41", None),
                                  ("F32.9", None), ("F41.1", None)], CFG)
    assert [n.service for n in needs] == ["behavioral-health", "food", "housing"]
    assert needs[2].codes == ("Z59.01", "Z59.1")
    assert needs[0].codes == ("F32.9", "F41.1")
    assert needs[2].rule == "need.sdoh.housing"


def test_disposition_home_health() -> None:
    assert needs_from_disposition("06", CFG) == (
        Need("home-health", ("disposition:06",), "need.disposition"),)
    assert needs_from_disposition("01", CFG) == ()
    assert needs_from_disposition(None, CFG) == ()


def test_configurable() -> None:
    cfg = ReferralsConfig.model_validate({
        "social_needs": {"food": None, "economic": "benefits"},
        "diagnoses": [{"codes": ["F10-F19"], "service": "substance-use"}],
        "dispositions": [{"codes": ["06", "home-health"], "service": "home-nursing"}],
        "flags": {"frequent_ed": "community-health-worker"},
    })
    assert cfg.social_needs["housing"] == "housing"  # untouched defaults kept
    assert needs_from_diagnoses([("Z59.41", None)], cfg) == ()
    assert needs_from_diagnoses([("Z59.6", None)], cfg)[0].service == "benefits"
    assert [n.service for n in needs_from_diagnoses([("F11.2", None), ("F32.9", None)], cfg)] \
        == ["substance-use"]
    assert needs_from_disposition("HOME-HEALTH", cfg)[0].service == "home-nursing"
    assert needs_from_flag([("frequent_ed", [])], cfg) == (
        Need("community-health-worker", ("flag:frequent_ed",), "need.flag"),)


def test_bad_code_spec_refused() -> None:
    with pytest.raises(ValueError):
        ReferralsConfig.model_validate({"diagnoses": [{"codes": ["f01"], "service": "x"}]})


def test_social_needs_flag_factors() -> None:
    needs = needs_from_flag([("social_needs", ["sdoh.housing", "sdoh.food"]),
                             ("high_lace", ["lace.l"])], CFG)
    assert [(n.service, n.codes) for n in needs] == [
        ("food", ("flag:social_needs",)), ("housing", ("flag:social_needs",))]
    off = ReferralsConfig(flag_social_needs=False)
    assert needs_from_flag([("social_needs", ["sdoh.housing"])], off) == ()


def test_detect_needs_all_sources() -> None:
    needs = detect_needs([("Z59.01", None)], "06", [("social_needs", ["sdoh.housing"])], CFG)
    assert [(n.service, n.codes) for n in needs] == [
        ("home-health", ("disposition:06",)), ("housing", ("Z59.01", "flag:social_needs"))]
