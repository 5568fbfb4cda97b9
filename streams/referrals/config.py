"""The ``referrals:`` section of the rules file: which needs go to community agencies.

The shipped defaults are documented in ``hub/samples/rules.yaml`` (a test checks that
file equals these defaults). Pure: no I/O.

Social-needs diagnoses are read through the risk stage's own categories
(``streams/care/data/risk_conditions.yaml``, ICD-10-CM chapter 21 categories Z55-Z65,
CDC/NCHS tabular list), so the flag and the referral never disagree on what a code
means; this section maps each category to the service code agencies list in the
directory. Default table (category: ICD-10-CM codes -> service):

=====================  ===============================================  ====================
category               ICD-10-CM codes                                  service
=====================  ===============================================  ====================
education_literacy     Z55 education and literacy                       education
employment             Z56 employment and unemployment                  employment
occupational_exposure  Z57 occupational exposure to risk factors        occupational-health
physical_environment   Z58 physical environment                         environmental-health
housing                Z59.0x homelessness, Z59.1 inadequate housing,   housing
                       Z59.81x housing instability (housed)
food                   Z59.4x lack of adequate food (food insecurity)   food
transportation         Z59.82 transportation insecurity                 transportation
economic               the rest of Z59 (poverty, insufficient           financial
                       insurance/welfare, material hardship, utility)
social_environment     Z60 social environment (living alone, exclusion) social-support
childhood_events       Z61 (WHO ICD-10 only) negative childhood events  family-support
upbringing             Z62 upbringing                                   family-support
family                 Z63 primary support group, family circumstances  family-support
psychosocial           Z64 certain psychosocial circumstances           psychosocial-support
other_psychosocial     Z65 other psychosocial (legal, victim of crime)  psychosocial-support
=====================  ===============================================  ====================
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.care.charlson import parse_code_set


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DEFAULT_SOCIAL_NEEDS: dict[str, str | None] = {
    "education_literacy": "education",
    "employment": "employment",
    "occupational_exposure": "occupational-health",
    "physical_environment": "environmental-health",
    "housing": "housing",
    "food": "food",
    "transportation": "transportation",
    "economic": "financial",
    "social_environment": "social-support",
    "childhood_events": "family-support",
    "upbringing": "family-support",
    "family": "family-support",
    "psychosocial": "psychosocial-support",
    "other_psychosocial": "psychosocial-support",
}


class CodeRule(_Model):
    """Codes (dot-less ICD-10 prefixes or ranges, as in the risk data files: ``F01-F99``)
    that make a need for ``service``; ``except_codes`` carves codes out of the range."""

    codes: tuple[str, ...] = Field(min_length=1)
    except_codes: tuple[str, ...] = ()
    service: str = Field(min_length=1)

    @field_validator("codes", "except_codes")
    @classmethod
    def _check_specs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            parse_code_set(list(value))  # raises ValueError on a malformed spec
        return value


class DispositionRule(_Model):
    """Discharge dispositions (PV1-36, HL7 table 0112 / FHIR discharge-disposition code,
    compared as sent, ignoring case) that make a need for ``service``."""

    codes: tuple[str, ...] = Field(min_length=1)
    service: str = Field(min_length=1)


class ReferralsConfig(_Model):
    enabled: bool = True
    encounter_classes: tuple[str, ...] = ("inpatient", "observation", "emergency")
    """A need is referred as soon as it is known on an encounter of these classes (ED
    visits included: a homeless patient discharged from the ED needs housing help
    tonight)."""
    social_needs: dict[str, str | None] = Field(
        default_factory=lambda: dict(DEFAULT_SOCIAL_NEEDS))
    """Social-needs category (risk data ids) -> service code; null = do not refer."""
    diagnoses: tuple[CodeRule, ...] = (
        CodeRule(codes=("F01-F99",), except_codes=("F17",), service="behavioral-health"),)
    """Other diagnosis rules. Default: ICD-10 chapter 5 (F01-F99, mental and behavioural
    disorders) -> behavioral-health, except F17 nicotine dependence (a smoker is not a
    community behavioral-health referral; add it back here if your program wants it)."""
    dispositions: tuple[DispositionRule, ...] = (
        DispositionRule(codes=("06",), service="home-health"),)
    """Discharge dispositions -> service. Default: 06 discharged to home under the care of
    a home health service organization (HL7 table 0112 / UB-04)."""
    flags: dict[str, str] = Field(default_factory=dict)
    """Risk-flag reason code (care.flags ``reasons[].code``) -> service, e.g.
    ``frequent_ed: community-health-worker``. Empty by default."""
    flag_social_needs: bool = True
    """A ``social_needs`` flag's ``sdoh.<category>`` factors are needs too (through the
    table above): a Z code the risk stage saw is referred even if no event showed it here."""
    death_dispositions: tuple[str, ...] = ("20", "40", "41", "42", "exp")
    """Dispositions meaning the patient died (table 0112 20 expired, 40-42 expired at
    home / in a facility / place unknown; FHIR ``exp``): open referrals are cancelled."""
    hospice_dispositions: tuple[str, ...] = ("50", "51", "hosp")
    """Discharge to hospice (0112 50 home, 51 facility; FHIR ``hosp``): open referrals
    are cancelled (hospice coordinates community services itself)."""
    republish_on_discharge: bool = True
    """A discharge after the referral went out sends the agency a new version with the
    discharge date (agencies plan the first contact around it)."""
    max_attempts: int = Field(default=5, ge=1)
    """At most this many agencies are asked for one need (rejections move on to the next
    matching agency); then the referral ends with ``no_agency_available``."""
    remember_inputs: int = Field(default=200, ge=1)
    """How many recent input ids each patient keeps to drop duplicates."""

    @field_validator("social_needs", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        # A rules file naming one category changes that one, not the whole table.
        if isinstance(value, dict):
            return {**DEFAULT_SOCIAL_NEEDS, **value}
        return value
