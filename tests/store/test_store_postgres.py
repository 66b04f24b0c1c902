"""The PostgreSQL store: the shared store contract, plus what only a shared store has
(schema creation by many processes at once, leases, fencing, claims, notifications)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest
from _pg import PG_URL, query
from store_contract import T0, StoreContract, body, records, row

from saga import LeaseLost
from saga._store import Append, SendResult, Store
from saga._store._postgres import PostgresStore

pytestmark = pytest.mark.anyio


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[Store]:
        store = PostgresStore(PG_URL, schema=schema)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def peer(self, store: Store, schema: str) -> AsyncIterator[Store]:
        client = PostgresStore(PG_URL, schema=schema, access="client")
        await client.open()
        try:
            yield client
        finally:
            await client.close()


# -- what only a shared store has ---------------------------------------------------------------


async def expire(schema: str, fence: int | None) -> None:
    """End a worker's lease now, as if it had stopped renewing it long ago."""
    await query(
        schema,
        "UPDATE saga_workers SET expires_at = clock_timestamp() - interval '1 second' "
        "WHERE fence = $1",
        fence,
    )


async def owners(schema: str) -> dict[str, int]:
    return {r[0]: r[1] for r in await query(schema, "SELECT saga_id, owner FROM sagas")}


@contextlib.asynccontextmanager
async def worker(schema: str, **options: Any) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(PG_URL, schema=schema, **{"lease_seconds": 60, **options})
    await store.open()
    try:
        yield store
    finally:
        await store.close()


TRIP = [("trip", 1)]  # the definitions the claiming workers have


async def start(store: PostgresStore, saga_id: str, **fields: Any) -> None:
    assert await store.start(row(saga_id, **fields), [(1, body(saga_id, 1))]) is None


def step(saga_id: str, seq: int, fence: int | None = None) -> Append:
    """The append of record ``seq`` to a saga (by the store's own fence if ``None``)."""
    return Append(saga_id, records(saga_id, seq, seq), row(saga_id, seq=seq), fence=fence)


async def send(store: PostgresStore, saga_id: str, event_id: str, kind: str = "event") -> Any:
    return await store.send(saga_id, event_id, kind=kind, name="paid", key=None,
                            payload=b"p", sent_at=T0)  # fmt: skip


async def test_an_expired_lease_fences_its_worker_off(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "s1")
        await start(a, "s2", status="WAITING")
        await start(a, "done", status="COMPLETED", step=None)
        await a.append(step("s1", 2))
        assert await b.claim_orphans(TRIP) == []  # a is alive
        first = a.fence

        await expire(schema, first)
        with pytest.raises(LeaseLost):
            await a.append(step("s1", 3))
        assert await a.log("s1") == [body("s1", 1), body("s1", 2)]
        assert await a.saga("s1") == row("s1", seq=2)

        assert sorted(await b.claim_orphans(TRIP)) == ["s1", "s2"]  # not the terminal one
        assert await b.claim_orphans(TRIP) == []
        assert await owners(schema) == {"s1": b.fence, "s2": b.fence, "done": first}
        await b.append(step("s1", 3))

        assert await a.keep_lease() is False
        assert a.fence is not None
        assert a.fence not in (first, b.fence)
        for fence in (first, a.fence):
            with pytest.raises(LeaseLost):
                await a.append(step("s1", 4, fence))
            with pytest.raises(LeaseLost):
                await a.append(step("s2", 2, fence))
        assert await b.log("s1") == [body("s1", n) for n in (1, 2, 3)]
        assert await b.log("s2") == [body("s2", 1)]
        written = await query(
            schema, "SELECT seq, fence FROM saga_log WHERE saga_id = 's1' ORDER BY seq"
        )
        assert [tuple(r) for r in written] == [(1, first), (2, first), (3, b.fence)]


async def test_racing_claimers_take_each_orphan_exactly_once(schema: str) -> None:
    ids = [f"s{n:02}" for n in range(60)]
    async with worker(schema) as dead:
        async with anyio.create_task_group() as tg:
            for saga_id in ids:
                tg.start_soon(start, dead, saga_id)
        await expire(schema, dead.fence)
        async with worker(schema) as b, worker(schema) as c:
            claimed: dict[int | None, list[str]] = {b.fence: [], c.fence: []}

            async def claim_all(store: PostgresStore) -> None:
                while batch := await store.claim_orphans(TRIP, limit=2):
                    claimed[store.fence].extend(batch)

            async with anyio.create_task_group() as tg:
                for store in (b, c, b, c):  # two claiming tasks per worker
                    tg.start_soon(claim_all, store)

            every = claimed[b.fence] + claimed[c.fence]
            assert sorted(every) == ids  # each exactly once
            assert await owners(schema) == {
                **{saga_id: b.fence for saga_id in claimed[b.fence]},
                **{saga_id: c.fence for saga_id in claimed[c.fence]},
            }
            assert await b.claim_orphans(TRIP) == await c.claim_orphans(TRIP) == []
            drained = await query(schema, "SELECT drained FROM saga_workers WHERE fence = $1",
                                  dead.fence)  # fmt: skip
            assert drained[0][0] is True


async def test_keep_lease_extends_a_live_lease(schema: str) -> None:
    async with worker(schema, lease_seconds=30) as a:
        sql = "SELECT expires_at, expires_at - clock_timestamp() FROM saga_workers WHERE fence = $1"
        [(before, _)] = await query(schema, sql, a.fence)
        fence = a.fence
        await anyio.sleep(0.2)
        assert await a.keep_lease() is True
        assert a.fence == fence
        [(after, left)] = await query(schema, sql, a.fence)
        assert after > before
        assert 29 < left.total_seconds() <= 30


async def test_a_clean_close_hands_the_open_sagas_over_at_once(schema: str) -> None:
    async with worker(schema, lease_seconds=600) as b:
        async with worker(schema, lease_seconds=600) as a:
            await start(a, "s1")
            await start(a, "s2", status="WAITING")
            await start(a, "done", status="FAILED", step=None)
            assert await b.claim_orphans(TRIP) == []
        began = time.monotonic()
        assert sorted(await b.claim_orphans(TRIP)) == ["s1", "s2"]
        assert time.monotonic() - began < 5
        await b.append(step("s1", 2))
        assert await b.log("s1") == [body("s1", 1), body("s1", 2)]


async def test_a_send_to_another_workers_saga_wakes_that_worker(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "s1", status="WAITING")
        await start(b, "b1", status="WAITING")
        mark_a, mark_b = await a.inbox_mark(), await b.inbox_mark()

        assert await send(a, "s1", "own") is SendResult.STORED
        began = time.monotonic()
        await a.wait_for_foreign(0.3)  # nothing for a from anyone else: it waits it out
        assert time.monotonic() - began >= 0.29

        result: list[SendResult] = []

        async def send_later() -> None:
            await anyio.sleep(0.2)
            result.append(await send(b, "s1", "from-b"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_later)
            began = time.monotonic()
            await a.wait_for_foreign(5)
            waited = time.monotonic() - began
        assert result == [SendResult.FORWARDED]
        assert waited < 4  # woken by the notification, not by the 5 s timeout

        items, mark_a = await a.foreign_inbox(mark_a)
        assert [(i.saga_id, i.event_id) for i in items] == [("s1", "from-b")]
        assert (await a.foreign_inbox(mark_a))[0] == []  # read once
        assert (await b.foreign_inbox(mark_b))[0] == []  # b does not own s1
        assert [i.event_id for i in await a.inbox("s1")] == ["own", "from-b"]


async def test_a_resume_request_is_announced_to_every_worker(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        client = PostgresStore(PG_URL, schema=schema, access="client")
        await client.open()
        try:
            await start(a, "failed", status="FAILED", step=None)
            marks = {a: await a.inbox_mark(), b: await b.inbox_mark()}
            assert await send(client, "failed", "r1", kind="resume") is SendResult.FORWARDED
            for store in (a, b):
                began = time.monotonic()
                await store.wait_for_foreign(5)
                assert time.monotonic() - began < 2
                items, _ = await store.foreign_inbox(marks[store])
                assert [(i.saga_id, i.event_id, i.kind) for i in items] == [
                    ("failed", "r1", "resume")
                ]
        finally:
            await client.close()


async def test_due_and_recovery_see_only_the_sagas_a_worker_owns(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "a1", status="WAITING", wake_at=T0 + 10)
        await start(a, "a2", status="WAITING", wake_at=T0 + 50)
        await start(a, "a-done", status="COMPLETED", step=None, wake_at=T0 + 5)
        await start(b, "b1", status="WAITING", wake_at=T0 + 20)
        assert sorted(await a.due(T0 + 100)) == [("a1", T0 + 10), ("a2", T0 + 50)]
        assert await a.due(T0 + 30) == [("a1", T0 + 10)]
        assert await b.due(T0 + 100) == [("b1", T0 + 20)]
        assert [saga_id async for saga_id, _ in a.active_logs()] == ["a1", "a2"]
        assert [saga_id async for saga_id, _ in b.active_logs()] == ["b1"]

        await expire(schema, a.fence)
        assert sorted(await b.claim_orphans(TRIP)) == ["a1", "a2"]
        assert sorted(await b.due(T0 + 30)) == [("a1", T0 + 10), ("b1", T0 + 20)]
        assert await a.due(T0 + 100) == []


# -- who may own a saga ----------------------------------------------------------------------


async def test_a_start_under_a_lease_that_ran_out_writes_nothing(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "s1")
        stale = a.fence
        await expire(schema, stale)
        assert await b.claim_orphans(TRIP) == ["s1"]  # and a's fence is drained
        [(drained,)] = await query(
            schema, "SELECT drained FROM saga_workers WHERE fence = $1", stale
        )
        assert drained is True

        with pytest.raises(LeaseLost):
            await a.start(row("late"), [(1, body("late", 1))])
        with pytest.raises(LeaseLost):  # an explicit fence is checked the same way
            await b.start(row("late"), [(1, body("late", 1))], fence=stale)
        assert await a.saga("late") is None
        assert await a.log("late") == []

        assert await a.keep_lease() is False  # registers again under a new fence
        assert await a.start(row("late"), [(1, body("late", 1))]) is None
        assert (await owners(schema))["late"] == a.fence != stale


async def test_a_claimer_never_drains_a_worker_whose_write_is_in_flight(schema: str) -> None:
    """A worker paused inside its commit, past its lease: its share lock on its own worker
    row keeps claimers from counting it drained until what it wrote is visible to them."""
    async with worker(schema) as a, worker(schema) as b:
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": f'"{schema}"'})
        try:
            tx = conn.transaction()
            await tx.start()
            # What a's batch does first: lock its own worker row, lease checked live.
            live = await conn.fetchval(
                "SELECT fence FROM saga_workers WHERE fence = $1 "
                "AND expires_at > clock_timestamp() FOR KEY SHARE",
                a.fence,
            )
            assert live == a.fence
            await expire(schema, a.fence)  # ... and then it is paused past its lease
            assert await b.claim_orphans(TRIP) == []  # a is passed by, not drained
            [(drained,)] = await query(
                schema, "SELECT drained FROM saga_workers WHERE fence = $1", a.fence
            )
            assert drained is False
            await conn.execute(
                "INSERT INTO sagas (saga_id, name, version, status, step, created_at, "
                "updated_at, seq, state, owner) VALUES ('paused', 'trip', 1, 'RUNNING', "
                "'Reserve', 0, 0, 1, '\\x80'::bytea, $1)",
                a.fence,
            )
            await tx.commit()
        finally:
            await conn.close()
        assert await b.claim_orphans(TRIP) == ["paused"]  # not lost: taken over


async def test_two_workers_starting_one_id_at_once_make_one_saga(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with worker(schema) as a, worker(schema) as b:
        for n in range(20):
            saga_id = f"twin-{n}"
            results: list[Any] = []

            async def start_on(
                store: PostgresStore, saga_id: str = saga_id, results: list[Any] = results
            ) -> None:
                results.append(await store.start(row(saga_id), [(1, body(saga_id, 1))]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(start_on, a)
                tg.start_soon(start_on, b)
            assert sorted(results, key=lambda r: r is not None) == [None, row(saga_id)]
            assert await a.log(saga_id) == [body(saga_id, 1)]
    assert not [r for r in caplog.records if "failed" in r.getMessage()]


async def test_claims_take_only_the_definitions_a_worker_has(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as v2_only, worker(schema) as both:
        await start(a, "old-1", name="order", version=1)
        await start(a, "old-2", name="order", version=1, status="WAITING")
        await start(a, "new-1", name="order", version=2)
        await expire(schema, a.fence)
        v1, v2 = ("order", 1), ("order", 2)

        assert await v2_only.claim_orphans([v2]) == ["new-1"]
        assert await v2_only.claim_orphans([v2]) == []
        [(drained,)] = await query(
            schema, "SELECT drained FROM saga_workers WHERE fence = $1", a.fence
        )
        assert drained is False  # its v1 sagas still wait for a worker that has v1
        assert await owners(schema) == {"old-1": a.fence, "old-2": a.fence,
                                        "new-1": v2_only.fence}  # fmt: skip
        assert sorted(await both.claim_orphans([v1, v2])) == ["old-1", "old-2"]
        assert await both.claim_orphans([v1, v2]) == []
        [(drained,)] = await query(
            schema, "SELECT drained FROM saga_workers WHERE fence = $1", a.fence
        )
        assert drained is True
        assert await a.claim_orphans([v1, v2]) == []  # a's own lease is gone: no claims


async def test_a_parked_saga_handed_back_goes_to_a_worker_that_can_run_it(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "s1", status="WAITING")
        await start(a, "s2", status="WAITING")
        await start(b, "theirs", status="WAITING")
        why = b"\x83\xa4type\xb2DefinitionMismatch\xa7message\xa3why\xa4step\xc0"

        await a.park("s1", why, release=True, fence=a.fence)
        await a.park("s2", why, release=False, fence=a.fence)
        await a.park("theirs", why, release=True, fence=a.fence)  # not a's: nothing
        assert await owners(schema) == {"s1": None, "s2": a.fence, "theirs": b.fence}
        assert (await a.saga("s1")).parked == why  # type: ignore[union-attr]
        assert (await a.saga("s2")).parked == why  # type: ignore[union-attr]
        assert (await a.saga("theirs")).parked is None  # type: ignore[union-attr]

        assert await b.claim_orphans(TRIP, exclude=["s1"]) == []
        assert await b.claim_orphans([("other", 1)]) == []
        assert await b.claim_orphans(TRIP) == ["s1"]
        assert (await b.saga("s1")).parked is None  # type: ignore[union-attr]
        await a.append(step("s2", 2))  # the saga moved again: no longer parked
        assert (await a.saga("s2")).parked is None  # type: ignore[union-attr]


async def test_a_sweep_takes_sagas_whose_owner_is_no_worker_at_all(schema: str) -> None:
    async with worker(schema) as a, worker(schema) as b:
        await start(a, "stray", status="WAITING")
        await query(schema, "UPDATE sagas SET owner = 987654 WHERE saga_id = 'stray'")
        assert await b.claim_orphans(TRIP) == []  # not in a plain round: it costs a scan
        assert await b.claim_orphans(TRIP, sweep=True) == ["stray"]
        assert (await owners(schema))["stray"] == b.fence
