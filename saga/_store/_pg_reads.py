"""The PostgreSQL store's reads, each one statement on a pooled connection.

Reads that belong to one worker (recovery, timers, the inbox it must act on) see only the
sagas this store instance owns (``owner = fence``); the rest see the whole store.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import asyncpg

from saga._errors import StoreError
from saga._store._base import (
    DEAD_LETTER_COLUMNS,
    INBOX_COLUMNS,
    ROW_COLUMNS,
    DeadLetterRow,
    InboxItem,
    SagaRow,
    StoreStats,
    dead_letter,
    inbox_item,
    saga_row,
)
from saga._store._vocabulary import (
    OPEN_SQL,
    RUNTIME_REQUESTS,
    SUSPENDED,
    WAITING,
    InboxKind,
    InboxState,
    sql_list,
    sql_text,
)

__all__ = ["PostgresReads", "PostgresReadsHost"]

_INBOX_COLUMNS_I = ", ".join("i." + c.strip() for c in INBOX_COLUMNS.split(","))


class PostgresReadsHost(Protocol):
    """What `PostgresReads` needs of the store it is mixed into. The store sets each in its
    ``__init__``; mypy reports a store class that leaves one out where it is instantiated."""

    origin: str  # stamps this instance's inbox entries: `foreign_inbox` skips them
    fence: int | None  # this worker's fence: the reads of one worker see its own sagas
    _pool: asyncpg.Pool | None  # the connection pool while open, else None


class PostgresReads(PostgresReadsHost):
    """Every read of `PostgresStore` (see `PostgresReadsHost` for what the store provides)."""

    _row_columns: str = ROW_COLUMNS  # an older schema's reader reads missing columns as NULL
    # Inbox ids `foreign_inbox` returned whose transaction may show up again: their tx ids.
    _recent: Mapping[int, int] = types.MappingProxyType({})

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            return list(await self._pool.fetch(sql, *args))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
            raise StoreError(f"read failed: {error}") from error

    async def saga(self, saga_id: str) -> SagaRow | None:
        rows = await self._fetch(
            f"SELECT {self._row_columns} FROM sagas WHERE saga_id = $1", saga_id
        )
        return saga_row(rows[0]) if rows else None

    async def sagas(self, *, status: str | None, name: str | None, limit: int) -> list[SagaRow]:
        sql = (
            f"SELECT {self._row_columns} FROM sagas WHERE ($1::text IS NULL OR status = $1) "
            "AND ($2::text IS NULL OR name = $2) ORDER BY created_at DESC, ord DESC LIMIT $3"
        )
        return [saga_row(r) for r in await self._fetch(sql, status, name, limit)]

    async def log(self, saga_id: str) -> list[bytes]:
        rows = await self._fetch(
            "SELECT body FROM saga_log WHERE saga_id = $1 ORDER BY seq", saga_id
        )
        return [r["body"] for r in rows]

    async def active_logs(self) -> AsyncIterator[tuple[str, list[bytes]]]:
        """The logs of the open sagas this instance owns, a page of sagas at a time."""
        after = ""
        while True:
            rows = await self._fetch(
                "WITH page AS (SELECT saga_id FROM sagas WHERE owner = $1 AND saga_id > $2 "
                f"AND status IN {OPEN_SQL} ORDER BY saga_id LIMIT 500) "
                "SELECT l.saga_id, l.body FROM page JOIN saga_log l USING (saga_id) "
                "ORDER BY l.saga_id, l.seq",
                self.fence,
                after,
            )
            if not rows:
                return
            current: str = rows[0]["saga_id"]
            bodies: list[bytes] = []
            for row in rows:
                saga_id = row["saga_id"]
                if saga_id != current:
                    yield current, bodies
                    current, bodies = saga_id, []
                bodies.append(row["body"])
            yield current, bodies
            after = current

    async def inbox(self, saga_id: str) -> list[InboxItem]:
        rows = await self._fetch(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE saga_id = $1 "
            f"AND status = {InboxState.PENDING:d} ORDER BY id",
            saga_id,
        )
        return [inbox_item(r) for r in rows]

    async def pending_inbox(self, kind: str) -> list[InboxItem]:
        rows = await self._fetch(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE status = {InboxState.PENDING:d} "
            "AND kind = $1 ORDER BY id",
            kind,
        )
        return [inbox_item(r) for r in rows]

    async def inbox_mark(self) -> int:
        # Every transaction still running when this snapshot was taken, and every later one,
        # has an id at or above its xmin: whatever commits after this call is at or above it.
        rows = await self._fetch(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS mark"
        )
        return int(rows[0]["mark"])

    async def foreign_inbox(self, after: int) -> tuple[list[InboxItem], int]:
        """Entries other instances wrote for sagas this one owns (and every request a runtime
        performs: `RUNTIME_REQUESTS`, and an abort of a ``SUSPENDED`` saga).

        Inbox ids are not handed out in commit order on PostgreSQL, so the mark is a
        transaction id horizon instead; entries near it can be read twice, and the ids
        already returned are remembered until the horizon passes them.
        """
        # One statement, so the horizon and the rows come from one snapshot: with a second
        # query for the horizon, an entry committed in between would fall below it unseen.
        rows = await self._fetch(
            "SELECT h.mark, e.* FROM (SELECT "
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS mark) h "
            f"LEFT JOIN LATERAL (SELECT {_INBOX_COLUMNS_I}, i.tx::text::bigint AS tx "
            "FROM saga_inbox i JOIN sagas s USING (saga_id) "
            f"WHERE i.status = {InboxState.PENDING:d} AND i.tx >= $1::text::xid8 "
            "AND i.origin IS DISTINCT FROM $2 AND (s.owner = $3 OR $3::bigint IS NULL "
            f"OR i.kind IN {sql_list(RUNTIME_REQUESTS)} OR (i.kind = {sql_text(InboxKind.ABORT)} "
            f"AND s.status = {sql_text(SUSPENDED)}))) e ON true "
            "ORDER BY e.id",
            str(after),
            self.origin,
            self.fence,
        )
        mark = max(after, int(rows[0]["mark"]))
        rows = [r for r in rows if r["id"] is not None]  # else only the mark, no entry
        items = [inbox_item(r) for r in rows if r["id"] not in self._recent]
        recent = {r["id"]: int(r["tx"]) for r in rows}
        recent.update(self._recent)
        self._recent = {i: tx for i, tx in recent.items() if tx >= mark}
        return items, mark

    async def stats(self) -> StoreStats:
        counts = await self._fetch(
            "SELECT name, status, count(*) AS n FROM sagas GROUP BY name, status "
            "ORDER BY name, status"
        )
        oldest = await self._fetch(
            f"SELECT {self._row_columns} FROM sagas WHERE status = {sql_text(WAITING)} "
            "ORDER BY updated_at, ord LIMIT 1"
        )
        return StoreStats(
            counts=[(r["name"], r["status"], int(r["n"])) for r in counts],
            oldest_waiting=saga_row(oldest[0]) if oldest else None,
        )

    async def due(self, until: float) -> list[tuple[str, float]]:
        rows = await self._fetch(
            "SELECT saga_id, wake_at FROM sagas WHERE owner = $1 AND wake_at <= $2 "
            f"AND wake_at IS NOT NULL AND status IN {OPEN_SQL}",
            self.fence,
            until,
        )
        return [(r["saga_id"], r["wake_at"]) for r in rows]

    async def dead_letters(self, saga_id: str | None, limit: int) -> list[DeadLetterRow]:
        rows = await self._fetch(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM saga_inbox "
            f"WHERE status = {InboxState.DEAD_LETTER:d} AND ($1::text IS NULL OR saga_id = $1) "
            "ORDER BY id DESC LIMIT $2",
            saga_id,
            limit,
        )
        return [dead_letter(r) for r in rows]
