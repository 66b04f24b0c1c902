"""The embedded default store: one SQLite file, WAL mode, one writer with group commit.

Writes go through `GroupCommitWriter` on a dedicated connection (``BEGIN IMMEDIATE``);
reads go through a second, read-only connection, so they never wait behind a commit.
An exclusive lock file keeps a second runtime off the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import aiosqlite
import anyio
import anyio.abc

from saga._errors import NotASagaStore, StoreError
from saga._store._base import (
    Append,
    DeadLetterRow,
    InboxItem,
    SagaRow,
    SendResult,
    Store,
)
from saga._store._sqlite_schema import MARKER, SCHEMA, SCHEMA_VERSION
from saga._store._writer import GroupCommitWriter, Op

__all__ = ["SQLiteStore"]

_TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
_ROW_COLUMNS = (
    "saga_id, name, version, status, step, created_at, updated_at, seq, wake_at, state, error"
)
_CHUNK = 500  # host parameters per IN (...) list, well under SQLite's limit


def _row(values: Sequence[Any]) -> SagaRow:
    return SagaRow(*values)


def _row_params(row: SagaRow) -> tuple[Any, ...]:
    return (
        row.saga_id,
        row.name,
        row.version,
        row.status,
        row.step,
        row.created_at,
        row.updated_at,
        row.seq,
        row.wake_at,
        row.state,
        row.error,
    )


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class _StartOp(Op[SagaRow | None]):
    __slots__ = ("first", "row")

    def __init__(self, row: SagaRow, first: bytes) -> None:
        super().__init__()
        self.row = row
        self.first = first


class _SendOp(Op[SendResult]):
    __slots__ = ("event_id", "key", "kind", "name", "payload", "saga_id", "sent_at")

    def __init__(self, saga_id: str, event_id: str, kind: str, name: str, key: str | None,
                 payload: bytes, sent_at: float) -> None:  # fmt: skip
        super().__init__()
        self.saga_id = saga_id
        self.event_id = event_id
        self.kind = kind
        self.name = name
        self.key = key
        self.payload = payload
        self.sent_at = sent_at


class _AppendOp(Op[bool]):
    __slots__ = ("append", "status")

    def __init__(self, append: Append, status: str | None) -> None:
        super().__init__()
        self.append = append
        self.status = status


class SQLiteStore(Store):
    """A saga store in one SQLite file.

    Args:
        path: the database file, or ``None`` for a private temporary file removed at close
            (what ``sqlite:///:memory:`` gives).
        durability: ``"full"`` (``synchronous=FULL``, the default: a commit survives power
            loss) or ``"normal"`` (``synchronous=NORMAL``: survives a process crash, not
            always a power loss).
        busy_timeout: seconds a connection waits for a lock held by another connection.
        max_batch: most operations committed in one transaction.
    """

    def __init__(
        self,
        path: str | None,
        *,
        durability: str = "full",
        busy_timeout: float = 5.0,
        max_batch: int = 1000,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        self._temp_dir: str | None = None
        if path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="saga-")
            path = os.path.join(self._temp_dir, "saga.db")
            synchronous = "OFF"  # nothing outlives the process anyway
        else:
            synchronous = durability.upper()
        self.path = path
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        self._max_batch = max_batch
        self._lock_fd: int | None = None
        self._wconn: aiosqlite.Connection | None = None
        self._rconn: aiosqlite.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit: contextlib.AsyncExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(
                f"cannot open store {self.path!r}: directory {directory!r} does not exist"
            )
        lock_existed = os.path.exists(self.path + ".lock")
        self._lock()
        try:
            self._wconn = await self._connect()
            await self._check_or_create_schema(self._wconn)
            self._rconn = await self._connect()
            await self._rconn.execute_fetchall("PRAGMA query_only = ON")
        except BaseException:
            if not lock_existed:  # leave no trace beside a file that is not ours
                with contextlib.suppress(OSError):
                    os.unlink(self.path + ".lock")
            await self._disconnect()
            raise
        self._writer = GroupCommitWriter(self._commit, self._rollback, max_batch=self._max_batch)
        self._exit = contextlib.AsyncExitStack()
        self._tg = await self._exit.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._writer.run)

    async def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._exit is not None:
                await self._exit.aclose()
        finally:
            self._exit = self._tg = self._writer = None
            await self._disconnect()

    def _lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreError(f"cannot create lock file {lock_path!r}: {error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"store {self.path!r} is in use by another runtime; a SQLite store has one "
                "runtime at a time (use PostgreSQL for many workers)"
            ) from None
        self._lock_fd = fd

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open store {self.path!r}: {error}") from error
        try:
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute_fetchall(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as error:
            await conn.close()
            raise NotASagaStore(f"{self.path!r} is not a saga store: {error}") from error
        return conn

    async def _check_or_create_schema(self, conn: aiosqlite.Connection) -> None:
        """Create the schema in an empty file, check it in a saga store, touch nothing else."""
        list_tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
        try:
            tables = {row[0] for row in await conn.execute_fetchall(list_tables)}
            if tables and "saga_meta" not in tables:
                raise NotASagaStore(f"{self.path!r} is a SQLite database but not a saga store")
            await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {row[0] for row in await conn.execute_fetchall(list_tables)}
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
                    meta: dict[str, str] = {k: v for k, v in rows}
                    if meta.get("format") != MARKER:
                        raise NotASagaStore(f"{self.path!r} is not a saga store")
                    version = int(meta.get("schema_version", "0"))
                    if version > SCHEMA_VERSION:
                        raise StoreError(
                            f"{self.path!r} has schema version {version}; this saga "
                            f"understands up to {SCHEMA_VERSION}: upgrade saga"
                        )
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as error:
            raise NotASagaStore(f"{self.path!r} is not a saga store: {error}") from error

    async def _disconnect(self) -> None:
        for conn in (self._rconn, self._wconn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._rconn = self._wconn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._wconn is None:
            raise StoreError("the store is not open")
        return self._wconn

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._rconn is None:
            raise StoreError("the store is not open")
        return self._rconn

    def _submit_target(self) -> GroupCommitWriter:
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    # -- writes -------------------------------------------------------------------------------

    async def start(self, row: SagaRow, first: bytes) -> SagaRow | None:
        return await self._submit_target().submit(_StartOp(row, first))

    async def send(
        self,
        saga_id: str,
        event_id: str,
        *,
        kind: str,
        name: str,
        key: str | None,
        payload: bytes,
        sent_at: float,
    ) -> SendResult:
        op = _SendOp(saga_id, event_id, kind, name, key, payload, sent_at)
        return await self._submit_target().submit(op)

    async def append(self, append: Append) -> None:
        await self._submit_target().submit(_AppendOp(append, None))

    async def append_if(self, append: Append, *, status: str) -> bool:
        return await self._submit_target().submit(_AppendOp(append, status))

    async def _rollback(self) -> None:
        if self._w.in_transaction:
            await self._w.execute("ROLLBACK")

    async def _commit(self, batch: Sequence[Op[Any]]) -> None:
        """One transaction for the whole batch: a few statements, whatever its size."""
        conn = self._w
        await conn.execute("BEGIN IMMEDIATE")
        # What the checks need, read once for the batch.
        checked = sorted(
            {op.row.saga_id for op in batch if isinstance(op, _StartOp)}
            | {op.saga_id for op in batch if isinstance(op, _SendOp)}
            | {op.append.saga_id for op in batch if isinstance(op, _AppendOp) and op.status}
        )
        known: dict[str, SagaRow] = {}
        for chunk in _chunks(checked):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_ROW_COLUMNS} FROM sagas WHERE saga_id IN ({marks})"
            async with conn.execute(sql, chunk) as cur:
                for values in await cur.fetchall():
                    known[values[0]] = _row(values)
        sends = [op for op in batch if isinstance(op, _SendOp)]
        seen_events: set[tuple[str, str]] = set()
        for chunk in _chunks(sorted({op.event_id for op in sends})):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT saga_id, event_id FROM saga_inbox WHERE event_id IN ({marks})"
            async with conn.execute(sql, chunk) as cur:
                seen_events.update((s, e) for s, e in await cur.fetchall())

        # Decide every operation in submission order; results are published after COMMIT.
        new_sagas: list[tuple[Any, ...]] = []
        log_rows: list[tuple[str, int, bytes]] = []
        inbox_rows: list[tuple[Any, ...]] = []
        index_rows: list[tuple[Any, ...]] = []
        consumed: list[tuple[str, str]] = []
        closed: list[tuple[str, str]] = []
        results: list[tuple[Op[Any], Any]] = []
        for op in batch:
            if isinstance(op, _StartOp):
                existing = known.get(op.row.saga_id)
                if existing is not None:
                    results.append((op, existing))
                    continue
                known[op.row.saga_id] = op.row
                new_sagas.append(_row_params(op.row))
                log_rows.append((op.row.saga_id, 1, op.first))
                results.append((op, None))
            elif isinstance(op, _SendOp):
                target = known.get(op.saga_id)
                if (op.saga_id, op.event_id) in seen_events:
                    result = SendResult.DUPLICATE
                elif target is None:
                    result = SendResult.UNKNOWN
                elif target.status in _TERMINAL:
                    result = SendResult.CLOSED
                else:
                    result = SendResult.STORED
                    seen_events.add((op.saga_id, op.event_id))
                    inbox_rows.append((op.saga_id, op.event_id, op.kind, op.name, op.key,
                                       op.payload, op.sent_at))  # fmt: skip
                results.append((op, result))
            else:
                assert isinstance(op, _AppendOp)
                append = op.append
                if op.status is not None:
                    target = known.get(append.saga_id)
                    if (
                        target is None
                        or target.status != op.status
                        or target.seq + 1 != append.records[0][0]
                    ):
                        results.append((op, False))
                        continue
                if append.saga_id in known:
                    known[append.saga_id] = append.row
                log_rows.extend((append.saga_id, seq, body) for seq, body in append.records)
                index_rows.append((*_row_params(append.row)[1:], append.saga_id))
                consumed.extend((append.saga_id, event_id) for event_id in append.consumed)
                if append.closed is not None:
                    closed.append((append.closed, append.saga_id))
                results.append((op, True))

        if new_sagas:
            await conn.executemany(
                f"INSERT INTO sagas ({_ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", new_sagas
            )
        if inbox_rows:
            await conn.executemany(
                "INSERT INTO saga_inbox (saga_id, event_id, kind, name, key, payload, sent_at) "
                "VALUES (?,?,?,?,?,?,?)",
                inbox_rows,
            )
        if log_rows:
            await conn.executemany(
                "INSERT INTO saga_log (saga_id, seq, body) VALUES (?,?,?)", log_rows
            )
        if index_rows:
            await conn.executemany(
                "UPDATE sagas SET name=?, version=?, status=?, step=?, created_at=?, updated_at=?, "
                "seq=?, wake_at=?, state=?, error=? WHERE saga_id=?",
                index_rows,
            )
        if consumed:
            await conn.executemany(
                "UPDATE saga_inbox SET status = 1 "
                "WHERE saga_id = ? AND event_id = ? AND status = 0",
                consumed,
            )
        if closed:
            await conn.executemany(
                "UPDATE saga_inbox SET status = CASE kind WHEN 'event' THEN 2 ELSE 1 END, "
                "reason = ? WHERE saga_id = ? AND status = 0",
                closed,
            )
        await conn.execute("COMMIT")
        for op, result in results:
            op.resolve(result)

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
            f"SELECT {_ROW_COLUMNS} FROM sagas WHERE saga_id = ?", (saga_id,)
        )
        return _row(rows[0]) if rows else None

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
        sql = f"SELECT {_ROW_COLUMNS} FROM sagas {clause} {order} LIMIT ?"
        return [_row(r) for r in await self._fetchall(sql, (*params, limit))]

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
            "SELECT id, saga_id, event_id, kind, name, key, payload, sent_at FROM saga_inbox "
            "WHERE saga_id = ? AND status = 0 ORDER BY id",
            (saga_id,),
        )
        return [InboxItem(*r) for r in rows]

    async def with_pending_inbox(self) -> set[str]:
        rows = await self._fetchall("SELECT DISTINCT saga_id FROM saga_inbox WHERE status = 0")
        return {r[0] for r in rows}

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
