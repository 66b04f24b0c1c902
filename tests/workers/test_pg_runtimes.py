"""Two runtimes on one PostgreSQL schema, in one process: what a service with several
workers sees through the public API (sends, aborts and results across workers, and a
clean hand-over when a worker shuts down)."""

from __future__ import annotations

import anyio
import asyncpg
import pytest
from _behaviour import Gate, Trip, eventually, simple_step
from _pg import PG_URL, query, url_for
from _wait import wait_until

import saga
from saga._records import decode_record
from saga._requests import encode_request
from saga._store import InboxKind, SendResult, open_store

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
        await wait_until(b, "t-1", saga.Status.WAITING)
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
        await wait_until(a, "t-1", saga.Status.WAITING)
        await b.abort("t-1", "customer cancelled", by="ops")
        info = await wait_until(a, "t-1", saga.Status.COMPENSATED)
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
                await wait_until(a, f"t-{n}", saga.Status.WAITING)
        # A released its lease on the way out: B claims the sagas within a second or so.
        for n in range(3):
            await b.send(f"t-{n}", "go")
        with anyio.fail_after(15):
            infos = [await b.handle(f"t-{n}").result() for n in range(3)]
        assert [i.status for i in infos] == [saga.Status.COMPLETED] * 3
        assert calls_a == ["Book.run"] * 3
        assert calls_b == ["Pay.run"] * 3  # only what was left; Book never ran again


async def test_a_worker_rides_out_its_database_connections_being_killed(url: str) -> None:
    """The server drops every connection of the worker (a failover, a restart): the
    worker reconnects, and a saga waiting for an event still gets it and finishes."""
    calls: list[str] = []
    async with saga.Runtime(url, sagas=[trip(calls)]) as runtime:
        await runtime.start("trip", Trip(), saga_id="t-1")
        await wait_until(runtime, "t-1", saga.Status.WAITING)
        killed = await terminate_backends(runtime.store.origin)
        assert killed >= 2  # at least the listener and a pooled connection
        client = open_store(url, access="client")
        await client.open()
        try:
            sent = await client.send("t-1", "e1", kind="event", name="go", key=None,
                                     payload=b"\xc0", sent_at=0.0)  # fmt: skip
        finally:
            await client.close()
        assert sent is SendResult.FORWARDED
        with anyio.fail_after(15):
            info = await runtime.handle("t-1").result()
        assert info.status is saga.Status.COMPLETED
        assert calls == ["Book.run", "Pay.run"]


async def terminate_backends(origin: str) -> int:
    """Kill every server connection of the store instance ``origin``; how many."""
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"saga:{origin[:8]}",
        )
    finally:
        await conn.close()
    return sum(1 for r in rows if r[0])


async def test_a_worker_that_lost_its_lease_never_writes_again_for_its_sagas(
    url: str, schema: str
) -> None:
    """A handler outlives its worker's lease (the worker stalled): its result is refused,
    the saga is claimed again and the step re-run under the new fence, and it completes
    exactly once, with nothing in its log written under the old fence after the lease."""
    gate = anyio.Event()
    runs: list[int] = []

    class Slow(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            runs.append(ctx.attempt)
            if len(runs) == 1:
                await gate.wait()  # the stalled call

    definition = saga.Saga("slow", state=Trip, steps=[Slow()])
    async with saga.Runtime(url, sagas=[definition]) as rt:
        await rt.start(definition, Trip(), saga_id="s-1")

        async def stalled() -> bool:
            return len(runs) == 1

        await eventually(stalled)
        old = rt.store.fence
        await query(schema, "UPDATE saga_workers SET expires_at = clock_timestamp() "
                            "- interval '1 second' WHERE fence = $1", old)  # fmt: skip
        gate.set()  # the stalled call returns after the lease ran out
        with anyio.fail_after(15):
            info = await rt.handle("s-1").result()
        assert info.status is saga.Status.COMPLETED
        assert rt.store.fence != old
    assert len(runs) == 2  # the refused call, and the re-run under the new fence
    rows = await query(schema, "SELECT seq, body, fence FROM saga_log WHERE saga_id = 's-1' "
                               "ORDER BY seq")  # fmt: skip
    written = [(decode_record(body).kind, fence) for _, body, fence in rows]
    new = written[-1][1]
    assert new != old
    assert written == [
        ("saga_started", old),
        ("step_started", old),
        ("step_started", new),
        ("step_completed", new),
        ("saga_completed", new),
    ]


async def test_a_start_after_a_pause_past_the_lease_lands_under_a_new_lease(
    url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker was paused long enough for another to count it dead and drain it: its
    next start must not create a saga under the dead lease (nobody would ever run it)."""
    calls_a: list[str] = []
    async with (
        saga.Runtime(url, sagas=[trip(calls_a)]) as a,
        saga.Runtime(url, sagas=[trip([])]) as b,
    ):
        stale = a.store.fence
        await query(
            schema,
            "UPDATE saga_workers SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE fence = $1",
            stale,
        )

        async def drained() -> bool:  # b has found a dead, with nothing to take over
            sql = "SELECT drained FROM saga_workers WHERE fence = $1"
            return (await query(schema, sql, stale))[0][0] is True

        await eventually(drained)
        handle = await a.start("trip", Trip(), saga_id="after-pause")
        assert a.store.fence != stale
        [(owner,)] = await query(schema, "SELECT owner FROM sagas WHERE saga_id = 'after-pause'")
        assert owner == a.store.fence
        await wait_until(a, "after-pause", saga.Status.WAITING)
        await b.send("after-pause", "go")
        with anyio.fail_after(10):
            info = await handle.result()
        assert info.status is saga.Status.COMPLETED
        assert calls_a == ["Book.run", "Pay.run"]
        fences = await query(
            schema, "SELECT DISTINCT fence FROM saga_log WHERE saga_id = 'after-pause'"
        )
        assert [r[0] for r in fences] == [a.store.fence]
    assert any("lost its lease" in r.getMessage() for r in caplog.records)


class Flaky(saga.Step):
    """Fails until told otherwise; suspends the saga when its attempts run out."""

    on_exhausted = "suspend"
    down = True

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        if Flaky.down:
            raise RuntimeError("service down")
        ctx.state.log.append("Flaky.run")


async def test_an_operator_action_reaches_a_suspended_saga_whose_owner_is_gone(
    url: str, schema: str
) -> None:
    """A suspended saga has no actor and is not among the sagas claims move: a request
    for it is announced to every worker, and the one that performs it takes it over."""
    Flaky.down = True
    calls: list[str] = []
    definition = saga.Saga("flaky", state=Trip, steps=[simple_step("Book", calls), Flaky()])
    async with saga.Runtime(url, sagas=[definition]) as b:
        async with saga.Runtime(url, sagas=[definition]) as a:
            await a.start(definition, Trip(), saga_id="f-1")
            await wait_until(a, "f-1", saga.Status.SUSPENDED)
            owner_a = a.store.fence
        # a is gone; the saga stays suspended and owned by a dead fence
        [(owner,)] = await query(schema, "SELECT owner FROM sagas WHERE saga_id = 'f-1'")
        assert owner == owner_a
        Flaky.down = False
        client = open_store(url, access="client")
        await client.open()
        try:
            request = encode_request("back", "ops", 1 << 20)
            result = await client.send("f-1", "retry-1", kind=InboxKind.RETRY, name="retry",
                                       key=None, payload=request, sent_at=0.0)  # fmt: skip
        finally:
            await client.close()
        assert result is SendResult.FORWARDED
        info = await wait_until(b, "f-1", saga.Status.COMPLETED, timeout=10)
        assert info.state.log == ["Book", "Flaky.run"]
        [(owner,)] = await query(schema, "SELECT owner FROM sagas WHERE saga_id = 'f-1'")
        assert owner == b.store.fence
        retried = [r for r in await b.history("f-1") if r.kind == "saga_retried"]
        assert [(r.data["reason"], r.data["by"]) for r in retried] == [("back", "ops")]
