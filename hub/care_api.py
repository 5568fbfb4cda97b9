"""The staff task API (HTTP): follow-up task status for care-management systems without
Kafka, and the open-work list.

Both endpoints take the staff token (``Authorization: Bearer <staff token>``, its SHA-256
in ``HUB_STAFF_API_TOKEN_SHA256``) and share the agency API's token-guessing throttle
(:class:`hub.agency_api.AuthThrottle`: one budget of failures per client address, whichever
endpoint it guesses at).

* ``POST /care/tasks/{task_id}/status`` with ``{"status": "completed|attempted|cancelled|
  in-progress|failed|on-hold", "reason": "<code>"}`` (the reason is optional and a code
  ``^[A-Za-z0-9_.:-]{1,64}$``, never free text) -> a :class:`schemas.care.TaskUpdate` on
  care.task-updates, keyed by the task's patient key (which the caller never sees),
  written with acks=all and a bounded wait -> 202 ``{"id": <update id>, "task_id": ...,
  "status": ...}``. The episodes stage applies it: the task is republished on care.tasks
  with the new status, and an episode whose tasks are all done closes (its caseload is
  released).

  The update id is deterministic, so a retried POST (a lost answer) is applied once: it
  is derived from the task id, status and reason plus the ``Idempotency-Key`` header
  when the client sends one (printable ASCII, up to 255 characters), else plus the
  current minute (UTC). Two genuine "attempted" contacts within one minute therefore
  need two keys.

  404 for a task the hub does not know; 409 for a change to a task that is already
  closed (completed, cancelled, failed: the episodes stage keeps closed tasks closed);
  200 ``{"unchanged": true}`` for the same closed status again; 413/415 for a body that is
  too big or not JSON, 400 for unreadable JSON or a bad header, 422 for a body that does
  not say a valid status and reason code; 503 with Retry-After while the task view is
  still loading or when Kafka did not take the update.

* ``GET /care/tasks[?status=S&owner=O&team=T&overdue=true|false&limit=N]`` ->
  ``{"tasks": [{"task_id", "kind", "status", "owner", "team", "due", "overdue"}, ...],
  "total": <matching rows>}``: soonest due first, no patient data. ``status`` is a task
  status or ``open`` (requested, in-progress, on-hold); ``owner`` is a manager id or
  ``team:<team id>`` (a team queue); ``team`` is the episode's case-management team;
  ``overdue`` means open and past its due time.

Every error is a FHIR OperationOutcome; 401s carry ``WWW-Authenticate: Bearer``. Logs
carry task ids (hub-made, not PHI), statuses and update ids; never a token, a patient
key, a reason (a client-chosen code: it could be anything code-shaped) or a body.

The view is :class:`TaskView`: it tails care.tasks into memory (latest record per task
id, only the fields above plus the patient key the updates are keyed by) and
care.assignments for each episode's team.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from hub.agency_api import MAX_BODY, AuthThrottle
from hub.ingest.core import FHIR_CONTENT_TYPE, _operation_outcome
from hub.ingest.deadletter import Sender
from hub.kafka import DurableWriteError, HubKafkaError, TopicTail
from hub.logging import get_logger
from hub.settings import Settings
from schemas.canonical import derive_id
from schemas.care import TaskKind, TaskStatus, TaskUpdate
from schemas.topics import CARE_ASSIGNMENTS, CARE_TASK_UPDATES, CARE_TASKS

__all__ = ["CARE_API_KEY", "CareApi", "TaskRow", "TaskView", "add_care_routes",
           "default_care_api"]

log = get_logger("hub.care_api")

TASK_STATUSES: frozenset[str] = frozenset(get_args(TaskStatus))
UPDATE_STATUSES: frozenset[str] = frozenset(
    get_args(TaskUpdate.model_fields["status"].annotation))
OPEN_STATUSES: frozenset[str] = frozenset({"requested", "in-progress", "on-hold"})
"""As the episodes stage counts them (streams.care.state.OPEN_TASK_STATUSES)."""
CLOSED_STATUSES: frozenset[str] = TASK_STATUSES - OPEN_STATUSES
REASON = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""The same shape as the consent endpoint's ``source``: a code, never a sentence."""
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
DEFAULT_LIMIT, MAX_LIMIT = 500, 5000
PENDING_TTL_S = 120.0
"""How long a closing status just posted counts before the view shows it (past that the
episodes stage evidently did not apply it, and the view's status is the truth again)."""


# ------------------------------------------------------------------------- the view


class _TaskRecord(BaseModel):
    # Only what the view keeps; the rest of the record (FHIR Task, description) is
    # skipped by the parser, not held.
    model_config = ConfigDict(extra="ignore")
    type: str
    task_id: str
    patient_key: str
    status: TaskStatus
    kind: TaskKind
    owner: str | None = None
    due: AwareDatetime
    decided_at: AwareDatetime
    encounter_key: str | None = None


class _AssignmentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    encounter_key: str | None = None
    team: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """The latest known state of one task (what the API needs, nothing else)."""

    task_id: str
    patient_key: str
    """Only to key the updates; never answered."""
    status: str
    kind: str
    owner: str | None
    due: datetime
    episode: str | None
    """The encounter key, only to find the episode's team."""
    decided_at: datetime
    partition: int


@dataclass(frozen=True, slots=True)
class _Pending:
    status: str
    at: float


class TaskView:
    """care.tasks (and the teams from care.assignments) in memory, for the staff API.

    ``apply`` / ``apply_assignment`` are the pure parts (tests drive them directly); the
    tail task feeds them from Kafka. ``ready`` turns true once both topics were read up
    to their end once.
    """

    def __init__(self, settings: Settings | None = None, *, poll_s: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.monotonic = monotonic
        self._by_id: dict[str, TaskRow] = {}
        self._teams: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self.rejected = 0

    # --- pure parts

    def apply(self, row: TaskRow) -> bool:
        """Keep ``row`` when it is the task's latest; True if it was kept.

        One patient's records share a partition, so there the later offset wins. A merge
        republishes open tasks under the surviving key (another partition): across
        partitions the later decision wins.
        """
        held = self._by_id.get(row.task_id)
        if held is not None and held.partition != row.partition \
                and row.decided_at < held.decided_at:
            return False
        self._by_id[row.task_id] = row
        pending = self._pending.get(row.task_id)
        if pending is not None and row.status in CLOSED_STATUSES:
            del self._pending[row.task_id]
        return True

    def apply_record(self, value: bytes, partition: int) -> bool:
        """Parse one care.tasks record and apply it; raises ValidationError."""
        rec = _TaskRecord.model_validate_json(value)
        if rec.type != "task":
            return False
        return self.apply(TaskRow(task_id=rec.task_id, patient_key=rec.patient_key,
                                  status=rec.status, kind=rec.kind, owner=rec.owner,
                                  due=rec.due, episode=rec.encounter_key,
                                  decided_at=rec.decided_at, partition=partition))

    def apply_assignment(self, encounter_key: str | None, team: str | None) -> None:
        if encounter_key and team:
            self._teams[encounter_key] = team

    @property
    def ready(self) -> bool:
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def get(self, task_id: str) -> TaskRow | None:
        return self._by_id.get(task_id)

    def all(self) -> Iterable[TaskRow]:
        return self._by_id.values()

    def team_of(self, row: TaskRow) -> str | None:
        if row.owner is not None and row.owner.startswith("team:"):
            return row.owner.removeprefix("team:")
        return self._teams.get(row.episode) if row.episode else None

    def effective_status(self, task_id: str) -> str | None:
        """The status a new update is checked against: a closing one just posted (for a
        while), else the view's."""
        pending = self._pending.get(task_id)
        if pending is not None:
            if self.monotonic() - pending.at < PENDING_TTL_S:
                return pending.status
            del self._pending[task_id]
        row = self._by_id.get(task_id)
        return row.status if row is not None else None

    def posted(self, task_id: str, status: str) -> None:
        # "attempted" may or may not close a contact (two attempts do): only statuses
        # that certainly close it are remembered.
        if status in CLOSED_STATUSES:
            self._pending[task_id] = _Pending(status, self.monotonic())

    # --- tailing

    async def start(self) -> None:
        if self._task is None and self.settings is not None:
            self._task = asyncio.create_task(self._run(), name="task-view")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a broker that vanished must not hold an app's shutdown.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(task, 15.0)

    async def _run(self) -> None:
        assert self.settings is not None
        tasks = TopicTail(self.settings, CARE_TASKS.name)
        assignments = TopicTail(self.settings, CARE_ASSIGNMENTS.name)
        try:
            while True:
                try:
                    await self._poll_once(tasks, assignments)
                except HubKafkaError as exc:
                    log.warning("task_view_read_failed", exc_type=type(exc).__name__)
                    await tasks.stop()
                    await assignments.stop()
                    await asyncio.sleep(2.0)
                except Exception as exc:  # the view must keep running whatever arrives
                    log.error("task_view_failed", exc_type=type(exc).__name__)
                    await asyncio.sleep(2.0)
        finally:
            await tasks.stop()
            await assignments.stop()

    async def _poll_once(self, tasks: TopicTail, assignments: TopicTail) -> None:
        # Assignments first: a task's team is then known by the time the task is listed.
        for rec in await assignments.poll(timeout=0.05):
            if not rec.value:
                continue
            try:
                a = _AssignmentRecord.model_validate_json(rec.value)
            except ValidationError:
                self.rejected += 1
                log.warning("task_view_record_rejected", topic=rec.topic,
                            partition=rec.partition, offset=rec.offset)
                continue
            self.apply_assignment(a.encounter_key, a.team)
        for rec in await tasks.poll(timeout=self.poll_s):
            if not rec.value:
                continue
            try:
                self.apply_record(rec.value, rec.partition)
            except ValidationError:
                self.rejected += 1
                log.warning("task_view_record_rejected", topic=rec.topic,
                            partition=rec.partition, offset=rec.offset)
        if not self._ready and await tasks.caught_up() and await assignments.caught_up():
            self._ready = True
            log.info("task_view_ready", count=len(self._by_id))


# ---------------------------------------------------------------------------- errors
# The same answers as hub.agency_api's (kept in step by the tests of both modules).


def _outcome(status: int, code: str, detail: str, issue_type: str,
             headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(_operation_outcome(code, detail, issue_type=issue_type),
                             status=status, headers=headers, content_type=FHIR_CONTENT_TYPE)


def _unauthorized(error: str | None) -> web.Response:
    challenge = 'Bearer realm="staff"' + (f', error="{error}"' if error else "")
    return _outcome(401, "unauthorized", "A valid bearer token is required.", "login",
                    {"WWW-Authenticate": challenge})


def _unavailable(detail: str) -> web.Response:
    return _outcome(503, "unavailable", detail, "transient", {"Retry-After": "5"})


def _bad(detail: str, code: str, status: int = 400) -> web.Response:
    return _outcome(status, code, detail, "invalid")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    if request.content_type not in ("application/json", "application/fhir+json"):
        return None, _outcome(415, "unsupported_media_type",
                              "Content-Type must be application/json.", "not-supported")
    too_big = _outcome(413, "request_too_large", f"The body exceeds {MAX_BODY} bytes.",
                       "too-costly")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None, too_big
    try:
        raw = await request.content.read(MAX_BODY + 1)
    except Exception:
        return None, _bad("The body could not be read.", "invalid_request")
    if len(raw) > MAX_BODY:
        return None, too_big
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return None, _bad("The body is not valid JSON.", "invalid_json")


def _status_body(body: Any) -> tuple[str, str | None] | web.Response:
    """``(status, reason)`` from a parsed body, or the error answer (nothing echoed)."""
    if not isinstance(body, dict):
        return _bad('The body must be a JSON object {"status": ..., "reason": ...}.',
                    "invalid_request")
    if set(body) - {"status", "reason"}:
        return _bad('Allowed fields: "status" and "reason".', "unknown_field", 422)
    status, reason = body.get("status"), body.get("reason")
    if not isinstance(status, str) or status not in UPDATE_STATUSES:
        return _bad(f"status must be one of {', '.join(sorted(UPDATE_STATUSES))}.",
                    "invalid_status", 422)
    if reason is not None and (not isinstance(reason, str) or not REASON.match(reason)):
        return _bad("reason must be a code matching ^[A-Za-z0-9_.:-]{1,64}$ (no free text).",
                    "invalid_reason", 422)
    return status, reason


def update_id(task_id: str, status: str, reason: str | None, idempotency_key: str | None,
              at: datetime) -> str:
    """The TaskUpdate id: the same request again gives the same id (the episodes stage
    applies an id once). With an ``Idempotency-Key`` the client says what "the same" is;
    without one, the same body within the same UTC minute is."""
    if idempotency_key is not None:
        return derive_id("task-update", task_id, status, reason, "key", idempotency_key)
    minute = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    return derive_id("task-update", task_id, status, reason, "minute", minute)


# ------------------------------------------------------------------------------- api


class CareApi:
    """The routes' state: settings, the durable producer, the task view, the throttle."""

    def __init__(self, settings: Settings, producer: Sender, view: TaskView, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 throttle: AuthThrottle | None = None) -> None:
        self.settings = settings
        self.producer = producer
        self.view = view
        self.clock = clock
        self.throttle = throttle or AuthThrottle(settings.api_auth_failures_max,
                                                 settings.api_auth_window_s)

    def _staff(self, request: web.Request) -> web.Response | None:
        client = _client(request)
        wait = self.throttle.retry_after(client)
        if wait is not None:
            self.throttle.refused += 1
            return _outcome(429, "too_many_failed_authentications",
                            "Too many requests with an invalid bearer token from this "
                            "address; retry after the time in Retry-After.", "throttled",
                            {"Retry-After": str(wait)})
        token = _bearer(request)
        if token is None:
            return _unauthorized(None)
        want = self.settings.staff_api_token_sha256
        # Compared even when unset, so an unconfigured hub takes as long to say no.
        if not hmac.compare_digest(_sha256(token).encode(), (want or "-" * 64).encode()) \
                or want is None:
            log.info("staff_token_refused", path=request.path)
            if self.throttle.failed(client):
                log.warning("api_auth_throttled", realm="staff", path=request.path,
                            failures=self.throttle.max_failures,
                            window_s=self.throttle.window_s)
            return _unauthorized("invalid_token")
        return None

    def _not_ready(self) -> web.Response | None:
        if not self.view.ready:
            return _unavailable("The task view is still loading.")
        return None

    async def list_tasks(self, request: web.Request) -> web.Response:
        if (denied := self._staff(request)) is not None:
            return denied
        q = request.query
        status = q.get("status")
        if status is not None and status not in TASK_STATUSES | {"open"}:
            return _bad(f"Unknown status; use open or one of "
                        f"{', '.join(sorted(TASK_STATUSES))}.", "invalid_status")
        overdue_raw = q.get("overdue")
        if overdue_raw is not None and overdue_raw not in ("true", "false"):
            return _bad("overdue must be true or false.", "invalid_overdue")
        overdue = None if overdue_raw is None else overdue_raw == "true"
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return _bad(f"limit must be a whole number from 1 to {MAX_LIMIT}.",
                        "invalid_limit")
        owner, team = q.get("owner"), q.get("team")
        if (err := self._not_ready()) is not None:
            return err
        now = self.clock()
        rows = []
        for r in self.view.all():
            if status == "open":
                if r.status not in OPEN_STATUSES:
                    continue
            elif status is not None and r.status != status:
                continue
            if owner is not None and r.owner != owner:
                continue
            row_team = self.view.team_of(r)
            if team is not None and row_team != team:
                continue
            late = r.status in OPEN_STATUSES and r.due < now
            if overdue is not None and late != overdue:
                continue
            rows.append((r, row_team, late))
        rows.sort(key=lambda x: (x[0].due, x[0].task_id))
        return web.json_response({
            "tasks": [{"task_id": r.task_id, "kind": r.kind, "status": r.status,
                       "owner": r.owner, "team": row_team, "due": r.due.isoformat(),
                       "overdue": late} for r, row_team, late in rows[:limit]],
            "total": len(rows)})

    async def post_status(self, request: web.Request) -> web.Response:
        if (denied := self._staff(request)) is not None:
            return denied
        task_id = request.match_info["task_id"]
        if (err := self._not_ready()) is not None:
            return err
        row = self.view.get(task_id)
        if row is None:
            return _outcome(404, "not_found", "No such task.", "not-found")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            return _bad("Idempotency-Key must be 1 to 255 printable ASCII characters "
                        "without spaces.", "invalid_idempotency_key")
        body, err = await _json_body(request)
        if err is not None:
            return err
        parsed = _status_body(body)
        if isinstance(parsed, web.Response):
            return parsed
        status, reason = parsed
        at = self.clock()
        uid = update_id(task_id, status, reason, key, at)
        current = self.view.effective_status(task_id) or row.status
        if current in CLOSED_STATUSES:
            if status == current:
                return web.json_response({"id": uid, "task_id": task_id, "status": status,
                                          "unchanged": True})
            return _outcome(409, "task_closed",
                            f"The task is {current}; a closed task stays closed.",
                            "business-rule")
        update = TaskUpdate(id=uid, task_id=task_id, patient_key=row.patient_key,
                            status=status,  # type: ignore[arg-type]  # checked above
                            at=at, reason=reason)
        try:
            await self.producer.send(CARE_TASK_UPDATES.name,
                                     update.model_dump_json(exclude_none=True).encode(),
                                     key=row.patient_key.encode(),
                                     timeout=self.settings.ack_timeout_s)
        except DurableWriteError:
            log.warning("task_update_not_stored", task_id=task_id, status=status)
            return _unavailable("The update could not be stored; send it again.")
        self.view.posted(task_id, status)
        log.info("task_update_accepted", task_id=task_id, kind=row.kind, status=status,
                 update_id=uid)
        return web.json_response({"id": uid, "task_id": task_id, "status": status},
                                 status=202)


# ------------------------------------------------------------------------- wiring

CARE_API_KEY = web.AppKey("care_api", CareApi)


def add_care_routes(app: web.Application, api: CareApi, *, manage_view: bool = True) -> None:
    """Mount the endpoints; with ``manage_view`` the view starts and stops with ``app``."""
    app[CARE_API_KEY] = api
    app.router.add_get("/care/tasks", api.list_tasks)
    app.router.add_post("/care/tasks/{task_id}/status", api.post_status)
    if manage_view:
        async def _start(_: web.Application) -> None:
            await api.view.start()

        async def _stop(_: web.Application) -> None:
            await api.view.stop()

        app.on_startup.append(_start)
        app.on_cleanup.append(_stop)


def default_care_api(settings: Settings, producer: Sender, *,
                     throttle: AuthThrottle | None = None) -> CareApi:
    """The API as ``hub run`` / ``hub ingest`` serve it: the view tails the broker when
    one is configured (else it never gets ready and answers 503)."""
    view = TaskView(settings if settings.kafka_bootstrap else None)
    return CareApi(settings, producer, view, throttle=throttle)
