"""What each mode runs: scenario sizes per system, repeats, and the targets saga aims at.

Where DBOS cannot do a size in reasonable time (it takes ~5 ms of commits per step here),
its size is smaller and the comparison uses size-free figures (rates, per-100k memory,
latencies); the table shows each system's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODES", "SCENARIOS", "TARGETS", "Metric", "Mode", "Target"]

SCENARIOS = ("throughput", "latency", "events", "parked", "recovery", "coldstart")


@dataclass(frozen=True)
class Mode:
    name: str
    repeats: int
    sizes: dict[str, dict[str, dict[str, Any]]]  # scenario -> system -> params
    timeout: float  # seconds one run may take


def _mode(name: str, repeats: int, timeout: float, **sizes: dict[str, dict[str, Any]]) -> Mode:
    return Mode(name, repeats, sizes, timeout)


MODES = {
    "smoke": _mode(
        "smoke",
        1,
        120,
        throughput={
            "saga": {"sagas": 40},
            "dbos": {"sagas": 10},
            "raw": {"sagas": 40, "batch": 1000, "single_commits": 5},
        },
        latency={"saga": {"runs": 20, "warmup": 2}, "dbos": {"runs": 5, "warmup": 1}},
        events={
            "saga": {"runs": 10, "warmup": 1, "settle": 0.02},
            "dbos": {"runs": 3, "warmup": 1, "settle": 0.02},
        },
        parked={
            "saga": {"sagas": 300, "warmup": 50, "deliveries": 10, "wave": 500},
            "dbos": {"sagas": 20, "warmup": 5, "deliveries": 3, "wave": 100},
        },
        recovery={"saga": {"sagas": 100}, "dbos": {"sagas": 20}},
        coldstart={"saga": {"sagas": 2000}, "dbos": {"sagas": 2000}},
    ),
    "quick": _mode(
        "quick",
        3,
        600,
        throughput={
            "saga": {"sagas": 2000},
            "dbos": {"sagas": 150},
            "raw": {"sagas": 2000, "batch": 1000, "single_commits": 100},
        },
        latency={"saga": {"runs": 200, "warmup": 10}, "dbos": {"runs": 40, "warmup": 3}},
        events={
            "saga": {"runs": 60, "warmup": 3, "settle": 0.01},
            "dbos": {"runs": 30, "warmup": 2, "settle": 0.01},
        },
        parked={
            "saga": {"sagas": 20_000, "warmup": 1000, "deliveries": 200, "wave": 1000},
            "dbos": {"sagas": 300, "warmup": 30, "deliveries": 20, "wave": 150},
        },
        recovery={"saga": {"sagas": 2000}, "dbos": {"sagas": 100}},
        coldstart={"saga": {"sagas": 100_000}, "dbos": {"sagas": 100_000}},
    ),
    "full": _mode(
        "full",
        3,
        7200,
        throughput={
            "saga": {"sagas": 2000},
            "dbos": {"sagas": 2000},
            "raw": {"sagas": 2000, "batch": 1000, "single_commits": 200},
        },
        latency={"saga": {"runs": 200, "warmup": 20}, "dbos": {"runs": 200, "warmup": 20}},
        events={
            "saga": {"runs": 200, "warmup": 10, "settle": 0.02},
            "dbos": {"runs": 200, "warmup": 10, "settle": 0.02},
        },
        parked={
            "saga": {"sagas": 1_000_000, "warmup": 1000, "deliveries": 500, "wave": 1000},
            "dbos": {"sagas": 5000, "warmup": 100, "deliveries": 50, "wave": 250},
        },
        recovery={"saga": {"sagas": 10_000}, "dbos": {"sagas": 10_000}},
        coldstart={"saga": {"sagas": 1_000_000}, "dbos": {"sagas": 1_000_000}},
    ),
}


@dataclass(frozen=True)
class Metric:
    scenario: str
    key: str  # dotted path into a run's result
    label: str
    unit: str
    higher_is_better: bool
    systems: tuple[str, ...] = ("saga", "dbos")


METRICS = (
    Metric("throughput", "steps_per_s", "steps/s", "", True),
    Metric("throughput", "sagas_per_s", "sagas/s", "", True),
    Metric("throughput", "records_per_s", "records/s", "", True, ("saga", "raw")),
    Metric("throughput", "records_per_commit", "records per commit", "", True, ("saga",)),
    Metric(
        "throughput", "single_commit_ms", "one 1-record commit, aiosqlite", "ms", False, ("raw",)
    ),
    Metric(
        "throughput", "sqlite3_commit_ms", "one 1-record commit, sqlite3", "ms", False, ("raw",)
    ),
    Metric("throughput", "fdatasync_ms", "one write + fdatasync", "ms", False, ("raw",)),
    Metric("throughput", "log.records_per_saga", "log: records per saga", "", False),
    Metric(
        "throughput",
        "log.payload_bytes_per_record",
        "log: bytes per record (body)",
        "B",
        False,
        ("saga",),
    ),
    Metric("throughput", "log.disk_bytes_per_record", "log: disk bytes per record", "B", False),
    Metric("throughput", "log.disk_bytes_per_saga", "log: disk bytes per saga", "B", False),
    Metric("latency", "median_ms", "one saga, median", "ms", False),
    Metric("latency", "p99_ms", "one saga, p99", "ms", False),
    Metric("events", "median_ms", "send -> resumed, median", "ms", False),
    Metric("events", "p99_ms", "send -> resumed, p99", "ms", False),
    Metric("parked", "rss_mb_per_100k", "RSS growth per 100k parked", "MB", False),
    Metric("parked", "heap_blocks_per_saga", "live heap blocks per parked saga", "", False),
    Metric("parked", "parked_per_s", "parked sagas/s", "", True),
    Metric("parked", "delivery.median_ms", "delivery to parked, median", "ms", False),
    Metric("parked", "delivery.p99_ms", "delivery to parked, p99", "ms", False),
    Metric("recovery", "ready_s", "restart: ready", "s", False),
    Metric("recovery", "all_finished_s", "restart: all finished", "s", False),
    Metric("recovery", "resumed_per_s", "resumed sagas/s", "", True),
    Metric("coldstart", "ready_s", "Runtime ready", "s", False),
)


@dataclass(frozen=True)
class Target:
    scenario: str
    key: str
    text: str
    limit: float | None = None  # saga's median must be <= (or >= when at_least) this
    at_least: bool = False
    vs: str | None = None  # compare with this system's median times `factor`
    factor: float = 1.0
    full_size: dict[str, int] = field(default_factory=dict)  # the size the target is set at


TARGETS = (
    Target(
        "throughput",
        "steps_per_s",
        "steps/s at least 100x DBOS's",
        at_least=True,
        vs="dbos",
        factor=100.0,
    ),
    Target(
        "throughput",
        "records_per_s",
        "records/s at least half the raw floor's",
        at_least=True,
        vs="raw",
        factor=0.5,
    ),
    Target("latency", "median_ms", "median at most 1.5 ms", limit=1.5),
    Target("events", "median_ms", "median at most 1 ms", limit=1.0),
    Target("events", "p99_ms", "p99 at most 5 ms", limit=5.0),
    Target("parked", "rss_mb_per_100k", "RSS growth at most 150 MB per 100,000", limit=150.0),
    Target(
        "parked", "delivery.p99_ms", "delivery to a passivated saga p99 at most 10 ms", limit=10.0
    ),
    Target(
        "recovery",
        "all_finished_s",
        "10,000 in flight: all finished within 2 s of restart",
        limit=2.0,
        full_size={"sagas": 10_000},
    ),
    Target(
        "coldstart",
        "ready_s",
        "1,000,000 finished sagas: Runtime ready in at most 1 s",
        limit=1.0,
        full_size={"sagas": 1_000_000},
    ),
)
