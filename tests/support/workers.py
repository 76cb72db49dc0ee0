"""What the tests of ``serve --workers N`` share: the worker processes of a server and which of them
served which request (the ``worker`` field of the access log, which a worker adds: its pid)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.process import Server


def worker_pids(server: Server) -> set[int]:
    """The pids of the server's children (its workers) now."""
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    try:
        return {int(pid) for pid in children.read_text().split()}
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def served_by(server: Server, operation: str, status: int | None = None, since: int = 0) -> list[int]:
    """The ``worker`` of every access log line (on the server's stdout) of ``operation`` (with ``status``),
    among the output lines from index ``since`` on, in order."""
    workers = []
    for line in server.output[since:]:
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("operation") == operation and (status is None or record.get("status") == status):
            workers.append(record["worker"])
    return workers


def wait_for(check, what: str, timeout: float) -> float:
    """Seconds until ``check()`` is true; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def no_orphans(pids: set[int], timeout: float = 5.0) -> None:
    """Every one of ``pids`` is gone (within ``timeout``: a worker finishing its requests may take a moment)."""
    wait_for(lambda: not any(alive(pid) for pid in pids), f"workers {sorted(pids)} still running", timeout)


def worker_of_next(server: Server, operation: str, since: int, timeout: float = 5.0) -> int:
    """The worker of the first ``operation`` access log line from output line ``since`` on, waiting for it (a
    line is written just after its answer went out)."""
    wait_for(lambda: served_by(server, operation, since=since), f"the access log line of {operation}", timeout)
    return served_by(server, operation, since=since)[0]
