"""``hub decide``: run the care rules offline over HL7 v2 / FHIR files, in order.

Prints JSON Lines: one output per line (``type`` flag, assignment, task, escalation,
notification; ``id``, ``cause_event_id``, ``rule`` and the per-type fields). With
``--agencies FILE`` the referrals stage runs too and prints ``referral`` lines (id,
agency_id, need, need_codes, status, attempt, cause_event_id, rule; the agency's copy
only with ``--fhir``). Time is the
events' own (a timer pass runs at each event's time, and at ``--now`` at the end), so the
output is reproducible: the same files give the same lines, ids included. Messages that
cannot be mapped are reported on stderr as ``hub map`` reports them, and make the exit
status 1. No broker.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

from hub.commands.map_cmd import map_files
from schemas.canonical import CanonicalEvent
from streams.care.config import CareConfig, RulesError, parse_rules
from streams.care.engine import CareContext
from streams.care.offline import OfflineRun, summary_line
from streams.care.roster import Roster, RosterError, parse_roster
from streams.referrals.directory import Directory, DirectoryError, parse_directory
from streams.referrals.engine import ReferralContext

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
DEFAULT_ROSTER = SAMPLES / "roster.yaml"
DEFAULT_RULES = SAMPLES / "rules.yaml"
DEFAULT_AGENCIES = SAMPLES / "agencies.yaml"


class DecideError(Exception):
    """A problem with the command's own inputs (rules, roster, --now): exit status 2."""


def load_rules(path: str | Path | None, *, default_tz: str | None = None) -> CareConfig:
    """The rules file at ``path`` (or the shipped defaults); ``default_tz`` (the analyst's
    ``--tz``) sets the facility zone when the file names none."""
    source = Path(path) if path else DEFAULT_RULES
    try:
        cfg = parse_rules(source.read_text(encoding="utf-8")) if source.exists() or path \
            else CareConfig()
    except OSError as exc:
        raise DecideError(f"cannot read rules file {source}: {exc.strerror}") from exc
    except RulesError as exc:
        raise DecideError(f"{source}: {exc}") from exc
    if default_tz and "default_timezone" not in cfg.episode.model_fields_set:
        cfg = cfg.model_copy(update={"episode": cfg.episode.model_copy(
            update={"default_timezone": default_tz})})
    return cfg


def load_roster(path: str | Path | None) -> Roster:
    source = Path(path) if path else DEFAULT_ROSTER
    try:
        return parse_roster(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DecideError(f"cannot read roster file {source}: {exc.strerror}") from exc
    except RosterError as exc:
        raise DecideError(f"{source}: {exc}") from exc


def load_agencies(path: str | Path) -> Directory:
    source = Path(path)
    try:
        return parse_directory(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DecideError(f"cannot read agency directory {source}: {exc.strerror}") from exc
    except DirectoryError as exc:
        raise DecideError(f"{source}: {exc}") from exc


def run_decide(paths: list[str], *, rules: str | None, roster: str | None,
               agencies: str | None, now: str | None, tz: str, with_fhir: bool,
               out: TextIO, err: TextIO) -> int:
    try:
        ctx = CareContext(config=load_rules(rules, default_tz=tz), roster=load_roster(roster))
        final = _parse_now(now)
    except DecideError as exc:
        print(f"hub decide: {exc}", file=err)
        return 2
    referrals = None
    if agencies:
        try:
            referrals = ReferralContext(config=ctx.config.referrals,
                                        directory=load_agencies(agencies), roster=ctx.roster)
        except DecideError as exc:
            print(f"hub decide: {exc}", file=err)
            return 2
    run = OfflineRun(ctx, referrals)
    ok = True

    def write(outputs: list[object]) -> None:
        for output in outputs:
            out.write(orjson.dumps(summary_line(output, with_fhir=with_fhir)).decode())
            out.write("\n")

    # received_at only fills recorded_at for messages without their own time; a fixed
    # value keeps the output reproducible.
    for item in map_files(paths, default_tz=tz, received_at=datetime(1970, 1, 1, tzinfo=UTC)):
        if isinstance(item, CanonicalEvent):
            write(run.event(item))
        else:
            ok = False
            print(orjson.dumps(item).decode(), file=err)
    if final is not None:
        write(run.tick(final))
    out.flush()
    return 0 if ok else 1


def _parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecideError(f"--now must be an ISO-8601 date-time with offset: {value!r}") \
            from exc
    if parsed.tzinfo is None:
        raise DecideError("--now needs a UTC offset (e.g. 2026-11-24T09:00:00-05:00)")
    return parsed


def main_decide(args: object) -> int:
    return run_decide(
        list(getattr(args, "files")), rules=getattr(args, "rules"),  # noqa: B009
        roster=getattr(args, "roster"), agencies=getattr(args, "agencies"),  # noqa: B009
        now=getattr(args, "now"), tz=getattr(args, "tz"),  # noqa: B009
        with_fhir=getattr(args, "fhir"), out=sys.stdout, err=sys.stderr)  # noqa: B009
