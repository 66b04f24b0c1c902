"""The SQLite store: the shared store contract on a file and on a temporary file, plus what
only SQLite has (WAL, ``synchronous``, the schema marker, the lock file)."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import pytest
from store_contract import T0, StoreContract, body, records, row

import saga
from saga import NotASagaStore, StoreError
from saga._store import Append, SendResult, Store
from saga._store._sqlite import SQLiteStore
from saga._store._sqlite_schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


async def _client_of(store: Store) -> AsyncIterator[Store]:
    """What another process (the ``saga`` command line) opens on the same file."""
    assert isinstance(store, SQLiteStore)
    client = SQLiteStore(store.path, access="client")
    await client.open()
    try:
        yield client
    finally:
        await client.close()


class TestSQLiteFileStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = SQLiteStore(str(tmp_path / "saga.db"))
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def peer(self, store: Store) -> AsyncIterator[Store]:
        async for client in _client_of(store):
            yield client


class TestSQLiteTemporaryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = SQLiteStore(None)  # what sqlite:///:memory: gives
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def peer(self, store: Store) -> AsyncIterator[Store]:
        async for client in _client_of(store):
            yield client


async def _pragma(conn: aiosqlite.Connection | None, name: str) -> Any:
    assert conn is not None
    async with conn.execute(f"PRAGMA {name}") as cursor:
        found = await cursor.fetchone()
    assert found is not None
    return found[0]


def _meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM saga_meta").fetchall())


async def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()


async def _writer_pragma(store: SQLiteStore, name: str) -> Any:
    """A pragma of the writer's own connection, read on the writer's thread."""
    assert store._wthread is not None
    return await store._wthread.call(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])


@pytest.mark.parametrize(("durability", "level"), [("full", 2), ("normal", 1)])
async def test_synchronous_follows_durability(tmp_path: Path, durability: str, level: int) -> None:
    # ``synchronous`` belongs to a connection, not to the file: a fresh sqlite3 connection
    # would show SQLite's default whatever the store did, so ask the store's own connections.
    store = SQLiteStore(str(tmp_path / "saga.db"), durability=durability)
    await store.open()
    try:
        assert await _writer_pragma(store, "synchronous") == level
        assert await _pragma(store._rconn, "synchronous") == level
    finally:
        await store.close()


async def test_the_temporary_store_skips_fsync_and_is_removed_at_close() -> None:
    store = SQLiteStore(None, durability="full")
    await store.open()
    directory = os.path.dirname(store.path)
    try:
        assert await _writer_pragma(store, "synchronous") == 0
        assert os.path.exists(store.path)
    finally:
        await store.close()
    assert not os.path.exists(directory)


def test_an_unknown_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(None, durability="sometimes")


async def test_a_new_file_gets_the_schema_marker_and_version(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    store = SQLiteStore(str(path))
    await store.open()
    await store.close()
    assert _meta(path) == {"format": "saga-store", "schema_version": str(SCHEMA_VERSION)}


async def test_reopening_a_store_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "saga.db")
    store = SQLiteStore(path, durability="normal")
    await store.open()
    try:
        await store.start(row("open", status="WAITING", wake_at=T0 + 30), [(1, body("open", 1))])
        await store.start(row("done", created_at=T0 + 1), [(1, body("done", 1))])
        for saga_id, event_id in (("open", "e1"), ("done", "e2")):
            result = await store.send(saga_id, event_id, kind="event", name="paid", key=None,
                                      payload=b"p", sent_at=T0)  # fmt: skip
            assert result is SendResult.STORED
        final = row("done", seq=3, status="COMPLETED", step=None, created_at=T0 + 1)
        await store.append(Append("done", records("done", 2, 3), final, closed="saga completed"))
    finally:
        await store.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert [r.saga_id for r in await store.sagas(status=None, name=None, limit=10)] == [
            "done",
            "open",
        ]
        assert await store.saga("done") == final
        assert await store.log("done") == [body("done", s) for s in (1, 2, 3)]
        assert [i.event_id for i in await store.inbox("open")] == ["e1"]
        assert [(d.event_id, d.reason) for d in await store.dead_letters(None, 10)] == [
            ("e2", "saga completed")
        ]
        assert await store.due(T0 + 30) == [("open", T0 + 30)]
        assert [saga_id async for saga_id, _ in store.active_logs()] == ["open"]
        result = await store.send("done", "e2", kind="event", name="paid", key=None,
                                  payload=b"p", sent_at=T0)  # fmt: skip
        assert result is SendResult.DUPLICATE
    finally:
        await store.close()
    assert _meta(Path(path)) == {"format": "saga-store", "schema_version": str(SCHEMA_VERSION)}


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    store = SQLiteStore(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:  # a file written by a future saga
        conn.execute("UPDATE saga_meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="schema version 99") as caught:
        await SQLiteStore(str(path)).open()
    assert not isinstance(caught.value, NotASagaStore)
    assert _meta(path)["schema_version"] == "99"  # left as it was

    with sqlite3.connect(path) as conn:  # the refusal released the file
        conn.execute(
            "UPDATE saga_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
    store = SQLiteStore(str(path))
    await store.open()
    await store.close()


async def test_a_sqlite_file_of_another_application_is_not_a_saga_store(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    with pytest.raises(NotASagaStore):
        await SQLiteStore(str(path)).open()
    with sqlite3.connect(path) as conn:  # left exactly as it was
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert tables == [("customers",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


async def test_a_file_that_is_not_sqlite_is_not_a_saga_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)
    with pytest.raises(NotASagaStore):
        await SQLiteStore(str(path)).open()


async def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await SQLiteStore(str(tmp_path / "nowhere" / "saga.db")).open()


async def test_one_store_at_a_time_per_file(tmp_path: Path) -> None:
    path = str(tmp_path / "saga.db")
    first = SQLiteStore(path)
    await first.open()
    try:
        with pytest.raises(StoreError, match="in use"):
            await SQLiteStore(path).open()
    finally:
        await first.close()
    second = SQLiteStore(path)
    await second.open()
    await second.close()


async def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "saga.db"))
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.start(row("s1"), [(1, body("s1", 1))])


async def test_concurrent_writes_share_a_transaction_and_a_bad_one_is_isolated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(str(tmp_path / "saga.db"))
    await store.open()
    try:
        for i in range(20):
            await store.start(row(f"s{i}"), [(1, body(f"s{i}", 1))])
        failed: list[str] = []

        async def append(saga_id: str, first: int) -> None:
            try:
                await store.append(Append(saga_id, records(saga_id, first, 2),
                                          row(saga_id, seq=2)))  # fmt: skip
            except StoreError:
                failed.append(saga_id)

        with caplog.at_level(logging.WARNING, logger="saga.store"):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(append, f"s{i}", 1 if i == 7 else 2)
        assert failed == ["s7"]
        # The writes were committed together (one batch failed, then each retried alone).
        sizes = [int(m) for m in re.findall(r"a batch of (\d+) writes failed", caplog.text)]
        assert sizes, "no batch of several writes failed"
        assert max(sizes) > 1
        assert [len(await store.log(f"s{i}")) for i in range(20)] == [2] * 7 + [1] + [2] * 12
    finally:
        await store.close()


async def test_a_second_runtime_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """SQLite is one runtime process per file: another process gets a clear StoreError."""
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    code = (
        "import anyio, saga, sys\n"
        "async def main():\n"
        f"    async with saga.Runtime({url!r}, sagas=[]):\n"
        "        pass\n"
        "try:\n"
        "    anyio.run(main)\n"
        "except saga.StoreError as error:\n"
        "    print(error); sys.exit(3)\n"
    )
    async with saga.Runtime(url, sagas=[]):
        refused = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert refused.returncode == 3, refused.stderr.decode()
    message = refused.stdout.decode()
    assert "in use by another runtime" in message
    assert "PostgreSQL for many workers" in message
    # Once the first runtime is gone, the next process takes the file.
    taken = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert taken.returncode == 0, taken.stderr.decode()
