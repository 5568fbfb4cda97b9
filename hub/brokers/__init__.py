"""Broker management shared by the embedded (Tansu) and Apache Kafka launchers.

Child broker processes must never outlive the hub or the test run that started them:

* each child runs in its own process group (Ctrl-C in a terminal reaches only us, and
  we stop the child in order), and asks the kernel for ``PR_SET_PDEATHSIG`` (its stop
  signal: SIGTERM, SIGINT for Tansu) so a SIGKILLed or crashed parent still takes it
  down;
* PDEATHSIG fires when the *thread* that forked the child exits, not the process, so
  every child is forked from one daemon "spawner" thread that lives as long as the
  process (a ``to_thread`` worker or a pytest-asyncio loop thread could exit early);
* an ``atexit`` hook and a SIGTERM handler (installed only where nobody else has one)
  terminate the process groups of live children on a normal or signalled exit.

Readiness probes speak the Kafka wire protocol directly (a Metadata v4 request over a
socket) so they work from sync code, inside or outside an event loop, without aiokafka
(which only ``hub.kafka`` imports).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BrokerNode",
    "BrokerStartError",
    "free_port",
    "install_exit_hooks",
    "kill_process",
    "metadata_brokers",
    "register_child",
    "spawn",
    "spawn_kwargs",
    "tail",
    "terminate_process",
    "unregister_child",
    "wait_for_brokers",
]


class BrokerStartError(RuntimeError):
    """A broker could not be fetched, started or reached in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just said was free (there is a small race; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(text: str | bytes, lines: int = 30) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- spawning

_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(parent_pid: int, sig: int = signal.SIGTERM) -> Callable[[], None]:
    libc: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody would ever
        # send the death signal, so give up now rather than run orphaned.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def spawn_kwargs(stop_signal: int = signal.SIGTERM) -> dict[str, Any]:
    """Popen keyword arguments: own process group + parent-death signal (Linux)."""
    return {"process_group": 0, "preexec_fn": _pdeathsig_preexec(os.getpid(), stop_signal)}


_spawn_queue: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]]] = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawner_loop() -> None:
    while True:
        fn, reply = _spawn_queue.get()
        try:
            reply.put((True, fn()))
        except BaseException as exc:  # handed back to the caller's thread
            reply.put((False, exc))


def spawn(
    cmd: Sequence[str],
    *,
    detached: bool = False,
    stop_signal: int = signal.SIGTERM,
    **popen_kwargs: Any,
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` from the long-lived spawner thread (see module docstring).

    ``detached=True`` (the ``start`` CLI, whose JVMs must outlive it) gives the child
    its own session and no parent-death signal, and does not register it for exit.
    ``stop_signal`` is what asks this program to shut down (also its death signal):
    Tansu lingers ~5 s on SIGTERM while clients are connected but exits on SIGINT.
    """
    if detached:
        return subprocess.Popen(list(cmd), start_new_session=True, **popen_kwargs)
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawner_loop, name="broker-spawner", daemon=True)
            _spawner.start()
    kwargs = {**spawn_kwargs(stop_signal), **popen_kwargs}
    reply: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    _spawn_queue.put((lambda: subprocess.Popen(list(cmd), **kwargs), reply))
    ok, result = reply.get()
    if not ok:
        raise result
    proc: subprocess.Popen[bytes] = result
    register_child(proc, stop_signal)
    return proc


# ------------------------------------------------------------------- exit protection

_children: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
_children_lock = threading.Lock()
_exit_hooks_installed = False
_sigterm_installed = False


def _stop_signal(proc: subprocess.Popen[bytes]) -> int:
    with _children_lock:
        entry = _children.get(proc.pid)
    return entry[1] if entry else signal.SIGTERM


def terminate_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """Signal the child's process group to stop, wait, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, _stop_signal(proc))
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    unregister_child(proc)
    return proc.returncode


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (fault injection) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    unregister_child(proc)


def _terminate_all(timeout: float = 5.0) -> None:
    with _children_lock:
        entries = list(_children.values())
    for p, sig in entries:  # signal everyone first, so shutdowns overlap
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
    for p, _ in entries:
        terminate_process(p, timeout)


def _on_sigterm(signum: int, frame: object) -> None:
    _terminate_all()
    # Leave through SystemExit so finally blocks and atexit hooks still run.
    raise SystemExit(128 + signum)


def install_exit_hooks() -> None:
    """atexit + SIGTERM handler (main thread only) that stop every live child."""
    global _exit_hooks_installed, _sigterm_installed
    if not _exit_hooks_installed:
        _exit_hooks_installed = True
        atexit.register(_terminate_all)
    # Signal handlers can only be set from the main thread (a later call from there
    # still installs it), and we never replace one somebody else installed (faust,
    # aiohttp): PDEATHSIG still covers those cases.
    if not _sigterm_installed and threading.current_thread() is threading.main_thread():
        _sigterm_installed = True
        with contextlib.suppress(ValueError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)


def register_child(proc: subprocess.Popen[bytes], stop_signal: int = signal.SIGTERM) -> None:
    install_exit_hooks()
    with _children_lock:
        _children[proc.pid] = (proc, stop_signal)


def unregister_child(proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        _children.pop(proc.pid, None)


# ------------------------------------------------------------------ readiness probes


@dataclass(frozen=True)
class BrokerNode:
    node_id: int
    host: str
    port: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[BrokerNode]:
    """Send one Kafka Metadata v4 request; return the brokers the cluster advertises.

    v4 is understood by Kafka 1.0 through 4.x and by Tansu; raises OSError/ValueError
    when the broker does not answer properly.
    """
    client_id = b"care-hub-probe"
    body = struct.pack(">i", -1) + b"\x00"  # topics=null (none listed), no auto-create
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if size <= 0 or size > 64 * 1024 * 1024:
            raise ValueError(f"implausible response size {size}")
        data = _recv_exact(sock, size)
    correlation_id, _throttle, count = struct.unpack_from(">iii", data, 0)
    if correlation_id != 1:
        raise ValueError("correlation id mismatch")
    pos = 12
    nodes = []
    for _ in range(count):
        (node_id, hlen) = struct.unpack_from(">ih", data, pos)
        pos += 6
        h = data[pos : pos + hlen].decode()
        pos += hlen
        (p, rlen) = struct.unpack_from(">ih", data, pos)
        pos += 6 + max(rlen, 0)
        nodes.append(BrokerNode(node_id, h, p))
    return nodes


def wait_for_brokers(
    addresses: Sequence[tuple[str, int]],
    *,
    expected: int,
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Block until every address answers Metadata listing ``expected`` brokers.

    ``alive`` returns an error text when a child died meanwhile (no point waiting).
    Raises :class:`BrokerStartError` on timeout with the last probe error.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    pending = list(addresses)
    while True:
        dead = alive()
        if dead:
            raise BrokerStartError(dead)
        still = []
        for host, port in pending:
            try:
                nodes = metadata_brokers(host, port, timeout=2.0)
            except (OSError, ValueError, struct.error) as exc:
                last_error = f"{host}:{port}: {exc!r}"
                still.append((host, port))
                continue
            if len(nodes) < expected:
                last_error = f"{host}:{port}: {len(nodes)}/{expected} brokers registered"
                still.append((host, port))
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise BrokerStartError(f"broker not ready after {timeout:.0f}s ({last_error})")
        time.sleep(0.1)
