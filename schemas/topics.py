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

CATALOGUE: tuple[TopicSpec, ...] = (
    EHR_HL7V2,
    EHR_FHIR,
    CARE_EVENTS,
    HUB_DLQ,
    HUB_DLQ_PAYLOADS,
    HUB_ACKS,
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in CATALOGUE}
