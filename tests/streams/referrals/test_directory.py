"""Agency directory: YAML contract, validation messages, lookups, tokens."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from streams.referrals.directory import (
    Agency,
    Directory,
    DirectoryError,
    normalize_county,
    parse_directory,
    token_sha256,
)

REPO = Path(__file__).resolve().parents[3]

ISSUE_EXAMPLE = """
agencies:
  - id: springfield-housing
    name: Springfield Housing Partners
    services: [housing]
    service_area: {zip: ["01103", "01104"], counties: []}
    languages: [en, es]          # empty = any
    accepting: true
    delivery: {webhook: {url: "https://agency.example/referrals",
                         secret_env: SPRINGFIELD_HOUSING_SECRET}}
    contact: {phone: "+1-413-555-0100", email: "intake@agency.example"}
"""


def test_issue_example_parses() -> None:
    d = parse_directory(ISSUE_EXAMPLE)
    a = d.agencies[0]
    assert a.id == "springfield-housing"
    assert a.services == ("housing",)
    assert a.service_area.zip == ("01103", "01104")
    assert a.languages == ("en", "es")
    assert a.accepting is True
    assert a.delivery.webhook is not None
    assert a.delivery.webhook.url == "https://agency.example/referrals"
    assert a.delivery.webhook.secret_env == "SPRINGFIELD_HOUSING_SECRET"
    assert a.contact.phone == "+1-413-555-0100"
    assert a.api.token_sha256 is None
    assert d.by_id("springfield-housing") is a
    assert d.by_id("nope") is None
    assert d.topics() == ("referrals.springfield-housing",)


def test_sample_file_parses_and_round_trips() -> None:
    d = parse_directory((REPO / "hub/samples/agencies.yaml").read_text())
    assert len(d.agencies) >= 4
    assert sum(1 for a in d.agencies if "housing" in a.services) >= 2
    assert Directory.from_json(d.to_json()) == d


def test_minimal_agency_defaults() -> None:
    d = parse_directory("agencies:\n  - {id: a1, name: A, services: [Food]}\n")
    a = d.agencies[0]
    assert a.services == ("food",)
    assert a.service_area.is_anywhere()
    assert a.languages == ()
    assert a.accepting is True
    assert a.delivery.webhook is None


def test_unquoted_zip_codes_stay_strings() -> None:
    d = parse_directory(
        "agencies:\n  - {id: a1, name: A, services: [food], service_area: {zip: [01103, 10001]}}\n")
    assert d.agencies[0].service_area.zip == ("01103", "10001")


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("{id: Bad_Id, name: A, services: [food]}", "agencies[0].id"),
        ("{id: updates, name: A, services: [food]}", "agencies[0].id"),
        ("{id: deliveries, name: A, services: [food]}", "agencies[0].id"),
        ("{id: a, name: A, services: []}", "agencies[0].services"),
        ("{id: a, name: A, services: [food], acepting: true}", "agencies[0].acepting"),
        ("{id: a, name: A, services: [food], service_area: {zip: ['1103']}}",
         "agencies[0].service_area.zip"),
        ("{id: a, name: A, services: [food], delivery: {webhook: {url: 'ftp://x'}}}",
         "agencies[0].delivery.webhook.url"),
        ("{id: a, name: A, services: [food], "
         "delivery: {webhook: {url: 'https://x', secret_env: 'not a name'}}}",
         "agencies[0].delivery.webhook.secret_env"),
        ("{id: a, name: A, services: [food], api: {token_sha256: plaintext-token}}",
         "agencies[0].api.token_sha256"),
        ("{id: a, services: [food]}", "agencies[0].name"),
    ],
)
def test_problems_name_the_path(snippet: str, path: str) -> None:
    with pytest.raises(DirectoryError) as info:
        parse_directory(f"agencies:\n  - {snippet}\n")
    assert any(p.startswith(path + ":") for p in info.value.problems), info.value.problems


def test_problem_messages_do_not_echo_values() -> None:
    with pytest.raises(DirectoryError) as info:
        parse_directory("agencies:\n  - {id: a, name: A, services: [food], "
                        "api: {token_sha256: SECRETTOKEN123}}\n")
    assert "SECRETTOKEN123" not in str(info.value)


def test_duplicate_ids_and_tokens_refused() -> None:
    digest = token_sha256("t")
    text = (
        "agencies:\n"
        f"  - {{id: a, name: A, services: [food], api: {{token_sha256: {digest}}}}}\n"
        f"  - {{id: a, name: B, services: [food], api: {{token_sha256: {digest}}}}}\n"
    )
    with pytest.raises(DirectoryError) as info:
        parse_directory(text)
    problems = info.value.problems
    assert any(p.startswith("agencies[1].id:") for p in problems)
    assert any(p.startswith("agencies[1].api.token_sha256:") for p in problems)


@pytest.mark.parametrize(
    "text", ["", "[1, 2]", "agencies: [\n", "agencies:\n  - {id: a, id: b}\n"])
def test_unusable_documents(text: str) -> None:
    with pytest.raises(DirectoryError):
        parse_directory(text)


def test_error_is_a_value_error_and_pickles() -> None:
    err = DirectoryError(["x: y", "z: w"])
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems


def test_from_json_refuses_bad_data() -> None:
    with pytest.raises(DirectoryError):
        Directory.from_json(b'{"agencies": [{"id": "UPPER", "name": "x", "services": ["f"]}]}')


def test_token_lookup() -> None:
    token = "s3cret-token"
    digest = token_sha256(token)
    d = Directory(agencies=(
        Agency(id="a", name="A", services=("food",)),
        Agency.model_validate({"id": "b", "name": "B", "services": ["food"],
                               "api": {"token_sha256": digest.upper()}}),
    ))
    b = d.agency_for_token_hash(digest)
    assert b is not None and b.id == "b"
    assert d.agency_for_token_hash(token_sha256("other")) is None
    assert d.agency_for_token_hash("") is None


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("Hampden", "hampden"), ("Hampden County", "hampden"), ("  HAMPDEN  county ", "hampden"),
     ("Orleans Parish", "orleans"), ("St. Louis", "st. louis")],
)
def test_normalize_county(raw: str, norm: str) -> None:
    assert normalize_county(raw) == norm
