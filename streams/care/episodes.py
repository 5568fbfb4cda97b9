"""Which episode an event is about: the keys, and the rule for an event without a visit
number. Shared by the care stage and the referrals stage, whose episode keys must match
(a referral names the episode the care stage's flags, tasks and assignment name).

Pure: no state of its own; time comes in with the event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NamedTuple

from schemas.canonical import CanonicalEvent, EventKind
from streams.care.followup import DispositionClass, classify_disposition

__all__ = ["CREATES_EPISODE", "GOING_STATUSES", "STARTS_EPISODE", "EpisodeFacts",
           "FollowedEpisode", "closed_by_timer", "episode_facility", "episode_key",
           "episode_without_visit", "follow_episode", "timed_episode_key"]

_K = EventKind
CREATES_EPISODE = frozenset({_K.PREADMIT, _K.ADMIT, _K.REGISTER, _K.TRANSFER, _K.DISCHARGE,
                             _K.CLASS_CHANGE, _K.UPDATE})
"""Kinds after which the care stage holds an episode it did not know (with a visit number,
or the timed key of an event in :data:`STARTS_EPISODE`)."""
STARTS_EPISODE = frozenset({_K.ADMIT, _K.REGISTER, _K.PREADMIT})
"""Kinds whose event without a visit number is an episode of its own (keyed by time)
rather than news about the latest one going."""
GOING_STATUSES = frozenset({"preadmit", "active", "discharged"})
"""Statuses of an episode later news without a visit number may be about: a cancelled or
closed one is over."""
_CARE_CLASSES = ("inpatient", "observation")
_NO_FOLLOWUP = (DispositionClass.DEATH, DispositionClass.HOSPICE)


def episode_facility(ev: CanonicalEvent) -> str | None:
    """The facility an episode belongs to: the encounter's location facility (PV1-3.4),
    else the sending facility (MSH-4)."""
    enc = ev.encounter
    return (enc.location.facility if enc and enc.location else None) or ev.source.facility


def episode_key(facility: str | None, encounter_id: str) -> str:
    """An episode's key from its visit number (PV1-19): ``<facility>|<visit>``. The
    referrals stage keys its episodes the same way, so keys match across stages."""
    return f"{facility or ''}|{encounter_id}"


def timed_episode_key(facility: str | None, admit_at: datetime) -> str:
    """The key of an admission without a visit number: ``<facility>|@<YYYYmmddHHMM>`` of
    its admit time (PV1-44, else the event time)."""
    return f"{facility or ''}|@{admit_at.strftime('%Y%m%d%H%M')}"


class EpisodeFacts(NamedTuple):
    """What :func:`episode_without_visit` reads of one known episode (in the care stage's
    terms: ``status`` is one of :data:`streams.care.state.EpisodeStatus`)."""

    key: str
    facility: str | None
    status: str
    admit_at: datetime | None
    discharge_at: datetime | None


def episode_without_visit(episodes: Iterable[EpisodeFacts], facility: str | None,
                          kind: EventKind, admit_at: datetime | None, occurred_at: datetime
                          ) -> str | None:
    """The key of the episode an event without a visit number (PV1-19 empty) is about, or
    None if it is about none.

    An admission, registration or pre-admission (:data:`STARTS_EPISODE`) is an episode of
    its own, keyed by its admit time (PV1-44, else the event time): one admission without
    a visit number is one episode. Any other event is news about the latest episode still
    going (:data:`GOING_STATUSES`) at the same ``facility`` (PV1-3.4, else MSH-4), latest
    by admit time, else discharge time, else the event's time ``occurred_at``; of equals,
    the first in ``episodes``' order (the order the stage came to know them in). The
    returned key may be one not known yet (a new admission).
    """
    if kind in STARTS_EPISODE:
        return timed_episode_key(facility, admit_at or occurred_at)
    latest: EpisodeFacts | None = None
    latest_at = occurred_at
    for e in episodes:
        if e.facility != facility or e.status not in GOING_STATUSES:
            continue
        at = e.admit_at or e.discharge_at or occurred_at
        if latest is None or at > latest_at:
            latest, latest_at = e, at
    return latest.key if latest is not None else None


@dataclass(frozen=True)
class FollowedEpisode:
    """The care stage's view of one episode, as far as :func:`episode_without_visit` reads
    it, followed from the same events by a stage that does not hold the care state (the
    referrals stage). ``status`` ``new``: the care stage holds no such episode yet."""

    status: str = "new"
    admit_at: datetime | None = None
    discharge_at: datetime | None = None
    closed_at: datetime | None = None
    class_: str | None = None
    disposition: str | None = None


def follow_episode(ep: FollowedEpisode, ev: CanonicalEvent) -> FollowedEpisode:
    """``ep`` after the care stage applied ``ev`` (an event about this episode) to it:
    what ``streams.care.engine._on_event`` does to an episode's status, admit, discharge
    and closing times (PV1-2 class, PV1-44 admit, PV1-45 discharge, PV1-36 disposition,
    PID-30 deceased). A death or hospice discharge closes an episode on the spot; the
    care stage's timer closes others later, which a follower learns from the assignment
    released with ``episode_closed`` (:func:`closed_by_timer`)."""
    kind, enc = ev.kind, ev.encounter
    was = ep.status
    if enc is None or (was == "new" and kind not in CREATES_EPISODE):
        return ep  # the care stage holds no episode for it
    ep = replace(
        ep,
        class_=enc.class_.value if enc.class_ is not None else ep.class_,
        admit_at=enc.admit_at if enc.admit_at is not None else ep.admit_at,
        disposition=enc.discharge_disposition if enc.discharge_disposition is not None
        else ep.disposition)
    if kind == _K.PREADMIT:
        return replace(ep, status="preadmit") if was in ("new", "preadmit") else ep
    if kind == _K.CANCEL_ADMIT:
        return ep if was == "cancelled" else replace(ep, status="cancelled")
    if kind == _K.CANCEL_DISCHARGE:
        closed_at_discharge = (was == "closed" and ep.discharge_at is not None
                               and ep.closed_at == ep.discharge_at)
        if was != "discharged" and not closed_at_discharge:
            return ep
        return replace(ep, status="active", discharge_at=None,
                       closed_at=None if closed_at_discharge else ep.closed_at)
    if kind == _K.CANCEL_TRANSFER or was in ("cancelled", "closed"):
        return ep
    if kind == _K.DISCHARGE or (enc.discharge_at is not None and kind != _K.UPDATE
                                and was != "discharged"):
        at = enc.discharge_at or ev.occurred_at
        if was == "discharged" and ep.discharge_at == at:
            return ep
        ep = replace(ep, status="discharged", discharge_at=at)
        if ep.class_ in _CARE_CLASSES and classify_disposition(
                "20" if ev.patient.deceased else ep.disposition) in _NO_FOLLOWUP:
            ep = replace(ep, status="closed", closed_at=at)
        return ep
    return ep if was == "discharged" else replace(ep, status="active")


def closed_by_timer(ep: FollowedEpisode, at: datetime) -> FollowedEpisode:
    """``ep`` after the care stage's timer closed it at ``at`` (it closes only
    discharged episodes)."""
    return replace(ep, status="closed", closed_at=at) if ep.status == "discharged" else ep
