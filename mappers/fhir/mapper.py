"""FHIR R4 JSON -> canonical care events (see the package docstring for the rules)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pydantic

from schemas.canonical import (
    CanonicalEvent,
    EncounterClass,
    EventKind,
    Patient,
    Source,
    derive_id,
)
from schemas.canonical import Encounter as CanonicalEncounter
from schemas.errors import ErrorCode, MappingError
from schemas.fhir import (
    FHIR_VERSION,
    Bundle,
    BundleEntry,
    Encounter,
    MessageHeader,
    Parameters,
    ParametersParameter,
    Reference,
    Resource,
    SubscriptionStatus,
    is_resource_type,
    parse_resource,
)
from schemas.fhir import Patient as FhirPatient

from .elements import (
    admission_type,
    attending,
    coverages,
    diagnoses,
    encounter_class,
    first_code,
    locations,
    map_patient,
    organization_name,
    patient_from_reference,
    to_datetime,
    visit_number,
)
from .references import Resolver, ResourceIndex, parse_reference, resource_type

ACCEPTED_TOP_LEVEL = ("Encounter", "Patient", "Bundle")
MAPPED_BUNDLE_TYPES = ("transaction", "batch", "collection", "message", "searchset")
_ALL_BUNDLE_TYPES = (*MAPPED_BUNDLE_TYPES, "document", "history", "transaction-response",
                     "batch-response")

# Da Vinci Unsolicited Notifications (CodeSystem notification-event) -> kind.
DAVINCI_EVENTS: dict[str, EventKind] = {
    "notification-admit": EventKind.ADMIT,
    "notification-discharge": EventKind.DISCHARGE,
    "notification-transfer": EventKind.TRANSFER,
}

# Encounter.status (R4 EncounterStatus) -> kind; None = decided by class (see _kind).
# An in-progress Encounter is an admit even when its location history shows a move:
# a REST feed re-sends the whole Encounter on every change, so a completed location in
# the history would turn every later update into another "transfer". Transfers come
# from explicit events (Da Vinci notification-transfer). The episode stage dedups the
# repeated admits such feeds produce.
STATUS_KIND: dict[str, EventKind | None] = {
    "planned": EventKind.PREADMIT,
    "arrived": None,
    "triaged": None,
    "in-progress": EventKind.ADMIT,
    "onleave": EventKind.LEAVE_OF_ABSENCE,
    "finished": EventKind.DISCHARGE,
    "cancelled": EventKind.CANCEL_ADMIT,
    "entered-in-error": EventKind.CANCEL_ADMIT,
    "unknown": EventKind.UPDATE,
}

# Subscription notification types (R4 backport / R4B SubscriptionStatus.type) that
# carry no event: nothing to map, and not an error either.
NOTIFICATION_NO_EVENT = ("handshake", "heartbeat", "query-status")
NOTIFICATION_EVENT = ("event-notification", "query-event")


@dataclass
class _Hint:
    """What the envelope (message / notification) says about one target resource."""

    kind: EventKind | None = None
    trigger: str | None = None
    occurred_at: datetime | None = None


@dataclass
class _Ctx:
    """Per-input facts shared by every event the input yields."""

    zone: ZoneInfo
    received_at: datetime
    index: ResourceIndex
    source_id: str
    version: str
    message_id: str | None
    system: str | None = None
    sender: str | None = None
    envelope_time: datetime | None = None
    envelope_updated: datetime | None = None
    targets: list[tuple[Resource, _Hint]] = field(default_factory=list)


def map_fhir(
    data: bytes | dict[str, Any],
    *,
    received_at: datetime,
    resolver: Resolver | None = None,
    default_tz: str = "UTC",
) -> list[CanonicalEvent]:
    """Map one FHIR R4 JSON input to canonical events (possibly none).

    ``data`` is UTF-8 JSON bytes (a BOM is allowed) or an already-decoded dict.
    Accepted: an Encounter, a Patient (demographic update), or a Bundle of type
    transaction / batch / collection / message / searchset, or a subscription
    notification (type history, first entry Parameters or SubscriptionStatus). Reads
    ``resourceType``, ``Bundle.type/id/meta/timestamp/entry.fullUrl/entry.resource``,
    ``MessageHeader.eventCoding/eventUri/focus/source.endpoint/sender`` and the
    notification status (``type``, ``topic``, ``notification-event.focus/timestamp``);
    the resources are read by :mod:`mappers.fhir.elements`.

    ``resolver(reference)`` returns a resource dict (or ``None``) for a reference the
    input does not carry; it is asked only for a notification's focus and an
    Encounter's subject Patient. ``default_tz`` is the zone of dateTimes without an
    offset and of date-only values (and of a naive ``received_at``).

    Raises :class:`~schemas.errors.MappingError` for any unusable input, and
    ``ValueError`` only for an unknown ``default_tz`` (configuration, not input).
    """
    try:
        zone = ZoneInfo(default_tz)
    except Exception as exc:
        raise ValueError("default_tz must be an IANA time zone name") from exc
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=zone)
    doc = _load(data)
    rtype = doc.get("resourceType")
    if rtype not in ACCEPTED_TOP_LEVEL:
        raise _unsupported_top(rtype)
    model = parse_resource(doc, default_tz=default_tz)
    index = ResourceIndex(resolver, default_tz)

    if isinstance(model, Bundle):
        ctx = _bundle_ctx(model, zone, received_at, index)
        if not _collect_bundle_targets(model, ctx):
            return []
    else:
        ctx = _resource_ctx(model, zone, received_at, index)
        index.add(model)
        ctx.targets.append((model, _Hint()))

    events: list[CanonicalEvent] = []
    for resource, hint in ctx.targets:
        events.append(_event(resource, hint, ctx, len(events)))
    return events


# --- input ---------------------------------------------------------------------------


def _load(data: bytes | dict[str, Any]) -> dict[str, Any]:
    """Bytes -> JSON object (UTF-8, BOM allowed; NaN/Infinity are not JSON)."""
    if isinstance(data, dict):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MappingError(ErrorCode.INVALID_JSON, "FHIR input must be JSON bytes or an object")
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MappingError(ErrorCode.INVALID_JSON, "FHIR JSON must be UTF-8") from None
    if not text.strip():
        raise MappingError(ErrorCode.INVALID_JSON, "the body is empty")

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        doc = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise MappingError(ErrorCode.INVALID_JSON, "the JSON is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError gives a position, never the text: safe and useful to senders.
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise MappingError(ErrorCode.INVALID_JSON, f"the body is not valid JSON{where}") from None
    if not isinstance(doc, dict):
        raise MappingError(ErrorCode.INVALID_RESOURCE,
                           "the JSON body is not an object, so not a FHIR resource")
    return doc


def _unsupported_top(rtype: object) -> MappingError:
    if is_resource_type(rtype):
        return MappingError(
            ErrorCode.UNSUPPORTED_RESOURCE,
            f"{rtype} is not an admission resource: send an Encounter, a Patient or a "
            "Bundle (transaction, batch, collection, message, searchset, or a "
            "subscription notification)",
        )
    if rtype is None:
        return MappingError(ErrorCode.INVALID_RESOURCE, "resourceType is missing",
                            position="resourceType")
    return MappingError(ErrorCode.INVALID_RESOURCE,
                        "resourceType is not a FHIR R4 resource type", position="resourceType")


def _content_hash(model: Resource) -> str:
    """Stands in for a version when the sender gives none (same content, same id)."""
    return "sha256:" + hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:32]


def _meta_version(model: Resource) -> str | None:
    meta = model.meta
    if meta is None:
        return None
    if meta.versionId:
        return str(meta.versionId)
    if isinstance(meta.lastUpdated, datetime):
        return meta.lastUpdated.isoformat()
    return None


def _meta_source(model: Resource) -> str | None:
    return str(model.meta.source) if model.meta is not None and model.meta.source else None


def _meta_updated(model: Resource, zone: ZoneInfo) -> datetime | None:
    return to_datetime(model.meta.lastUpdated, zone) if model.meta is not None else None


def _resource_ctx(model: Resource, zone: ZoneInfo, received_at: datetime,
                  index: ResourceIndex) -> _Ctx:
    rtype = resource_type(model)
    version = _meta_version(model)
    vid = model.meta.versionId if model.meta is not None else None
    message_id = None
    if model.id:
        message_id = f"{rtype}/{model.id}" + (f"/_history/{vid}" if vid else "")
    return _Ctx(
        zone=zone, received_at=received_at, index=index,
        source_id=f"{rtype}/{model.id}" if model.id else f"{rtype}/{_content_hash(model)}",
        version=version or _content_hash(model), message_id=message_id,
        system=_meta_source(model), envelope_updated=_meta_updated(model, zone),
    )


def _bundle_ctx(bundle: Bundle, zone: ZoneInfo, received_at: datetime,
                index: ResourceIndex) -> _Ctx:
    timestamp = to_datetime(bundle.timestamp, zone)
    version = _meta_version(bundle) or (timestamp.isoformat() if timestamp else None)
    return _Ctx(
        zone=zone, received_at=received_at, index=index,
        source_id=f"Bundle/{bundle.id}" if bundle.id else f"Bundle/{_content_hash(bundle)}",
        version=version or _content_hash(bundle),
        message_id=str(bundle.id) if bundle.id else None,
        system=_meta_source(bundle), envelope_time=timestamp,
        envelope_updated=_meta_updated(bundle, zone),
    )


# --- bundles -------------------------------------------------------------------------


def _collect_bundle_targets(bundle: Bundle, ctx: _Ctx) -> bool:
    """Fill ``ctx.targets``; False when the Bundle is a notification with nothing to map."""
    btype = str(bundle.type) if bundle.type else ""
    entries: list[BundleEntry] = list(bundle.entry or [])
    if btype == "history":
        first = entries[0].resource if entries else None
        if isinstance(first, Parameters | SubscriptionStatus):
            return _collect_notification(first, entries[1:], ctx)
        raise MappingError(
            ErrorCode.UNSUPPORTED_RESOURCE,
            "Bundle of type history that is not a subscription notification (its first "
            "entry is not a Parameters or SubscriptionStatus)",
        )
    if btype not in MAPPED_BUNDLE_TYPES:
        shown = btype if btype in _ALL_BUNDLE_TYPES else "unknown"
        raise MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                           f"Bundle of type {shown} is not accepted; send transaction, batch, "
                           "collection, message or searchset")
    for entry in entries:
        if entry.resource is not None:
            ctx.index.add(entry.resource, str(entry.fullUrl) if entry.fullUrl else None)

    if btype == "message":
        header = entries[0].resource if entries else None
        if not isinstance(header, MessageHeader):
            raise MappingError(ErrorCode.INVALID_RESOURCE,
                               "a message Bundle must start with a MessageHeader",
                               position="Bundle.entry[0].resource")
        _collect_message(header, ctx)
    else:
        _collect_plain(ctx)
    return True


def _collect_plain(ctx: _Ctx) -> None:
    """Every Encounter; then every Patient that no Encounter of the input refers to."""
    encounters = [r for r in ctx.index.resources if isinstance(r, Encounter)]
    subjects = {id(ctx.index.find(e.subject, container=e)) for e in encounters}
    patients = [r for r in ctx.index.resources
                if isinstance(r, FhirPatient) and id(r) not in subjects]
    for res in [*encounters, *patients]:
        ctx.targets.append((res, _Hint()))
    if not ctx.targets:
        raise _nothing_to_map(ctx.index.resources, "Bundle")


def _collect_message(header: MessageHeader, ctx: _Ctx) -> None:
    """A FHIR message: ``MessageHeader.focus`` names the resources the event is about.

    Da Vinci notification-admit/-discharge/-transfer set the kind; any other event code
    is kept as the trigger and the kind follows the Encounter status. Without focus the
    Bundle is read like a collection.
    """
    event = None
    if header.eventCoding is not None and header.eventCoding.code:
        event = str(header.eventCoding.code)
    elif header.eventUri:
        event = str(header.eventUri)
    if header.source is not None and header.source.endpoint:
        ctx.system = str(header.source.endpoint)
    ctx.sender = organization_name(header.sender, ctx.index, header)
    hint = _Hint(kind=DAVINCI_EVENTS.get(event or ""), trigger=event)
    if not header.focus:
        _collect_plain(ctx)
        for i, (res, _) in enumerate(ctx.targets):
            ctx.targets[i] = (res, hint)
        return
    for i, ref in enumerate(header.focus):
        found = ctx.index.find(ref, container=header, use_resolver=True)
        if found is None:
            raise MappingError(
                ErrorCode.UNRESOLVED_REFERENCE,
                f"MessageHeader.focus[{i}] is not in the Bundle"
                + ("" if ctx.index.has_resolver else " and no resolver is configured"),
                position=f"MessageHeader.focus[{i}]",
            )
        if isinstance(found, Encounter | FhirPatient):
            ctx.targets.append((found, hint))
    if not ctx.targets:
        raise _nothing_to_map(
            [r for r in (ctx.index.find(f, container=header) for f in header.focus) if r],
            "MessageHeader.focus")


def _nothing_to_map(found: Sequence[Resource], where: str) -> MappingError:
    types = sorted({resource_type(r) for r in found})
    seen = f" (found: {', '.join(types)})" if types else " (it is empty)"
    return MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                        f"{where} holds no Encounter or Patient{seen}")


def _param(params: Sequence[ParametersParameter] | None, name: str) -> ParametersParameter | None:
    return next((p for p in params or [] if p.name == name), None)


def _collect_notification(status: Parameters | SubscriptionStatus,
                          entries: list[BundleEntry], ctx: _Ctx) -> bool:
    """A subscription notification (R4 backport Parameters, or R4B SubscriptionStatus).

    Reads the status ``type`` (handshake / heartbeat / query-status -> nothing to map),
    ``topic`` (kept as the trigger) and each ``notification-event`` (``focus``,
    ``timestamp``). Full-resource payloads are mapped; an id-only or empty payload
    needs the resolver, else ``ID_ONLY_NOTIFICATION``.
    """
    focus_refs: list[tuple[str, datetime | None]] = []
    if isinstance(status, Parameters):
        ntype_p = _param(status.parameter, "type")
        ntype = str(ntype_p.valueCode) if ntype_p and ntype_p.valueCode else ""
        topic_p = _param(status.parameter, "topic")
        topic = str(topic_p.valueCanonical or topic_p.valueUri or "") if topic_p else ""
        for p in status.parameter or []:
            if p.name != "notification-event":
                continue
            focus = _param(p.part, "focus")
            ts = _param(p.part, "timestamp")
            when = to_datetime(ts.valueInstant or ts.valueDateTime, ctx.zone) if ts else None
            if focus and focus.valueReference is not None and focus.valueReference.reference:
                focus_refs.append((str(focus.valueReference.reference), when))
    else:
        ntype = str(status.type) if status.type else ""
        topic = str(status.topic) if status.topic else ""
        for ev in status.notificationEvent or []:
            if ev.focus is not None and ev.focus.reference:
                focus_refs.append((str(ev.focus.reference),
                                   to_datetime(ev.timestamp, ctx.zone)))
    if ntype in NOTIFICATION_NO_EVENT:
        return False
    if ntype not in NOTIFICATION_EVENT:
        raise MappingError(ErrorCode.INVALID_RESOURCE,
                           "subscription notification status has no known type",
                           position="Bundle.entry[0].resource")
    for entry in entries:
        if entry.resource is not None:
            ctx.index.add(entry.resource, str(entry.fullUrl) if entry.fullUrl else None)
    trigger = topic or None
    id_only_hint = (" (id-only or empty payload); configure a resolver to fetch the "
                    "resources")
    if focus_refs:
        for ref, when in focus_refs:
            found = ctx.index.find_str(ref, use_resolver=True)
            if found is None:
                if not ctx.index.has_resolver:
                    raise MappingError(ErrorCode.ID_ONLY_NOTIFICATION,
                                       "the notification names its focus but does not carry "
                                       "it" + id_only_hint)
                raise MappingError(ErrorCode.UNRESOLVED_REFERENCE,
                                   "the resolver did not find the notification focus")
            if isinstance(found, Encounter | FhirPatient):
                ctx.targets.append((found, _Hint(trigger=trigger, occurred_at=when)))
        if not ctx.targets:
            raise _nothing_to_map(
                [r for r in (ctx.index.find_str(ref) for ref, _ in focus_refs) if r],
                "the notification focus")
        return True
    # No focus listed: map what the payload carries, or resolve bare entries.
    bodiless = [str(e.fullUrl) for e in entries if e.resource is None and e.fullUrl]
    if not any(isinstance(r, Encounter | FhirPatient) for r in ctx.index.resources):
        if not ctx.index.has_resolver:
            raise MappingError(ErrorCode.ID_ONLY_NOTIFICATION,
                               "the notification carries no resources" + id_only_hint)
        for url in bodiless:
            ctx.index.find_str(url, use_resolver=True)
    _collect_plain(ctx)
    ctx.targets = [(r, _Hint(trigger=trigger)) for r, _ in ctx.targets]
    return True


# --- events --------------------------------------------------------------------------


def _kind(status: str, cls: EncounterClass | None) -> EventKind:
    if status not in STATUS_KIND:
        raise MappingError(ErrorCode.INVALID_RESOURCE,
                           "Encounter.status is not an R4 EncounterStatus code",
                           position="Encounter.status")
    kind = STATUS_KIND[status]
    if kind is None:  # arrived / triaged: an inpatient stay is admitted, others registered
        admitted = (EncounterClass.INPATIENT, EncounterClass.OBSERVATION)
        kind = EventKind.ADMIT if cls in admitted else EventKind.REGISTER
    return kind


def _event(resource: Resource, hint: _Hint, ctx: _Ctx, n: int) -> CanonicalEvent:
    try:
        if isinstance(resource, Encounter):
            return _encounter_event(resource, hint, ctx, n)
        if isinstance(resource, FhirPatient):
            return _patient_event(resource, hint, ctx, n)
    except pydantic.ValidationError as exc:
        # A canonical model refused what the mapper built: a mapper bug, not bad input.
        # Only locations and types are reported (pydantic would quote values).
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise MappingError(ErrorCode.INTERNAL_ERROR,
                           f"the canonical event failed validation: {problems}") from None
    raise MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                       f"{resource_type(resource)} cannot be mapped to a care event")


def _source(ctx: _Ctx, facility: str | None) -> Source:
    return Source(format="fhir", system=ctx.system, facility=facility,
                  message_id=ctx.message_id, version=FHIR_VERSION)


def _subject(enc: Encounter, ctx: _Ctx) -> tuple[Patient, Resource | None]:
    """The Encounter's Patient: in the input, from the resolver, or keyed by reference."""
    ref: Reference | None = enc.subject
    if ref is None:
        raise MappingError(ErrorCode.MISSING_PATIENT_IDENTIFIER, "Encounter.subject is missing",
                           position="Encounter.subject")
    found = ctx.index.find(ref, container=enc, use_resolver=True)
    if isinstance(found, FhirPatient):
        return map_patient(found, ctx.index, ctx.zone), found
    if found is not None:
        raise MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                           f"Encounter.subject is a {resource_type(found)}, not a Patient",
                           position="Encounter.subject")
    parsed = parse_reference(ref.reference) if ref.reference else None
    if parsed is not None and parsed.type != "Patient":
        raise MappingError(ErrorCode.UNSUPPORTED_RESOURCE,
                           f"Encounter.subject refers to a {parsed.type}, not a Patient",
                           position="Encounter.subject")
    patient = patient_from_reference(ref, ctx.system)
    if patient is None:
        raise MappingError(
            ErrorCode.MISSING_PATIENT_IDENTIFIER,
            "Encounter.subject is neither in the input nor a Patient/id reference or "
            "identifier the hub can key",
            position="Encounter.subject",
        )
    return patient, None


def _encounter_event(enc: Encounter, hint: _Hint, ctx: _Ctx, n: int) -> CanonicalEvent:
    """Encounter -> canonical event.

    Reads ``Encounter.status`` and ``class`` (kind, unless the envelope set it),
    ``identifier``/``id`` (visit number), ``period`` (admit_at; discharge_at only when
    finished or the event is a discharge), ``hospitalization.admitSource`` /
    ``dischargeDisposition`` (codes kept), ``priority``/``type`` (admission type),
    ``serviceType`` (hospital service), ``location`` (current and prior),
    ``participant`` (ATND -> attending), ``serviceProvider`` (facility), ``subject``,
    ``meta.lastUpdated``; plus Conditions and Coverage of the input.
    """
    status = str(enc.status) if enc.status else ""
    cls = encounter_class(enc)
    kind = hint.kind or _kind(status, cls)  # _kind also rejects a non-R4 status
    if hint.kind is not None:
        _kind(status, cls)
    patient, patient_res = _subject(enc, ctx)
    facility = organization_name(enc.serviceProvider, ctx.index, enc) or ctx.sender
    current, prior = locations(enc, ctx.index, facility)
    start = to_datetime(enc.period.start, ctx.zone) if enc.period else None
    end = to_datetime(enc.period.end, ctx.zone) if enc.period else None
    discharged = status == "finished" or kind == EventKind.DISCHARGE
    hosp = enc.hospitalization
    encounter = CanonicalEncounter(
        **{"class": cls},  # the field's wire name; ``class_`` is not a keyword mypy knows
        id=visit_number(enc),
        admit_at=start,
        discharge_at=end if discharged else None,
        admission_type=admission_type(enc),
        admit_source=first_code(hosp.admitSource) if hosp else None,
        discharge_disposition=first_code(hosp.dischargeDisposition) if hosp else None,
        hospital_service=first_code(enc.serviceType),
        location=current,
        prior_location=prior,
        attending=attending(enc, ctx.index),
    )
    by_period = end if kind == EventKind.DISCHARGE and end else start
    updated = _meta_updated(enc, ctx.zone)
    return CanonicalEvent(
        event_id=derive_id("fhir", ctx.source_id, ctx.version, n),
        kind=kind,
        trigger=hint.trigger or f"encounter-{status or 'unknown'}",
        occurred_at=(hint.occurred_at or ctx.envelope_time or updated or by_period
                     or ctx.received_at),
        recorded_at=ctx.envelope_time or updated or ctx.envelope_updated or ctx.received_at,
        source=_source(ctx, facility),
        patient=patient,
        encounter=encounter,
        diagnoses=diagnoses(enc, ctx.index),
        coverage=coverages(patient_res, ctx.index) if patient_res is not None else [],
    )


def _patient_event(res: FhirPatient, hint: _Hint, ctx: _Ctx, n: int) -> CanonicalEvent:
    """Patient alone -> a demographic ``update`` (no encounter).

    Reads the Patient (see :func:`mappers.fhir.elements.map_patient`),
    ``Patient.managingOrganization`` (facility) and ``meta.lastUpdated``.
    """
    patient = map_patient(res, ctx.index, ctx.zone)
    facility = organization_name(res.managingOrganization, ctx.index, res) or ctx.sender
    updated = _meta_updated(res, ctx.zone)
    return CanonicalEvent(
        event_id=derive_id("fhir", ctx.source_id, ctx.version, n),
        kind=EventKind.UPDATE,
        trigger=hint.trigger or "patient-update",
        occurred_at=hint.occurred_at or ctx.envelope_time or updated or ctx.received_at,
        recorded_at=ctx.envelope_time or updated or ctx.envelope_updated or ctx.received_at,
        source=_source(ctx, facility),
        patient=patient,
        coverage=coverages(res, ctx.index),
    )
