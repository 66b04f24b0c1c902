"""One worker of a service that runs orders on PostgreSQL; start as many as you like.

Each order is a saga: reserve stock, wait for the payment (a ``paid`` event), ship. Every
worker starts ``--start`` orders, then pays for any order it finds waiting (whichever
worker runs it: the event goes to the owner), and prints a line per second. Kill a worker
(``kill -9``) and the others take its orders over once its lease runs out.

    python examples/workers.py 'postgresql://root@127.0.0.1:5432/test?schema=orders_demo'

Options: ``--start N`` (orders this worker starts, default 50), ``--seconds S`` (stop after
S seconds; default: run until Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import uuid

import anyio
import msgspec

import saga


class Order(msgspec.Struct):
    order_id: str
    log: list[str] = msgspec.field(default_factory=list)


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        await anyio.sleep(random.uniform(0.01, 0.05))  # a call to the stock service
        ctx.state.log.append(f"reserved by {os.getpid()}")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.log.append(f"released by {os.getpid()}")


class Payment(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        return saga.wait_for("paid", timeout=60)

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        ctx.state.log.append(f"paid, handled by {os.getpid()}")


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.log.append(f"shipped by {os.getpid()}")


ORDER = saga.Saga("order", state=Order, steps=[Reserve(), Payment(), Ship()])


async def pay_waiting_orders(runtime: saga.Runtime) -> None:
    """Play the payment provider: pay every order waiting for it, whoever runs it."""
    while True:
        for info in await runtime.list(status=saga.Status.WAITING, name="order", limit=100):
            # One event id per order: if two workers pay the same order, it is stored once.
            with contextlib.suppress(saga.SagaClosed):  # it may have ended meanwhile
                await runtime.send(info.saga_id, "paid", event_id=f"pay-{info.saga_id}")
        await anyio.sleep(0.5)


async def report(runtime: saga.Runtime) -> None:
    while True:
        await anyio.sleep(1)
        done = await runtime.list(status=saga.Status.COMPLETED, name="order", limit=100_000)
        waiting = await runtime.list(status=saga.Status.WAITING, name="order", limit=100_000)
        running = await runtime.list(status=saga.Status.RUNNING, name="order", limit=100_000)
        print(f"worker {os.getpid()}: {len(done)} orders completed, {len(waiting)} waiting, "
              f"{len(running)} running (all workers)", flush=True)  # fmt: skip


async def main(url: str, start: int, seconds: float | None) -> None:
    async with saga.Runtime(url, sagas=[ORDER]) as runtime, anyio.create_task_group() as tg:
        for _ in range(start):
            order_id = uuid.uuid4().hex[:12]
            await runtime.start(ORDER, Order(order_id=order_id), saga_id=f"order-{order_id}")
        print(f"worker {os.getpid()}: started {start} orders", flush=True)
        tg.start_soon(pay_waiting_orders, runtime)
        tg.start_soon(report, runtime)
        if seconds is not None:
            await anyio.sleep(seconds)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a postgresql:// store URL")
    parser.add_argument("--start", type=int, default=50, help="orders this worker starts")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, args.url, args.start, args.seconds)
