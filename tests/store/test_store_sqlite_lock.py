"""The lock file beside a SQLite store: one runtime at a time, and no file left behind.

The runtime that owns a store holds ``flock`` on ``<path>.lock`` and removes the file
when it lets go, while still holding the lock. A process that opened the file just
before may then get the lock on the removed file while a third one creates a new file
and locks that; so a lock only counts on the file still at the path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import saga
from saga._store._sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

# A runtime in its own process: exit status 3 if refused; with "hold", it prints READY
# and keeps the store until stdin closes (or it is killed).
HOLDER = """
import anyio, saga, sys
async def main(url, hold):
    async with saga.Runtime(url, sagas=[]):
        if hold:
            print("READY", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)
try:
    anyio.run(main, sys.argv[1], sys.argv[2:] == ["hold"])
except saga.StoreError as error:
    print(error, flush=True)
    sys.exit(3)
"""


def lock_of(path: Path) -> Path:
    return Path(f"{path}.lock")


def holder(url: str, *hold: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, url, *hold], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


async def test_a_clean_exit_leaves_no_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    async with saga.Runtime(f"sqlite:///{path}", sagas=[]):
        assert lock_of(path).exists()
    assert not lock_of(path).exists()
    store = SQLiteStore(str(path))
    await store.open()
    assert lock_of(path).exists()
    await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saga.db"]


async def test_a_refused_file_leaves_no_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    with pytest.raises(saga.NotASagaStore):
        async with saga.Runtime(f"sqlite:///{path}", sagas=[]):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


async def test_a_lock_file_left_behind_is_taken_and_removed(tmp_path: Path) -> None:
    """An older saga, or a process killed outright, leaves the file: it locks nothing."""
    path = tmp_path / "saga.db"
    url = f"sqlite:///{path}"
    proc = holder(url, "hold")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert lock_of(path).exists()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert lock_of(path).exists()
    async with saga.Runtime(url, sagas=[]):
        pass
    assert not lock_of(path).exists()


async def test_a_second_runtime_process_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    url = f"sqlite:///{path}"
    first = holder(url, "hold")
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "READY"
        for _ in range(2):  # refused, and refusing removes nothing
            refused = await anyio.run_process([sys.executable, "-c", HOLDER, url], check=False)
            assert refused.returncode == 3, refused.stderr.decode()
            assert "in use by another runtime" in refused.stdout.decode()
            assert lock_of(path).exists()
        with pytest.raises(saga.StoreError, match="in use"):
            async with saga.Runtime(url, sagas=[]):
                pass
        assert lock_of(path).exists()
    finally:
        _, err = first.communicate(timeout=30)  # closes its stdin: it exits cleanly
    assert first.returncode == 0, err
    assert not lock_of(path).exists()
    taken = await anyio.run_process([sys.executable, "-c", HOLDER, url], check=False)
    assert taken.returncode == 0, taken.stderr.decode()
    assert not lock_of(path).exists()


class StaleOpen:
    """``os.open`` whose first call on the lock path returns a descriptor opened before
    the holder removed that file (what a process racing the holder's exit would have)."""

    def __init__(self, lock_path: Path, stale: int) -> None:
        self.lock_path, self.stale, self.calls = str(lock_path), stale, 0
        self.real = os.open

    def __call__(self, path: str, flags: int, mode: int = 0o777) -> int:
        if path == self.lock_path:
            self.calls += 1
            if self.calls == 1:
                return self.stale
        return self.real(path, flags, mode)


async def test_a_lock_on_a_removed_file_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "saga.db"
    first = SQLiteStore(str(path))
    await first.open()
    stale = os.open(lock_of(path), os.O_RDWR)  # opened while the first still holds it
    await first.close()  # removes the file
    assert not lock_of(path).exists()
    second = SQLiteStore(str(path))  # creates a new file and locks it
    await second.open()
    try:
        fake = StaleOpen(lock_of(path), stale)
        monkeypatch.setattr(os, "open", fake)
        # The stale descriptor gets the lock (its file is gone: nobody holds that one),
        # but that file is no longer at the path; the file there is the second's.
        with pytest.raises(saga.StoreError, match="in use"):
            await SQLiteStore(str(path)).open()
        assert fake.calls == 2
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(stale)  # closed, not kept
        monkeypatch.undo()
        assert lock_of(path).exists()  # still the second's
    finally:
        await second.close()
    assert not lock_of(path).exists()


async def test_a_lock_on_a_removed_file_is_taken_again_on_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "saga.db"
    first = SQLiteStore(str(path))
    await first.open()
    stale = os.open(lock_of(path), os.O_RDWR)
    await first.close()
    fake = StaleOpen(lock_of(path), stale)
    monkeypatch.setattr(os, "open", fake)
    third = SQLiteStore(str(path))
    await third.open()  # the removed file does not count: it locks a new one
    monkeypatch.undo()
    try:
        assert fake.calls == 2
        assert lock_of(path).exists()
        with pytest.raises(saga.StoreError, match="in use"):
            await SQLiteStore(str(path)).open()
    finally:
        await third.close()
    assert not lock_of(path).exists()
