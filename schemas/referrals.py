"""Community-agency referrals: the records on ``care.referrals``, ``referrals.<agency>``,
``referrals.updates``, ``referrals.deliveries`` and ``config.consent``.

Shape and statuses follow the Gravity SDOH Clinical Care IG: a ServiceRequest says what
is needed (one per patient, episode and need), a Task per agency asked carries the
workflow. ``requested`` and ``entered-in-error`` are set by the hub (the requester); the
agency sets the rest.

Two views of one referral, on purpose:

* :class:`ReferralOutput` (``care.referrals``, keyed by patient key) is the hub's own
  record, for case managers and downstream systems: it carries the patient key (PHI,
  like every ``care.*`` topic) and the need's source codes.
* :class:`AgencyReferral` (``referrals.<agency>``, webhooks, the agency API) is the
  minimum-necessary copy an agency receives: no MRN or patient key (a referral-scoped id
  instead), no diagnoses beyond the need category. A test asserts it field by field.

Ids are deterministic (:func:`schemas.canonical.derive_id`): the referral (ServiceRequest)
id from patient, episode and need; the agency Task id from the referral id and agency.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.canonical import AwareDatetime

ReferralStatus = Literal[
    "draft", "requested", "accepted", "rejected", "cancelled", "in-progress", "on-hold",
    "failed", "completed", "entered-in-error",
]
AgencyStatus = Literal["accepted", "rejected", "in-progress", "completed", "cancelled"]
"""What an agency may send back (the API's ``POST .../status``)."""
TERMINAL_STATUSES = frozenset({"rejected", "cancelled", "failed", "completed",
                               "entered-in-error"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Contact(_Model):
    name: str | None = None
    phone: str | None = None
    email: str | None = None


class AgencyAddress(_Model):
    line: list[str] = Field(default_factory=list)
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None


class AgencyPatient(_Model):
    """The minimum an agency needs to reach and serve the patient (and nothing else)."""

    family_name: str | None = None
    given_names: list[str] = Field(default_factory=list)
    birth_date: date | None = None
    phone: str | None = None
    address: AgencyAddress | None = None
    preferred_language: str | None = None


class AgencyReferral(_Model):
    """The agency's copy (``referrals.<agency>``, webhook body, ``GET /agency/referrals``).

    The allowed fields are exactly these; adding one is a privacy decision (and the
    projection test must change with it).
    """

    id: str
    """The agency Task id: referral-scoped, reveals nothing about the patient."""
    referral_id: str
    """The ServiceRequest id (the same need re-referred elsewhere keeps it)."""
    agency_id: str
    status: ReferralStatus
    status_reason: str | None = None
    need: str
    """Service category: housing, food, transportation, home-health, behavioral-health..."""
    patient: AgencyPatient
    discharge_date: date | None = None
    referring: Contact
    """The referring case manager (or the team) and how to reach them."""
    authored_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = 1
    """Bumped on every change the agency should hear about (webhook idempotency keys
    are per referral and version)."""
    fhir: dict[str, Any] | None = None
    """A FHIR R4 collection Bundle: ServiceRequest, Task, Patient (same fields only)."""


class ReferralOutput(_Model):
    """The hub's record of one agency referral (``care.referrals``, keyed by patient key).

    Republished on every status change, with the same ``id`` and a higher ``version``.
    """

    type: Literal["referral"] = "referral"
    id: str
    """The agency Task id (same as :attr:`AgencyReferral.id`)."""
    referral_id: str
    cause_event_id: str
    rule: str
    patient_key: str
    encounter_key: str | None = None
    facility: str | None = None
    decided_at: AwareDatetime
    agency_id: str
    need: str
    need_codes: list[str] = Field(default_factory=list)
    """What detected the need (ICD-10 codes, ``disposition:06``, ``flag:<code>``)."""
    status: ReferralStatus
    status_reason: str | None = None
    attempt: int = 1
    """1 for the first agency asked for this need, 2 after one declined, ..."""
    manager_id: str | None = None
    version: int = 1
    requested_at: AwareDatetime
    accepted_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    time_to_accept_s: float | None = None
    time_to_complete_s: float | None = None
    outcome: Literal["no_agency_available"] | None = None
    """Set on the last agency's record when no further matching agency is left to ask
    (every candidate declined, or none matched at all)."""
    agency_copy: AgencyReferral
    fhir: dict[str, Any] | None = None
    """The full ServiceRequest + Task (hub view) as a FHIR R4 collection Bundle."""


class ReferralUpdate(_Model):
    """An agency's status change (``referrals.updates``, keyed by the patient key the
    API looked up from the referral; the agency never sees or sends that key)."""

    id: str
    """Dedup id: derived from referral, status and the agency's time when not given."""
    referral_task_id: str
    agency_id: str
    patient_key: str
    status: AgencyStatus
    reason: str | None = None
    """A code (``no_capacity``, ``unable_to_contact``, ...), never free text."""
    at: AwareDatetime


class ConsentRecord(_Model):
    """Patient consent to community referrals (``config.consent``, compacted, keyed by
    patient key; the latest record wins)."""

    patient_key: str
    referrals: Literal["opt-out", "opt-in"]
    at: AwareDatetime
    source: str | None = None
    """Who recorded it (a system or staff id code, not a name)."""


class DeliveryJob(_Model):
    """One webhook delivery to make (``referrals.deliveries``, keyed by ``id``).

    The body is the exact bytes to POST (the agency copy as JSON). The secret is never
    on the topic: only the name of the environment variable holding it.
    """

    id: str
    """Idempotency key: derived from the agency Task id and version."""
    agency_id: str
    url: str
    secret_env: str | None = None
    body: str
    created_at: AwareDatetime
    referral_task_id: str
    version: int = 1
    replay_of: str | None = None
    """Set by ``hub dlq replay`` on a delivery given up before: the dead letter's id. The
    job keeps its id (the agency's Idempotency-Key) and gets a fresh ``created_at``; the
    delivery stage restarts a given-up delivery for it once per dead letter."""


class ReferralCommand(_Model):
    """Internal (on ``referrals.updates``, keyed by the patient key it is for): how referral
    state moves between patient keys on a merge (A40/A47), mirroring the care stage's
    ``PatientCommand`` on care.episode-commands. Each key's state is only ever touched by
    its own partition: the survivor asks the prior key to ``handover``; the prior key
    answers ``absorb`` (its whole state) to the survivor and from then on forwards
    whatever still reaches it (agency updates addressed to the old key, late events).
    ``type`` tells it apart from a :class:`ReferralUpdate` on the same topic."""

    type: Literal["command"] = "command"
    op: Literal["handover", "absorb", "forward"]
    cause_event_id: str
    """The merge event (handover, absorb) or the forwarded input's id (forward)."""
    decided_at: AwareDatetime
    target_key: str
    """The surviving patient key."""
    state: dict[str, Any] | None = None
    """absorb: the prior key's referral state (streams.referrals.state, as JSON)."""
    message: dict[str, Any] | None = None
    """forward: ``{"topic": <catalogue topic>, "value": <the input as JSON>}``."""
