"""The referral engine: ``(state, input, now, context) -> (new_state, emits)``, per patient.

Inputs (all keyed by patient key, co-partitioned): canonical events (care.events), risk
records (care.flags), assignments (care.assignments), consent (config.consent) and agency
status updates (referrals.updates). Emits: :class:`ReferralOutput` on care.referrals, the
agency copy on ``referrals.<agency>`` (keyed by the agency Task id), a
:class:`DeliveryJob` on referrals.deliveries when the agency has a webhook, and an
escalation on care.escalations when no agency is left for a need.

Rules (documented here so they can be argued with in one place):

* **When a referral goes out.** As soon as a need is known on an encounter whose class
  is in ``referrals.encounter_classes`` (inpatient, observation, ED): at admission for a
  Z code on the admit, at discharge for a home-health disposition. The agency copy
  carries the discharge date when known; a discharge after the referral went out sends
  version+1 with the date (``republish_on_discharge``), because agencies plan the first
  contact around it and waiting for discharge would lose the days a housing search
  needs.
* **Who is referring.** The episode's case manager (care.assignments) with phone and
  email from the roster; until one is assigned, the covering team (its supervisor's
  contact). A change of referring contact on an open referral sends version+1.
* **Matching** (:mod:`streams.referrals.matching`): service, area, language, accepting,
  not tried yet; directory order. A rejection (or ``max_attempts`` reached) moves on
  to the next candidate with ``attempt + 1`` under the same ``referral_id``; when none
  is left the last record gets ``outcome: no_agency_available`` and the team's
  supervisor an escalation (``referral.no_agency``); the same escalation when no agency
  matched at all.
* **Suppression.** A consent opt-out (latest ``at`` wins) or PD1-12 protection = Y stops
  new referrals and cancels the open ones the agency has not accepted yet (status
  ``cancelled``, reason ``patient_opted_out`` / ``protection_indicator``; the agency is
  told). Accepted and in-progress referrals continue: the agency already works with the
  patient, who can tell them directly; cancelling behind their back would drop a
  housing placement half done. Lifting the suppression (opt-in, protection N) refers
  the needs of episodes still open or discharged within ``opt_in_window_days``.
* **Endings.** Death (PID-30 / deceased, or a death disposition) or discharge to hospice
  cancels every open referral; a cancelled admission (A11) withdraws the referrals it
  caused as ``entered-in-error``; a cancelled discharge (A13) withdraws the
  not-yet-accepted referrals detected only from the discharge disposition.
* **Agency updates** apply only to the addressed agency's own Task; transitions outside
  :data:`TRANSITIONS` are ignored and counted (``ignored_updates``). Terminal statuses
  stay terminal. accepted -> ``accepted_at``, ``time_to_accept_s``; completed ->
  ``completed_at``, ``time_to_complete_s`` (both measured from ``requested_at``).
  The agency's own changes go to care.referrals and its topic, but no webhook (it knows).

Pure: no clock (``decided_at`` is the cause's own time), no I/O; the input state is never
mutated (deep copy); a duplicate input id is a no-op; every id is derived
(:func:`schemas.canonical.derive_id`), so a replay reproduces every output byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mappers import fhir_out
from mappers.fhir_referral import agency_copy, agency_patient, hub_bundle
from schemas import topics
from schemas.canonical import Address, CanonicalEvent, EventKind, derive_id
from schemas.care import AssignmentOutput, EscalationOutput, FlagOutput
from schemas.referrals import (
    TERMINAL_STATUSES,
    ConsentRecord,
    Contact,
    DeliveryJob,
    ReferralOutput,
    ReferralUpdate,
)
from streams.care.engine import Emit
from streams.care.roster import Roster, Team, teams_for
from streams.referrals.config import ReferralsConfig
from streams.referrals.directory import Directory
from streams.referrals.matching import PatientArea, candidates, suppression
from streams.referrals.needs import Need, detect_needs
from streams.referrals.state import (
    AgencyTask,
    Demographics,
    EpisodeInfo,
    Referral,
    ReferralPatientState,
)

__all__ = ["TRANSITIONS", "ReferralContext", "ReferralInput", "apply_referral",
           "decode_referral_input", "input_id"]

ReferralInput = CanonicalEvent | FlagOutput | AssignmentOutput | ConsentRecord | ReferralUpdate

TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"accepted", "rejected", "in-progress", "cancelled"}),
    "accepted": frozenset({"in-progress", "completed", "cancelled"}),
    "in-progress": frozenset({"completed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "completed", "cancelled"}),
}
"""Agency status changes allowed from each open status (Gravity SDOH Task workflow;
``requested -> in-progress`` implies acceptance). Terminal statuses allow nothing."""

OPT_IN_WINDOW = timedelta(days=30)
"""Lifting a suppression refers the needs of episodes discharged at most this long ago."""


@dataclass(frozen=True)
class ReferralContext:
    config: ReferralsConfig
    directory: Directory
    roster: Roster
    render_fhir: bool = True


def input_id(msg: ReferralInput) -> str:
    """The id a patient remembers to drop a duplicate of ``msg``."""
    if isinstance(msg, CanonicalEvent):
        return msg.event_id
    if isinstance(msg, FlagOutput | AssignmentOutput | ReferralUpdate):
        return msg.id
    return derive_id("consent", msg.patient_key, msg.referrals, msg.at.isoformat())


def decode_referral_input(topic: str, value: bytes) -> ReferralInput:
    """The model of a record read by the referrals stage, by catalogue topic name."""
    if topic == topics.CARE_EVENTS.name:
        return CanonicalEvent.model_validate_json(value)
    if topic == topics.CARE_FLAGS.name:
        return FlagOutput.model_validate_json(value)
    if topic == topics.CARE_ASSIGNMENTS.name:
        return AssignmentOutput.model_validate_json(value)
    if topic == topics.CONFIG_CONSENT.name:
        return ConsentRecord.model_validate_json(value)
    if topic == topics.REFERRALS_UPDATES.name:
        return ReferralUpdate.model_validate_json(value)
    raise ValueError(f"the referrals stage does not read topic {topic!r}")


def apply_referral(state: ReferralPatientState | None, key: str, msg: ReferralInput, *,
                   now: datetime, ctx: ReferralContext
                   ) -> tuple[ReferralPatientState, list[Emit]]:
    """Apply one input to one patient's referral state (see the module docstring).

    ``now`` is only a fallback; every input carries its own time.
    """
    p = state.model_copy(deep=True) if state is not None else ReferralPatientState(key=key)
    out: list[Emit] = []
    mid = input_id(msg)
    if mid in p.seen:
        return p, out
    run = _Run(p, ctx, out)
    if isinstance(msg, CanonicalEvent):
        run.on_event(msg)
    elif isinstance(msg, FlagOutput):
        run.on_flag(msg)
    elif isinstance(msg, AssignmentOutput):
        run.on_assignment(msg)
    elif isinstance(msg, ConsentRecord):
        run.on_consent(msg)
    else:
        run.on_update(msg)
    p.seen.append(mid)
    del p.seen[:-ctx.config.remember_inputs]
    return p, out


class _Run:
    """One application of one input (holds the copied state, context and emits)."""

    def __init__(self, p: ReferralPatientState, ctx: ReferralContext, out: list[Emit]) -> None:
        self.p, self.ctx, self.cfg, self.out = p, ctx, ctx.config, out

    # --- inputs

    def on_event(self, ev: CanonicalEvent) -> None:
        p, pat = self.p, ev.patient
        _absorb_demographics(p.demographics, ev)
        was_suppressed = self._suppressed() is not None
        if pat.protection_indicator is not None:
            p.protection = pat.protection_indicator
        if pat.protection_indicator and not was_suppressed:
            self._suppress("protection_indicator", ev.event_id, ev.occurred_at,
                           "referral.protection")
        if ev.kind == EventKind.MERGE or ev.encounter is None:
            if pat.deceased:
                self._end_all("patient_deceased", ev.event_id, ev.occurred_at,
                              "referral.cancel.deceased")
                p.deceased = True
            elif was_suppressed and self._suppressed() is None:
                self._reconsider(ev.event_id, ev.occurred_at)
            return
        ep = self._episode(ev)
        if ep is None:
            return
        kind = ev.kind
        if kind == EventKind.CANCEL_ADMIT:
            ep.cancelled = True
            for ref in self._referrals_of(ep):
                self._withdraw(ref, ep, "admission_cancelled", ev.event_id, ev.occurred_at,
                               "referral.withdraw.cancel_admit", only_unaccepted=False)
            return
        if kind == EventKind.CANCEL_DISCHARGE:
            ep.discharge_at, ep.disposition = None, None
            for ref in self._referrals_of(ep):
                if ref.rule == "need.disposition":
                    self._withdraw(ref, ep, "discharge_cancelled", ev.event_id,
                                   ev.occurred_at, "referral.withdraw.cancel_discharge",
                                   only_unaccepted=True)
            return
        _absorb_encounter(ep, ev)
        disposition = (ep.disposition or "").strip().casefold()
        deceased = bool(pat.deceased) or (ep.discharge_at is not None and disposition in {
            c.casefold() for c in self.cfg.death_dispositions})
        if deceased:
            self._end_all("patient_deceased", ev.event_id, ev.occurred_at,
                          "referral.cancel.deceased")
            p.deceased = True
            return
        if ep.discharge_at is not None and disposition in {
                c.casefold() for c in self.cfg.hospice_dispositions}:
            self._end_all("discharged_to_hospice", ev.event_id, ev.occurred_at,
                          "referral.cancel.hospice")
            return
        if was_suppressed and self._suppressed() is None:
            self._reconsider(ev.event_id, ev.occurred_at)
        self._refer(ep, ev.event_id, ev.occurred_at)
        if ep.discharge_at is not None and self.cfg.republish_on_discharge:
            day = self._discharge_date(ep)
            for ref in self._referrals_of(ep):
                task = ref.current()
                if task is not None and task.status not in TERMINAL_STATUSES and \
                        task.sent_discharge != day:
                    self._change(ref, task, ep, ev.event_id, ev.occurred_at,
                                 "referral.discharge", notify=True)

    def on_flag(self, flag: FlagOutput) -> None:
        if not flag.encounter_key:
            return
        ep = self.p.episodes.get(flag.encounter_key)
        if ep is None:
            # The flag overtook its event (different topics): remember its reasons; the
            # event refers them when it arrives with the encounter class.
            ep = self.p.episodes[flag.encounter_key] = EpisodeInfo(
                key=flag.encounter_key, facility=flag.facility)
        if flag.status == "withdrawn":
            ep.flag_reasons = []
            return
        ep.flag_reasons = [(r.code, [f.code for f in r.factors]) for r in flag.reasons]
        self._refer(ep, flag.id, flag.decided_at)

    def on_assignment(self, a: AssignmentOutput) -> None:
        if not a.encounter_key:
            return
        ep = self.p.episodes.get(a.encounter_key)
        if ep is None:
            ep = self.p.episodes[a.encounter_key] = EpisodeInfo(
                key=a.encounter_key, facility=a.facility)
        if a.status == "assigned":
            ep.manager_id, ep.team = a.manager_id, a.team or ep.team
        elif a.status == "unassigned":
            ep.manager_id, ep.team = None, a.team or ep.team
        else:
            return  # released: the referral still names who referred
        for ref in self._referrals_of(ep):
            task = ref.current()
            if task is not None and task.status not in TERMINAL_STATUSES and \
                    task.sent_contact != _contact_list(self._contact(ep)):
                self._change(ref, task, ep, a.id, a.decided_at, "referral.contact",
                             notify=True)

    def on_consent(self, c: ConsentRecord) -> None:
        p = self.p
        if p.consent_at is not None and c.at < p.consent_at:
            return  # an older record arriving late: the latest wins
        was_suppressed = self._suppressed() is not None
        p.consent, p.consent_at = c.referrals, c.at
        cause = input_id(c)
        if c.referrals == "opt-out":
            # Also when already suppressed by protection: nothing open should be left.
            self._suppress("patient_opted_out", cause, c.at, "referral.opt_out")
        elif was_suppressed and self._suppressed() is None:
            self._reconsider(cause, c.at)

    def on_update(self, u: ReferralUpdate) -> None:
        found = self._find_task(u.referral_task_id)
        if found is None:
            self._ignore("unknown_task")
            return
        ref, task = found
        if task.agency_id != u.agency_id:
            self._ignore("wrong_agency")
            return
        if u.status not in TRANSITIONS.get(task.status, frozenset()):
            self._ignore("unchanged" if u.status == task.status else "invalid_transition")
            return
        task.status, task.status_reason = u.status, u.reason
        if u.status in ("accepted", "in-progress") and task.accepted_at is None:
            task.accepted_at = u.at
        if u.status == "completed":
            task.completed_at = u.at
        ep = self.p.episodes.get(ref.episode_key) or EpisodeInfo(key=ref.episode_key)
        self._change(ref, task, ep, u.id, u.at, f"referral.update.{u.status}", notify=False)
        if u.status == "rejected":
            self._next_agency(ref, ep, u.id, u.at, "referral.rereferral")

    # --- decisions

    def _refer(self, ep: EpisodeInfo, cause: str, at: datetime) -> None:
        cfg = self.cfg
        if not cfg.enabled or ep.cancelled or ep.class_ not in cfg.encounter_classes:
            return
        if self.p.deceased or self._suppressed() is not None:
            return
        needs = detect_needs(ep.diagnoses, ep.disposition if ep.discharge_at else None,
                             ep.flag_reasons, cfg)
        for need in needs:
            rid = derive_id("referral", self.p.key, ep.key, need.service)
            ref = self.p.referrals.get(rid)
            if ref is not None:
                ref.need_codes += [c for c in need.codes if c not in ref.need_codes]
                continue
            ref = self.p.referrals[rid] = _new_referral(rid, ep, need, cause, at)
            self._next_agency(ref, ep, cause, at, "referral.new")

    def _next_agency(self, ref: Referral, ep: EpisodeInfo, cause: str, at: datetime,
                     rule: str) -> None:
        choice = None
        if len(ref.tasks) < self.cfg.max_attempts:
            found = candidates(self.ctx.directory, ref.need, self._area(), ref.tried())
            choice = found[0] if found else None
        if choice is None:
            ref.outcome = "no_agency_available"
            last = ref.current()
            if last is not None:
                last.outcome = ref.outcome
                self._change(ref, last, ep, cause, at, "referral.no_agency", notify=False)
            self._escalate(ref, ep, cause, at)
            return
        task = AgencyTask(
            task_id=derive_id(ref.referral_id, choice.id), agency_id=choice.id,
            attempt=len(ref.tasks) + 1, requested_at=at, updated_at=at,
            cause_event_id=cause, rule=rule)
        ref.tasks.append(task)
        self._publish(ref, task, ep, cause, at, rule, notify=True)

    def _suppress(self, reason: str, cause: str, at: datetime, rule: str) -> None:
        for ref in self.p.referrals.values():
            task = ref.current()
            if task is not None and task.status == "requested":
                task.status, task.status_reason = "cancelled", reason
                ep = self.p.episodes.get(ref.episode_key) or EpisodeInfo(key=ref.episode_key)
                self._change(ref, task, ep, cause, at, rule, notify=True)

    def _reconsider(self, cause: str, at: datetime) -> None:
        for ep in sorted(self.p.episodes.values(), key=lambda e: e.key):
            if ep.discharge_at is None or at - ep.discharge_at <= OPT_IN_WINDOW:
                self._refer(ep, cause, at)

    def _end_all(self, reason: str, cause: str, at: datetime, rule: str) -> None:
        for ref in self.p.referrals.values():
            task = ref.current()
            if task is not None and task.status not in TERMINAL_STATUSES:
                task.status, task.status_reason = "cancelled", reason
                ep = self.p.episodes.get(ref.episode_key) or EpisodeInfo(key=ref.episode_key)
                self._change(ref, task, ep, cause, at, rule, notify=True)

    def _withdraw(self, ref: Referral, ep: EpisodeInfo, reason: str, cause: str, at: datetime,
                  rule: str, *, only_unaccepted: bool) -> None:
        task = ref.current()
        if task is None or task.status in TERMINAL_STATUSES:
            return
        if only_unaccepted and task.status != "requested":
            return
        task.status, task.status_reason = "entered-in-error", reason
        self._change(ref, task, ep, cause, at, rule, notify=True)

    # --- publishing

    def _change(self, ref: Referral, task: AgencyTask, ep: EpisodeInfo, cause: str,
                at: datetime, rule: str, *, notify: bool) -> None:
        task.version += 1
        task.updated_at = max(task.updated_at, at)
        self._publish(ref, task, ep, cause, at, rule, notify=notify)

    def _publish(self, ref: Referral, task: AgencyTask, ep: EpisodeInfo, cause: str,
                 at: datetime, rule: str, *, notify: bool) -> None:
        d = self.p.demographics
        contact = self._contact(ep)
        discharge = self._discharge_date(ep)
        copy = agency_copy(
            task_id=task.task_id, referral_id=ref.referral_id, agency_id=task.agency_id,
            status=task.status, status_reason=task.status_reason, need=ref.need,
            patient=agency_patient(
                family_name=d.family_name, given_names=d.given_names, birth_date=d.birth_date,
                phone=d.phone, address=Address(line=d.line, city=d.city, state=d.state,
                                               postal_code=d.postal_code),
                language=d.language),
            discharge_date=discharge, referring=contact, authored_at=task.requested_at,
            updated_at=task.updated_at, version=task.version,
            render_fhir=self.ctx.render_fhir)
        task.sent_discharge, task.sent_contact = discharge, _contact_list(contact)
        output = ReferralOutput(
            id=task.task_id, referral_id=ref.referral_id, cause_event_id=cause, rule=rule,
            patient_key=self.p.key, encounter_key=ep.key, facility=ep.facility,
            decided_at=at, agency_id=task.agency_id, need=ref.need,
            need_codes=list(ref.need_codes), status=task.status,  # type: ignore[arg-type]
            status_reason=task.status_reason, attempt=task.attempt, manager_id=ep.manager_id,
            version=task.version, requested_at=task.requested_at, accepted_at=task.accepted_at,
            completed_at=task.completed_at,
            time_to_accept_s=_seconds(task.requested_at, task.accepted_at),
            time_to_complete_s=_seconds(task.requested_at, task.completed_at),
            outcome=task.outcome, agency_copy=copy)  # type: ignore[arg-type]
        if self.ctx.render_fhir:
            output = output.model_copy(update={"fhir": hub_bundle(output)})
        self.out.append(Emit(topics.CARE_REFERRALS.name, self.p.key, output))
        agency = self.ctx.directory.by_id(task.agency_id)
        if agency is None:
            return  # removed from the directory: its topic may be gone; the hub view stays
        self.out.append(Emit(topics.agency_topic(agency.id), task.task_id, copy))
        hook = agency.delivery.webhook
        if notify and hook is not None:
            self.out.append(Emit(topics.REFERRALS_DELIVERIES.name,
                                 derive_id(task.task_id, task.version), DeliveryJob(
                id=derive_id(task.task_id, task.version), agency_id=agency.id, url=hook.url,
                secret_env=hook.secret_env, body=copy.model_dump_json(exclude_none=True),
                created_at=at, referral_task_id=task.task_id, version=task.version)))

    def _escalate(self, ref: Referral, ep: EpisodeInfo, cause: str, at: datetime) -> None:
        team = self._team(ep)
        esc = EscalationOutput(
            id=derive_id(ref.referral_id, "referral.no_agency", len(ref.tasks)),
            cause_event_id=cause, rule="referral.no_agency", patient_key=self.p.key,
            encounter_key=ep.key, facility=ep.facility, decided_at=at,
            reason="no_agency_available", team=team.id if team else ep.team,
            supervisor=team.supervisor if team else None, task_kind=f"referral:{ref.need}")
        if self.ctx.render_fhir:
            esc = esc.model_copy(update={"fhir": fhir_out.escalation_task(esc, None)})
        self.out.append(Emit(topics.CARE_ESCALATIONS.name, self.p.key, esc))

    # --- helpers

    def _suppressed(self) -> object | None:
        return suppression(self.p.opted_out(), self.p.consent_at, self.p.protection)

    def _ignore(self, reason: str) -> None:
        self.p.ignored_updates[reason] = self.p.ignored_updates.get(reason, 0) + 1

    def _area(self) -> PatientArea:
        d = self.p.demographics
        return PatientArea(postal_code=d.postal_code, county=d.county, language=d.language)

    def _referrals_of(self, ep: EpisodeInfo) -> list[Referral]:
        return sorted((r for r in self.p.referrals.values() if r.episode_key == ep.key),
                      key=lambda r: (r.need, r.referral_id))

    def _find_task(self, task_id: str) -> tuple[Referral, AgencyTask] | None:
        for ref in self.p.referrals.values():
            for task in ref.tasks:
                if task.task_id == task_id:
                    return ref, task
        return None

    def _team(self, ep: EpisodeInfo) -> Team | None:
        roster = self.ctx.roster
        if ep.team:
            team = roster.team(ep.team)
            if team is not None:
                return team
        found = teams_for(roster, ep.facility, ep.unit)
        return found[0] if found else None

    def _contact(self, ep: EpisodeInfo) -> Contact:
        roster = self.ctx.roster
        if ep.manager_id:
            m = roster.manager(ep.manager_id)
            if m is not None:
                return Contact(name=m.name or m.id, phone=m.phone, email=m.email)
        team = self._team(ep)
        if team is None:
            return Contact()
        sup = roster.manager(team.supervisor) if team.supervisor else None
        return Contact(name=team.name or team.id, phone=sup.phone if sup else None,
                       email=sup.email if sup else None)

    def _discharge_date(self, ep: EpisodeInfo) -> date | None:
        return ep.discharge_at.date() if ep.discharge_at is not None else None

    def _episode(self, ev: CanonicalEvent) -> EpisodeInfo | None:
        enc = ev.encounter
        assert enc is not None
        facility = (enc.location.facility if enc.location else None) or ev.source.facility
        if enc.id:
            key = f"{facility or ''}|{enc.id}"
        else:
            going = [e for e in self.p.episodes.values()
                     if e.facility == facility and not e.cancelled]
            if going and ev.kind not in (EventKind.ADMIT, EventKind.REGISTER):
                return max(going, key=lambda e: (e.admit_at or ev.occurred_at, e.key))
            if ev.kind not in (EventKind.ADMIT, EventKind.REGISTER):
                return None
            at = enc.admit_at or ev.occurred_at
            key = f"{facility or ''}|@{at.strftime('%Y%m%d%H%M')}"
        ep = self.p.episodes.get(key)
        if ep is None:
            if ev.kind in (EventKind.CANCEL_ADMIT, EventKind.CANCEL_DISCHARGE,
                           EventKind.CANCEL_TRANSFER):
                return None
            ep = self.p.episodes[key] = EpisodeInfo(key=key, facility=facility,
                                                    first_event_id=ev.event_id)
        ep.facility = ep.facility or facility
        return ep


def _new_referral(rid: str, ep: EpisodeInfo, need: Need, cause: str, at: datetime) -> Referral:
    return Referral(referral_id=rid, episode_key=ep.key, need=need.service,
                    need_codes=list(need.codes), rule=need.rule, cause_event_id=cause,
                    created_at=at)


def _absorb_demographics(d: Demographics, ev: CanonicalEvent) -> None:
    pat = ev.patient
    if pat.family_name or pat.given_names:
        d.family_name, d.given_names = pat.family_name, list(pat.given_names)
    if pat.birth_date:
        d.birth_date = pat.birth_date
    if pat.phone:
        d.phone = pat.phone
    if pat.language:
        d.language = pat.language
    addr = pat.address
    if addr is not None and (addr.line or addr.city or addr.postal_code or addr.county):
        d.line, d.city, d.state = list(addr.line), addr.city, addr.state
        d.postal_code, d.county = addr.postal_code, addr.county


def _absorb_encounter(ep: EpisodeInfo, ev: CanonicalEvent) -> None:
    enc = ev.encounter
    if enc is None:
        return
    if enc.class_ is not None:
        ep.class_ = enc.class_.value
    if enc.location is not None and enc.location.unit:
        ep.unit = enc.location.unit
    if enc.admit_at is not None:
        ep.admit_at = enc.admit_at
    discharging = ev.kind == EventKind.DISCHARGE or (
        enc.discharge_at is not None and ev.kind != EventKind.UPDATE)
    if discharging or (enc.discharge_at is not None and ep.discharge_at is not None):
        ep.discharge_at = enc.discharge_at or ev.occurred_at
    if enc.discharge_disposition:
        ep.disposition = enc.discharge_disposition
    if ev.diagnoses:
        # Union: a need once documented stays known even if a later update lists fewer
        # diagnoses (A08s often carry only the current problem).
        known = {(c, s) for c, s in ep.diagnoses}
        known |= {(dx.code, dx.system) for dx in ev.diagnoses}
        ep.diagnoses = sorted(known, key=lambda x: (x[0], x[1] or ""))


def _contact_list(c: Contact) -> list[str | None]:
    return [c.name, c.phone, c.email]


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if end is not None else None
