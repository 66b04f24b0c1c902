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

from saga._store._base import InboxKind, SagaRow
from saga._store._pg_reads import ROW_COLUMNS, saga_row
from saga._store._plan import AppendOp, SendOp, checked_ids, plan_batch, row_params
from saga._store._writer import Op

__all__ = ["NOTIFY_CHANNEL", "apply_batch"]

NOTIFY_CHANNEL = "saga_inbox"


async def apply_batch(
    conn: asyncpg.Connection, batch: Sequence[Op[Any]], origin: str, fence: int | None
) -> list[tuple[Op[Any], Any]]:
    """Decide and write ``batch`` in one transaction; return each operation's result."""
    async with conn.transaction():
        known: dict[str, SagaRow] = {}
        owners: dict[str, int | None] = {}
        ids = checked_ids(batch, every_append=True)
        if ids:
            rows = await conn.fetch(
                f"SELECT {ROW_COLUMNS}, owner FROM sagas WHERE saga_id = ANY($1::text[]) "
                "ORDER BY saga_id FOR UPDATE",
                ids,
            )
            for r in rows:
                known[r[0]] = saga_row(r)
                owners[r[0]] = r[12]
        event_ids = sorted({op.event_id for op in batch if isinstance(op, SendOp)})
        seen: set[tuple[str, str]] = set()
        if event_ids:
            rows = await conn.fetch(
                "SELECT saga_id, event_id FROM saga_inbox WHERE event_id = ANY($1::text[])",
                event_ids,
            )
            seen = {(r[0], r[1]) for r in rows}
        fences = sorted(
            {op.append.fence for op in batch if isinstance(op, AppendOp) and op.append.fence}
        )
        live: set[int] = set()
        if fences:
            rows = await conn.fetch(
                "SELECT fence FROM saga_workers WHERE fence = ANY($1::bigint[]) "
                "AND expires_at > clock_timestamp()",
                fences,
            )
            live = {r[0] for r in rows}

        plan = plan_batch(batch, known, seen, origin, owners=owners, live_fences=live, fence=fence)
        if plan.new_sagas:
            await conn.executemany(
                f"INSERT INTO sagas ({ROW_COLUMNS}, owner) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                [(*row_params(r), fence) for r in plan.new_sagas],
            )
        if plan.inbox_rows:
            await conn.executemany(
                "INSERT INTO saga_inbox "
                "(saga_id, event_id, kind, name, key, payload, sent_at, headers, origin) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                plan.inbox_rows,
            )
        if plan.log_rows:
            await conn.executemany(
                "INSERT INTO saga_log (saga_id, seq, body, fence) VALUES ($1,$2,$3,$4)",
                plan.log_rows,
            )
        if plan.index_rows:
            await conn.executemany(
                "UPDATE sagas SET name=$1, version=$2, status=$3, step=$4, created_at=$5, "
                "updated_at=$6, seq=$7, wake_at=$8, state=$9, error=$10, annotations=$11 "
                "WHERE saga_id=$12",
                [(*row_params(r)[1:], r.saga_id) for r in plan.index_rows],
            )
        if plan.owners:
            await conn.executemany("UPDATE sagas SET owner = $2 WHERE saga_id = $1", plan.owners)
        if plan.consumed:
            await conn.executemany(
                "UPDATE saga_inbox SET status = 1 "
                "WHERE saga_id = $1 AND event_id = $2 AND status = 0",
                plan.consumed,
            )
        if plan.closed:
            await conn.executemany(
                "UPDATE saga_inbox SET status = CASE kind WHEN 'event' THEN 2 ELSE 1 END, "
                "reason = $1 WHERE saga_id = $2 AND status = 0",
                plan.closed,
            )
        notices = {f"{owner}:{saga_id}" for owner, saga_id in plan.notify}
        notices.update(f"*:{r[0]}" for r in plan.inbox_rows if r[2] == InboxKind.RESUME)
        if notices:
            await conn.execute(
                "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                NOTIFY_CHANNEL,
                sorted(notices),
            )
    return plan.results
