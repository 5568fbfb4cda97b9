"""Case-manager assignment: continuity, eligibility, shift, acuity-weighted caps (pure).

``assign(state, request, now=..., roster=..., cfg=...) -> (new_state, decision)`` works on
one team's caseload (:class:`TeamState`); the streams layer partitions by team, so a
team's caseload is counted in one place without locks. Nothing here reads a clock, the
environment or a broker, and nothing mutates its arguments: the same inputs always give
the same outputs, which is what makes redelivery and offline replay safe.

Precedence (first match wins):

1. The episode already has a manager in the state -> ``already_assigned`` to that same
   manager (a redelivered request changes nothing).
2. Continuity: the patient's manager from a recent episode (``continuity_at`` within
   ``continuity_days``) if they are in the team, eligible, on shift or starting a shift
   within ``continuity_shift_window_hours``, and (by default) under their cap.
3. Eligibility: language, payer, specialty (an empty list on the manager means any).
4. On shift now (PTO days are off).
5. Capacity: ``load + points <= cap_points`` (exactly at the cap is allowed).
6. Lowest load, then lowest load/cap ratio, then manager id.

Nobody -> ``unassigned`` with the most telling reason, and the episode is kept in the
team's queue (``manager_id=None``) so its points show as team backlog.

Language matching ignores case and region and accepts ISO 639-1 codes, ISO 639-2/B and
639-2/T codes and English (or native) names of common languages: ``es``, ``spa``,
``es-MX``, ``es_US``, ``Spanish`` and ``Español`` all mean Spanish; an HL7 coded value
``es^Spanish^ISO639`` uses its first component. Codes not in the table are compared as
written (lower-cased, region dropped); ``und``, ``unk`` and empty values mean "not known",
which puts no restriction on the choice. Chinese varieties (``zh``, ``cmn``, ``yue``)
are all "zh": the table is coarse there, see :data:`LANGUAGE_ALIASES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, Protocol, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from streams.care.roster import (
    Manager,
    Roster,
    next_shift_start,
    on_pto,
    on_shift,
    shift_skip,
)
from streams.care.trusted import constructor, evolve

__all__ = [
    "LANGUAGE_ALIASES",
    "AssignmentConfig",
    "AssignmentRequest",
    "Caseload",
    "CaseloadView",
    "Decision",
    "EpisodeLoad",
    "TeamState",
    "TeamTotals",
    "assign",
    "eligibility_skip",
    "language_matches",
    "normalize_language",
    "release",
    "team_figures",
    "update_points",
]

C = TypeVar("C", bound="Caseload")

_new = object.__new__
_set = object.__setattr__

Status = Literal["assigned", "unassigned", "already_assigned", "released"]
Reason = Literal[
    "continuity", "least_loaded", "none_eligible", "all_at_cap", "none_on_shift", "no_team",
    "episode_closed", "already_assigned",
]
"""Why: ``continuity`` / ``least_loaded`` (assigned), ``none_eligible`` /
``none_on_shift`` / ``all_at_cap`` / ``no_team`` (unassigned), ``episode_closed``
(released). An ``already_assigned`` decision repeats the reason of the original one
(``already_assigned`` only for a stored episode that did not record it)."""


class AssignmentConfig(BaseModel):
    """Assignment thresholds (the ``assignment`` section of the rules file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    points: dict[str, int] = Field(default_factory=lambda: {"high": 3, "moderate": 2, "low": 1})
    """Caseload points per risk level (acuity weighting); levels compared ignoring case."""
    default_points: int | None = Field(default=None, gt=0)
    """Points for a risk level not in ``points`` (e.g. not scored yet). None: the highest
    configured weight, so an unknown acuity never lets a cap be exceeded by under-counting."""
    continuity_days: int = Field(default=90, ge=0)
    """A previous manager counts for continuity if they had the patient this recently."""
    continuity_shift_window_hours: float = Field(default=12, ge=0)
    """The continuity manager may be off shift now if their shift starts within this many
    hours (the patient waits a little for the person who knows them)."""
    continuity_respects_cap: bool = True
    """False lets continuity exceed the previous manager's cap."""

    @field_validator("points")
    @classmethod
    def _check_points(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("at least one risk level is needed")
        if any(p <= 0 for p in value.values()):
            raise ValueError("points must be positive")
        return {k.strip().lower(): v for k, v in value.items()}

    def points_for(self, risk_level: str | None) -> int:
        """Caseload points of a risk level (see ``default_points`` for unknown levels)."""
        if risk_level is not None:
            found = self.points.get(risk_level.strip().lower())
            if found is not None:
                return found
        return self.default_points if self.default_points is not None else max(self.points.values())


@dataclass(frozen=True)
class AssignmentRequest:
    """One episode needing a case manager from one team."""

    episode_key: str
    team_id: str
    risk_level: str
    payer_ids: tuple[str, ...]
    language: str | None
    """Patient's preferred language, in any form :func:`normalize_language` reads."""
    specialty: str | None
    continuity_manager_id: str | None
    """The patient's case manager from a previous episode, if any."""
    continuity_at: datetime | None
    """When that manager last had the patient; without it continuity is not tried."""
    cause_event_id: str


class EpisodeLoad(BaseModel):
    """One open episode on a team's caseload."""

    model_config = ConfigDict(frozen=True)

    manager_id: str | None
    """None: in the team's unassigned queue (backlog)."""
    points: int = Field(ge=0)
    assigned_at: AwareDatetime
    """When it was assigned (or queued)."""
    reason: str | None = None
    """The reason of the decision that placed it (repeated on redelivery)."""


_EpisodeLoad = constructor(EpisodeLoad)  # unvalidated (streams.care.trusted)


class TeamTotals(BaseModel):
    """A team's caseload in figures: what assignment compares and ops read.

    Stored per team (the ``caseloads`` table) next to one row per open episode, so a
    decision reads and writes a few small records however long the team's queue grows.
    A stored contract: add fields with defaults; unknown fields are ignored on read.
    Invariant: a manager has an entry in ``loads`` and ``open`` exactly while they hold at
    least one open episode (``loads`` is the sum of those episodes' points).
    """

    model_config = ConfigDict(frozen=True)

    team_id: str
    loads: dict[str, int] = Field(default_factory=dict)
    """Manager id -> acuity points of the open episodes they hold."""
    open: dict[str, int] = Field(default_factory=dict)
    """Manager id -> how many open episodes they hold."""
    queued: int = 0
    """Episodes in the team's unassigned queue."""
    queued_points: int = 0
    """Their points: the team's backlog."""

    def moved(self, old: EpisodeLoad | None, new: EpisodeLoad | None) -> TeamTotals:
        """The totals once an episode held as ``old`` is held as ``new`` (None: absent)."""
        if (new is None or new.manager_id is None) and (old is None or old.manager_id is None):
            # Only the queue moves (most requests end unassigned, many of them retrying an
            # episode already queued): the managers' entries are shared as they are, and
            # a re-queued episode of the same points leaves the totals as they were.
            queued, queued_points = self.queued, self.queued_points
            if new is not None:
                queued += 1
                queued_points += new.points
            if old is not None:
                queued -= 1
                queued_points -= old.points
            if queued == self.queued and queued_points == self.queued_points:
                return self  # frozen: the same totals serve the new state
            return _TeamTotals(team_id=self.team_id, loads=self.loads, open=self.open,
                               queued=queued, queued_points=queued_points)
        loads, opened = self.loads, self.open
        queued, queued_points = self.queued, self.queued_points
        copied = False
        # The new holding first: a re-weighted episode keeps its manager's entry (and the
        # entries' order) instead of dropping and re-adding it.
        for e, sign in ((new, 1), (old, -1)):
            if e is None:
                continue
            holder = e.manager_id
            if holder is None:
                queued += sign
                queued_points += sign * e.points
                continue
            if not copied:  # the totals are shared by older states: copy before writing
                loads, opened, copied = dict(loads), dict(opened), True
            count = opened.get(holder, 0) + sign
            if count:
                opened[holder] = count
                loads[holder] = loads.get(holder, 0) + sign * e.points
            else:
                del opened[holder], loads[holder]
        return _TeamTotals(team_id=self.team_id, loads=loads, open=opened, queued=queued,
                           queued_points=queued_points)

    @property
    def open_episodes(self) -> int:
        """Open episodes on the team: held by a manager or queued."""
        return sum(self.open.values()) + self.queued


_TeamTotals = constructor(TeamTotals)  # unvalidated (streams.care.trusted)


class Caseload(Protocol):
    """What :func:`assign`, :func:`release`, :func:`update_points` and
    :func:`team_figures` read of a team's caseload, and how they change it (into a new
    caseload: never in place). :class:`TeamState` holds every episode in one value;
    :class:`CaseloadView` reads a store one episode at a time."""

    @property
    def team_id(self) -> str: ...

    @property
    def totals(self) -> TeamTotals: ...

    def episode(self, episode_key: str) -> EpisodeLoad | None:
        """The open episode ``episode_key`` of this team, if any."""
        ...

    def load(self, manager_id: str) -> int:
        """Acuity-weighted caseload of a manager."""
        ...

    def with_episode(self, episode_key: str, episode: EpisodeLoad | None) -> Self:
        """A caseload with ``episode`` at ``episode_key`` (None: removed)."""
        ...


class TeamState(BaseModel):
    """A team's whole open caseload as one value (tests, and the stored form of workers
    before the caseload was split into totals and rows; see :class:`CaseloadView`).

    A stored contract: add fields with defaults; unknown fields are ignored on read so an
    older worker can restore a newer state during a rolling deploy.
    """

    model_config = ConfigDict(frozen=True)

    team_id: str
    episodes: dict[str, EpisodeLoad] = Field(default_factory=dict)

    def episode(self, episode_key: str) -> EpisodeLoad | None:
        """The open episode ``episode_key``, if any."""
        return self.episodes.get(episode_key)

    def load(self, manager_id: str) -> int:
        """Acuity-weighted caseload of a manager: the sum of their episodes' points."""
        return self.totals.loads.get(manager_id, 0)

    def loads(self) -> dict[str, int]:
        """Load of every manager holding at least one episode."""
        return dict(self.totals.loads)

    @property
    def totals(self) -> TeamTotals:
        """The caseload in figures, counted from the episodes (O(n): the decision stages
        hold a :class:`CaseloadView`, whose totals are stored)."""
        out = _TeamTotals(team_id=self.team_id, loads={}, open={}, queued=0, queued_points=0)
        for e in self.episodes.values():
            out = out.moved(None, e)
        return out

    def open_episodes(self, manager_id: str) -> int:
        """How many open episodes a manager holds."""
        return self.totals.open.get(manager_id, 0)

    def queue(self) -> list[str]:
        """Unassigned episode keys, highest points first, then oldest, then key: the order
        in which to retry them (high-risk patients come first)."""
        waiting = [(k, e) for k, e in self.episodes.items() if e.manager_id is None]
        waiting.sort(key=lambda ke: (-ke[1].points, ke[1].assigned_at, ke[0]))
        return [k for k, _ in waiting]

    def to_json(self) -> str:
        """JSON for the state table; :meth:`from_json` reads it back."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> TeamState:
        """Read :meth:`to_json` output."""
        return cls.model_validate_json(data)

    def with_episode(self, episode_key: str, episode: EpisodeLoad | None) -> Self:
        """A copy with ``episode`` at ``episode_key`` (None: removed). Copies the episodes
        (O(n)): the decision stages hold a :class:`CaseloadView` instead."""
        episodes = dict(self.episodes)
        if episode is None:
            episodes.pop(episode_key, None)
        else:
            episodes[episode_key] = episode
        return evolve(self, episodes=episodes)


@dataclass(frozen=True)
class CaseloadView:
    """A team's caseload read through from a store: its :class:`TeamTotals` plus one
    episode row at a time (``lookup``), the form the worker's tables and offline runs
    hold. A decision costs a few small reads and writes however many episodes the team
    has open, and no record grows with the team (a whole team in one record would, until
    it passed the broker's record size limit).

    :meth:`with_episode` returns a new view with the change in ``changes``; the owner of
    the store writes ``changes`` (None: delete the row) and stores ``totals`` after the
    decision. The view never writes to the store itself.
    """

    totals: TeamTotals
    lookup: Callable[[str], EpisodeLoad | None]
    """Episode key -> the stored row (None when absent). Must not change during a decision."""
    changes: dict[str, EpisodeLoad | None] = field(default_factory=dict)
    """Rows written by this view's decisions and not yet stored (None: removed). A dict of
    this view's own (:meth:`with_episode` builds one per view): the owner may empty it
    once stored, which keeps the view and saves building another per decision."""

    @property
    def team_id(self) -> str:
        return self.totals.team_id

    def episode(self, episode_key: str) -> EpisodeLoad | None:
        if episode_key in self.changes:
            return self.changes[episode_key]
        return self.lookup(episode_key)

    def load(self, manager_id: str) -> int:
        return self.totals.loads.get(manager_id, 0)

    def with_episode(self, episode_key: str, episode: EpisodeLoad | None) -> Self:
        changes = self.changes
        old = changes[episode_key] if episode_key in changes else self.lookup(episode_key)
        # dataclasses.replace(self, totals=..., changes=...) without its per-field
        # introspection: the instance's dict set whole (a view is made per decision;
        # tests/streams/care/test_fast_paths.py checks it is the view __init__ builds).
        view = _new(type(self))
        _set(view, "__dict__", {"totals": self.totals.moved(old, episode),
                                "lookup": self.lookup,
                                "changes": {**changes, episode_key: episode}})
        return view


@dataclass(frozen=True)
class Decision:
    """What :func:`assign` or :func:`release` decided, and why.

    ``considered`` lists every member of the team (by id) with the first rule that
    excluded them (``language``, ``payer``, ``specialty``, ``pto``, ``off_shift``,
    ``at_cap``), ``not_least_loaded`` for a candidate that lost the tie-break, or
    ``chosen``. ``continuity`` says what became of the continuity candidate: None (none
    requested), ``chosen``, ``expired``, ``unknown_manager``, ``not_in_team``, or the
    exclusion code that applied to them.
    """

    status: Status
    manager_id: str | None
    team_id: str
    supervisor: str | None
    """The team's supervisor: the escalation target of an unassigned episode."""
    reason: str
    points: int
    load_after: int | None
    """The chosen manager's load including this episode (None when nobody holds it)."""
    cap: int | None
    """The chosen manager's cap (None when nobody holds it or the roster is not known)."""
    considered: tuple[tuple[str, str], ...] = ()
    continuity: str | None = None
    episode_key: str | None = None
    cause_event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``considered`` as lists)."""
        return {
            "status": self.status,
            "manager_id": self.manager_id,
            "team_id": self.team_id,
            "supervisor": self.supervisor,
            "reason": self.reason,
            "points": self.points,
            "load_after": self.load_after,
            "cap": self.cap,
            "considered": [list(c) for c in self.considered],
            "continuity": self.continuity,
            "episode_key": self.episode_key,
            "cause_event_id": self.cause_event_id,
        }


def _decision(status: Status, manager_id: str | None, team_id: str, supervisor: str | None,
              reason: str, points: int, load_after: int | None, cap: int | None,
              considered: tuple[tuple[str, str], ...], continuity: str | None,
              episode_key: str | None, cause_event_id: str | None) -> Decision:
    """``Decision(...)`` with its dict set whole: the frozen ``__init__`` sets each field
    through ``object.__setattr__`` (a decision is made per request;
    tests/streams/care/test_fast_paths.py checks it is the decision ``__init__`` builds)."""
    decision = _new(Decision)
    _set(decision, "__dict__", {
        "status": status, "manager_id": manager_id, "team_id": team_id,
        "supervisor": supervisor, "reason": reason, "points": points,
        "load_after": load_after, "cap": cap, "considered": considered,
        "continuity": continuity, "episode_key": episode_key,
        "cause_event_id": cause_event_id})
    return decision


# ISO 639-1 code -> other spellings (ISO 639-2/B, 639-2/T, 639-3 macrolanguage members,
# English and native names). Keys and aliases are lower-case.
LANGUAGE_ALIASES: dict[str, tuple[str, ...]] = {
    "en": ("eng", "english"),
    "es": ("spa", "spanish", "español", "espanol", "castilian"),
    "zh": ("chi", "zho", "cmn", "yue", "chinese", "mandarin", "cantonese"),
    "vi": ("vie", "vietnamese"),
    "ar": ("ara", "arabic"),
    "fr": ("fre", "fra", "french", "français", "francais"),
    "ht": ("hat", "haitian", "haitian creole", "kreyol", "kreyòl"),
    "pt": ("por", "portuguese", "português", "portugues"),
    "ru": ("rus", "russian"),
    "ko": ("kor", "korean"),
    "tl": ("tgl", "fil", "tagalog", "filipino"),
    "de": ("ger", "deu", "german", "deutsch"),
    "it": ("ita", "italian"),
    "pl": ("pol", "polish"),
    "ja": ("jpn", "japanese"),
    "hi": ("hin", "hindi"),
    "ur": ("urd", "urdu"),
    "bn": ("ben", "bengali", "bangla"),
    "fa": ("per", "fas", "persian", "farsi"),
    "so": ("som", "somali"),
    "am": ("amh", "amharic"),
    "km": ("khm", "khmer", "cambodian"),
    "el": ("gre", "ell", "greek"),
    "uk": ("ukr", "ukrainian"),
    "he": ("heb", "hebrew"),
    "hy": ("arm", "hye", "armenian"),
    "ne": ("nep", "nepali"),
    "sw": ("swa", "swh", "swahili"),
    "ps": ("pus", "pashto"),
}
_ALIAS_TO_CODE: dict[str, str] = {
    alias: code for code, aliases in LANGUAGE_ALIASES.items() for alias in (code, *aliases)
}
_UNKNOWN_LANGUAGE = frozenset({"", "und", "unk", "unknown", "mis", "zxx"})


@lru_cache(maxsize=1024)
def normalize_language(value: str | None) -> str | None:
    """A language value -> a comparable code (ISO 639-1 where known), None if unknown.

    See the module docstring for the accepted forms. ``"es-MX"`` -> ``"es"``,
    ``"SPA"`` -> ``"es"``, ``"Spanish"`` -> ``"es"``, ``"hmn"`` -> ``"hmn"``,
    ``"und"`` -> None.
    """
    if value is None:
        return None
    text = value.split("^", 1)[0].strip().casefold()
    if text in _ALIAS_TO_CODE:  # whole names with spaces ("haitian creole")
        return _ALIAS_TO_CODE[text]
    base = text.replace("_", "-").split("-", 1)[0].strip()
    if base in _UNKNOWN_LANGUAGE:
        return None
    return _ALIAS_TO_CODE.get(base, base)


def language_matches(manager: Manager, language: str | None) -> bool:
    """Can the manager serve a patient speaking ``language``? An unknown patient language
    or a manager with no language list matches."""
    wanted = normalize_language(language)
    if wanted is None or not manager.languages:
        return True
    return wanted in _eligibility_keys(manager)[0]


def _norm(value: str) -> str:
    return value.strip().casefold()


def _eligibility_keys(manager: Manager) -> tuple[frozenset[str | None], frozenset[str],
                                                 frozenset[str]]:
    """The manager's languages, payers and specialties as compared (memoized on it)."""
    keys = manager.memo.get("eligibility")
    if keys is None:
        keys = manager.memo["eligibility"] = (
            frozenset(normalize_language(lang) for lang in manager.languages),
            frozenset(_norm(p) for p in manager.payers),
            frozenset(_norm(s) for s in manager.specialties))
    return keys  # type: ignore[no-any-return]


def eligibility_skip(manager: Manager, req: AssignmentRequest) -> str | None:
    """The first eligibility rule excluding the manager (``language``, ``payer``,
    ``specialty``), or None when eligible.

    An empty list on the manager means any. A patient with no known payer (coverage often
    arrives after the admit) passes the payer rule: payer-restricted managers take the
    listed payers' patients, but nobody is withheld from a patient for missing data.
    """
    return _eligibility_skip(manager, _wanted(req))


def _wanted(req: AssignmentRequest) -> tuple[str | None, tuple[str, ...], str]:
    """The request's language, payers and specialty as compared (once per request)."""
    return (normalize_language(req.language), tuple(_norm(p) for p in req.payer_ids),
            _norm(req.specialty) if req.specialty is not None else "")


def _eligibility_skip(manager: Manager, wanted: tuple[str | None, tuple[str, ...], str]
                      ) -> str | None:
    languages, payers, specialties = _eligibility_keys(manager)
    language, payer_ids, specialty = wanted
    if manager.languages and language is not None and language not in languages:
        return "language"
    if payers and payer_ids and not any(p in payers for p in payer_ids):
        return "payer"
    if specialties and specialty and specialty not in specialties:
        return "specialty"
    return None


def _continuity(
    loads: dict[str, int], req: AssignmentRequest, points: int, now: datetime, roster: Roster,
    cfg: AssignmentConfig,
) -> tuple[Manager | None, str | None]:
    """(manager to assign, outcome code) for the continuity candidate."""
    if req.continuity_manager_id is None:
        return None, None
    if req.continuity_at is None or now - req.continuity_at > timedelta(days=cfg.continuity_days):
        return None, "expired"
    manager = roster.manager(req.continuity_manager_id)
    if manager is None:
        return None, "unknown_manager"
    if req.team_id not in manager.teams:
        return None, "not_in_team"
    skip = eligibility_skip(manager, req)
    if skip is not None:
        return None, skip
    if not on_shift(manager, now):
        window = timedelta(hours=cfg.continuity_shift_window_hours)
        if next_shift_start(manager, now, window) is None:
            return None, "pto" if on_pto(manager, now) else "off_shift"
    if cfg.continuity_respects_cap and loads.get(manager.id, 0) + points > manager.cap_points:
        return None, "at_cap"
    return manager, "chosen"


def assign(
    state: C | None,
    req: AssignmentRequest,
    *,
    now: datetime,
    roster: Roster,
    cfg: AssignmentConfig,
) -> tuple[C | TeamState, Decision]:
    """Assign the episode to a case manager of ``req.team_id`` (see the module docstring
    for the precedence). Returns the new team state and the decision; the inputs are not
    changed. ``state`` None means the team has no caseload yet. Raises ValueError for a
    naive ``now`` or a state of another team.
    """
    if now.utcoffset() is None:  # also None for a naive datetime (no tzinfo)
        raise ValueError("now must be an aware datetime")
    current: C | TeamState = state if state is not None else TeamState(team_id=req.team_id)
    if current.team_id != req.team_id:
        raise ValueError("the state belongs to another team")
    team = roster.team(req.team_id)
    supervisor = team.supervisor if team is not None else None
    points = cfg.points_for(req.risk_level)

    # (1) Redelivery or a repeated request: keep the manager, the points and the time.
    existing = current.episode(req.episode_key)
    if existing is not None and existing.manager_id is not None:
        holder = roster.manager(existing.manager_id)
        return current, Decision(
            status="already_assigned", manager_id=existing.manager_id, team_id=req.team_id,
            supervisor=supervisor, reason=existing.reason or "already_assigned",
            points=existing.points, load_after=current.load(existing.manager_id),
            cap=holder.cap_points if holder else None, episode_key=req.episode_key,
            cause_event_id=req.cause_event_id,
        )
    # A queued (unassigned) episode is simply tried again below and replaced.

    loads = current.totals.loads  # read only
    if team is None:
        return _placed(current, req, "unassigned", None, "no_team", points, now, loads,
                       supervisor, (), None)

    # (2) Continuity.
    chosen, continuity = _continuity(loads, req, points, now, roster, cfg)
    if chosen is not None:
        return _placed(current, req, "assigned", chosen, "continuity", points, now, loads,
                       supervisor, ((chosen.id, "chosen"),), continuity)

    # (3)-(5) Eligibility, shift, capacity: the first failing rule is each member's reason.
    considered: dict[str, str] = {}
    eligible = on_duty = 0
    candidates: list[Manager] = []
    instant = now.astimezone(UTC)
    # The instant's date in the last member's zone, shared with the next member when
    # theirs is the same (a team usually works in one zone): one conversion per request.
    zone: Any = None
    local_day = instant.date()
    for manager, skip in _members_eligibility(roster, req):
        if skip is None:
            eligible += 1
            if manager.zone is not zone:
                zone = manager.zone
                local_day = instant.astimezone(zone).date()
            skip = shift_skip(manager, instant, local_day)
            if skip is None:
                on_duty += 1
                if loads.get(manager.id, 0) + points > manager.cap_points:
                    skip = "at_cap"
        if skip is None:
            candidates.append(manager)
            skip = "not_least_loaded"
        considered[manager.id] = skip

    if not candidates:
        reason = ("none_eligible" if eligible == 0
                  else "none_on_shift" if on_duty == 0 else "all_at_cap")
        return _placed(current, req, "unassigned", None, reason, points, now, loads,
                       supervisor, tuple(considered.items()), continuity)

    # (6) Lowest load, then lowest load ratio, then id. Between equal loads L > 0 the
    # lower ratio L/cap is the larger cap (caps are positive); at L = 0 every ratio is 0.
    # Exact, like comparing Fractions, at a fraction of their cost.
    best = min(candidates, key=lambda m: _least_loaded_key(loads.get(m.id, 0), m))
    considered[best.id] = "chosen"
    return _placed(current, req, "assigned", best, "least_loaded", points, now, loads,
                   supervisor, tuple(considered.items()), continuity)


def _placed(current: C, req: AssignmentRequest, status: Status, manager: Manager | None,
            reason: str, points: int, now: datetime, loads: dict[str, int],
            supervisor: str | None, considered: tuple[tuple[str, str], ...],
            continuity: str | None) -> tuple[C, Decision]:
    """:func:`assign`'s outcome: the episode placed with ``manager`` (None: queued)."""
    manager_id = manager.id if manager is not None else None
    episode = _EpisodeLoad(manager_id=manager_id, points=points, assigned_at=now,
                           reason=reason)
    # The episode replaced here (if any) was queued, not on anyone's load: the manager's
    # load after is theirs before plus this episode's points.
    if manager is None:
        load_after = cap = None
    else:
        load_after, cap = loads.get(manager.id, 0) + points, manager.cap_points
    return current.with_episode(req.episode_key, episode), _decision(
        status, manager_id, req.team_id, supervisor, reason, points, load_after, cap,
        considered, continuity, req.episode_key, req.cause_event_id)


def _members_eligibility(roster: Roster, req: AssignmentRequest
                         ) -> tuple[tuple[Manager, str | None], ...]:
    """Each member of the request's team with its eligibility skip (see
    :func:`eligibility_skip`), memoized on the roster by what the rules compare."""
    memo = roster.eligibility_memo
    key = (req.team_id, req.language, req.payer_ids, req.specialty)
    found: tuple[tuple[Manager, str | None], ...] | None = memo.get(key)
    if found is None:
        if len(memo) >= 4096:  # languages and payers come from the feed: keep it bounded
            memo.clear()
        wanted = _wanted(req)
        found = memo[key] = tuple((m, _eligibility_skip(m, wanted))
                                  for m in roster.members(req.team_id))
    return found


def _least_loaded_key(load: int, manager: Manager) -> tuple[int, int, str]:
    """``(load, Fraction(load, cap), id)`` ordering, in integers (see :func:`assign`)."""
    return load, -manager.cap_points if load else 0, manager.id


def release(state: C, episode_key: str) -> tuple[C, Decision | None]:
    """Release an episode's caseload when it closes (assigned or queued).

    An unknown key returns the state unchanged and None, so a repeated close is harmless.
    The decision has no supervisor or cap (the roster is not needed to release).
    """
    episode = state.episode(episode_key)
    if episode is None:
        return state, None
    new_state = state.with_episode(episode_key, None)
    manager_id = episode.manager_id
    return new_state, _decision(
        "released", manager_id, state.team_id, None, "episode_closed", episode.points,
        new_state.load(manager_id) if manager_id else None, None, (), None, episode_key, None)


def update_points(state: C, episode_key: str, risk_level: str, cfg: AssignmentConfig) -> C:
    """Re-weight an open episode when its acuity changes (admission -> discharge).

    Unknown keys leave the state unchanged. The manager keeps the patient even if the new
    weight takes them over their cap (moving a patient to a stranger would break the
    relationship); :func:`team_figures` shows the overload.
    """
    episode = state.episode(episode_key)
    if episode is None:
        return state
    points = cfg.points_for(risk_level)
    if points == episode.points:
        return state
    # model_copy(update=...) without pydantic's generic copy (streams.care.trusted.evolve).
    return state.with_episode(episode_key, evolve(episode, points=points))


def team_figures(
    state: Caseload, roster: Roster, *, now: datetime | None = None
) -> dict[str, Any]:
    """Staffing figures for a team (JSON-ready).

    ``managers``: per manager id (roster members, plus anyone still holding episodes who
    left the team): ``load``, ``cap`` (None if no longer on the roster), ``open_episodes``,
    ``headroom`` (cap - load) and ``over_cap``; with ``now`` also ``on_shift``.
    ``team``: ``unassigned`` and ``unassigned_points`` (the queue), ``assigned_points``,
    ``cap_points`` (sum of members' caps), ``open_episodes``; with ``now`` also
    ``on_shift`` (members on shift) and ``on_shift_headroom`` (their free points).
    """
    team = roster.team(state.team_id)
    members = {m.id: m for m in roster.members(state.team_id)}
    totals = state.totals
    loads = totals.loads
    managers: dict[str, dict[str, Any]] = {}
    for manager_id in sorted(set(members) | set(loads)):
        member = members.get(manager_id) or roster.manager(manager_id)
        cap = member.cap_points if member is not None else None
        load = loads.get(manager_id, 0)
        row: dict[str, Any] = {
            "load": load,
            "cap": cap,
            "open_episodes": totals.open.get(manager_id, 0),
            "headroom": cap - load if cap is not None else None,
            "over_cap": cap is not None and load > cap,
            "member": manager_id in members,
        }
        if now is not None:
            row["on_shift"] = member is not None and on_shift(member, now)
        managers[manager_id] = row
    figures: dict[str, Any] = {
        "unassigned": totals.queued,
        "unassigned_points": totals.queued_points,
        "assigned_points": sum(loads.values()),
        "cap_points": sum(m.cap_points for m in members.values()),
        "open_episodes": totals.open_episodes,
    }
    if now is not None:
        working = [mid for mid in members if managers[mid]["on_shift"]]
        figures["on_shift"] = len(working)
        figures["on_shift_headroom"] = sum(max(managers[mid]["headroom"], 0) for mid in working)
    return {
        "team_id": state.team_id,
        "supervisor": team.supervisor if team is not None else None,
        "on_roster": team is not None,
        "managers": managers,
        "team": figures,
    }
