"""Charlson (Quan 2005 ICD-10 coding): every category at its boundary codes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.care.charlson import (
    CATEGORIES,
    CATEGORY_IDS,
    HIERARCHIES,
    CodeSet,
    charlson,
    format_icd10,
    is_icd10_system,
    load_data,
    looks_like_icd10,
    normalize_icd10,
    parse_code_set,
)


def cats(*codes: str, system: str | None = None) -> set[str]:
    """Every category that matched (before hierarchies)."""
    return set(charlson([(c, system) for c in codes]).matched)


# (category, codes that must match it, codes that must not): the first and last code of
# every range and of every prefix list, and their neighbours just outside.
BOUNDARIES: list[tuple[str, list[str], list[str]]] = [
    ("mi", ["I21", "I21.0", "I21.A1", "I22.9", "I25.2"],
     ["I20.9", "I23.0", "I25.1", "I25.3"]),
    ("chf", ["I43", "I50.9", "I50.810", "I09.9", "I11.0", "I13.0", "I13.2", "I25.5", "I42.0",
             "I42.5", "I42.9", "P29.0"],
     ["I09.8", "I11.9", "I13.1", "I42.1", "I42.4", "I25.4", "I51", "P29.1", "I44"]),
    ("pvd", ["I70", "I70.0", "I71.9", "I73.1", "I73.8", "I73.9", "I77.1", "I79.0", "I79.2",
             "K55.1", "K55.8", "K55.9", "Z95.8", "Z95.9"],
     ["I69.9", "I72", "I73.0", "I77.0", "I79.1", "K55.0", "K55.2", "Z95.1"]),
    ("cevd", ["G45", "G45.9", "G46.3", "I60", "I60.9", "I63.9", "I69", "I69.998", "H34.0"],
     ["G44", "G47", "I59", "I59.9", "I70", "H34.1", "H33"]),
    ("dementia", ["F00", "F01.50", "F02.80", "F03", "F03.90", "G30.9", "F05.1", "G31.1"],
     ["F04", "F05.0", "F05", "G29", "G31.0", "G31.2"]),
    ("cpd", ["J40", "J44.9", "J47", "J47.9", "J60", "J67.9", "I27.8", "I27.9", "J68.4",
             "J70.1", "J70.3"],
     ["J39", "J48", "J59", "J68", "J68.3", "I27.2", "J70.0", "J70.2"]),
    ("rheumatic", ["M05", "M05.79", "M06.9", "M32", "M32.9", "M34", "M34.9", "M31.5",
                   "M35.1", "M35.3", "M36.0"],
     ["M04", "M07", "M31", "M31.6", "M35.0", "M35.2", "M36.1", "M35"]),
    ("pud", ["K25", "K25.9", "K27.7", "K28", "K28.9"], ["K24", "K29", "K29.70"]),
    ("mild_liver", ["B18", "B18.2", "K70.0", "K70.30", "K70.9", "K71.3", "K71.5", "K71.7",
                    "K73", "K74.60", "K76.0", "K76.2", "K76.4", "K76.8", "K76.9", "Z94.4"],
     ["B17", "B19", "K70.4", "K71.2", "K71.6", "K71.8", "K76.1", "K76.5", "Z94.3"]),
    ("diabetes", ["E10.1", "E10.10", "E10.11", "E10.6", "E10.65", "E10.8", "E10.9", "E11.0",
                  "E11.9", "E12.0", "E13.9", "E14.1", "E14.9"],
     ["E09.9", "E15", "E10.2", "E10.7", "E11.A"]),
    ("diabetes_complicated", ["E10.2", "E10.21", "E10.3", "E10.4", "E10.5", "E10.7",
                              "E11.22", "E12.7", "E13.5", "E14.2", "E14.7"],
     ["E10.1", "E10.6", "E10.9", "E14.8", "E09.22", "E15"]),
    ("hemiplegia", ["G81", "G81.90", "G82", "G82.50", "G04.1", "G11.4", "G80.1", "G80.2",
                    "G83.0", "G83.4", "G83.9"],
     ["G80", "G80.0", "G80.3", "G83.5", "G83.8", "G04.0", "G11.3", "G84"]),
    ("renal", ["N18", "N18.3", "N18.6", "N19", "I12.0", "I13.1", "I13.11", "N03.2", "N03.7",
               "N05.2", "N05.7", "N25.0", "Z49.0", "Z49.01", "Z49.2", "Z94.0", "Z99.2"],
     ["N17", "N20", "I12.9", "I13.0", "N03.1", "N03.8", "N05.1", "N05.8", "N25.1", "Z49.3",
      "Z94.1", "Z99.1"]),
    ("malignancy", ["C00", "C00.9", "C26", "C26.9", "C30", "C34.90", "C37", "C41.9", "C43",
                    "C43.9", "C45", "C50.911", "C58", "C60", "C76", "C76.8", "C81", "C85.9",
                    "C88", "C90", "C90.00", "C97"],
     ["C27", "C29", "C35", "C36", "C42", "C44", "C44.91", "C59", "C77", "C80", "C86", "C87",
      "C89", "C98", "D00"]),
    ("severe_liver", ["I85.0", "I85.00", "I85.9", "I86.4", "I98.2", "K70.4",
                      "K70.41", "K71.1", "K72.1", "K72.10", "K72.9", "K76.5", "K76.7"],
     ["I85.1", "I86.3", "I98.1", "K70.3", "K71.0", "K72.0", "K76.4", "K76.8"]),
    ("metastatic", ["C77", "C77.0", "C78.00", "C79.9", "C80", "C80.1"],
     ["C76", "C76.8", "C81", "C7A.0", "C7B.0", "C75"]),
    ("hiv_aids", ["B20", "B21", "B22", "B24"], ["B19", "B23", "B23.8", "B25"]),
]


def test_boundaries_cover_every_category() -> None:
    assert [b[0] for b in BOUNDARIES] == list(CATEGORY_IDS)
    assert len(CATEGORY_IDS) == 17


@pytest.mark.parametrize(("category", "inside", "outside"), BOUNDARIES,
                         ids=[b[0] for b in BOUNDARIES])
def test_category_boundaries(category: str, inside: list[str], outside: list[str]) -> None:
    for code in inside:
        assert category in cats(code), f"{code} should be {category}"
    for code in outside:
        assert category not in cats(code), f"{code} should not be {category}"


def test_e10_1_is_diabetes_without_complications_not_the_e10l_typo() -> None:
    # The public SQL version wrote `E10l`: E10.1 fell out of every category.
    assert cats("E10.1") == {"diabetes"}
    assert cats("E101") == {"diabetes"}
    assert cats("E10.2") == {"diabetes_complicated"}
    # "E10l" itself is not a code; it must not match anything.
    assert cats("E10l") == set()


def test_data_file_has_no_lower_case_or_malformed_specs() -> None:
    data = load_data("charlson_quan2005.yaml")
    spec = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z]{0,4}(-[A-Z][0-9]{2}[0-9]{0,4})?$")
    for entry in data["categories"]:
        for code in entry["codes"]:
            assert spec.match(code), (entry["id"], code)
    diabetes = {e["id"]: e["codes"] for e in data["categories"]}
    assert all(re.fullmatch(r"E1[0-4][01689]", c) for c in diabetes["diabetes"])
    assert all(re.fullmatch(r"E1[0-4][23457]", c) for c in diabetes["diabetes_complicated"])
    assert len(diabetes["diabetes"]) == len(diabetes["diabetes_complicated"]) == 25


def test_loader_rejects_the_typo_and_bad_ranges() -> None:
    for bad in (["E10l"], ["e101"], ["I60-J69"], ["I69-I60"], ["I60-I690"], ["I6.0"], []):
        with pytest.raises(ValueError):
            parse_code_set(bad)


def test_weights_standard_and_lace() -> None:
    weights = {c.id: (c.weight, c.lace_weight) for c in CATEGORIES}
    assert weights == {
        "mi": (1, 1), "chf": (1, 2), "pvd": (1, 1), "cevd": (1, 1), "dementia": (1, 3),
        "cpd": (1, 2), "rheumatic": (1, 3), "pud": (1, 0), "mild_liver": (1, 2),
        "diabetes": (1, 1), "diabetes_complicated": (1, 2), "hemiplegia": (2, 0),
        "renal": (2, 2), "malignancy": (2, 2), "severe_liver": (3, 4), "metastatic": (6, 6),
        "hiv_aids": (6, 4),
    }
    assert set(HIERARCHIES) == {("mild_liver", "severe_liver"),
                                ("diabetes", "diabetes_complicated"),
                                ("malignancy", "metastatic")}


@pytest.mark.parametrize(("code", "lace"), [
    ("N18.3", 2), ("N18.9", 2), ("N19", 2), ("Z94.0", 2), ("N03.2", 2), ("I13.10", 2),
    ("N18.4", 4), ("N18.5", 4), ("N18.6", 4), ("Z99.2", 4), ("Z49.01", 4), ("I12.0", 4),
    ("I13.11", 4),
])
def test_renal_lace_weight_distinguishes_severe_codes(code: str, lace: int) -> None:
    result = charlson([(code, None)])
    assert result.categories == ("renal",)
    assert result.score == 2
    assert result.lace_points == lace


def test_every_single_category_scores_its_weights() -> None:
    samples = {b[0]: b[1][0] for b in BOUNDARIES}
    for cat in CATEGORIES:
        result = charlson([(samples[cat.id], "ICD-10-CM")])
        assert result.categories == (cat.id,)
        assert result.score == cat.weight
        assert result.lace_points == cat.lace_weight


@pytest.mark.parametrize(("codes", "kept", "dropped", "score", "lace"), [
    (["K70.3", "K70.4"], "severe_liver", "mild_liver", 3, 4),
    (["E11.9", "E11.22"], "diabetes_complicated", "diabetes", 1, 2),
    (["C50.9", "C78.0"], "metastatic", "malignancy", 6, 6),
])
def test_hierarchies(codes: list[str], kept: str, dropped: str, score: int, lace: int) -> None:
    result = charlson([(c, None) for c in codes])
    assert result.categories == (kept,)
    assert set(result.matched) == {kept, dropped}  # the explanation keeps both
    assert result.score == score
    assert result.lace_points == lace
    assert dict(result.lace_by_category) == {kept: lace}


def test_milder_alone_counts() -> None:
    assert charlson([("K70.3", None)]).score == 1
    assert charlson([("C50.9", None)]).score == 2
    assert charlson([("E11.9", None)]).lace_points == 1


def test_sum_over_categories_and_sorted_ids() -> None:
    result = charlson([("I50.9", None), ("I21.4", None), ("J44.9", None), ("G81.90", None),
                       ("B20", None), ("K25.9", None)])
    assert result.categories == ("chf", "cpd", "hemiplegia", "hiv_aids", "mi", "pud")
    assert result.score == 1 + 1 + 2 + 6 + 1 + 1
    assert result.lace_points == 2 + 2 + 0 + 4 + 1 + 0


def test_dotted_and_dotless_and_case_are_the_same() -> None:
    for variants in (["I21.4", "I214", "i21.4", " I21.4 ", "I 21.4"],
                     ["E11.22", "E1122", "e11.22"]):
        results = {charlson([(v, None)]).score for v in variants}
        assert len(results) == 1
    assert normalize_icd10(" e10.1 ") == "E101"
    assert normalize_icd10("E11.4†") == "E114"
    assert format_icd10("I214") == "I21.4"
    assert format_icd10("I50") == "I50"


def test_matched_lists_normalized_codes_deduplicated() -> None:
    result = charlson([("I50.9", None), ("I509", "I10"), ("I50.1", None), ("I11.0", None)])
    assert dict(result.matched) == {"chf": ("I110", "I501", "I509")}
    assert result.score == 1


@pytest.mark.parametrize("system", [
    None, "", "I10", "I10C", "ICD10", "ICD-10-CM", "ICD-10", "icd10cm", "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10",
    "urn:oid:2.16.840.1.113883.6.90", "2.16.840.1.113883.6.3", "99DX",
])
def test_icd10_systems_count(system: str | None) -> None:
    assert is_icd10_system(system)
    assert charlson([("I21.4", system)]).categories == ("mi",)


@pytest.mark.parametrize("system", [
    "I9", "I9C", "I9CDX", "ICD9", "ICD-9-CM", "ICD9CM", "SCT", "SNM", "SNOMED-CT", "SNOMEDCT",
    "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-9-cm", "I10P", "ICD-10-PCS",
    "LN", "2.16.840.1.113883.6.96", "urn:oid:2.16.840.1.113883.6.103",
])
def test_non_icd10_systems_are_ignored(system: str) -> None:
    assert not is_icd10_system(system)
    result = charlson([("I21.4", system), ("V45.81", system)])
    assert result.score == 0 and result.categories == () and not result.matched


def test_non_icd10_shapes_are_ignored() -> None:
    # SNOMED ids, ICD-9 numbers, free text: never a category, never echoed.
    for code in ("22298006", "250.00", "410.91", "heart failure", "", "I2", "I21.4567890"):
        assert charlson([(code, None)]).categories == ()
    assert looks_like_icd10("I214")
    assert not looks_like_icd10("1214")


def test_no_diagnoses() -> None:
    result = charlson([])
    assert (result.score, result.lace_points, result.categories) == (0, 0, ())


def test_code_set_range_does_not_compare_letters_as_digits() -> None:
    # ICD-10-CM C7A (malignant neuroendocrine) sorts between C77 and C80 as a string.
    code_set: CodeSet = parse_code_set(["C77-C80"])
    assert code_set.match("C7A0") is None
    assert "C78.0" in code_set
    assert "C7A.0" not in code_set


@given(st.lists(st.sampled_from([b[1][0] for b in BOUNDARIES] + ["Z00.0", "R69"]),
                max_size=12))
def test_scores_are_bounded_and_hierarchies_hold(codes: list[str]) -> None:
    result = charlson([(c, None) for c in codes])
    assert 0 <= result.score <= sum(c.weight for c in CATEGORIES)
    assert result.lace_points == sum(result.lace_by_category.values())
    for milder, severer in HIERARCHIES:
        assert not (milder in result.categories and severer in result.categories)
