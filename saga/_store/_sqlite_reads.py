"""The SQLite store's reads: one read-only aiosqlite connection, one call per query.

A damaged file must never surface as a raw error: a page SQLite finds malformed, text that
is not UTF-8, or a value of the wrong type (SQLite keeps whatever was written) is a
`CorruptLog` naming what cannot be read; any other failure is a `StoreError`.

Text is read with `TEXT_FACTORY`, which never fails: sqlite3's own decoding raises in the
middle of a row, leaving the statement unfinished, and with it the connection's read
snapshot pinned (every later read would miss newer commits). Bytes that are not UTF-8
come back as surrogate escapes instead, and the rows are checked here.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import typing
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import aiosqlite
import msgspec

from saga._errors import CorruptLog, StoreError
from saga._store._base import (
    DEAD_LETTER_COLUMNS,
    INBOX_COLUMNS,
    ROW_COLUMNS,
    DeadLetterRow,
    InboxItem,
    SagaRow,
    StoreStats,
    dead_letter_values,
    inbox_item_values,
    saga_row_values,
)
from saga._store._sqlite_schema import is_damage
from saga._store._vocabulary import OPEN_SQL, WAITING, InboxState, sql_text

__all__ = ["TEXT_FACTORY", "SQLiteReads", "SQLiteReadsHost"]

logger = logging.getLogger("saga.store")

# TEXT as str, bytes that are not UTF-8 as surrogate escapes (see `_bad_text`); in C.
TEXT_FACTORY = functools.partial(str, encoding="utf-8", errors="surrogateescape")


def _bad_text(value: object) -> bool:
    """Whether ``value`` is text read from bytes that are not UTF-8."""
    if not isinstance(value, str) or value.isascii():
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _read_error(what: str, error: Exception) -> StoreError | CorruptLog:
    """The typed error for a read of ``what`` that failed with ``error``."""
    if is_damage(error):
        return CorruptLog(f"{what} cannot be read: the store file is damaged ({error})")
    if isinstance(error, sqlite3.Error):
        return StoreError(f"read failed: {what}: {error}")
    return StoreError(f"read failed: {what}: the store is not open ({error})")


def _column_types(row: type[msgspec.Struct]) -> tuple[tuple[type, ...], ...]:
    """For each field of a row struct, the Python types a value read for it may have."""
    found = []
    for field in msgspec.structs.fields(row):
        allowed = typing.get_args(field.type) or (field.type,)
        if float in allowed:
            allowed = (*allowed, int)
        found.append(tuple(allowed))
    return tuple(found)


_SAGA_ROW = _column_types(SagaRow)
_INBOX_ITEM = _column_types(InboxItem)
_DEAD_LETTER = _column_types(DeadLetterRow)


def _mistyped(values: Sequence[Any], row: type[msgspec.Struct],
              types: tuple[tuple[type, ...], ...]) -> str | None:  # fmt: skip
    """Which of ``values`` (``row``'s fields, in order) has a type ``row`` does not allow."""
    if all(map(isinstance, values, types)) and not any(map(_bad_text, values)):
        return None
    for name, value, allowed in zip(row.__struct_fields__, values, types, strict=True):
        if not isinstance(value, allowed):
            return f"column {name} holds {type(value).__name__}"
        if _bad_text(value):
            return f"column {name} holds text that is not UTF-8"
    return None  # pragma: no cover - the checks above found one


def _saga_row(row: sqlite3.Row) -> SagaRow:
    values = saga_row_values(row)
    problem = _mistyped(values, SagaRow, _SAGA_ROW)
    if problem is not None:
        raise CorruptLog(
            f"saga {row['saga_id']!r}: its index row cannot be read ({problem}); "
            "its log is kept apart and can still be read with history()"
        )
    return SagaRow(*values)


def _inbox_item(row: sqlite3.Row) -> InboxItem:
    values = inbox_item_values(row)
    problem = _mistyped(values, InboxItem, _INBOX_ITEM)
    if problem is not None:
        raise CorruptLog(f"saga {row['saga_id']!r}: inbox entry {row['id']!r} cannot be read "
                         f"({problem})")  # fmt: skip
    return InboxItem(*values)


def _readable_items(rows: Sequence[sqlite3.Row]) -> list[InboxItem]:
    """The entries of several sagas' inboxes, but those that cannot be read.

    One unreadable entry must not keep a runtime from every other saga's mail: it is
    left out here (and logged), and stays in the store, where reading its saga's own inbox
    (`SQLiteReads.inbox`, when the saga next runs) is a `CorruptLog` that parks the saga.
    """
    items = []
    for row in rows:
        try:
            items.append(_inbox_item(row))
        except CorruptLog as error:
            logger.warning("%s; left out for now", error)
    return items


def _dead_letter(row: sqlite3.Row) -> DeadLetterRow:
    values = dead_letter_values(row)
    problem = _mistyped(values, DeadLetterRow, _DEAD_LETTER)
    if problem is not None:
        raise CorruptLog(f"saga {row['saga_id']!r}: dead letter {row['event_id']!r} cannot be "
                         f"read ({problem})")  # fmt: skip
    return DeadLetterRow(*values)


class SQLiteReadsHost(Protocol):
    """What `SQLiteReads` needs of the store it is mixed into. The store sets each in its
    ``__init__``; mypy reports a store class that leaves one out where it is instantiated."""

    origin: str  # stamps this instance's inbox entries: `foreign_inbox` skips them
    # The read connection while open (query-only; its rows are `sqlite3.Row`s), else None.
    _rconn: aiosqlite.Connection | None


class SQLiteReads(SQLiteReadsHost):
    """Every read of `SQLiteStore` (see `SQLiteReadsHost` for what the store provides)."""

    _row_columns: str = ROW_COLUMNS  # an older file's reader reads missing columns as NULL

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._rconn is None:
            raise StoreError("the store is not open")
        return self._rconn

    # -- reads --------------------------------------------------------------------------------

    async def _fetchall(
        self, sql: str, params: Sequence[Any] = (), *, what: str = "the store"
    ) -> list[sqlite3.Row]:
        """The rows of one query, read by column name; ``what`` names what it reads.

        Raises:
            CorruptLog: the file is damaged where the query reads.
            StoreError: any other failure (I/O, a lock, the store is closed).
        """
        # One call, so the statement is stepped to its end and reset in one go: a cursor
        # left open across awaits would pin the connection's read snapshot while other
        # reads interleave, and later reads would miss newer commits.
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except (sqlite3.Error, ValueError) as error:  # ValueError: aiosqlite, once closed
            raise _read_error(what, error) from error

    async def saga(self, saga_id: str) -> SagaRow | None:
        rows = await self._fetchall(
            f"SELECT {self._row_columns} FROM sagas WHERE saga_id = ?",
            (saga_id,),
            what=f"the index row of saga {saga_id!r}",
        )
        return _saga_row(rows[0]) if rows else None

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
        sql = f"SELECT {self._row_columns} FROM sagas {clause} {order} LIMIT ?"
        rows = await self._fetchall(sql, (*params, limit), what="the saga index (table sagas)")
        return [_saga_row(r) for r in rows]

    async def log(self, saga_id: str) -> list[bytes]:
        rows = await self._fetchall(
            "SELECT body FROM saga_log WHERE saga_id = ? ORDER BY seq",
            (saga_id,),
            what=f"the log of saga {saga_id!r}",
        )
        return [r["body"] for r in rows]

    async def active_logs(self) -> AsyncIterator[tuple[str, list[bytes]]]:
        sql = (
            "SELECT l.saga_id, l.body FROM sagas s JOIN saga_log l ON l.saga_id = s.saga_id "
            f"WHERE s.status IN {OPEN_SQL} ORDER BY l.saga_id, l.seq"
        )
        current: str | None = None
        bodies: list[bytes] = []
        try:
            async with self._r.execute(sql) as cur:
                while rows := await cur.fetchmany(2000):
                    for row in rows:
                        saga_id = row["saga_id"]
                        if saga_id != current:
                            if current is not None:
                                yield current, bodies
                            current, bodies = saga_id, []
                        bodies.append(row["body"])
        except (sqlite3.Error, ValueError) as error:
            where = "the logs of open sagas (tables sagas, saga_log)"
            if current is not None:
                where += f", at saga {current!r}"
            raise _read_error(where, error) from error
        if current is not None:
            yield current, bodies

    async def inbox(self, saga_id: str) -> list[InboxItem]:
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE saga_id = ? "
            f"AND status = {InboxState.PENDING:d} ORDER BY id",
            (saga_id,),
            what=f"the inbox of saga {saga_id!r}",
        )
        return [_inbox_item(r) for r in rows]

    async def pending_inbox(self, kind: str) -> list[InboxItem]:
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE status = {InboxState.PENDING:d} "
            "AND kind = ? ORDER BY id",
            (kind,),
            what=f"the pending {kind} entries of the inbox (table saga_inbox)",
        )
        return _readable_items(rows)

    async def inbox_mark(self) -> int:
        # AUTOINCREMENT ids never go back, and SQLite has one writer at a time, so ids are
        # handed out in commit order: nothing can later commit below this mark.
        rows = await self._fetchall("SELECT max(id) AS mark FROM saga_inbox", what="the inbox")
        return int(rows[0]["mark"] or 0)

    async def foreign_inbox(self, after: int) -> tuple[list[InboxItem], int]:
        mark = max(after, await self.inbox_mark())
        if mark == after:
            return [], mark
        rows = await self._fetchall(
            f"SELECT {INBOX_COLUMNS} FROM saga_inbox WHERE id > ? AND id <= ? "
            f"AND status = {InboxState.PENDING:d} "
            "AND origin IS NOT ? ORDER BY id",
            (after, mark, self.origin),
            what="the inbox (table saga_inbox)",
        )
        return _readable_items(rows), mark

    async def stats(self) -> StoreStats:
        counts = await self._fetchall(
            "SELECT name, status, count(*) AS n FROM sagas GROUP BY name, status "
            "ORDER BY name, status",
            what="the saga index (table sagas)",
        )
        for row in counts:
            name, status = row["name"], row["status"]
            if not (isinstance(name, str) and isinstance(status, str)) or (
                _bad_text(name) or _bad_text(status)
            ):
                raise CorruptLog(f"the saga index (table sagas) holds a name {name!r} or a "
                                 f"status {status!r} that is not text")  # fmt: skip
        oldest = await self._fetchall(
            f"SELECT {self._row_columns} FROM sagas WHERE status = {sql_text(WAITING)} "
            "ORDER BY updated_at, rowid LIMIT 1",
            what="the saga index (table sagas)",
        )
        return StoreStats(
            counts=[(r["name"], r["status"], int(r["n"])) for r in counts],
            oldest_waiting=_saga_row(oldest[0]) if oldest else None,
        )

    async def due(self, until: float) -> list[tuple[str, float]]:
        rows = await self._fetchall(
            "SELECT saga_id, wake_at FROM sagas WHERE wake_at IS NOT NULL AND wake_at <= ? "
            f"AND status IN {OPEN_SQL}",
            (until,),
            what="the deadlines of the saga index (table sagas)",
        )
        # A deadline is a cache of the saga's log: one of the wrong type is no deadline.
        due = [(r["saga_id"], r["wake_at"]) for r in rows]
        return [
            (saga_id, at)
            for saga_id, at in due
            if isinstance(saga_id, str) and not _bad_text(saga_id) and isinstance(at, int | float)
        ]

    async def dead_letters(self, saga_id: str | None, limit: int) -> list[DeadLetterRow]:
        where = f"status = {InboxState.DEAD_LETTER:d}"
        where += " AND saga_id = ?" if saga_id is not None else ""
        params: tuple[Any, ...] = (saga_id, limit) if saga_id is not None else (limit,)
        rows = await self._fetchall(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM saga_inbox WHERE {where} ORDER BY id DESC LIMIT ?",
            params,
            what="the dead letters" + ("" if saga_id is None else f" of saga {saga_id!r}"),
        )
        return [_dead_letter(r) for r in rows]
