"""Several worker processes of one server, sharing its listening sockets (``--workers N``).

Why bind once in the parent and fork (rather than SO_REUSEPORT in every worker): the port is bound
exactly once, so ``--listen 127.0.0.1:0`` still names one real port, printed once by the parent; a
port in use is reported once, before any worker starts; no other process can join the group by binding
the same port; and the sockets outlive a crashed worker (connections queued meanwhile wait in the
backlog for the replacement instead of being reset). The kernel hands each new connection to one of
the workers blocked in accept (on Linux: spread well enough across them, measured in bench/).

The parent runs no event loop and serves nothing: it binds, forks, waits until every worker is ready
(its application started, e.g. the key store opened), prints the listening line(s), then supervises:
a worker that dies is replaced (logged), SIGTERM/SIGINT is passed on to every worker, which stops
accepting, finishes its requests in flight and exits; the parent exits 0 once they all have. A worker
that fails to start stops the others, and the parent exits with its status (the worker printed why).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from common.serving import LISTEN_BACKLOG, STOP_SIGNALS, ListenFailed, announce, listening_url

log = logging.getLogger("common.workers")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # common/metrics.py (not imported here: prometheus-client must
# be imported after it is set)

RESPAWN_DELAY = 1.0
"""Seconds to wait before replacing a worker that died within RESPAWN_DELAY of starting (no busy
crash loop)."""
_POLL = 0.1


@dataclass
class Inherited:
    """What a worker got from its parent: the bound sockets (main, admin) and its index."""

    main: socket.socket
    admin: socket.socket | None
    index: int
    ready_fd: int


INHERITED: Inherited | None = None
"""Set in a worker process (``serve_until_signal`` then serves these sockets): None in a server of one
process."""


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(text: str) -> int:
    """``--workers N``: a whole number >= 0 (0: one per core)."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (0: one per core), got {text!r}")
    return value


def workers_wanted(option: int | None, setting: int) -> int:
    """How many workers: --workers, else the setting (file or environment), 0 meaning one per core."""
    count = option if option is not None else setting
    return count or default_workers()


def share_key_store(config: object) -> Callable[[], None]:
    """In the parent, before forking: a key service config's SQLite store (none when ``store_url`` names
    PostgreSQL) opened shared by the workers; returns the step that locks it for them alone, run once the
    first worker made it (keyservice/store.py ``share_with_workers``, ``hold_for_workers``)."""
    if getattr(config, "store_url", None):
        return lambda: None
    from keyservice.store import hold_for_workers, share_with_workers
    data_dir = config.data_dir  # type: ignore[attr-defined]
    share_with_workers(data_dir)
    return lambda: hold_for_workers(data_dir)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT (port 0: any), as aiohttp's TCPSite would make it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        raise ListenFailed(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def notify_ready() -> None:
    """In a worker: tell the parent this worker accepts connections (it prints the listening line once
    every worker has)."""
    if INHERITED is not None and INHERITED.ready_fd >= 0:
        os.write(INHERITED.ready_fd, b"r")
        os.close(INHERITED.ready_fd)
        INHERITED.ready_fd = -1


class Supervisor:
    """Forks ``count`` workers running ``work`` (which returns an exit status) on the bound sockets."""

    def __init__(self, count: int, main: socket.socket, admin: socket.socket | None,
                 work: Callable[[], int], after_first: Callable[[], None] = lambda: None,
                 metrics_dir: str | None = None) -> None:
        self.count = count
        self.metrics_dir = metrics_dir
        self.after_first = after_first
        self.main = main
        self.admin = admin
        self.work = work
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
        self.stopping: signal.Signals | None = None

    def _fork(self, index: int, ready_fd: int) -> int:
        """Start worker ``index``; in the child, run ``work`` and exit with its status (never return)."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.workers[pid] = (index, time.monotonic())
            return pid
        status = 1
        try:
            _stop_with_parent(os.getppid())
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            global INHERITED
            INHERITED = Inherited(self.main, self.admin, index, ready_fd)
            status = self.work()
        except BaseException:  # noqa: BLE001  -- a worker never returns into the parent's code
            logging.getLogger("common.workers").exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def start(self) -> int | None:
        """Fork every worker and wait until each is ready: None, or the status to exit with -- the first
        failed worker's, or 0 when SIGTERM/SIGINT came first (the others are then stopped).

        The first worker starts alone: whatever a first start creates (a generated root key or gateway
        secret, the key store's tables, the default key and its alias) is created once, by it; the others
        start once it is ready and find it all there."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._note_stop)
        if not self._started_ready([0]):
            return self._failed()
        try:
            self.after_first()
        except BaseException:
            self.stop()
            raise
        if not self._started_ready(list(range(1, self.count))):
            return self._failed()
        return None

    def _started_ready(self, indexes: list[int]) -> bool:
        """Fork the workers ``indexes``; whether each then said it is ready (rather than exiting)."""
        pipes = []
        for index in indexes:
            read_fd, write_fd = os.pipe()
            self._fork(index, write_fd)
            os.close(write_fd)
            pipes.append(read_fd)
        ready = True
        for read_fd in pipes:
            ready = os.read(read_fd, 1) == b"r" and ready  # EOF: that worker exited first
            os.close(read_fd)
        return ready and self.stopping is None

    def _failed(self) -> int:
        if self.stopping is not None:
            self.stop()
            return 0
        status = self._first_failure()
        self.stop()
        return status

    def _first_failure(self) -> int:
        """The exit status of a worker that exited (waiting for one), for the parent to exit with."""
        pid, status = os.waitpid(-1, 0)
        self.workers.pop(pid, None)
        return os.waitstatus_to_exitcode(status) or 1

    def _note_stop(self, signum: int, _frame: object) -> None:
        if self.stopping is None:
            self.stopping = signal.Signals(signum)

    def supervise(self) -> int:
        """Replace dead workers until SIGTERM/SIGINT, then stop them all: 0."""
        while self.stopping is None:
            self._reap_and_replace()
            time.sleep(_POLL)
        log.info("%s received: stopping %d workers", self.stopping.name, len(self.workers))
        self.stop()
        return 0

    def _reap_and_replace(self) -> None:
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            index, started = self.workers.pop(pid)
            self._forget_metrics(pid)
            if self.stopping is not None:
                return
            log.warning("worker %d (pid %d) exited (%s): starting another", index, pid, _describe(status))
            if time.monotonic() - started < RESPAWN_DELAY:
                time.sleep(RESPAWN_DELAY)
            self._fork(index, -1)

    def _forget_metrics(self, pid: int) -> None:
        """A dead worker's in-flight requests leave the summed gauge (its counters stay counted)."""
        if self.metrics_dir:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(pid, self.metrics_dir)

    def stop(self) -> None:
        """SIGTERM every worker and wait for them all (each finishes its requests in flight)."""
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)


def _stop_with_parent(parent: int) -> None:
    """In a worker: be sent SIGTERM when the parent dies, however it died (SIGKILL included), so no worker
    keeps serving orphaned (Linux prctl PR_SET_PDEATHSIG; elsewhere a clean stop of the parent still stops
    every worker)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def serve_workers(count: int, listen: tuple[str, int], admin_listen: tuple[str, int] | None, tls: bool,
                  work: Callable[[], int], prepare: Callable[[], Callable[[], None]] = lambda: (lambda: None)) -> int:
    """Bind, fork ``count`` workers running ``work``, print the listening line(s) once they are all ready,
    supervise them until SIGTERM/SIGINT: the exit status. ``prepare`` runs in the parent once the sockets
    are bound; what it returns runs once the first worker is ready (``share_key_store``)."""
    main = bind(*listen)
    admin = bind(*admin_listen) if admin_listen is not None else None
    with _metrics_files(admin is not None) as metrics_dir:
        after_first = prepare()
        supervisor = Supervisor(count, main, admin, work, after_first, metrics_dir)
        status = supervisor.start()
        if status is not None:
            return status
        _announce(listen, main, admin_listen, admin, tls)
        log.info("%d workers serving", count)
        return supervisor.supervise()


def _announce(listen: tuple[str, int], main: socket.socket, admin_listen: tuple[str, int] | None,
              admin: socket.socket | None, tls: bool) -> None:
    announce(listening_url(listen[0], main.getsockname()[1], tls))
    if admin is not None and admin_listen is not None:
        announce(listening_url(admin_listen[0], admin.getsockname()[1], False), "admin listening on")


@contextlib.contextmanager
def _metrics_files(wanted: bool) -> Iterator[str | None]:
    """With an admin listener: a fresh directory for prometheus-client's multiprocess mode (common/metrics.py),
    named to the workers by PROMETHEUS_MULTIPROC_DIR and removed at the end -- or the operator's own, if set."""
    if not wanted or os.environ.get(MULTIPROCESS_DIR):
        yield os.environ.get(MULTIPROCESS_DIR)
        return
    path = tempfile.mkdtemp(prefix="metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    try:
        yield path
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(path, ignore_errors=True)
