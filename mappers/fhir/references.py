"""Reference resolution inside one FHIR input (Bundle entries, contained, a resolver).

A FHIR reference may be relative (``Patient/123``), absolute
(``https://ehr.example/fhir/Patient/123``, possibly with ``/_history/2``), a
``urn:uuid:`` fullUrl of a Bundle entry, or local (``#p1``, a contained resource). The
:class:`ResourceIndex` answers all four from what the input carries and, only where the
mapper says a resource is indispensable (a notification focus, an Encounter's subject
Patient), from the caller's resolver.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.errors import ErrorCode, MappingError
from schemas.fhir import DomainResource, Reference, Resource, is_resource_type, parse_resource

Resolver = Callable[[str], dict[str, Any] | None]
"""Fetches a resource by reference (as written in the input); ``None`` when not found."""

# [base/]Type/id[/_history/vid]: the RESTful reference grammar of FHIR R4 (3.1.1.4.4).
_REST_REF = re.compile(
    r"(?:(?P<base>.*?)/)?(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


@dataclass(frozen=True)
class ParsedReference:
    """The parts of a RESTful reference: server base (may be empty), type and id."""

    base: str
    type: str
    id: str


def parse_reference(ref: str) -> ParsedReference | None:
    """Split ``[base/]Type/id[/_history/v]``; ``None`` for ``urn:``, ``#`` or other forms."""
    if ref.startswith(("urn:", "#")):
        return None
    match = _REST_REF.fullmatch(ref)
    if not match or not is_resource_type(match["type"]):
        return None
    return ParsedReference(match["base"] or "", match["type"], match["id"])


def resource_type(resource: Resource) -> str:
    """The resourceType of a model (``Encounter``, ``Patient``...)."""
    return str(resource.get_resource_type())


class ResourceIndex:
    """Resources of one input, found by fullUrl, ``Type/id`` or ``#contained`` id."""

    def __init__(self, resolver: Resolver | None, default_tz: str) -> None:
        self._by_key: dict[str, Resource] = {}
        self._resolver = resolver
        self._default_tz = default_tz
        self.resources: list[Resource] = []
        """Every indexed resource in input order (Bundle entries; resolved ones appended)."""

    @property
    def has_resolver(self) -> bool:
        return self._resolver is not None

    def add(self, resource: Resource, full_url: str | None = None) -> None:
        """Index ``resource`` under its fullUrl and its ``Type/id``."""
        self.resources.append(resource)
        if full_url:
            self._by_key.setdefault(full_url, resource)
            parsed = parse_reference(full_url)
            if parsed:
                self._by_key.setdefault(f"{parsed.type}/{parsed.id}", resource)
        if resource.id:
            self._by_key.setdefault(f"{resource_type(resource)}/{resource.id}", resource)

    def find(self, ref: Reference | None, *, container: Resource | None = None,
             use_resolver: bool = False) -> Resource | None:
        """The resource ``ref`` points at, or ``None``.

        Reads ``Reference.reference`` only (a logical ``Reference.identifier`` is the
        caller's business). ``#id`` looks in ``container.contained``; otherwise the exact
        string, then its ``Type/id`` tail; then, if ``use_resolver``, the resolver.
        """
        if ref is None or not ref.reference:
            return None
        return self.find_str(ref.reference, container=container, use_resolver=use_resolver)

    def find_str(self, ref: str, *, container: Resource | None = None,
                 use_resolver: bool = False) -> Resource | None:
        """As :meth:`find`, for a reference string."""
        if ref.startswith("#"):
            if isinstance(container, DomainResource):
                for contained in container.contained or []:
                    if contained.id == ref[1:]:
                        return contained
            return None
        found = self._by_key.get(ref)
        if found is None:
            parsed = parse_reference(ref)
            if parsed:
                found = self._by_key.get(f"{parsed.type}/{parsed.id}")
        if found is None and use_resolver and self._resolver is not None:
            found = self._resolve(ref)
        return found

    def _resolve(self, ref: str) -> Resource | None:
        parsed = parse_reference(ref)
        what = parsed.type if parsed else "resource"
        try:
            data = self._resolver(ref) if self._resolver else None
        except MappingError:
            raise
        except Exception as exc:
            # The resolver is the caller's code (often I/O); its message may quote ids.
            raise MappingError(
                ErrorCode.UNRESOLVED_REFERENCE,
                f"the resolver failed for a {what} reference ({type(exc).__name__})",
            ) from None
        if data is None:
            return None
        resource = parse_resource(data, default_tz=self._default_tz)
        self._by_key.setdefault(ref, resource)
        self.add(resource)
        return resource
