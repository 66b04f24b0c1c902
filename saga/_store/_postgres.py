"""The shared store: PostgreSQL through asyncpg, for many workers on many machines.

Every process that runs a `Runtime` on the database is a *worker*. A worker registers
under a fencing token (``fence``, from a sequence) with a lease it renews while it lives;
it owns the sagas it starts and those it claims from dead workers, and every append is
conditional, in its own transaction, on the saga still being owned by the appender's fence
and that fence's lease still holding (see `_pg_batch`). Events and requests for a saga
another worker owns are stored and announced with ``NOTIFY``; `foreign_inbox` is the
polling fallback. Deadlines are read per owner, so each fires in exactly one worker.

Access modes are those of the SQLite store: ``"owner"`` (a worker), ``"client"`` (the
command line: no lease, may only `send`) and ``"read"`` (no writes at all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.parse
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import anyio
import anyio.abc
import asyncpg
import msgspec

from saga._errors import StoreError
from saga._store._base import CLAIM_BATCH, ROW_COLUMNS_UNPARKED, Append, Store
from saga._store._pg_batch import NOTIFY_CHANNEL, apply_batch
from saga._store._pg_reads import PostgresReads
from saga._store._pg_schema import (
    SCHEMA_VERSION,
    check_schema,
    create_or_upgrade_schema,
    quote_ident,
)
from saga._store._plan import BatchedWrites
from saga._store._vocabulary import OPEN_SQL, Access, check_options
from saga._store._writer import Op

__all__ = ["PostgresStore"]

logger = logging.getLogger("saga.store")

# An owner that is no registered worker: nobody will ever renew or release it.
_STRAY = " OR NOT EXISTS (SELECT 1 FROM saga_workers w WHERE w.fence = sagas.owner)"
_CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresStore(PostgresReads, BatchedWrites, Store):
    """A saga store in a PostgreSQL database, shared by any number of workers.

    Args:
        dsn: a ``postgresql://`` URL as asyncpg takes it (``sslmode`` and other libpq
            parameters included).
        schema: the PostgreSQL schema holding saga's tables (created if absent).
        lease_seconds: how long a worker's lease lasts without renewal; a worker that
            stops renewing (dead, paused, cut off) has its sagas taken over by the others
            after this long. Renewed every third of it.
        claim_interval: seconds between two looks for sagas of dead workers to take over.
        durability: ``"full"`` (the server's default) or ``"normal"``
            (``synchronous_commit = off``: a commit survives this process crashing, not
            always the server crashing).
        max_batch: most operations committed in one transaction.
        access: ``"owner"``, ``"client"`` or ``"read"`` (see the module docstring).
        pool_size: most connections this store opens at once.
    """

    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "saga",
        lease_seconds: float = 10.0,
        claim_interval: float | None = None,
        durability: str = "full",
        max_batch: int = 1000,
        access: str = Access.OWNER,
        pool_size: int = 8,
    ) -> None:
        check_options(durability=durability, access=access)
        if not isinstance(schema, str) or not schema or len(schema) > 63 or "\x00" in schema:
            raise ValueError(f"schema must be a PostgreSQL identifier, got {schema!r}")
        if not 0.5 <= lease_seconds <= 3600:
            raise ValueError(f"lease_seconds must be in [0.5, 3600], got {lease_seconds!r}")
        if pool_size < 2:
            raise ValueError(f"pool_size must be at least 2, got {pool_size!r}")
        self._dsn = dsn
        self.schema = schema
        self.lease_seconds = float(lease_seconds)
        self.renew_interval = self.lease_seconds / 3
        self.claim_interval = (
            min(1.0, self.lease_seconds / 4) if claim_interval is None else claim_interval
        )
        self.access = access
        self.origin = uuid.uuid4().hex
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{self.origin[:8]}"
        self.fence: int | None = None
        self._durability = durability
        self._max_batch = max_batch
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._signal = anyio.Event()
        self._lease_lock = anyio.Lock()

    @property
    def where(self) -> str:
        """The database and schema, for messages (never the password)."""
        parts = urllib.parse.urlsplit(self._dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{host}{port}{parts.path} (schema {self.schema!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        # application_name tells a DBA which worker a connection belongs to (pg_stat_activity).
        settings = {"search_path": quote_ident(self.schema),
                    "application_name": f"saga:{self.origin[:8]}"}  # fmt: skip
        if self._durability == "normal":
            settings["synchronous_commit"] = "off"
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, server_settings=settings
            )
        except (*_CONNECTION_ERRORS, ValueError) as error:
            raise StoreError(f"cannot connect to {self.where}: {error}") from error
        try:
            async with self._pool.acquire() as conn:
                if self.access == Access.OWNER:
                    await create_or_upgrade_schema(conn, self.schema, self.where)
                else:
                    version = await check_schema(conn, self.where)
                    if version < 2:  # before sagas had `parked`: read it as NULL
                        self._row_columns = ROW_COLUMNS_UNPARKED
                    if self.access == Access.CLIENT and version < SCHEMA_VERSION:
                        raise StoreError(
                            f"{self.where} was written by an older saga (schema {version}); "
                            "start a Runtime of this version on it once to upgrade it"
                        )
            if self.access == Access.OWNER:
                await self._register()
                await self._listen()
        except BaseException as error:
            await self._disconnect()
            if isinstance(error, _CONNECTION_ERRORS):
                raise StoreError(f"cannot open {self.where}: {error}") from error
            raise
        if self.access != Access.READ:
            await self._start_writing()

    async def close(self) -> None:
        try:
            await self._stop_writing()
            if self.fence is not None and self._pool is not None:
                # Let the other workers take this one's open sagas over at once.
                with contextlib.suppress(*_CONNECTION_ERRORS), anyio.CancelScope(shield=True):
                    await self._pool.execute(
                        "UPDATE saga_workers SET expires_at = clock_timestamp() WHERE fence = $1",
                        self.fence,
                    )
        finally:
            await self._disconnect()

    async def _disconnect(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None

    # -- leases -------------------------------------------------------------------------------

    async def _register(self) -> None:
        """Become a worker: a new fence with a fresh lease."""
        assert self._pool is not None
        self.fence = await self._pool.fetchval(
            "INSERT INTO saga_workers (fence, worker, expires_at) VALUES (nextval('saga_fences'), "
            "$1, clock_timestamp() + $2 * interval '1 second') RETURNING fence",
            self.worker,
            self.lease_seconds,
        )
        logger.info("worker %s holds fence %d on %s", self.worker, self.fence, self.where)

    async def keep_lease(self) -> bool:
        """Renew this worker's lease. ``False`` if it had expired: this worker's sagas may
        be another's now, so it continues under a new fence and owns only what it claims.

        Several tasks may find the lease lost at once (the renewal loop, a `start` refused
        with `LeaseLost`): one registers again, the others see the new fence renewed.
        """
        if self._pool is None or self.fence is None:
            raise StoreError("the store is not open as a worker")
        async with self._lease_lock:
            try:
                renewed = await self._pool.fetchval(
                    "UPDATE saga_workers SET expires_at = clock_timestamp() "
                    "+ $2 * interval '1 second' WHERE fence = $1 "
                    "AND expires_at > clock_timestamp() RETURNING fence",
                    self.fence,
                    self.lease_seconds,
                )
                if renewed is not None:
                    return True
                lost = self.fence
                await self._register()
            except _CONNECTION_ERRORS as error:
                raise StoreError(f"cannot renew the lease on {self.where}: {error}") from error
        logger.warning("worker %s lost its lease (fence %d); now fence %d", self.worker, lost,
                       self.fence)  # fmt: skip
        return False

    async def claim_orphans(
        self,
        runnable: Collection[tuple[str, int]],
        *,
        exclude: Collection[str] = (),
        limit: int = CLAIM_BATCH,
        sweep: bool = False,
    ) -> list[str]:
        """Take over up to ``limit`` open sagas nobody runs, of the definitions ``runnable``.

        Those are the open sagas of workers whose lease expired and those handed back
        (``owner`` NULL) by a worker that could not run them. One transaction, which

        * share-locks this worker's own row, with its lease checked: a claim never moves
          a saga to a lease that may already be counted dead;
        * locks the rows of the dead workers it looks at (``SKIP LOCKED``: claimers never
          wait on each other, and a batch still writing under one of those fences, which
          holds its row share-locked, makes the claimer pass that worker by this round);
        * moves the sagas (``SKIP LOCKED`` again: each is claimed once) and marks a dead
          worker ``drained`` only when none of its open sagas is left, whatever their
          definition, so a saga of a definition this worker lacks stays claimable by one
          that has it.

        ``sweep`` also takes sagas whose owner is no registered worker at all (a worker
        row deleted by hand, a damaged owner): a slower query, run now and then.
        """
        if self._pool is None or self.fence is None:
            raise StoreError("the store is not open as a worker")
        names = [name for name, _ in runnable]
        versions = [version for _, version in runnable]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                alive = await conn.fetchval(
                    "SELECT fence FROM saga_workers WHERE fence = $1 "
                    "AND expires_at > clock_timestamp() FOR KEY SHARE",
                    self.fence,
                )
                if alive is None:
                    return []  # the lease is gone: `keep_lease` registers again first
                dead = [r["fence"] for r in await conn.fetch(
                    "SELECT fence FROM saga_workers WHERE NOT drained "
                    "AND expires_at <= clock_timestamp() ORDER BY fence FOR UPDATE SKIP LOCKED"
                )]  # fmt: skip
                rows: list[Any] = []
                if names:
                    rows = await conn.fetch(
                        "WITH picked AS (SELECT saga_id FROM sagas WHERE (owner IS NULL "
                        f"OR owner = ANY($2::bigint[]){_STRAY if sweep else ''}) "
                        f"AND status IN {OPEN_SQL} "
                        "AND (name, version) IN (SELECT * FROM unnest($4::text[], $5::int[])) "
                        "AND saga_id <> ALL($6::text[]) "
                        "ORDER BY saga_id LIMIT $3 FOR UPDATE SKIP LOCKED) "
                        "UPDATE sagas s SET owner = $1, parked = NULL FROM picked "
                        "WHERE s.saga_id = picked.saga_id RETURNING s.saga_id",
                        self.fence,
                        dead,
                        limit,
                        names,
                        versions,
                        sorted(exclude),
                    )
                if dead and len(rows) < limit:  # maybe nothing left (but what others hold)
                    await conn.execute(
                        "UPDATE saga_workers w SET drained = true WHERE fence = ANY($1::bigint[]) "
                        "AND NOT EXISTS (SELECT 1 FROM sagas s WHERE s.owner = w.fence "
                        f"AND s.status IN {OPEN_SQL})",
                        dead,
                    )
        except _CONNECTION_ERRORS as error:
            raise StoreError(f"cannot claim sagas on {self.where}: {error}") from error
        claimed = [r["saga_id"] for r in rows]
        if claimed:
            logger.info("worker %s took over %d sagas nobody ran", self.worker, len(claimed))
        return claimed

    # -- notifications ------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(
            self._dsn, server_settings={"application_name": f"saga:{self.origin[:8]}"}
        )
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        owner, _, _ = payload.partition(":")
        if owner == "*" or owner == str(self.fence):
            self._signal.set()

    async def wait_for_foreign(self, timeout: float) -> None:
        """Return when another process announced an inbox entry for this worker, or after
        ``timeout`` seconds (the polling fallback)."""
        with anyio.move_on_after(timeout):
            await self._signal.wait()
        self._signal = anyio.Event()
        if self._listener is None or self._listener.is_closed():
            with contextlib.suppress(*_CONNECTION_ERRORS):  # keep polling until it is back
                await self._listen()

    # -- writes -------------------------------------------------------------------------------

    def _fenced(self, append: Append) -> Append:
        if append.fence is None:  # written by this worker as it is now (not by an actor)
            return msgspec.structs.replace(append, fence=self.fence)
        return append

    def _start_fence(self, fence: int | None) -> int | None:
        return self.fence if fence is None else fence

    async def _rollback(self) -> None:
        pass  # the transaction block rolls back on its own

    async def _commit(self, batch: Sequence[Op[Any]]) -> None:
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with self._pool.acquire() as conn:
                results = await apply_batch(conn, batch, self.origin, self.fence)
        except asyncpg.UniqueViolationError as error:
            raise StoreError(f"write refused: {error.detail or error}") from error
        except _CONNECTION_ERRORS as error:
            raise StoreError(f"write failed on {self.where}: {error}") from error
        for op, result in results:
            op.settle(result)
