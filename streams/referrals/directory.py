"""The community-agency directory (pure: no I/O, no clock, no environment).

Agencies and ops write it as YAML (``hub/samples/agencies.yaml`` is the documented
example); it also travels as JSON on the compacted ``config.agencies`` topic, so it changes
without a restart. Field names are a contract with those files and with the agency API:
add optional fields, never rename.

```yaml
version: "2025-01"
agencies:
  - id: springfield-housing          # ^[a-z0-9][a-z0-9-]{0,62}$, not "updates"/"deliveries"
    name: Springfield Housing Partners
    services: [housing]              # coded: housing, food, transportation, home-health, ...
    service_area: {zip: ["01103", "01104"], counties: [Hampden]}
    languages: [en, es]              # empty = any
    accepting: true
    delivery: {webhook: {url: "https://agency.example/referrals",
                         secret_env: SPRINGFIELD_HOUSING_SECRET}}
    contact: {phone: "+1-413-555-0100", email: "intake@agency.example"}
    api: {token_sha256: "<hex sha256 of the agency's bearer token>"}
```

Every agency always gets the Kafka topic ``referrals.<id>``; the webhook is optional. The
webhook secret itself is never in the file, only the name of the environment variable
holding it. API tokens are stored as their SHA-256 (``hub agencies token ID`` makes one).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.topics import RESERVED_AGENCY_IDS, agency_topic

# The roster's loader: YAML 1.2-like scalars (ZIP 01103 and language ``no`` stay strings)
# and duplicate keys refused. Shared on purpose: both files are written by ops by hand.
from streams.configfile import load_yaml, validation_problems

__all__ = [
    "AGENCY_ID",
    "Agency",
    "AgencyApi",
    "AgencyContact",
    "Delivery",
    "Directory",
    "DirectoryError",
    "ServiceArea",
    "Webhook",
    "normalize_county",
    "parse_directory",
    "token_sha256",
]

AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""Agency ids become topic names (``referrals.<id>``) and URL path parts: kept narrow."""
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ZIP = re.compile(r"^\d{5}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class DirectoryError(ValueError):
    """A directory that cannot be used. The message names every problem by its path
    (``agencies[2].service_area.zip[0]``) and never echoes a value other than an id."""

    def __init__(self, problems: str | list[str] | tuple[str, ...]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems))
        count = len(self.problems)
        head = "invalid agency directory" if count == 1 else (
            f"invalid agency directory ({count} problems)")
        super().__init__(f"{head}: " + "; ".join(self.problems))

    def __reduce__(self) -> tuple[type[DirectoryError], tuple[tuple[str, ...]]]:
        return (type(self), (self.problems,))


class _Model(BaseModel):
    # frozen: one directory is shared by every decision of a worker; extra=forbid: a typo
    # in the YAML (``acepting``) is an error, not a silently ignored field; numbers coerced
    # because ZIP codes written without quotes arrive as integers.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


def normalize_county(name: str) -> str:
    """``"Hampden County"``, ``" hampden "`` -> ``"hampden"`` (case, spaces and a trailing
    ``county``/``parish``/``borough`` ignored) so the directory and PID-11.9 can differ
    in spelling."""
    text = " ".join(name.split()).casefold()
    for suffix in (" county", " parish", " borough"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return text


class ServiceArea(_Model):
    """Where the agency serves: a patient matches when their ZIP (first 5 digits of the
    postal code) is listed or their county is listed. Both empty = anywhere."""

    zip: tuple[str, ...] = ()
    counties: tuple[str, ...] = ()

    @field_validator("zip")
    @classmethod
    def _check_zip(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _ZIP.match(item.strip()):
                raise ValueError("ZIP codes are 5 digits (quote them in YAML: \"01103\")")
        return tuple(item.strip() for item in value)

    @field_validator("counties")
    @classmethod
    def _check_counties(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not item.strip() for item in value):
            raise ValueError("county names must not be empty")
        return value

    def is_anywhere(self) -> bool:
        return not self.zip and not self.counties


class Webhook(_Model):
    url: str = Field(min_length=1)
    """Where to POST; the delivery stage enforces the URL policy (HTTPS, no private
    targets in production)."""
    secret_env: str | None = None
    """Name of the environment variable holding the HMAC secret (never the secret)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("secret_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name (letters, digits, _)")
        return value


class Delivery(_Model):
    webhook: Webhook | None = None


class AgencyContact(_Model):
    phone: str | None = None
    email: str | None = None


class AgencyApi(_Model):
    token_sha256: str | None = None
    """Lower-case hex SHA-256 of the agency's bearer token (see :func:`token_sha256`)."""

    @field_validator("token_sha256")
    @classmethod
    def _check_hash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256_HEX.match(value):
            raise ValueError("must be 64 hex digits (the SHA-256 of the token, not the token)")
        return value


class Agency(_Model):
    """One community agency (see the module docstring for the YAML form)."""

    id: str
    name: str = Field(min_length=1)
    services: tuple[str, ...] = Field(min_length=1)
    service_area: ServiceArea = Field(default_factory=ServiceArea)
    languages: tuple[str, ...] = ()
    """Languages served (ISO 639-1/-2 codes or English names); empty means any."""
    accepting: bool = True
    delivery: Delivery = Field(default_factory=Delivery)
    contact: AgencyContact = Field(default_factory=AgencyContact)
    api: AgencyApi = Field(default_factory=AgencyApi)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not AGENCY_ID.match(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9-]{0,62}$ (it names a Kafka topic)")
        if value in RESERVED_AGENCY_IDS:
            raise ValueError("is reserved (it would collide with a fixed referrals.* topic)")
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _lower_services(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [v.strip().lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("services")
    @classmethod
    def _check_services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _SERVICE.match(item):
                raise ValueError("service codes are lower-case words with dashes (home-health)")
        return value

    def offers(self, service: str) -> bool:
        return service in self.services


class Directory(_Model):
    """The agency directory; see :func:`parse_directory` for the YAML form."""

    version: str | None = None
    agencies: tuple[Agency, ...] = ()

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        problems: list[str] = []
        seen: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for i, agency in enumerate(self.agencies):
            if agency.id in seen:
                problems.append(f"agencies[{i}].id: duplicate agency id {agency.id!r} "
                                f"(also agencies[{seen[agency.id]}])")
            else:
                seen[agency.id] = i
            digest = agency.api.token_sha256
            if digest is not None:
                if digest in tokens:
                    # Two agencies sharing a token could read each other's referrals.
                    problems.append(f"agencies[{i}].api.token_sha256: same token as "
                                    f"agencies[{tokens[digest]}]")
                else:
                    tokens[digest] = i
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def by_id(self, agency_id: str) -> Agency | None:
        """The agency with this id, or None."""
        return next((a for a in self.agencies if a.id == agency_id), None)

    def agency_for_token_hash(self, digest_hex: str) -> Agency | None:
        """The agency whose ``api.token_sha256`` equals ``digest_hex`` (constant-time
        comparison against every agency, so timing does not reveal which one matched)."""
        wanted = digest_hex.strip().lower().encode()
        found: Agency | None = None
        for agency in self.agencies:
            stored = agency.api.token_sha256
            if stored is not None and hmac.compare_digest(stored.encode(), wanted):
                found = agency
        return found

    def topics(self) -> tuple[str, ...]:
        """``referrals.<id>`` for every agency, in directory order."""
        return tuple(agency_topic(a.id) for a in self.agencies)

    def to_json(self) -> str:
        """Compact JSON, as carried on the config topic; :meth:`from_json` reads it back."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Directory:
        """Read :meth:`to_json` output; raises :class:`DirectoryError` when invalid."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise DirectoryError(_problems(exc)) from None


def token_sha256(token: str) -> str:
    """The hex SHA-256 stored in ``api.token_sha256`` for a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _problems(exc: ValidationError) -> list[str]:
    return validation_problems(exc, "directory")


def parse_directory(text: str) -> Directory:
    """Read a directory YAML text into a :class:`Directory`.

    Raises :class:`DirectoryError` for text that is not YAML (line and column, not the
    text), is not a mapping with ``agencies``, or fails validation (unique ids and tokens,
    id syntax, 5-digit ZIPs, http(s) webhook URLs, no unknown fields); the message names
    each problem's path.
    """
    data, problem = load_yaml(text, "directory")
    if problem is not None:
        raise DirectoryError([problem])
    if data is None:
        raise DirectoryError(["directory: the document is empty"])
    if not isinstance(data, dict):
        raise DirectoryError(["directory: expected a mapping with 'agencies'"])
    try:
        return Directory.model_validate(data)
    except ValidationError as exc:
        raise DirectoryError(_problems(exc)) from None
