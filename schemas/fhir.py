"""FHIR R4 models for the hub: validation of inbound resources and OperationOutcome.

This is the only module of the project that imports ``fhir.resources``. US partners
speak FHIR R4 (4.0.1); ``fhir.resources`` 8 ships R4B (4.3) and R5 but no R4 package,
so R4 content is validated with the R4B models, which are the same as R4 for every
resource the hub reads (Bundle, MessageHeader, Parameters, Encounter, Patient,
Condition, Coverage, Location, Organization, Practitioner). Known R4 -> R4B
differences are smoothed over before validation by :func:`parse_resource`:

- R4-only resource types that R4B dropped (``MedicinalProduct*``, ``Substance*`` of
  the old model, ``EffectEvidenceSynthesis``, ``RiskEvidenceSynthesis``) may appear in
  an R4 Bundle or ``contained`` list; they mean nothing for admissions, so those entries
  are removed instead of failing the whole message.
- Senders in the wild omit the UTC offset of dateTime/instant values
  (``2024-05-01T10:30:00``), which FHIR forbids. With ``default_tz`` given, such values
  are read as wall-clock time in that zone and the offset is written in before
  validation; without it they are rejected as FHIR says.

Every validation failure becomes ``MappingError(ErrorCode.INVALID_RESOURCE, detail)``
whose detail names the FHIR path and the pydantic error type only: pydantic messages
carry the offending input value, which may be PHI, so they are never copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.careteam import CareTeam
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.encounter import Encounter, EncounterLocation
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.location import Location
from fhir.resources.R4B.messageheader import MessageHeader
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.parameters import Parameters, ParametersParameter
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.riskassessment import RiskAssessment
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.subscriptionstatus import SubscriptionStatus
from fhir.resources.R4B.task import Task

from schemas.errors import ErrorCode, MappingError

__all__ = [
    "ERROR_CODE_SYSTEM",
    "FHIR_VERSION",
    "R4_ONLY_RESOURCE_TYPES",
    "Bundle",
    "BundleEntry",
    "CareTeam",
    "CodeableConcept",
    "Coding",
    "Condition",
    "Coverage",
    "DomainResource",
    "Encounter",
    "EncounterLocation",
    "Flag",
    "HumanName",
    "Identifier",
    "Location",
    "MessageHeader",
    "Organization",
    "Parameters",
    "ParametersParameter",
    "Patient",
    "Practitioner",
    "Reference",
    "Resource",
    "RiskAssessment",
    "ServiceRequest",
    "SubscriptionStatus",
    "Task",
    "is_resource_type",
    "operation_outcome",
    "parse_resource",
]

FHIR_VERSION: Final = "4.0.1"
"""The FHIR version partners send and the hub declares (``Source.version``)."""

ERROR_CODE_SYSTEM: Final = "urn:care-transitions-hub:error-code"
"""Coding system of the hub's :class:`~schemas.errors.ErrorCode` in OperationOutcome."""

R4_ONLY_RESOURCE_TYPES: Final = frozenset(
    {
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
    }
)
"""R4 (4.0.1) resource types that R4B has no model for (checked against fhir.resources)."""

# Element names whose FHIR type is dateTime or instant in the resources partners send
# (Period.start/end, Bundle.timestamp, Meta.lastUpdated, Provenance.recorded, ...), plus
# every choice element ending in DateTime/Instant. Only these are touched by the
# missing-offset repair, so a string element that merely looks like a timestamp (an
# identifier value, say) is never rewritten.
_DATETIME_ELEMENTS: Final = frozenset(
    {
        "start",
        "end",
        "timestamp",
        "lastUpdated",
        "recorded",
        "recordedDate",
        "issued",
        "authoredOn",
        "date",
        "created",
        "birthTime",
    }
)
_NAIVE_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?")
# A plausible element name (for error details): FHIR element names are camelCase ASCII.
# Anything else in a pydantic ``loc`` came from the sender's keys and is not echoed.
_ELEMENT_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}")
_ISSUE_SEVERITIES: Final = frozenset({"fatal", "error", "warning", "information"})
_ISSUE_TYPES: Final = frozenset(
    {
        "invalid", "structure", "required", "value", "invariant", "security", "login",
        "unknown", "expired", "forbidden", "suppressed", "processing", "not-supported",
        "duplicate", "multiple-matches", "not-found", "deleted", "too-long",
        "code-invalid", "extension", "too-costly", "business-rule", "conflict",
        "transient", "lock-error", "no-store", "exception", "timeout", "incomplete",
        "throttled", "informational",
    }
)


def is_resource_type(name: object) -> bool:
    """True when ``name`` is a resource type R4B (hence the hub) knows."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", name):
        return False
    if name in ("Resource", "DomainResource"):  # abstract bases, never sent on the wire
        return False
    try:
        cls = get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return bool(getattr(cls, "has_resource_base", lambda: False)())


def parse_resource(data: dict[str, Any], *, default_tz: str | None = None) -> Resource:
    """Validate a FHIR R4 JSON resource (any type, Bundles included) into an R4B model.

    Reads ``resourceType`` (top level, ``Bundle.entry.resource``, ``*.contained``),
    removes R4-only resources that R4B cannot represent, and, when ``default_tz`` (an
    IANA zone name) is given, adds the zone's offset to dateTime/instant values sent
    without one (see the module docstring). Raises
    ``MappingError(INVALID_RESOURCE)`` whose ``detail`` names the FHIR path (e.g.
    ``Bundle.entry[2].resource.period.start``) and the kind of problem, never a value;
    ``position`` carries the first failing path for OperationOutcome.issue.expression.
    """
    if not isinstance(data, dict):
        raise MappingError(ErrorCode.INVALID_RESOURCE, "a FHIR resource must be a JSON object")
    zone = ZoneInfo(default_tz) if default_tz else None
    try:
        cleaned = _clean(data, zone, top=True)
        resource_type = cleaned["resourceType"]
        cls = get_fhir_model_class(resource_type)
        model = cls.model_validate(cleaned)
    except MappingError:
        raise
    except pydantic.ValidationError as exc:
        raise _validation_error(str(data.get("resourceType")), exc) from None
    except RecursionError:
        raise MappingError(
            ErrorCode.INVALID_RESOURCE, "the resource is nested too deeply to validate"
        ) from None
    except Exception as exc:
        # fhir.resources raises KeyError/TypeError/ValueError from deep inside on odd
        # input; only the exception type is reported (its text may quote the input).
        raise MappingError(
            ErrorCode.INVALID_RESOURCE,
            f"the resource could not be validated ({type(exc).__name__})",
        ) from None
    if not isinstance(model, Resource):  # pragma: no cover - get_fhir_model_class contract
        raise MappingError(ErrorCode.INVALID_RESOURCE, "not a FHIR resource")
    return model


def _clean(node: Any, zone: ZoneInfo | None, *, top: bool = False, path: str = "") -> Any:
    """Copy ``node`` with R4-only resources dropped and offsets repaired (see module doc)."""
    if isinstance(node, dict):
        if top or "resourceType" in node:
            rtype = node.get("resourceType")
            where = path or "resource"
            if not isinstance(rtype, str) or not rtype:
                raise MappingError(
                    ErrorCode.INVALID_RESOURCE, f"{where}: resourceType is missing",
                    position=where,
                )
            if not is_resource_type(rtype):
                raise MappingError(
                    ErrorCode.INVALID_RESOURCE,
                    f"{where}: resourceType is not a FHIR R4 resource type",
                    position=where,
                )
            if top:
                path = rtype
        out: dict[str, Any] = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if isinstance(key, str) else path
            if key in ("entry", "contained") and isinstance(value, list):
                out[key] = [
                    _clean(item, zone, path=f"{sub}[{i}]")
                    for i, item in enumerate(value)
                    if not _is_r4_only(item, key)
                ]
            elif (
                zone is not None
                and isinstance(key, str)
                and isinstance(value, str)
                and (key in _DATETIME_ELEMENTS or key.endswith(("DateTime", "Instant")))
                and _NAIVE_DATETIME.fullmatch(value)
            ):
                out[key] = _with_offset(value, zone)
            else:
                out[key] = _clean(value, zone, path=sub)
        return out
    if isinstance(node, list):
        return [_clean(item, zone, path=f"{path}[{i}]") for i, item in
                enumerate(node)]
    return node


def _is_r4_only(item: Any, key: str) -> bool:
    if not isinstance(item, dict):
        return False
    resource = item.get("resource") if key == "entry" else item
    return isinstance(resource, dict) and resource.get("resourceType") in R4_ONLY_RESOURCE_TYPES


def _with_offset(value: str, zone: ZoneInfo) -> str:
    """``2024-05-01T10:30`` in ``zone`` -> ``2024-05-01T10:30:00-04:00`` (DST-aware)."""
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        return value  # leave it for the validator to reject with a path
    return naive.replace(tzinfo=zone).isoformat()


def _validation_error(resource_type: str, exc: pydantic.ValidationError) -> MappingError:
    """Summarise pydantic errors as ``path: type`` pairs, dropping input values."""
    root = resource_type if is_resource_type(resource_type) else "resource"
    problems: list[str] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        path = _fhir_path(root, err.get("loc", ()))
        problems.append(f"{path}: {err.get('type', 'invalid')}")
    shown = problems[:5]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    detail = "invalid FHIR R4 content: " + "; ".join(shown) + more
    first = shown[0].split(":", 1)[0] if shown else None
    return MappingError(ErrorCode.INVALID_RESOURCE, detail, position=first)


def _fhir_path(root: str, loc: Sequence[int | str]) -> str:
    """``('entry', 2, 'resource', 'gender')`` -> ``Bundle.entry[2].resource.gender``."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _ELEMENT_NAME.fullmatch(part):
            path += f".{part}"
        else:
            path += ".<element>"
    return path


def operation_outcome(
    code: str,
    detail: str,
    *,
    severity: str = "error",
    issue_type: str = "invalid",
    expression: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome (JSON dict) for an HTTP 4xx/5xx answer.

    Sets ``OperationOutcome.issue[0].severity``, ``.code`` (``issue_type``, from the
    FHIR issue-type value set), ``.details.coding`` (``code`` in
    :data:`ERROR_CODE_SYSTEM`, normally an :class:`~schemas.errors.ErrorCode` value),
    ``.details.text`` (``detail``, which must already be PHI-free, as every
    ``MappingError.detail`` is) and optionally ``.expression`` (FHIRPath locations).
    Built and validated with the R4B model. Raises ``ValueError`` for a severity or issue
    type outside the FHIR value sets (a programming error, not bad input).
    """
    if severity not in _ISSUE_SEVERITIES:
        raise ValueError(f"OperationOutcome severity must be one of {sorted(_ISSUE_SEVERITIES)}")
    if issue_type not in _ISSUE_TYPES:
        raise ValueError("OperationOutcome issue type must be a FHIR issue-type code")
    issue: dict[str, Any] = {
        "severity": severity,
        "code": issue_type,
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": detail},
    }
    if expression:
        issue["expression"] = list(expression)
    model = OperationOutcome.model_validate({"resourceType": "OperationOutcome",
                                             "issue": [issue]})
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped
