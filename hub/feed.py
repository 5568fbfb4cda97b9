"""Synthetic ADT feed for demos, benchmarks and tests: deterministic for a seed.

Every patient, name and identifier here is invented. Two mixes:

* ``journeys`` (the default, the demo's): only inpatient journeys, each an ED
  registration (most), an admission with diagnoses, sometimes a transfer, an update and
  a discharge. Every message is one the care rules act on: the costly end.
* ``hospital``: the same journeys inside a hospital's everyday traffic, in the
  proportions REFERENCE.md records for one hospital's day (A08 48%, A31 30%, A04 17%,
  A01 1%): outpatient registrations and their updates, person updates (A31) of
  outpatients and inpatients, and updates of inpatients that change nothing the care
  rules read (a bed or attending change).

Plus a few deliberately bad messages so the dead-letter path shows up in a demo.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

FAMILY = ["RIVERA", "CHEN", "OKAFOR", "NOVAK", "HASSAN", "KOWALSKI", "SANTOS", "MURPHY",
          "IBARRA", "LINDQVIST", "MBEKI", "TANAKA", "DUBOIS", "ROSSI", "PATEL", "NGUYEN"]
GIVEN = ["ALEX", "SAM", "JORDAN", "TAYLOR", "MORGAN", "CASEY", "RILEY", "JAMIE", "AVERY"]
DIAGNOSES = [
    ("I50.9", "Heart failure, unspecified"),
    ("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"),
    ("J18.9", "Pneumonia, unspecified organism"),
    ("I21.4", "Non-ST elevation myocardial infarction"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("N18.4", "Chronic kidney disease, stage 4"),
    ("Z59.01", "Sheltered homelessness"),
    ("Z59.41", "Food insecurity"),
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
]
UNITS = ["4WEST", "5EAST", "ICU", "3NORTH"]
DISPOSITIONS = ["01", "01", "01", "06", "03", "07", "20"]


@dataclass(frozen=True)
class FeedConfig:
    patients: int = 20
    seed: int = 7
    facility: str = "GENHOSP"
    start: datetime = datetime(2026, 11, 2, 8, 0)
    bad_messages: bool = True
    mix: Literal["journeys", "hospital"] = "journeys"
    """``patients`` is the number of inpatient journeys either way (see the module
    docstring); ``hospital`` adds about 99 everyday messages per journey around them."""


_FEED_ZONE = timezone(timedelta(hours=-5))
"""The offset every timestamp of this feed carries (``_ts``)."""


def _ts(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S") + "-0500"


def _msg(cfg: FeedConfig, trigger: str, control: str, at: datetime, pid: str,
         pv1: str, extra: list[str]) -> bytes:
    structure = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A02": "ADT_A02",
                 "A03": "ADT_A03", "A31": "ADT_A05"}.get(trigger, "ADT_A01")
    segs = [
        f"MSH|^~\\&|EPICADT|{cfg.facility}|CAREHUB|HUB|{_ts(at)}||ADT^{trigger}^{structure}"
        f"|{control}|P|2.5.1",
        f"EVN|{trigger}|{_ts(at)}",
        pid,
        "PD1||||1234567890^WELBY^MARCUS^^^DR^MD",
        pv1,
        *extra,
    ]
    return ("\r".join(segs) + "\r").encode()


def _pid(rnd: random.Random, mrn: str, facility: str) -> str:
    """An invented patient (draws from ``rnd`` in a fixed order: the feeds' bytes depend
    on it). PID-11.9 county: the sample directory's county-wide agencies match by it."""
    family, given = rnd.choice(FAMILY), rnd.choice(GIVEN)
    birth = f"19{rnd.randint(30, 90)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
    sex = rnd.choice("MF")
    return (f"PID|1||{mrn}^^^{facility}^MR||{family}^{given}^Q||{birth}|{sex}|||"
            f"{rnd.randint(10, 999)} MAIN ST^^SPRINGFIELD^MA^0110{rnd.randint(3, 9)}"
            f"^^^^HAMPDEN||^PRN^PH^^1^413^555{rnd.randint(1000, 9999)}||"
            f"{rnd.choice(['en', 'es'])}")


def _pv1(facility: str, room: int, emergent: bool, cls: str, unit: str, visit: str,
         admit: datetime, discharge: datetime | None = None, disposition: str = "",
         prior: str = "") -> str:
    fields = [""] * 46
    fields[0], fields[1], fields[2] = "PV1", "1", cls
    fields[3] = f"{unit}^{room}^A^{facility}"
    fields[4] = "E" if emergent else "R"
    fields[6] = prior
    fields[7] = "1122334455^HOUSE^GREGORY^^^DR"
    fields[10] = "MED"
    fields[14] = "7" if emergent else "1"
    fields[19] = visit
    fields[36] = disposition
    fields[44] = _ts(admit)
    fields[45] = _ts(discharge) if discharge else ""
    return "|".join(fields).rstrip("|")


def generate(cfg: FeedConfig = FeedConfig()) -> Iterator[bytes]:
    """Yield raw HL7 v2.5.1 messages (CR-separated, unframed) in time order."""
    rnd = random.Random(cfg.seed)
    messages: list[tuple[datetime, bytes]] = []
    stays: list[_Admitted] = []
    control = 1000
    for n in range(cfg.patients):
        mrn = f"MRN{100000 + n}"
        pid = _pid(rnd, mrn, cfg.facility)
        t = cfg.start + timedelta(hours=rnd.randint(0, 72), minutes=rnd.randint(0, 59))
        visit = f"V{200000 + n}"
        unit = rnd.choice(UNITS)
        dx = rnd.sample(DIAGNOSES, k=rnd.randint(1, 3))
        dg1 = [f"DG1|{i + 1}||{code}^{text}^I10||{_ts(t)}|A" for i, (code, text) in enumerate(dx)]
        in1 = [f"IN1|1|PLAN{rnd.randint(1, 3)}|PAYER{rnd.randint(1, 4)}|"
               f"{rnd.choice(['Medicare', 'Medicaid', 'Acme Health'])}"]
        emergent = rnd.random() < 0.6

        room = rnd.randint(100, 499)

        def pv1(cls: str, at_unit: str, admit: datetime, discharge: datetime | None = None,
                disposition: str = "", prior: str = "", *, _visit: str = visit,
                _emergent: bool = emergent, _room: int = room) -> str:
            return _pv1(cfg.facility, _room, _emergent, cls, at_unit, _visit, admit,
                        discharge, disposition, prior)

        if emergent:
            control += 1
            messages.append((t - timedelta(hours=3), _msg(
                cfg, "A04", f"C{control}", t - timedelta(hours=3), pid,
                pv1("E", "ED", t - timedelta(hours=3), _visit=f"E{200000 + n}"), dg1[:1])))
        control += 1
        messages.append((t, _msg(cfg, "A01", f"C{control}", t, pid, pv1("I", unit, t),
                                 dg1 + in1)))
        moved = t + timedelta(hours=rnd.randint(6, 30))
        stays.append(_Admitted(pid, visit, unit, t, moved, emergent, room))
        if rnd.random() < 0.4:
            new_unit = rnd.choice([u for u in UNITS if u != unit])
            control += 1
            messages.append((moved, _msg(cfg, "A02", f"C{control}", moved, pid,
                                         pv1("I", new_unit, t, prior=f"{unit}^101^A"), [])))
            unit = new_unit
        control += 1
        upd = moved + timedelta(hours=1)
        messages.append((upd, _msg(cfg, "A08", f"C{control}", upd, pid, pv1("I", unit, t),
                                   dg1 + in1)))
        out = t + timedelta(days=rnd.randint(1, 9), hours=rnd.randint(0, 8))
        control += 1
        messages.append((out, _msg(cfg, "A03", f"C{control}", out, pid,
                                   pv1("I", unit, t, out, rnd.choice(DISPOSITIONS)), dg1)))
    if cfg.mix == "hospital":
        messages.extend(_everyday(cfg, control, stays))
    messages.sort(key=lambda m: m[0])
    yield from (m for _, m in messages)
    if cfg.bad_messages:
        yield from bad_messages(cfg)


# Everyday messages per inpatient journey, for REFERENCE.md's day (A08 48%, A31 30%,
# A04 17%, A01 1% of 219,564): a journey already sends one A01, one A08 and (60% of
# them) an ED A04, so these make up the rest of each share.
_EVERYDAY_PER_ADMIT = {"A04": 16.4, "A08": 47.0, "A31": 30.0}
_CLINICS = ["CARDCLINIC", "PULMCLINIC", "LAB", "RADIOLOGY", "INFUSION", "PCP"]


@dataclass(frozen=True)
class _Admitted:
    """An inpatient journey of :func:`generate`, as far as its everyday updates need it."""

    pid: str
    visit: str
    unit: str
    admitted: datetime
    moved: datetime
    """Its transfer time, if it has one: updates come before it, on ``unit``."""
    emergent: bool
    room: int


def _everyday(cfg: FeedConfig, control: int, stays: list[_Admitted]
              ) -> list[tuple[datetime, bytes]]:
    """A hospital's everyday traffic around the inpatient journeys ``stays`` (its own
    random stream: the journeys' bytes do not depend on it)."""
    rnd = random.Random(cfg.seed * 7919 + 1)
    admits = cfg.patients
    span_s = int(timedelta(days=12).total_seconds())
    out: list[tuple[datetime, bytes]] = []
    visits: list[tuple[str, str, datetime, int]] = []  # (pid, visit, arrival, room)
    people = max(1, admits * 10)  # outpatients; they come back for several visits
    pids: dict[int, str] = {}

    def person(n: int) -> str:
        if n not in pids:
            pids[n] = _pid(rnd, f"MRN{500000 + n}", cfg.facility)
        return pids[n]

    def when() -> datetime:
        return cfg.start + timedelta(seconds=rnd.randint(0, span_s))

    for n in range(round(admits * _EVERYDAY_PER_ADMIT["A04"])):
        control += 1
        at, who, room = when(), rnd.randrange(people), rnd.randint(1, 60)
        visit = f"O{300000 + n}"
        pid = person(who)
        visits.append((pid, visit, at, room))
        out.append((at, _msg(cfg, "A04", f"C{control}", at, pid,
                             _pv1(cfg.facility, room, False, "O", rnd.choice(_CLINICS), visit,
                                  at), [])))
    for _ in range(round(admits * _EVERYDAY_PER_ADMIT["A08"])):
        control += 1
        if rnd.random() < 0.9 or not stays:
            # An outpatient visit's update (insurance, attending, check-out time).
            pid, visit, arrival, room = rnd.choice(visits)
            at = arrival + timedelta(minutes=rnd.randint(1, 240))
            pv1 = _pv1(cfg.facility, room, False, "O", "CLINIC", visit, arrival)
        else:
            # An inpatient's bed change before any transfer: same patient, visit, unit
            # and admission, another room; nothing the care rules read.
            stay = rnd.choice(stays)
            window = int((stay.moved - stay.admitted).total_seconds()) - 600
            at = stay.admitted + timedelta(seconds=300 + rnd.randint(0, max(window, 0)))
            pid = stay.pid
            pv1 = _pv1(cfg.facility, stay.room + rnd.randint(1, 9), stay.emergent, "I",
                       stay.unit, stay.visit, stay.admitted)
        out.append((at, _msg(cfg, "A08", f"C{control}", at, pid, pv1, [])))
    for _ in range(round(admits * _EVERYDAY_PER_ADMIT["A31"])):
        control += 1
        at = when()
        pid = person(rnd.randrange(people))
        # An A31 (update person information) has no visit: PV1 present but empty.
        out.append((at, _msg(cfg, "A31", f"C{control}", at, pid, "PV1|1|N", [])))
    return out


def bad_messages(cfg: FeedConfig = FeedConfig()) -> Iterator[bytes]:
    """Messages the hub must refuse with a clear error (and keep, dead-lettered)."""
    at = _ts(cfg.start)
    # Not an ADT: an order message.
    yield (f"MSH|^~\\&|LAB|{cfg.facility}|CAREHUB|HUB|{at}||ORM^O01|BAD1|P|2.5.1\r"
           f"PID|1||MRN999^^^{cfg.facility}^MR||TEST^BAD\r").encode()
    # An ADT with no patient identifier.
    yield (f"MSH|^~\\&|EPICADT|{cfg.facility}|CAREHUB|HUB|{at}||ADT^A01|BAD2|P|2.5.1\r"
           f"EVN|A01|{at}\rPID|1||||NOBODY^NOONE\rPV1|1|I\r").encode()


# ------------------------------------------------------------------ live trickle
@dataclass(frozen=True)
class TrickleConfig:
    """A slow, endless feed for a live demo: new patients keep arriving and leaving.

    Patient numbers start at ``first_patient`` (far above ``generate()``'s) and control
    ids carry the start time, so nothing the trickle sends is a duplicate of the replay
    or of an earlier run against the same broker.
    """

    seed: int = 11
    facility: str = "GENHOSP"
    first_patient: int = 900_000
    min_gap_s: float = 1.0
    max_gap_s: float = 3.0
    census: int = 6
    """Patients in the house the trickle aims at: it admits while fewer are in."""
    units: tuple[str, ...] = tuple(UNITS)


@dataclass
class _Stay:
    pid: str
    visit: str
    unit: str
    room: int
    admitted: datetime | None
    emergent: bool
    dg1: list[str]
    in1: list[str]
    steps: list[str]
    """Triggers still to send, in order (A04 first for an ED arrival, A03 last)."""


def trickle(start: datetime, cfg: TrickleConfig = TrickleConfig()) -> Iterator[tuple[float, bytes]]:
    """Yield ``(gap_s, message)`` forever: wait ``gap_s`` seconds, then send ``message``.

    ``start`` (aware) is when the first message is due; each message is stamped with
    ``start`` plus the gaps so far, so a sender pacing itself by the gaps stamps messages
    with the wall clock. Deterministic for (``start``, ``cfg``). Journeys follow
    ``generate()``'s: an ED registration for most, admission with diagnoses, sometimes a
    transfer, an update, a discharge; several patients are in the house at once.
    """
    rnd = random.Random(cfg.seed)
    at = start.astimezone(_FEED_ZONE).replace(tzinfo=None)
    stamp = int(start.timestamp())
    fcfg = FeedConfig(facility=cfg.facility)
    in_house: list[_Stay] = []
    admitted = sent = 0
    while True:
        gap = round(rnd.uniform(cfg.min_gap_s, cfg.max_gap_s), 3)
        at += timedelta(seconds=gap)
        if not in_house or (len(in_house) < cfg.census and rnd.random() < 0.5):
            stay = _new_stay(rnd, cfg, cfg.first_patient + admitted)
            admitted += 1
            in_house.append(stay)
        else:
            stay = rnd.choice(in_house)
        trigger = stay.steps.pop(0)
        if not stay.steps:
            in_house.remove(stay)
        sent += 1
        yield gap, _stay_message(fcfg, stay, trigger, f"T{stamp}{sent:06d}", at, rnd,
                                 cfg.units)


def _new_stay(rnd: random.Random, cfg: TrickleConfig, n: int) -> _Stay:
    pid = _pid(rnd, f"MRN{n}", cfg.facility)
    dx = rnd.sample(DIAGNOSES, k=rnd.randint(1, 3))
    emergent = rnd.random() < 0.6
    steps = (["A04"] if emergent else []) + ["A01"]
    if rnd.random() < 0.4:
        steps.append("A02")
    steps += ["A08", "A03"]
    return _Stay(
        pid=pid, visit=f"V{n}", unit=rnd.choice(cfg.units), room=rnd.randint(100, 499),
        admitted=None, emergent=emergent,
        dg1=[f"{code}^{text}^I10" for code, text in dx],
        in1=[f"IN1|1|PLAN{rnd.randint(1, 3)}|PAYER{rnd.randint(1, 4)}|"
             f"{rnd.choice(['Medicare', 'Medicaid', 'Acme Health'])}"],
        steps=steps)


def _stay_message(cfg: FeedConfig, stay: _Stay, trigger: str, control: str, at: datetime,
                  rnd: random.Random, units: tuple[str, ...]) -> bytes:
    def pv1(cls: str, unit: str, visit: str, admit: datetime, discharge: datetime | None = None,
            disposition: str = "", prior: str = "") -> str:
        return _pv1(cfg.facility, stay.room, stay.emergent, cls, unit, visit, admit, discharge,
                    disposition, prior)

    def dg1(codes: list[str]) -> list[str]:
        return [f"DG1|{i + 1}||{c}||{_ts(at)}|A" for i, c in enumerate(codes)]

    if trigger == "A04":
        return _msg(cfg, "A04", control, at, stay.pid,
                    pv1("E", "ED", "E" + stay.visit[1:], at), dg1(stay.dg1[:1]))
    if trigger == "A01":
        stay.admitted = at
        return _msg(cfg, "A01", control, at, stay.pid, pv1("I", stay.unit, stay.visit, at),
                    dg1(stay.dg1) + stay.in1)
    admitted = stay.admitted or at
    if trigger == "A02":
        prior = stay.unit
        stay.unit = rnd.choice([u for u in units if u != prior] or [prior])
        return _msg(cfg, "A02", control, at, stay.pid,
                    pv1("I", stay.unit, stay.visit, admitted, prior=f"{prior}^101^A"), [])
    if trigger == "A08":
        return _msg(cfg, "A08", control, at, stay.pid, pv1("I", stay.unit, stay.visit, admitted),
                    dg1(stay.dg1) + stay.in1)
    return _msg(cfg, "A03", control, at, stay.pid,
                pv1("I", stay.unit, stay.visit, admitted, at, rnd.choice(DISPOSITIONS)),
                dg1(stay.dg1))
