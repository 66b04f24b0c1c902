"""The SQLite store as other processes open it: ``access="read"`` (the command line's reads)
and ``access="client"`` (its requests), beside the runtime that owns the file; and the
upgrade of a schema-1 file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from store_contract import T0, body, records, row

from saga import NotASagaStore, StoreError
from saga._store import Append, SendResult, open_store
from saga._store._sqlite import SQLiteStore
from saga._store._sqlite_schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


async def _owner_with_a_saga(path: Path) -> SQLiteStore:
    owner = SQLiteStore(str(path))
    await owner.open()
    await owner.start(row("s1", status="WAITING"), [(1, body("s1", 1))])
    return owner


def _schema_1(path: Path) -> None:
    """Turn a store file into what saga wrote before inbox entries had an origin."""
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE saga_inbox DROP COLUMN origin")
        conn.execute("ALTER TABLE sagas DROP COLUMN parked")
        conn.execute("UPDATE saga_meta SET value = '1' WHERE key = 'schema_version'")


@pytest.mark.parametrize("access", ["read", "client"])
async def test_a_missing_file_is_an_error_and_nothing_is_created(
    tmp_path: Path, access: str
) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await SQLiteStore(str(tmp_path / "nothing.db"), access=access).open()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("access", ["read", "client"])
async def test_other_files_are_not_saga_stores(tmp_path: Path, access: str) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"not a database\n" * 200)
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (other, junk, empty):
        with pytest.raises(NotASagaStore):
            await SQLiteStore(str(path), access=access).open()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "notes.db", "other.db"]
    assert empty.stat().st_size == 0


def test_a_temporary_store_has_no_other_processes() -> None:
    for access in ("read", "client"):
        with pytest.raises(ValueError, match="memory"):
            SQLiteStore(None, access=access)
    with pytest.raises(ValueError, match="access"):
        SQLiteStore(None, access="admin")


async def test_read_access_reads_while_the_owner_runs_and_takes_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    owner = await _owner_with_a_saga(path)
    try:
        reader = SQLiteStore(str(path), access="read")
        await reader.open()  # the owner holds the lock: a reader does not need it
        try:
            assert await reader.saga("s1") == row("s1", status="WAITING")
            await owner.append(Append("s1", records("s1", 2, 2), row("s1", seq=2)))
            assert await reader.log("s1") == [body("s1", 1), body("s1", 2)]  # fresh each time
            for write in (
                reader.start(row("s2"), [(1, body("s2", 1))]),
                reader.send("s1", "e1", kind="event", name="x", key=None, payload=b"", sent_at=T0),
                reader.append(Append("s1", records("s1", 3, 3), row("s1", seq=3))),
            ):
                with pytest.raises(StoreError, match="access='read'"):
                    await write
        finally:
            await reader.close()
        # The owner carries on; nothing the reader did changed the store.
        assert await owner.inbox("s1") == []
        await owner.append(Append("s1", records("s1", 3, 3), row("s1", seq=3)))
    finally:
        await owner.close()


async def test_client_access_may_only_send(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    owner = await _owner_with_a_saga(path)
    client = SQLiteStore(str(path), access="client")
    await client.open()
    try:
        with pytest.raises(StoreError, match="cannot start"):
            await client.start(row("s2"), [(1, body("s2", 1))])
        with pytest.raises(StoreError, match="cannot append"):
            await client.append(Append("s1", records("s1", 2, 2), row("s1", seq=2)))
        with pytest.raises(StoreError, match="cannot append"):
            await client.append_if(Append("s1", records("s1", 2, 2), row("s1", seq=2)),
                                   status="WAITING")  # fmt: skip
        assert await owner.log("s1") == [body("s1", 1)]
    finally:
        await client.close()
        await owner.close()


async def test_client_requests_commit_while_the_owner_keeps_writing(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    owner = await _owner_with_a_saga(path)
    client = SQLiteStore(str(path), access="client")
    await client.open()
    results: list[SendResult] = []
    try:
        mark = await owner.inbox_mark()

        async def owner_writes() -> None:
            for i in range(200):
                await owner.start(row(f"o{i}"), [(1, body(f"o{i}", 1))])

        async def client_sends() -> None:
            for i in range(20):
                results.append(await client.send("s1", f"req-{i}", kind="abort", name="abort",
                                                 key=None, payload=b"why", sent_at=T0))  # fmt: skip

        async with anyio.create_task_group() as tg:
            tg.start_soon(owner_writes)
            tg.start_soon(client_sends)
        assert results == [SendResult.STORED] * 20
        items, _ = await owner.foreign_inbox(mark)
        assert [i.event_id for i in items] == [f"req-{i}" for i in range(20)]
        assert len(await owner.sagas(status=None, name=None, limit=1000)) == 201
    finally:
        await client.close()
        await owner.close()


async def test_open_store_passes_the_access_mode(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    owner = await _owner_with_a_saga(path)
    try:
        reader = open_store(f"sqlite:///{path}", access="read")
        assert isinstance(reader, SQLiteStore)
        assert reader.access == "read"
        await reader.open()
        assert [r.saga_id for r in await reader.sagas(status=None, name=None, limit=5)] == ["s1"]
        await reader.close()
    finally:
        await owner.close()


async def test_a_schema_1_file_is_readable_and_upgraded_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    owner = await _owner_with_a_saga(path)
    await owner.send("s1", "old-event", kind="event", name="paid", key=None, payload=b"p",
                     sent_at=T0)  # fmt: skip
    await owner.close()
    _schema_1(path)

    reader = SQLiteStore(str(path), access="read")
    await reader.open()
    assert [i.event_id for i in await reader.inbox("s1")] == ["old-event"]
    assert [r.saga_id for r in await reader.sagas(status=None, name=None, limit=5)] == ["s1"]
    assert (await reader.saga("s1")).parked is None  # type: ignore[union-attr]
    await reader.close()
    with pytest.raises(StoreError, match="older saga"):  # a request nobody would act on
        await SQLiteStore(str(path), access="client").open()

    owner = SQLiteStore(str(path))
    await owner.open()  # upgrades to the current schema, keeping everything
    try:
        with sqlite3.connect(path) as conn:
            meta = dict(conn.execute("SELECT key, value FROM saga_meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        assert [i.event_id for i in await owner.inbox("s1")] == ["old-event"]
        mark = await owner.inbox_mark()
        client = SQLiteStore(str(path), access="client")
        await client.open()
        try:
            result = await client.send("s1", "new", kind="abort", name="abort", key=None,
                                       payload=b"why", sent_at=T0)  # fmt: skip
            assert result is SendResult.STORED
        finally:
            await client.close()
        items, _ = await owner.foreign_inbox(mark)
        assert [i.event_id for i in items] == ["new"]
    finally:
        await owner.close()
