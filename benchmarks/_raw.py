"""The raw floor: the fastest plain aiosqlite append loop this disk allows.

The same records as the throughput scenario (the sizes of a real five-step saga's log,
read from a store saga wrote), the same table layout as saga's log (``WITHOUT ROWID``,
keyed by saga id and seq), the same ``synchronous=FULL`` in WAL mode, committed in
batches of ``batch`` records. Nothing else: no index row, no inbox, no decisions. Also
the time of one single-record commit (through aiosqlite, through plain sqlite3, and a bare
write + ``fdatasync``): the floor under every latency figure.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
import uuid
from typing import Any

import aiosqlite

from benchmarks import _saga_work

__all__ = ["WORKLOADS"]

_TABLE = (
    "CREATE TABLE log (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL, "
    "PRIMARY KEY (saga_id, seq)) WITHOUT ROWID"
)
_INSERT = "INSERT INTO log (saga_id, seq, body) VALUES (?, ?, ?)"


async def record_sizes(tmp: str) -> list[int]:
    """The encoded size of each record of one real five-step saga, in log order."""
    path = os.path.join(tmp, "sizes.db")
    async with _saga_work._runtime(path) as runtime:
        handle = await runtime.start(_saga_work.FIVE, _saga_work.Counter())
        await handle.result(timeout=60)
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute("SELECT length(body) FROM saga_log ORDER BY seq")]
    finally:
        conn.close()


def _floors(tmp: str, body: int, count: int) -> dict[str, float]:
    """One-record commits from plain sqlite3 in this thread, and a bare write + fdatasync."""
    conn = sqlite3.connect(os.path.join(tmp, "floor.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_TABLE)
    commits = []
    for i in range(count):
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT, ("single", i, os.urandom(body)))
        conn.execute("COMMIT")
        commits.append(time.perf_counter() - start)
    conn.close()
    syncs = []
    fd = os.open(os.path.join(tmp, "fdatasync"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, os.urandom(body))
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return {
        "sqlite3_commit_ms": statistics.median(commits) * 1000,
        "fdatasync_ms": statistics.median(syncs) * 1000,
    }


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute(_TABLE)
    return conn


async def throughput(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    sizes = await record_sizes(tmp)
    sagas = p["sagas"]  # as many sagas' worth of records as the saga run writes
    rows = [
        (saga_id, seq, os.urandom(size))
        for saga_id in (uuid.uuid4().hex for _ in range(sagas))
        for seq, size in enumerate(sizes, 1)
    ]
    batch = p["batch"]
    conn = await _connect(os.path.join(tmp, "raw.db"))
    try:
        began = time.perf_counter()
        for low in range(0, len(rows), batch):
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(_INSERT, rows[low : low + batch])
            await conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        commits: list[float] = []
        for i in range(p["single_commits"]):
            start = time.perf_counter()
            await conn.execute("BEGIN IMMEDIATE")
            await conn.execute(_INSERT, ("single", i, os.urandom(sizes[1])))
            await conn.execute("COMMIT")
            commits.append(time.perf_counter() - start)
    finally:
        await conn.close()
    floors = _floors(tmp, sizes[1], p["single_commits"])
    return {
        **floors,
        "records": len(rows),
        "batch": batch,
        "record_sizes": sizes,
        "mean_record_bytes": sum(sizes) / len(sizes),
        "seconds": elapsed,
        "records_per_s": len(rows) / elapsed,
        "single_commit_ms": statistics.median(commits) * 1000,
    }


WORKLOADS = {"throughput": throughput}
