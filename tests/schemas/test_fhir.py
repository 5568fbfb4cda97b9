"""schemas.fhir: validation errors without values, R4 pre-cleaning, OperationOutcome."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ErrorCode, MappingError
from schemas.fhir import (
    ERROR_CODE_SYSTEM,
    Bundle,
    Encounter,
    OperationOutcome,
    operation_outcome,
    parse_resource,
)

SECRET = "Zebulon Quixote 1234"


def _error(data: Any, **kwargs: Any) -> MappingError:
    with pytest.raises(MappingError) as err:
        parse_resource(data, **kwargs)
    assert err.value.code is ErrorCode.INVALID_RESOURCE
    return err.value


def test_parses_r4_encounter() -> None:
    model = parse_resource({"resourceType": "Encounter", "status": "finished",
                            "class": {"code": "IMP"}})
    assert isinstance(model, Encounter)


def test_error_names_path_and_type_but_no_value() -> None:
    err = _error({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient"}},
                  {"resource": {"resourceType": "Patient", "birthDate": SECRET,
                                "gender": 7}}],
    })
    assert "Bundle.entry[1].resource.birthDate" in err.detail
    assert "Bundle.entry[1].resource.gender: string_type" in err.detail
    assert err.position == "Bundle.entry[1].resource.birthDate"
    assert "Zebulon" not in err.detail and "1234" not in err.detail and "7" not in err.detail
    assert "Zebulon" not in str(err)


def test_unknown_element_key_not_echoed_when_not_an_element_name() -> None:
    err = _error({"resourceType": "Patient", f"{SECRET}": "x", "nickname": SECRET})
    assert "Patient.nickname: extra_forbidden" in err.detail
    assert "Zebulon" not in err.detail


def test_unknown_or_missing_resource_type() -> None:
    assert "resourceType" in _error({"status": "x"}).detail
    err = _error({"resourceType": SECRET})
    assert "Zebulon" not in err.detail
    err = _error({"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {"resourceType": "Zebulon"}}]})
    assert err.position == "Bundle.entry[0].resource" and "Zebulon" not in err.detail


def test_not_an_object() -> None:
    _error([1, 2])  # type: ignore[arg-type]


def test_r4_only_resources_are_dropped() -> None:
    model = parse_resource({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "MedicinalProduct", "id": "m"}},
        {"resource": {"resourceType": "Patient", "id": "p"}},
    ]})
    assert isinstance(model, Bundle)
    assert [e.resource.get_resource_type() for e in model.entry or [] if e.resource] == [
        "Patient"]


def test_naive_datetime_needs_default_tz() -> None:
    data = {"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"},
            "period": {"start": "2024-01-15T08:30:00"}}
    err = _error(data)
    assert "Encounter.period.start" in err.detail
    model = parse_resource(data, default_tz="America/Chicago")
    assert isinstance(model, Encounter) and model.period is not None
    assert model.period.start is not None
    assert model.period.start.isoformat() == "2024-01-15T08:30:00-06:00"


def test_operation_outcome_shape() -> None:
    oo = operation_outcome("invalid_resource", "Encounter.status is not an R4 code",
                           expression=["Encounter.status"])
    assert oo == {
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "invalid",
            "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": "invalid_resource"}],
                        "text": "Encounter.status is not an R4 code"},
            "expression": ["Encounter.status"],
        }],
    }
    OperationOutcome.model_validate(oo)  # round-trips through the R4B model
    warn = operation_outcome("x", "y", severity="warning", issue_type="not-supported")
    assert warn["issue"][0]["severity"] == "warning"
    assert warn["issue"][0]["code"] == "not-supported"
    assert "expression" not in warn["issue"][0]


def test_operation_outcome_rejects_codes_outside_value_sets() -> None:
    with pytest.raises(ValueError):
        operation_outcome("x", "y", severity="bad")
    with pytest.raises(ValueError):
        operation_outcome("x", "y", issue_type="bad")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["resourceType", "id", "status", "class", "entry",
                                        "type", "gender", "birthDate", "name", "period"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(
                           max_size=10) | st.sampled_from(["Encounter", "Patient", "Bundle"]),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                               st.text(max_size=8), c, max_size=3), max_leaves=15),
                       max_size=6))
def test_parse_raises_only_mapping_error(data: dict[str, Any]) -> None:
    try:
        parse_resource(data)
    except MappingError as exc:
        assert exc.code is ErrorCode.INVALID_RESOURCE
