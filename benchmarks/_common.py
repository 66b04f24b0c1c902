"""Helpers shared by the workers of both systems: statistics, memory, store polling."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence

__all__ = [
    "STEPS",
    "file_bytes",
    "percentile",
    "poll_count",
    "rss_bytes",
    "settle_memory",
    "summary_ms",
]

STEPS = 5  # every saga / workflow of the benchmarks has five trivial steps


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest-rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p99 and max of durations in seconds, as milliseconds."""
    return {
        "median_ms": statistics.median(seconds) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
        "samples": len(seconds),
    }


def rss_bytes() -> int:
    """This process's current resident set size (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def settle_memory() -> int:
    """Collect garbage, then return the current RSS."""
    gc.collect()
    return rss_bytes()


def file_bytes(path: str) -> dict[str, int]:
    """Bytes a SQLite file really uses (after a checkpoint), and its pages."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return {"used_bytes": (pages - free) * page_size, "file_bytes": os.path.getsize(path)}


def poll_count(
    path: str, sql: str, target: int, *, timeout: float, interval: float = 0.01
) -> Callable[[], float]:
    """Return a blocking function that polls ``sql`` (a count) until it reaches ``target``.

    It returns the ``time.perf_counter()`` at which it saw the target. Run it in a thread
    (``asyncio.to_thread``) so the event loop under test keeps running.
    """

    def wait() -> float:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.perf_counter() + timeout
            while True:
                (count,) = conn.execute(sql).fetchone()
                now = time.perf_counter()
                if count >= target:
                    return now
                if now > deadline:
                    raise TimeoutError(f"{sql!r} reached {count} of {target} in {timeout} s")
                time.sleep(interval)
        finally:
            conn.close()

    return wait


class DriverHooks:
    """What a system's step bodies report to the driver: arrivals, entries, resumes, waits.

    Both systems run on asyncio, so plain asyncio events serve both.
    """

    def __init__(self) -> None:
        self.block_at: int | None = None  # the recovery load blocks in this step
        self.expected = 0
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.entered: dict[str, asyncio.Event] = {}
        self.resumed: dict[str, asyncio.Event] = {}
        self.resumed_at: dict[str, float] = {}
        self.waits = 0  # handlers that started waiting for an event so far
        self.waits_target = 0
        self.waits_reached: asyncio.Event | None = None

    def arrive(self) -> None:
        """A step body reached the blocking step."""
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_arrived.set()

    def waited(self) -> None:
        self.waits += 1
        if self.waits >= self.waits_target and self.waits_reached is not None:
            self.waits_reached.set()

    async def until_waits(self, count: int) -> None:
        """Until ``count`` handlers are waiting (bounds the sagas in flight)."""
        if self.waits < count:
            self.waits_target, self.waits_reached = count, asyncio.Event()
            await self.waits_reached.wait()
