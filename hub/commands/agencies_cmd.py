"""``hub agencies check FILE | push FILE | token ID``: the community-agency directory.

* ``check FILE``: validate the YAML and print one line per agency (exit 1 when invalid).
* ``push FILE``: validate, create the agencies' ``referrals.<id>`` topics, write the
  directory to config.agencies; running workers apply it within seconds.
* ``token ID``: print a new random bearer token for agency ID once, and the
  ``token_sha256`` line to paste into the directory (only the hash is ever stored).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from streams.referrals.directory import AGENCY_ID


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agencies", help="validate or push the agency directory; make API tokens")
    p.add_argument("action", choices=["check", "push", "token"])
    p.add_argument("target", metavar="FILE|ID", help="directory YAML (check, push) or agency id")


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
        ) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    from hub.agencies import DirectoryError, load_directory_file, new_token, summary

    if args.action == "token":
        if not AGENCY_ID.match(args.target):
            print(f"hub agencies token: not an agency id: {args.target!r}", file=err)
            return 2
        token, digest = new_token()
        print(f"token for {args.target} (shown once; give it to the agency over a secure "
              f"channel):\n  {token}", file=out)
        print("paste into the agency's entry in the directory:", file=out)
        print(f"    api: {{token_sha256: \"{digest}\"}}", file=out)
        return 0
    try:
        directory = load_directory_file(Path(args.target))
    except OSError as exc:
        print(f"hub agencies: cannot read {args.target}: {exc.strerror}", file=err)
        return 2
    except DirectoryError as exc:
        print(f"hub agencies: {args.target}: {exc}", file=err)
        return 1
    print(f"directory ok: {len(directory.agencies)} agencies", file=out)
    for line in summary(directory):
        print(line, file=out)
    if args.action == "check":
        return 0
    from hub.agencies import push_directory
    from hub.cli import _settings
    from hub.kafka import KafkaUnavailableError

    settings = _settings()
    if not settings.kafka_bootstrap:
        print("hub agencies push: HUB_KAFKA_BOOTSTRAP is not set (no hub to push to)",
              file=err)
        return 2
    try:
        partition, offset = asyncio.run(push_directory(settings, directory))
    except (KafkaUnavailableError, OSError) as exc:
        print(f"hub agencies push: {exc}", file=err)
        return 2
    print(f"pushed to {settings.topic('config.agencies')} (partition {partition}, "
          f"offset {offset}); workers apply it within seconds", file=out)
    return 0
