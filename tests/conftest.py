"""Session fixtures: the test broker, per-test isolated settings, the shared corpus.

Which broker backs ``kafka_bootstrap``:

* ``HUB_TEST_KAFKA=apache`` (or ``CI=true`` with ``HUB_TEST_KAFKA`` unset, or
  ``HUB_REQUIRE_APACHE_KAFKA=1``): a single Apache Kafka KRaft broker started from the
  Maven cache (jars fetched on first use);
* otherwise (a quick local run): the embedded Tansu broker.

``HUB_REQUIRE_APACHE_KAFKA=1`` turns "Apache Kafka cannot be started" from a skip into
a failure, so CI can never go green by silently skipping the tests of record.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from hub.brokers import BrokerStartError
from hub.brokers.apache import ApacheKafkaCluster
from hub.brokers.embedded import EmbeddedBroker
from hub.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def apache_required() -> bool:
    return _truthy("HUB_REQUIRE_APACHE_KAFKA")


def kafka_kind_from_env() -> str:
    """``"apache"`` or ``"embedded"``: what ``kafka_bootstrap`` runs on."""
    explicit = os.environ.get("HUB_TEST_KAFKA", "").strip().lower()
    if apache_required() or explicit == "apache":
        return "apache"
    if explicit == "embedded":
        return "embedded"
    return "apache" if _truthy("CI") else "embedded"


def apache_unavailable(reason: str) -> NoReturn:
    """Skip locally; fail when Apache Kafka is mandatory (CI)."""
    if apache_required():
        pytest.fail(f"Apache Kafka is required (HUB_REQUIRE_APACHE_KAFKA=1): {reason}")
    pytest.skip(f"Apache Kafka unavailable: {reason}")


def _start_apache(brokers: int) -> ApacheKafkaCluster:
    cluster = ApacheKafkaCluster(brokers=brokers)
    try:
        cluster.start()
    except (BrokerStartError, OSError) as exc:
        apache_unavailable(f"could not start {brokers} broker(s): {exc}")
    return cluster


class _LazyApache:
    """One single-broker Apache Kafka per session, started on first use."""

    def __init__(self) -> None:
        self.cluster: ApacheKafkaCluster | None = None
        self.error: str | None = None

    def get(self) -> ApacheKafkaCluster:
        if self.cluster is None:
            if self.error is not None:  # don't retry a 2-minute failure for every test
                apache_unavailable(self.error)
            try:
                self.cluster = _start_apache(1)
            except (pytest.skip.Exception, pytest.fail.Exception) as exc:
                self.error = str(exc)
                raise
        return self.cluster

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


@pytest.fixture(name="apache_unavailable", scope="session")
def _apache_unavailable_fixture() -> Callable[[str], NoReturn]:
    """``apache_unavailable(reason)``: skip locally, fail when Apache Kafka is required."""
    return apache_unavailable


@pytest.fixture(scope="session")
def kafka_kind() -> str:
    return kafka_kind_from_env()


@pytest.fixture(scope="session")
def _apache_single() -> Iterator[_LazyApache]:
    lazy = _LazyApache()
    yield lazy
    lazy.stop()


@pytest.fixture(scope="session")
def apache_cluster(_apache_single: _LazyApache) -> ApacheKafkaCluster:
    """A single Apache Kafka broker (shared by the session; skip/fail if unavailable)."""
    return _apache_single.get()


@pytest.fixture(scope="session")
def apache_bootstrap(apache_cluster: ApacheKafkaCluster) -> str:
    return apache_cluster.bootstrap


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def embedded_bootstrap(embedded_broker: EmbeddedBroker) -> str:
    """Always the embedded Tansu broker (for "the same flow once on Tansu")."""
    return embedded_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_kind: str, request: pytest.FixtureRequest) -> str:
    """The broker Kafka-behaviour tests run on: Apache Kafka in CI, Tansu locally."""
    if kafka_kind == "apache":
        return str(request.getfixturevalue("apache_bootstrap"))
    return str(request.getfixturevalue("embedded_bootstrap"))


@pytest.fixture(scope="session")
def kafka_idempotent(kafka_kind: str) -> bool:
    """Whether ``kafka_bootstrap`` supports idempotent producers (Tansu does not)."""
    return kafka_kind == "apache"


@pytest.fixture(scope="session")
def apache_cluster3() -> Iterator[ApacheKafkaCluster]:
    """A 3-broker Apache Kafka cluster for fault tests (started lazily, ~11 s).

    Tests using it should be marked ``slow`` and ``apache``; they may ``kill`` and
    ``restart`` nodes but must leave all three running when they finish.
    """
    cluster = _start_apache(3)
    yield cluster
    cluster.stop()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, kafka_idempotent: bool) -> Callable[..., Settings]:
    """Factory: ``kafka_settings(**overrides)`` -> Settings isolated by a topic prefix.

    Each call gets a fresh ``t<hex>.`` prefix and app id, so tests sharing one broker
    never see each other's topics or consumer groups.
    """

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "kafka_bootstrap": kafka_bootstrap,
            "kafka_idempotence": kafka_idempotent,
            "topic_prefix": f"t{tag}.",
            "app_id": f"test-{tag}",
            "partitions": 3,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared HL7 v2 / FHIR corpus (``$HUB_CORPUS_DIR`` or ``../shared/corpus``)."""
    env = os.environ.get("HUB_CORPUS_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "corpus"
    if not path.is_dir():
        pytest.fail(f"corpus directory not found: {path} (set HUB_CORPUS_DIR)")
    return path
