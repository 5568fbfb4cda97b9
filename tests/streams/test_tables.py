"""Every faust table's changelog and store use raw bytes, the form the agents write.

Without ``key_type=bytes, value_type=bytes`` on the Table itself (``schema=`` only covers
the source stream) faust falls back to JSON codecs, and a restarted worker fails to
recover the changelog and never becomes ready (tests/streams/test_worker_e2e.py's restart
test shows it on a broker; this one catches a new table declared the old way).
"""

from __future__ import annotations

from typing import Any

from streams.app import create_app
from streams.config import StreamsConfig


async def _sender(job: Any, attempt: int) -> Any:  # never called: the app is not started
    raise AssertionError("not started")


def test_every_table_uses_raw_codecs() -> None:
    cfg = StreamsConfig(bootstrap="127.0.0.1:1", care=True, webhook_sender=_sender)
    app, _ = create_app(cfg)
    names = set(app.tables.keys())
    assert {"episodes", "caseloads", "referrals", "deliveries"} <= names, names
    for name, table in app.tables.items():
        assert (table.key_serializer, table.value_serializer) == ("raw", "raw"), name
