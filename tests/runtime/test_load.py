"""Load: a thousand concurrent sagas of three steps, the middle one waiting for an event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import saga

N = 1000


class Order(msgspec.Struct):
    n: int
    reserved: bool = False
    paid: int | None = None
    shipped: bool = False


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Any]) -> None:
        ctx.state.reserved = True


class AwaitPayment(saga.Step):
    async def run(self, ctx: saga.StepContext[Any]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id)

    async def on_event(self, ctx: saga.StepContext[Any], event: saga.Event) -> None:
        ctx.state.paid = event.payload["amount"]


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Any]) -> None:
        assert ctx.state.paid is not None
        ctx.state.shipped = True


ORDER = saga.Saga("order", state=Order, steps=[Reserve(), AwaitPayment(), Ship()])

SHAPE = [
    ("saga_started", None),
    ("step_started", "Reserve"),
    ("step_completed", "Reserve"),
    ("step_started", "AwaitPayment"),
    ("step_waiting", "AwaitPayment"),
    ("event_delivered", "AwaitPayment"),
    ("step_started", "AwaitPayment"),
    ("step_completed", "AwaitPayment"),
    ("step_started", "Ship"),
    ("step_completed", "Ship"),
    ("saga_completed", None),
]


async def pay(runtime: saga.Runtime, n: int) -> None:
    sid = f"o{n:04d}"
    await runtime.send(sid, "paid", {"amount": n}, key=sid, event_id=f"pay-{sid}")


async def all_waiting(runtime: saga.Runtime, ids: set[str]) -> None:
    with anyio.fail_after(60):
        while True:
            waiting = await runtime.list(status=saga.Status.WAITING, limit=2 * N)
            if ids <= {info.saga_id for info in waiting}:
                return
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_thousand_concurrent_sagas_all_complete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'load.db'}"
    infos: dict[str, saga.SagaInfo] = {}
    async with saga.Runtime(url, sagas=[ORDER], durability="normal") as runtime:

        async def start(n: int) -> None:
            await runtime.start(ORDER, Order(n=n), saga_id=f"o{n:04d}")
            if n % 2 == 0:
                await pay(runtime, n)  # often before the saga waits: it must stay buffered

        async def result(n: int) -> None:
            sid = f"o{n:04d}"
            infos[sid] = await runtime.handle(sid).result(timeout=60)

        async with anyio.create_task_group() as tg:
            for n in range(N):
                tg.start_soon(start, n)
        await all_waiting(runtime, {f"o{n:04d}" for n in range(1, N, 2)})
        async with anyio.create_task_group() as tg:
            for n in range(1, N, 2):
                tg.start_soon(pay, runtime, n)
            for n in range(N):
                tg.start_soon(result, n)

        assert len(infos) == N
        for sid, info in infos.items():
            assert info.status is saga.Status.COMPLETED, sid
            assert info.state == Order(
                n=int(sid[1:]), reserved=True, paid=int(sid[1:]), shipped=True
            )
        completed = await runtime.list(status=saga.Status.COMPLETED, limit=2 * N)
        assert len(completed) == N
        assert await runtime.dead_letters() == []
        for sid in ("o0000", "o0001", "o0500", "o0777", "o0998", "o0999"):
            log = await runtime.history(sid)
            assert [(r.kind, r.step) for r in log] == SHAPE, sid
            assert [r.seq for r in log] == list(range(1, len(SHAPE) + 1))
            (delivered,) = [r for r in log if r.kind == "event_delivered"]
            assert delivered.data["event"]["event_id"] == f"pay-{sid}"
            assert delivered.data["event"]["payload"] == {"amount": int(sid[1:])}
