"""Definitions for the rolling-deploy test, and a worker process that runs version 1 only.

Usage: ``python _deploy_worker.py URL COUNT``: starts ``v1-<n>`` (version 1, waiting for a
``go`` event) for n < COUNT, prints ``STARTED``, then serves until killed. Not a test module.
"""

from __future__ import annotations

import sys

import anyio
import msgspec

import saga


class Order(msgspec.Struct):
    trail: list[str] = msgspec.field(default_factory=list)


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.trail.append("reserved")


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        ctx.state.trail.append("paid")


class Notify(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.trail.append("notified")


V1 = saga.Saga("order", state=Order, steps=[Reserve(), Pay()], version=1)
V2 = saga.Saga("order", state=Order, steps=[Reserve(), Pay(), Notify()], version=2)


async def main(url: str, count: int) -> None:
    async with saga.Runtime(url, sagas=[V1]) as runtime:
        for n in range(count):
            await runtime.start(V1, Order(), saga_id=f"v1-{n}")
        print("STARTED", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
