"""Matching: service, area (ZIP and county), language, accepting, tried, suppression."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.referrals.directory import parse_directory
from streams.referrals.matching import (
    PatientArea,
    candidates,
    suppression,
    zip5,
)

D = parse_directory("""
agencies:
  - {id: zip-en, name: A, services: [housing], service_area: {zip: ["01103"]}, languages: [en]}
  - {id: county-any, name: B, services: [housing], service_area: {counties: [Hampden County]}}
  - {id: closed, name: C, services: [housing], service_area: {}, accepting: false}
  - {id: anywhere-es, name: D, services: [housing, food], languages: [spa]}
  - {id: food-only, name: E, services: [food], service_area: {zip: ["01103"]}}
""")


def ids(service: str, area: PatientArea, tried: tuple[str, ...] = ()) -> list[str]:
    return [a.id for a in candidates(D, service, area, tried)]


def test_service() -> None:
    assert ids("food", PatientArea("01103")) == ["anywhere-es", "food-only"]
    assert ids("transportation", PatientArea("01103")) == []


def test_area_by_zip_including_zip_plus_four() -> None:
    assert ids("housing", PatientArea("01103-2201", language="en")) == ["zip-en"]
    assert ids("housing", PatientArea("01104", language="en")) == []


def test_area_by_county() -> None:
    assert ids("housing", PatientArea("01104", county="HAMPDEN", language="en")) == [
        "county-any"]
    assert ids("housing", PatientArea(None, county="hampden county", language="fr")) == [
        "county-any"]


def test_unknown_address_matches_only_anywhere_agencies() -> None:
    assert ids("housing", PatientArea(None, None, "es")) == ["anywhere-es"]


@pytest.mark.parametrize("language", ["es", "spa", "Spanish", "es-MX", "SPA"])
def test_language_normalized(language: str) -> None:
    assert ids("housing", PatientArea("01103", "Hampden", language)) == [
        "county-any", "anywhere-es"]


def test_unknown_language_matches_all() -> None:
    assert ids("housing", PatientArea("01103", "Hampden", None)) == [
        "zip-en", "county-any", "anywhere-es"]


def test_accepting_false_never_matches() -> None:
    assert "closed" not in ids("housing", PatientArea("01103", "Hampden", None))


def test_tried_agencies_skipped_and_order_is_directory_order() -> None:
    area = PatientArea("01103", "Hampden", "en")
    assert ids("housing", area) == ["zip-en", "county-any"]
    assert ids("housing", area, ("zip-en",)) == ["county-any"]
    assert ids("housing", area, ("zip-en", "county-any")) == []


@pytest.mark.parametrize(("raw", "z"), [("01103", "01103"), ("011032201", "01103"),
                                        ("0110", None), ("K1A 0B1", None), (None, None)])
def test_zip5(raw: str | None, z: str | None) -> None:
    assert zip5(raw) == z


def test_suppression() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert suppression(False, None, None) is None
    assert suppression(False, None, False) is None
    s = suppression(True, at, None)
    assert s is not None and s.reason == "patient_opted_out"
    p = suppression(False, None, True)
    assert p is not None and p.reason == "protection_indicator"
