"""The PostgreSQL store's schema, versioned in ``saga_meta``, created and upgraded in place.

Every process that opens the store as its owner runs `create_or_upgrade_schema`; they may
start at the same moment, so the whole check-create-upgrade runs in one transaction under
a transaction-level advisory lock on the schema's name: one process creates, the others
wait, then find it done. Clients (the ``saga`` command line) only check it.
"""

from __future__ import annotations

import asyncpg

from saga._errors import NotASagaStore
from saga._store._meta import MARKER, schema_version
from saga._store._vocabulary import OPEN_SQL, WAITING, InboxState, sql_text

__all__ = ["SCHEMA_VERSION", "check_schema", "create_or_upgrade_schema"]

SCHEMA_VERSION = 2

# Each worker process registers in saga_workers under a fence from saga_fences, and owns
# every saga whose ``owner`` is that fence while its lease (``expires_at``, on the server's
# clock) holds. ``drained`` marks a dead worker none of whose open sagas is left to claim.
# Built from the store's vocabulary, byte for byte the DDL existing schemas were made with.
SCHEMA = f"""
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
CREATE INDEX sagas_active ON sagas (owner, saga_id) WHERE status IN {OPEN_SQL};
CREATE INDEX sagas_wake ON sagas (owner, wake_at)
    WHERE wake_at IS NOT NULL AND status IN {OPEN_SQL};
CREATE INDEX sagas_created ON sagas (created_at, ord);
CREATE INDEX sagas_waiting ON sagas (updated_at, ord) WHERE status = {sql_text(WAITING)};

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
    status smallint NOT NULL DEFAULT {InboxState.PENDING:d},
    reason text,
    origin text,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (saga_id, event_id)
);
CREATE INDEX saga_inbox_event ON saga_inbox (event_id);
CREATE INDEX saga_inbox_pending ON saga_inbox (saga_id, id) WHERE status = {InboxState.PENDING:d};
CREATE INDEX saga_inbox_recent ON saga_inbox (tx) WHERE status = {InboxState.PENDING:d};
CREATE INDEX saga_inbox_dead ON saga_inbox (id) WHERE status = {InboxState.DEAD_LETTER:d};
"""

# Statements that bring a schema from the previous version to this one.
MIGRATIONS: dict[int, list[str]] = {
    # 2: why a worker could not run a saga (shown by every reader); a saga a worker
    # cannot run is handed back (``owner`` NULL) for one that can.
    2: ["ALTER TABLE sagas ADD COLUMN parked bytea"],
}

_TABLES = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_name IN ('saga_meta', 'saga_workers', 'sagas', 'saga_log', 'saga_inbox')"
)


async def check_schema(conn: asyncpg.Connection, where: str) -> int:
    """The schema version of the saga store at ``where``; raises if there is none.

    Raises:
        NotASagaStore: no saga store there, or tables of another application.
        StoreError: a schema newer than this version of saga understands.
    """
    tables = {r["table_name"] for r in await conn.fetch(_TABLES)}
    if "saga_meta" not in tables:
        raise NotASagaStore(f"{where} is not a saga store (no saga_meta table)")
    return schema_version(await _meta(conn, where), where, SCHEMA_VERSION)


async def create_or_upgrade_schema(conn: asyncpg.Connection, schema: str, where: str) -> None:
    """Create the schema if absent, upgrade an older one, touch nothing else.

    Raises:
        NotASagaStore: tables named like ours that belong to another application.
        StoreError: a schema newer than this version of saga understands.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "saga-schema:" + schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        tables = {r["table_name"] for r in await conn.fetch(_TABLES)}
        if not tables:
            await conn.execute(SCHEMA)
            await conn.executemany(
                "INSERT INTO saga_meta (key, value) VALUES ($1, $2)",
                [("format", MARKER), ("schema_version", str(SCHEMA_VERSION))],
            )
            return
        if "saga_meta" not in tables:
            raise NotASagaStore(f"{where} holds tables named like saga's but is not a saga store")
        version = schema_version(await _meta(conn, where), where, SCHEMA_VERSION)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                await conn.execute(statement)
        if version < SCHEMA_VERSION:
            await conn.execute(
                "UPDATE saga_meta SET value = $1 WHERE key = 'schema_version'", str(SCHEMA_VERSION)
            )


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


async def _meta(conn: asyncpg.Connection, where: str) -> dict[str, str]:
    try:
        return {r["key"]: r["value"] for r in await conn.fetch("SELECT key, value FROM saga_meta")}
    except asyncpg.UndefinedColumnError as error:  # another application's saga_meta
        raise NotASagaStore(f"{where} is not a saga store: {error}") from None
