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

from saga._errors import NotASagaStore, StoreError
from saga._store._base import (
    Store,
)
from saga._store._plan import BatchedWrites
from saga._store._sqlite_batch import apply_batch
from saga._store._sqlite_reads import SQLiteReads
from saga._store._sqlite_schema import check_schema, create_or_upgrade_schema
from saga._store._thread import ConnectionThread
from saga._store._writer import GroupCommitWriter, Op

__all__ = ["ACCESS_MODES", "SQLiteStore"]

ACCESS_MODES = ("owner", "client", "read")


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
        access: str = "owner",
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        if access not in ACCESS_MODES:
            raise ValueError(f"access must be one of {ACCESS_MODES}, got {access!r}")
        if path is None and access != "owner":
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
        self._writer: GroupCommitWriter | None = None
        self._writing: contextlib.AsyncExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(
                f"cannot open store {self.path!r}: directory {directory!r} does not exist"
            )
        if self.access != "owner":
            await self._open_shared()
            return
        lock_existed = os.path.exists(self.path + ".lock")
        self._lock()
        try:
            self._wconn = await self._connect()
            await create_or_upgrade_schema(self._wconn, self.path)
            await self._wconn.close()  # writes go through the writer's own thread from now on
            self._wconn = None
            self._rconn = await self._connect()
            await self._rconn.execute_fetchall("PRAGMA query_only = ON")
        except BaseException:
            if not lock_existed:  # leave no trace beside a file that is not ours
                with contextlib.suppress(OSError):
                    os.unlink(self.path + ".lock")
            await self._disconnect()
            raise
        await self._start_writer(None)

    async def _open_shared(self) -> None:
        """Open without the lock, for a process other than the owning runtime."""
        if not os.path.isfile(self.path):
            raise StoreError(f"no saga store at {self.path!r}: the file does not exist")
        try:
            self._rconn = await self._connect("ro")
            version = await check_schema(self._rconn, self.path)
            if self.access == "client" and version < 2:
                raise StoreError(
                    f"{self.path!r} was written by an older saga (schema {version}); "
                    "open it once with a Runtime of this version to upgrade it"
                )
        except BaseException:
            await self._disconnect()
            raise
        if self.access == "client":
            await self._start_writer("rw")

    def _connect_writer(self, mode: str | None) -> sqlite3.Connection:
        """The writer's connection, made on (and only ever used from) the writer's thread."""
        if mode is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
        else:
            quoted = urllib.parse.quote(os.path.abspath(self.path))
            conn = sqlite3.connect(f"file:{quoted}?mode={mode}", isolation_level=None, uri=True)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    async def _start_writer(self, mode: str | None) -> None:
        thread = ConnectionThread(
            lambda: self._connect_writer(mode), name=f"saga-writer:{self.path}"
        )
        try:
            await thread.start()
        except sqlite3.Error as error:
            await thread.close()
            await self._disconnect()
            raise StoreError(f"cannot open store {self.path!r} for writing: {error}") from error
        self._wthread = thread
        await self._start_writing()

    async def close(self) -> None:
        try:
            await self._stop_writing()
        finally:
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

    async def _connect(self, mode: str | None = None) -> aiosqlite.Connection:
        """A connection; ``mode`` ``"ro"`` / ``"rw"`` opens an existing file only."""
        try:
            if mode is None:
                conn = await aiosqlite.connect(self.path, isolation_level=None)
            else:
                quoted = urllib.parse.quote(os.path.abspath(self.path))
                uri = f"file:{quoted}?mode={mode}"
                conn = await aiosqlite.connect(uri, isolation_level=None, uri=True)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open store {self.path!r}: {error}") from error
        try:
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute_fetchall(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as error:
            await conn.close()
            raise NotASagaStore(f"{self.path!r} is not a saga store: {error}") from error
        return conn

    async def _disconnect(self) -> None:
        for conn in (self._rconn, self._wconn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._rconn = self._wconn = None
        if self._wthread is not None:
            with contextlib.suppress(Exception):
                await self._wthread.close()
            self._wthread = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def _rollback(self) -> None:
        pass  # apply_batch rolls back on its own thread before it raises

    async def _commit(self, batch: Sequence[Op[Any]]) -> None:
        if self._wthread is None:
            raise StoreError("the store is not open for writing")
        for op, result in await self._wthread.call(apply_batch, batch, self.origin):
            op.settle(result)
