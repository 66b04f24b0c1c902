"""Stores full of finished sagas, for the cold-start scenario, built in seconds.

Both builders let the real system write one finished five-step saga (so the rows are
exactly what it writes today), then clone that saga's rows under new ids straight into
the file with sqlite3: saga's index row and log records, DBOS's workflow status, input,
output and step rows. Ids keep the template's length, so saga's msgpack bodies stay valid
with a byte-for-byte substitution.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

__all__ = ["build_dbos", "build_saga"]

TEMPLATE_ID = "cold-000000000"


def _clone_id(i: int) -> str:
    return f"cold-{i:09d}"


def _bulk(conn: sqlite3.Connection) -> None:
    # Building is not the measurement: no journal, no fsync.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")


def _finish(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("ANALYZE")
    conn.close()


def build_saga(path: str, sagas: int) -> dict[str, Any]:
    import anyio

    from benchmarks import _saga_work

    async def template() -> None:
        async with _saga_work._runtime(path) as runtime:
            handle = await runtime.start(_saga_work.FIVE, _saga_work.Counter(), saga_id=TEMPLATE_ID)
            await handle.result(timeout=60)

    anyio.run(template)
    conn = sqlite3.connect(path, isolation_level=None)
    _bulk(conn)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(sagas)")]
    (row,) = conn.execute(
        f"SELECT {', '.join(columns)} FROM sagas WHERE saga_id = ?", (TEMPLATE_ID,)
    )
    log = conn.execute(
        "SELECT seq, body FROM saga_log WHERE saga_id = ? ORDER BY seq", (TEMPLATE_ID,)
    ).fetchall()
    old = TEMPLATE_ID.encode()

    def sub(value: Any, new: bytes) -> Any:
        if isinstance(value, bytes) and old in value:
            return value.replace(old, new)
        if value == TEMPLATE_ID:
            return new.decode()
        return value

    def index_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, sagas):
            new = _clone_id(i).encode()
            yield tuple(sub(v, new) for v in row)

    def log_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, sagas):
            new = _clone_id(i).encode()
            saga_id = new.decode()
            for seq, body in log:
                yield (saga_id, seq, body.replace(old, new) if old in body else body)

    marks = ", ".join("?" * len(columns))
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO sagas ({', '.join(columns)}) VALUES ({marks})", index_rows())
    conn.executemany("INSERT INTO saga_log (saga_id, seq, body) VALUES (?, ?, ?)", log_rows())
    conn.execute("COMMIT")
    _finish(conn)
    return {"sagas": sagas, "records_per_saga": len(log)}


def build_dbos(path: str, sagas: int, poll: float) -> dict[str, Any]:
    from dbos import DBOS, SetWorkflowID

    from benchmarks import _dbos_work

    async def template() -> None:
        _dbos_work._launch(path, {"poll": poll})
        try:
            with SetWorkflowID(TEMPLATE_ID):
                handle = await DBOS.start_workflow_async(_dbos_work.five, 0)
            await handle.get_result()
        finally:
            DBOS.destroy()

    asyncio.run(template())
    conn = sqlite3.connect(path, isolation_level=None)
    _bulk(conn)
    tables = [
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if any(c[1] == "workflow_uuid" for c in conn.execute(f'PRAGMA table_info("{name}")'))
    ]
    # workflow_status first: the other tables refer to it.
    tables.sort(key=lambda name: name != "workflow_status")
    numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
    conn.execute("BEGIN")
    cloned = {}
    for table in tables if sagas > 1 else []:
        columns = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
        select = ", ".join(
            "printf('cold-%09d', n.i)" if c == "workflow_uuid" else f't."{c}"' for c in columns
        )
        quoted = ", ".join(f'"{c}"' for c in columns)
        cur = conn.execute(
            f'{numbers} INSERT INTO "{table}" ({quoted}) SELECT {select} '
            f'FROM "{table}" AS t, n WHERE t.workflow_uuid = ?',
            (sagas - 1, TEMPLATE_ID),
        )
        cloned[table] = cur.rowcount
    conn.execute("COMMIT")
    _finish(conn)
    return {"sagas": sagas, "cloned_rows": cloned}
