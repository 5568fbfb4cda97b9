"""``hub decide --agencies`` and ``hub agencies``: referrals offline, reproducible."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hub.cli import main
from hub.feed import FeedConfig, generate
from streams.referrals.directory import token_sha256

REPO = Path(__file__).resolve().parents[3]
AGENCIES = REPO / "hub" / "samples" / "agencies.yaml"


def test_decide_prints_referrals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "feed.hl7"
    feed.write_bytes(b"\n".join(generate(FeedConfig(patients=20, bad_messages=False))))
    args = ["decide", "--agencies", str(AGENCIES), "--tz", "America/New_York", str(feed)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same files, same lines, ids included
    lines = [orjson.loads(line) for line in first.splitlines()]
    refs = [x for x in lines if x["type"] == "referral"]
    assert {r["need"] for r in refs} >= {"housing", "food", "home-health"}
    housing = next(r for r in refs if r["need"] == "housing")
    for field in ("id", "agency_id", "need", "status", "cause_event_id", "rule"):
        assert housing[field]
    assert "agency_copy" not in housing and "fhir" not in housing  # names only with --fhir
    assert {r["agency_id"] for r in refs if r["need"] == "housing"} <= {
        "springfield-housing", "pioneer-valley-shelter"}
    # Without --agencies: no referral lines.
    assert main(args[:1] + args[3:]) == 0
    assert '"referral"' not in capsys.readouterr().out


def test_decide_refuses_a_bad_directory(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agencies:\n  - {id: UPPER, name: x, services: [food]}\n")
    feed = tmp_path / "f.hl7"
    feed.write_bytes(next(iter(generate(FeedConfig(patients=1, bad_messages=False)))))
    assert main(["decide", "--agencies", str(bad), str(feed)]) == 2
    assert "agencies[0].id" in capsys.readouterr().err


def test_agencies_check_and_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agencies", "check", str(AGENCIES)]) == 0
    assert "springfield-housing" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agencies: [{id: updates, name: x, services: [food]}]\n")
    assert main(["agencies", "check", str(bad)]) == 1
    assert main(["agencies", "check", str(tmp_path / "missing.yaml")]) == 2
    capsys.readouterr()
    assert main(["agencies", "token", "springfield-housing"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[1].strip()
    assert f'token_sha256: "{token_sha256(token)}"' in out[-1]
    assert main(["agencies", "token", "Not An Id"]) == 2
