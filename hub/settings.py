"""One frozen settings object, read from the environment (prefix ``HUB_``).

Secrets are ``SecretStr`` so they never print. The production profile refuses values
that are fine on a laptop and dangerous with patients' data behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.heap import DEFAULT_GEN0_THRESHOLD


class FeedSilenceRule(BaseModel):
    """How long a feed (sending facility) may be quiet before ops are told.

    ``night_hours`` = ``[start, end)`` in the feed's local hours (its zone from
    ``feed_timezones``, else ``default_timezone``); it may wrap midnight (``[22, 6]``).
    Inside it ``night_s`` applies (ADT traffic drops at night), elsewhere ``default_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    default_s: float = Field(gt=0)
    night_s: float | None = Field(default=None, gt=0)
    night_hours: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _hours_valid(self) -> FeedSilenceRule:
        if self.night_hours is not None:
            start, end = self.night_hours
            if not (0 <= start <= 23 and 0 <= end <= 24) or start == end:
                raise ValueError("night_hours must be [start, end) with 0 <= start <= 23, "
                                 "0 <= end <= 24 and start != end")
            if self.night_s is None:
                raise ValueError("night_hours needs night_s")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    profile: Literal["dev", "production"] = "dev"

    # Kafka. Empty bootstrap = start the embedded Tansu broker (demos and fast tests only).
    kafka_bootstrap: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_verify: bool = True
    kafka_idempotence: bool = True
    """Idempotent producer. The runner turns it off for the embedded broker (Tansu has
    no InitProducerId); leave it on against Apache Kafka."""
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)
    partitions: int | None = Field(default=None, ge=1)
    """Overrides the catalogue's partition counts when set (tests use small numbers)."""
    topic_prefix: str = ""
    """Prepended to every topic name (tests isolate runs on a shared broker with it)."""

    # Durable write bound for ACKs: an idempotent aiokafka producer never times out by
    # itself, so every ACK waits at most this long before answering AR/CE.
    ack_timeout_s: float = Field(default=10.0, gt=0)

    # MLLP
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    mllp_idle_timeout_s: float = Field(default=300.0, gt=0)
    mllp_tls_certfile: Path | None = None
    mllp_tls_keyfile: Path | None = None
    mllp_tls_client_cafile: Path | None = None
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""

    # HTTP ingest
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Mapping
    default_timezone: str = "UTC"
    """Zone for HL7 timestamps without an offset, unless the feed has its own below."""
    feed_timezones: dict[str, str] = Field(default_factory=dict)
    """Sending facility (MSH-4) -> IANA zone, e.g. ``{"GENHOSP": "America/New_York"}``."""
    dedup_window_s: int = Field(default=7 * 24 * 3600, ge=0)

    # Worker
    app_id: str = "care-hub"
    state_dir: Path = Path("var/state")
    store: str = "memory://"
    """``memory://`` (tests, demo) or ``rocksdb://`` (production)."""
    worker_web_port: int = 6066
    group_session_timeout_s: float = Field(default=30.0, gt=0)
    group_rebalance_timeout_s: float = Field(default=30.0, gt=0)
    consumer_instance_id: str | None = None
    """Static group membership, so a restart does not trigger a rebalance."""

    # Care decisions
    care_enabled: bool = True
    rules_file: Path | None = None
    """Rules YAML (thresholds); absent = the shipped defaults (hub/samples/rules.yaml)."""
    roster_file: Path | None = None
    """Roster YAML read at start; a roster pushed to config.roster (``hub roster push``)
    replaces it without a restart. Absent = the sample roster (demo only)."""
    care_tick_interval_s: float = Field(default=60.0, gt=0)
    agencies_file: Path | None = None
    """Agency directory YAML read at start (HUB_AGENCIES_FILE); a directory pushed to
    config.agencies (``hub agencies push``) replaces it without a restart. Absent = the
    sample directory (hub/samples/agencies.yaml, demo only)."""

    worker_web_host: str = "127.0.0.1"

    # Referral webhooks (streams/referrals/delivery.py has the policy, hub/webhooks.py the
    # sender) and the agency API (hub/agency_api.py).
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """One attempt's bound (connect + TLS + answer): the delivery agent waits this long
    at most, so a black-holed endpoint cannot stall its partition."""
    webhook_max_age_s: float = Field(default=86400.0, gt=0)
    """Retry a delivery for this long after the referral was created, then dead-letter it."""
    webhook_backoff_base_s: float = Field(default=30.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_client_error_attempts: int = Field(default=5, ge=1)
    """Consecutive 3xx/4xx answers (not 408/429/410) before a delivery is given up."""
    webhook_tick_interval_s: float = Field(default=5.0, gt=0)
    """How often each partition looks for deliveries due for a retry."""
    webhook_concurrency: int = Field(default=16, ge=1)
    """Attempts made at once by one partition's retry pass (the rest wait a tick)."""
    webhook_allow_insecure_loopback: bool = False
    """Allow plain http:// webhooks to loopback addresses (tests only; refused in
    production)."""
    staff_api_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the bearer token for the staff endpoints (``/care/referrals``,
    ``/consent``); unset = those endpoints answer 401 to everyone."""
    api_auth_failures_max: int = Field(default=10, ge=1)
    """Bad bearer tokens (agency or staff endpoints) one client address may present within
    ``api_auth_window_s``; past that it is answered 429 with Retry-After until the
    oldest failure leaves the window (``HUB_API_AUTH_FAILURES_MAX``)."""
    api_auth_window_s: float = Field(default=300.0, gt=0, le=86400)
    """The sliding window for ``api_auth_failures_max`` (``HUB_API_AUTH_WINDOW_S``)."""
    api_view_retain_days: float = Field(default=30.0, gt=0, le=3650)
    """How long the agency and staff APIs' in-memory views keep a closed referral or task
    after its last record (``HUB_API_VIEW_RETAIN_DAYS``); open ones are kept however old."""

    # Observability
    feed_silence: dict[str, FeedSilenceRule] = Field(default_factory=dict)
    """Sending facility -> silence rule, e.g. ``{"GENHOSP": {"default_s": 900, "night_s":
    3600, "night_hours": [0, 6]}}``; the key ``"*"`` applies to every other feed seen."""
    max_feed_labels: int = Field(default=200, ge=1)
    """Distinct feed label values per process (MSH-4 is sender-controlled: a bound keeps
    a misbehaving sender from exploding the metrics' cardinality)."""

    gc_gen0_threshold: int = Field(default=DEFAULT_GEN0_THRESHOLD, ge=700)
    """The garbage collector's first-generation threshold, set once start-up is done
    (hub.heap: the default is measured; 700 is CPython's own)."""

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.profile != "production":
            return self
        problems = []
        if not self.kafka_bootstrap:
            problems.append("HUB_KAFKA_BOOTSTRAP must name a real cluster (no embedded broker)")
        if self.replication_factor < 3:
            problems.append("HUB_REPLICATION_FACTOR must be >= 3")
        if self.min_insync_replicas < 2:
            problems.append("HUB_MIN_INSYNC_REPLICAS must be >= 2")
        if not self.kafka_idempotence:
            problems.append("HUB_KAFKA_IDEMPOTENCE must stay on")
        if not self.kafka_ssl_verify:
            problems.append("HUB_KAFKA_SSL_VERIFY must stay on")
        if self.webhook_allow_insecure_loopback:
            problems.append("HUB_WEBHOOK_ALLOW_INSECURE_LOOPBACK must stay off (webhooks are "
                            "HTTPS only)")
        if self.store.startswith("memory"):
            problems.append("HUB_STORE must be rocksdb:// (memory tables rebuild slowly)")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def timezone_for(self, facility: str | None) -> str:
        if facility and facility in self.feed_timezones:
            return self.feed_timezones[facility]
        return self.default_timezone
