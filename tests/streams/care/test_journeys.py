"""Scripted patient journeys through the care rules, offline (the same pure functions
the agents run; the Kafka version is tests/streams/care/test_care_e2e.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.commands.decide_cmd import load_roster, load_rules
from hub.commands.map_cmd import map_files
from schemas.canonical import CanonicalEvent
from streams.care.engine import CareContext, apply_patient
from streams.care.offline import OfflineRun, summary_line

HERE = Path(__file__).parent / "journeys"
T0 = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def events(*names: str) -> list[CanonicalEvent]:
    out = [e for e in map_files([str(HERE / n) for n in names], default_tz="America/New_York",
                                received_at=T0)]
    assert all(isinstance(e, CanonicalEvent) for e in out), out
    return out  # type: ignore[return-value]


@pytest.fixture
def ctx() -> CareContext:
    return CareContext(config=load_rules(None, default_tz="America/New_York"),
                       roster=load_roster(HERE / "roster.yaml"))


def lines(outputs: list[Any]) -> list[dict[str, Any]]:
    return [summary_line(o) for o in outputs]


def of(out: list[dict[str, Any]], type_: str, **match: Any) -> list[dict[str, Any]]:
    return [o for o in out if o["type"] == type_ and
            all(o.get(k) == v for k, v in match.items())]


def test_ed_visits_then_heart_failure_admission_discharge_home(ctx: CareContext) -> None:
    out = lines(OfflineRun(ctx).run(events("j1_hf_admission.hl7")))
    admission = of(out, "flag", stage="admission")[0]
    assert admission["lace"] == {"score": 8, "l": 0, "a": 3, "c": 2, "e": 3}
    discharge = of(out, "flag", stage="discharge")
    assert len(discharge) == 1
    flag = discharge[0]
    assert flag["risk_level"] == "high"
    assert flag["lace"] == {"score": 12, "l": 4, "a": 3, "c": 2, "e": 3}
    assert flag["charlson"]["categories"] == ["chf"]
    reasons = {r["code"]: r for r in flag["reasons"]}
    assert set(reasons) == {"high_lace", "cms_condition", "frequent_ed"}
    assert all(r["factors"] for r in reasons.values())
    (assignment,) = of(out, "assignment")
    assert (assignment["manager_id"], assignment["reason"]) == ("cm-ana", "least_loaded")
    tasks = {t["kind"]: t for t in of(out, "task")}
    # Friday 2026-11-13 discharge: 2 business days -> Tuesday; high risk -> 7-day visit.
    assert tasks["contact"]["due"] == "2026-11-17T23:59:59-05:00"
    assert tasks["visit"]["due"] == "2026-11-20T23:59:59-05:00"
    assert tasks["med_rec"]["due"] == "2026-11-20T23:59:59-05:00"
    assert tasks["pcp_notification"]["due"] == "2026-11-16T23:59:59-05:00"
    assert {t["owner"] for t in tasks.values()} == {"cm-ana"}
    assert {t["priority"] for t in (tasks["contact"], tasks["visit"])} == {"urgent"}
    codes = [n["event_code"] for n in of(out, "notification", encounter_key="GENHOSP|V1")]
    assert codes == ["notification-admit", "notification-transfer", "notification-discharge"]
    assert all(o["cause_event_id"] and o["rule"] and o["id"] for o in out)


def test_readmission_goes_back_to_the_same_manager_and_ends_open_tcm(ctx: CareContext) -> None:
    run = OfflineRun(ctx)
    run.run(events("j1_hf_admission.hl7"))
    out = lines(run.run(events("j1_readmission.hl7")))
    (assignment,) = of(out, "assignment")
    assert (assignment["manager_id"], assignment["reason"]) == ("cm-ana", "continuity")
    (flag,) = of(out, "flag")
    assert "readmission_30d" in {r["code"] for r in flag["reasons"]}
    cancelled = of(out, "task", status="cancelled")
    assert len(cancelled) == 4 and {t["status_reason"] for t in cancelled} == {"readmitted"}


def test_cancel_discharge_cancels_tasks_and_withdraws_the_discharge_flag(ctx: CareContext
                                                                         ) -> None:
    out = lines(OfflineRun(ctx).run(events("j2_cancel_discharge.hl7")))
    opened = of(out, "task", status="requested")
    cancelled = of(out, "task", status="cancelled")
    assert opened and {t["task_id"] for t in cancelled} == {t["task_id"] for t in opened}
    assert {t["status_reason"] for t in cancelled} == {"discharge_cancelled"}
    (withdrawn,) = of(out, "flag", status="withdrawn")
    (discharge_flag,) = of(out, "flag", stage="discharge", status="active")
    assert withdrawn["replaces"] == discharge_flag["id"]


def test_merge_moves_history_to_the_surviving_key(ctx: CareContext) -> None:
    run = OfflineRun(ctx)
    out = lines(run.run(events("j3_merge.hl7")))
    survivor = "GENHOSP|J3NEW"
    assert run.patients["GENHOSP|J3OLD"].merged_into == survivor
    assert "GENHOSP|X1" in run.patients[survivor].episodes
    (flag,) = of(out, "flag", encounter_key="GENHOSP|X2")
    assert "readmission_30d" in {r["code"] for r in flag["reasons"]}
    (assignment,) = of(out, "assignment", encounter_key="GENHOSP|X2")
    assert assignment["reason"] == "continuity" and assignment["patient_key"] == survivor
    # The old episode's open tasks now belong to the survivor (then end: readmitted).
    assert of(out, "task", rule="merge.rekey", patient_key=survivor)


def test_nobody_on_shift_escalates_to_the_supervisor(ctx: CareContext) -> None:
    out = lines(OfflineRun(ctx).run(events("j4_off_shift.hl7")))
    (assignment,) = of(out, "assignment")
    assert (assignment["status"], assignment["reason"]) == ("unassigned", "none_on_shift")
    (escalation,) = of(out, "escalation")
    assert (escalation["reason"], escalation["supervisor"]) == ("none_on_shift", "sup-lee")


def test_caseload_cap_reached_escalates(ctx: CareContext) -> None:
    # Caps are 6 points each; each of these admissions is moderate (LACE 5): 2 points.
    run = OfflineRun(ctx)
    base = events("j1_hf_admission.hl7")[6]  # the Monday admission
    outcomes = []
    for n in range(7):
        ev = base.model_copy(update={
            "event_id": f"cap-{n}",
            "patient": base.patient.model_copy(update={"key": f"GENHOSP|CAP{n}",
                                                       "mrn": f"CAP{n}"}),
            "encounter": base.encounter.model_copy(update={"id": f"CAPV{n}"}),  # type: ignore[union-attr]
        })
        outcomes += of(lines(run.event(ev)), "assignment")
    reasons = [(a["status"], a["reason"], a.get("manager_id")) for a in outcomes]
    assert reasons[:6] == [("assigned", "least_loaded", m) for m in ["cm-ana", "cm-ben"] * 3]
    assert reasons[6] == ("unassigned", "all_at_cap", None)
    assert of(lines(run.outputs), "escalation", reason="all_at_cap")


def test_same_input_twice_gives_identical_output_ids(ctx: CareContext) -> None:
    files = ("j1_hf_admission.hl7", "j1_readmission.hl7", "j2_cancel_discharge.hl7",
             "j3_merge.hl7", "j4_off_shift.hl7")
    first = lines(OfflineRun(ctx).run(events(*files)))
    second = lines(OfflineRun(ctx).run(events(*files)))
    assert first == second
    assert len({o["id"] for o in first}) == len(first)
    # Within one run, a redelivered event is dropped: nothing new is published.
    run = OfflineRun(ctx)
    run.run(events("j1_hf_admission.hl7"))
    assert run.run(events("j1_hf_admission.hl7")[-1:]) == []


def test_applying_an_event_twice_equals_once(ctx: CareContext) -> None:
    ev = events("j1_hf_admission.hl7")[6]
    now = ev.occurred_at
    once, out1 = apply_patient(None, ev.patient.key, ev, now=now, ctx=ctx)
    twice, out2 = apply_patient(once, ev.patient.key, ev, now=now, ctx=ctx)
    assert out2 == [] and twice == once and out1


def test_updates_that_change_nothing_publish_nothing(ctx: CareContext) -> None:
    run = OfflineRun(ctx)
    admit = events("j1_hf_admission.hl7")[6]
    run.event(admit)
    a08 = admit.model_copy(update={"event_id": "a08-same", "trigger": "A08",
                                   "kind": "update"})
    assert run.event(a08) == []
    more = a08.model_copy(update={"event_id": "a08-dx", "diagnoses": [
        *admit.diagnoses, admit.diagnoses[0].model_copy(update={"code": "Z59.01"})]})
    (flag,) = lines(run.event(more))
    assert "social_needs" in {r["code"] for r in flag["reasons"]}


def test_task_updates_close_tasks_and_release_caseload(ctx: CareContext) -> None:
    from schemas.care import TaskUpdate

    run = OfflineRun(ctx)
    out = lines(run.run(events("j1_hf_admission.hl7")))
    tasks = of(out, "task")
    key = tasks[0]["patient_key"]
    at = datetime.fromisoformat("2026-11-14T10:00:00-05:00")
    contact = next(t for t in tasks if t["kind"] == "contact")
    run.task_update(TaskUpdate(task_id=contact["task_id"], patient_key=key, status="attempted",
                               at=at))
    (done,) = lines(run.task_update(TaskUpdate(task_id=contact["task_id"], patient_key=key,
                                               status="attempted", at=at.replace(hour=15))))
    assert (done["status"], done["status_reason"]) == ("completed", "two_attempts_documented")
    released = []
    for t in tasks:
        released += of(lines(run.task_update(TaskUpdate(
            task_id=t["task_id"], patient_key=key, status="completed", at=at))), "assignment")
    assert [(a["status"], a["reason"]) for a in released] == [("released", "episode_closed")]
    assert run.teams["medsurg"].load("cm-ana") == 0


def test_shipped_rules_file_is_the_documented_defaults() -> None:
    from streams.care.config import CareConfig, parse_rules

    text = (HERE.parents[3] / "hub" / "samples" / "rules.yaml").read_text()
    assert parse_rules(text) == CareConfig()


def test_hub_decide_reproduces_a_journey(capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    from hub.cli import main

    args = ["decide", "--roster", str(HERE / "roster.yaml"), "--tz", "America/New_York",
            str(HERE / "j1_hf_admission.hl7"), str(HERE / "j1_readmission.hl7")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    kinds = {orjson.loads(line)["type"] for line in first.splitlines()}
    assert kinds == {"flag", "assignment", "task", "escalation", "notification"}
    assert main(["decide", "--roster", "/nonexistent.yaml", str(HERE / "j4_off_shift.hl7")]) == 2


def test_discharge_to_assisted_living_gets_tcm_outreach(ctx: CareContext) -> None:
    # The heart-failure journey, discharged with PV1-36 04 (custodial or supportive care:
    # assisted living) instead of 01 (home): a community setting for CMS TCM, so the same
    # four TCM tasks as a discharge home, and no post-acute handoff.
    evs = events("j1_hf_admission.hl7")
    discharge = evs[-1]
    assert discharge.encounter is not None and discharge.encounter.discharge_disposition == "01"
    assisted = discharge.model_copy(update={"encounter": discharge.encounter.model_copy(
        update={"discharge_disposition": "04"})})
    home = of(lines(OfflineRun(ctx).run(evs)), "task")
    out = of(lines(OfflineRun(ctx).run([*evs[:-1], assisted])), "task")
    assert sorted(t["kind"] for t in out) == ["contact", "med_rec", "pcp_notification", "visit"]
    assert [(t["kind"], t["rule"], t["due"]) for t in out] == \
        [(t["kind"], t["rule"], t["due"]) for t in home]
