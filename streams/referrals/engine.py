"""The referral engine: ``(state, input, now, context) -> (new_state, emits)``, per patient.

Inputs (all keyed by patient key, co-partitioned): canonical events (care.events), risk
records (care.flags), assignments (care.assignments), consent (config.consent) and agency
status updates (referrals.updates, which also carries this stage's own merge commands,
:class:`ReferralCommand`). Emits: :class:`ReferralOutput` on care.referrals, the agency
copy on ``referrals.<agency>`` (keyed by the agency Task id), a :class:`DeliveryJob` on
referrals.deliveries when the agency has a webhook, an escalation on care.escalations
when no agency is left for a need, and merge commands on referrals.updates.

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
* **What the agency hears.** The hub's record (care.referrals) is republished with
  ``version + 1`` on every change; the agency copy only when what it says changed (a
  content hash of the minimum-necessary projection, kept in the Task state, so it holds
  across restarts). The copy has its own ``version`` (``AgencyTask.agency_version``):
  an unchanged copy is not put on ``referrals.<agency>`` again and no webhook is sent (a
  new case manager with the same contact, a discharge time on the same day, a county
  the copy does not carry). Hub cancellations change the status, so they always go out.
* **Address and demographics changes** (A08, A31, any event with new values): an open
  referral whose agency copy would change is re-sent. A referral still ``requested``
  whose agency no longer serves the new area (ZIP or county) is cancelled there
  (``patient_moved_out_of_area``, the agency is told) and goes to the next matching
  agency (``attempt + 1``); accepted ones stay with their agency, which gets the new
  address. Nothing new goes out while referrals are suppressed.
* **Merges** (A40/A47: a merge event on the surviving key names the prior key), as in
  the care stage: the survivor asks the prior key (``handover`` on referrals.updates,
  keyed by the prior key), which answers with its whole referral state (``absorb``,
  keyed by the survivor) and from then on forwards whatever reaches it (agency updates
  still addressed to the old key, late events) to the survivor. Until the absorb
  arrives the survivor holds its inputs (:class:`ReferralMergeWait`), so a need the
  prior key already referred is not referred again. Absorbed referrals keep their ids
  (derived once, from the prior key) and open ones are republished under the survivor's
  key (the agency copy only if it changed). The same need of the same episode under
  both keys (a wait that expired): the more advanced one is kept, the other's open
  Task withdrawn (``entered-in-error``, ``merged_duplicate``). Consent: the latest
  record of either key wins.

Pure: no clock (``decided_at`` is the cause's own time), no I/O; the input state is never
mutated (deep copy); a duplicate input id is a no-op; every id is derived
(:func:`schemas.canonical.derive_id`), so a replay reproduces every output byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import orjson

from mappers import fhir_out
from mappers.fhir_referral import (
    agency_bundle,
    agency_content_hash,
    agency_copy,
    agency_patient,
    hub_bundle,
)
from schemas import topics
from schemas.canonical import Address, CanonicalEvent, EventKind, derive_id
from schemas.care import AssignmentOutput, EscalationOutput, FlagOutput
from schemas.referrals import (
    TERMINAL_STATUSES,
    AgencyReferral,
    ConsentRecord,
    Contact,
    DeliveryJob,
    ReferralCommand,
    ReferralOutput,
    ReferralUpdate,
)
from streams.care.engine import Emit
from streams.care.episodes import (
    EpisodeFacts,
    FollowedEpisode,
    closed_by_timer,
    episode_facility,
    episode_key,
    episode_without_visit,
    follow_episode,
)
from streams.care.roster import Roster, Team, teams_for
from streams.referrals.config import ReferralsConfig
from streams.referrals.directory import Directory
from streams.referrals.matching import (
    PatientArea,
    Suppression,
    candidates,
    in_service_area,
    suppression,
)
from streams.referrals.needs import Need, detect_needs
from streams.referrals.state import (
    AgencyTask,
    Demographics,
    EpisodeInfo,
    HeldInput,
    Referral,
    ReferralMergeWait,
    ReferralPatientState,
)

__all__ = ["MERGED_DUPLICATE", "MOVED_OUT_OF_AREA", "TRANSITIONS", "ReferralContext",
           "ReferralInput", "apply_referral", "decode_referral_input", "episode_facts",
           "followed", "input_id"]

ReferralInput = (CanonicalEvent | FlagOutput | AssignmentOutput | ConsentRecord | ReferralUpdate
                 | ReferralCommand)

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

MOVED_OUT_OF_AREA = "patient_moved_out_of_area"
"""Status reason of a referral cancelled because the agency does not serve the new address."""
MERGED_DUPLICATE = "merged_duplicate"
"""Status reason of a Task withdrawn because a merge brought the same referral twice."""


@dataclass(frozen=True)
class ReferralContext:
    config: ReferralsConfig
    directory: Directory
    roster: Roster
    render_fhir: bool = True
    merge_wait_s: float | None = None
    """How long a surviving key holds its inputs for the prior key's referrals (the
    worker passes the care stage's ``episode.merge_wait_seconds``; ``OfflineRun`` does the
    same when it is None, since it routes the merge commands like the topic does). None
    here, used directly: no wait (tests that feed one key at a time)."""
    merge_buffer_max: int = 50


def input_id(msg: ReferralInput) -> str:
    """The id a patient remembers to drop a duplicate of ``msg``."""
    if isinstance(msg, CanonicalEvent):
        return msg.event_id
    if isinstance(msg, FlagOutput | AssignmentOutput | ReferralUpdate):
        return msg.id
    if isinstance(msg, ReferralCommand):
        return derive_id("referral-command", msg.cause_event_id, msg.op, msg.target_key)
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
        # The agencies' updates and this stage's merge commands share the topic (both
        # keyed by patient key); a command says so in ``type``.
        data = orjson.loads(value)
        if isinstance(data, dict) and data.get("type") == "command":
            return ReferralCommand.model_validate(data)
        return ReferralUpdate.model_validate(data)
    raise ValueError(f"the referrals stage does not read topic {topic!r}")


def apply_referral(state: ReferralPatientState | None, key: str, msg: ReferralInput, *,
                   now: datetime, ctx: ReferralContext
                   ) -> tuple[ReferralPatientState, list[Emit]]:
    """Apply one input to one patient's referral state (see the module docstring).

    ``now`` is the processing time: a fallback for decisions (every input carries its
    own time) and the clock of a merge wait.
    """
    p = state.model_copy(deep=True) if state is not None else ReferralPatientState(key=key)
    out: list[Emit] = []
    run = _Run(p, ctx, out, now)
    run.admit(msg)
    return run.p, out


class _Run:
    """One application of one input (holds the copied state, context and emits)."""

    def __init__(self, p: ReferralPatientState, ctx: ReferralContext, out: list[Emit],
                 now: datetime) -> None:
        self.p, self.ctx, self.cfg, self.out, self.now = p, ctx, ctx.config, out, now

    # --- admission: duplicates, merge waits, merged-away keys

    def admit(self, msg: ReferralInput) -> None:
        mid = input_id(msg)
        if mid in self.p.seen:
            return
        self._admit(msg)
        self.p.seen.append(mid)
        del self.p.seen[:-self.cfg.remember_inputs]

    def _admit(self, msg: ReferralInput) -> None:
        """Apply ``msg`` now, or hold it back while a merge's referrals are on their way."""
        wait = self.p.merge_wait
        if wait is not None and not (isinstance(msg, ReferralCommand) and msg.op == "absorb"
                                     and msg.cause_event_id in wait.awaiting):
            limit = self.ctx.merge_wait_s
            if limit is not None and len(wait.buffered) < self.ctx.merge_buffer_max and \
                    self.now < wait.since + timedelta(seconds=limit):
                wait.buffered.append(HeldInput(topic=_topic_of(msg),
                                               value=msg.model_dump(mode="json")))
                return
            self._stop_waiting(expired=True)
        self._apply(msg)

    def _stop_waiting(self, *, expired: bool) -> None:
        """End the merge wait and replay what it held, in order (a replayed merge may
        start a new wait, which holds the rest again)."""
        wait = self.p.merge_wait
        assert wait is not None
        self.p.merge_wait = None
        if expired:
            self.p.merge_waits_expired += 1
        for held in wait.buffered:
            self._admit(decode_referral_input(held.topic, orjson.dumps(held.value)))

    def _apply(self, msg: ReferralInput) -> None:
        if self.p.merged_into and not isinstance(msg, ReferralCommand):
            # This key was merged away: its inputs belong to the survivor, in order.
            self.out.append(Emit(topics.REFERRALS_UPDATES.name, self.p.merged_into,
                                 ReferralCommand(
                op="forward", cause_event_id=input_id(msg), decided_at=_time_of(msg),
                target_key=self.p.merged_into,
                message={"topic": _topic_of(msg), "value": msg.model_dump(mode="json")})))
        elif isinstance(msg, CanonicalEvent):
            self.on_event(msg)
        elif isinstance(msg, FlagOutput):
            self.on_flag(msg)
        elif isinstance(msg, AssignmentOutput):
            self.on_assignment(msg)
        elif isinstance(msg, ConsentRecord):
            self.on_consent(msg)
        elif isinstance(msg, ReferralUpdate):
            self.on_update(msg)
        else:
            self.on_command(msg)

    # --- merges

    def _merge_started(self, ev: CanonicalEvent) -> None:
        if ev.merge is None or ev.merge.prior_patient_key in ("", self.p.key):
            return
        self.out.append(Emit(topics.REFERRALS_UPDATES.name, ev.merge.prior_patient_key,
                             ReferralCommand(op="handover", cause_event_id=ev.event_id,
                                             decided_at=ev.occurred_at, target_key=self.p.key)))
        if self.ctx.merge_wait_s is not None:
            self.p.merge_wait = ReferralMergeWait(awaiting=[ev.event_id], since=self.now)

    def on_command(self, cmd: ReferralCommand) -> None:
        p = self.p
        if cmd.op == "handover":
            # Always answer, with nothing to move if need be: the survivor is waiting.
            moved = None
            if not p.merged_into and (p.referrals or p.episodes or p.consent is not None
                                      or p.protection is not None or p.deceased
                                      or p.demographics != Demographics()):
                moved = p.model_copy(update={"seen": [], "merge_wait": None}).model_dump(
                    mode="json")
            self.out.append(Emit(topics.REFERRALS_UPDATES.name, cmd.target_key,
                                 ReferralCommand(op="absorb", cause_event_id=cmd.cause_event_id,
                                                 decided_at=cmd.decided_at,
                                                 target_key=cmd.target_key, state=moved)))
            if not p.merged_into:
                self.p = ReferralPatientState(key=p.key, merged_into=cmd.target_key,
                                              seen=p.seen, merged_from=p.merged_from,
                                              partition=p.partition)
            return
        if cmd.op == "absorb":
            if cmd.state is not None:
                self._absorb(ReferralPatientState.model_validate(cmd.state), cmd)
            wait = p.merge_wait
            if wait is not None and cmd.cause_event_id in wait.awaiting:
                wait.awaiting = [c for c in wait.awaiting if c != cmd.cause_event_id]
                if not wait.awaiting:
                    self._stop_waiting(expired=False)
            return
        if cmd.message is not None:  # forward
            self.admit(decode_referral_input(cmd.message["topic"],
                                             orjson.dumps(cmd.message["value"])))

    def _absorb(self, src: ReferralPatientState, cmd: ReferralCommand) -> None:
        """Merge a prior key's referral state into this (surviving) key."""
        p, cause, at = self.p, cmd.cause_event_id, cmd.decided_at
        if src.key == p.key or src.key in p.merged_from:
            return  # already here (a replayed absorb)
        _fill_demographics(p.demographics, src.demographics)
        if p.protection is None:
            p.protection = src.protection
        p.deceased = p.deceased or src.deceased
        if src.consent_at is not None and (p.consent_at is None or src.consent_at > p.consent_at):
            p.consent, p.consent_at = src.consent, src.consent_at
        for key, ep in src.episodes.items():
            mine = p.episodes.get(key)
            if mine is None:
                p.episodes[key] = ep
                continue
            # The survivor's own record of an episode wins; a need documented under
            # either key stays known.
            mine.diagnoses = _union_diagnoses(mine.diagnoses, ep.diagnoses)
            mine.flag_reasons = mine.flag_reasons or ep.flag_reasons
            mine.manager_id = mine.manager_id or ep.manager_id
            mine.team = mine.team or ep.team
        # ignored_updates stay behind: they were counted where they happened.
        adopted: list[Referral] = []
        for rid in sorted(src.referrals):
            ref = src.referrals[rid]
            if rid in p.referrals:
                continue
            twin = self._referral_for(ref.episode_key, ref.need)
            p.referrals[rid] = ref
            if twin is None:
                adopted.append(ref)
                continue
            keep, drop = sorted((twin, ref), key=_merge_rank)
            drop.superseded_by = keep.referral_id
            keep.need_codes += [c for c in drop.need_codes if c not in keep.need_codes]
            if keep is ref:
                adopted.append(ref)
            task = drop.current()
            if task is not None and task.status not in TERMINAL_STATUSES:
                task.status, task.status_reason = "entered-in-error", MERGED_DUPLICATE
                self._change(drop, task, self._ep_of(drop), cause, at,
                             "referral.merge.duplicate", notify=True)
        p.merged_from = sorted({*p.merged_from, src.key, *src.merged_from})
        if p.deceased:
            self._end_all("patient_deceased", cause, at, "referral.cancel.deceased")
            return
        if (why := self._suppressed()) is not None:
            self._suppress(why.reason, cause, at, "referral.merge.suppressed")
        # Republished under this key (the hub view and staff see the survivor); the
        # agency copy only goes out again if it changed, or moves if the area did.
        self._refresh(cause, at, "referral.merge", refs=adopted, force=True)

    def _referral_for(self, episode_key: str, need: str) -> Referral | None:
        """The live referral of one need of one episode (not one a merge superseded)."""
        found = [r for r in self.p.referrals.values()
                 if r.episode_key == episode_key and r.need == need and r.superseded_by is None]
        return min(found, key=_merge_rank) if found else None

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
        if ev.kind == EventKind.MERGE:
            self._merge_started(ev)
        if ev.kind == EventKind.MERGE or ev.encounter is None:
            if pat.deceased:
                self._end_all("patient_deceased", ev.event_id, ev.occurred_at,
                              "referral.cancel.deceased")
                p.deceased = True
                return
            if was_suppressed and self._suppressed() is None:
                self._reconsider(ev.event_id, ev.occurred_at)
            self._refresh(ev.event_id, ev.occurred_at, "referral.patient")
            return
        ep = self._episode(ev)
        if ep is None:
            self._refresh(ev.event_id, ev.occurred_at, "referral.patient")
            return
        kind = ev.kind
        if kind == EventKind.CANCEL_ADMIT:
            ep.cancelled = True
            for ref in self._referrals_of(ep):
                self._withdraw(ref, ep, "admission_cancelled", ev.event_id, ev.occurred_at,
                               "referral.withdraw.cancel_admit", only_unaccepted=False)
            self._refresh(ev.event_id, ev.occurred_at, "referral.patient")
            return
        if kind == EventKind.CANCEL_DISCHARGE:
            ep.discharge_at, ep.disposition = None, None
            for ref in self._referrals_of(ep):
                if ref.rule == "need.disposition":
                    self._withdraw(ref, ep, "discharge_cancelled", ev.event_id,
                                   ev.occurred_at, "referral.withdraw.cancel_discharge",
                                   only_unaccepted=True)
            self._refresh(ev.event_id, ev.occurred_at, "referral.patient")
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
        # Before the discharge republish: a referral the agency can no longer serve moves
        # first, rather than telling the old agency the new address.
        self._refresh(ev.event_id, ev.occurred_at, "referral.patient")
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
        # The flag may overtake its event (different topics): remember its reasons; the
        # event refers them when it arrives with the encounter class.
        ep = self._episode_of(flag.encounter_key, flag.facility)
        if flag.status == "withdrawn":
            ep.flag_reasons = []
            return
        ep.flag_reasons = [(r.code, [f.code for f in r.factors]) for r in flag.reasons]
        self._refer(ep, flag.id, flag.decided_at)

    def on_assignment(self, a: AssignmentOutput) -> None:
        if not a.encounter_key:
            return
        ep = self._episode_of(a.encounter_key, a.facility)
        was_manager = ep.manager_id
        if a.status == "assigned":
            ep.manager_id, ep.team = a.manager_id, a.team or ep.team
        elif a.status == "unassigned":
            ep.manager_id, ep.team = None, a.team or ep.team
        else:
            if a.reason == "episode_closed":
                # The care stage's timer closed the episode: over for news without a
                # visit number (the referral still names who referred).
                ep.care = closed_by_timer(followed(ep), a.decided_at)
            return
        for ref in self._referrals_of(ep):
            task = ref.current()
            # A new manager changes the hub's record (the staff view filters by it); the
            # agency only hears of it if the referring contact in its copy changed.
            if task is not None and task.status not in TERMINAL_STATUSES and (
                    ep.manager_id != was_manager or
                    task.sent_contact != _contact_list(self._contact(ep))):
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
        ep = self._ep_of(ref)
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
            # Looked up by episode and need, not by id: a referral a merge brought from
            # the prior key keeps the id derived from that key.
            ref = self._referral_for(ep.key, need.service)
            if ref is not None:
                ref.need_codes += [c for c in need.codes if c not in ref.need_codes]
                continue
            rid = derive_id("referral", self.p.key, ep.key, need.service)
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
                self._change(ref, task, self._ep_of(ref), cause, at, rule, notify=True)

    def _reconsider(self, cause: str, at: datetime) -> None:
        for ep in sorted(self.p.episodes.values(), key=lambda e: e.key):
            if ep.discharge_at is None or at - ep.discharge_at <= OPT_IN_WINDOW:
                self._refer(ep, cause, at)

    def _end_all(self, reason: str, cause: str, at: datetime, rule: str) -> None:
        for ref in self.p.referrals.values():
            task = ref.current()
            if task is not None and task.status not in TERMINAL_STATUSES:
                task.status, task.status_reason = "cancelled", reason
                self._change(ref, task, self._ep_of(ref), cause, at, rule, notify=True)

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

    def _copy(self, ref: Referral, task: AgencyTask, ep: EpisodeInfo
              ) -> tuple[AgencyReferral, str]:
        """The agency copy as it would be now (no FHIR, version and time not final) and
        its content hash."""
        d = self.p.demographics
        copy = agency_copy(
            task_id=task.task_id, referral_id=ref.referral_id, agency_id=task.agency_id,
            status=task.status, status_reason=task.status_reason, need=ref.need,
            patient=agency_patient(
                family_name=d.family_name, given_names=d.given_names, birth_date=d.birth_date,
                phone=d.phone, address=Address(line=d.line, city=d.city, state=d.state,
                                               postal_code=d.postal_code),
                language=d.language),
            discharge_date=self._discharge_date(ep), referring=self._contact(ep),
            authored_at=task.requested_at, updated_at=task.updated_at, version=task.version,
            render_fhir=False)
        return copy, agency_content_hash(copy)

    def _publish(self, ref: Referral, task: AgencyTask, ep: EpisodeInfo, cause: str,
                 at: datetime, rule: str, *, notify: bool) -> None:
        copy, digest = self._copy(ref, task, ep)
        changed = digest != task.agency_hash
        if changed:
            # Older states have no agency version: their copies carried ``version``.
            task.agency_version = task.version if task.agency_version is None \
                else task.agency_version + 1
            task.agency_hash, task.agency_updated_at = digest, task.updated_at
        copy = copy.model_copy(update={
            "version": task.agency_version or task.version,
            "updated_at": task.agency_updated_at or task.updated_at})
        if self.ctx.render_fhir:
            copy = copy.model_copy(update={"fhir": agency_bundle(copy)})
        task.sent_discharge, task.sent_contact = copy.discharge_date, _contact_list(copy.referring)
        task.sent_patient = _patient_hash(self.p.demographics)
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
        if agency is None or not changed:
            # Removed from the directory: its topic may be gone (the hub view stays).
            # Unchanged: the agency has this copy already, on its topic and by webhook.
            return
        self.out.append(Emit(topics.agency_topic(agency.id), task.task_id, copy))
        hook = agency.delivery.webhook
        if notify and hook is not None:
            job_id = derive_id(task.task_id, copy.version)
            self.out.append(Emit(topics.REFERRALS_DELIVERIES.name, job_id, DeliveryJob(
                id=job_id, agency_id=agency.id, url=hook.url, secret_env=hook.secret_env,
                body=copy.model_dump_json(exclude_none=True), created_at=at,
                referral_task_id=task.task_id, version=copy.version)))

    def _refresh(self, cause: str, at: datetime, rule: str, *,
                 refs: list[Referral] | None = None, force: bool = False) -> None:
        """Bring open referrals up to date with the patient's demographics: re-send the
        agency copy when it changed; move a ``requested`` one whose agency no longer
        serves the patient's area to the next matching agency. ``force``: republish the
        hub record even if nothing the agency sees changed (a merge re-keys it)."""
        if not self.p.referrals or self._suppressed() is not None or self.p.deceased:
            return  # no new patient data goes out while suppressed
        digest = _patient_hash(self.p.demographics)
        area = self._area()
        chosen = refs if refs is not None else sorted(
            self.p.referrals.values(), key=lambda r: (r.episode_key, r.need, r.referral_id))
        for ref in chosen:
            task = ref.current()
            if task is None or task.status in TERMINAL_STATUSES or ref.superseded_by:
                continue
            if not force and task.sent_patient in (None, digest):
                continue  # unchanged (None: a state from before this was recorded)
            ep = self._ep_of(ref)
            agency = self.ctx.directory.by_id(task.agency_id)
            if task.status == "requested" and agency is not None and \
                    not in_service_area(agency, area):
                task.status, task.status_reason = "cancelled", MOVED_OUT_OF_AREA
                self._change(ref, task, ep, cause, at, "referral.cancel.moved", notify=True)
                self._next_agency(ref, ep, cause, at, "referral.rematch")
            elif force or self._copy(ref, task, ep)[1] != task.agency_hash:
                self._change(ref, task, ep, cause, at, rule, notify=True)
            else:
                task.sent_patient = digest  # e.g. only the county changed, still served

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

    def _ep_of(self, ref: Referral) -> EpisodeInfo:
        return self.p.episodes.get(ref.episode_key) or EpisodeInfo(key=ref.episode_key)

    def _episode_of(self, key: str, facility: str | None) -> EpisodeInfo:
        """The episode ``key``, created (and kept) when a care record comes first."""
        ep = self.p.episodes.get(key)
        if ep is None:
            ep = self.p.episodes[key] = EpisodeInfo(key=key, facility=facility)
        return ep

    def _suppressed(self) -> Suppression | None:
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
        facility = episode_facility(ev)
        if enc.id:
            key = episode_key(facility, enc.id)
        else:
            # As the care stage picks (the referral must name the episode its flags,
            # tasks and assignment name), from its statuses as followed here.
            found = episode_without_visit(
                [episode_facts(e) for e in self.p.episodes.values()], facility, ev.kind,
                enc.admit_at, ev.occurred_at)
            if found is None:
                return None
            key = found
        ep = self.p.episodes.get(key)
        if ep is None:
            if ev.kind in (EventKind.CANCEL_ADMIT, EventKind.CANCEL_DISCHARGE,
                           EventKind.CANCEL_TRANSFER):
                return None
            ep = self.p.episodes[key] = EpisodeInfo(key=key, facility=facility,
                                                    first_event_id=ev.event_id,
                                                    care=FollowedEpisode())
        ep.facility = ep.facility or facility
        ep.care = follow_episode(followed(ep), ev)
        return ep


def followed(ep: EpisodeInfo) -> FollowedEpisode:
    """The care stage's view of ``ep`` as followed (:attr:`EpisodeInfo.care`); for an
    episode without one (a stored state from before it was kept, or one first heard of
    from a flag or assignment, which the care stage holds): guessed from this stage's
    own record."""
    if ep.care is not None:
        return ep.care
    status = "cancelled" if ep.cancelled else "discharged" if ep.discharge_at else "active"
    return FollowedEpisode(status=status, admit_at=ep.admit_at, discharge_at=ep.discharge_at,
                           class_=ep.class_, disposition=ep.disposition)


def episode_facts(ep: EpisodeInfo) -> EpisodeFacts:
    """What :func:`streams.care.episodes.episode_without_visit` reads of ``ep``."""
    care = followed(ep)
    return EpisodeFacts(ep.key, ep.facility, care.status, care.admit_at, care.discharge_at)


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
        ep.diagnoses = _union_diagnoses(ep.diagnoses,
                                        [(dx.code, dx.system) for dx in ev.diagnoses])


def _union_diagnoses(a: Iterable[tuple[str, str | None]], b: Iterable[tuple[str, str | None]]
                     ) -> list[tuple[str, str | None]]:
    return sorted({*a, *b}, key=lambda x: (x[0], x[1] or ""))


def _contact_list(c: Contact) -> list[str | None]:
    return [c.name, c.phone, c.email]


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if end is not None else None


def _fill_demographics(d: Demographics, src: Demographics) -> None:
    """Take from ``src`` (a merged-away key) what ``d`` does not know, group by group."""
    if not (d.family_name or d.given_names):
        d.family_name, d.given_names = src.family_name, list(src.given_names)
    d.birth_date = d.birth_date or src.birth_date
    d.phone = d.phone or src.phone
    d.language = d.language or src.language
    if not (d.line or d.city or d.postal_code or d.county):
        d.line, d.city, d.state = list(src.line), src.city, src.state
        d.postal_code, d.county = src.postal_code, src.county


def _patient_hash(d: Demographics) -> str:
    """What the agency copy's patient is built from, plus the county (matching reads it)."""
    data = d.model_dump(mode="json")
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


_RANK = {"accepted": 0, "in-progress": 0, "on-hold": 0, "completed": 1, "requested": 2}


def _merge_rank(ref: Referral) -> tuple[int, datetime, str]:
    """Which of two referrals of one need to keep after a merge (lowest first): the one an
    agency works on or finished, then the one still waiting, then the oldest."""
    task = ref.current()
    return (_RANK.get(task.status, 3) if task else 4, ref.created_at, ref.referral_id)


def _topic_of(msg: ReferralInput) -> str:
    if isinstance(msg, CanonicalEvent):
        return topics.CARE_EVENTS.name
    if isinstance(msg, FlagOutput):
        return topics.CARE_FLAGS.name
    if isinstance(msg, AssignmentOutput):
        return topics.CARE_ASSIGNMENTS.name
    if isinstance(msg, ConsentRecord):
        return topics.CONFIG_CONSENT.name
    return topics.REFERRALS_UPDATES.name


def _time_of(msg: ReferralInput) -> datetime:
    if isinstance(msg, CanonicalEvent):
        return msg.occurred_at
    if isinstance(msg, FlagOutput | AssignmentOutput | ReferralCommand):
        return msg.decided_at
    return msg.at
