"""Need detection: which community services an encounter calls for (pure).

Four detectors, each configurable in the rules file's ``referrals:`` section
(:class:`streams.referrals.config.ReferralsConfig`, table of defaults there):

* social-needs diagnoses (ICD-10-CM Z55-Z65) by category -> service;
* other diagnosis rules (default: F01-F99 except F17 -> behavioral-health);
* discharge dispositions (default: 06 home health -> home-health);
* risk flags (care.flags reasons -> service; the ``social_needs`` flag's categories).

Every need records what detected it (``codes``): dotted ICD-10 codes (``Z59.01``),
``disposition:06`` or ``flag:<reason code>``; these are the referral's ``need_codes``
(the hub's record only: the agency copy carries the service category and nothing more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from streams.care.charlson import CodeSet, format_icd10, icd10_codes, parse_code_set
from streams.care.risk import social_needs
from streams.referrals.config import ReferralsConfig

__all__ = [
    "Need",
    "detect_needs",
    "merge_needs",
    "needs_from_diagnoses",
    "needs_from_disposition",
    "needs_from_flag",
]


@dataclass(frozen=True)
class Need:
    service: str
    codes: tuple[str, ...]
    rule: str
    """``need.sdoh.<category>``, ``need.diagnosis``, ``need.disposition``, ``need.flag``."""


def needs_from_diagnoses(diagnoses: Iterable[tuple[str, str | None]], cfg: ReferralsConfig
                         ) -> tuple[Need, ...]:
    """Needs from (code, system) diagnosis pairs (ICD-10 systems only)."""
    pairs = list(diagnoses)
    out: list[Need] = []
    for match in social_needs(pairs):
        service = cfg.social_needs.get(match.condition)
        if service:
            out.append(Need(service, (format_icd10(match.code),),
                            f"need.sdoh.{match.condition}"))
    codes = icd10_codes(pairs)
    for rule in cfg.diagnoses:
        include = _code_set(rule.codes)
        exclude = _code_set(rule.except_codes) if rule.except_codes else None
        hits = tuple(format_icd10(c) for c in sorted(codes)
                     if include.match(c) is not None
                     and (exclude is None or exclude.match(c) is None))
        if hits:
            out.append(Need(rule.service, hits, "need.diagnosis"))
    return merge_needs(out)


@lru_cache(maxsize=256)
def _code_set(specs: tuple[str, ...]) -> CodeSet:
    # A memo of a pure function over immutable specs: the rules are parsed once, not on
    # every event (as streams.care.charlson does for its own lookups).
    return parse_code_set(list(specs))


def needs_from_disposition(disposition: str | None, cfg: ReferralsConfig) -> tuple[Need, ...]:
    """Needs from a discharge disposition (PV1-36 / FHIR dischargeDisposition code)."""
    if not disposition:
        return ()
    code = disposition.strip().casefold()
    return merge_needs(
        Need(rule.service, (f"disposition:{disposition.strip()}",), "need.disposition")
        for rule in cfg.dispositions
        if code in {c.strip().casefold() for c in rule.codes})


def needs_from_flag(reasons: Iterable[tuple[str, Iterable[str]]], cfg: ReferralsConfig
                    ) -> tuple[Need, ...]:
    """Needs from a risk record's reasons: (reason code, its factor codes) pairs."""
    out: list[Need] = []
    for code, factors in reasons:
        service = cfg.flags.get(code)
        if service:
            out.append(Need(service, (f"flag:{code}",), "need.flag"))
        if code == "social_needs" and cfg.flag_social_needs:
            for factor in factors:
                category = factor.removeprefix("sdoh.")
                mapped = cfg.social_needs.get(category) if factor.startswith("sdoh.") \
                    else None
                if mapped:
                    out.append(Need(mapped, (f"flag:{code}",), f"need.sdoh.{category}"))
    return merge_needs(out)


def merge_needs(needs: Iterable[Need]) -> tuple[Need, ...]:
    """One need per service: codes united (first-seen order), the first rule kept; sorted
    by service so the outcome does not depend on detector order."""
    merged: dict[str, Need] = {}
    for need in needs:
        have = merged.get(need.service)
        if have is None:
            merged[need.service] = need
        else:
            codes = have.codes + tuple(c for c in need.codes if c not in have.codes)
            merged[need.service] = Need(have.service, codes, have.rule)
    return tuple(merged[s] for s in sorted(merged))


def detect_needs(diagnoses: Iterable[tuple[str, str | None]], disposition: str | None,
                 flag_reasons: Iterable[tuple[str, Iterable[str]]], cfg: ReferralsConfig
                 ) -> tuple[Need, ...]:
    """Every need of an encounter, merged by service."""
    return merge_needs((*needs_from_diagnoses(diagnoses, cfg),
                        *needs_from_disposition(disposition, cfg),
                        *needs_from_flag(flag_reasons, cfg)))
