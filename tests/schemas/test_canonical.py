from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.canonical import (
    CanonicalEvent,
    EventKind,
    Patient,
    Source,
    derive_id,
    dump_event,
    patient_key,
    patient_ref,
)
from schemas.topics import CATALOGUE

NOW = datetime(2026, 11, 2, 13, 0, tzinfo=UTC)


def _event(**kw: object) -> CanonicalEvent:
    base: dict[str, object] = dict(
        event_id=derive_id("hl7v2", "GENHOSP", "C1", 0),
        kind=EventKind.ADMIT,
        trigger="A01",
        occurred_at=NOW,
        recorded_at=NOW,
        source=Source(format="hl7v2", facility="GENHOSP", message_id="C1", version="2.5.1"),
        patient=Patient(key=patient_key("GENHOSP", "MRN1"), mrn="MRN1",
                        assigning_authority="GENHOSP"),
    )
    base.update(kw)
    return CanonicalEvent(**base)  # type: ignore[arg-type]


def test_derive_id_is_deterministic_and_sensitive_to_every_part() -> None:
    assert derive_id("a", "b", 1) == derive_id("a", "b", 1)
    assert derive_id("a", "b", 1) != derive_id("a", "b", 2)
    assert derive_id("ab", "c") != derive_id("a", "bc")


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError):
        _event(occurred_at=datetime(2026, 1, 1, 12, 0))


def test_wire_form_omits_nulls_and_keeps_offsets() -> None:
    wire = dump_event(_event())
    assert wire["occurred_at"].endswith("Z") or wire["occurred_at"].endswith("+00:00")
    assert "encounter" not in wire and "merge" not in wire
    assert wire["patient"]["key"] == "GENHOSP|MRN1"


def test_patient_ref_hides_the_mrn() -> None:
    ref = patient_ref(patient_key("GENHOSP", "MRN1"))
    assert "MRN1" not in ref and len(ref) == 12


def test_catalogue_names_are_domain_dot_thing_and_unique() -> None:
    names = [t.name for t in CATALOGUE]
    assert len(names) == len(set(names))
    for name in names:
        domain, _, thing = name.partition(".")
        assert domain and thing and name == name.lower()
