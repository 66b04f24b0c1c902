"""The SQLite store's group-commit transaction: a whole batch in a handful of statements.

Every operation of the batch is decided in submission order against what the transaction
reads once up front (the sagas involved, the event ids already seen), then written with one
``executemany`` per statement kind. Results are published only after ``COMMIT``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from saga._store._base import ROW_COLUMNS, ROW_MARKS, SagaRow, row_params, saga_row
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

__all__ = ["AppendOp", "SendOp", "StartOp", "apply_batch"]

_CHUNK = 500  # host parameters per IN (...) list, well under SQLite's limit
_INBOX_MARKS = ",".join("?" * len(InboxRow._fields))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def apply_batch(
    conn: sqlite3.Connection, batch: Sequence[Op[Any]], origin: str
) -> list[tuple[Op[Any], Any]]:
    """One transaction for the whole batch, run on the writer's thread in a single call.

    ``conn`` gives `sqlite3.Row`s (the store's writer connection does).

    Inbox entries are stamped with ``origin``, the writing store instance. Returns each
    operation's result; the caller publishes them (on the event loop) after this returns.
    On any error the transaction is rolled back and the error raised.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = _decide_and_write(conn, batch, origin)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _decide_and_write(
    conn: sqlite3.Connection, batch: Sequence[Op[Any]], origin: str
) -> list[tuple[Op[Any], Any]]:
    # What the checks need, read once for the batch.
    known: dict[str, SagaRow] = {}
    for chunk in _chunks(checked_ids(batch, every_append=False)):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {ROW_COLUMNS} FROM sagas WHERE saga_id IN ({marks})"
        for row in conn.execute(sql, chunk):
            known[row["saga_id"]] = saga_row(row)
    seen_events: set[tuple[str, str]] = set()
    pairs = sorted({(op.saga_id, op.event_id) for op in batch if isinstance(op, SendOp)})
    for i in range(0, len(pairs), _CHUNK // 2):
        # By saga and event id, so that the lookup is a search of the (saga_id, event_id)
        # unique index; by event id alone it was a scan of the whole inbox.
        sagas = sorted({s for s, _ in pairs[i : i + _CHUNK // 2]})
        events = sorted({e for _, e in pairs[i : i + _CHUNK // 2]})
        sql = (
            "SELECT saga_id, event_id FROM saga_inbox WHERE "
            f"saga_id IN ({','.join('?' * len(sagas))}) "
            f"AND event_id IN ({','.join('?' * len(events))})"
        )
        rows = conn.execute(sql, [*sagas, *events])
        seen_events.update((r["saga_id"], r["event_id"]) for r in rows)

    plan = plan_batch(batch, known, seen_events, origin)
    if plan.new_sagas:
        conn.executemany(
            f"INSERT INTO sagas ({ROW_COLUMNS}) VALUES ({ROW_MARKS})",
            [row_params(r) for r, _ in plan.new_sagas],
        )
    if plan.inbox_rows:
        conn.executemany(
            f"INSERT INTO saga_inbox ({INBOX_ROW_COLUMNS}) VALUES ({_INBOX_MARKS})",
            plan.inbox_rows,
        )
    if plan.log_rows:
        conn.executemany(
            "INSERT INTO saga_log (saga_id, seq, body) VALUES (?,?,?)",
            [r[:3] for r in plan.log_rows],
        )
    if plan.index_rows:
        conn.executemany(
            # name, version and created_at never change after the start
            # and a saga that moves again is no longer parked
            "UPDATE sagas SET status=?, step=?, updated_at=?, seq=?, wake_at=?, state=?, "
            "error=?, annotations=?, parked=NULL WHERE saga_id=?",
            [
                (
                    r.status,
                    r.step,
                    r.updated_at,
                    r.seq,
                    r.wake_at,
                    r.state,
                    r.error,
                    r.annotations,
                    r.saga_id,
                )
                for r in plan.index_rows
            ],
        )
    if plan.parked:
        conn.executemany(
            "UPDATE sagas SET parked = ? WHERE saga_id = ?",
            [(error, saga_id) for saga_id, error, _ in plan.parked],
        )
    if plan.consumed:
        conn.executemany(
            f"UPDATE saga_inbox SET status = {InboxState.CONSUMED:d} "
            f"WHERE saga_id = ? AND event_id = ? AND status = {InboxState.PENDING:d}",
            plan.consumed,
        )
    if plan.closed:
        conn.executemany(
            f"UPDATE saga_inbox SET status = {CLOSED_STATE_SQL}, "
            f"reason = ? WHERE saga_id = ? AND status = {InboxState.PENDING:d}",
            plan.closed,
        )
    return plan.results
