# ruff: noqa: E501  (one HL7 message per line reads better than wrapped)
"""Writes the scripted journeys' HL7 files (run from the repo root; files are committed).

Invented patients only. ``python tests/streams/care/journeys/make_journeys.py``
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def adt(trigger: str, control: str, at: str, mrn: str, visit: str, *, cls: str = "I",
        unit: str = "4WEST", adm_type: str = "E", dx: tuple[str, ...] = (),
        disposition: str = "", admit: str = "", discharge: str = "",
        mrg: str = "", language: str = "en") -> str:
    structure = {"A02": "ADT_A02", "A03": "ADT_A03", "A40": "ADT_A39",
                 "A13": "ADT_A01", "A11": "ADT_A09"}.get(trigger, "ADT_A01")
    segs = [
        f"MSH|^~\\&|EPICADT|GENHOSP|CAREHUB|HUB|{at}||ADT^{trigger}^{structure}|{control}|P|2.5.1",
        f"EVN|{trigger}|{at}",
        f"PID|1||{mrn}^^^GENHOSP^MR||TESTPATIENT^JOURNEY||19480302|F|||1 Main St^^Springfield^MA^01103"
        f"||^PRN^PH^^1^413^5550100|{language}",
        "PD1||||1234567890^WELBY^MARCUS^^^DR^MD",
    ]
    if mrg:
        segs.append(f"MRG|{mrg}^^^GENHOSP^MR")
    if trigger != "A40":
        pv1 = [""] * 46
        pv1[1], pv1[2], pv1[3], pv1[4] = "1", cls, f"{unit}^401^A^GENHOSP", adm_type
        pv1[7], pv1[10], pv1[14] = "1111^ATTEND^ANNA", "MED", "7" if cls == "E" else "1"
        pv1[19], pv1[36], pv1[44], pv1[45] = visit, disposition, admit, discharge
        segs.append("PV1|" + "|".join(pv1[1:]))
        for i, code in enumerate(dx, 1):
            segs.append(f"DG1|{i}||{code}^^I10||{at}|A")
    return "\r".join(segs) + "\r"


def write(name: str, messages: list[str]) -> None:
    (HERE / name).write_text("\n".join(m.replace("\r", "\n") for m in messages))


def main() -> None:
    m = "J1001"
    journey = [
        # Three ED visits in the 60 days before the admission.
        adt("A04", "J1-01", "20261001100000-0400", m, "ED1", cls="E", unit="ED", admit="20261001100000-0400"),
        adt("A03", "J1-02", "20261001160000-0400", m, "ED1", cls="E", unit="ED", admit="20261001100000-0400", discharge="20261001160000-0400", disposition="01"),
        adt("A04", "J1-03", "20261020100000-0400", m, "ED2", cls="E", unit="ED", admit="20261020100000-0400"),
        adt("A03", "J1-04", "20261020160000-0400", m, "ED2", cls="E", unit="ED", admit="20261020100000-0400", discharge="20261020160000-0400", disposition="01"),
        adt("A04", "J1-05", "20261105100000-0500", m, "ED3", cls="E", unit="ED", admit="20261105100000-0500"),
        adt("A03", "J1-06", "20261105160000-0500", m, "ED3", cls="E", unit="ED", admit="20261105100000-0500", discharge="20261105160000-0500", disposition="01"),
        # Emergent admission with heart failure, Monday 2026-11-09 10:00 New York.
        adt("A01", "J1-07", "20261109100000-0500", m, "V1", unit="4WEST", dx=("I50.9",), admit="20261109100000-0500"),
        adt("A02", "J1-08", "20261110120000-0500", m, "V1", unit="5EAST", dx=("I50.9",), admit="20261109100000-0500"),
        # Discharged home on Friday 2026-11-13 15:00.
        adt("A03", "J1-09", "20261113150000-0500", m, "V1", unit="5EAST", dx=("I50.9",), admit="20261109100000-0500", discharge="20261113150000-0500", disposition="01"),
    ]
    write("j1_hf_admission.hl7", journey)
    write("j1_readmission.hl7", [
        adt("A01", "J1-10", "20261125090000-0500", m, "V2", unit="4WEST", dx=("I50.9",), admit="20261125090000-0500"),
    ])
    c = "J2002"
    write("j2_cancel_discharge.hl7", [
        adt("A01", "J2-01", "20261109110000-0500", c, "W1", unit="4WEST", adm_type="R", dx=("J18.9",), admit="20261109110000-0500"),
        adt("A03", "J2-02", "20261112110000-0500", c, "W1", unit="4WEST", dx=("J18.9",), admit="20261109110000-0500", discharge="20261112110000-0500", disposition="01"),
        adt("A13", "J2-03", "20261112113000-0500", c, "W1", unit="4WEST", dx=("J18.9",), admit="20261109110000-0500"),
    ])
    write("j3_merge.hl7", [
        adt("A01", "J3-01", "20261102090000-0500", "J3OLD", "X1", unit="4WEST", dx=("J44.1",), admit="20261102090000-0500"),
        adt("A03", "J3-02", "20261105090000-0500", "J3OLD", "X1", unit="4WEST", dx=("J44.1",), admit="20261102090000-0500", discharge="20261105090000-0500", disposition="01"),
        adt("A40", "J3-03", "20261110090000-0500", "J3NEW", "", mrg="J3OLD"),
        adt("A01", "J3-04", "20261116090000-0500", "J3NEW", "X2", unit="4WEST", dx=("J44.1",), admit="20261116090000-0500"),
    ])
    # Saturday 03:00: only weekday day-shift managers cover 4WEST.
    write("j4_off_shift.hl7", [
        adt("A01", "J4-01", "20261114030000-0500", "J4004", "Y1", unit="4WEST", dx=("I21.4",), admit="20261114030000-0500"),
    ])


if __name__ == "__main__":
    main()
