"""Per-patient referral state, as stored in the ``referrals`` table (JSON in a changelog).

The table's values are a contract with every worker that ever restores them: add fields
with defaults; renaming or removing one is a migration. The state holds PHI (the
demographic snapshot the agency copy is built from), like every per-patient table.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.care.episodes import FollowedEpisode


class _State(BaseModel):
    # Not frozen: the engine deep-copies before changing anything (apply twice == once).
    model_config = ConfigDict(extra="ignore")


class Demographics(_State):
    """The latest non-empty values seen on care.events (what an agency may receive)."""

    family_name: str | None = None
    given_names: list[str] = Field(default_factory=list)
    birth_date: date | None = None
    phone: str | None = None
    line: list[str] = Field(default_factory=list)
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    county: str | None = None
    language: str | None = None


class EpisodeInfo(_State):
    key: str
    """``<facility>|<visit number>`` (the care stage's encounter key)."""
    facility: str | None = None
    unit: str | None = None
    class_: str | None = None
    admit_at: datetime | None = None
    discharge_at: datetime | None = None
    disposition: str | None = None
    diagnoses: list[tuple[str, str | None]] = Field(default_factory=list)
    flag_reasons: list[tuple[str, list[str]]] = Field(default_factory=list)
    """(reason code, factor codes) of the latest active risk record."""
    manager_id: str | None = None
    team: str | None = None
    cancelled: bool = False
    first_event_id: str | None = None
    care: FollowedEpisode | None = None
    """The care stage's status and times of this episode, followed from the same events
    (:func:`streams.care.episodes.follow_episode`): what picks the episode of an event
    without a visit number, as the care stage picks it. None in states written before it
    existed, and for an episode first heard of from a flag or assignment (see
    :func:`streams.referrals.engine.followed`)."""


class AgencyTask(_State):
    """One agency asked for one need (a FHIR Task; ``task_id`` is the agency copy's id)."""

    task_id: str
    agency_id: str
    attempt: int
    status: str = "requested"
    status_reason: str | None = None
    version: int = 1
    requested_at: datetime
    updated_at: datetime
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    cause_event_id: str
    rule: str
    outcome: str | None = None
    sent_discharge: date | None = None
    """The discharge date the agency's latest copy carries."""
    sent_contact: list[str | None] = Field(default_factory=list)
    """[name, phone, email] of the referring contact in the agency's latest copy."""
    sent_patient: str | None = None
    """Hash of the demographics (agency projection plus county) the latest copy was built
    from: a change means the agency must hear of it (or, if it no longer serves the
    area, lose the referral). None in states written before it existed."""
    agency_version: int | None = None
    """The agency copy's own version: bumped only when what the agency sees changed (not
    on every change of the hub's record). None in older states, whose copies carried
    ``version``."""
    agency_hash: str | None = None
    """Content hash of the latest agency copy published
    (:func:`mappers.fhir_referral.agency_content_hash`)."""
    agency_updated_at: datetime | None = None
    """``updated_at`` of the latest agency copy published."""


class Referral(_State):
    """One need of one episode (a FHIR ServiceRequest), re-referred across agencies."""

    referral_id: str
    episode_key: str
    need: str
    need_codes: list[str] = Field(default_factory=list)
    rule: str
    cause_event_id: str
    created_at: datetime
    tasks: list[AgencyTask] = Field(default_factory=list)
    """Oldest first; the last one is the current agency."""
    outcome: Literal["no_agency_available"] | None = None
    superseded_by: str | None = None
    """After a merge found the same need of the same episode under both patient keys: the
    referral id kept instead of this one (this one's open Task was withdrawn)."""

    def current(self) -> AgencyTask | None:
        return self.tasks[-1] if self.tasks else None

    def tried(self) -> list[str]:
        return [t.agency_id for t in self.tasks]


class HeldInput(_State):
    topic: str
    """Catalogue topic name the input was read from."""
    value: dict[str, Any]


class ReferralMergeWait(_State):
    """This key survived a merge whose prior key's referrals have not arrived yet (as
    :class:`streams.care.state.MergeWait`): inputs are held, in order, and replayed right
    after the absorb, so a need the prior key already referred is not referred twice.
    Past ``merge_wait_s`` (checked when the next input arrives: this stage has no timer)
    or ``merge_buffer_max`` held inputs the key stops waiting and replays them anyway."""

    awaiting: list[str]
    """Merge event ids whose absorb has not arrived."""
    since: datetime
    """Processing time the wait began."""
    buffered: list[HeldInput] = Field(default_factory=list)


class ReferralPatientState(_State):
    key: str
    demographics: Demographics = Field(default_factory=Demographics)
    protection: bool | None = None
    deceased: bool = False
    consent: Literal["opt-out", "opt-in"] | None = None
    consent_at: datetime | None = None
    episodes: dict[str, EpisodeInfo] = Field(default_factory=dict)
    referrals: dict[str, Referral] = Field(default_factory=dict)
    """referral id -> referral."""
    ignored_updates: dict[str, int] = Field(default_factory=dict)
    """Agency updates not applied, by reason (``invalid_transition``, ``wrong_agency``,
    ``unknown_task``): counts for the metrics."""
    seen: list[str] = Field(default_factory=list)
    partition: int | None = None
    merged_into: str | None = None
    """This key was merged away: its inputs are forwarded to the survivor."""
    merged_from: list[str] = Field(default_factory=list)
    merge_wait: ReferralMergeWait | None = None
    merge_waits_expired: int = 0

    def opted_out(self) -> bool:
        return self.consent == "opt-out"
