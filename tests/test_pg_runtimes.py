"""Two runtimes on one PostgreSQL schema, in one process: what a service with several
workers sees through the public API (sends, aborts and results across workers, and a
clean hand-over when a worker shuts down)."""

from __future__ import annotations

import anyio
import pytest
from _behaviour import Gate, Trip, simple_step, wait_status
from _pg import url_for

import saga

pytestmark = pytest.mark.anyio


@pytest.fixture
def url(schema: str) -> str:
    return url_for(schema, lease_seconds=2)


def trip(calls: list[str]) -> saga.Saga[Trip]:
    return saga.Saga("trip", state=Trip, steps=[simple_step("Book", calls), Gate(),
                                                simple_step("Pay", calls)])  # fmt: skip


async def test_an_event_sent_through_another_worker_reaches_the_owner(url: str) -> None:
    calls_a: list[str] = []
    calls_b: list[str] = []
    async with (
        saga.Runtime(url, sagas=[trip(calls_a)]) as a,
        saga.Runtime(url, sagas=[trip(calls_b)]) as b,
    ):
        await a.start("trip", Trip(), saga_id="t-1")
        await wait_status(b, "t-1", saga.Status.WAITING)
        await b.send("t-1", "go")
        with anyio.fail_after(10):
            info = await b.handle("t-1").result()  # B polls: the saga runs in A
        assert info.status is saga.Status.COMPLETED
        assert calls_a == ["Book.run", "Pay.run"]
        assert calls_b == []  # nothing ran in the worker that only sent


async def test_an_abort_through_another_worker_compensates_in_the_owner(url: str) -> None:
    calls_a: list[str] = []
    async with (
        saga.Runtime(url, sagas=[trip(calls_a)]) as a,
        saga.Runtime(url, sagas=[trip([])]) as b,
    ):
        await a.start("trip", Trip(), saga_id="t-1")
        await wait_status(a, "t-1", saga.Status.WAITING)
        await b.abort("t-1", "customer cancelled", by="ops")
        info = await wait_status(a, "t-1", saga.Status.COMPENSATED)
        assert "customer cancelled" in str(info.error)
        assert calls_a == ["Book.run", "Book.compensate"]


async def test_a_worker_that_shuts_down_hands_its_sagas_to_the_others(url: str) -> None:
    calls_a: list[str] = []
    calls_b: list[str] = []
    async with saga.Runtime(url, sagas=[trip(calls_b)]) as b:
        async with saga.Runtime(url, sagas=[trip(calls_a)]) as a:
            for n in range(3):
                await a.start("trip", Trip(), saga_id=f"t-{n}")
            for n in range(3):
                await wait_status(a, f"t-{n}", saga.Status.WAITING)
        # A released its lease on the way out: B claims the sagas within a second or so.
        for n in range(3):
            await b.send(f"t-{n}", "go")
        with anyio.fail_after(15):
            infos = [await b.handle(f"t-{n}").result() for n in range(3)]
        assert [i.status for i in infos] == [saga.Status.COMPLETED] * 3
        assert calls_a == ["Book.run"] * 3
        assert calls_b == ["Pay.run"] * 3  # only what was left; Book never ran again
