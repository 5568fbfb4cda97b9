"""Events without a visit number (PV1-19 empty): the referrals stage attaches a referral to
the episode the care stage puts the same event's flags, tasks and assignment on (both
call :func:`streams.care.episodes.episode_without_visit`; the referrals stage follows the
care stage's episode statuses with :func:`streams.care.episodes.follow_episode`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.commands.decide_cmd import load_rules
from schemas.canonical import (
    Address,
    CanonicalEvent,
    Diagnosis,
    Encounter,
    EncounterClass,
    EventKind,
    Location,
    Patient,
    Source,
    derive_id,
    patient_key,
)
from schemas.referrals import ReferralOutput
from streams.care.engine import CareContext
from streams.care.episodes import (
    EpisodeFacts,
    FollowedEpisode,
    episode_facility,
    episode_without_visit,
)
from streams.care.offline import OfflineRun
from streams.care.roster import parse_roster
from streams.referrals.directory import parse_directory
from streams.referrals.engine import ReferralContext, episode_facts, followed
from streams.referrals.state import ReferralPatientState
from tests.streams.referrals.helpers import DIRECTORY

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
MRN = "MRN-NOVISIT-5521"
KEY = patient_key("GENHOSP", MRN)
ROSTER = """
teams:
  - {id: medsurg, facility: GENHOSP, supervisor: sup-lee}
  - {id: east, facility: EASTHOSP, supervisor: sup-lee}
managers:
  - {id: cm-ana, teams: [medsurg, east], cap_points: 100, timezone: UTC}
  - {id: sup-lee, teams: [medsurg, east], cap_points: 100, timezone: UTC}
"""
_CARE = CareContext(config=load_rules(None, default_tz="UTC"), roster=parse_roster(ROSTER))
_REFERRALS = ReferralContext(config=_CARE.config.referrals,
                             directory=parse_directory(DIRECTORY), roster=_CARE.roster)


def visitless(kind: EventKind, n: int, at: datetime, *, facility: str = "GENHOSP",
              cls: EncounterClass | None = EncounterClass.INPATIENT,
              admit_at: datetime | None = None, discharge_at: datetime | None = None,
              disposition: str | None = None, dx: tuple[str, ...] = ()) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=derive_id("novisit", n, kind.value), kind=kind, trigger="A01",
        occurred_at=at, recorded_at=at,
        source=Source(format="hl7v2", facility=facility, message_id=f"M{n}"),
        patient=Patient(key=KEY, mrn=MRN, assigning_authority="GENHOSP",
                        family_name="ZEBULONSKI", language="en",
                        address=Address(line=["12 ELM ST"], postal_code="01103")),
        encounter=Encounter(class_=cls, admit_at=admit_at, discharge_at=discharge_at,
                            discharge_disposition=disposition,
                            location=Location(facility=facility, unit="4WEST")),
        diagnoses=[Diagnosis(code=c, system="I10") for c in dx])


def _run() -> OfflineRun:
    return OfflineRun(_CARE, _REFERRALS)


def _of_referrals(o: Any) -> bool:
    return isinstance(o, ReferralOutput) or getattr(o, "rule", "").startswith("referral.")


def _care_keys(out: list[Any], ev: CanonicalEvent) -> set[str]:
    """Episodes the care stage put the outputs ``ev`` caused on."""
    return {o.encounter_key for o in out if getattr(o, "cause_event_id", None) == ev.event_id
            and not _of_referrals(o) and getattr(o, "encounter_key", None)}


def _referral_keys(out: list[Any], ev: CanonicalEvent) -> set[str]:
    """Episodes the referrals stage put the outputs ``ev`` caused on."""
    return {o.encounter_key for o in out
            if _of_referrals(o) and getattr(o, "cause_event_id", None) == ev.event_id}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_news_goes_to_the_admission_still_open_not_to_an_earlier_discharged_one() -> None:
    # A (no admit time, discharged at 09:00) and B (admitted 09:30): the care stage puts
    # news at 10:00 on B, latest by admit time, else discharge time. The referrals stage
    # used the event's own time for A and picked A: a housing referral on the wrong stay.
    run = _run()
    run.event(visitless(EventKind.ADMIT, 1, at(0)))
    run.event(visitless(EventKind.DISCHARGE, 2, at(1), discharge_at=at(1), disposition="01"))
    run.event(visitless(EventKind.ADMIT, 3, at(1.5), admit_at=at(1.5)))
    news = visitless(EventKind.UPDATE, 4, at(2), dx=("Z59.01",))
    out = run.event(news)
    assert _care_keys(out, news) == {"GENHOSP|@202611020930"}
    assert _referral_keys(out, news) == {"GENHOSP|@202611020930"}


def test_an_episode_closed_by_a_hospice_discharge_gets_no_news() -> None:
    # The care stage closes a hospice discharge at once: later news without a visit
    # number is about no episode. The referrals stage took the closed episode and
    # referred a need on it.
    run = _run()
    run.event(visitless(EventKind.ADMIT, 1, at(0), admit_at=at(0)))
    run.event(visitless(EventKind.DISCHARGE, 2, at(1), discharge_at=at(1), disposition="50"))
    assert run.patients[KEY].episodes["GENHOSP|@202611020800"].status == "closed"
    news = visitless(EventKind.UPDATE, 3, at(2), dx=("Z59.01",))
    out = run.event(news)
    assert _care_keys(out, news) == set() and _referral_keys(out, news) == set()
    assert run.referral_states[KEY].episodes["GENHOSP|@202611020800"].diagnoses == []


def test_a_preadmission_without_a_visit_number_is_an_episode_of_its_own() -> None:
    run = _run()
    run.event(visitless(EventKind.ADMIT, 1, at(0), admit_at=at(0)))
    run.event(visitless(EventKind.DISCHARGE, 2, at(1), discharge_at=at(1), disposition="01"))
    run.event(visitless(EventKind.PREADMIT, 3, at(2), dx=("Z59.01",)))
    care = run.patients[KEY].episodes
    referrals = run.referral_states[KEY].episodes
    assert set(care) == {"GENHOSP|@202611020800", "GENHOSP|@202611021000"}
    assert referrals["GENHOSP|@202611021000"].diagnoses == [("Z59.01", "I10")]
    assert referrals["GENHOSP|@202611020800"].diagnoses == []


# --- property: random news without visit numbers through both stages

_FAST_CARE = CareContext(config=_CARE.config, roster=_CARE.roster, render_fhir=False)
_FAST_REFERRALS = ReferralContext(config=_REFERRALS.config, directory=_REFERRALS.directory,
                                  roster=_REFERRALS.roster, render_fhir=False)
_KINDS = [EventKind.ADMIT, EventKind.REGISTER, EventKind.PREADMIT, EventKind.TRANSFER,
          EventKind.UPDATE, EventKind.DISCHARGE, EventKind.CANCEL_ADMIT,
          EventKind.CANCEL_DISCHARGE, EventKind.CANCEL_TRANSFER]


_PATIENT_WIDE = frozenset({"referral.cancel.deceased", "referral.cancel.hospice"})


@st.composite
def news(draw: st.DrawFn) -> list[tuple[EventKind, int, dict[str, Any]]]:
    """(kind, minutes after the previous event, fields) of up to 14 events; at most a
    few days in all (the care stage closes an emergency stay 30 days after discharge
    without telling anyone, see :func:`streams.care.episodes.closed_by_timer`)."""
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(_KINDS))
        fields: dict[str, Any] = {
            "facility": draw(st.sampled_from(["GENHOSP", "EASTHOSP"])),
            "cls": draw(st.sampled_from([EncounterClass.INPATIENT, EncounterClass.EMERGENCY,
                                         EncounterClass.OBSERVATION, None])),
            "dx": draw(st.sampled_from([(), ("Z59.01",)])),
            "disposition": draw(st.sampled_from([None, "01", "06", "50", "20"])),
        }
        admit = draw(st.one_of(st.none(), st.integers(-600, 0)))  # minutes before the event
        discharge = draw(st.one_of(st.none(), st.integers(-120, 0)))
        steps.append((kind, draw(st.sampled_from([0, 1, 30, 90, 600, 1440])),
                      {**fields, "admit_min": admit, "discharge_min": discharge}))
    return steps


def _care_facts(run: OfflineRun) -> list[EpisodeFacts]:
    p = run.patients.get(KEY)
    return [] if p is None else [EpisodeFacts(e.key, e.facility, e.status, e.admit_at,
                                              e.discharge_at) for e in p.episodes.values()]


def _referral_facts(run: OfflineRun) -> list[EpisodeFacts]:
    p = run.referral_states.get(KEY)
    return [] if p is None else [episode_facts(e) for e in p.episodes.values()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(news())
def test_both_stages_put_news_without_a_visit_number_on_the_same_episode(
        steps: list[tuple[EventKind, int, dict[str, Any]]]) -> None:
    run = OfflineRun(_FAST_CARE, _FAST_REFERRALS)
    now = T0
    for n, (kind, gap, f) in enumerate(steps):
        now += timedelta(minutes=gap)
        admit_min, discharge_min = f["admit_min"], f["discharge_min"]
        ev = visitless(kind, n, now, facility=f["facility"], cls=f["cls"], dx=f["dx"],
                       disposition=f["disposition"],
                       admit_at=None if admit_min is None else now + timedelta(minutes=admit_min),
                       discharge_at=None if discharge_min is None
                       else now + timedelta(minutes=discharge_min))
        run.tick(now)  # the timer pass OfflineRun.event makes first, done here to look
        facility = episode_facility(ev)
        enc_admit = ev.encounter.admit_at if ev.encounter else None
        care_pick = episode_without_visit(_care_facts(run), facility, kind, enc_admit, now)
        assert episode_without_visit(_referral_facts(run), facility, kind, enc_admit,
                                     now) == care_pick
        out = run.event(ev)
        # A death or hospice discharge ends every referral of the patient, of any stay.
        attached = _referral_keys([o for o in out if o.rule not in _PATIENT_WIDE], ev)
        assert attached <= ({care_pick} if care_pick else set())
        if care_pick is not None and _care_keys(out, ev):
            assert care_pick in _care_keys(out, ev)
        # The followed statuses and times are the care stage's.
        referral_eps = run.referral_states[KEY].episodes
        care = run.patients.get(KEY)
        for e in care.episodes.values() if care is not None else []:
            mine = followed(referral_eps[e.key])
            assert (mine.status, mine.admit_at, mine.discharge_at) == (
                e.status, e.admit_at, e.discharge_at), e.key


# --- stored states

def test_a_state_stored_before_statuses_were_followed_still_loads_and_picks() -> None:
    # As stored before EpisodeInfo.care existed: cancelled and discharged are guessed
    # from the stage's own record.
    old = ReferralPatientState.model_validate_json(b"""{"key": "k", "episodes": {
        "GENHOSP|@202611020800": {"key": "GENHOSP|@202611020800", "facility": "GENHOSP",
            "admit_at": "2026-11-02T08:00:00Z", "discharge_at": "2026-11-02T12:00:00Z"},
        "GENHOSP|@202611020900": {"key": "GENHOSP|@202611020900", "facility": "GENHOSP",
            "admit_at": "2026-11-02T09:00:00Z", "cancelled": true},
        "GENHOSP|V7": {"key": "GENHOSP|V7", "facility": "GENHOSP"}}}""")
    eps = old.episodes
    assert all(e.care is None for e in eps.values())
    assert [episode_facts(e).status for e in eps.values()] == [
        "discharged", "cancelled", "active"]
    assert episode_facts(eps["GENHOSP|@202611020800"]).discharge_at == at(4)
    # V7 has no admit time: as late as the news, later than the discharged stay.
    facts = [episode_facts(e) for e in eps.values()]
    assert episode_without_visit(facts, "GENHOSP", EventKind.TRANSFER, None, at(5)) == \
        "GENHOSP|V7"
    assert episode_without_visit(facts[:2], "GENHOSP", EventKind.TRANSFER, None, at(5)) == \
        "GENHOSP|@202611020800"


def test_the_followed_statuses_survive_the_stored_form() -> None:
    run = _run()
    run.event(visitless(EventKind.ADMIT, 1, at(0), admit_at=at(0)))
    run.event(visitless(EventKind.DISCHARGE, 2, at(1), discharge_at=at(1), disposition="50"))
    state = run.referral_states[KEY]
    stored = state.model_dump_json(exclude_none=True)  # as the worker stores it
    back = ReferralPatientState.model_validate_json(stored)
    assert back == state
    assert back.episodes["GENHOSP|@202611020800"].care == FollowedEpisode(
        status="closed", admit_at=at(0), discharge_at=at(1), closed_at=at(1),
        class_="inpatient", disposition="50")
    # A future field in the stored form is ignored, as elsewhere in the state.
    raw = back.model_dump(mode="json")
    raw["episodes"]["GENHOSP|@202611020800"]["care"]["later"] = 1
    assert ReferralPatientState.model_validate(raw) == state
