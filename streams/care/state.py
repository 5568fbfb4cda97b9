"""Per-patient episode state, as stored in the episodes table (JSON in a changelog topic).

The table's values are a contract with every worker that ever restores them: add fields
with defaults; renaming or removing one is a migration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EpisodeStatus = Literal["new", "preadmit", "active", "discharged", "cancelled", "closed"]
AssignmentStatus = Literal["none", "requested", "assigned", "unassigned", "released"]
OPEN_TASK_STATUSES = frozenset({"requested", "in-progress", "on-hold"})


class _State(BaseModel):
    # Not frozen: the engine copies on write (a shallow copy of the patient, then of each
    # episode and task it changes) before changing anything, so the caller's state
    # is never mutated and "apply twice" can be compared with "once". A new state shares
    # the parts it did not change with the old one: treat both as read-only.
    model_config = ConfigDict(extra="ignore")


class TaskState(_State):
    task_id: str
    kind: str
    due: datetime
    status: str = "requested"
    priority: str = "routine"
    owner: str | None = None
    rule: str
    description: str
    cause_event_id: str
    discharge_key: str
    """The discharge (episode key + discharge time) that opened it: a cancelled discharge
    cancels exactly the tasks it caused."""
    attempts: int = 0
    escalated: bool = False
    status_reason: str | None = None


class EpisodeState(_State):
    key: str
    """``<facility>|<visit number>``."""
    facility: str | None = None
    encounter_id: str | None = None
    class_: str | None = None
    status: EpisodeStatus = "active"
    unit: str | None = None
    prior_unit: str | None = None
    admit_at: datetime | None = None
    discharge_at: datetime | None = None
    admission_type: str | None = None
    admit_source: str | None = None
    disposition: str | None = None
    emergent: bool = False
    emergent_reason: str | None = None
    diagnoses: list[tuple[str, str | None]] = Field(default_factory=list)
    payer_ids: list[str] = Field(default_factory=list)
    tz: str = "UTC"
    # Risk: what was last published, so an update that changes nothing publishes nothing.
    risk_level: str | None = None
    risk_signature: str | None = None
    risk_as_of: datetime | None = None
    """The as-of time of the admission-stage estimate: updates re-assess at the same
    point, so a day passing is not "a change" that republishes the flag."""
    last_flag: dict[str, Any] | None = None
    """The last published risk record (without FHIR), to withdraw it on a cancel."""
    active_flag_id: str | None = None
    discharge_flag_id: str | None = None
    # Assignment
    team: str | None = None
    supervisor: str | None = None
    manager_id: str | None = None
    assignment: AssignmentStatus = "none"
    points_level: str | None = None
    tasks: dict[str, TaskState] = Field(default_factory=dict)
    closed_at: datetime | None = None

    def counts_for_care(self) -> bool:
        """Inpatient and observation stays get flags, a case manager and follow-up."""
        return self.class_ in ("inpatient", "observation")


class ManagerLink(_State):
    manager_id: str
    team: str
    at: datetime


class BufferedInput(_State):
    """An input held back while a merge's history is on its way (see :class:`MergeWait`)."""

    topic: str
    """Catalogue topic name it was read from (how to decode it on replay)."""
    value: dict[str, Any]
    """The input as JSON, exactly as its model dumps it."""


class MergeWait(_State):
    """This key survived a merge (A40/A47) whose history has not arrived yet.

    The prior key's state comes in two hops through ``care.episode-commands`` (handover
    to the prior key, then absorb here); an admission read in between would be decided
    without that history. So inputs wait here, in order, and are replayed right after
    the absorb; after ``merge_wait_seconds`` or ``merge_buffer_max`` inputs the key stops
    waiting and replays them anyway (counted in ``merge_waits_expired``).
    """

    awaiting: list[str]
    """Cause event ids (the merge events) whose absorb has not arrived."""
    since: datetime
    """Processing time the wait began (the agent's clock, not the event's)."""
    buffered: list[BufferedInput] = Field(default_factory=list)


class PatientState(_State):
    key: str
    episodes: dict[str, EpisodeState] = Field(default_factory=dict)
    ed_visits: dict[str, datetime] = Field(default_factory=dict)
    """Episode key -> ED arrival time (LACE E, frequent-ED flag)."""
    discharges: dict[str, datetime] = Field(default_factory=dict)
    """Episode key -> inpatient/observation discharge time (30-day readmission)."""
    last_manager: ManagerLink | None = None
    pcp_id: str | None = None
    language: str | None = None
    protection: bool | None = None
    seen: list[str] = Field(default_factory=list)
    """Recent input ids, oldest first (duplicate inputs are dropped)."""
    merged_into: str | None = None
    merged_from: list[str] = Field(default_factory=list)
    partition: int | None = None
    """The table partition this state lives on (set by the agent): the timer's tick for
    a partition passes over exactly the patients stored there."""
    merge_wait: MergeWait | None = None
    """Set while a merge's absorb is due here. None-valued fields are not stored, so a
    state that never waited is stored exactly as before this field existed."""
    merge_waits_expired: int | None = None
    """How many times this key gave up waiting for an absorb (None: never)."""
