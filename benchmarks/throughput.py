"""Throughput of the embedded runtime: N concurrent sagas of 5 trivial steps each.

Usage: python benchmarks/throughput.py [--sagas N] [--durability full|normal]

Prints steps/s and records/s. This is a single-system probe; the side-by-side benchmark
against a peer lives with the benchmarks milestone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import anyio
import msgspec

import saga


class Counter(msgspec.Struct):
    n: int = 0


class Bump(saga.Step):
    async def run(self, ctx: saga.StepContext[Counter]) -> None:
        ctx.state.n += 1


def _definition() -> saga.Saga[Counter]:
    steps = [type(f"Bump{i}", (Bump,), {})() for i in range(5)]
    return saga.Saga("throughput", state=Counter, steps=steps)


async def run(sagas: int, durability: str) -> None:
    definition = _definition()
    with tempfile.TemporaryDirectory() as tmp:
        url = "sqlite:///" + os.path.join(tmp, "bench.db")
        async with saga.Runtime(url, sagas=[definition], durability=durability) as runtime:
            began = time.perf_counter()

            async def one() -> None:
                handle = await runtime.start(definition, Counter())
                info = await handle.result(timeout=600)
                assert info.status is saga.Status.COMPLETED

            async with anyio.create_task_group() as tg:
                for _ in range(sagas):
                    tg.start_soon(one)
            elapsed = time.perf_counter() - began
            records = runtime.transitions
    print(
        f"durability={durability} sagas={sagas} steps={sagas * 5} seconds={elapsed:.2f} "
        f"steps/s={sagas * 5 / elapsed:,.0f} records/s={records / elapsed:,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--durability", choices=("full", "normal"), default="full")
    args = parser.parse_args()
    anyio.run(run, args.sagas, args.durability)


if __name__ == "__main__":
    main()
