"""The PostgreSQL store's group-commit transaction.

One transaction per batch, in a fixed number of round trips whatever its size: lock the
index rows of every saga the batch touches (in saga id order, so two workers' batches never
deadlock), read the event ids already seen and which of the batch's fences still hold a
lease, decide every operation with `plan_batch`, then one statement per kind of write.

Locking the rows first is what makes the checks hold until ``COMMIT``: a `send` that finds
a saga open cannot race the terminal record that dead-letters its inbox, and an append by a
worker whose lease is gone or whose saga was claimed by another fails with `LeaseLost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from saga._store._base import ROW_COLUMNS, SagaRow, row_params, saga_row
from saga._store._plan import (
    INBOX_ROW_COLUMNS,
    AppendOp,
    InboxRow,
    SendOp,
    StartOp,
    checked_ids,
    plan_batch,
)
from saga._store._vocabulary import CLOSED_STATE_SQL, InboxState
from saga._store._writer import Op

__all__ = ["NOTIFY_CHANNEL", "apply_batch"]

NOTIFY_CHANNEL = "saga_inbox"
# A new row's placeholders: its `ROW_COLUMNS`, then its owner.
_ROW_PARAMS = ",".join(f"${i}" for i in range(1, len(SagaRow.__struct_fields__) + 2))
# `row_params` up to ``parked``: the columns an append rewrites (`_write_log_and_index`).
_INDEXED = SagaRow.__struct_fields__.index("parked")
_INBOX_PARAMS = ",".join(f"${i}" for i in range(1, len(InboxRow._fields) + 1))


async def _lock_live_fences(conn: asyncpg.Connection, batch: Sequence[Op[Any]]) -> set[int]:
    """The fences of the batch's writes whose lease holds, their worker rows share-locked.

    The lock (``FOR KEY SHARE``) lets leases be renewed meanwhile but keeps a claimer
    (``FOR UPDATE``) from declaring one of these workers dead and drained until this
    commit is visible to it: a saga this batch creates or takes over under a fence is
    then always seen by whoever takes that fence's sagas over.
    """
    fences = sorted(
        {op.append.fence for op in batch if isinstance(op, AppendOp) and op.append.fence}
        | {op.fence for op in batch if isinstance(op, StartOp) and op.fence}
    )
    if not fences:
        return set()
    rows = await conn.fetch(
        "SELECT fence FROM saga_workers WHERE fence = ANY($1::bigint[]) "
        "AND expires_at > clock_timestamp() ORDER BY fence FOR KEY SHARE",
        fences,
    )
    return {r["fence"] for r in rows}


async def apply_batch(
    conn: asyncpg.Connection, batch: Sequence[Op[Any]], origin: str, fence: int | None
) -> list[tuple[Op[Any], Any]]:
    """Decide and write ``batch`` in one transaction; return each operation's result."""
    async with conn.transaction():
        starts = sorted({op.row.saga_id for op in batch if isinstance(op, StartOp)})
        if starts:
            # Another worker may be starting one of these ids right now, and its row is not
            # there to be locked yet: serialise starts of one id, so that the second finds
            # the first's saga (an idempotent start), never a unique-key failure.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT "
                "hashtextextended('saga-start:' || id, 0) AS k "
                "FROM unnest($1::text[]) AS id ORDER BY k) AS keys",
                starts,
            )
        known: dict[str, SagaRow] = {}
        owners: dict[str, int | None] = {}
        ids = checked_ids(batch, every_append=True)
        if ids:  # the rows, locked, with their owners
            rows = await conn.fetch(
                f"SELECT {ROW_COLUMNS}, owner FROM sagas WHERE saga_id = ANY($1::text[]) "
                "ORDER BY saga_id FOR UPDATE",
                ids,
            )
            for r in rows:
                known[r["saga_id"]] = saga_row(r)
                owners[r["saga_id"]] = r["owner"]
        live = await _lock_live_fences(conn, batch)
        event_ids = sorted({op.event_id for op in batch if isinstance(op, SendOp)})
        seen: set[tuple[str, str]] = set()
        if event_ids:
            rows = await conn.fetch(
                "SELECT saga_id, event_id FROM saga_inbox WHERE event_id = ANY($1::text[])",
                event_ids,
            )
            seen = {(r["saga_id"], r["event_id"]) for r in rows}

        plan = plan_batch(batch, known, seen, origin, owners=owners, live_fences=live, fence=fence)
        if plan.new_sagas:
            await conn.executemany(
                f"INSERT INTO sagas ({ROW_COLUMNS}, owner) VALUES ({_ROW_PARAMS})",
                [(*row_params(r), owner) for r, owner in plan.new_sagas],
            )
        if plan.inbox_rows:
            await conn.executemany(
                f"INSERT INTO saga_inbox ({INBOX_ROW_COLUMNS}) VALUES ({_INBOX_PARAMS})",
                plan.inbox_rows,
            )
        if plan.log_rows or plan.index_rows:
            await _write_log_and_index(conn, plan.log_rows, plan.index_rows)
        if plan.owners:
            await conn.executemany("UPDATE sagas SET owner = $2 WHERE saga_id = $1", plan.owners)
        if plan.parked:
            await conn.executemany(
                "UPDATE sagas SET parked = $2, "
                "owner = CASE WHEN $3 THEN NULL ELSE owner END WHERE saga_id = $1",
                plan.parked,
            )
        if plan.consumed:
            await conn.executemany(
                f"UPDATE saga_inbox SET status = {InboxState.CONSUMED:d} "
                f"WHERE saga_id = $1 AND event_id = $2 AND status = {InboxState.PENDING:d}",
                plan.consumed,
            )
        if plan.closed:
            await conn.executemany(
                f"UPDATE saga_inbox SET status = {CLOSED_STATE_SQL}, "
                f"reason = $1 WHERE saga_id = $2 AND status = {InboxState.PENDING:d}",
                plan.closed,
            )
        notices = {f"{owner}:{saga_id}" for owner, saga_id in plan.notify}
        notices.update(f"*:{saga_id}" for saga_id in plan.announce)
        if notices:
            await conn.execute(
                "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                NOTIFY_CHANNEL,
                sorted(notices),
            )
    return plan.results


async def _write_log_and_index(
    conn: asyncpg.Connection,
    log_rows: list[tuple[str, int, bytes, int | None]],
    index_rows: list[SagaRow],
) -> None:
    """The batch's log rows and index rows in one statement (two data-modifying parts over
    arrays: one round trip, whatever the batch size)."""
    latest = {row.saga_id: row for row in index_rows}  # a saga appended twice: its last row
    # Every column but ``parked``, which a saga that moves again no longer is.
    params = [row_params(row)[:_INDEXED] for row in latest.values()]
    columns: list[tuple[Any, ...]] = list(zip(*params, strict=True))
    log_columns: list[tuple[Any, ...]] = list(zip(*log_rows, strict=True))
    columns = columns or [()] * _INDEXED  # no index rows (only starts): empty arrays
    log_columns = log_columns or [()] * 4
    await conn.execute(
        "WITH logged AS (INSERT INTO saga_log (saga_id, seq, body, fence) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[], $4::bigint[])) "
        "UPDATE sagas s SET name = u.name, version = u.version, status = u.status, "
        "step = u.step, created_at = u.created_at, updated_at = u.updated_at, seq = u.seq, "
        "wake_at = u.wake_at, state = u.state, error = u.error, annotations = u.annotations, "
        "parked = NULL "
        "FROM unnest($5::text[], $6::text[], $7::int[], $8::text[], $9::text[], "
        "$10::float8[], $11::float8[], $12::int[], $13::float8[], $14::bytea[], $15::bytea[], "
        "$16::bytea[]) AS u(saga_id, name, version, status, step, created_at, updated_at, "
        "seq, wake_at, state, error, annotations) WHERE s.saga_id = u.saga_id",
        *map(list, log_columns),
        *map(list, columns),
    )
