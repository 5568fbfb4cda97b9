"""The agency API, the case managers' referral view and the consent endpoint (HTTP).

Agency endpoints (``Authorization: Bearer <agency token>``; the directory stores only
``api.token_sha256``, compared in constant time):

* ``GET /agency/referrals[?status=S]`` -> ``{"referrals": [AgencyReferral, ...]}``: the
  calling agency's referrals only (their minimum-necessary copies, latest version each),
  oldest first; an unknown ``status`` is a 400.
* ``GET /agency/referrals/{id}`` -> one AgencyReferral; 404 when it does not exist *or*
  belongs to another agency (the same answer, so ids cannot be probed).
* ``POST /agency/referrals/{id}/status`` with ``{"status": "accepted|rejected|in-progress|
  completed|cancelled", "reason": "<code>"}`` (``rejected`` needs a reason; a reason is a
  code ``^[a-z0-9_.-]{1,64}$``, never free text) -> a ReferralUpdate on referrals.updates,
  keyed by the patient key (which the agency never sees), written with acks=all and a
  bounded wait -> 202 ``{"id": <update id>, "status": ...}``; 409 for a transition the
  current status does not allow; 200 ``{"unchanged": true}`` when it already has that
  status; 503 with Retry-After when Kafka did not take the update.

Staff endpoints (``Authorization: Bearer <staff token>``, its SHA-256 in
``HUB_STAFF_API_TOKEN_SHA256``):

* ``GET /care/referrals[?status=S&manager=M&agency=A]`` -> ``{"referrals": [...]}``: the
  hub's view (id, referral id, agency, need, status, attempt, manager, requested /
  accepted / completed times, time to accept / complete) with no patient data.
* ``POST /consent`` with ``{"patient": {"assigning_authority": "...", "mrn": "..."},
  "referrals": "opt-out"|"opt-in", "source": "<code>"}`` or a FHIR R4 ``Consent``
  (``patient.identifier``; ``provision.type`` deny = opt-out, permit = opt-in) -> a
  ConsentRecord on config.consent keyed by the patient key -> 202.

Every error is a FHIR OperationOutcome; 401s carry ``WWW-Authenticate: Bearer``. Nothing
here logs a token, a patient key or a body: logs carry agency ids, referral task ids
(referral-scoped, not PHI) and codes.

Token guessing (:class:`AuthThrottle`): a client address that presented
``HUB_API_AUTH_FAILURES_MAX`` bad bearer tokens (agency or staff) within
``HUB_API_AUTH_WINDOW_S`` is answered 429 (OperationOutcome ``throttled``, with
Retry-After) on every endpoint here, before its token is even looked at, until the
oldest failure leaves the window. Refused requests do not count, so a client that
stops is let in again on time. The address is the connection's peer: behind a reverse
proxy every client shares the proxy's, so limit there too (or front the hub with one
that rate-limits per client).

The view is :class:`ReferralView`: it tails care.referrals into memory (task id -> latest
ReferralOutput, the higher ``version`` wins) and config.agencies for the directory. A
status just posted is remembered until the republished referral arrives, so a quick
second POST (accepted, then completed) is checked against the status the agency set,
not the one the view still shows. A referral in a terminal status is forgotten once its
last record is ``HUB_API_VIEW_RETAIN_DAYS`` older than the newest record the view has
seen (:class:`hub.api_common.Retention`); an open one is kept however old.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, get_args
from urllib.parse import unquote

from aiohttp import web

from hub.agencies import load_directory_file
from hub.api_common import (
    CODE,
    AuthThrottle,
    Retention,
    TokenApi,
    TopicView,
    bad,
    bearer,
    conflict,
    not_found,
    read_json_body,
    run_view_with,
    unauthorized,
    unavailable,
    view_retention,
)
from hub.ingest.deadletter import Sender
from hub.kafka import Record
from hub.logging import get_logger
from hub.settings import Settings
from mappers.fhir_out import AUTHORITY_URN_PREFIX
from schemas.canonical import derive_id, patient_key
from schemas.referrals import (
    TERMINAL_STATUSES,
    AgencyReferral,
    AgencyStatus,
    ConsentRecord,
    ReferralOutput,
    ReferralStatus,
    ReferralUpdate,
)
from schemas.topics import CARE_REFERRALS, CONFIG_AGENCIES, CONFIG_CONSENT, REFERRALS_UPDATES
from streams.referrals.directory import Agency, Directory, DirectoryError, token_sha256
from streams.referrals.engine import TRANSITIONS

__all__ = ["AGENCY_API_KEY", "AgencyApi", "AuthThrottle", "DirectorySource", "ReferralView",
           "add_agency_routes"]

log = get_logger("hub.agency_api")

REFERRAL_STATUSES: frozenset[str] = frozenset(get_args(ReferralStatus))
AGENCY_STATUSES: frozenset[str] = frozenset(get_args(AgencyStatus))
REASON = re.compile(r"^[a-z0-9_.-]{1,64}$")



class DirectorySource(Protocol):
    """The current agency directory (None until one is known)."""

    def latest(self) -> Directory | None: ...


# ------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class _Pending:
    status: str
    based_on_version: int


class ReferralView(TopicView):
    """care.referrals (the latest version of each) and config.agencies in memory, for
    the API; also a DirectorySource. Its pure parts are ``apply`` and ``apply_directory``."""

    event_prefix = "referral_view"

    def __init__(self, settings: Settings | None = None, *,
                 directory_file: Path | None = None, poll_s: float = 0.5,
                 retain: timedelta | None = None) -> None:
        super().__init__(settings, poll_s=poll_s, log=log)
        self._by_id: dict[str, ReferralOutput] = {}
        self._pending: dict[str, _Pending] = {}
        self.retention: Retention[str] = Retention(retain or view_retention(settings))
        self.forgotten = 0
        self._directory: Directory | None = None
        self._directory_raw: bytes | None = None
        if directory_file is not None:
            try:
                self._directory = load_directory_file(directory_file)
            except (OSError, DirectoryError) as exc:
                log.error("agency_directory_file_rejected", exc_type=type(exc).__name__)

    # --- pure parts

    def apply(self, out: ReferralOutput) -> bool:
        """Keep ``out`` when newer than what is held; True if it was kept."""
        self.retention.saw(out.decided_at)
        held = self._by_id.get(out.id)
        if held is not None and held.version >= out.version:
            self._forget_due()
            return False
        self._by_id[out.id] = out
        pending = self._pending.get(out.id)
        if pending is not None and out.version > pending.based_on_version:
            del self._pending[out.id]
        if out.status in TERMINAL_STATUSES:
            self.retention.closed(out.decided_at, out.id)
        self._forget_due()
        return True

    def _visible(self, out: ReferralOutput) -> bool:
        # Also checked on reads, so what the API answers does not depend on when the
        # last sweep ran.
        return out.status not in TERMINAL_STATUSES or not self.retention.expired(out.decided_at)

    def mark_ready(self) -> None:
        super().mark_ready()
        # Caught up on every topic: forgetting may start (Retention says why not before).
        self.retention.arm()
        self._forget_due()

    def _forget_due(self) -> None:
        for _, task_id in self.retention.due():
            held = self._by_id.get(task_id)
            if held is not None and not self._visible(held):
                del self._by_id[task_id]
                self._pending.pop(task_id, None)
                self.forgotten += 1

    def apply_directory(self, raw: bytes) -> None:
        if raw == self._directory_raw:
            return
        self._directory_raw = raw
        try:
            self._directory = Directory.from_json(raw)
        except DirectoryError as exc:
            log.error("agency_directory_rejected", problems=len(exc.problems))
            return
        log.info("agency_directory_applied", agencies=len(self._directory.agencies))

    def latest(self) -> Directory | None:
        return self._directory

    def set_directory(self, directory: Directory) -> None:
        self._directory = directory

    def get(self, task_id: str) -> ReferralOutput | None:
        out = self._by_id.get(task_id)
        return out if out is not None and self._visible(out) else None

    def all(self) -> Iterable[ReferralOutput]:
        return (r for r in self._by_id.values() if self._visible(r))

    def for_agency(self, agency_id: str) -> list[ReferralOutput]:
        return sorted((r for r in self.all() if r.agency_id == agency_id),
                      key=lambda r: (r.requested_at, r.id))

    def effective_status(self, task_id: str) -> str | None:
        """The status an update is checked against: one just posted, else the view's."""
        pending = self._pending.get(task_id)
        if pending is not None:
            return pending.status
        out = self.get(task_id)
        return out.status if out is not None else None

    def posted(self, task_id: str, status: str) -> None:
        out = self._by_id.get(task_id)
        self._pending[task_id] = _Pending(status, out.version if out else 0)

    # --- tailing

    def _topics(self) -> Sequence[tuple[str, float, Callable[[Record], object]]]:
        # The directory first: a referral's agency is then known by the time it is read.
        return [(CONFIG_AGENCIES.name, 0.05, self._directory_record),
                (CARE_REFERRALS.name, self.poll_s, self._referral_record)]

    def _directory_record(self, rec: Record) -> None:
        self.apply_directory(rec.value or b"")

    def _referral_record(self, rec: Record) -> None:
        self.apply(ReferralOutput.model_validate_json(rec.value or b""))

    def _ready_fields(self) -> dict[str, Any]:
        return {"referrals": len(self._by_id)}

    def figures(self) -> dict[str, Any]:
        """For /metrics (a :class:`hub.metrics.FiguresProvider`)."""
        return {"api_views": {"referrals": {"held": len(self._by_id),
                                            "forgotten": self.forgotten}}}


# ------------------------------------------------------------------------------- api


def _agency_copy(out: ReferralOutput) -> dict[str, Any]:
    # The hub record's status is the one that moved; the copy inside it is what the agency
    # may see. Only status fields are taken over (both are codes). The version stays the
    # copy's own (the one its webhook and topic record carry), not the hub record's.
    copy: AgencyReferral = out.agency_copy.model_copy(update={
        "status": out.status, "status_reason": out.status_reason})
    return copy.model_dump(mode="json", exclude_none=True)


def _staff_row(out: ReferralOutput) -> dict[str, Any]:
    row = {
        "id": out.id, "referral_id": out.referral_id, "agency": out.agency_id,
        "need": out.need, "status": out.status, "status_reason": out.status_reason,
        "attempt": out.attempt, "manager": out.manager_id, "version": out.version,
        "requested_at": out.requested_at.isoformat(),
        "accepted_at": out.accepted_at.isoformat() if out.accepted_at else None,
        "completed_at": out.completed_at.isoformat() if out.completed_at else None,
        "time_to_accept_s": out.time_to_accept_s,
        "time_to_complete_s": out.time_to_complete_s,
        "facility": out.facility,
    }
    outcome = getattr(out, "outcome", None)
    if outcome is not None:
        row["outcome"] = outcome
    return row


def _status_query(request: web.Request) -> tuple[str | None, web.Response | None]:
    status = request.query.get("status")
    if status is not None and status not in REFERRAL_STATUSES:
        return None, bad(f"Unknown status; use one of {', '.join(sorted(REFERRAL_STATUSES))}.",
                         "invalid_status")
    return status, None


class AgencyApi(TokenApi[ReferralView]):
    """The routes' state: settings, the durable producer, the view and the directory."""

    not_ready_detail = "The referral view is still loading."

    def __init__(self, settings: Settings, producer: Sender, view: ReferralView, *,
                 directory: DirectorySource | None = None,
                 clock: Callable[[], datetime] | None = None,
                 throttle: AuthThrottle | None = None) -> None:
        super().__init__(settings, producer, view, clock=clock, throttle=throttle, log=log)
        self.directory = directory or view

    # --- auth

    def _agency(self, request: web.Request) -> Agency | web.Response:
        if (throttled := self.gate.throttled(request)) is not None:
            return throttled
        token = bearer(request)
        if token is None:
            return unauthorized("agency", None)
        directory = self.directory.latest()
        if directory is None:
            return unavailable("The agency directory is not loaded yet.")
        agency = directory.agency_for_token_hash(token_sha256(token))
        if agency is None:
            log.info("agency_token_refused", path=request.path)
            return self.gate.refused(request, "agency")
        return agency

    # --- agency endpoints

    async def list_referrals(self, request: web.Request) -> web.Response:
        agency = self._agency(request)
        if isinstance(agency, web.Response):
            return agency
        status, err = _status_query(request)
        if err is not None or (err := self._not_ready()) is not None:
            return err
        rows = [_agency_copy(r) for r in self.view.for_agency(agency.id)
                if status is None or r.status == status]
        log.info("agency_referrals_listed", agency_id=agency.id, count=len(rows))
        return web.json_response({"referrals": rows})

    async def get_referral(self, request: web.Request) -> web.Response:
        agency = self._agency(request)
        if isinstance(agency, web.Response):
            return agency
        if (err := self._not_ready()) is not None:
            return err
        out = self.view.get(request.match_info["id"])
        if out is None or out.agency_id != agency.id:
            return not_found("No such referral.")
        return web.json_response(_agency_copy(out))

    async def post_status(self, request: web.Request) -> web.Response:
        agency = self._agency(request)
        if isinstance(agency, web.Response):
            return agency
        task_id = request.match_info["id"]
        if (err := self._not_ready()) is not None:
            return err
        out = self.view.get(task_id)
        if out is None or out.agency_id != agency.id:
            return not_found("No such referral.")
        body, err = await read_json_body(request)
        if err is not None:
            return err
        if not isinstance(body, dict) or set(body) - {"status", "reason"}:
            return bad('The body must be {"status": ..., "reason": ...} and nothing else.')
        status, reason = body.get("status"), body.get("reason")
        if status not in AGENCY_STATUSES:
            return bad(f"status must be one of {', '.join(sorted(AGENCY_STATUSES))}.",
                       "invalid_status")
        if reason is not None and (not isinstance(reason, str) or not REASON.match(reason)):
            return bad("reason must be a code matching ^[a-z0-9_.-]{1,64}$ (no free text).",
                       "invalid_reason")
        if status == "rejected" and reason is None:
            return bad("A rejection needs a reason code (e.g. no_capacity).", "missing_reason")
        current = self.view.effective_status(task_id) or out.status
        if status == current:
            return web.json_response({"id": None, "status": status, "unchanged": True})
        if status not in TRANSITIONS.get(current, frozenset()):
            return conflict("invalid_transition",
                            f"A referral in status {current} cannot become {status}.")
        # Derived from what the agency saw and asked: a retried POST (lost answer) makes
        # the same update id, which the referral engine applies once.
        update_id = derive_id("referral-update", task_id, status, reason, out.version)
        update = ReferralUpdate(id=update_id, referral_task_id=task_id, agency_id=agency.id,
                                patient_key=out.patient_key, status=status, reason=reason,
                                at=self.clock())
        if not await self._store(REFERRALS_UPDATES.name, update, out.patient_key):
            log.warning("referral_update_not_stored", agency_id=agency.id,
                        referral_task_id=task_id, status=status)
            return unavailable("The update could not be stored; send it again.")
        self.view.posted(task_id, status)
        log.info("referral_update_accepted", agency_id=agency.id, referral_task_id=task_id,
                 status=status, reason=reason, update_id=update_id)
        return web.json_response({"id": update_id, "status": status}, status=202)

    # --- staff endpoints

    async def staff_referrals(self, request: web.Request) -> web.Response:
        if (denied := self._staff(request)) is not None:
            return denied
        status, err = _status_query(request)
        if err is not None or (err := self._not_ready()) is not None:
            return err
        manager, agency = request.query.get("manager"), request.query.get("agency")
        rows = [_staff_row(r) for r in sorted(self.view.all(),
                                              key=lambda r: (r.requested_at, r.id))
                if (status is None or r.status == status)
                and (manager is None or r.manager_id == manager)
                and (agency is None or r.agency_id == agency)]
        return web.json_response({"referrals": rows})

    async def post_consent(self, request: web.Request) -> web.Response:
        if (denied := self._staff(request)) is not None:
            return denied
        body, err = await read_json_body(request)
        if err is not None:
            return err
        parsed = _consent(body)
        if isinstance(parsed, str):
            return bad(parsed, "invalid_consent")
        key, choice, source = parsed
        record = ConsentRecord(patient_key=key, referrals=choice, at=self.clock(),
                               source=source)
        if not await self._store(CONFIG_CONSENT.name, record, key):
            log.warning("consent_not_stored", referrals=choice)
            return unavailable("The consent could not be stored; send it again.")
        log.info("consent_recorded", referrals=choice, source=source)
        return web.json_response({"referrals": choice, "at": record.at.isoformat()},
                                 status=202)


ConsentChoice = Literal["opt-out", "opt-in"]


def _consent(body: Any) -> tuple[str, ConsentChoice, str | None] | str:
    """``(patient key, "opt-out"|"opt-in", source)`` or a PHI-free error message."""
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    if body.get("resourceType") == "Consent":
        return _fhir_consent(body)
    if set(body) - {"patient", "referrals", "source"}:
        return 'Allowed fields: "patient", "referrals", "source".'
    patient = body.get("patient")
    if not isinstance(patient, dict) or set(patient) - {"assigning_authority", "mrn"}:
        return '"patient" must be {"assigning_authority": ..., "mrn": ...}.'
    authority, mrn = patient.get("assigning_authority"), patient.get("mrn")
    if not _id_ok(authority) or not _id_ok(mrn):
        return "patient.assigning_authority and patient.mrn must be non-empty strings."
    raw_choice = body.get("referrals")
    if raw_choice not in ("opt-out", "opt-in"):
        return '"referrals" must be "opt-out" or "opt-in".'
    choice: ConsentChoice = "opt-out" if raw_choice == "opt-out" else "opt-in"
    source = body.get("source")
    if source is not None and (not isinstance(source, str) or not CODE.match(source)):
        return '"source" must be a code (letters, digits, _.:-), not a name.'
    return patient_key(str(authority), str(mrn)), choice, source


def _fhir_consent(res: dict[str, Any]) -> tuple[str, ConsentChoice, str | None] | str:
    # Consent.patient.identifier names the patient (system = assigning authority, as the
    # FHIR ingest reads it); Consent.provision.type deny = opt-out, permit = opt-in;
    # a Consent with status inactive/rejected/entered-in-error lifts an opt-out.
    ref = res.get("patient")
    ident = ref.get("identifier") if isinstance(ref, dict) else None
    if not isinstance(ident, dict):
        return "Consent.patient.identifier (system and value) is required."
    if not _id_ok(ident.get("system")) or not _id_ok(ident.get("value")):
        return "Consent.patient.identifier needs a system and a value."
    system, value = str(ident["system"]), str(ident["value"])
    if system.startswith(AUTHORITY_URN_PREFIX) and len(system) > len(AUTHORITY_URN_PREFIX):
        system = unquote(system[len(AUTHORITY_URN_PREFIX):])
    provision = res.get("provision")
    kind = provision.get("type") if isinstance(provision, dict) else None
    status = res.get("status")
    choice: ConsentChoice
    if status in ("inactive", "rejected", "entered-in-error"):
        choice = "opt-in"
    elif status in ("active", None) and kind in ("deny", "permit"):
        choice = "opt-out" if kind == "deny" else "opt-in"
    else:
        return "Consent needs status active with provision.type deny or permit."
    return patient_key(system, value), choice, "fhir-consent"


def _id_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value.strip()) <= 200 and "|" not in value


# ------------------------------------------------------------------------- wiring

AGENCY_API_KEY = web.AppKey("agency_api", AgencyApi)


def add_agency_routes(app: web.Application, api: AgencyApi, *, manage_view: bool = True
                      ) -> None:
    """Mount the endpoints; with ``manage_view`` the view starts and stops with ``app``."""
    app[AGENCY_API_KEY] = api
    app.router.add_get("/agency/referrals", api.list_referrals)
    app.router.add_get("/agency/referrals/{id}", api.get_referral)
    app.router.add_post("/agency/referrals/{id}/status", api.post_status)
    app.router.add_get("/care/referrals", api.staff_referrals)
    app.router.add_post("/consent", api.post_consent)
    if manage_view:
        run_view_with(app, api.view)


def default_agency_api(settings: Settings, producer: Sender) -> AgencyApi:
    """The API as ``hub run`` / ``hub ingest`` serve it: the view tails the broker (when
    one is configured) and starts from the directory file (``HUB_AGENCIES_FILE``, else the
    sample the worker also starts from) until a directory is pushed to config.agencies."""
    from hub.commands.decide_cmd import DEFAULT_AGENCIES

    file = settings.agencies_file or (DEFAULT_AGENCIES if DEFAULT_AGENCIES.exists() else None)
    view = ReferralView(settings if settings.kafka_bootstrap else None,
                        directory_file=Path(file) if file else None)
    return AgencyApi(settings, producer, view)

