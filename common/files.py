"""Private files and directories for secrets and key material, whatever the process umask.

The key store, its WAL, the audit log, the generated root key and the gateway secret must never be
readable by other local users, so everything is created with an explicit mode (0700 directories,
0600 files) rather than relying on the umask, which only ever removes permissions. A secret that
several processes may create at once is written to a private temporary file and linked into place:
it appears whole or not at all, and a loser reads the winner's. On a file system without hard links
(some FUSE, SMB and overlay set-ups) it is created in place with O_EXCL instead, so a racing reader may
find it empty or short for a moment: readers wait for the whole of it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# link() errors meaning "this file system cannot hard-link" (not "the name exists", not "no permission").
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK})
_READ_WAIT = 5.0  # seconds a reader waits for a file another process is still writing


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


def create_once(path: Path, make: Callable[[], bytes], *, size: int) -> tuple[bytes, bool]:
    """The content of ``path``, creating it with ``make()`` (``size`` bytes) if it does not exist yet.

    The new content is written and fsync'd in a private temporary file in the same directory, then
    hard-linked to ``path`` (link never replaces an existing file): when processes race, exactly one
    link succeeds and every other one reads that whole file. Where the file system has no hard links,
    the file is created with O_CREAT|O_EXCL and written in place: still exactly one creator, but a
    reader may see it before it is whole, so readers wait until it holds ``size`` bytes (an operator's
    file may hold more, e.g. a key as hex). Returns (content, created)."""
    private_dir(path.parent)
    if path.exists():
        return _read_whole(path, size), False
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
            return _read_whole(path, size), False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            linked = False
        else:
            linked = True
    finally:
        os.unlink(tmp)
    if not linked:
        return _create_in_place(path, content, size)
    _sync_dir(path.parent)
    return content, True


def _create_in_place(path: Path, content: bytes, size: int) -> tuple[bytes, bool]:
    """Create ``path`` exclusively and write it (no hard links here); a racing creator reads ours."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return _read_whole(path, size), False
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)  # never leave a short secret behind for the next start to take as whole
        raise
    os.close(fd)
    _sync_dir(path.parent)
    return content, True


def _read_whole(path: Path, size: int) -> bytes:
    """The file's content once it holds at least ``size`` bytes; after ``_READ_WAIT`` seconds, whatever it
    holds (the caller's length check then says the file is short)."""
    deadline = time.monotonic() + _READ_WAIT
    delay = 0.001
    while True:
        content = path.read_bytes()
        if len(content) >= size or time.monotonic() >= deadline:
            return content
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` whole: a private temporary file beside it, fsync'd, renamed over
    it, the directory synced. A reader, or a run resumed after a crash, never sees half a file."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    """Make a new directory entry durable (a crash must not lose a secret data was sealed under)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
