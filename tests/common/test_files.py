"""create_once on file systems without hard links (some FUSE, SMB and overlay set-ups): os.link fails
with EPERM/ENOTSUP/EXDEV-like errors there, and start-up must still create, or share, the secret."""
from __future__ import annotations

import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from common import files
from common.files import create_once


def no_hard_links(monkeypatch, code: int = errno.EPERM) -> None:
    def link(src, dst, *args, **kwargs):
        raise OSError(code, os.strerror(code), src, None, dst)
    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS])
def test_without_hard_links_the_file_is_created_in_place_once(tmp_path: Path, monkeypatch, code: int) -> None:
    no_hard_links(monkeypatch, code)
    path = tmp_path / "data" / "gateway.secret"
    content, created = create_once(path, lambda: b"s" * 32, size=32)
    assert (content, created) == (b"s" * 32, True)
    assert path.read_bytes() == b"s" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["gateway.secret"]  # the temporary file is gone
    assert create_once(path, lambda: b"other" * 8, size=32) == (b"s" * 32, False)


def test_racing_creators_without_hard_links_all_get_the_one_file(tmp_path: Path, monkeypatch) -> None:
    no_hard_links(monkeypatch)
    path = tmp_path / "root.key"
    results: list[tuple[bytes, bool]] = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        results.append(create_once(path, lambda: bytes([i]) * 32, size=32))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {content for content, _ in results} == {path.read_bytes()}
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert os.listdir(tmp_path) == ["root.key"]


def test_a_reader_waits_for_a_file_another_process_is_still_writing(tmp_path: Path) -> None:
    path = tmp_path / "root.salt"
    path.write_bytes(b"half")  # created in place by a racer that has not written the rest yet

    def finish() -> None:
        time.sleep(0.2)
        with open(path, "ab") as f:
            f.write(b"-and-the-rest")

    writer = threading.Thread(target=finish)
    writer.start()
    assert create_once(path, lambda: pytest.fail("must not make a second one"), size=16) == \
        (b"half-and-the-rest", False)
    writer.join()


def test_a_file_that_stays_short_is_returned_as_it_is_after_the_wait(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(files, "_READ_WAIT", 0.1)
    path = tmp_path / "gateway.secret"
    path.write_bytes(b"")
    assert create_once(path, lambda: b"x" * 32, size=32) == (b"", False)  # the caller's check reports it


def test_a_failed_in_place_write_leaves_no_short_file(tmp_path: Path, monkeypatch) -> None:
    no_hard_links(monkeypatch)
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the temporary file's sync passes, the in-place one fails
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        create_once(tmp_path / "gateway.secret", lambda: b"s" * 32, size=32)
    assert info.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []


def test_other_link_errors_are_not_taken_for_a_missing_feature(tmp_path: Path, monkeypatch) -> None:
    no_hard_links(monkeypatch, errno.EACCES)
    with pytest.raises(PermissionError):
        create_once(tmp_path / "gateway.secret", lambda: b"s" * 32, size=32)
    assert os.listdir(tmp_path) == []


def test_an_atomic_write_replaces_the_file_whole_privately_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    from common.files import write_atomically
    path = tmp_path / "state" / "checkpoint.json"
    write_atomically(path, b"first")
    write_atomically(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["checkpoint.json"]
