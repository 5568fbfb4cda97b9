"""The ``hub`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence
from functools import partial

from pydantic import ValidationError


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from hub.settings import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"hub: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_run(args: argparse.Namespace, roles: set[str]) -> int:
    from hub import runner

    overrides: dict[str, object] = {}
    if args.mllp_port is not None:
        overrides["mllp_port"] = args.mllp_port
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    staff_token = None
    if getattr(args, "demo", False):
        # The demo plays the case manager over the staff API: a random token for this run
        # only (its hash in the settings), unless one is configured.
        if os.environ.get("HUB_STAFF_API_TOKEN_SHA256") is None:
            from streams.referrals.directory import token_sha256

            staff_token = secrets.token_urlsafe(24)
            overrides["staff_api_token_sha256"] = token_sha256(staff_token)
        from hub.demo import demo_overrides

        overrides = {**demo_overrides(os.environ), **overrides}
    settings = _settings(**overrides)
    after = None
    if getattr(args, "demo", False):
        from hub.demo import replay_and_summarise

        after = partial(replay_and_summarise, exit_after=args.exit, patients=args.patients,
                        staff_token=staff_token, live=args.trickle)
    return runner.run(settings, roles=roles, after_start=after)


def cmd_map(args: argparse.Namespace) -> int:
    from hub.commands.map_cmd import run_map

    return run_map(args.files, default_tz=args.tz, out=sys.stdout)


def cmd_decide(args: argparse.Namespace) -> int:
    from hub.commands.decide_cmd import main_decide

    return main_decide(args)


def cmd_roster(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hub.kafka import KafkaUnavailableError
    from hub.roster import RosterError, load_roster_file, push_roster

    try:
        roster = load_roster_file(Path(args.file))
    except OSError as exc:
        print(f"hub roster: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except RosterError as exc:
        print(f"hub roster: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"roster ok: {len(roster.teams)} teams, {len(roster.managers)} managers")
    if args.action == "check":
        return 0
    settings = _settings()
    if not settings.kafka_bootstrap:
        print("hub roster push: HUB_KAFKA_BOOTSTRAP is not set (no hub to push to)",
              file=sys.stderr)
        return 2
    try:
        partition, offset = asyncio.run(push_roster(settings, roster))
    except (KafkaUnavailableError, OSError) as exc:
        print(f"hub roster push: {exc}", file=sys.stderr)
        return 2
    print(f"pushed to {settings.topic('config.roster')} (partition {partition}, "
          f"offset {offset}); workers apply it within seconds")
    return 0


def cmd_feed(args: argparse.Namespace) -> int:
    from hub.feed import FeedConfig, generate

    cfg = FeedConfig(patients=args.patients, seed=args.seed, bad_messages=args.bad,
                     mix=args.mix)
    data = b"\n".join(generate(cfg))
    if args.out == "-":
        sys.stdout.buffer.write(data + b"\n")
    else:
        with open(args.out, "wb") as fh:
            fh.write(data + b"\n")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from hub.demo import _ack_code
    from hub.mllp_client import send_all
    from mappers.hl7v2 import split_messages

    messages: list[bytes] = []
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                messages.extend(split_messages(fh.read()))
        except OSError as exc:
            print(f"hub send: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        acks = asyncio.run(send_all(args.host, args.port, messages))
    except (OSError, TimeoutError) as exc:
        print(f"hub send: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    codes = [_ack_code(a) for a in acks]
    for code in sorted(set(codes)):
        print(f"{code}\t{codes.count(code)}")
    return 0 if all(c in ("AA", "CA") for c in codes) else 1


def cmd_topics(_: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from schemas.topics import CATALOGUE

    table = Table(title="Topic catalogue")
    for col in ("name", "key", "value", "partitions", "cleanup", "retention (days)"):
        table.add_column(col)
    for t in CATALOGUE:
        days = "" if t.retention_ms is None else f"{t.retention_ms / 86_400_000:g}"
        table.add_row(t.name, t.key, t.value, str(t.partitions), t.cleanup_policy, days)
    Console().print(table)
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    from hub.brokers import apache

    return int(apache.main(args.rest) or 0)


def cmd_dlq(args: argparse.Namespace) -> int:
    from hub.commands.dlq_cmd import run_dlq

    return run_dlq(args, _settings())


def cmd_status(args: argparse.Namespace) -> int:
    from hub.commands.status_cmd import run_status

    return run_status(args, _settings())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Care transitions integration hub")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_ports(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mllp-port", type=int, default=None)
        p.add_argument("--http-port", type=int, default=None)

    p = sub.add_parser("run", help="ingest + worker in one process (embedded broker if none)")
    add_ports(p)
    p.add_argument("--demo", action="store_true", help="replay the synthetic feed, summarise")
    p.add_argument("--exit", action="store_true", help="with --demo: exit after the summary")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--trickle", action=argparse.BooleanOptionalAction, default=True,
                   help="with --demo and without --exit: keep sending new patients "
                        "(a message every 1-3 s) after the summary")
    p.set_defaults(func=lambda a: cmd_run(a, {"ingest", "worker"}))
    p = sub.add_parser("ingest", help="MLLP and HTTP ingest only")
    add_ports(p)
    p.set_defaults(func=lambda a: cmd_run(a, {"ingest"}))
    p = sub.add_parser("worker", help="stream processing only")
    add_ports(p)
    p.set_defaults(func=lambda a: cmd_run(a, {"worker"}))

    p = sub.add_parser("map", help="map HL7 v2 / FHIR files to canonical JSON Lines (no broker)")
    p.add_argument("files", nargs="+")
    p.add_argument("--tz", default="UTC", help="zone for HL7 timestamps without an offset")
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("decide", help="run the care rules offline over HL7 v2 / FHIR files")
    p.add_argument("files", nargs="+")
    p.add_argument("--rules", help="rules YAML (default: the shipped hub/samples/rules.yaml)")
    p.add_argument("--roster", help="roster YAML (default: hub/samples/roster.yaml)")
    p.add_argument("--agencies", help="agency directory YAML (referrals)")
    p.add_argument("--now", help="run the timers at this time at the end (ISO-8601 + offset)")
    p.add_argument("--tz", default="UTC",
                   help="zone for timestamps without an offset and for facilities the "
                        "rules file does not place")
    p.add_argument("--fhir", action="store_true", help="include the FHIR resources")
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser("roster", help="validate or push the roster (teams, managers, shifts)")
    p.add_argument("action", choices=["check", "push"])
    p.add_argument("file")
    p.set_defaults(func=cmd_roster)

    p = sub.add_parser("feed", help="write the synthetic ADT feed")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bad", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--mix", choices=["journeys", "hospital"], default="journeys",
                   help="inpatient journeys only, or inside a hospital's everyday traffic "
                        "(A08 48%%, A31 30%%, A04 17%%, A01 1%%)")
    p.add_argument("--out", default="-")
    p.set_defaults(func=cmd_feed)

    p = sub.add_parser("send", help="send HL7 v2 files over MLLP and count the ACK codes")
    p.add_argument("files", nargs="+")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2575)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("topics", help="print the topic catalogue")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("kafka", help="local Apache Kafka for tests: fetch|start|stop|status")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_kafka)

    from hub.commands import agencies_cmd, dlq_cmd, status_cmd

    agencies_cmd.add_parser(sub)
    sub.choices["agencies"].set_defaults(func=lambda a: agencies_cmd.run(a))

    dlq_cmd.add_parser(sub)
    sub.choices["dlq"].set_defaults(func=cmd_dlq)
    status_cmd.add_parser(sub)
    sub.choices["status"].set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
