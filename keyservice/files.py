"""Private files and directories for secrets and key material, whatever the process umask.

The key store, its WAL, the audit log, the generated root key and the gateway secret must never be
readable by other local users, so everything is created with an explicit mode (0700 directories,
0600 files) rather than relying on the umask, which only ever removes permissions. A secret that
several processes may create at once is written to a private temporary file and linked into place:
it appears whole or not at all, and a loser reads the winner's.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700 directories; existing ones are left as they are
    (an operator may have chosen their mode)."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            continue  # another process made it meanwhile
    return path


def touch_private(path: Path) -> None:
    """Create an empty 0600 file if none exists, so a library that creates files with its own mode
    (SQLite: 0644, and its -wal/-shm copy the database's mode) finds a private one."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE))
    except FileExistsError:
        pass


def create_once(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The content of ``path``, creating it with ``make()`` if it does not exist yet.

    The new content is written and fsync'd in a private temporary file in the same directory, then
    hard-linked to ``path`` (link never replaces an existing file): when processes race, exactly one
    link succeeds and every other one reads that whole file. Returns (content, created)."""
    private_dir(path.parent)
    if path.exists():
        return path.read_bytes(), False
    content = make()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes(), False
    finally:
        os.unlink(tmp)
    _sync_dir(path.parent)
    return content, True


def _sync_dir(path: Path) -> None:
    """Make a new directory entry durable (a crash must not lose a secret data was sealed under)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
