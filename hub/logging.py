"""Structured logging: one ``configure`` call, JSON lines, a PHI allow-list.

Only keys on :data:`ALLOWED_KEYS` pass with their values; any other key keeps its name
but its value becomes ``"[redacted]"``. An allow-list (not a deny-list) is the point: a
new field someone adds tomorrow is redacted until a reviewer decides it is safe. The
event name itself must be a snake_case past-tense constant, never interpolated text.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

ALLOWED_KEYS: frozenset[str] = frozenset(
    {
        # structlog / stdlib
        "event", "level", "timestamp", "logger", "exc_type", "exc_frames", "log_template",
        "role",
        # coordinates
        "topic", "partition", "offset", "stage", "transport", "listener", "peer", "port",
        "host", "bootstrap", "broker", "brokers", "node_id", "pid", "app_id", "group",
        # codes and ids (not PHI: control ids, event ids, hashed patient refs)
        "facility", "sending_facility", "control_id", "message_id", "event_id", "event_ids",
        "dead_letter_id", "patient_ref", "kind", "trigger", "version", "ack_code", "ack_mode",
        "error_code", "hl7_error_code", "position", "content_type", "status", "http_status",
        "method", "path", "reason", "feed",
        # figures
        "count", "events", "size", "bytes", "latency_ms", "duration_ms", "elapsed_s",
        "timeout_s", "attempt", "attempts", "partitions", "records", "sent", "acked",
        "rejected", "dead_letters", "duplicates", "mapped", "failures", "problems", "steps",
        "referrals", "agencies", "managers", "teams", "waits_expired", "window_s",
        # referral and delivery coordinates (agency ids and codes; hub-made ids; the
        # target is a hashed patient ref). Consent "source" stays out: it is free text.
        "agency_id", "agency_version", "delivery_id", "referral_task_id", "update_id",
        "need", "rule", "op", "outcome", "realm", "replay", "dedup", "next_attempt_at",
        "target_ref",
        # roster ids (ops-defined, not PHI)
        "team",
        # follow-up tasks (hub-made task ids; counts)
        "task_id", "completed",
    }
)
REDACTED = "[redacted]"
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


EventDict = MutableMapping[str, Any]


def phi_allow_list(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Redact every value whose key is not allow-listed; keep only snake_case event names."""
    for key in list(event_dict):
        if key not in ALLOWED_KEYS:
            event_dict[key] = REDACTED
    name = event_dict.get("event")
    if not isinstance(name, str) or not _SNAKE.match(name):
        # Free text in the event name (e.g. a stdlib log line from a library) could
        # carry anything; keep the logger name and drop the text.
        event_dict["event"] = "library_log_emitted"
    return event_dict


def _stdlib_extract(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """For stdlib records (faust, mode, aiokafka): keep the format string, drop the args.

    A library's format string is a constant written by its authors; the arguments are
    where data (and so PHI) would be, so they are never rendered.
    """
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
        if isinstance(record.msg, str):
            event_dict["log_template"] = record.msg[:200]
        event_dict["event"] = "library_log_emitted"
    return event_dict


def exception_shape(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Replace ``exc_info`` by the exception's type and frames; never its message.

    Exception messages quote data (a pydantic error echoes its input, a KeyError its
    key), so only where it happened is rendered, not what it said.
    """
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is None or exc_info is False:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        event_dict["exc_type"] = exc_info[0].__name__
        frames = traceback.extract_tb(exc_info[2])[-8:]
        event_dict["exc_frames"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}:{f.name}"
                                    for f in frames]
    return event_dict


def configure(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging (faust, aiokafka) through it."""
    out = stream or sys.stderr
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # filter_by_level first: without it every processor runs for a debug line that
        # the stdlib logger then throws away (measured: most of normalize's overhead).
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _stdlib_extract],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exception_shape,
            phi_allow_list,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO is noise for ops and may echo payload fragments.
    quiet = os.environ.get("HUB_QUIET_LOGGERS", "aiokafka,faust,mode,kafka,aiohttp.access")
    for noisy in quiet.split(","):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
