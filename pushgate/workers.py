"""``pushgate serve --workers N``: N worker processes sharing one port, and their supervisor.

One pushgate process is one event loop on one core; more cores mean more processes.
Each worker is a complete node (its own hub, its own node id and name, the redis engine
joining it to the others) that binds its *own* listening socket to the same host:port
with ``SO_REUSEPORT``; the kernel spreads incoming connections over the workers' sockets
by a hash of the connection's addresses. Nothing is handed from process to process and
no worker accepts on another's behalf.

Workers are subprocesses running ``python -m pushgate serve`` again, with the same
configuration arguments plus two hidden flags (``--worker-index``, ``--worker-of``) that
mark them as workers. Not ``multiprocessing``: a fresh interpreter per worker is exactly
what ``spawn`` would give, but with plain ``Popen`` a worker is an ordinary ``pushgate
serve`` (same config loading, same logging, same signal handling), its exit status and
signal are plain to read, and there are no pickled objects or queues to keep in step.

The parent (the supervisor) serves nothing. It

- reserves the port first: it binds (without listening) a ``SO_REUSEPORT`` socket to
  host:port, so "address in use" is reported once, before any worker starts, and
  ``port = 0`` becomes one concrete port that every worker then binds. A bound socket
  that does not listen is never given connections. The internal listener
  (``server.internal_port``, when set) is reserved the same way, and every worker binds
  its own ``SO_REUSEPORT`` socket on it too;
- starts each worker in a process group of its own, so a terminal's Ctrl-C reaches
  only the parent, and a worker asks the kernel for SIGTERM should the parent die
  (``PR_SET_PDEATHSIG``), so no worker outlives a killed supervisor;
- forwards SIGTERM and SIGINT to the workers as SIGTERM (each then shuts down
  gracefully: its clients are disconnected with a reconnect advice and its node leaves
  the registry), waits for them, and SIGKILLs those still running
  ``server.shutdown_timeout`` + 10 s later; a second signal SIGKILLs at once;
- restarts a worker that exits on its own, after a backoff that doubles from 0.5 s up
  to 30 s. A worker that dies within ``STARTUP_GRACE`` seconds of being started counts
  as a failed start; after ``MAX_START_FAILURES`` failed starts in a row of one worker
  the supervisor stops the others and exits with status 1 (a bad Redis URL, a port
  another user holds: retrying forever would only hide it). A worker that had run
  longer starts its count again.

Exit status: 0 when stopped by a signal and every worker exited cleanly, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pushgate.config import Config
from pushgate.listening import cannot_listen
from pushgate.worker_metrics import WorkerMetrics, make_socket_dir, remove_socket_dir

log = logging.getLogger("pushgate.workers")

#: a worker that dies sooner than this after its start did not manage to start
STARTUP_GRACE = 10.0
#: failed starts in a row of one worker before the supervisor gives up
MAX_START_FAILURES = 5
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: how often the supervisor looks at its workers
TICK = 0.1
#: beyond server.shutdown_timeout: how long workers get to exit before SIGKILL
KILL_AFTER = 10.0

PR_SET_PDEATHSIG = 1


def cpu_count() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_workers(value: str) -> int:
    """``--workers``: a count; ``0`` or ``auto`` = one per CPU."""
    if value.strip().lower() == "auto":
        return cpu_count()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"expected a number of workers or 'auto', got {value!r}") from None
    if count < 0:
        raise ValueError(f"expected a number of workers >= 0 or 'auto', got {value!r}")
    return count or cpu_count()


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket: holds host:port for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def die_with_parent(parent_pid: int) -> None:
    """In a worker: get SIGTERM when the supervisor dies; exit if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        log.error("supervisor %d is gone before this worker started", parent_pid)
        raise SystemExit(1)


def run_worker(config: Config, index: int, parent_pid: int) -> None:
    """Serve as worker ``index`` of the supervisor ``parent_pid``, on a shared port."""
    from pushgate.server import bind_socket, serve

    die_with_parent(parent_pid)
    if config.server.name:
        # the node registry and logs must tell the workers apart
        config.server.name = f"{config.server.name}-{index}"
    sock = bind_socket(config.server.host, config.server.port, reuse_port=True)
    internal = None
    if config.server.internal_port:
        server = config.server
        internal = bind_socket(server.internal_host, server.internal_port, reuse_port=True)
    serve(config, sock, internal, WorkerMetrics(index, parent_pid))


@dataclass
class Worker:
    index: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0  # failed starts in a row
    restart_at: float | None = None


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts ``count`` workers, restarts the ones that die, stops them all on a signal.

    ``command(index, parent_pid)`` is the worker's argv.
    """

    def __init__(
        self,
        command: Callable[[int, int], list[str]],
        count: int,
        *,
        shutdown_timeout: float,
    ) -> None:
        self.command = command
        self.workers = [Worker(i) for i in range(count)]
        self.shutdown_timeout = shutdown_timeout
        self.stopping = False
        self.signals = 0
        self.failed = False

    # --- signals ------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
            self.stopping = True
            self._send(signal.SIGTERM)
        else:
            log.warning("second %s: killing the workers", signal.Signals(signum).name)
            self._send(signal.SIGKILL)

    def _send(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    # --- workers ------------------------------------------------------------------
    def _start(self, worker: Worker) -> None:
        worker.restart_at = None
        worker.started = time.monotonic()
        worker.process = subprocess.Popen(
            self.command(worker.index, os.getpid()),
            process_group=0,  # Ctrl-C reaches the parent only; it forwards SIGTERM
        )
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _check(self, worker: Worker, now: float) -> None:
        process = worker.process
        if process is None:
            if worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)
            return
        code = process.poll()
        if code is None:
            return
        worker.process = None
        uptime = now - worker.started
        if uptime < STARTUP_GRACE:
            worker.failures += 1
        else:
            worker.failures = 1
        if worker.failures >= MAX_START_FAILURES:
            log.error(
                "worker %d %s %d times in a row within %.0fs of starting; giving up",
                worker.index,
                describe_exit(code),
                worker.failures,
                STARTUP_GRACE,
            )
            self.failed = True
            return
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (worker.failures - 1))
        log.warning(
            "worker %d (pid %d) %s after %.1fs; restarting it in %.1fs",
            worker.index,
            process.pid,
            describe_exit(code),
            uptime,
            delay,
        )
        worker.restart_at = now + delay

    def _wait_all(self) -> bool:
        """Wait for every worker to exit (SIGKILL after the deadline); True if all clean."""
        deadline = time.monotonic() + self.shutdown_timeout + KILL_AFTER
        clean = True
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop: killing it", worker.index, process.pid)
                process.kill()
                code = process.wait()
            if code not in (0, -signal.SIGTERM):
                log.warning("worker %d (pid %d) %s", worker.index, process.pid, describe_exit(code))
                clean = False
        return clean

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker)
            while not self.stopping and not self.failed:
                now = time.monotonic()
                for worker in self.workers:
                    self._check(worker, now)
                    if self.failed:
                        break
                time.sleep(TICK)
            if self.failed:
                self.stopping = True
                self._send(signal.SIGTERM)
            clean = self._wait_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.failed:
            return 1
        log.info("all workers stopped")
        return 0 if clean else 1


def supervise(config: Config, count: int, worker_args: list[str]) -> int:
    """Run ``count`` workers of ``pushgate serve <worker_args>`` on the configured port."""
    host, port = config.server.host, config.server.port
    listeners = [(host, port)]
    if config.server.internal_port:
        listeners.append((config.server.internal_host, config.server.internal_port))
    held: list[socket.socket] = []
    for where, at in listeners:
        try:
            held.append(reserve_port(where, at))
        except OSError as exc:
            print(f"pushgate: {cannot_listen(where, at, exc)}", file=sys.stderr)
            for sock in held:
                sock.close()
            return 2
    port = held[0].getsockname()[1]

    def command(index: int, parent_pid: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pushgate",
            "serve",
            *worker_args,
            "--port",
            str(port),
            "--workers",
            "1",
            "--worker-index",
            str(index),
            "--worker-of",
            str(parent_pid),
        ]

    log.info("pushgate supervisor: %d workers on http://%s:%d (SO_REUSEPORT)", count, host, port)
    metrics_dir = make_socket_dir(os.getpid())  # where workers find each other's /metrics
    try:
        return Supervisor(command, count, shutdown_timeout=config.server.shutdown_timeout).run()
    finally:
        for sock in held:
            sock.close()
        remove_socket_dir(metrics_dir)
