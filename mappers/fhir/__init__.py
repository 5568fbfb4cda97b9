"""FHIR R4 -> canonical care events (public surface of the FHIR mappers).

``map_fhir(data, *, received_at, resolver=None, default_tz="UTC") -> list[CanonicalEvent]``
maps one FHIR JSON input and raises only :class:`schemas.errors.MappingError` for bad
input (``ValueError`` for an unknown ``default_tz``, a configuration error). Pure: no
I/O, clock or environment (the optional resolver is the caller's code).

What is accepted
----------------
- **Encounter**: the kind follows ``Encounter.status``: planned -> preadmit;
  arrived/triaged -> admit for inpatient/observation class, else register;
  in-progress -> admit (also when the location history shows a move: REST feeds
  re-send the whole Encounter, so a move in the history is not a new transfer event;
  transfers come from explicit events); onleave -> leave_of_absence; finished ->
  discharge; cancelled and entered-in-error -> cancel_admit; unknown -> update.
  ``Encounter.class`` (v3 ActCode): IMP/ACUTE/NONAC -> inpatient, EMER -> emergency,
  OBSENC -> observation, AMB -> outpatient, PRENC -> preadmit, anything else -> other.
- **Patient** alone: kind ``update`` (demographics), no encounter.
- **Bundle** of type transaction, batch, collection, message or searchset: every
  Encounter (with the Patient it references: ``Patient/x``, absolute URL, ``urn:uuid:``
  fullUrl or ``#contained``; its Conditions -> diagnoses; the Patient's Coverage ->
  coverage; Locations -> facility/unit/room/bed; serviceProvider -> facility), then
  every Patient no Encounter refers to (an update each). A **message** Bundle must
  start with a MessageHeader; its ``focus`` chooses the resources. Da Vinci
  Unsolicited Notifications ``eventCoding`` notification-admit / -discharge /
  -transfer set the kind to admit / discharge / transfer; other event codes are kept
  as the trigger and the kind follows the Encounter status.
- **Subscription notification** (R4 backport: Bundle type history whose first entry is
  a Parameters status; or an R4B SubscriptionStatus): handshake, heartbeat and
  query-status notifications return ``[]`` (nothing happened, and it is not an error:
  the sender must get a 2xx). Event notifications with full resources are mapped
  (focus from ``notification-event.focus``); id-only or empty ones raise
  ``ID_ONLY_NOTIFICATION`` unless a resolver is given, which is then called with each
  focus reference and must return the resource as a dict (or ``None`` ->
  ``UNRESOLVED_REFERENCE``).
- Anything else (Observation, MessageHeader alone, Subscription, Basic, a Bundle
  without Encounter or Patient, document/history Bundles) -> ``UNSUPPORTED_RESOURCE``
  naming the resource type; invalid FHIR -> ``INVALID_RESOURCE`` naming the path.

Patients and keys
-----------------
The MRN is the identifier typed ``MR`` (v2-0203), else the first identifier with a
system/assigner; the assigning authority is ``Identifier.system`` (else
``assigner.display``). Social Security numbers are never used as key nor copied. No
usable identifier -> ``MISSING_PATIENT_IDENTIFIER``; a veterinary Patient
(patient-animal extension) -> ``UNSUPPORTED_RESOURCE``. An Encounter whose Patient is
not in the input (and not resolvable) is keyed by ``Reference.identifier`` when given,
else by the Patient's logical id scoped to ``<server base>/Patient`` (base from an
absolute reference, ``meta.source`` or the MessageHeader endpoint, else ``urn:fhir``):
stable per server but not equal to an HL7 v2 MRN key.

Times
-----
A dateTime with an offset keeps it. A dateTime without offset (not valid FHIR, but
sent) and a date-only value are read in ``default_tz`` (UTC unless the feed is
configured otherwise); partial dates (year, year-month) are dropped. ``occurred_at`` is
the notification event timestamp, else ``Bundle.timestamp``, else the resource's
``meta.lastUpdated``, else ``period.start`` (``period.end`` for a discharge), else
``received_at``. ``recorded_at`` is ``Bundle.timestamp``, else ``meta.lastUpdated``,
else ``received_at``. ``encounter.discharge_at`` is ``period.end`` only when the
Encounter is finished or the event is a discharge.

Ids
---
``event_id = derive_id("fhir", source id, version, n)``: source id ``Bundle/<id>`` or
``<Type>/<id>`` (a content hash when there is no id), version ``meta.versionId``, else
``meta.lastUpdated``, else (Bundles) ``Bundle.timestamp``, else a hash of the content
(so a re-sent identical resource keeps its id and a changed one gets a new id), ``n``
the event's position in the output. ``source.message_id`` is ``Bundle.id`` or
``<Type>/<id>[/_history/<versionId>]``; ``source.system`` the MessageHeader
``source.endpoint`` or ``meta.source``; ``source.facility`` the serviceProvider (or
MessageHeader sender) name.
"""

from .mapper import map_fhir
from .references import Resolver

__all__ = ["Resolver", "map_fhir"]
