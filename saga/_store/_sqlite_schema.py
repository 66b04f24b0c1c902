"""The SQLite store's schema, versioned in ``saga_meta``."""

from __future__ import annotations

__all__ = ["MARKER", "SCHEMA", "SCHEMA_VERSION"]

MARKER = "saga-store"
SCHEMA_VERSION = 1

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
    UNIQUE (saga_id, event_id)
);
CREATE INDEX saga_inbox_pending ON saga_inbox (saga_id, id) WHERE status = 0;
CREATE INDEX saga_inbox_dead ON saga_inbox (id) WHERE status = 2;
"""
