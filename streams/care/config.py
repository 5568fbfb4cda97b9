"""The rules file: every threshold of the care stages, with shipped, documented defaults.

``hub/samples/rules.yaml`` is the documented default file; :func:`parse_rules` reads a
YAML text (the caller reads the file: this module does no I/O).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.care.assignment import AssignmentConfig
from streams.care.followup import FollowupConfig
from streams.care.risk import RiskConfig
from streams.configfile import load_yaml
from streams.referrals.config import ReferralsConfig


class EpisodeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    close_after_days: int = Field(default=30, ge=1)
    """An episode closes (caseload released) this long after discharge (the TCM service
    period), or earlier when all its tasks are done."""
    history_days: int = Field(default=400, ge=30)
    """ED visits and discharges older than this are forgotten (12-month counts + margin),
    and so are episodes over for longer (:func:`streams.care.engine.episode_over_at`)."""
    remember_inputs: int = Field(default=200, ge=1)
    """How many recent input ids each patient keeps to drop duplicates."""
    default_timezone: str = "UTC"
    facility_timezones: dict[str, str] = Field(default_factory=dict)
    """Sending facility -> IANA zone (business days and local dates are the facility's)."""
    notifications: bool = True
    merge_wait_seconds: float = Field(default=600, gt=0)
    """After a merge, how long the surviving key holds its inputs back waiting for the
    prior key's history (normally two hops through Kafka: well under a second) before it
    gives up and decides without it."""
    merge_buffer_max: int = Field(default=50, ge=1)
    """... and how many inputs it holds at most (they are stored in its table value)."""

    def timezone_for(self, facility: str | None) -> str:
        return self.facility_timezones.get(facility or "", self.default_timezone)


class CareConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    risk: RiskConfig = Field(default_factory=RiskConfig)
    followup: FollowupConfig = Field(default_factory=FollowupConfig)
    assignment: AssignmentConfig = Field(default_factory=AssignmentConfig)
    episode: EpisodeConfig = Field(default_factory=EpisodeConfig)
    referrals: ReferralsConfig = Field(default_factory=ReferralsConfig)
    """Community referrals (streams.referrals.config): needs -> agency services."""


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the path, never values."""


def parse_rules(text: str) -> CareConfig:
    """Read a rules YAML text (absent sections keep their defaults)."""
    # The same strict loader as the roster's: YAML 1.1 would read ``exclude: [no]`` as
    # False and a doubled key silently; here those are errors.
    data, problem = load_yaml(text, "rules file")
    if problem is not None:
        raise RulesError(problem)
    data = data or {}
    if not isinstance(data, dict):
        raise RulesError("rules file must be a mapping of sections")
    try:
        return CareConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['type']}" for err in exc.errors()
        )
        raise RulesError(f"invalid rules: {problems}") from None
