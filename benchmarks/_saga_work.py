"""The workloads, as saga runs them. Each function runs in a fresh worker process.

Every step body is the same trivial one as DBOS's (`_dbos_work.py`): add one to a counter
that is saved after the step. Durability is ``"full"`` (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import time
from typing import Any

import anyio
import msgspec

import saga
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


class Counter(msgspec.Struct):
    n: int = 0


hooks = DriverHooks()


class Bump(saga.Step):
    index = 0

    async def run(self, ctx: saga.StepContext[Counter]) -> None:
        if hooks.block_at == self.index:
            hooks.arrive()
            await anyio.sleep_forever()
        ctx.state.n += 1


class WaitGo(saga.Step):
    name = "wait_go"

    async def run(self, ctx: saga.StepContext[Counter]) -> saga.Wait:
        event = hooks.entered.pop(ctx.saga_id, None)
        if event is not None:
            event.set()
        hooks.waited()
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[Counter], event: saga.Event) -> None:
        hooks.resumed_at[ctx.saga_id] = time.perf_counter()
        resumed = hooks.resumed.pop(ctx.saga_id, None)
        if resumed is not None:
            resumed.set()
        ctx.state.n += 1


FIVE = saga.Saga(
    "bench-five",
    state=Counter,
    steps=[type(f"Bump{i}", (Bump,), {"name": f"bump{i}", "index": i})() for i in range(1, 6)],
)
WAIT = saga.Saga("bench-wait", state=Counter, steps=[WaitGo()])


def _runtime(path: str) -> saga.Runtime:
    return saga.Runtime(f"sqlite:///{path}", sagas=[FIVE, WAIT], durability="full")


def _log_stats(path: str, sagas: int, empty: int) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        records, payload = conn.execute(
            "SELECT count(*), sum(length(body)) FROM saga_log"
        ).fetchone()
    finally:
        conn.close()
    used = file_bytes(path)["used_bytes"] - empty  # less the empty store's pages
    return {
        "records": records,
        "records_per_saga": records / sagas,
        "payload_bytes_per_record": payload / records,
        "disk_bytes_per_record": used / records,
        "disk_bytes_per_saga": used / sagas,
    }


async def _five(runtime: saga.Runtime) -> None:
    handle = await runtime.start(FIVE, Counter())
    info = await handle.result(timeout=600)
    if info.status is not saga.Status.COMPLETED or info.state.n != STEPS:
        raise AssertionError(f"saga ended {info.status} with n={info.state.n}")


async def throughput(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path, empty = os.path.join(tmp, "saga.db"), os.path.join(tmp, "empty.db")
    n = p["sagas"]
    async with _runtime(empty):
        pass
    async with _runtime(path) as runtime:
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(_five, runtime)
        elapsed = time.perf_counter() - began
        records = runtime.transitions
        writer = getattr(runtime.store, "_writer", None)  # diagnostics only, if present
        commits = getattr(writer, "batches", None)
    out: dict[str, Any] = {
        "sagas": n,
        "seconds": elapsed,
        "steps_per_s": n * STEPS / elapsed,
        "records_per_s": records / elapsed,
        "sagas_per_s": n / elapsed,
        "log": _log_stats(path, n, file_bytes(empty)["used_bytes"]),
    }
    if commits:
        out["commits"] = commits
        out["records_per_commit"] = records / commits
    return out


async def latency(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path = os.path.join(tmp, "saga.db")
    samples: list[float] = []
    async with _runtime(path) as runtime:
        for i in range(p["warmup"] + p["runs"]):
            began = time.perf_counter()
            await _five(runtime)
            if i >= p["warmup"]:
                samples.append(time.perf_counter() - began)
    return {"runs": p["runs"], **summary_ms(samples)}


async def _deliver(runtime: saga.Runtime, saga_id: str) -> float:
    """Send "go" to a waiting saga; seconds until its ``on_event`` body began."""
    resumed = hooks.resumed[saga_id] = asyncio.Event()
    began = time.perf_counter()
    await runtime.send(saga_id, "go")
    with anyio.fail_after(60):
        await resumed.wait()
    return hooks.resumed_at.pop(saga_id) - began


async def events(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path = os.path.join(tmp, "saga.db")
    samples: list[float] = []
    async with _runtime(path) as runtime:
        for i in range(p["warmup"] + p["runs"]):
            saga_id = f"e{i:06d}"
            entered = hooks.entered[saga_id] = asyncio.Event()
            handle = await runtime.start(WAIT, Counter(), saga_id=saga_id)
            await entered.wait()
            await anyio.sleep(p["settle"])  # the wait is committed and the saga passivated
            took = await _deliver(runtime, saga_id)
            await handle.result(timeout=60)
            if i >= p["warmup"]:
                samples.append(took)
    return {"runs": p["runs"], **summary_ms(samples)}


async def _start_waiting(runtime: saga.Runtime, first: int, count: int, wave: int) -> None:
    async def start(saga_id: str) -> None:
        await runtime.start(WAIT, Counter(), saga_id=saga_id)

    for low in range(first, first + count, wave):
        high = min(low + wave, first + count)
        async with anyio.create_task_group() as tg:
            for i in range(low, high):
                tg.start_soon(start, f"p{i:09d}")
        await hooks.until_waits(high)  # the next wave starts once this one is parked


async def parked(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    path = os.path.join(tmp, "saga.db")
    n, warm = p["sagas"], p["warmup"]
    waiting = "SELECT count(*) FROM sagas WHERE status = 'WAITING'"
    async with _runtime(path) as runtime:
        await _start_waiting(runtime, 0, warm, p["wave"])
        await anyio.to_thread.run_sync(poll_count(path, waiting, warm, timeout=600))
        before, blocks = settle_memory(), sys.getallocatedblocks()
        began = time.perf_counter()
        await _start_waiting(runtime, warm, n, p["wave"])
        parked_at = await anyio.to_thread.run_sync(
            poll_count(path, waiting, warm + n, timeout=3600)
        )
        after, blocks = settle_memory(), sys.getallocatedblocks() - blocks
        rng = random.Random(7)
        picks = rng.sample(range(warm, warm + n), min(p["deliveries"], n))
        samples = [await _deliver(runtime, f"p{i:09d}") for i in picks]
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
    }


async def recovery_load(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    """The process that gets SIGKILLed: ``sagas`` in flight, every one inside step 3."""
    hooks.block_at = 3
    n = hooks.expected = p["sagas"]
    async with _runtime(p["db"]) as runtime, anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(runtime.start, FIVE, Counter())
        await hooks.all_arrived.wait()
        print("READY", flush=True)
        await anyio.sleep_forever()
    return {}  # pragma: no cover - killed before


async def recovery(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    n = p["sagas"]
    done = "SELECT count(*) FROM sagas WHERE status = 'COMPLETED'"
    began = time.perf_counter()
    async with _runtime(p["db"]) as runtime:
        ready = time.perf_counter() - began
        finished = await anyio.to_thread.run_sync(poll_count(p["db"], done, n, timeout=600))
        recovered = runtime.transitions
    return {
        "sagas": n,
        "ready_s": ready,
        "all_finished_s": finished - began,
        "resumed_per_s": n / (finished - began),
        "records_after_restart": recovered,
    }


async def coldstart(p: dict[str, Any], tmp: str) -> dict[str, Any]:
    began = time.perf_counter()
    async with _runtime(p["db"]):
        ready = time.perf_counter() - began
    return {"finished_sagas": p["sagas"], "ready_s": ready}


WORKLOADS = {
    "throughput": throughput,
    "latency": latency,
    "events": events,
    "parked": parked,
    "recovery-load": recovery_load,
    "recovery": recovery,
    "coldstart": coldstart,
}
