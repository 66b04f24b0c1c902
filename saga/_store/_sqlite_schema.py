"""The SQLite store's schema, versioned in ``saga_meta``, and the checks that open a file.

The runtime that owns a file creates the schema in an empty file and upgrades an older
one; a client (the ``saga`` command line) only checks it and never writes a schema.
"""

from __future__ import annotations

import contextlib
import sqlite3

import aiosqlite

from saga._errors import NotASagaStore, SagaError, StoreError
from saga._store._meta import MARKER, schema_version
from saga._store._vocabulary import OPEN_SQL, InboxState

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_schema",
    "create_or_upgrade_schema",
    "is_damage",
    "open_error",
]

SCHEMA_VERSION = 3

# Built from the store's vocabulary, byte for byte the DDL existing files were made with.
SCHEMA = f"""
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
    annotations BLOB,
    parked BLOB
);
CREATE INDEX sagas_active ON sagas (status)
    WHERE status IN {OPEN_SQL};
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
    status INTEGER NOT NULL DEFAULT {InboxState.PENDING:d},
    reason TEXT,
    origin TEXT,
    UNIQUE (saga_id, event_id)
);
CREATE INDEX saga_inbox_pending ON saga_inbox (saga_id, id) WHERE status = {InboxState.PENDING:d};
CREATE INDEX saga_inbox_dead ON saga_inbox (id) WHERE status = {InboxState.DEAD_LETTER:d};
"""

# Statements that bring a file from the previous version to this one.
MIGRATIONS: dict[int, list[str]] = {
    # 2: inbox entries name the store instance that wrote them, so a runtime can tell
    # requests from other processes (the command line) from its own writes.
    2: ["ALTER TABLE saga_inbox ADD COLUMN origin TEXT"],
    # 3: why the runtime could not run a saga (a missing definition, a corrupt log), so
    # that every reader (the command line) shows it, not only the runtime that parked it.
    3: ["ALTER TABLE sagas ADD COLUMN parked BLOB"],
}

_LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"

# SQLite result codes that say the file cannot be used now (I/O, a lock, permissions,
# resources), not that it holds something other than a saga store.
_CANNOT_USE = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_PROTOCOL,
})  # fmt: skip


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` says that the file's content is damaged (not I/O, not a lock)."""
    if isinstance(error, UnicodeDecodeError):  # e.g. an error message quoting a garbled schema
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    # TEXT that is not UTF-8: sqlite3 turns the UnicodeDecodeError into this, with no code.
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith("Could not decode")


def open_error(path: str, error: BaseException) -> BaseException:
    """What to raise for ``error``, met while opening (or checking) the store at ``path``.

    `NotASagaStore` for a file that is not SQLite, not a saga store, or too damaged to
    open; `StoreError` for the rest (I/O, a lock, permissions). A `SagaError` and what is
    not an `Exception` (a cancellation) are returned as they are.
    """
    if isinstance(error, SagaError) or not isinstance(error, Exception):
        return error
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.DatabaseError | UnicodeDecodeError) or (
        code is not None and code & 0xFF in _CANNOT_USE
    ):
        return StoreError(f"cannot open store {path!r}: {error}")
    damaged = is_damage(error) and (code is None or code & 0xFF == sqlite3.SQLITE_CORRUPT)
    return NotASagaStore(
        f"{path!r} is not a saga store{' (or it is damaged)' if damaged else ''}: {error}"
    )


async def check_schema(conn: aiosqlite.Connection, path: str) -> int:
    """Check that ``conn`` holds a saga store this version can read; return its version.

    Raises:
        NotASagaStore: an empty file, another application's database, or not SQLite.
        StoreError: a schema newer than this version of saga understands.
    """
    try:
        tables = {row["name"] for row in await conn.execute_fetchall(_LIST_TABLES)}
        if "saga_meta" not in tables:
            raise NotASagaStore(f"{path!r} is not a saga store")
        rows = await conn.execute_fetchall("SELECT key, value FROM saga_meta")
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise open_error(path, error) from error
    return schema_version({r["key"]: r["value"] for r in rows}, repr(path), SCHEMA_VERSION)


async def create_or_upgrade_schema(conn: aiosqlite.Connection, path: str) -> None:
    """Create the schema in an empty file, upgrade an older saga store, forget the last
    owner's parked marks; touch nothing else.

    Raises:
        NotASagaStore: another application's database, or not SQLite at all.
        StoreError: a schema newer than this version of saga understands.
    """
    try:
        tables = {row["name"] for row in await conn.execute_fetchall(_LIST_TABLES)}
        if tables and "saga_meta" not in tables:
            raise NotASagaStore(f"{path!r} is a SQLite database but not a saga store")
        await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row["name"] for row in await conn.execute_fetchall(_LIST_TABLES)}
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
                meta = {r["key"]: r["value"] for r in rows}
                version = schema_version(meta, repr(path), SCHEMA_VERSION)
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        await conn.execute(statement)
                if version < SCHEMA_VERSION:
                    await conn.execute(
                        "UPDATE saga_meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
                # Why the last owner could not run a saga is its own view: this owner's
                # recovery decides anew, and parks again what it cannot run either.
                await conn.execute("UPDATE sagas SET parked = NULL WHERE parked IS NOT NULL")
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise open_error(path, error) from error
