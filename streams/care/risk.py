"""Readmission risk: the LACE index and the readmission-risk flags, as pure functions.

Reads what the caller passes in (:class:`RiskInput`: times, diagnoses, prior ED visits and
discharges from the hub's own history) and the diagnosis code sets of
``streams/care/data/risk_conditions.yaml`` and ``charlson_quan2005.yaml`` (package data,
read once at import). No clock, no environment, no Kafka: time comes in as arguments.

Sources:
- LACE index: van Walraven C, Dhalla IA, Bell C, et al. CMAJ 2010;182(6):551-557; points
  table and bands (0-4 low, 5-9 moderate, >=10 high) as in BMC Cardiovasc Disord 14:97,
  table 1 (see /work/shared/REFERENCE.md section 1).
- Comorbidity: Charlson, ICD-10 coding of Quan et al., Med Care 2005 (:mod:`.charlson`).
- CMS Hospital Readmissions Reduction Program conditions (AMI, heart failure, pneumonia,
  COPD, CABG, hip/knee replacement) and the 30-day readmission window.
- Frequent ED use: >= 3 ED visits in 60 days (a notification network's definition,
  REFERENCE.md "Caseloads and utilization flags").
- Social needs: ICD-10-CM Z55-Z65 (Gravity SDOH Clinical Care IG).

Every factor detail is PHI-free by construction: category ids, ICD-10 codes (only codes
that matched a listed prefix are echoed), configured code values, counts and day numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.care.charlson import (
    CharlsonResult,
    CodeSet,
    Diagnoses,
    charlson,
    diagnoses_key,
    format_icd10,
    icd10_codes,
    load_data,
    parse_code_set,
)
from streams.care.trusted import frozen_instance

__all__ = [
    "ALL_FLAGS",
    "HRRP_CONDITIONS",
    "RISK_CONDITIONS_DATA",
    "SOCIAL_NEEDS",
    "AssessmentParts",
    "ConditionMatch",
    "DiagnosisBlock",
    "Factor",
    "FlagCode",
    "LaceBlock",
    "LaceResult",
    "RiskConfig",
    "RiskFacts",
    "RiskFlag",
    "RiskInput",
    "RiskLevel",
    "RiskResult",
    "RuleCondition",
    "assess",
    "assess_facts",
    "assessment_parts",
    "cms_conditions",
    "emergent_reason",
    "lace",
    "length_of_stay_days",
    "risk_facts",
    "risk_facts_of",
    "risk_level",
    "social_needs",
]

RiskLevel = Literal["low", "moderate", "high"]
FlagCode = Literal[
    "high_lace", "readmission_30d", "against_medical_advice", "cms_condition",
    "frequent_ed", "social_needs",
]
ALL_FLAGS: tuple[FlagCode, ...] = (
    "high_lace", "readmission_30d", "against_medical_advice", "cms_condition",
    "frequent_ed", "social_needs",
)
_FLAG_DISPLAY: Mapping[FlagCode, str] = {
    "high_lace": "High readmission risk (LACE index)",
    "readmission_30d": "Readmission within {days} days of a discharge",
    "against_medical_advice": "Discharged against medical advice",
    "cms_condition": "CMS readmission-program (HRRP) condition",
    "frequent_ed": "Frequent emergency department use",
    "social_needs": "Social needs (ICD-10 Z55-Z65)",
}

LACE_MAX = 19
"""7 (L) + 3 (A) + 5 (C) + 4 (E)."""
_ED_CAP = 4
_ACUITY_POINTS = 3


# --- configuration ------------------------------------------------------------------


class RiskConfig(BaseModel):
    """Thresholds of the risk rules (the ``risk`` section of the rules file).

    Code lists are compared case-insensitively after trimming, and all-digit codes by
    value, so ``"7"`` and ``"07"`` are the same code (senders drop the leading zero of
    HL7 table 0112/0023 codes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lace_moderate_at: int = Field(
        default=5, ge=0, le=LACE_MAX,
        description="LACE score from which the level is moderate (bands 0-4 low, 5-9 "
                    "moderate, >=10 high; BMC Cardiovasc Disord 14:97 table 1).")
    lace_high_at: int = Field(
        default=10, ge=0, le=LACE_MAX,
        description="LACE score from which the level is high.")
    flag_lace_at: int = Field(
        default=10, ge=0, le=LACE_MAX + 1,
        description="LACE score from which the high_lace flag fires (20 never fires).")
    readmission_days: int = Field(
        default=30, ge=0,
        description="readmission_30d fires when this admission's date is at most this "
                    "many days after a prior inpatient discharge date (CMS HRRP: 30; a "
                    "readmission on day 30 counts, day 31 does not).")
    frequent_ed_visits: int = Field(
        default=3, ge=1,
        description="frequent_ed fires with at least this many prior ED visits ...")
    frequent_ed_days: int = Field(
        default=60, ge=0,
        description="... within this many days before the admission (>=3 in 60 days). "
                    "The ED visit that led to this admission is not counted.")
    ed_lookback_days: int = Field(
        default=183, ge=0,
        description="LACE E: ED visits within this many days before admission (6 months "
                    "as 183 days), the visit that led to the admission excluded.")
    ama_dispositions: tuple[str, ...] = Field(
        default=("07", "aadvice", "AMA"),
        description="Discharge dispositions meaning 'left against medical advice': HL7 "
                    "table 0112 / UB-04 07, FHIR discharge-disposition 'aadvice', local AMA.")
    emergent_admission_types: tuple[str, ...] = Field(
        default=("E", "EM", "EMER", "EMERGENCY"),
        description="Admission types (PV1-4, HL7 table 0007; FHIR priority mapped to 0007) "
                    "that make an admission emergent for LACE A. Urgent ('U') is NOT "
                    "included: LACE A means admitted via the emergency department, and an "
                    "urgent admission is often a direct admit; add 'U' (or 'A' accident, "
                    "UB-04 '1'/'5') here if a site's feed uses them for ED admissions.")
    emergent_admit_sources: tuple[str, ...] = Field(
        default=("7", "emd", "ER"),
        description="Admit sources meaning 'via the ED': HL7 table 0023 '7' emergency "
                    "room, FHIR admit-source 'emd', local 'ER'.")
    enabled_flags: tuple[FlagCode, ...] = Field(
        default=ALL_FLAGS,
        description="Flags that may fire; the LACE score and level are always computed.")

    @model_validator(mode="after")
    def _bands_ordered(self) -> Self:
        if self.lace_moderate_at > self.lace_high_at:
            raise ValueError("lace_moderate_at must not exceed lace_high_at")
        return self


def _code_key(value: str) -> str:
    text = value.strip().casefold()
    return str(int(text)) if text.isdigit() else text


def _find_code(value: str | None, options: Iterable[str]) -> str | None:
    """The configured option equal to ``value`` (see :class:`RiskConfig`), or None."""
    if value is None or not value.strip():
        return None
    return _find_code_in(value, options if isinstance(options, tuple) else tuple(options))


@lru_cache(maxsize=1024)
def _find_code_in(value: str, options: tuple[str, ...]) -> str | None:
    key = _code_key(value)
    return next((opt for opt in options if _code_key(opt) == key), None)


def emergent_reason(
    admission_type: str | None, admit_source: str | None, cfg: RiskConfig
) -> str | None:
    """Why an admission is emergent (LACE A), or None when it is not.

    Reads the canonical encounter's ``admission_type`` (PV1-4, HL7 table 0007) and
    ``admit_source`` (PV1-14, HL7 table 0023; FHIR admitSource) against
    ``cfg.emergent_admission_types`` / ``cfg.emergent_admit_sources``. The reason names
    the configured code that matched (never the raw value), e.g. ``"admission type E"``.
    """
    if (hit := _find_code(admission_type, cfg.emergent_admission_types)) is not None:
        return f"admission type {hit}"
    if (hit := _find_code(admit_source, cfg.emergent_admit_sources)) is not None:
        return f"admit source {hit}"
    return None


# --- LACE ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LaceResult:
    """LACE index (0-19) and its components."""

    score: int
    l: int  # noqa: E741 - the LACE component names are the contract (schemas.care.Lace)
    a: int
    c: int
    e: int


def _los_points(days: int) -> int:
    # van Walraven 2010: <1 day 0, 1 1, 2 2, 3 3, 4-6 4, 7-13 5, >=14 7.
    if days <= 3:
        return days
    if days <= 6:
        return 4
    if days <= 13:
        return 5
    return 7


def lace(
    length_of_stay_days: int, emergent: bool, lace_comorbidity_points: int, ed_visits_6m: int
) -> LaceResult:
    """LACE index (van Walraven et al., CMAJ 2010) from its four inputs.

    L: length of stay in days (<1: 0, 1: 1, 2: 2, 3: 3, 4-6: 4, 7-13: 5, >=14: 7);
    A: 3 when emergent; C: Charlson points with the LACE tool's weights (0-3 as is, >=4:
    5); E: ED visits in the 6 months before admission, capped at 4. ``ValueError`` for a
    negative input.
    """
    if min(length_of_stay_days, lace_comorbidity_points, ed_visits_6m) < 0:
        raise ValueError("LACE inputs must not be negative")
    l_pts = _los_points(length_of_stay_days)
    a_pts = _ACUITY_POINTS if emergent else 0
    c_pts = lace_comorbidity_points if lace_comorbidity_points <= 3 else 5
    e_pts = min(ed_visits_6m, _ED_CAP)
    return LaceResult(score=l_pts + a_pts + c_pts + e_pts, l=l_pts, a=a_pts, c=c_pts, e=e_pts)


def _local_date(when: datetime, zone: ZoneInfo) -> date:
    if when.tzinfo is None or when.utcoffset() is None:
        # A naive time has no defined facility date; refuse rather than guess.
        raise ValueError("datetimes must be timezone-aware")
    return when.astimezone(zone).date()


def length_of_stay_days(admit_at: datetime, as_of: datetime, tz: str) -> int:
    """Length of stay for LACE L: calendar days from the admission date to ``as_of``'s.

    Both times are converted to the facility zone ``tz`` (IANA name) and only their
    dates are compared: the midnight count of inpatient-day census, so admitted and
    discharged the same day is 0 ("<1 day", 0 points) and one overnight is 1, however
    many hours passed (a stay over a DST change is not a fraction of a day short or
    long). This is how we read the LACE table's "admission and discharge days counted":
    both dates are read, their difference is the stay. ``as_of`` before ``admit_at``
    (clock skew between systems) gives 0. Raises ``ValueError`` for naive datetimes and
    ``zoneinfo.ZoneInfoNotFoundError`` for an unknown zone.
    """
    zone = ZoneInfo(tz)
    return max(0, (_local_date(as_of, zone) - _local_date(admit_at, zone)).days)


def risk_level(score: int, cfg: RiskConfig) -> RiskLevel:
    """LACE band: ``high`` from ``cfg.lace_high_at``, ``moderate`` from
    ``cfg.lace_moderate_at``, else ``low`` (defaults 0-4 / 5-9 / >=10, BMC Cardiovasc
    Disord 14:97)."""
    return _band(score, cfg.lace_moderate_at, cfg.lace_high_at)


def _band(score: int, moderate_at: int, high_at: int) -> RiskLevel:
    if score >= high_at:
        return "high"
    if score >= moderate_at:
        return "moderate"
    return "low"


# --- condition code sets (HRRP, social needs) ----------------------------------------

RISK_CONDITIONS_DATA = "risk_conditions.yaml"


@dataclass(frozen=True)
class RuleCondition:
    """A named diagnosis code set of ``risk_conditions.yaml``."""

    id: str
    name: str
    codes: CodeSet


@dataclass(frozen=True)
class ConditionMatch:
    """A diagnosis code (normalized, dot-less) that matched a condition."""

    condition: str
    name: str
    code: str


def _load_conditions(data: Mapping[str, Any], key: str) -> tuple[RuleCondition, ...]:
    out = tuple(
        RuleCondition(id=str(e["id"]), name=str(e["name"]), codes=parse_code_set(e["codes"]))
        for e in data[key]
    )
    if len({c.id for c in out}) != len(out):
        raise ValueError(f"{key}: duplicate id")
    return out


_RISK_DATA = load_data(RISK_CONDITIONS_DATA)
HRRP_CONDITIONS: tuple[RuleCondition, ...] = _load_conditions(_RISK_DATA, "hrrp_conditions")
"""CMS HRRP conditions (AMI, heart failure, pneumonia, COPD, CABG, hip/knee)."""
SOCIAL_NEEDS: tuple[RuleCondition, ...] = _load_conditions(_RISK_DATA, "social_needs")
"""Social-needs categories over ICD-10 Z55-Z65."""
del _RISK_DATA


def cms_conditions(diagnoses: Iterable[tuple[str, str | None]]) -> tuple[ConditionMatch, ...]:
    """Diagnoses in a CMS HRRP condition code set (``risk_conditions.yaml``).

    Reads (code, system) pairs; non-ICD-10 systems are ignored (see
    :func:`streams.care.charlson.is_icd10_system`). Ordered by condition (data-file
    order), then code; a code in two conditions appears under both.
    """
    codes = sorted(icd10_codes(diagnoses))
    return tuple(
        ConditionMatch(cond.id, cond.name, code)
        for cond in HRRP_CONDITIONS
        for code in codes
        if cond.codes.match(code) is not None
    )


def social_needs(diagnoses: Iterable[tuple[str, str | None]]) -> tuple[ConditionMatch, ...]:
    """Social-needs diagnoses (ICD-10 Z55-Z65), each under its most specific category.

    Reads (code, system) pairs (ICD-10 systems only). Z59 splits into housing (Z59.0,
    Z59.1, Z59.81), food (Z59.4), transportation (Z59.82) and economic (the rest).
    Ordered by category (data-file order), then code.
    """
    return _social_needs(diagnoses_key(diagnoses))


@lru_cache(maxsize=4096)
def _social_needs(diagnoses: Diagnoses) -> tuple[ConditionMatch, ...]:
    best: dict[str, tuple[int, RuleCondition]] = {}
    for code in icd10_codes(diagnoses):
        for cond in SOCIAL_NEEDS:
            spec = cond.codes.match(code)
            if spec is not None and (code not in best or spec.length > best[code][0]):
                best[code] = (spec.length, cond)
    order = {c.id: i for i, c in enumerate(SOCIAL_NEEDS)}
    return tuple(
        ConditionMatch(cond.id, cond.name, code)
        for code, (_, cond) in sorted(best.items(), key=lambda kv: (order[kv[1][1].id], kv[0]))
    )


# --- assessment ---------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """One contributor to the score or a flag: a code, its points if scored, a PHI-free
    detail (codes, counts and day numbers only). Mirrors :class:`schemas.care.Factor`."""

    code: str
    points: int | None
    detail: str


@dataclass(frozen=True)
class RiskFlag:
    """A flag that fired and the factors that made it fire."""

    code: FlagCode
    display: str
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class RiskInput:
    """What the risk rules read about one encounter (built by the caller from episode
    state and the canonical event).

    All datetimes must be timezone-aware. ``as_of`` is the discharge time, or the
    decision time for an admission-time estimate (``final`` False). ``tz`` is the
    facility's IANA zone: lengths of stay and day counts are in its calendar days.
    ``prior_ed_visits`` are arrival times of ED visits BEFORE this admission (not the visit
    that led to it); ``prior_discharges`` inpatient discharges before this admission.
    ``emergent_reason`` must be PHI-free (build it with :func:`emergent_reason`).
    """

    admit_at: datetime | None
    as_of: datetime
    tz: str
    emergent: bool
    emergent_reason: str | None
    diagnoses: tuple[tuple[str, str | None], ...]
    prior_ed_visits: tuple[datetime, ...]
    prior_discharges: tuple[datetime, ...]
    discharge_disposition: str | None
    final: bool


@dataclass(frozen=True)
class RiskResult:
    """The outcome of :func:`assess`.

    ``lace.c`` holds the LACE comorbidity points (LACE weights, banded); the standard
    Charlson score is ``charlson.score`` (also :attr:`charlson_score`): the two
    weightings are never mixed.
    """

    level: RiskLevel
    lace: LaceResult
    charlson: CharlsonResult
    factors: tuple[Factor, ...]
    flags: tuple[RiskFlag, ...]
    final: bool

    @property
    def score(self) -> int:
        """The LACE score."""
        return self.lace.score

    @property
    def charlson_score(self) -> int:
        """The standard Charlson score (Quan 2005 coding, original weights)."""
        return self.charlson.score


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


@lru_cache(maxsize=1024)
def _l_factor(los: int | None, final: bool, points: int) -> Factor:
    if los is None:
        return Factor("lace.l", points, "admission time unknown, length of stay not counted")
    return Factor("lace.l", points, f"length of stay {'' if final else 'so far '}{_days(los)}")


@lru_cache(maxsize=1024)
def _a_factor(emergent: bool, reason: str | None, points: int) -> Factor:
    if emergent:
        return Factor("lace.a", points, "emergent admission" + (f" ({reason})" if reason else ""))
    return Factor("lace.a", points, "not an emergent admission")


@lru_cache(maxsize=1024)
def _c_factor(points: int, detail: str) -> Factor:
    return Factor("lace.c", points, detail)


@lru_cache(maxsize=1024)
def _e_factor(ed_6m: int, lookback_days: int, points: int) -> Factor:
    detail = f"{ed_6m} ED visits in the {lookback_days} days before admission"
    if ed_6m > _ED_CAP:
        detail += f", capped at {_ED_CAP}"
    return Factor("lace.e", points, detail)


@lru_cache(maxsize=1024)
def _lace_of(los: int, emergent: bool, comorbidity_points: int, ed_6m: int) -> LaceResult:
    return lace(los, emergent, comorbidity_points, ed_6m)


@lru_cache(maxsize=1024)
def _one_factor_flag(code: FlagCode, display: str, factor_code: str, detail: str) -> RiskFlag:
    return RiskFlag(code, display, (Factor(factor_code, None, detail),))


@lru_cache(maxsize=1024)
def _risk_flag(code: FlagCode, display: str, factors: tuple[Factor, ...]) -> RiskFlag:
    return RiskFlag(code, display, factors)


@lru_cache(maxsize=64)
def _flag_displays(days: int) -> Mapping[FlagCode, str]:
    return {code: text.format(days=days) for code, text in _FLAG_DISPLAY.items()}


def _charlson_detail(ch: CharlsonResult) -> str:
    if not ch.lace_by_category:
        return "no Charlson comorbidity coded"
    parts = ", ".join(f"{cid} {pts}" for cid, pts in ch.lace_by_category.items())
    detail = f"comorbidity points {ch.lace_points} with LACE weights ({parts})"
    if ch.lace_points > 3:
        detail += ", 4 or more score 5"
    return detail


@dataclass(frozen=True)
class _DiagnosisFacts:
    """What the rules derive from the diagnoses alone (memoized per diagnosis set)."""

    charlson: CharlsonResult
    c_detail: str
    cms: tuple[Factor, ...]
    social: tuple[Factor, ...]


@lru_cache(maxsize=4096)
def _diagnosis_facts(diagnoses: Diagnoses) -> _DiagnosisFacts:
    ch = charlson(diagnoses)
    return _DiagnosisFacts(
        charlson=ch, c_detail=_charlson_detail(ch),
        cms=tuple(Factor(f"cms.{m.condition}", None, f"{m.name}: {format_icd10(m.code)}")
                  for m in cms_conditions(diagnoses)),
        social=tuple(Factor(f"sdoh.{m.condition}", None, f"{m.name}: {format_icd10(m.code)}")
                     for m in social_needs(diagnoses)))


class RiskFacts(NamedTuple):
    """What :func:`assess` reads of an encounter once its times are counted in the
    facility's calendar days (:func:`risk_facts`). Equal facts give equal results,
    whatever times they came from: an assessment can be memoized on them."""

    los: int | None
    """Length of stay in days (:func:`length_of_stay_days`); None: admission time unknown."""
    emergent: bool
    emergent_reason: str | None
    diagnoses: Diagnoses
    ed_6m: int
    """Prior ED visits within ``ed_lookback_days`` of the admission date (LACE E)."""
    recent_ed: int
    """Prior ED visits within ``frequent_ed_days`` (frequent_ed)."""
    readmission_days: int | None
    """Days from the latest prior discharge date to the admission date, when within
    ``readmission_days`` (readmission_30d); None otherwise."""
    discharge_disposition: str | None
    final: bool


def risk_facts(inp: RiskInput, cfg: RiskConfig) -> RiskFacts:
    """The facts :func:`assess` reads of ``inp`` (see :class:`RiskInput` for the time
    conventions): each time converted to a facility date once, then counted in days.
    Raises ValueError for a naive time and ``zoneinfo.ZoneInfoNotFoundError`` for an
    unknown zone, as :func:`assess` does."""
    return risk_facts_of(inp.admit_at, inp.as_of, inp.tz, inp.emergent, inp.emergent_reason,
                         inp.diagnoses, inp.prior_ed_visits, inp.prior_discharges,
                         inp.discharge_disposition, inp.final, cfg)


_new_facts = tuple.__new__


def risk_facts_of(admit_at: datetime | None, as_of: datetime, tz: str, emergent: bool,
                  emergent_reason: str | None, diagnoses: tuple[tuple[str, str | None], ...],
                  prior_ed_visits: tuple[datetime, ...],
                  prior_discharges: tuple[datetime, ...], discharge_disposition: str | None,
                  final: bool, cfg: RiskConfig) -> RiskFacts:
    """:func:`risk_facts` of a :class:`RiskInput` given as its fields, in field order.

    The engine asks for facts at every admission and discharge it has not seen the like
    of: building the frozen RiskInput first (an ``object.__setattr__`` per field) was a
    fifth of the cost."""
    zone = ZoneInfo(tz)
    as_of_date = _local_date(as_of, zone)  # also refuses a naive as_of
    if admit_at is None:
        ref, ref_date, los = as_of, as_of_date, None
    else:
        ref, ref_date = admit_at, _local_date(admit_at, zone)
        los = max(0, (as_of_date - ref_date).days)  # length_of_stay_days
    ed_6m = recent_ed = 0
    if prior_ed_visits:
        # Days before the reference date of each prior ED visit strictly before it (a
        # visit "61 days before" is outside a 60-day window).
        ed_days = [(ref_date - _local_date(v, zone)).days for v in prior_ed_visits]
        ed_days = [d for d, v in zip(ed_days, prior_ed_visits, strict=True) if v < ref]
        ed_6m = sum(1 for d in ed_days if d <= cfg.ed_lookback_days)
        recent_ed = sum(1 for d in ed_days if d <= cfg.frequent_ed_days)
    readmission = None
    if prior_discharges:
        # A discharge at the very moment of admission is a prior one (same-minute
        # readmit); one after it belongs to this stay and is not a readmission trigger.
        # (The date test first: it refuses a naive time before the comparison could
        # raise TypeError.)
        before = [d for d in prior_discharges if _local_date(d, zone) <= ref_date and d <= ref]
        if before:
            days = (ref_date - _local_date(max(before), zone)).days
            if days <= cfg.readmission_days:
                readmission = days
    # RiskFacts(...) without its generated __new__'s call (same tuple, same class).
    return _new_facts(RiskFacts, (  # type: ignore[no-any-return]
        los, emergent, emergent_reason, diagnoses_key(diagnoses), ed_6m, recent_ed,
        readmission, discharge_disposition, final))


def assess(inp: RiskInput, cfg: RiskConfig) -> RiskResult:
    """LACE score, level, Charlson and the readmission-risk flags of one encounter.

    Reads only ``inp`` and ``cfg`` (see :class:`RiskInput` for the time conventions). The
    reference time for "before admission" is ``admit_at``, or ``as_of`` when the admission
    time is unknown (length of stay then counts 0). Flags (each listed only when enabled
    in ``cfg.enabled_flags``, in this order): ``high_lace`` (LACE >= flag_lace_at),
    ``readmission_30d`` (admission date within readmission_days of the latest prior
    discharge date), ``against_medical_advice`` (disposition in ama_dispositions),
    ``cms_condition`` (HRRP code sets), ``frequent_ed`` (>= frequent_ed_visits prior ED
    visits within frequent_ed_days), ``social_needs`` (Z55-Z65). Sources: module
    docstring. Same as ``assess_facts(risk_facts(inp, cfg), cfg)``.
    """
    return assess_facts(risk_facts(inp, cfg), cfg)


class LaceBlock(NamedTuple):
    """The LACE part of an assessment (:func:`assessment_parts`)."""

    result: LaceResult
    level: RiskLevel
    factors: tuple[Factor, ...]
    high_lace: RiskFlag | None
    """The high_lace flag when it fires (and is enabled)."""


class DiagnosisBlock(NamedTuple):
    """What an assessment takes from the diagnoses alone (:func:`assessment_parts`)."""

    charlson: CharlsonResult
    c_detail: str
    cms: RiskFlag | None
    """The cms_condition flag when it fires (and is enabled); ``social`` likewise."""
    social: RiskFlag | None


class AssessmentParts(NamedTuple):
    """:func:`assess_facts`' result in cached pieces: equal inputs give the very same
    blocks and flags, so a caller can memoize what it derives from each by the object
    (the care engine does; most assessments are new combinations of known blocks)."""

    lace: LaceBlock
    diagnosis: DiagnosisBlock
    readmission: RiskFlag | None
    ama: RiskFlag | None
    frequent_ed: RiskFlag | None
    final: bool

    def flags(self) -> tuple[RiskFlag, ...]:
        """The flags that fire, in :data:`ALL_FLAGS` order (each only when enabled)."""
        return tuple([f for f in (self.lace.high_lace, self.readmission, self.ama,
                                  self.diagnosis.cms, self.frequent_ed,
                                  self.diagnosis.social) if f is not None])


def assessment_parts(facts: RiskFacts, cfg: RiskConfig) -> AssessmentParts:
    """The pieces :func:`assess_facts` assembles (see it for the rules)."""
    enabled = cfg.enabled_flags
    display = _flag_displays(cfg.readmission_days)
    diagnosis = _diagnosis_block(
        facts.diagnoses, display["cms_condition"] if "cms_condition" in enabled else None,
        display["social_needs"] if "social_needs" in enabled else None)
    lace_block = _lace_block(
        facts.los, facts.final, facts.emergent, facts.emergent_reason,
        diagnosis.charlson.lace_points, diagnosis.c_detail, facts.ed_6m, cfg.ed_lookback_days,
        cfg.lace_moderate_at, cfg.lace_high_at,
        cfg.flag_lace_at if "high_lace" in enabled else None, display["high_lace"])
    readmission = ama_flag = frequent = None
    if (days := facts.readmission_days) is not None and "readmission_30d" in enabled:
        readmission = _one_factor_flag(
            "readmission_30d", display["readmission_30d"], "readmission.days_since_discharge",
            f"admitted {_days(days)} after a prior inpatient discharge "
            f"(window {cfg.readmission_days} days)")
    if "against_medical_advice" in enabled and (
            ama := _find_code(facts.discharge_disposition, cfg.ama_dispositions)) is not None:
        ama_flag = _one_factor_flag(
            "against_medical_advice", display["against_medical_advice"],
            "discharge.disposition", f"discharge disposition {ama}")
    recent_ed = facts.recent_ed
    if recent_ed >= cfg.frequent_ed_visits and "frequent_ed" in enabled:
        frequent = _one_factor_flag(
            "frequent_ed", display["frequent_ed"], "ed.visits",
            f"{recent_ed} ED visits in the {cfg.frequent_ed_days} days before admission "
            f"(threshold {cfg.frequent_ed_visits})")
    # AssessmentParts(...) without its generated __new__'s call (same tuple, same class).
    return _new_facts(AssessmentParts, (  # type: ignore[no-any-return]
        lace_block, diagnosis, readmission, ama_flag, frequent, facts.final))


@lru_cache(maxsize=4096)
def _lace_block(los: int | None, final: bool, emergent: bool, reason: str | None,
                lace_points: int, c_detail: str, ed_6m: int, lookback_days: int,
                moderate_at: int, high_at: int, flag_at: int | None, high_display: str
                ) -> LaceBlock:
    # Cached by plain values: equal inputs give the very same block, so the engine's
    # per-object memo of published parts finds it again. Each factor depends on a few
    # small values only and is built once per value (cached): no detail string is built
    # twice.
    result = _lace_of(los or 0, emergent, lace_points, ed_6m)
    factors = (
        _l_factor(los, final, result.l),
        _a_factor(emergent, reason, result.a),
        _c_factor(result.c, c_detail),
        _e_factor(ed_6m, lookback_days, result.e),
    )
    high_lace = None
    if flag_at is not None and result.score >= flag_at:
        high_lace = _risk_flag("high_lace", high_display,
                               tuple([f for f in factors if f.points]))
    return LaceBlock(result, _band(result.score, moderate_at, high_at), factors, high_lace)


@lru_cache(maxsize=4096)
def _diagnosis_block(diagnoses: Diagnoses, cms_display: str | None,
                     social_display: str | None) -> DiagnosisBlock:
    # A display of None: that flag is not enabled.
    facts = _diagnosis_facts(diagnoses)
    return DiagnosisBlock(
        facts.charlson, facts.c_detail,
        _risk_flag("cms_condition", cms_display, facts.cms)
        if facts.cms and cms_display is not None else None,
        _risk_flag("social_needs", social_display, facts.social)
        if facts.social and social_display is not None else None)


def assess_facts(facts: RiskFacts, cfg: RiskConfig) -> RiskResult:
    """:func:`assess` from the facts it reads (:func:`risk_facts`)."""
    parts = assessment_parts(facts, cfg)
    lace_block, diagnosis = parts.lace, parts.diagnosis
    # RiskResult(...) as one dict update (trusted.frozen_instance): its frozen __init__
    # sets each field through object.__setattr__, and every cold assessment builds one.
    return frozen_instance(
        RiskResult,
        level=lace_block.level,
        lace=lace_block.result,
        charlson=diagnosis.charlson,
        factors=lace_block.factors,
        flags=parts.flags(),
        final=facts.final,
    )
