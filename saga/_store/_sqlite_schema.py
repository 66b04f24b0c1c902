"""The SQLite store's schema, versioned in ``saga_meta``, and the checks that open a file.

The runtime that owns a file creates the schema in an empty file and upgrades an older
one; a client (the ``saga`` command line) only checks it and never writes a schema.
"""

from __future__ import annotations

import contextlib
import sqlite3

import aiosqlite

from saga._errors import NotASagaStore
from saga._store._meta import MARKER, schema_version

__all__ = ["SCHEMA", "SCHEMA_VERSION", "check_schema", "create_or_upgrade_schema"]

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE saga_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;


CREATE TABLE sagas (
    saga_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    step TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    seq INTEGER NOT NULL,
    wake_at REAL,
    state BLOB NOT NULL,
    error BLOB,
    annotations BLOB
);
CREATE INDEX sagas_active ON sagas (status)
    WHERE status IN ('RUNNING', 'WAITING', 'COMPENSATING');
CREATE INDEX sagas_wake ON sagas (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX sagas_created ON sagas (created_at);


CREATE TABLE saga_log (
    saga_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;


CREATE TABLE saga_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT,
    payload BLOB NOT NULL,
    sent_at REAL NOT NULL,
    headers BLOB,
    status INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    origin TEXT,
    UNIQUE (saga_id, event_id)
);
CREATE INDEX saga_inbox_pending ON saga_inbox (saga_id, id) WHERE status = 0;
CREATE INDEX saga_inbox_dead ON saga_inbox (id) WHERE status = 2;
"""

# Statements that bring a file from the previous version to this one.
MIGRATIONS: dict[int, list[str]] = {
    # 2: inbox entries name the store instance that wrote them, so a runtime can tell
    # requests from other processes (the command line) from its own writes.
    2: ["ALTER TABLE saga_inbox ADD COLUMN origin TEXT"],
}

_LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"


async def check_schema(conn: aiosqlite.Connection, path: str) -> int:
    """Check that ``conn`` holds a saga store this version can read; return its version.

    Raises:
        NotASagaStore: an empty file, another application's database, or not SQLite.
        StoreError: a schema newer than this version of saga understands.
    """
    try:
        tables = {row[0] for row in await conn.execute_fetchall(_LIST_TABLES)}
        if "saga_meta" not in tables:
            raise NotASagaStore(f"{path!r} is not a saga store")
        rows = await conn.execute_fetchall("SELECT key, value FROM saga_meta")
    except sqlite3.DatabaseError as error:
        raise NotASagaStore(f"{path!r} is not a saga store: {error}") from error
    return schema_version({k: v for k, v in rows}, repr(path), SCHEMA_VERSION)


async def create_or_upgrade_schema(conn: aiosqlite.Connection, path: str) -> None:
    """Create the schema in an empty file, upgrade an older saga store, touch nothing else.

    Raises:
        NotASagaStore: another application's database, or not SQLite at all.
        StoreError: a schema newer than this version of saga understands.
    """
    try:
        tables = {row[0] for row in await conn.execute_fetchall(_LIST_TABLES)}
        if tables and "saga_meta" not in tables:
            raise NotASagaStore(f"{path!r} is a SQLite database but not a saga store")
        await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in await conn.execute_fetchall(_LIST_TABLES)}
            if not tables:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
                await conn.executemany(
                    "INSERT INTO saga_meta (key, value) VALUES (?, ?)",
                    [("format", MARKER), ("schema_version", str(SCHEMA_VERSION))],
                )
            else:
                rows = await conn.execute_fetchall("SELECT key, value FROM saga_meta")
                version = schema_version({k: v for k, v in rows}, repr(path), SCHEMA_VERSION)
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        await conn.execute(statement)
                if version < SCHEMA_VERSION:
                    await conn.execute(
                        "UPDATE saga_meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as error:
        raise NotASagaStore(f"{path!r} is not a saga store: {error}") from error
