"""Start ``hub run`` / ``hub ingest`` / ``hub worker`` as a subprocess on the test broker.

The way users run it: real sockets, real topics, the real rendered log output (JSON on
stderr, kept in a file the test can read). Isolated by a topic prefix and app id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from hub.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HubProcess:
    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    @property
    def worker_web(self) -> str:
        return f"http://127.0.0.1:{self.settings.worker_web_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def hub_process(bootstrap: str, *, idempotent: bool, role: str = "run",
                env: dict[str, str] | None = None, tmp: Path | None = None
                ) -> Iterator[HubProcess]:
    prefix = f"p{uuid.uuid4().hex[:8]}."
    tmp = tmp or Path("/tmp")
    full_env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": bootstrap,
        "HUB_KAFKA_IDEMPOTENCE": "true" if idempotent else "false",
        "HUB_TOPIC_PREFIX": prefix,
        "HUB_APP_ID": f"hub-{prefix}",
        "HUB_PARTITIONS": "3",
        "HUB_MLLP_PORT": str(free_port()),
        "HUB_HTTP_PORT": str(free_port()),
        "HUB_WORKER_WEB_PORT": str(free_port()),
        "HUB_ACK_TIMEOUT_S": "15",
        "HUB_STATE_DIR": str(tmp / f"hub-state-{prefix}"),
        "HUB_LOG_LEVEL": "INFO",
        "HUB_LOG_FORMAT": "json",
    }
    if not idempotent:  # the embedded broker: see hub.runner.broker
        full_env.update(HUB_GROUP_SESSION_TIMEOUT_S="6", HUB_GROUP_REBALANCE_TIMEOUT_S="3")
    full_env.update(env or {})
    settings = Settings(
        kafka_bootstrap=bootstrap, kafka_idempotence=idempotent,
        topic_prefix=full_env["HUB_TOPIC_PREFIX"],
        app_id=full_env["HUB_APP_ID"], partitions=3,
        mllp_port=int(full_env["HUB_MLLP_PORT"]), http_port=int(full_env["HUB_HTTP_PORT"]),
        worker_web_port=int(full_env["HUB_WORKER_WEB_PORT"]),
    )
    log_path = tmp / f"hub-{prefix}log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", role], cwd=REPO,
                                env=full_env, stdout=log, stderr=subprocess.STDOUT)
        hub = HubProcess(settings, log_path, proc, full_env)
        try:
            yield hub
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_ready(hub: HubProcess, base: str, timeout: float = 90.0) -> None:
    """Poll ``base``/health/ready until 200 (the process may still be starting)."""
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if hub.proc.poll() is not None:
                raise AssertionError(f"hub exited early:\n{hub.log_text()[-3000:]}")
            try:
                async with http.get(f"{base}/health/ready") as resp:
                    last = await resp.text()
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            time.sleep(0.3)
    raise AssertionError(f"never ready: {last}\n{hub.log_text()[-3000:]}")
