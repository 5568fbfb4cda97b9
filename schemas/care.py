"""Care decision outputs: flags, assignments, tasks, escalations, notifications.

These are the canonical records the care stages publish (topics ``care.flags``,
``care.assignments``, ``care.tasks``, ``care.escalations``, ``care.notifications``) and
what ``hub decide`` prints, one per line. Every record names the event that caused it
(``cause_event_id``) and the rule that fired (``rule``), and its ``id`` is derived from
both (:func:`schemas.canonical.derive_id`), so a redelivered input yields the same ids.

The FHIR R4 rendering of each record (RiskAssessment, Flag, CareTeam, Task, message
Bundle) travels beside it in ``fhir``; it is built by :mod:`mappers.fhir_out`.

Records carry the canonical patient key (it holds the MRN: these topics are PHI, like
``care.events``) but never names or free text: reasons are codes with counts and days.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.canonical import AwareDatetime


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Factor(_Model):
    """One contributor to a score or flag: a code, its points if scored, a PHI-free detail."""

    code: str
    points: int | None = None
    detail: str | None = None


class Reason(_Model):
    """A flag that fired (``high_lace``, ``readmission_30d``, ...) and why."""

    code: str
    display: str
    factors: list[Factor] = Field(default_factory=list)


class Lace(_Model):
    score: int
    l: int  # noqa: E741 - the LACE component names are the contract
    a: int
    c: int
    e: int


class Charlson(_Model):
    score: int
    """Standard Charlson weights (Quan 2005 ICD-10 coding), hierarchies applied."""
    categories: list[str] = Field(default_factory=list)


class _Output(_Model):
    id: str
    """Deterministic: derived from ``cause_event_id`` and ``rule`` (and the task/flag)."""
    cause_event_id: str
    rule: str
    patient_key: str
    encounter_key: str | None = None
    """``<facility>|<visit number>``: the episode the output belongs to."""
    facility: str | None = None
    decided_at: AwareDatetime
    """The time the rule was applied: the cause event's own time (replays reproduce it)."""
    fhir: dict[str, Any] | None = None


class FlagOutput(_Output):
    """A readmission-risk record: published for every inpatient/observation admission
    and discharge, whatever the level; ``reasons`` lists the flags that fired."""

    type: Literal["flag"] = "flag"
    stage: Literal["admission", "discharge"]
    status: Literal["active", "withdrawn"] = "active"
    replaces: str | None = None
    """For a withdrawal: the id of the risk record it withdraws."""
    risk_level: Literal["low", "moderate", "high"]
    lace: Lace
    charlson: Charlson
    factors: list[Factor] = Field(default_factory=list)
    reasons: list[Reason] = Field(default_factory=list)
    flag_resources: list[dict[str, Any]] = Field(default_factory=list)
    """One FHIR Flag per reason (the RiskAssessment is in ``fhir``)."""


class AssignmentOutput(_Output):
    type: Literal["assignment"] = "assignment"
    status: Literal["assigned", "unassigned", "released"]
    manager_id: str | None = None
    team: str | None = None
    supervisor: str | None = None
    reason: str
    """continuity, least_loaded, none_eligible, all_at_cap, none_on_shift, no_team,
    episode_closed, cancelled."""
    points: int = 0
    load_after: int | None = None
    cap: int | None = None
    considered: list[list[str]] = Field(default_factory=list)
    """[manager id, why skipped or chosen] for every manager considered."""


TaskKind = Literal["contact", "visit", "med_rec", "pcp_notification", "handoff"]
TaskStatus = Literal["requested", "in-progress", "completed", "cancelled", "failed", "on-hold"]


class TaskOutput(_Output):
    type: Literal["task"] = "task"
    task_id: str
    """Stable id of the task across its updates (the FHIR Task id)."""
    kind: TaskKind
    due: AwareDatetime
    status: TaskStatus
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"
    owner: str | None = None
    """Manager id, or ``team:<team id>`` for a team queue."""
    description: str
    status_reason: str | None = None
    attempts: int = 0


class EscalationOutput(_Output):
    type: Literal["escalation"] = "escalation"
    reason: str
    """task_overdue, none_eligible, all_at_cap, none_on_shift, no_team."""
    team: str | None = None
    supervisor: str | None = None
    task_id: str | None = None
    task_kind: str | None = None
    due: AwareDatetime | None = None


class NotificationOutput(_Output):
    type: Literal["notification"] = "notification"
    event_code: Literal["notification-admit", "notification-discharge", "notification-transfer"]
    recipient: str | None = None
    """The PCP's id (PD1-4 / Patient.generalPractitioner) when known."""


CareOutput = Annotated[
    FlagOutput | AssignmentOutput | TaskOutput | EscalationOutput | NotificationOutput,
    Field(discriminator="type"),
]


def dump_output(output: BaseModel) -> dict[str, Any]:
    """The wire form of an output: JSON-compatible, nulls omitted."""
    return output.model_dump(mode="json", exclude_none=True)


class TaskUpdate(_Model):
    """A status change sent back by a care-management system (topic ``care.task-updates``,
    keyed by the patient key that the task record carried)."""

    id: str | None = None
    """The sender's id for this update (dedup); derived from the rest when absent."""
    task_id: str
    patient_key: str
    status: Literal["completed", "attempted", "cancelled", "in-progress", "failed", "on-hold"]
    at: AwareDatetime
    reason: str | None = None
    """A code, not free text (free text may hold PHI)."""


class TeamRequest(_Model):
    """Internal (topic ``care.assignment-requests``, keyed by team id): what the per-patient
    stage asks of the per-team caseload stage. Repartitioning by team keeps one team's
    caseload in one partition, so counts are consistent without locks."""

    op: Literal["assign", "release", "update_points"]
    team: str
    patient_key: str
    encounter_key: str
    facility: str | None = None
    cause_event_id: str
    decided_at: AwareDatetime
    risk_level: Literal["low", "moderate", "high"] = "low"
    payer_ids: list[str] = Field(default_factory=list)
    language: str | None = None
    specialty: str | None = None
    continuity_manager_id: str | None = None
    continuity_at: AwareDatetime | None = None
    reason: str | None = None
    """For release: episode_closed, cancelled, merged."""


class PatientCommand(_Model):
    """Internal (topic ``care.episode-commands``, keyed by the patient key it is for):
    how state moves between patient keys on a merge, through the topic keyed by the
    receiving key, so each key's state is only ever touched by its own partition."""

    op: Literal["handover", "absorb", "forward", "tick"]
    cause_event_id: str
    decided_at: AwareDatetime
    target_key: str
    """handover: the surviving key to send state to."""
    state: dict[str, Any] | None = None
    """absorb: the prior key's whole state (streams.care.state.PatientState as JSON)."""
    message: dict[str, Any] | None = None
    """forward: an input that reached a merged-away key ({"topic": ..., "value": ...})."""


TICK_KEY = b"__tick__"
"""Key of the timer's per-partition tick on ``care.episode-commands`` (op ``tick``): the
timer cannot write tables itself, so it asks each active partition's agent to do the
pass over the patients it owns."""
