"""The same workloads, as DBOS Transact runs them (the peer), on SQLite, in one process.

Each workflow has the same five trivial steps as saga's (add one to a counter, which DBOS
checkpoints as the step's output). DBOS's SQLite connections get ``journal_mode=WAL`` and
``synchronous=FULL``, saga's durability; DBOS itself leaves the journal mode at SQLite's
default (a rollback journal, slower) and sets no ``synchronous``. Its notification
listener polls every ``poll`` seconds (DBOS's default is 1 s; we give it 0.01 s, see the
README), because on SQLite that poll is how a waiting ``recv`` learns of a message.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import time
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

from benchmarks._common import (
    STEPS,
    DriverHooks,
    file_bytes,
    peak_rss_bytes,
    poll_count,
    settle_memory,
    summary_ms,
)

__all__ = ["WORKLOADS"]

_pragmas: dict[str, Any] = {}


@sa.event.listens_for(sa.engine.Engine, "connect")
def _durability(dbapi_conn: Any, _record: Any) -> None:
    """Give every SQLite connection DBOS opens saga's durability: WAL, synchronous=FULL."""
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")
        _pragmas["journal_mode"] = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
        _pragmas["synchronous"] = dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]


hooks = DriverHooks()


@DBOS.step()
async def bump(n: int, index: int) -> int:
    if hooks.block_at == index:
        hooks.arrive()
        await asyncio.Event().wait()
    return n + 1


@DBOS.workflow()
async def five(n: int) -> int:
    for index in range(1, STEPS + 1):
        n = await bump(n, index)
    return n


@DBOS.workflow()
async def wait_go(n: int) -> int:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    entered = hooks.entered.pop(workflow_id, None)
    if entered is not None:
        entered.set()
    hooks.waited()
    await DBOS.recv_async("go", timeout_seconds=86_400)
    hooks.resumed_at[workflow_id] = time.perf_counter()
    resumed = hooks.resumed.pop(workflow_id, None)
    if resumed is not None:
        resumed.set()
    return n + 1


def _launch(path: str, p: dict[str, Any]) -> None:
    DBOS(
        config={
            "name": "saga-bench",
            "system_database_url": f"sqlite:///{path}",
            "log_level": "WARNING",
            "notification_listener_polling_interval_sec": p["poll"],
        }
    )
    DBOS.launch()


def _settings(p: dict[str, Any]) -> dict[str, Any]:
    return {"sqlite": dict(_pragmas), "poll_interval_s": p["poll"]}


async def _five() -> None:
    handle = await DBOS.start_workflow_async(five, 0)
    result = await handle.get_result()
    if result != STEPS:
        raise AssertionError(f"workflow returned {result}")


def _log_stats(path: str, workflows: int, empty: int) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        (steps,) = conn.execute("SELECT count(*) FROM operation_outputs").fetchone()
        (status,) = conn.execute("SELECT count(*) FROM workflow_status").fetchone()
    finally:
        conn.close()
    used = file_bytes(path)["used_bytes"] - empty  # less the empty store's pages
    rows = steps + 3 * status  # status, input and output rows per workflow
    return {
        "records": rows,
        "records_per_saga": rows / workflows,
        "disk_bytes_per_record": used / rows,
        "disk_bytes_per_saga": used / workflows,
    }


async def throughput(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path, empty = os.path.join(tmp, "dbos.sqlite"), os.path.join(tmp, "empty.sqlite")
    n = p["sagas"]
    _launch(empty, p)
    DBOS.destroy()
    _launch(path, p)
    try:
        began = time.perf_counter()
        await asyncio.gather(*(_five() for _ in range(n)))
        elapsed = time.perf_counter() - began
    finally:
        DBOS.destroy()
    return {
        "sagas": n,
        "seconds": elapsed,
        "steps_per_s": n * STEPS / elapsed,
        "sagas_per_s": n / elapsed,
        "log": _log_stats(path, n, file_bytes(empty)["used_bytes"]),
        "settings": _settings(p),
    }


async def latency(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    samples: list[float] = []
    _launch(os.path.join(tmp, "dbos.sqlite"), p)
    try:
        for i in range(p["warmup"] + p["runs"]):
            began = time.perf_counter()
            await _five()
            if i >= p["warmup"]:
                samples.append(time.perf_counter() - began)
    finally:
        DBOS.destroy()
    return {"runs": p["runs"], **summary_ms(samples), "settings": _settings(p)}


async def _deliver(workflow_id: str) -> float:
    resumed = hooks.resumed[workflow_id] = asyncio.Event()
    began = time.perf_counter()
    await DBOS.send_async(workflow_id, "go", "go")
    await asyncio.wait_for(resumed.wait(), 120)
    return hooks.resumed_at.pop(workflow_id) - began


async def events(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    samples: list[float] = []
    _launch(os.path.join(tmp, "dbos.sqlite"), p)
    try:
        for i in range(p["warmup"] + p["runs"]):
            workflow_id = f"e{i:06d}"
            entered = hooks.entered[workflow_id] = asyncio.Event()
            with SetWorkflowID(workflow_id):
                handle = await DBOS.start_workflow_async(wait_go, 0)
            await entered.wait()
            await asyncio.sleep(p["settle"])  # recv has registered and checked the inbox
            took = await _deliver(workflow_id)
            await handle.get_result()
            if i >= p["warmup"]:
                samples.append(took)
    finally:
        DBOS.destroy()
    return {"runs": p["runs"], **summary_ms(samples), "settings": _settings(p)}


async def _start_waiting(first: int, count: int, wave: int) -> None:
    async def start(workflow_id: str) -> None:
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(wait_go, 0)

    for low in range(first, first + count, wave):
        high = min(low + wave, first + count)
        await asyncio.gather(*(start(f"p{i:09d}") for i in range(low, high)))
        await hooks.until_waits(high)  # the next wave starts once this one waits


async def parked(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path = os.path.join(tmp, "dbos.sqlite")
    n, warm = p["sagas"], p["warmup"]
    # recv records its timeout as a durable sleep before it waits: one row per waiter.
    waiting = "SELECT count(*) FROM operation_outputs WHERE function_name = 'DBOS.sleep'"
    _launch(path, p)
    try:
        await _start_waiting(0, warm, p["wave"])
        await asyncio.to_thread(poll_count(path, waiting, warm, timeout=600))
        before, blocks = settle_memory(), sys.getallocatedblocks()
        began = time.perf_counter()
        await _start_waiting(warm, n, p["wave"])
        parked_at = await asyncio.to_thread(poll_count(path, waiting, warm + n, timeout=3600))
        after, blocks = settle_memory(), sys.getallocatedblocks() - blocks
        picks = random.Random(7).sample(range(warm, warm + n), min(p["deliveries"], n))
        samples = [await _deliver(f"p{i:09d}") for i in picks]
    finally:
        DBOS.destroy()
    growth = after - before
    return {
        "sagas": n,
        "park_seconds": parked_at - began,
        "parked_per_s": n / (parked_at - began),
        "rss_growth_mb": growth / 2**20,
        "rss_mb_per_100k": growth / 2**20 * 100_000 / n,
        "heap_blocks_per_saga": blocks / n,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "delivery": summary_ms(samples),
        "settings": _settings(p),
    }


async def recovery_load(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    hooks.block_at = 3
    n = hooks.expected = p["sagas"]
    _launch(p["db"], p)
    handles = await asyncio.gather(*(DBOS.start_workflow_async(five, 0) for _ in range(n)))
    await hooks.all_arrived.wait()
    print("READY", flush=True)
    await asyncio.Event().wait()
    return {"handles": len(handles)}  # pragma: no cover - killed before


async def recovery(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    n = p["sagas"]
    done = "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'"
    began = time.perf_counter()
    _launch(p["db"], p)
    try:
        ready = time.perf_counter() - began
        finished = await asyncio.to_thread(poll_count(p["db"], done, n, timeout=1800))
    finally:
        DBOS.destroy()
    return {
        "sagas": n,
        "ready_s": ready,
        "all_finished_s": finished - began,
        "resumed_per_s": n / (finished - began),
        "settings": _settings(p),
    }


async def coldstart(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    began = time.perf_counter()
    _launch(p["db"], p)
    ready = time.perf_counter() - began
    DBOS.destroy()
    return {"finished_sagas": p["sagas"], "ready_s": ready, "settings": _settings(p)}


WORKLOADS = {
    "throughput": throughput,
    "latency": latency,
    "events": events,
    "parked": parked,
    "recovery-load": recovery_load,
    "recovery": recovery,
    "coldstart": coldstart,
}
