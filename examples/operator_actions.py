"""Conditional steps, suspension and the operator's actions, on the embedded SQLite store.

Run it: ``python examples/operator_actions.py`` (it writes ``orders.db`` in the working
directory, starting afresh each time). Three orders go through
``Reserve -> Charge -> GiftWrap -> Ship``:

* ``GiftWrap`` runs only for gift orders (``should_run``); the others record it as skipped.
* ``Charge`` suspends the saga instead of compensating when its attempts run out
  (``on_exhausted = "suspend"``), so a person can decide: ``order-retry`` is retried once
  the card processor is back, ``order-skip`` is paid by phone and its charge is skipped.
* ``order-revert`` completes, then the customer returns it and it is reverted: every step
  it completed is compensated, in reverse.

The same actions from a shell, against a running service: ``saga retry ID --reason ...``,
``saga skip ID --reason ...``, ``saga revert ID --reason ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec

import saga


class Order(msgspec.Struct):
    order_id: str
    gift: bool = False
    done: list[str] = msgspec.field(default_factory=list)


class CardProcessor:
    """A payment service that is down until someone brings it back."""

    up = False


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("reserved")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("released")


class Charge(saga.Step):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.05)
    on_exhausted = "suspend"  # a person decides: retry, skip or abort

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        if not CardProcessor.up:
            raise ConnectionError("card processor unreachable")
        ctx.state.done.append("charged")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("refunded")


class GiftWrap(saga.Step):
    def should_run(self, state: Any) -> bool:
        return bool(state.gift)

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("wrapped")


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("shipped")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.done.append("returned")


ORDER = saga.Saga("order", state=Order, steps=[Reserve(), Charge(), GiftWrap(), Ship()])


async def suspended(runtime: saga.Runtime, saga_id: str) -> None:
    """Wait until the saga waits for a person (what an operator's dashboard would show)."""
    with anyio.fail_after(10):
        while (await runtime.get(saga_id)).status is not saga.Status.SUSPENDED:  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def show(runtime: saga.Runtime, saga_id: str) -> None:
    info = await runtime.get(saga_id)
    print(f"{saga_id}: {info.status.value}; {', '.join(info.state.done)}")
    for record in await runtime.history(saga_id):
        who = ""
        if "by" in record.data:
            who = f"  by {record.data['by']}: {record.data.get('reason', '')}"
        print(f"  {record.seq:>3} {record.kind:<22} {record.step or '-'}{who}")
    print()


async def main() -> None:
    store = Path("orders.db")
    for path in (store, Path("orders.db-wal"), Path("orders.db-shm")):
        path.unlink(missing_ok=True)
    async with saga.Runtime(f"sqlite:///{store}", sagas=[ORDER]) as runtime:
        CardProcessor.up = False
        for saga_id, gift in (("order-retry", True), ("order-skip", False)):
            await runtime.start(ORDER, Order(order_id=saga_id, gift=gift), saga_id=saga_id)
        for saga_id in ("order-retry", "order-skip"):
            await suspended(runtime, saga_id)

        CardProcessor.up = True  # the processor is back: charge order-retry again
        await runtime.retry("order-retry", reason="card processor is back", by="ops:ana")
        # order-skip was paid by phone: its charge is skipped, the saga goes on
        await runtime.skip("order-skip", reason="paid by phone", by="ops:ben")
        for saga_id in ("order-retry", "order-skip"):
            await runtime.handle(saga_id).result(timeout=10)

        handle = await runtime.start(ORDER, Order(order_id="order-revert"), saga_id="order-revert")
        await handle.result(timeout=10)
        await runtime.revert("order-revert", reason="customer returned it", by="support:cy")
        await runtime.handle("order-revert").result(timeout=10)  # COMPENSATED

        for saga_id in ("order-retry", "order-skip", "order-revert"):
            await show(runtime, saga_id)


if __name__ == "__main__":
    anyio.run(main)
