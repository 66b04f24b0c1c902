"""The SQLite store's group-commit transaction: a whole batch in a handful of statements.

Every operation of the batch is decided in submission order against what the transaction
reads once up front (the sagas involved, the event ids already seen), then written with one
``executemany`` per statement kind. Results are published only after ``COMMIT``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from saga._store._base import Append, InboxKind, SagaRow, SendResult
from saga._store._writer import Op

__all__ = ["ROW_COLUMNS", "AppendOp", "SendOp", "StartOp", "apply_batch", "saga_row"]

_TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
ROW_COLUMNS = (
    "saga_id, name, version, status, step, created_at, updated_at, seq, wake_at, state, error, "
    "annotations"
)
_CHUNK = 500  # host parameters per IN (...) list, well under SQLite's limit


def saga_row(values: Sequence[Any]) -> SagaRow:
    return SagaRow(*values)


def _row_params(row: SagaRow) -> tuple[Any, ...]:
    return msgspec.structs.astuple(row)  # the field order is ROW_COLUMNS' order


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class StartOp(Op[SagaRow | None]):
    __slots__ = ("records", "row")

    def __init__(self, row: SagaRow, records: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.row = row
        self.records = records


class SendOp(Op[SendResult]):
    __slots__ = ("event_id", "headers", "key", "kind", "name", "payload", "saga_id", "sent_at")

    def __init__(self, saga_id: str, event_id: str, kind: str, name: str, key: str | None,
                 payload: bytes, sent_at: float, headers: bytes | None) -> None:  # fmt: skip
        super().__init__()
        self.saga_id = saga_id
        self.event_id = event_id
        self.kind = kind
        self.name = name
        self.key = key
        self.payload = payload
        self.sent_at = sent_at
        self.headers = headers


class AppendOp(Op[bool]):
    __slots__ = ("append", "status")

    def __init__(self, append: Append, status: str | None) -> None:
        super().__init__()
        self.append = append
        self.status = status


def apply_batch(
    conn: sqlite3.Connection, batch: Sequence[Op[Any]], origin: str
) -> list[tuple[Op[Any], Any]]:
    """One transaction for the whole batch, run on the writer's thread in a single call.

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
    checked = sorted(
        {op.row.saga_id for op in batch if isinstance(op, StartOp)}
        | {op.saga_id for op in batch if isinstance(op, SendOp)}
        | {op.append.saga_id for op in batch if isinstance(op, AppendOp) and op.status}
    )
    known: dict[str, SagaRow] = {}
    for chunk in _chunks(checked):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {ROW_COLUMNS} FROM sagas WHERE saga_id IN ({marks})"
        for values in conn.execute(sql, chunk):
            known[values[0]] = saga_row(values)
    sends = [op for op in batch if isinstance(op, SendOp)]
    seen_events: set[tuple[str, str]] = set()
    pairs = sorted({(op.saga_id, op.event_id) for op in sends})
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
        seen_events.update((s, e) for s, e in conn.execute(sql, [*sagas, *events]))

    # Decide every operation in submission order; results are published after COMMIT.
    new_sagas: list[tuple[Any, ...]] = []
    log_rows: list[tuple[str, int, bytes]] = []
    inbox_rows: list[tuple[Any, ...]] = []
    index_rows: list[tuple[Any, ...]] = []
    consumed: list[tuple[str, str]] = []
    closed: list[tuple[str, str]] = []
    results: list[tuple[Op[Any], Any]] = []
    for op in batch:
        if isinstance(op, StartOp):
            existing = known.get(op.row.saga_id)
            if existing is not None:
                results.append((op, existing))
                continue
            known[op.row.saga_id] = op.row
            new_sagas.append(_row_params(op.row))
            log_rows.extend((op.row.saga_id, seq, body) for seq, body in op.records)
            results.append((op, None))
        elif isinstance(op, SendOp):
            target = known.get(op.saga_id)
            if (op.saga_id, op.event_id) in seen_events:
                result = SendResult.DUPLICATE
            elif target is None:
                result = SendResult.UNKNOWN
            elif op.kind == InboxKind.RESUME and target.status != "FAILED":
                result = SendResult.REFUSED
            elif op.kind != InboxKind.RESUME and target.status in _TERMINAL:
                result = SendResult.CLOSED
            else:
                result = SendResult.STORED
                seen_events.add((op.saga_id, op.event_id))
                inbox_rows.append((op.saga_id, op.event_id, op.kind, op.name, op.key,
                                   op.payload, op.sent_at, op.headers, origin))  # fmt: skip
            results.append((op, result))
        else:
            assert isinstance(op, AppendOp)
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
            row = append.row  # name, version and created_at never change after the start
            index_rows.append((row.status, row.step, row.updated_at, row.seq, row.wake_at,
                               row.state, row.error, row.annotations, append.saga_id))  # fmt: skip
            consumed.extend((append.saga_id, event_id) for event_id in append.consumed)
            if append.closed is not None:
                closed.append((append.closed, append.saga_id))
            results.append((op, True))

    if new_sagas:
        conn.executemany(
            f"INSERT INTO sagas ({ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", new_sagas
        )
    if inbox_rows:
        conn.executemany(
            "INSERT INTO saga_inbox "
            "(saga_id, event_id, kind, name, key, payload, sent_at, headers, origin) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            inbox_rows,
        )
    if log_rows:
        conn.executemany("INSERT INTO saga_log (saga_id, seq, body) VALUES (?,?,?)", log_rows)
    if index_rows:
        conn.executemany(
            "UPDATE sagas SET status=?, step=?, updated_at=?, seq=?, wake_at=?, state=?, "
            "error=?, annotations=? WHERE saga_id=?",
            index_rows,
        )
    if consumed:
        conn.executemany(
            "UPDATE saga_inbox SET status = 1 WHERE saga_id = ? AND event_id = ? AND status = 0",
            consumed,
        )
    if closed:
        conn.executemany(
            "UPDATE saga_inbox SET status = CASE kind WHEN 'event' THEN 2 ELSE 1 END, "
            "reason = ? WHERE saga_id = ? AND status = 0",
            closed,
        )
    return results
