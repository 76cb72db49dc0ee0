"""The SQLite key store shared by the workers of one ``serve --workers N`` (keyservice/store.py
``hold_for_workers``): the parent's lock admits its workers and refuses any other process, each worker hears
of the others' commits (never of its own) within the poll interval, and key maintenance is serialized."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyservice import store
from keyservice.store import CHANGE_POLL_INTERVAL, KeyStore, hold_for_workers, share_with_workers

ROOT_KEY = bytes(range(32))


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path``'s store locked as the parent of workers locks it (released at the end)."""
    monkeypatch.setattr(store, "_HELD_FOR_WORKERS", {})
    share_with_workers(tmp_path)
    hold_for_workers(tmp_path)
    yield tmp_path
    for handle in store._HELD_FOR_WORKERS.values():
        if handle is not None:
            handle.close()


def test_the_workers_share_the_store_and_another_process_is_refused(held: Path) -> None:
    one, two = KeyStore(held, ROOT_KEY), KeyStore(held, ROOT_KEY)
    try:
        assert one.shared and two.shared
        one.put_key("k1", {"KeyState": "Enabled"})
        assert two.get_key("k1") == {"KeyState": "Enabled"}
        other = subprocess.run([sys.executable, "-c",
                                "import sys\nfrom pathlib import Path\nfrom keyservice.store import "
                                "KeyStore, StoreInUse\ntry:\n    KeyStore(Path(sys.argv[1]), bytes(32))\n"
                                "except StoreInUse as e:\n    print(e); sys.exit(3)", str(held)],
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 3, other.stderr
        assert "in use by another process" in other.stdout
    finally:
        one.close()
        two.close()


def test_a_store_not_held_for_workers_is_not_shared(tmp_path: Path) -> None:
    alone = KeyStore(tmp_path, ROOT_KEY)
    try:
        assert not alone.shared
    finally:
        alone.close()


def test_another_workers_commit_is_reported_within_the_poll_interval_and_an_own_commit_is_not(held: Path) -> None:
    watcher, writer = KeyStore(held, ROOT_KEY), KeyStore(held, ROOT_KEY)
    heard: list[object] = []
    try:
        watcher.watch(heard.append)
        time.sleep(CHANGE_POLL_INTERVAL * 2)
        assert heard == [None]  # once as it starts watching: what came before is caught up
        started = time.monotonic()
        writer.put_key("k1", {"KeyState": "Disabled"})
        while len(heard) < 2 and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert heard == [None, None]  # None: reload everything (keyservice/api.py follow_store)
        assert time.monotonic() - started < CHANGE_POLL_INTERVAL + 0.5
        watcher.put_key("k2", {"KeyState": "Enabled"})
        time.sleep(CHANGE_POLL_INTERVAL * 3)
        assert heard == [None, None]  # its own commit is not news to it
    finally:
        watcher.close()
        writer.close()


def test_two_workers_maintaining_a_key_take_turns(held: Path) -> None:
    one, two = KeyStore(held, ROOT_KEY), KeyStore(held, ROOT_KEY)
    one.put_key("k1", {"KeyState": "PendingDeletion"})
    order: list[str] = []
    try:
        with one.exclusive_key("k1") as row:
            assert row == {"KeyState": "PendingDeletion"}

            def second() -> None:
                with two.exclusive_key("k1") as seen:
                    order.append(f"two saw {seen}")
            waiter = threading.Thread(target=second)
            waiter.start()
            time.sleep(0.3)
            assert order == []  # waits for the first worker's maintenance
            one.destroy_key("k1")
            order.append("one destroyed")
        waiter.join(5)
        assert order == ["one destroyed", "two saw None"]  # judged on the row as stored then: already done
    finally:
        one.close()
        two.close()


def test_sharing_writes_nothing_until_the_first_worker_made_the_store_and_a_taken_lock_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_HELD_FOR_WORKERS", {})
    data_dir = tmp_path / "data"
    store.share_with_workers(data_dir)
    assert not data_dir.exists()  # a first worker refused by its start-up checks leaves nothing behind
    first = KeyStore(data_dir, ROOT_KEY)  # the first worker, before the parent holds the lock
    try:
        assert first.shared
        other_server = store._exclusive(data_dir / "keys.lock")  # another server took it meanwhile
        with pytest.raises(store.StoreInUse):
            hold_for_workers(data_dir)
        other_server.close()
        hold_for_workers(data_dir)
        assert store._HELD_FOR_WORKERS[(data_dir / "keys.lock").resolve()] is not None
    finally:
        first.close()
        for handle in store._HELD_FOR_WORKERS.values():
            if handle is not None:
                handle.close()
