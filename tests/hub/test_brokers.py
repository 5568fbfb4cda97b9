"""Broker launchers: the embedded Tansu broker and Apache Kafka from the Maven cache."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from hub.brokers import BrokerStartError, metadata_brokers
from hub.brokers.apache import ApacheKafkaCluster
from hub.brokers.embedded import EmbeddedBroker
from hub.kafka import DurableProducer, ensure_topics, read_topic
from hub.settings import Settings
from schemas.topics import EHR_HL7V2

REPO = Path(__file__).resolve().parents[2]


def _pid_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (killed, not yet reaped by init) counts as gone.
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


def _port_of(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    return host, int(port)


# ------------------------------------------------------------------- embedded


def test_embedded_starts_answers_and_stops() -> None:
    with EmbeddedBroker() as broker:
        host, port = _port_of(broker.bootstrap)
        assert host == "127.0.0.1"
        nodes = metadata_brokers(host, port)
        assert [(n.host, n.port) for n in nodes] == [(host, port)]
        pid = broker.pid
        assert pid is not None
        assert broker.started_in_s is not None and broker.started_in_s < 10
    assert _pid_gone(pid, 5)
    with pytest.raises(OSError):
        metadata_brokers(host, port, timeout=1)


def test_embedded_start_failure_is_clear(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerStartError, match="boom: cannot bind"):
        EmbeddedBroker(binary=str(fake), start_timeout=5).start()


async def test_embedded_async_context_manager() -> None:
    async with EmbeddedBroker() as broker:
        assert metadata_brokers(*_port_of(broker.bootstrap))


_CHILD = textwrap.dedent(
    """
    import sys, time
    from hub.brokers.embedded import EmbeddedBroker
    b = EmbeddedBroker()
    b.start()
    print(b.pid, flush=True)
    time.sleep(120)
    """
)


def _start_parent() -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stderr is not None
    line = parent.stdout.readline()
    if not line.strip():
        parent.kill()
        raise AssertionError(f"parent did not start the broker: {parent.stderr.read()}")
    return parent, int(line)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_orphan_when_parent_dies(sig: signal.Signals) -> None:
    parent, tansu_pid = _start_parent()
    try:
        os.kill(tansu_pid, 0)  # alive while the parent is
        parent.send_signal(sig)
        parent.wait(10)
        assert _pid_gone(tansu_pid, 5), f"tansu {tansu_pid} outlived its parent ({sig.name})"
    finally:
        if parent.poll() is None:
            parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(tansu_pid, signal.SIGKILL)


# ---------------------------------------------------------------------- apache


@pytest.mark.apache
@pytest.mark.slow
async def test_apache_single_broker_start_produce_consume_stop(
    apache_unavailable: Callable[[str], NoReturn],
) -> None:
    cluster = ApacheKafkaCluster(brokers=1)
    try:
        await cluster.astart()
    except BrokerStartError as exc:
        apache_unavailable(str(exc))
    try:
        assert cluster.started_in_s is not None
        nodes = metadata_brokers(*_port_of(cluster.bootstrap))
        assert [n.node_id for n in nodes] == [1]
        settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix="t.", partitions=2)
        await ensure_topics(settings, [EHR_HL7V2])
        producer = DurableProducer(settings, idempotent=True)
        await producer.start()
        try:
            sent = [
                await producer.send("ehr.hl7v2", b"v%d" % i, key=b"k%d" % i, timeout=30)
                for i in range(10)
            ]
        finally:
            await producer.stop()
        records = await read_topic(settings, "ehr.hl7v2", timeout=30, min_records=10)
        assert sorted((r.partition, r.offset) for r in records) == sorted(sent)
        assert {r.value for r in records} == {b"v%d" % i for i in range(10)}
        pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
    finally:
        await cluster.astop()
    assert all(_pid_gone(pid, 10) for pid in pids)
    assert cluster.workdir is not None and not cluster.workdir.exists()


@pytest.mark.apache
@pytest.mark.slow
def test_apache_cli_start_status_stop(
    tmp_path: Path, apache_unavailable: Callable[[str], NoReturn]
) -> None:
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub.brokers.apache", *args, "--dir", str(run_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )

    started = cli("start")
    if started.returncode != 0:
        apache_unavailable(started.stderr[-2000:])
    try:
        bootstrap = started.stdout.strip().splitlines()[-1]
        assert metadata_brokers(*_port_of(bootstrap))
        status = cli("status")
        assert status.returncode == 0, status.stdout
        assert "up" in status.stdout
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert cli("status").returncode == 1


_APACHE_CHILD = textwrap.dedent(
    """
    import time
    from hub.brokers.apache import ApacheKafkaCluster
    c = ApacheKafkaCluster(brokers=1)
    c.start()
    print(c.nodes[0].proc.pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.apache
@pytest.mark.slow
def test_apache_jvm_dies_with_its_parent(apache_unavailable: Callable[[str], NoReturn]) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _APACHE_CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stderr is not None
    line = parent.stdout.readline()
    if not line.strip():
        parent.kill()
        apache_unavailable(parent.stderr.read()[-2000:])
    jvm = int(line)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _pid_gone(jvm, 30), f"Kafka JVM {jvm} outlived its SIGKILLed parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(jvm, signal.SIGKILL)


@pytest.mark.apache
@pytest.mark.slow
async def test_three_brokers_keep_acking_through_a_crash(
    apache_cluster3: ApacheKafkaCluster,
) -> None:
    cluster = apache_cluster3
    settings = Settings(
        kafka_bootstrap=cluster.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=3,
        replication_factor=3,
        min_insync_replicas=2,
    )
    await ensure_topics(settings, [EHR_HL7V2])
    sent: list[tuple[int, int]] = []
    async with DurableProducer(settings, idempotent=True) as producer:
        for i in range(5):
            sent.append(await producer.send("ehr.hl7v2", b"%d" % i, key=b"k%d" % i, timeout=30))
        cluster.kill(2)
        try:
            # acks=all with min.insync.replicas=2 still succeeds with 2 of 3 alive, once
            # the controller has moved leadership off the dead node.
            for i in range(5, 15):
                sent.append(await producer.send("ehr.hl7v2", b"%d" % i, key=b"k%d" % i, timeout=60))
        finally:
            await asyncio.to_thread(cluster.restart, 2)
    assert len(metadata_brokers(*_port_of(cluster.bootstrap))) == 3
    records = await read_topic(settings, "ehr.hl7v2", timeout=60, min_records=15)
    # Idempotent producer: retries across the leader change wrote no duplicates.
    assert sorted(int(r.value or b"-1") for r in records) == list(range(15))
    assert sorted((r.partition, r.offset) for r in records) == sorted(sent)
