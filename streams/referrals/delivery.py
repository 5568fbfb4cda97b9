"""Webhook delivery, pure: signing, outcome classification and the retry state machine.

No I/O, no clock, no environment: the sender (``hub.webhooks``) makes the HTTP call and
hands back an :class:`AttemptOutcome`; time comes in as an argument.

Signature (what an agency checks; README "Webhooks")::

    X-Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
    Idempotency-Key: <job id>

The timestamp is inside the MAC so a captured request cannot be replayed later than the
receiver's tolerance (:func:`verify_signature`, 5 minutes by default); the idempotency key
is the same on every attempt of one delivery, so a receiver that stores it accepts each
delivery once even when an answer was lost and the hub sent it again.

States::

    pending --2xx--> delivered                       (terminal)
    pending/retrying --retryable failure--> retrying (next attempt strictly later)
    pending/retrying --fatal or too old--> exhausted (terminal: dead letter + metric)

Outcome classes (redirects are never followed, so a 3xx is a failure like a 4xx):

============================================  ==========================================
answer                                        verdict
============================================  ==========================================
2xx                                           delivered
408, 429, 5xx, connection error, timeout,     retry with backoff until ``max_age_s``
DNS failure, secret not configured
410 Gone                                      exhausted at once (the endpoint says so)
other 4xx, 3xx                                retry, but at most ``client_error_attempts``
                                              such answers in a row (a wrong secret or a
                                              moved endpoint is fixed by people, not by
                                              hammering it), then exhausted
refused by the URL policy (not HTTPS,         exhausted at once (the directory must be
private target in production, unsigned)       fixed; retrying cannot help)
============================================  ==========================================

Backoff: ``min(backoff_max_s, backoff_base_s * 2**(failures-1))`` scaled by a jitter
factor in [0.5, 1.0) derived from the job id and attempt number (deterministic, so a
replay computes the same schedule, yet agencies see retries spread out rather than a
thundering herd). The last retry is clamped to the delivery's deadline
(``created_at + max_age_s``); a failure at or after the deadline exhausts the delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.canonical import AwareDatetime
from schemas.referrals import DeliveryJob
from streams.marks import epoch_us

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "AttemptOutcome",
    "DeliveryPolicy",
    "DeliveryState",
    "DeliveryStatus",
    "Transition",
    "backoff_s",
    "classify",
    "deadline",
    "due_mark",
    "epoch_us",
    "expire",
    "forgettable",
    "is_due",
    "jitter_fraction",
    "new_state",
    "next_tick_at",
    "parse_mark",
    "record_attempt",
    "replay_job",
    "restarts",
    "sign",
    "signature_header",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Hub-Delivery-Attempt"

DeliveryStatus = Literal["pending", "retrying", "delivered", "exhausted"]
TERMINAL: frozenset[str] = frozenset({"delivered", "exhausted"})

OutcomeKind = Literal["http", "connect_error", "timeout", "dns_error", "missing_secret",
                      "refused"]
Verdict = Literal["delivered", "retry", "client_error", "give_up"]


# --------------------------------------------------------------------------- signing


def sign(secret: bytes, body: bytes, t: int) -> str:
    """Hex HMAC-SHA256 of ``b"<t>." + body`` under ``secret``."""
    return hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, body: bytes, t: int) -> str:
    """The ``X-Hub-Signature`` value: ``t=<t>,v1=<hex>``."""
    return f"t={t},v1={sign(secret, body, t)}"


_HEADER_PART = re.compile(r"^\s*([a-z0-9]+)=([^,\s]+)\s*$")


def verify_signature(secret: bytes | str, header: str | None, body: bytes, now: float,
                     tolerance_s: float = 300.0) -> bool:
    """True when ``header`` (an ``X-Hub-Signature`` value) signs ``body`` with ``secret``
    and its timestamp is within ``tolerance_s`` of ``now`` (unix seconds).

    For agencies (copy it) and tests. Several ``v1=`` values are accepted (any match), so
    a receiver can be handed a signature made with each of an old and a new secret while
    a secret is rotated. Constant-time comparison.
    """
    if not header:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        m = _HEADER_PART.match(part)
        if m is None:
            return False
        name, value = m.groups()
        if name == "t":
            if t is not None or not value.isdigit():
                return False
            t = int(value)
        elif name == "v1":
            macs.append(value)
    if t is None or not macs or abs(now - t) > tolerance_s:
        return False
    expected = sign(key, body, t)
    ok = False
    for mac in macs:
        ok |= hmac.compare_digest(mac.encode(), expected.encode())
    return ok


# ------------------------------------------------------------------- outcome, policy


@dataclass(frozen=True)
class AttemptOutcome:
    """What one POST came to (built by the sender; carries no body, no PHI)."""

    kind: OutcomeKind
    status: int | None = None
    """The HTTP status when ``kind == "http"``."""
    code: str | None = None
    """A short reason code for logs and dead letters (``connect_refused``, ``not_https``...)."""

    @property
    def reason(self) -> str:
        if self.kind == "http":
            return f"http_{self.status}"
        return self.code or self.kind


class DeliveryPolicy(BaseModel):
    """Retry policy (from the hub's settings: ``HUB_WEBHOOK_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    backoff_base_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=3600.0, gt=0)
    max_age_s: float = Field(default=86400.0, gt=0)
    client_error_attempts: int = Field(default=5, ge=1)
    """Consecutive 3xx/4xx answers (other than 408/429/410) before giving up."""
    retain_s: float = Field(default=8 * 86400.0, gt=0)
    """How long a finished delivery's state is kept, so a redelivered job (the topic keeps
    7 days) is recognised and not sent again."""


def classify(outcome: AttemptOutcome) -> Verdict:
    """The verdict for one attempt (see the module docstring's table)."""
    if outcome.kind == "refused":
        return "give_up"
    if outcome.kind != "http" or outcome.status is None:
        return "retry"
    status = outcome.status
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    if status == 410:
        return "give_up"
    return "client_error"  # 1xx (never final), 3xx (redirect not followed), other 4xx


def jitter_fraction(job_id: str, attempt: int) -> float:
    """A number in [0, 1) derived from the job id and attempt (pure, reproducible)."""
    digest = hashlib.sha256(f"{job_id}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff_s(policy: DeliveryPolicy, job_id: str, failures: int) -> float:
    """Delay after the ``failures``-th failed attempt: exponential, capped, jittered into
    [cap/2, cap) so it is always > 0."""
    exp = min(failures - 1, 62)
    cap = min(policy.backoff_max_s, policy.backoff_base_s * (2.0 ** exp))
    return cap * (0.5 + 0.5 * jitter_fraction(job_id, failures))


# ------------------------------------------------------------------------ the machine


class DeliveryState(BaseModel):
    """One delivery's state (the ``deliveries`` table, keyed by job id).

    Holds the job itself (the body to resend: PHI, like every table of the hub) and the
    coordinates of the record it came from, for the dead letter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    job: DeliveryJob
    status: DeliveryStatus = "pending"
    attempts: int = 0
    client_errors: int = 0
    """Consecutive 3xx/4xx answers (reset by any other failure)."""
    next_attempt_at: AwareDatetime | None = None
    last_attempt_at: AwareDatetime | None = None
    last_reason: str | None = None
    finished_at: AwareDatetime | None = None
    partition: int | None = None
    source_topic: str | None = None
    source_offset: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def deadline(state: DeliveryState, policy: DeliveryPolicy) -> datetime:
    """No attempt is made after this: the job's creation plus ``max_age_s``."""
    return state.job.created_at + timedelta(seconds=policy.max_age_s)


TransitionKind = Literal["delivered", "retrying", "exhausted", "ignored"]


@dataclass(frozen=True)
class Transition:
    """What an attempt or expiry did (drives figures, logs and the dead letter)."""

    kind: TransitionKind
    reason: str | None = None


def new_state(job: DeliveryJob, now: datetime, *, partition: int | None = None,
              source_topic: str | None = None, source_offset: int | None = None
              ) -> DeliveryState:
    """A job just read: due at once."""
    return DeliveryState(job=job, next_attempt_at=now, partition=partition,
                         source_topic=source_topic, source_offset=source_offset)


def is_due(state: DeliveryState, now: datetime) -> bool:
    """An attempt may be made now (never for a finished delivery)."""
    return (not state.terminal and state.next_attempt_at is not None
            and state.next_attempt_at <= now)


def expire(state: DeliveryState, now: datetime, policy: DeliveryPolicy
           ) -> tuple[DeliveryState, Transition]:
    """Give up on a delivery that reached its deadline without a new attempt (the hub was
    down past it); anything else is unchanged (``ignored``)."""
    if state.terminal or now < deadline(state, policy):
        return state, Transition("ignored")
    reason = "max_age_exceeded"
    return state.model_copy(update={"status": "exhausted", "next_attempt_at": None,
                                    "finished_at": now, "last_reason": state.last_reason
                                    or reason}), Transition("exhausted", reason)


def record_attempt(state: DeliveryState, outcome: AttemptOutcome, now: datetime,
                   policy: DeliveryPolicy) -> tuple[DeliveryState, Transition]:
    """Apply one attempt's outcome made at ``now``.

    A finished delivery is never changed (``ignored``): whatever a late or duplicate
    attempt answered, it was delivered or given up already.
    """
    if state.terminal:
        return state, Transition("ignored")
    attempts = state.attempts + 1
    verdict = classify(outcome)
    reason = outcome.reason
    base = {"attempts": attempts, "last_attempt_at": now, "last_reason": reason}
    if verdict == "delivered":
        return state.model_copy(update={**base, "status": "delivered", "client_errors": 0,
                                        "next_attempt_at": None, "finished_at": now}
                                ), Transition("delivered", reason)
    client_errors = state.client_errors + 1 if verdict == "client_error" else 0
    end = deadline(state, policy)
    give_up = (verdict == "give_up" or client_errors >= policy.client_error_attempts
               or now >= end)
    if give_up:
        return state.model_copy(update={**base, "status": "exhausted",
                                        "client_errors": client_errors,
                                        "next_attempt_at": None, "finished_at": now}
                                ), Transition("exhausted", reason)
    failures = attempts
    nxt = min(now + timedelta(seconds=backoff_s(policy, state.job.id, failures)), end)
    return state.model_copy(update={**base, "status": "retrying",
                                    "client_errors": client_errors,
                                    "next_attempt_at": nxt}), Transition("retrying", reason)


def forgettable(state: DeliveryState, now: datetime, policy: DeliveryPolicy) -> bool:
    """A finished delivery old enough to drop from the table."""
    return (state.terminal and state.finished_at is not None
            and now - state.finished_at >= timedelta(seconds=policy.retain_s))


# ------------------------------------------------------------------ the timer's marks
#
# The timer's pass (streams.delivery_agents) acts on a stored delivery only when it is
# due (``is_due``), past its deadline (``expire``) or finished long enough ago
# (``forgettable``): all three at times known when the state is written. The worker keeps
# the earliest of them beside each delivery (table ``deliveries-due``) and reads only the
# states whose time has come, instead of parsing every stored state on every tick.
# Early is harmless (one wasted read); late would delay an attempt, so each time is the
# first instant at which those functions' own comparisons (all ``now >= ...``) pass.

def next_tick_at(state: DeliveryState, policy: DeliveryPolicy) -> datetime | None:
    """The first time at which the timer's pass would act on ``state``: the next attempt
    (``next_attempt_at``) or the deadline (``job.created_at`` + ``max_age_s``) of an
    unfinished delivery, whichever is first; ``finished_at`` + ``retain_s`` (forgotten)
    for a finished one. None: never (a finished state without ``finished_at``)."""
    if state.terminal:
        if state.finished_at is None:
            return None
        return state.finished_at + timedelta(seconds=policy.retain_s)
    end = deadline(state, policy)
    nxt = state.next_attempt_at
    return end if nxt is None or end < nxt else nxt


def due_mark(state: DeliveryState, policy: DeliveryPolicy) -> bytes:
    """The ``deliveries-due`` mark of a delivery: ``partition|next_tick_us|pending``, with
    :func:`next_tick_at` in microseconds since the epoch (empty: never) and ``1`` for a
    delivery not finished yet (the timer's pending figure, counted without the state)."""
    at = next_tick_at(state, policy)
    part = "" if state.partition is None else str(state.partition)
    when = "" if at is None else str(epoch_us(at))
    return f"{part}|{when}|{0 if state.terminal else 1}".encode()


def parse_mark(mark: bytes) -> tuple[int | None, int | None, bool]:
    """(partition, next tick in epoch microseconds, pending) of a :func:`due_mark`.
    Raises ``ValueError`` for anything else."""
    part, when, pending = mark.split(b"|")
    return (int(part) if part else None, int(when) if when else None, pending == b"1")


# ------------------------------------------------------------------------- replays


def replay_job(original: bytes, dead_letter_id: str, now: datetime) -> DeliveryJob:
    """The job a dead-lettered delivery is re-queued as (``hub dlq replay``): the same id
    (the agency's Idempotency-Key, so an agency that did get it after all dedups it) and
    body, ``created_at = now`` (a full ``max_age_s`` of retries again) and ``replay_of``
    the dead letter. Raises ``ValueError`` (pydantic's ValidationError is one) when
    ``original`` is not a DeliveryJob."""
    job = DeliveryJob.model_validate_json(original)
    return job.model_copy(update={"created_at": now, "replay_of": dead_letter_id})


def restarts(previous: DeliveryState, job: DeliveryJob) -> bool:
    """Whether ``job``, whose id the table already holds as ``previous``, starts the
    delivery again: only a replay of a delivery given up, once per dead letter. A plain
    redelivery of the topic, a replay of one delivered or still retrying, or the same
    replay twice are duplicates."""
    return (job.replay_of is not None and previous.status == "exhausted"
            and previous.job.replay_of != job.replay_of)
