"""Matching a need to agencies, and the suppressions that stop referrals (pure).

An agency is a candidate for a need when, all of:

* it offers the need's service;
* it is accepting new referrals;
* the patient's address is in its service area: the ZIP (first 5 digits of the postal
  code) is listed, or the county is listed (compared by :func:`normalize_county`); an
  agency with neither list serves anywhere. A patient with no usable address matches
  only agencies that serve anywhere (we cannot claim an area we do not know);
* it speaks the patient's language: an agency without a language list serves any; an
  unknown patient language matches every agency; codes and names are compared after
  :func:`streams.care.assignment.normalize_language` (``es`` = ``spa`` = ``Spanish``);
* it has not been tried for this need already.

Candidates keep the directory's order (ops rank agencies by ordering the file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from streams.care.assignment import normalize_language
from streams.referrals.directory import Agency, Directory, normalize_county

__all__ = ["PatientArea", "Suppression", "candidates", "in_service_area",
           "language_served", "suppression", "zip5"]


@dataclass(frozen=True)
class PatientArea:
    """What matching reads about the patient (no name, no identifiers)."""

    postal_code: str | None = None
    county: str | None = None
    language: str | None = None


def zip5(postal_code: str | None) -> str | None:
    """The 5-digit ZIP of a US postal code (``01103-2201`` -> ``01103``), else None."""
    if not postal_code:
        return None
    digits = postal_code.strip()[:5]
    return digits if len(digits) == 5 and digits.isdigit() else None


def in_service_area(agency: Agency, patient: PatientArea) -> bool:
    area = agency.service_area
    if area.is_anywhere():
        return True
    code = zip5(patient.postal_code)
    if code is not None and code in area.zip:
        return True
    if patient.county and area.counties:
        wanted = normalize_county(patient.county)
        return wanted in {normalize_county(c) for c in area.counties}
    return False


def language_served(agency: Agency, language: str | None) -> bool:
    wanted = normalize_language(language)
    if wanted is None or not agency.languages:
        return True
    return wanted in {normalize_language(lang) for lang in agency.languages}


def candidates(directory: Directory, service: str, patient: PatientArea,
               tried: Iterable[str] = ()) -> list[Agency]:
    """Agencies that could take this need, best first (see the module docstring)."""
    skip = frozenset(tried)
    return [a for a in directory.agencies
            if a.offers(service) and a.accepting and a.id not in skip
            and in_service_area(a, patient) and language_served(a, patient.language)]


@dataclass(frozen=True)
class Suppression:
    reason: str
    """``patient_opted_out`` or ``protection_indicator``."""
    since: datetime | None = None


def suppression(opted_out: bool, opt_at: datetime | None, protection: bool | None
                ) -> Suppression | None:
    """Why referrals are suppressed for the patient now, or None.

    A consent opt-out (the latest ConsentRecord wins) or the PD1-12 protection indicator
    (``Y``: the patient asked the facility not to disclose their information) stops new
    referrals; the engine also cancels the ones not yet accepted.
    """
    if opted_out:
        return Suppression("patient_opted_out", opt_at)
    if protection:
        return Suppression("protection_indicator")
    return None
