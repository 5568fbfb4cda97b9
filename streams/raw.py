"""Raw-bytes topics and tables: the agents decode and encode records themselves (pydantic
models from schemas/), so faust must pass bytes through untouched."""

from __future__ import annotations

from typing import Any

import faust


def raw_schema() -> faust.Schema:
    """Bytes in, bytes out, for a topic an agent reads or a table's source stream."""
    return faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw")


def raw_table(app: faust.App, name: str, *, partitions: int) -> Any:
    """A table of bytes -> bytes (``None`` when absent).

    The Table's own ``key_type``/``value_type`` pick its changelog and store codecs (the
    schema only covers the source stream): without them faust falls back to JSON and a
    restarted worker cannot recover the changelog (tests/streams/test_tables.py)."""
    return app.Table(name, default=None, schema=raw_schema(), key_type=bytes,
                     value_type=bytes, partitions=partitions)
