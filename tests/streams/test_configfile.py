"""The strict YAML loader shared by the roster, the agency directory and the rules file."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from streams.care.config import RulesError, parse_rules
from streams.configfile import load_yaml, validation_problems


def test_yaml_1_2_scalars() -> None:
    data, problem = load_yaml('end: 17:00\nlanguages: [no, en]\nok: true\nn: 010\n', "x")
    assert problem is None
    assert data == {"end": "17:00", "languages": ["no", "en"], "ok": True, "n": "010"}


def test_duplicate_key_and_bad_yaml_name_the_place_not_the_text() -> None:
    _, problem = load_yaml("a: 1\na: 2\n", "roster")
    assert problem is not None and problem.startswith("roster: not valid YAML at line 2")
    _, problem = load_yaml("a: [Secretname\n", "directory")
    assert problem is not None and "Secretname" not in problem


def test_validation_problems_have_paths_and_no_values() -> None:
    class M(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cap: int

    with pytest.raises(ValidationError) as err:
        M.model_validate({"cap": "Ana Ruiz", "nmae": 1})
    problems = validation_problems(err.value, "roster")
    assert any(p.startswith("cap: ") for p in problems)
    assert "nmae: unknown field (a typo?)" in problems
    assert not any("Ana Ruiz" in p for p in problems)


def test_rules_file_uses_the_strict_loader() -> None:
    with pytest.raises(RulesError, match="line 2"):
        parse_rules("risk: {}\nrisk: {}\n")
