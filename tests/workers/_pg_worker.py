"""A worker process for the many-workers tests: a `Runtime` on a PostgreSQL schema.

Usage: ``python _pg_worker.py URL INDEX COUNT``

Starts sagas ``order-<i>`` for ``i`` in ``range(INDEX * COUNT, (INDEX + 1) * COUNT)``, prints
``STARTED <n>``, then serves (its own sagas and any it takes over) until SIGTERM, when it
closes the runtime cleanly and prints ``STOPPED``. Every handler invocation is journalled
to stdout as ``CALL <pid> <saga> <step> <handler>`` so the test can see who ran what.

The saga: ``reserve`` -> ``payment`` (waits for a ``paid`` event; ``{"ok": false}`` fails
it) -> ``ship`` (fails for every 5th order). Failures compensate in reverse.
Not a test module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import anyio
import msgspec

import saga


class Order(msgspec.Struct):
    number: int
    trail: list[str] = msgspec.field(default_factory=list)


def call(ctx: saga.StepContext[Order], handler: str) -> None:
    print(f"CALL {os.getpid()} {ctx.saga_id} {ctx.step} {handler}", flush=True)


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        call(ctx, "run")
        await anyio.sleep(0.002)
        ctx.state.trail.append("reserved")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        call(ctx, "compensate")
        ctx.state.trail.append("released")


class Payment(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        call(ctx, "run")
        return saga.wait_for("paid", timeout=120)

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        call(ctx, "on_event")
        if not event.payload["ok"]:
            raise RuntimeError("card declined")
        ctx.state.trail.append("paid")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        call(ctx, "compensate")
        ctx.state.trail.append("refunded")


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        call(ctx, "run")
        await anyio.sleep(0.002)
        if ctx.state.number % 5 == 0:
            raise RuntimeError("no truck")
        ctx.state.trail.append("shipped")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        call(ctx, "compensate")


ORDER = saga.Saga("order", state=Order, steps=[Reserve(), Payment(), Ship()])


async def main(url: str, index: int, count: int) -> None:
    async with saga.Runtime(url, sagas=[ORDER]) as runtime:
        numbers = range(index * count, (index + 1) * count)
        for n in numbers:
            await runtime.start(ORDER, Order(number=n), saga_id=f"order-{n}")
        print(f"STARTED {len(numbers)}", flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
    print("STOPPED", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
