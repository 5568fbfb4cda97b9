"""Charlson comorbidity from ICD-10 diagnosis codes (Quan et al., Med Care 2005).

Reads ``streams/care/data/charlson_quan2005.yaml`` (through :mod:`importlib.resources`,
once, at import): the ICD-10 coding of the Charlson categories by Quan H. et al., "Coding
algorithms for defining comorbidities in ICD-9-CM and ICD-10 administrative data", Med
Care 2005;43(11):1130-1139, with the standard Charlson weights (Charlson 1987) and the
LACE tool's own weights (van Walraven et al., CMAJ 2010;182(6):551-557). The two
weightings are reported side by side and never mixed.

Also the code-set machinery the other risk rules share (:class:`CodeSet`,
:func:`load_data`, :func:`is_icd10_system`): dot-less prefix matching, with ``X60-X69``
numeric ranges.

Pure: no I/O after import, no clock, no mutable module state other than
:func:`functools.lru_cache` memos of pure functions over immutable arguments (the same
diagnoses give the same result, so a hit is indistinguishable from a recomputation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "CATEGORIES",
    "CATEGORY_IDS",
    "HIERARCHIES",
    "CharlsonCategory",
    "CharlsonResult",
    "CodeSet",
    "CodeSpec",
    "charlson",
    "format_icd10",
    "icd10_codes",
    "is_icd10_system",
    "load_data",
    "looks_like_icd10",
    "normalize_icd10",
    "parse_code_set",
]

_DATA_PACKAGE = "streams.care"
CHARLSON_DATA = "charlson_quan2005.yaml"

# --- ICD-10 codes -------------------------------------------------------------------

# Characters a sender may put inside a code that are not part of it: the dot, spaces, and
# the WHO dagger/asterisk marks of the aetiology/manifestation convention ("E11.4†").
_NOT_CODE = re.compile(r"[\s.†*]")
# ICD-10(-CM) shape: letter, digit, then 1 to 5 letters/digits (3 to 7 characters).
# Anything else (free text, SNOMED ids, ICD-9 "250.00") is not an ICD-10 code; requiring
# the shape also keeps arbitrary text out of the factor details we publish.
_ICD10_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z]{1,5}$")


def normalize_icd10(code: str) -> str:
    """An ICD-10 code as matched here: upper case, without dots, spaces or dagger/asterisk.

    ``"e10.1 "`` -> ``"E101"``. No validation: see :func:`looks_like_icd10`.
    """
    return _NOT_CODE.sub("", code).upper()


def looks_like_icd10(normalized: str) -> bool:
    """Whether a normalized code has the ICD-10 shape (letter, digit, 1-5 more)."""
    return _ICD10_SHAPE.match(normalized) is not None


def format_icd10(normalized: str) -> str:
    """The dotted display form of a normalized code (``"I214"`` -> ``"I21.4"``)."""
    return normalized if len(normalized) <= 3 else f"{normalized[:3]}.{normalized[3:]}"


# Coding-system names that say "ICD-10" (diagnoses, not ICD-10-PCS procedures), compared
# after upper-casing and removing '-', '_', ' ' and '.':
# HL7 table 0396 (I10, I10C; ICD10 and ICD10CM as sent by many feeds), the names the
# FHIR mapper writes (ICD-10-CM, ICD-10), national modifications (CA, AM, GM).
_ICD10_NAMES = frozenset({
    "I10", "I10C", "ICD10", "ICD10CM", "ICD10CA", "ICD10AM", "ICD10GM", "ICD10WHO",
})
# FHIR canonical URIs and OIDs of ICD-10-CM (2.16.840.1.113883.6.90) and WHO ICD-10
# (2.16.840.1.113883.6.3).
_ICD10_URIS = frozenset({
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
    "urn:oid:2.16.840.1.113883.6.90",
    "urn:oid:2.16.840.1.113883.6.3",
})
_ICD10_OIDS = frozenset({"2.16.840.1.113883.6.90", "2.16.840.1.113883.6.3"})
# Names that are clearly some other system. ICD-9 (I9, I9C, I9CP, ICD9, ICD9CM...) must go:
# ICD-9 V and E codes look like ICD-10 codes (V45.81 is CABG status in ICD-9, a transport
# accident in ICD-10). ICD-10-PCS (I10P) is procedures.
_OTHER_NAME_PREFIXES = ("I9", "ICD9", "SNOMED", "SNM", "SCT", "ICD10PCS", "I10P", "LOINC",
                        "CPT", "HCPCS", "RXNORM", "NDC")
_OTHER_NAMES = frozenset({"LN", "C4", "C5", "HCPT", "ICD11"})
_NAME_NOISE = re.compile(r"[-_ .]")
_OID = re.compile(r"^[0-2](\.[0-9]+)+$")


def is_icd10_system(system: str | None) -> bool:
    """Whether a diagnosis with this coding system may be read as ICD-10.

    ``None`` or blank: yes (HL7 DG1-3 often leaves the coding system empty; the code must
    still have the ICD-10 shape and match a listed prefix). A URI or OID: only the ICD-10
    and ICD-10-CM ones. A name: no when it is clearly another system (ICD-9, SNOMED CT,
    ICD-10-PCS, LOINC, CPT...), yes otherwise, so local names such as ``ICD-10-CM`` or
    ``99DX`` keep working.
    """
    if system is None or not system.strip():
        return True
    raw = system.strip()
    if "://" in raw or raw.lower().startswith("urn:"):
        return raw.lower().rstrip("/") in _ICD10_URIS
    if _OID.match(raw):
        return raw in _ICD10_OIDS
    name = _NAME_NOISE.sub("", raw.upper())
    if name in _ICD10_NAMES:
        return True
    return not (name in _OTHER_NAMES or name.startswith(_OTHER_NAME_PREFIXES))


# --- code sets ----------------------------------------------------------------------

_PREFIX_SPEC = re.compile(r"^[A-Z][0-9][0-9A-Z]{0,5}$")
_RANGE_END = re.compile(r"^([A-Z])([0-9]{2,5})$")


@dataclass(frozen=True)
class CodeSpec:
    """One entry of a code set: a dot-less prefix, or a numeric range of prefixes.

    ``I252`` matches codes starting with ``I252``. ``I60-I69`` matches codes whose letter
    is ``I`` and whose next two characters are DIGITS between 60 and 69: a plain string
    comparison would put ICD-10-CM's ``C7A`` (neuroendocrine) inside ``C77-C80``.
    """

    text: str
    letter: str
    low: str
    high: str

    @property
    def length(self) -> int:
        """How many characters of a code this entry reads (its specificity)."""
        return 1 + len(self.low)

    def matches(self, code: str) -> bool:
        """Whether a normalized code falls under this entry."""
        n = len(self.low)
        if len(code) < 1 + n or code[0] != self.letter:
            return False
        part = code[1:1 + n]
        if self.low == self.high:
            return part == self.low
        return part.isdigit() and int(self.low) <= int(part) <= int(self.high)


def _parse_spec(text: object) -> CodeSpec:
    if not isinstance(text, str):
        raise ValueError(f"code spec must be a string, got {type(text).__name__}")
    if "-" in text:
        first, _, last = text.partition("-")
        a, b = _RANGE_END.match(first), _RANGE_END.match(last)
        if not (a and b) or a[1] != b[1] or len(a[2]) != len(b[2]) or int(a[2]) > int(b[2]):
            raise ValueError(f"bad code range {text!r}: same letter, same digit count, low-high")
        return CodeSpec(text=text, letter=a[1], low=a[2], high=b[2])
    # Upper case only: catches `E10l` (letter l for digit one), see the data file header.
    if not _PREFIX_SPEC.match(text):
        raise ValueError(f"bad code prefix {text!r}: upper-case, dot-less ICD-10 prefix")
    return CodeSpec(text=text, letter=text[0], low=text[1:], high=text[1:])


@dataclass(frozen=True)
class CodeSet:
    """An ordered, immutable set of :class:`CodeSpec` entries."""

    specs: tuple[CodeSpec, ...]

    def match(self, code: str) -> CodeSpec | None:
        """The most specific entry matching a normalized code, or None."""
        best: CodeSpec | None = None
        for spec in self.specs:
            if spec.matches(code) and (best is None or spec.length > best.length):
                best = spec
        return best

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and self.match(normalize_icd10(code)) is not None


def parse_code_set(specs: object) -> CodeSet:
    """A :class:`CodeSet` from a YAML list of specs (``ValueError`` when malformed)."""
    if not isinstance(specs, list) or not specs:
        raise ValueError("codes must be a non-empty list")
    return CodeSet(tuple(_parse_spec(s) for s in specs))


def load_data(name: str) -> Mapping[str, Any]:
    """Read one YAML file of ``streams/care/data`` (package data, read-only)."""
    text = files(_DATA_PACKAGE).joinpath("data", name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a mapping")
    return data


# --- Charlson categories ------------------------------------------------------------


@dataclass(frozen=True)
class CharlsonCategory:
    """One Charlson category as read from the data file."""

    id: str
    name: str
    weight: int
    """Standard Charlson weight."""
    lace_weight: int
    """The LACE tool's weight for this category."""
    codes: CodeSet
    lace_severe_weight: int | None = None
    lace_severe: CodeSet | None = None
    """Codes of this category that the LACE tool weighs as moderate/severe disease."""

    def lace_points(self, codes: Iterable[str]) -> int:
        """LACE weight given the (normalized) codes that matched this category."""
        if self.lace_severe is not None and self.lace_severe_weight is not None and any(
            self.lace_severe.match(c) for c in codes
        ):
            return self.lace_severe_weight
        return self.lace_weight


def _int(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: {key} must be a non-negative integer")
    return value


def _load_categories(
    data: Mapping[str, Any],
) -> tuple[tuple[CharlsonCategory, ...], tuple[tuple[str, str], ...]]:
    cats: list[CharlsonCategory] = []
    for entry in data["categories"]:
        where = f"category {entry.get('id')!r}"
        severe = entry.get("lace_severe")
        cats.append(CharlsonCategory(
            id=str(entry["id"]),
            name=str(entry["name"]),
            weight=_int(entry, "weight", where),
            lace_weight=_int(entry, "lace_weight", where),
            codes=parse_code_set(entry["codes"]),
            lace_severe_weight=_int(severe, "lace_weight", where) if severe else None,
            lace_severe=parse_code_set(severe["codes"]) if severe else None,
        ))
    by_id = {c.id: c for c in cats}
    if len(by_id) != len(cats):
        raise ValueError("duplicate Charlson category id")
    pairs: list[tuple[str, str]] = []
    for pair in data["hierarchies"]:
        milder, severer = (str(p) for p in pair)
        lo, hi = by_id[milder], by_id[severer]
        # "Replace the milder by the severer" is max() only if the severer weighs more in
        # both weightings; refuse a data file where it would not.
        if hi.weight < lo.weight or hi.lace_weight < (lo.lace_severe_weight or lo.lace_weight):
            raise ValueError(f"hierarchy {milder}->{severer}: severer must weigh more")
        pairs.append((milder, severer))
    return tuple(cats), tuple(pairs)


CATEGORIES: tuple[CharlsonCategory, ...]
"""The Charlson categories, in data-file order."""
HIERARCHIES: tuple[tuple[str, str], ...]
"""(milder, severer) pairs: the severer replaces the milder when both are present."""
CATEGORIES, HIERARCHIES = _load_categories(load_data(CHARLSON_DATA))
CATEGORY_IDS: tuple[str, ...] = tuple(c.id for c in CATEGORIES)
_BY_ID: Mapping[str, CharlsonCategory] = MappingProxyType({c.id: c for c in CATEGORIES})


@dataclass(frozen=True)
class CharlsonResult:
    """Charlson comorbidity of one encounter's diagnoses.

    ``score`` uses the standard Charlson weights; ``lace_points`` the LACE tool's weights
    (the input of LACE's C component before its 0-3/5 banding). Both after hierarchies.
    ``categories`` are the category ids after hierarchies, sorted. ``matched`` maps every
    category that matched (also one a hierarchy then dropped, so the explanation is whole)
    to the sorted normalized codes that matched it. ``lace_by_category`` is each kept
    category's LACE weight.
    """

    score: int
    lace_points: int
    categories: tuple[str, ...]
    matched: Mapping[str, tuple[str, ...]]
    lace_by_category: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}))


Diagnoses = tuple[tuple[str, str | None], ...]
"""(code, system) pairs as a hashable key of the memoized rules."""


def diagnoses_key(diagnoses: Iterable[tuple[str, str | None]]) -> Diagnoses:
    """``diagnoses`` as a tuple of (code, system) tuples (whatever pair type came in)."""
    if isinstance(diagnoses, tuple) and all(type(d) is tuple for d in diagnoses):
        return diagnoses
    return tuple((code, system) for code, system in diagnoses)


def icd10_codes(diagnoses: Iterable[tuple[str, str | None]]) -> tuple[str, ...]:
    """The normalized, ICD-10-shaped codes of (code, system) pairs in an ICD-10 system,
    deduplicated, in input order (see :func:`is_icd10_system`)."""
    return _icd10_codes(diagnoses_key(diagnoses))


@lru_cache(maxsize=4096)
def _icd10_codes(diagnoses: Diagnoses) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for code, system in diagnoses:
        if not code or not _is_icd10_system(system):
            continue
        norm = normalize_icd10(code)
        if looks_like_icd10(norm):
            seen.setdefault(norm, None)
    return tuple(seen)


@lru_cache(maxsize=1024)
def _is_icd10_system(system: str | None) -> bool:
    return is_icd10_system(system)


@lru_cache(maxsize=8192)
def _categories_of(code: str) -> frozenset[str]:
    """Ids of the Charlson categories a normalized code falls under (before hierarchies)."""
    return frozenset(cat.id for cat in CATEGORIES if cat.codes.match(code) is not None)


def charlson(diagnoses: Iterable[tuple[str, str | None]]) -> CharlsonResult:
    """Charlson categories, standard score and LACE comorbidity points of diagnoses.

    Reads (code, system) pairs; codes in a system that is clearly not ICD-10 (ICD-9,
    SNOMED CT, ...) are ignored, as are codes without the ICD-10 shape. Categories and
    weights: Quan et al., Med Care 2005 (ICD-10 coding), standard Charlson weights, LACE
    weights (van Walraven et al., CMAJ 2010); hierarchies max(mild, severe liver),
    max(diabetes, with complications), max(malignancy, metastatic). No age points.
    """
    # Not memoized here: its one caller in the rules (risk._diagnosis_facts) is, on the
    # same diagnoses.
    codes = icd10_codes(diagnoses)
    by_code = {c: _categories_of(c) for c in codes}
    matched: dict[str, tuple[str, ...]] = {}
    for cat in CATEGORIES:
        hits = tuple(sorted(c for c in codes if cat.id in by_code[c]))
        if hits:
            matched[cat.id] = hits
    kept = set(matched)
    for milder, severer in HIERARCHIES:
        if severer in kept:
            kept.discard(milder)
    by_id = _BY_ID
    lace_by = {cid: by_id[cid].lace_points(matched[cid]) for cid in CATEGORY_IDS if cid in kept}
    return CharlsonResult(
        score=sum(by_id[cid].weight for cid in kept),
        lace_points=sum(lace_by.values()),
        categories=tuple(sorted(kept)),
        matched=MappingProxyType(matched),
        lace_by_category=MappingProxyType(lace_by),
    )
