"""The topic catalogue: every topic the hub reads or writes, declared once.

Topics are created from this table at start-up (``hub.kafka.ensure_topics``) and
the faust app declares its topics from it, so a name is never spelled twice. Names are
``<domain>.<thing>``; renaming one is a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    """What the key is (documentation and JSON Schema)."""
    value: str
    """The value model: a schemas model name, or ``bytes`` for raw wire messages."""
    partitions: int
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    retention_ms: int | None = 7 * DAY_MS
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        out = {"cleanup.policy": self.cleanup_policy, **self.config}
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        return out


EHR_HL7V2 = TopicSpec(
    name="ehr.hl7v2",
    key="patient key (assigning authority|MRN)",
    value="bytes",
    partitions=6,
    retention_ms=14 * DAY_MS,
    description="Raw HL7 v2 messages exactly as received, after a durable ACK.",
)
EHR_FHIR = TopicSpec(
    name="ehr.fhir",
    key="patient key (assigning authority|MRN)",
    value="bytes",
    partitions=6,
    retention_ms=14 * DAY_MS,
    description="Raw FHIR R4 JSON (resources or Bundles) as received.",
)
CARE_EVENTS = TopicSpec(
    name="care.events",
    key="patient key",
    value="CanonicalEvent",
    partitions=6,
    retention_ms=90 * DAY_MS,
    description="Canonical care events, one patient's in order on one partition.",
)
HUB_DLQ = TopicSpec(
    name="hub.dlq",
    key="dead letter id",
    value="DeadLetter",
    partitions=3,
    retention_ms=90 * DAY_MS,
    description="Dead letters: codes and coordinates, no PHI.",
)
HUB_DLQ_PAYLOADS = TopicSpec(
    name="hub.dlq-payloads",
    key="dead letter id",
    value="bytes",
    partitions=3,
    retention_ms=90 * DAY_MS,
    description="Original bytes of each dead letter (PHI: restrict access).",
)
HUB_ACKS = TopicSpec(
    name="hub.acks",
    key="sending facility|MSH-10",
    value="bytes",
    partitions=3,
    cleanup_policy="compact,delete",
    retention_ms=7 * DAY_MS,
    description="ACKs sent, so a duplicate control id gets the stored ACK replayed.",
)

# Care decisions. Every per-patient topic has the partition count of care.events: the
# episodes agent reads several of them as one co-partitioned stream with one table.
_PATIENT = "patient key"
CARE_FLAGS = TopicSpec(
    name="care.flags", key=_PATIENT, value="FlagOutput", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Readmission-risk records (LACE, Charlson, flags with reasons) + FHIR.",
)
CARE_ASSIGNMENTS = TopicSpec(
    name="care.assignments", key=_PATIENT, value="AssignmentOutput", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Case-manager assignments, unassigned escalations and releases + CareTeam.",
)
CARE_TASKS = TopicSpec(
    name="care.tasks", key=_PATIENT, value="TaskOutput", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Follow-up tasks (TCM contact, visit, med rec, PCP notification, handoff).",
)
CARE_TASK_UPDATES = TopicSpec(
    name="care.task-updates", key=_PATIENT, value="TaskUpdate", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Task status from care-management systems (completed, attempted, ...).",
)
CARE_ESCALATIONS = TopicSpec(
    name="care.escalations", key=_PATIENT, value="EscalationOutput", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Overdue tasks and unassigned patients, for supervisors.",
)
CARE_NOTIFICATIONS = TopicSpec(
    name="care.notifications", key=_PATIENT, value="NotificationOutput", partitions=6,
    retention_ms=30 * DAY_MS,
    description="Da Vinci-style admit/discharge/transfer notification Bundles.",
)
CARE_ASSIGNMENT_REQUESTS = TopicSpec(
    name="care.assignment-requests", key="team id", value="TeamRequest", partitions=6,
    retention_ms=7 * DAY_MS,
    description="Internal: per-patient stage -> per-team caseload stage (repartition).",
)
CARE_EPISODE_COMMANDS = TopicSpec(
    name="care.episode-commands", key=_PATIENT, value="PatientCommand", partitions=6,
    retention_ms=7 * DAY_MS,
    description="Internal: state handed between patient keys on merges.",
)
CONFIG_ROSTER = TopicSpec(
    name="config.roster", key="\"roster\"", value="Roster", partitions=1,
    cleanup_policy="compact", retention_ms=None,
    description="The roster (teams, managers, shifts, caps): latest value wins.",
)

# Community referrals. care.referrals, referrals.updates and config.consent are keyed by
# patient with the partition count of care.events: the referrals agent reads them with
# care.events, care.flags and care.assignments as one co-partitioned stream.
CARE_REFERRALS = TopicSpec(
    name="care.referrals", key=_PATIENT, value="ReferralOutput", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Agency referrals (ServiceRequest + Task), republished on each status.",
)
REFERRALS_UPDATES = TopicSpec(
    name="referrals.updates", key=_PATIENT, value="ReferralUpdate", partitions=6,
    retention_ms=90 * DAY_MS,
    description="Agency status changes (accepted, rejected, in-progress, completed, ...), "
                "and the referral stage's own merge commands (ReferralCommand, type=command).",
)
REFERRALS_DELIVERIES = TopicSpec(
    name="referrals.deliveries", key="delivery id", value="DeliveryJob", partitions=6,
    retention_ms=7 * DAY_MS,
    description="Internal: webhook deliveries to make (retried with backoff).",
)
CONFIG_AGENCIES = TopicSpec(
    name="config.agencies", key="\"agencies\"", value="Directory", partitions=1,
    cleanup_policy="compact", retention_ms=None,
    description="The agency directory (services, areas, delivery): latest value wins.",
)
CONFIG_CONSENT = TopicSpec(
    name="config.consent", key=_PATIENT, value="ConsentRecord", partitions=6,
    cleanup_policy="compact", retention_ms=None,
    description="Patient opt-out / opt-in to community referrals: latest value wins.",
)
AGENCY_TOPIC_PREFIX = "referrals."
"""``referrals.<agency id>``: one topic per agency, created when the directory names it."""
RESERVED_AGENCY_IDS = frozenset({"updates", "deliveries"})
"""Agency ids that would collide with the fixed ``referrals.*`` topics (the directory
refuses them)."""


def agency_topic(agency_id: str) -> str:
    """The agency's own topic: its minimum-necessary copies (AgencyReferral), keyed by
    the agency Task id (never by patient key: the agency must not learn it)."""
    return f"{AGENCY_TOPIC_PREFIX}{agency_id}"


CATALOGUE: tuple[TopicSpec, ...] = (
    EHR_HL7V2,
    EHR_FHIR,
    CARE_EVENTS,
    HUB_DLQ,
    HUB_DLQ_PAYLOADS,
    HUB_ACKS,
    CARE_FLAGS,
    CARE_ASSIGNMENTS,
    CARE_TASKS,
    CARE_TASK_UPDATES,
    CARE_ESCALATIONS,
    CARE_NOTIFICATIONS,
    CARE_ASSIGNMENT_REQUESTS,
    CARE_EPISODE_COMMANDS,
    CONFIG_ROSTER,
    CARE_REFERRALS,
    REFERRALS_UPDATES,
    REFERRALS_DELIVERIES,
    CONFIG_AGENCIES,
    CONFIG_CONSENT,
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in CATALOGUE}
