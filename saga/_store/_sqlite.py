"""The embedded default store: one SQLite file, WAL mode, one writer with group commit.

Writes go through `GroupCommitWriter` on a dedicated connection (``BEGIN IMMEDIATE``);
reads go through a second, read-only connection, so they never wait behind a commit.
An exclusive lock file keeps a second runtime off the same file.

Other processes (the ``saga`` command line) open the file without the lock, as a
``"read"`` store (a read-only connection: they cannot block or change the service) or a
``"client"`` store that may only `send` requests, each in one short transaction that the
owning runtime then picks up (`foreign_inbox`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import aiosqlite
import anyio

from saga._errors import CorruptLog, StoreError
from saga._store._base import ROW_COLUMNS_UNPARKED, Store
from saga._store._plan import BatchedWrites
from saga._store._sqlite_batch import apply_batch
from saga._store._sqlite_reads import TEXT_FACTORY, SQLiteReads
from saga._store._sqlite_schema import (
    SCHEMA_VERSION,
    check_schema,
    create_or_upgrade_schema,
    is_damage,
    open_error,
)
from saga._store._thread import ConnectionThread
from saga._store._vocabulary import Access, check_options
from saga._store._writer import Op

__all__ = ["SQLiteStore"]

_LOCK_TRIES = 10  # lock files replaced under us in a row before giving up (see `_lock`)


class SQLiteStore(SQLiteReads, BatchedWrites, Store):
    """A saga store in one SQLite file.

    Args:
        path: the database file, or ``None`` for a private temporary file removed at close
            (what ``sqlite:///:memory:`` gives).
        durability: ``"full"`` (``synchronous=FULL``, the default: a commit survives power
            loss) or ``"normal"`` (``synchronous=NORMAL``: survives a process crash, not
            always a power loss).
        busy_timeout: seconds a connection waits for a lock held by another connection.
        max_batch: most operations committed in one transaction.
        access: ``"owner"`` (the default: the runtime's store; takes the lock, creates or
            upgrades the schema), ``"client"`` (no lock; the file must be a saga store;
            only `send` writes, for requests to the owner) or ``"read"`` (no lock, a
            read-only connection, no writes at all).
    """

    def __init__(
        self,
        path: str | None,
        *,
        durability: str = "full",
        busy_timeout: float = 5.0,
        max_batch: int = 1000,
        access: str = Access.OWNER,
    ) -> None:
        check_options(durability=durability, access=access)
        if path is None and access != Access.OWNER:
            raise ValueError(
                "sqlite:///:memory: is private to the process that opened it; "
                "name a store file instead"
            )
        self.access = access
        self.origin = uuid.uuid4().hex  # stamps this instance's inbox entries
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
        self._wconn: aiosqlite.Connection | None = None  # only while creating the schema
        self._wthread: ConnectionThread | None = None
        self._rconn: aiosqlite.Connection | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(
                f"cannot open store {self.path!r}: directory {directory!r} does not exist"
            )
        try:
            if self.access == Access.OWNER:
                await self._open_owner()
            else:
                await self._open_shared()
        except BaseException as error:
            # Whatever failed, nothing stays open: a connection thread left running keeps
            # the process from exiting, a lock left held keeps the next runtime out.
            await self._disconnect()
            typed = open_error(self.path, error)  # a damaged file is no raw error either
            if typed is error:
                raise
            raise typed from error

    async def _open_owner(self) -> None:
        """Take the lock, create or upgrade the schema, connect the reader and the writer."""
        self._lock()
        self._wconn = await self._connect()
        await create_or_upgrade_schema(self._wconn, self.path)
        await self._wconn.close()  # writes go through the writer's own thread from now on
        self._wconn = None
        self._rconn = await self._connect()
        await self._rconn.execute_fetchall("PRAGMA query_only = ON")
        await self._start_writer(None)

    async def _open_shared(self) -> None:
        """Open without the lock, for a process other than the owning runtime."""
        if not os.path.isfile(self.path):
            raise StoreError(f"no saga store at {self.path!r}: the file does not exist")
        try:
            self._rconn = await self._connect("ro")
            version = await check_schema(self._rconn, self.path)
            if version < 3:  # written before sagas had a `parked` column: read it as NULL
                self._row_columns = ROW_COLUMNS_UNPARKED
            if self.access == Access.CLIENT and version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path!r} was written by an older saga (schema {version}); "
                    "open it once with a Runtime of this version to upgrade it"
                )
        except BaseException:
            await self._disconnect()
            raise
        if self.access == Access.CLIENT:
            await self._start_writer("rw")

    def _connect_writer(self, mode: str | None) -> sqlite3.Connection:
        """The writer's connection, made on (and only ever used from) the writer's thread."""
        if mode is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
        else:
            quoted = urllib.parse.quote(os.path.abspath(self.path))
            conn = sqlite3.connect(f"file:{quoted}?mode={mode}", isolation_level=None, uri=True)
        conn.row_factory = sqlite3.Row  # rows are read by column name
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _start_writer(self, mode: str | None) -> None:
        # Kept from the start, so that `_disconnect` ends the thread whatever fails next.
        self._wthread = ConnectionThread(
            lambda: self._connect_writer(mode), name=f"saga-writer:{self.path}"
        )
        await self._wthread.start()
        await self._start_writing()

    async def close(self) -> None:
        try:
            await self._stop_writing()
        finally:
            await self._disconnect()

    def _lock(self) -> None:
        """Take the lock file ``<path>.lock`` (``flock``), or `StoreError` if it is taken.

        Its holder removes the file when it lets go (`_unlock`). So a process that opened
        the file just before may then lock a file no longer at the path, while a third one
        creates a new file there and locks that: two owners. A lock counts only on the
        file still at the path; else this tries again, on the new file.
        """
        lock_path = self.path + ".lock"
        for _ in range(_LOCK_TRIES):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise StoreError(f"cannot create lock file {lock_path!r}: {error}") from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = _same_file(os.fstat(fd), lock_path)
            except BlockingIOError:
                os.close(fd)
                raise StoreError(
                    f"store {self.path!r} is in use by another runtime; a SQLite store has "
                    "one runtime at a time (use PostgreSQL for many workers)"
                ) from None
            except OSError as error:
                os.close(fd)
                raise StoreError(f"cannot lock {lock_path!r}: {error}") from error
            if locked:
                self._lock_fd = fd
                return
            os.close(fd)  # its holder removed it meanwhile
        raise StoreError(f"cannot lock {lock_path!r}: it was replaced {_LOCK_TRIES} times")

    def _unlock(self) -> None:
        """Remove the lock file, while still holding it, and let go of it."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            lock_path = self.path + ".lock"
            if _same_file(os.fstat(fd), lock_path):  # not someone else's, if it was deleted
                os.unlink(lock_path)
        except OSError:
            pass  # it stays behind: harmless, the next runtime locks it all the same
        finally:
            os.close(fd)

    async def _connect(self, mode: str | None = None) -> aiosqlite.Connection:
        """A connection; ``mode`` ``"ro"`` / ``"rw"`` opens an existing file only."""
        if mode is None:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        else:
            quoted = urllib.parse.quote(os.path.abspath(self.path))
            uri = f"file:{quoted}?mode={mode}"
            conn = await aiosqlite.connect(uri, isolation_level=None, uri=True)
        conn.text_factory = TEXT_FACTORY  # text that is not UTF-8 must not fail mid-row
        conn.row_factory = sqlite3.Row  # rows are read by column name
        try:
            # The first statements read the file's header and schema: a damaged file fails
            # here, with any error (a garbled schema can even fail to decode as UTF-8).
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute_fetchall(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await conn.close()  # else its (non-daemon) thread keeps the process alive
            raise
        return conn

    async def _disconnect(self) -> None:
        """Close whatever is open: connections, the writer's thread, the lock and its file.

        Shielded from cancellation: a connection's thread left running would keep the
        process from exiting.
        """
        with anyio.CancelScope(shield=True):
            for conn in (self._rconn, self._wconn):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._rconn = self._wconn = None
            if self._wthread is not None:
                with contextlib.suppress(Exception):
                    await self._wthread.close()
                self._wthread = None
        self._unlock()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def _rollback(self) -> None:
        pass  # apply_batch rolls back on its own thread before it raises

    async def _commit(self, batch: Sequence[Op[Any]]) -> None:
        if self._wthread is None:
            raise StoreError("the store is not open for writing")
        try:
            results = await self._wthread.call(apply_batch, batch, self.origin)
        except sqlite3.DatabaseError as error:
            if is_damage(error):  # retrying cannot help: the saga is parked, others go on
                raise CorruptLog(f"store {self.path!r} is damaged: {error}") from error
            raise
        for op, result in results:
            op.settle(result)


def _same_file(held: os.stat_result, path: str) -> bool:
    """Whether ``path`` is still the file ``held`` describes (an open descriptor's)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)
