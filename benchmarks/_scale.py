"""Scale-out on PostgreSQL: the throughput workload spread over 1, 2, 4... worker processes.

``python -m benchmarks workers [--workers 1,2,4] [--sagas 2000] [--repeats 3] [--url URL]``

Each run gets a fresh schema. Every worker process opens a `Runtime` on it (each a worker
with its own lease), waits at a barrier (a line on stdin), then starts its share of the
sagas (5 trivial steps each, the benchmarks' `FIVE`) in waves of 1,000 started together
(a PostgreSQL commit costs about a millisecond here, so starting one saga at a time would
measure start latency, not throughput) and waits for all of them. The clock
runs from the barrier until the last worker reports; steps/s are the total over that time.
A single-process SQLite run of the same workload is measured alongside, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import anyio

from benchmarks._common import STEPS

DEFAULT_URL = os.environ.get("SAGA_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test")
WAVE = 1000  # sagas started at once per worker, as in the throughput scenario


async def _work(url: str, index: int, count: int) -> None:
    """One worker process: connect, wait for the barrier, run ``count`` sagas, report."""
    import saga
    from benchmarks._saga_work import FIVE, WAIT, Counter

    async with saga.Runtime(url, sagas=[FIVE, WAIT], durability="full") as runtime:
        print("READY", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        began = time.perf_counter()

        async def one(saga_id: str) -> None:
            handle = await runtime.start(FIVE, Counter(), saga_id=saga_id)
            info = await handle.result(timeout=300)
            assert info.state.n == STEPS, info

        for first in range(0, count, WAVE):
            async with anyio.create_task_group() as tg:  # a wave's starts go out together
                for i in range(first, min(count, first + WAVE)):
                    tg.start_soon(one, f"w{index}-{i}")
        elapsed = time.perf_counter() - began
        print("DONE " + json.dumps({"seconds": elapsed}), flush=True)


def _once(url: str, workers: int, sagas: int) -> float:
    """One measured run; returns steps/s."""
    share = sagas // workers
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks._scale", url, str(i), str(share)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError(f"a worker failed to start (exit {proc.wait()})")
        began = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("DONE"):
                raise RuntimeError(f"a worker failed (exit {proc.wait()})")
        elapsed = time.perf_counter() - began
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(f"a worker exited with {proc.returncode}")
            if proc.stdout is not None:
                proc.stdout.close()
    return share * workers * STEPS / elapsed


async def _drop(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {"sagas": args.sagas, "steps_per_saga": STEPS, "runs": {}}
    systems: list[tuple[str, int]] = [("sqlite", 1)] + [("postgresql", w) for w in counts]
    for repeat in range(args.repeats):
        for system, workers in systems:
            if system == "sqlite":
                with tempfile.TemporaryDirectory(prefix="saga-scale-") as directory:
                    rate = _once(f"sqlite:///{directory}/scale.db", 1, args.sagas)
            else:
                schema = f"saga_bench_{uuid.uuid4().hex[:10]}"
                try:
                    rate = _once(f"{args.url}?schema={schema}", workers, args.sagas)
                finally:
                    anyio.run(_drop, args.url, schema)
            key = f"{system} x{workers}"
            results["runs"].setdefault(key, []).append(rate)
            print(f"run {repeat + 1}: {key}: {rate:,.0f} steps/s", file=sys.stderr, flush=True)
    base = statistics.median(results["runs"][f"postgresql x{counts[0]}"])
    lines = [
        f"| setup | steps/s (median) | range | vs PostgreSQL x{counts[0]} |",
        "|---|---|---|---|",
    ]
    for key, rates in results["runs"].items():
        median = statistics.median(rates)
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        lines.append(f"| {key} | {median:,.0f} | {spread} | {median / base:.2f}x |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("workers", help="PostgreSQL scale-out: 1, 2, 4 worker processes")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    parser.add_argument("--sagas", type=int, default=2000, help="sagas per run, in all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL database URL")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.set_defaults(func=run)


if __name__ == "__main__":
    anyio.run(_work, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
