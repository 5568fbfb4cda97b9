"""The staff task API (HTTP): follow-up task status for care-management systems without
Kafka, and the open-work list.

Both endpoints take the staff token (``Authorization: Bearer <staff token>``, its SHA-256
in ``HUB_STAFF_API_TOKEN_SHA256``) and share the agency API's token-guessing throttle
(:class:`hub.api_common.AuthThrottle`: one budget of failures per client address, whichever
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
care.assignments for each episode's team. A closed task is forgotten once its last
record is ``HUB_API_VIEW_RETAIN_DAYS`` older than the newest record the view has seen
(:class:`hub.api_common.Retention`), and an episode's team once none of its tasks is
held and its assignment is that old too; an open task is kept however old. A forgotten
task that gets a record again is simply back (its team only if the episode's assignment
is still held or comes again).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict

from hub.api_common import (
    CODE,
    AuthThrottle,
    Retention,
    TokenApi,
    TopicView,
    bad,
    conflict,
    not_found,
    read_json_body,
    run_view_with,
    unavailable,
    view_retention,
)
from hub.ingest.deadletter import Sender
from hub.kafka import Record
from hub.logging import get_logger
from hub.settings import Settings
from schemas.canonical import derive_id
from schemas.care import TaskKind, TaskStatus, TaskUpdate
from schemas.topics import CARE_ASSIGNMENTS, CARE_TASK_UPDATES, CARE_TASKS
from streams.care.state import OPEN_TASK_STATUSES

__all__ = ["CARE_API_KEY", "CareApi", "TaskRow", "TaskView", "add_care_routes",
           "default_care_api"]

log = get_logger("hub.care_api")

TASK_STATUSES: frozenset[str] = frozenset(get_args(TaskStatus))
UPDATE_STATUSES: frozenset[str] = frozenset(
    get_args(TaskUpdate.model_fields["status"].annotation))
OPEN_STATUSES: frozenset[str] = OPEN_TASK_STATUSES
"""As the episodes stage counts them."""
CLOSED_STATUSES: frozenset[str] = TASK_STATUSES - OPEN_STATUSES
REASON = CODE
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
    decided_at: AwareDatetime | None = None


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


class TaskView(TopicView):
    """care.tasks (the latest record of each task) and each episode's team from
    care.assignments in memory, for the staff API. Its pure parts are ``apply``,
    ``apply_record`` and ``apply_assignment``."""

    event_prefix = "task_view"

    def __init__(self, settings: Settings | None = None, *, poll_s: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic,
                 retain: timedelta | None = None) -> None:
        super().__init__(settings, poll_s=poll_s, log=log)
        self.monotonic = monotonic
        self._by_id: dict[str, TaskRow] = {}
        self._teams: dict[str, str] = {}
        self._team_at: dict[str, datetime] = {}
        """When each team was assigned (absent: not known, then it goes with its tasks)."""
        self._episode_tasks: dict[str, int] = {}
        """Tasks held per episode: a team is forgotten only when none is left."""
        self._pending: dict[str, _Pending] = {}
        self.retention: Retention[tuple[bool, str]] = Retention(
            retain or view_retention(settings))
        """Keys are ``(False, task id)`` and ``(True, episode)`` (a team)."""
        self.forgotten = 0

    # --- pure parts

    def apply(self, row: TaskRow) -> bool:
        """Keep ``row`` when it is the task's latest; True if it was kept.

        One patient's records share a partition, so there the later offset wins. A merge
        republishes open tasks under the surviving key (another partition): across
        partitions the later decision wins.
        """
        self.retention.saw(row.decided_at)
        held = self._by_id.get(row.task_id)
        if held is not None and held.partition != row.partition \
                and row.decided_at < held.decided_at:
            self._forget_due()
            return False
        if row.episode:
            self._episode_tasks[row.episode] = self._episode_tasks.get(row.episode, 0) + 1
        if held is not None:  # after counting the new row: same episode, no gap
            self._episode_left(held.episode)
        self._by_id[row.task_id] = row
        pending = self._pending.get(row.task_id)
        if pending is not None and row.status in CLOSED_STATUSES:
            del self._pending[row.task_id]
        if row.status in CLOSED_STATUSES:
            self.retention.closed(row.decided_at, (False, row.task_id))
        self._forget_due()
        return True

    def _visible(self, row: TaskRow) -> bool:
        # Also checked on reads, so what the API answers does not depend on when the
        # last sweep ran.
        return row.status not in CLOSED_STATUSES or not self.retention.expired(row.decided_at)

    def _episode_left(self, episode: str | None) -> None:
        """One task of ``episode`` is no longer held (replaced or forgotten)."""
        if not episode:
            return
        n = self._episode_tasks.get(episode, 0) - 1
        if n > 0:
            self._episode_tasks[episode] = n
            return
        self._episode_tasks.pop(episode, None)
        at = self._team_at.get(episode)
        if at is None:
            # Assignment time unknown: the team goes with its last task.
            self._teams.pop(episode, None)
        else:
            # Its own entry decides (maybe already popped while tasks were held).
            self.retention.closed(at, (True, episode))

    def mark_ready(self) -> None:
        super().mark_ready()
        # Caught up on every topic: forgetting may start (Retention says why not before).
        self.retention.arm()
        self._forget_due()

    def _forget_due(self) -> None:
        for _, (is_team, key) in self.retention.due():
            if is_team:
                at = self._team_at.get(key)
                if at is not None and key not in self._episode_tasks \
                        and self.retention.expired(at):
                    del self._teams[key], self._team_at[key]
                continue
            held = self._by_id.get(key)
            if held is not None and not self._visible(held):
                del self._by_id[key]
                self._pending.pop(key, None)
                self._episode_left(held.episode)
                self.forgotten += 1

    def apply_record(self, value: bytes, partition: int) -> bool:
        """Parse one care.tasks record and apply it; raises ValidationError."""
        rec = _TaskRecord.model_validate_json(value)
        if rec.type != "task":
            return False
        return self.apply(TaskRow(task_id=rec.task_id, patient_key=rec.patient_key,
                                  status=rec.status, kind=rec.kind, owner=rec.owner,
                                  due=rec.due, episode=rec.encounter_key,
                                  decided_at=rec.decided_at, partition=partition))

    def apply_assignment(self, encounter_key: str | None, team: str | None,
                         at: datetime | None = None) -> None:
        if at is not None:
            self.retention.saw(at)
        if encounter_key and team:
            self._teams[encounter_key] = team
            if at is not None:
                self._team_at[encounter_key] = at
                # Assignments come before their tasks: an episode that never gets a
                # task still goes once its assignment is past the retention.
                self.retention.closed(at, (True, encounter_key))
            else:
                self._team_at.pop(encounter_key, None)
        self._forget_due()

    def get(self, task_id: str) -> TaskRow | None:
        row = self._by_id.get(task_id)
        return row if row is not None and self._visible(row) else None

    def all(self) -> Iterable[TaskRow]:
        return (r for r in self._by_id.values() if self._visible(r))

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
        row = self.get(task_id)
        return row.status if row is not None else None

    def posted(self, task_id: str, status: str) -> None:
        # "attempted" may or may not close a contact (two attempts do): only statuses
        # that certainly close it are remembered.
        if status in CLOSED_STATUSES:
            self._pending[task_id] = _Pending(status, self.monotonic())

    # --- tailing

    def _topics(self) -> Sequence[tuple[str, float, Callable[[Record], object]]]:
        # Assignments first: a task's team is then known by the time the task is listed.
        return [(CARE_ASSIGNMENTS.name, 0.05, self._assignment_record),
                (CARE_TASKS.name, self.poll_s, self._task_record)]

    def _assignment_record(self, rec: Record) -> None:
        a = _AssignmentRecord.model_validate_json(rec.value or b"")
        self.apply_assignment(a.encounter_key, a.team, a.decided_at)

    def _task_record(self, rec: Record) -> None:
        self.apply_record(rec.value or b"", rec.partition)

    def _ready_fields(self) -> dict[str, Any]:
        return {"count": len(self._by_id)}

    def figures(self) -> dict[str, Any]:
        """For /metrics (a :class:`hub.metrics.FiguresProvider`)."""
        return {"api_views": {"tasks": {"held": len(self._by_id),
                                        "forgotten": self.forgotten},
                              "teams": {"held": len(self._teams)}}}


# ------------------------------------------------------------------------- requests


def _status_body(body: Any) -> tuple[str, str | None] | web.Response:
    """``(status, reason)`` from a parsed body, or the error answer (nothing echoed)."""
    if not isinstance(body, dict):
        return bad('The body must be a JSON object {"status": ..., "reason": ...}.',
                   "invalid_request")
    if set(body) - {"status", "reason"}:
        return bad('Allowed fields: "status" and "reason".', "unknown_field", 422)
    status, reason = body.get("status"), body.get("reason")
    if not isinstance(status, str) or status not in UPDATE_STATUSES:
        return bad(f"status must be one of {', '.join(sorted(UPDATE_STATUSES))}.",
                   "invalid_status", 422)
    if reason is not None and (not isinstance(reason, str) or not REASON.match(reason)):
        return bad("reason must be a code matching ^[A-Za-z0-9_.:-]{1,64}$ (no free text).",
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


class CareApi(TokenApi[TaskView]):
    """The routes' state: settings, the durable producer, the task view, the throttle."""

    not_ready_detail = "The task view is still loading."

    def __init__(self, settings: Settings, producer: Sender, view: TaskView, *,
                 clock: Callable[[], datetime] | None = None,
                 throttle: AuthThrottle | None = None) -> None:
        super().__init__(settings, producer, view, clock=clock, throttle=throttle, log=log)

    async def list_tasks(self, request: web.Request) -> web.Response:
        if (denied := self._staff(request)) is not None:
            return denied
        q = request.query
        status = q.get("status")
        if status is not None and status not in TASK_STATUSES | {"open"}:
            return bad(f"Unknown status; use open or one of "
                       f"{', '.join(sorted(TASK_STATUSES))}.", "invalid_status")
        overdue_raw = q.get("overdue")
        if overdue_raw is not None and overdue_raw not in ("true", "false"):
            return bad("overdue must be true or false.", "invalid_overdue")
        overdue = None if overdue_raw is None else overdue_raw == "true"
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return bad(f"limit must be a whole number from 1 to {MAX_LIMIT}.",
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
            return not_found("No such task.")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            return bad("Idempotency-Key must be 1 to 255 printable ASCII characters "
                       "without spaces.", "invalid_idempotency_key")
        body, err = await read_json_body(request)
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
            return conflict("task_closed",
                            f"The task is {current}; a closed task stays closed.")
        update = TaskUpdate(id=uid, task_id=task_id, patient_key=row.patient_key,
                            status=status,  # type: ignore[arg-type]  # checked above
                            at=at, reason=reason)
        if not await self._store(CARE_TASK_UPDATES.name, update, row.patient_key):
            log.warning("task_update_not_stored", task_id=task_id, status=status)
            return unavailable("The update could not be stored; send it again.")
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
        run_view_with(app, api.view)


def default_care_api(settings: Settings, producer: Sender, *,
                     throttle: AuthThrottle | None = None) -> CareApi:
    """The API as ``hub run`` / ``hub ingest`` serve it: the view tails the broker when
    one is configured (else it never gets ready and answers 503)."""
    view = TaskView(settings if settings.kafka_bootstrap else None)
    return CareApi(settings, producer, view, throttle=throttle)
