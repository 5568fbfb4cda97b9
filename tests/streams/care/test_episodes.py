"""The episode of an event without a visit number (PV1-19 empty), the one rule the care
and referrals stages share, and the care stage's statuses as a follower sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.canonical import (
    CanonicalEvent,
    Encounter,
    EncounterClass,
    EventKind,
    Location,
    Patient,
    Source,
    derive_id,
)
from streams.care.episodes import (
    EpisodeFacts,
    FollowedEpisode,
    closed_by_timer,
    episode_without_visit,
    follow_episode,
)

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
K = EventKind


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def facts(key: str, status: str = "active", *, facility: str = "GEN",
          admit: float | None = None, discharge: float | None = None) -> EpisodeFacts:
    return EpisodeFacts(key, facility, status, None if admit is None else at(admit),
                        None if discharge is None else at(discharge))


def pick(episodes: list[EpisodeFacts], kind: EventKind = K.TRANSFER, *,
         facility: str = "GEN", admit: float | None = None, now: float = 10) -> str | None:
    return episode_without_visit(episodes, facility, kind,
                                 None if admit is None else at(admit), at(now))


@pytest.mark.parametrize("kind", [K.ADMIT, K.REGISTER, K.PREADMIT])
def test_an_admission_is_an_episode_of_its_own_keyed_by_its_admit_time(kind: EventKind
                                                                        ) -> None:
    going = [facts("GEN|V1", admit=1)]
    assert pick(going, kind, admit=9.5) == "GEN|@202611021730"
    assert pick(going, kind) == "GEN|@202611021800"  # no PV1-44: the event's time
    assert pick([], kind, facility="") == "|@202611021800"


def test_other_news_goes_to_the_latest_episode_going_at_the_facility() -> None:
    episodes = [facts("GEN|V1", admit=1), facts("GEN|V2", "preadmit", admit=3),
                facts("GEN|V3", "discharged", admit=2, discharge=5),
                facts("EAST|V4", admit=8, facility="EAST")]
    assert pick(episodes) == "GEN|V2"  # latest by admit time, at this facility
    assert pick(episodes, facility="EAST") == "EAST|V4"
    assert pick(episodes, facility="WEST") is None


@pytest.mark.parametrize("status", ["closed", "cancelled", "new"])
def test_an_episode_over_or_unknown_to_the_care_stage_gets_no_news(status: str) -> None:
    assert pick([facts("GEN|V1", status, admit=9)]) is None
    assert pick([facts("GEN|V1", status, admit=9), facts("GEN|V2", admit=1)]) == "GEN|V2"


def test_without_an_admit_time_the_discharge_time_then_the_event_time_counts() -> None:
    # V1 discharged at 5, V2 admitted at 4: V1. V3 has neither: it is as late as the
    # event, later than both.
    assert pick([facts("GEN|V2", admit=4), facts("GEN|V1", "discharged", discharge=5)]) == \
        "GEN|V1"
    assert pick([facts("GEN|V1", "discharged", discharge=5), facts("GEN|V2", admit=6)]) == \
        "GEN|V2"
    assert pick([facts("GEN|V1", "discharged", discharge=5), facts("GEN|V3")]) == "GEN|V3"


def test_of_equals_the_first_known_wins() -> None:
    assert pick([facts("GEN|B"), facts("GEN|A")]) == "GEN|B"
    assert pick([facts("GEN|A", admit=2), facts("GEN|B", admit=2)]) == "GEN|A"


def event(kind: EventKind, hours: float = 0, *, cls: EncounterClass | None = None,
          admit: float | None = None, discharge: float | None = None,
          disposition: str | None = None, deceased: bool | None = None) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=derive_id("ep-test", kind.value, str(hours)), kind=kind, trigger="A01",
        occurred_at=at(hours), recorded_at=at(hours),
        source=Source(format="hl7v2", facility="GEN"),
        patient=Patient(key="k", mrn="m", assigning_authority="GEN", deceased=deceased),
        encounter=Encounter(class_=cls, admit_at=None if admit is None else at(admit),
                            discharge_at=None if discharge is None else at(discharge),
                            discharge_disposition=disposition,
                            location=Location(facility="GEN")))


def follow(*events: CanonicalEvent, start: FollowedEpisode | None = None) -> FollowedEpisode:
    ep = start or FollowedEpisode()
    for ev in events:
        ep = follow_episode(ep, ev)
    return ep


INPATIENT = EncounterClass.INPATIENT


def test_statuses_through_a_stay() -> None:
    pre = follow(event(K.PREADMIT, cls=INPATIENT, admit=2))
    assert (pre.status, pre.admit_at) == ("preadmit", at(2))
    admitted = follow(event(K.ADMIT, 2), start=pre)
    assert (admitted.status, admitted.class_) == ("active", "inpatient")
    gone = follow(event(K.DISCHARGE, 30, discharge=29, disposition="01"), start=admitted)
    assert (gone.status, gone.discharge_at) == ("discharged", at(29))
    assert follow(event(K.UPDATE, 31), start=gone) == gone
    back = follow(event(K.CANCEL_DISCHARGE, 32), start=gone)
    assert (back.status, back.discharge_at) == ("active", None)
    assert follow(event(K.CANCEL_ADMIT, 33), start=back).status == "cancelled"
    assert closed_by_timer(gone, at(40)) == FollowedEpisode(
        status="closed", admit_at=at(2), discharge_at=at(29), closed_at=at(40),
        class_="inpatient", disposition="01")
    assert closed_by_timer(back, at(40)) == back  # only a discharged episode closes


@pytest.mark.parametrize(("disposition", "deceased", "cls", "status"), [
    ("50", None, INPATIENT, "closed"),  # hospice
    ("20", None, INPATIENT, "closed"),  # expired
    ("01", True, INPATIENT, "closed"),  # PID-30
    ("50", None, EncounterClass.EMERGENCY, "discharged"),  # no case management: no close
    ("01", None, INPATIENT, "discharged"),
])
def test_a_death_or_hospice_discharge_closes_a_care_stay_at_once(
        disposition: str, deceased: bool | None, cls: EncounterClass, status: str) -> None:
    ep = follow(event(K.ADMIT, 0, cls=cls),
                event(K.DISCHARGE, 5, disposition=disposition, deceased=deceased))
    assert ep.status == status
    # News after the close changes nothing; a cancelled discharge reopens only a close
    # made by the discharge itself.
    assert follow(event(K.TRANSFER, 6, cls=INPATIENT), start=ep).status == status
    reopened = follow(event(K.CANCEL_DISCHARGE, 7), start=ep)
    assert (reopened.status, reopened.closed_at) == ("active", None)
    timed = closed_by_timer(follow(event(K.ADMIT, 0, cls=cls), event(K.DISCHARGE, 5)), at(9))
    assert follow(event(K.CANCEL_DISCHARGE, 10), start=timed).status == "closed"


def test_an_episode_the_care_stage_does_not_hold_stays_unknown() -> None:
    # A leave of absence or a cancel does not create a care episode.
    for kind in (K.LEAVE_OF_ABSENCE, K.CANCEL_ADMIT, K.CANCEL_TRANSFER):
        assert follow(event(kind, cls=INPATIENT)) == FollowedEpisode()
    assert follow(event(K.UPDATE, cls=INPATIENT, admit=1)).status == "active"
    # A discharge seen first: discharged (a care stay: admitted, then discharged).
    assert follow(event(K.DISCHARGE, 3, cls=INPATIENT)).discharge_at == at(3)
