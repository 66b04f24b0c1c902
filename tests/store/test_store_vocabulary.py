"""The store's vocabulary (`saga._store._vocabulary`): its statuses are `saga.Status`'s,
the SQL built from it is what existing stores were made with, every store checks its
options alike, rows are read by column name, and every store provides what its mixins
need."""

# ruff: noqa: E501 (the pinned DDL has its long lines as they are)

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from saga import Status
from saga._info import ACTIVE_STATUSES
from saga._store._base import InboxItem, SagaRow, inbox_item, saga_row
from saga._store._pg_reads import PostgresReadsHost
from saga._store._pg_schema import SCHEMA as PG_SCHEMA
from saga._store._plan import BatchedWritesHost
from saga._store._postgres import PostgresStore
from saga._store._sqlite import SQLiteStore
from saga._store._sqlite_reads import SQLiteReadsHost
from saga._store._sqlite_schema import SCHEMA as SQLITE_SCHEMA
from saga._store._vocabulary import (
    ACCESS_MODES,
    CLOSED_STATE_SQL,
    FAILED,
    OPEN_SQL,
    OPEN_STATUSES,
    SUSPENDED,
    TERMINAL_STATUSES,
    WAITING,
    InboxState,
)

# The DDL of SQLite schema version 3 and PostgreSQL schema version 2, as it was written
# out by hand before it was built from the vocabulary: a store made by either must be
# the very same store (a change here is a new schema version, with a migration).
SQLITE_SCHEMA_V3 = """
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

POSTGRES_SCHEMA_V2 = """
CREATE TABLE saga_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE SEQUENCE saga_fences;

CREATE TABLE saga_workers (
    fence bigint PRIMARY KEY,
    worker text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL,
    drained boolean NOT NULL DEFAULT false
);
CREATE INDEX saga_workers_dead ON saga_workers (expires_at) WHERE NOT drained;

CREATE TABLE sagas (
    saga_id text PRIMARY KEY,
    name text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    step text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    seq integer NOT NULL,
    wake_at double precision,
    state bytea NOT NULL,
    error bytea,
    annotations bytea,
    parked bytea,
    owner bigint,
    ord bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX sagas_active ON sagas (owner, saga_id) WHERE status IN ('RUNNING', 'WAITING', 'COMPENSATING');
CREATE INDEX sagas_wake ON sagas (owner, wake_at)
    WHERE wake_at IS NOT NULL AND status IN ('RUNNING', 'WAITING', 'COMPENSATING');
CREATE INDEX sagas_created ON sagas (created_at, ord);
CREATE INDEX sagas_waiting ON sagas (updated_at, ord) WHERE status = 'WAITING';

CREATE TABLE saga_log (
    saga_id text NOT NULL,
    seq integer NOT NULL,
    body bytea NOT NULL,
    fence bigint,
    PRIMARY KEY (saga_id, seq)
);

CREATE TABLE saga_inbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga_id text NOT NULL,
    event_id text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    key text,
    payload bytea NOT NULL,
    sent_at double precision NOT NULL,
    headers bytea,
    status smallint NOT NULL DEFAULT 0,
    reason text,
    origin text,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (saga_id, event_id)
);
CREATE INDEX saga_inbox_event ON saga_inbox (event_id);
CREATE INDEX saga_inbox_pending ON saga_inbox (saga_id, id) WHERE status = 0;
CREATE INDEX saga_inbox_recent ON saga_inbox (tx) WHERE status = 0;
CREATE INDEX saga_inbox_dead ON saga_inbox (id) WHERE status = 2;
"""


def test_the_statuses_are_those_of_status() -> None:
    # SUSPENDED is neither open nor terminal: it waits for an operator, with no actor.
    open_statuses = tuple(s.value for s in Status if not s.terminal and s is not Status.SUSPENDED)
    assert open_statuses == OPEN_STATUSES
    assert Status.SUSPENDED.value == SUSPENDED
    assert SUSPENDED not in OPEN_STATUSES
    assert tuple(s.value for s in ACTIVE_STATUSES) == OPEN_STATUSES
    assert {s.value for s in Status if s.terminal} == TERMINAL_STATUSES
    assert not set(OPEN_STATUSES) & TERMINAL_STATUSES
    assert (Status.WAITING.value, Status.FAILED.value) == (WAITING, FAILED)


def test_the_sql_built_from_the_vocabulary() -> None:
    assert OPEN_SQL == "('RUNNING', 'WAITING', 'COMPENSATING')"
    assert CLOSED_STATE_SQL == "CASE kind WHEN 'event' THEN 2 ELSE 1 END"
    assert [int(s) for s in InboxState] == [0, 1, 2]  # stored: never renumber
    assert f"{InboxState.PENDING:d}" == "0"


def test_the_schemas_are_byte_for_byte_what_existing_stores_hold() -> None:
    assert SQLITE_SCHEMA == SQLITE_SCHEMA_V3
    assert PG_SCHEMA == POSTGRES_SCHEMA_V2


@pytest.mark.parametrize("store", [SQLiteStore, PostgresStore])
def test_every_store_checks_its_options_alike(store: Any) -> None:
    target = None if store is SQLiteStore else "postgresql://localhost/x"
    with pytest.raises(ValueError, match=r"^durability must be 'full' or 'normal', got 'x'$"):
        store(target, durability="x")
    message = r"^access must be one of \('owner', 'client', 'read'\), got 'admin'$"
    with pytest.raises(ValueError, match=message):
        store(target, access="admin")
    assert ACCESS_MODES == ("owner", "client", "read")


def test_rows_are_read_by_column_name() -> None:
    fields = SagaRow.__struct_fields__
    values: dict[str, Any] = {f: f"<{f}>" for f in reversed(fields)}
    values["owner"] = 7  # a column the row does not have is left alone
    assert saga_row(values) == SagaRow(**{f: f"<{f}>" for f in fields})

    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    columns = ", ".join(f"'<{f}>' AS {f}" for f in reversed(InboxItem.__struct_fields__))
    row = conn.execute(f"SELECT 1 AS extra, {columns}").fetchone()
    conn.close()
    expected = InboxItem(**{f: f"<{f}>" for f in InboxItem.__struct_fields__})
    assert inbox_item(row) == expected


@pytest.mark.parametrize(
    ("store", "hosts"),
    [
        (lambda: SQLiteStore("unused.db"), [SQLiteReadsHost, BatchedWritesHost]),
        (lambda: PostgresStore("postgresql://localhost/x"), [PostgresReadsHost, BatchedWritesHost]),
    ],
)
def test_every_store_provides_what_its_mixins_need(store: Any, hosts: list[type]) -> None:
    """mypy checks this where a store is built; this is the same at run time."""
    built = store()
    for host in hosts:
        assert host in type(built).__mro__
        for name in host.__annotations__:
            assert hasattr(built, name), f"{type(built).__name__} lacks {name}"
