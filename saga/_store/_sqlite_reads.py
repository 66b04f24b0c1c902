"""The SQLite store's reads: one read-only aiosqlite connection, one call per query."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiosqlite

from saga._errors import StoreError
from saga._store._base import (
    INBOX_COLUMNS,
    ROW_COLUMNS,
    DeadLetterRow,
    InboxItem,
    SagaRow,
    StoreStats,
    inbox_item,
    saga_row,
)

__all__ = ["SQLiteReads"]


class SQLiteReads:
    """Every read of `SQLiteStore`; it sets ``_rconn`` and ``origin`` when it opens."""

    _rconn: aiosqlite.Connection | None
    origin: str

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._rconn is None:
            raise StoreError("the store is not open")
        return self._rconn

    # -- reads --------------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # One call, so the statement is stepped to its end and reset in one go: a cursor
        # left open across awaits would pin the connection's read snapshot while other
        # reads interleave, and later reads would miss newer commits.
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as error:
            raise StoreError(f"read failed: {error}") from error

    async def saga(self, saga_id: str) -> SagaRow | None:
        rows = await self._fetchall(
            f"SELECT {ROW_COLUMNS} FROM sagas WHERE saga_id = ?", (saga_id,)
        )
        return saga_row(rows[0]) if rows else None

    async def sagas(self, *, status: str | None, name: str | None, limit: int) -> list[SagaRow]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ORDER BY created_at DESC, rowid DESC"
        sql = f"SELECT {ROW_COLUMNS} FROM sagas {clause} {order} LIMIT ?"
        return [saga_row(r) for r in await self._fetchall(sql, (*params, limit))]

    async def log(self, saga_id: str) -> list[bytes]:
        rows = await self._fetchall(
            "SELECT body FROM saga_log WHERE saga_id = ? ORDER BY seq", (saga_id,)
        )
        return [r[0] for r in rows]

    async def active_logs(self) -> AsyncIterator[tuple[str, list[bytes]]]:
        sql = (
            "SELECT l.saga_id, l.body FROM sagas s JOIN saga_log l ON l.saga_id = s.saga_id "
            "WHERE s.status IN ('RUNNING', 'WAITING', 'COMPENSATING') ORDER BY l.saga_id, l.seq"
        )
        current: str | None = None
        bodies: list[bytes] = []
        try:
            async with self._r.execute(sql) as cur:
                while rows := await cur.fetchmany(2000):
                    for saga_id, body in rows:
                        if saga_id != current:
                            if current is not None:
                                yield current, bodies
                            current, bodies = saga_id, []
                        bodies.append(body)
        except sqlite3.Error as error:
            raise StoreError(f"read failed: {error}") from error
        if current is not None:
            yield current, bodies

    async def inbox(self, saga_id: str) -> list[InboxItem]:
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE saga_id = ? AND status = 0 ORDER BY id",
            (saga_id,),
        )
        return [inbox_item(r) for r in rows]

    async def pending_inbox(self, kind: str) -> list[InboxItem]:
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE status = 0 AND kind = ? ORDER BY id",
            (kind,),
        )
        return [inbox_item(r) for r in rows]

    async def inbox_mark(self) -> int:
        # AUTOINCREMENT ids never go back, and SQLite has one writer at a time, so ids are
        # handed out in commit order: nothing can later commit below this mark.
        rows = await self._fetchall("SELECT max(id) FROM saga_inbox")
        return int(rows[0][0] or 0)

    async def foreign_inbox(self, after: int) -> tuple[list[InboxItem], int]:
        mark = max(after, await self.inbox_mark())
        if mark == after:
            return [], mark
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE id > ? AND id <= ? AND status = 0 "
            "AND origin IS NOT ? ORDER BY id",
            (after, mark, self.origin),
        )
        return [inbox_item(r) for r in rows], mark

    async def stats(self) -> StoreStats:
        counts = await self._fetchall(
            "SELECT name, status, count(*) FROM sagas GROUP BY name, status ORDER BY name, status"
        )
        oldest = await self._fetchall(
            f"SELECT {ROW_COLUMNS} FROM sagas WHERE status = 'WAITING' "
            "ORDER BY updated_at, rowid LIMIT 1"
        )
        return StoreStats(
            counts=[(name, status, int(n)) for name, status, n in counts],
            oldest_waiting=saga_row(oldest[0]) if oldest else None,
        )

    async def due(self, until: float) -> list[tuple[str, float]]:
        rows = await self._fetchall(
            "SELECT saga_id, wake_at FROM sagas WHERE wake_at IS NOT NULL AND wake_at <= ? "
            "AND status IN ('RUNNING', 'WAITING', 'COMPENSATING')",
            (until,),
        )
        return [(r[0], r[1]) for r in rows]

    async def dead_letters(self, saga_id: str | None, limit: int) -> list[DeadLetterRow]:
        where = "status = 2" + (" AND saga_id = ?" if saga_id is not None else "")
        params: tuple[Any, ...] = (saga_id, limit) if saga_id is not None else (limit,)
        rows = await self._fetchall(
            "SELECT saga_id, event_id, name, key, payload, sent_at, reason FROM saga_inbox "
            f"WHERE {where} ORDER BY id DESC LIMIT ?",
            params,
        )
        return [DeadLetterRow(*r) for r in rows]
